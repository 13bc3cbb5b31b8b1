//! Watchtower's local CA, end to end: created on first start (key file mode 0600, nothing in
//! the working directory) and reused on the next; a pair made elsewhere is used as it is; every
//! unusable pair (one file missing, not a CA, key of another CA, garbage) stops the start with
//! one message naming the file, touching nothing and binding nothing; and the `watchtower ca`
//! commands `path`, `export` and `regenerate` (install/uninstall touch the system trust store
//! and are not run here).

mod common;

use common::tls::*;
use common::*;
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_watchtower");

/// A folder with a `watchtower.toml` whose `[tls]` names `ca.pem` / `ca-key.pem` there, one
/// route to `backend_port`, a forward and a reverse HTTPS port.
struct Setup {
    dir: TempDir,
    config: PathBuf,
    proxy: SocketAddr,
    reverse_tls: SocketAddr,
}

impl Setup {
    fn new(backend_port: u16) -> Setup {
        let dir = TempDir::new("ca");
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let reverse_tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let toml = format!(
            "[proxy]\nlisten = \"127.0.0.1\"\nproxy_port = {}\nreverse_https_port = {}\n\n\
             [tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\n\n[admin]\nenabled = false\n\n{}",
            proxy.port(),
            reverse_tls.port(),
            route("app", "app.example.test", backend_port)
        );
        let config = dir.path().join("watchtower.toml");
        std::fs::write(&config, toml).unwrap();
        Setup {
            dir,
            config,
            proxy,
            reverse_tls,
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("ca-key.pem")
    }

    /// Writes a private key file the way a careful user would: mode 0600.
    fn write_key(&self, pem: &str) {
        std::fs::write(self.key_path(), pem).unwrap();
        std::fs::set_permissions(self.key_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn read(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join(file)).ok()
    }

    /// Starts `watchtower --config` in `cwd` with stderr going to a file.
    fn spawn(&self, cwd: &Path) -> Running {
        let stderr_path = cwd.join("stderr.txt");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        Running { child, stderr_path }
    }

    /// Starts Watchtower and waits until it says it is ready.
    fn start(&self, cwd: &Path) -> Running {
        let mut run = self.spawn(cwd);
        let deadline = Instant::now() + WAIT;
        loop {
            let text = run.stderr();
            if text.contains(" ready: ") {
                return run;
            }
            if let Some(status) = run.child.try_wait().unwrap() {
                panic!("watchtower exited ({status}) instead of starting:\n{text}");
            }
            assert!(Instant::now() < deadline, "not ready in time:\n{text}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts Watchtower, expects it to refuse: non-zero exit, exactly one stderr line, no
    /// listener bound, the CA files untouched. Returns the line.
    fn assert_refuses_to_start(&self) -> String {
        let cwd = TempDir::new("ca-cwd");
        let before = (self.read("ca.pem"), self.read("ca-key.pem"));
        let mut run = self.spawn(cwd.path());
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = run.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "it did not exit:\n{}",
                run.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        };
        let stderr = run.stderr();
        assert!(!status.success(), "it exited successfully:\n{stderr}");
        assert!(!stderr.contains(" ready: "), "it became ready:\n{stderr}");
        // Informational start-up lines aside, exactly one message: no warnings around it.
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("INFO "))
            .collect();
        assert_eq!(lines.len(), 1, "one message:\n{stderr}");
        for addr in [self.proxy, self.reverse_tls] {
            assert!(
                TcpStream::connect(addr).is_err(),
                "something listens on {addr} after the refused start"
            );
        }
        assert_eq!(
            (self.read("ca.pem"), self.read("ca-key.pem")),
            before,
            "the CA files were changed or created"
        );
        lines[0].to_string()
    }
}

/// A running Watchtower, killed on drop.
struct Running {
    child: Child,
    stderr_path: PathBuf,
}

impl Running {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Intercepts `CONNECT app.example.test:443` on `proxy` with a client trusting only
/// `ca_pem`; the result of one GET, or why the handshake failed.
fn intercept_with(proxy: SocketAddr, ca_pem: &str) -> Result<Response, String> {
    let mut s = connect(proxy);
    std::io::Write::write_all(&mut s, connect_request("app.example.test:443").as_bytes()).unwrap();
    let head = read_raw_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    let tls = handshake(s, client_trusting(ca_pem), dns_name("app.example.test"))?;
    let mut r = BufReader::new(tls);
    Ok(tls_roundtrip(&mut r, &get("app.example.test", "/ca")))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_ca_is_created_on_first_start_with_a_private_key_file_and_reused_on_the_next() {
    let backend = Backend::named("local");
    let setup = Setup::new(backend.port());
    let cwd = TempDir::new("ca-cwd");
    assert!(!setup.cert_path().exists() && !setup.key_path().exists());

    let first = setup.start(cwd.path());
    assert!(
        first.stderr().contains("created a new local CA"),
        "{}",
        first.stderr()
    );
    let cert = std::fs::read_to_string(setup.cert_path()).expect("ca.pem created");
    let key = std::fs::read_to_string(setup.key_path()).expect("ca-key.pem created");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(!cert.contains("PRIVATE KEY"), "the key leaked into ca.pem");
    assert!(key.contains("PRIVATE KEY-----"));
    assert_eq!(mode(&setup.key_path()), 0o600, "ca-key.pem file mode");
    assert!(
        !first.stderr().contains("PRIVATE KEY"),
        "the key was logged"
    );
    assert_eq!(
        files_in(cwd.path()),
        ["stderr.txt"],
        "nothing is written to the working directory"
    );
    let resp = intercept_with(setup.proxy, &cert).expect("leaves chain to the new CA");
    assert_eq!(resp.body_text(), "local GET /ca");
    drop(first);

    let second = setup.start(cwd.path());
    assert!(
        !second.stderr().contains("created a new local CA"),
        "{}",
        second.stderr()
    );
    assert_eq!(std::fs::read_to_string(setup.cert_path()).unwrap(), cert);
    assert_eq!(std::fs::read_to_string(setup.key_path()).unwrap(), key);
    // A client that trusted the CA of the first run still accepts the new run's leaves.
    let resp = intercept_with(setup.proxy, &cert).expect("the same CA after a restart");
    assert_eq!(resp.status, 200);
}

#[test]
fn a_ca_pair_made_elsewhere_is_used_as_it_is() {
    let backend = Backend::named("local");
    let setup = Setup::new(backend.port());
    let ca = TestCa::new("A CA made by hand");
    std::fs::write(setup.cert_path(), &ca.cert_pem).unwrap();
    setup.write_key(&ca.key_pem);
    let cwd = TempDir::new("ca-cwd");
    let run = setup.start(cwd.path());
    assert!(!run.stderr().contains("created a new local CA"));
    let resp = intercept_with(setup.proxy, &ca.cert_pem).expect("leaves signed by the given CA");
    assert_eq!(resp.body_text(), "local GET /ca");
    assert_eq!(
        std::fs::read_to_string(setup.cert_path()).unwrap(),
        ca.cert_pem
    );
    assert_eq!(
        std::fs::read_to_string(setup.key_path()).unwrap(),
        ca.key_pem
    );
}

#[test]
fn a_certificate_without_its_key_refuses_to_start() {
    let setup = Setup::new(9);
    std::fs::write(setup.cert_path(), TestCa::new("lonely").cert_pem).unwrap();
    let line = setup.assert_refuses_to_start();
    assert!(line.contains("ca-key.pem"), "names the missing key: {line}");
}

#[test]
fn a_key_without_its_certificate_refuses_to_start() {
    let setup = Setup::new(9);
    setup.write_key(&TestCa::new("lonely").key_pem);
    let line = setup.assert_refuses_to_start();
    assert!(
        line.contains("ca.pem"),
        "names the missing certificate: {line}"
    );
}

#[test]
fn a_certificate_that_is_not_a_ca_refuses_to_start() {
    let setup = Setup::new(9);
    let (cert, key) = self_signed_leaf_pem("leaf.example.test");
    std::fs::write(setup.cert_path(), cert).unwrap();
    setup.write_key(&key);
    let line = setup.assert_refuses_to_start();
    assert!(line.contains("ca.pem"), "names the certificate: {line}");
    assert!(line.contains("CA"), "says it is not a CA: {line}");
}

#[test]
fn a_key_of_another_ca_refuses_to_start() {
    let setup = Setup::new(9);
    let (one, other) = (TestCa::new("one"), TestCa::new("other"));
    std::fs::write(setup.cert_path(), &one.cert_pem).unwrap();
    setup.write_key(&other.key_pem);
    let line = setup.assert_refuses_to_start();
    assert!(
        line.contains("ca-key.pem") || line.contains("ca.pem"),
        "names the file: {line}"
    );
    assert!(
        line.contains("match"),
        "says the pair does not match: {line}"
    );
}

#[test]
fn garbage_in_the_certificate_file_refuses_to_start() {
    let setup = Setup::new(9);
    std::fs::write(
        setup.cert_path(),
        "-----BEGIN CERTIFICATE-----\nthis is !! not base64 @@\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    setup.write_key(&TestCa::new("real").key_pem);
    let line = setup.assert_refuses_to_start();
    assert!(line.contains("ca.pem"), "names the file: {line}");
}

#[test]
fn garbage_in_the_key_file_refuses_to_start() {
    let setup = Setup::new(9);
    std::fs::write(setup.cert_path(), TestCa::new("real").cert_pem).unwrap();
    setup.write_key("not a key at all\n");
    let line = setup.assert_refuses_to_start();
    assert!(line.contains("ca-key.pem"), "names the file: {line}");
}

#[test]
fn ca_path_and_export_show_the_ca_a_running_proxy_uses() {
    let w = Watchtower::start(Opts::default());
    let config = w.config_path.to_str().unwrap();
    let cwd = TempDir::new("ca-cwd");

    let out = run_cli(cwd.path(), &["ca", "path", "--config", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}\n", w.dir.path().join("ca.pem").display())
    );

    let out = run_cli(cwd.path(), &["ca", "export", "--config", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pem = text(&out.stdout);
    assert_eq!(pem.trim_end(), w.ca_pem().trim_end());
    assert!(!pem.contains("PRIVATE KEY"));
    // The exported PEM is what a client needs to trust the proxy's leaves.
    let backend = Backend::named("local");
    drop(w);
    let setup = Setup::new(backend.port());
    let exported = run_cli(
        cwd.path(),
        &["ca", "export", "--config", setup.config.to_str().unwrap()],
    );
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let _run = setup.start(cwd.path());
    let resp = intercept_with(setup.proxy, &text(&exported.stdout)).expect("trusting the export");
    assert_eq!(resp.status, 200);
    assert_eq!(files_in(cwd.path()), ["stderr.txt"]);
}

#[test]
fn ca_path_on_a_fresh_config_creates_the_pair() {
    let setup = Setup::new(9);
    let cwd = TempDir::new("ca-cwd");
    let out = run_cli(
        cwd.path(),
        &["ca", "path", "--config", setup.config.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}\n", setup.cert_path().display())
    );
    assert!(setup.cert_path().is_file());
    assert_eq!(mode(&setup.key_path()), 0o600);
}

#[test]
fn ca_regenerate_needs_yes_and_then_replaces_the_pair() {
    let backend = Backend::named("local");
    let setup = Setup::new(backend.port());
    let config = setup.config.to_str().unwrap();
    let cwd = TempDir::new("ca-cwd");
    assert!(
        run_cli(cwd.path(), &["ca", "path", "--config", config])
            .status
            .success()
    );
    let (old_cert, old_key) = (
        setup.read("ca.pem").unwrap(),
        setup.read("ca-key.pem").unwrap(),
    );

    let out = run_cli(cwd.path(), &["ca", "regenerate", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "without --yes");
    assert!(!out.stderr.is_empty(), "it explains what --yes would do");
    assert_eq!(setup.read("ca.pem").unwrap(), old_cert, "ca.pem changed");
    assert_eq!(
        setup.read("ca-key.pem").unwrap(),
        old_key,
        "ca-key.pem changed"
    );

    let out = run_cli(
        cwd.path(),
        &["ca", "regenerate", "--yes", "--config", config],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_cert = setup.read("ca.pem").unwrap();
    assert_ne!(new_cert, old_cert, "ca.pem was not replaced");
    assert_ne!(
        setup.read("ca-key.pem").unwrap(),
        old_key,
        "ca-key.pem was not replaced"
    );
    assert_eq!(mode(&setup.key_path()), 0o600);

    // The proxy now signs with the new CA: clients of the old one are refused.
    let _run = setup.start(cwd.path());
    let resp = intercept_with(setup.proxy, &text(&new_cert)).expect("trusting the new CA");
    assert_eq!(resp.status, 200);
    let err = intercept_with(setup.proxy, &text(&old_cert))
        .expect_err("a client of the old CA must reject the new leaves");
    assert!(err.contains("invalid peer certificate"), "{err}");
}
