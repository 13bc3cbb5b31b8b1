//! The command line and the config contract (SPEC §9), end to end: `--help`, `--version`,
//! unknown arguments, `watchtower check` on good and bad files, which file is used when
//! `--config` is absent, and that a bad config stops a run before anything is bound.

mod common;

use common::*;
use std::net::TcpStream;
use std::process::Output;

/// Writes `toml` to a fresh folder's `watchtower.toml` and runs `check --config` on it.
fn check(toml: &str) -> (Output, TempDir) {
    let dir = TempDir::new("cli");
    let path = dir.path().join("watchtower.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run_cli(dir.path(), &["check", "--config", path.to_str().unwrap()]);
    (out, dir)
}

/// `check` failed with one clear stderr line containing every one of `words`.
fn assert_one_error(toml: &str, words: &[&str]) {
    let (out, _dir) = check(toml);
    let stderr = text(&out.stderr);
    let ctx = format!("config:\n{toml}\nstderr:\n{stderr}");
    assert!(!out.status.success(), "check accepted a bad config\n{ctx}");
    assert!(out.stdout.is_empty(), "a routing table was printed\n{ctx}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one message\n{ctx}");
    for w in words {
        assert!(lines[0].contains(w), "the message names {w:?}\n{ctx}");
    }
}

fn route_block(id: &str, domain: &str, host: &str, port: u32) -> String {
    format!(
        "[[route]]\nid = \"{id}\"\ndomain = \"{domain}\"\ntarget_host = \"{host}\"\ntarget_port = {port}\n\n"
    )
}

#[test]
fn help_prints_usage_and_exits_0() {
    let dir = TempDir::new("cli");
    for flag in ["--help", "-h"] {
        let out = run_cli(dir.path(), &[flag]);
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage"), "{flag}: {stdout}");
        assert!(stdout.contains("--config"), "{flag}: {stdout}");
        assert!(stdout.contains("check"), "{flag}: {stdout}");
    }
}

#[test]
fn version_prints_name_and_version_and_exits_0() {
    let dir = TempDir::new("cli");
    for flag in ["--version", "-V"] {
        let out = run_cli(dir.path(), &[flag]);
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        assert_eq!(
            text(&out.stdout).trim_end(),
            format!("watchtower {}", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

#[test]
fn unknown_argument_exits_nonzero_with_usage() {
    let dir = TempDir::new("cli");
    for args in [
        &["--bogus"][..],
        &["check", "--frobnicate"][..],
        &["serve"][..],
    ] {
        let out = run_cli(dir.path(), args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(args[args.len() - 1]),
            "{args:?}: names the argument: {stderr}"
        );
        assert!(stderr.contains("Usage"), "{args:?}: shows usage: {stderr}");
    }
}

#[test]
fn check_prints_the_routing_table_of_a_valid_config() {
    let toml = format!(
        "[proxy]\nlisten = \"127.0.0.1\"\nproxy_port = 18888\nreverse_http_port = 18080\n\n{}{}{}\nenabled = false\n",
        route_block("web", "app.example.test", "127.0.0.1", 3100),
        route_block("api", "*.api.example.test", "localhost", 3200),
        route_block("old", "old.example.test", "127.0.0.1", 3300).trim_end(),
    );
    let (out, dir) = check(&toml);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    for want in [
        "127.0.0.1:18888",
        "127.0.0.1:18080",
        "web",
        "app.example.test",
        "127.0.0.1:3100",
        "api",
        "*.api.example.test",
        "localhost:3200",
        "old",
        "old.example.test",
        "127.0.0.1:3300",
    ] {
        assert!(stdout.contains(want), "the table shows {want:?}:\n{stdout}");
    }
    // Each route is one row: its id, domain and target together.
    for (id, domain, target) in [
        ("web", "app.example.test", "127.0.0.1:3100"),
        ("api", "*.api.example.test", "localhost:3200"),
        ("old", "old.example.test", "127.0.0.1:3300"),
    ] {
        assert!(
            stdout.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.contains(&id) && cols.contains(&domain) && cols.contains(&target)
            }),
            "a row for route {id}:\n{stdout}"
        );
    }
    // The short flag does the same.
    let path = dir.path().join("watchtower.toml");
    let short = run_cli(dir.path(), &["check", "-c", path.to_str().unwrap()]);
    assert!(short.status.success());
    assert_eq!(text(&short.stdout), stdout);
}

#[test]
fn check_rejects_unknown_keys_and_wrong_types() {
    assert_one_error("[proxy]\nprxy_port = 1\n", &["prxy_port", "line 2"]);
    assert_one_error(
        "[proxy]\nproxy_port = 9000\n[tls]\nca_crt = \"x\"\n",
        &["ca_crt", "line 4"],
    );
    assert_one_error(
        &format!(
            "{}\ncolour = \"red\"\n",
            route_block("a", "a.test", "127.0.0.1", 1).trim_end()
        ),
        &["colour", "line 6"],
    );
    assert_one_error("[proxy]\nproxy_port = \"x\"\n", &["proxy_port", "line 2"]);
    assert_one_error(
        "[proxy]\nlocal_routing = \"yes\"\n",
        &["local_routing", "line 2"],
    );
    assert_one_error("[timeouts]\nidle = \"soon\"\n", &["idle", "line 2"]);
}

#[test]
fn check_rejects_unusable_ports() {
    assert_one_error("[proxy]\nproxy_port = 0\n", &["proxy_port", "0", "line 2"]);
    assert_one_error(
        "[proxy]\nproxy_port = 70000\n",
        &["proxy_port", "70000", "line 2"],
    );
    assert_one_error(
        "[proxy]\nproxy_port = 9000\nreverse_http_port = 0\n",
        &["reverse_http_port", "line 3"],
    );
    assert_one_error(
        &route_block("a", "a.test", "127.0.0.1", 70000),
        &["target_port", "70000", "line 5"],
    );
    assert_one_error(
        "[proxy]\nproxy_port = 9000\nreverse_http_port = 9000\n",
        &["reverse_http_port", "proxy_port", "9000"],
    );
    assert_one_error(
        "[proxy]\nproxy_port = 9000\nreverse_http_port = 9001\nreverse_https_port = 9001\n",
        &["reverse_https_port", "reverse_http_port", "9001"],
    );
}

#[test]
fn check_rejects_duplicate_route_ids_and_domains() {
    assert_one_error(
        &(route_block("web", "a.test", "127.0.0.1", 1)
            + &route_block("web", "b.test", "127.0.0.1", 2)),
        &["\"web\"", "id", "line 8"],
    );
    assert_one_error(
        &(route_block("a", "app.example.test", "127.0.0.1", 1)
            + &route_block("b", "App.Example.TEST", "127.0.0.1", 2)),
        &["app.example.test", "domain", "line 9"],
    );
    assert_one_error(
        &(route_block("a", "*.example.test", "127.0.0.1", 1)
            + &route_block("b", "*.EXAMPLE.test", "127.0.0.1", 2)),
        &["*.example.test", "domain", "line 9"],
    );
}

#[test]
fn check_rejects_malformed_wildcards_and_empty_targets() {
    for domain in ["*example.test", "a.*.test", "*", "*.", "**.example.test"] {
        assert_one_error(
            &route_block("w", domain, "127.0.0.1", 1),
            &[&format!("\"{domain}\""), "domain", "line 3"],
        );
    }
    assert_one_error(&route_block("e", "", "127.0.0.1", 1), &["domain", "line 3"]);
    assert_one_error(
        &route_block("t", "a.test", "", 1),
        &["target_host", "line 4"],
    );
}

#[test]
fn check_with_a_missing_config_file_names_it() {
    let dir = TempDir::new("cli");
    let missing = dir.path().join("nope.toml");
    let out = run_cli(
        dir.path(),
        &["check", "--config", missing.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
    // Running (not just checking) fails the same way.
    let out = run_cli(dir.path(), &["--config", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nope.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_without_config_in_an_empty_folder_shows_the_defaults() {
    let dir = TempDir::new("cli");
    let out = run_cli(dir.path(), &["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("127.0.0.1:8888"), "{stdout}");
    assert!(
        stdout.contains("default"),
        "says it uses built-in defaults: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("route") && l.contains(':'))
            && stdout.contains("(none)"),
        "no routes: {stdout}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "check wrote into the working directory"
    );
}

#[test]
fn check_without_config_uses_watchtower_toml_in_the_current_folder() {
    let dir = TempDir::new("cli");
    let toml = format!(
        "[proxy]\nproxy_port = 18889\n\n{}",
        route_block("from-cwd", "cwd.example.test", "127.0.0.1", 3999)
    );
    std::fs::write(dir.path().join("watchtower.toml"), toml).unwrap();
    let out = run_cli(dir.path(), &["check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for want in [
        "watchtower.toml",
        "127.0.0.1:18889",
        "from-cwd",
        "cwd.example.test",
        "127.0.0.1:3999",
    ] {
        assert!(stdout.contains(want), "shows {want:?}: {stdout}");
    }
    assert!(!stdout.contains(":8888"), "not the defaults: {stdout}");

    // And a bad watchtower.toml there is reported, naming the file.
    std::fs::write(
        dir.path().join("watchtower.toml"),
        "[proxy]\nprxy_port = 1\n",
    )
    .unwrap();
    let out = run_cli(dir.path(), &["check"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("watchtower.toml") && stderr.contains("prxy_port"),
        "{stderr}"
    );
}

#[test]
fn running_with_a_bad_config_exits_nonzero_and_binds_nothing() {
    let dir = TempDir::new("cli");
    let port = free_port();
    let reverse = free_port();
    let toml = format!(
        "[proxy]\nlisten = \"127.0.0.1\"\nproxy_port = {port}\nreverse_http_port = {reverse}\n\n{}{}",
        route_block("dup", "a.example.test", "127.0.0.1", 3100),
        route_block("dup", "b.example.test", "127.0.0.1", 3101),
    );
    let path = dir.path().join("watchtower.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run_cli(dir.path(), &["--config", path.to_str().unwrap()]);
    assert!(!out.status.success(), "it ran with a duplicate route id");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("dup"), "{stderr}");
    assert!(
        !stderr.contains(" ready: "),
        "it announced readiness: {stderr}"
    );
    for p in [port, reverse] {
        assert!(
            TcpStream::connect(("127.0.0.1", p)).is_err(),
            "something listens on port {p} after the failed start"
        );
    }
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    // `check` shows where the API log and CA files would go: next to the config, not in the
    // working directory.
    let dir = TempDir::new("cli");
    let elsewhere = TempDir::new("cli-cwd");
    let path = dir.path().join("watchtower.toml");
    std::fs::write(
        &path,
        "[proxy]\nproxy_port = 18890\n[tls]\nca_cert = \"certs/ca.pem\"\nca_key = \"certs/ca-key.pem\"\n\
         [log]\napi_log = \"logs/api.jsonl\"\n",
    )
    .unwrap();
    let out = run_cli(
        elsewhere.path(),
        &["check", "--config", path.to_str().unwrap()],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let base = dir.path().display().to_string();
    for file in ["certs/ca.pem", "certs/ca-key.pem", "logs/api.jsonl"] {
        assert!(
            stdout.contains(&format!("{base}/{file}")),
            "{file} under {base}: {stdout}"
        );
    }
}

#[test]
fn listening_beyond_loopback_needs_access_rules() {
    let dir = TempDir::new("cli-access");
    let path = dir.path().join("watchtower.toml");
    let port = free_port();
    let base = format!(
        "[proxy]\nlisten = \"0.0.0.0\"\nproxy_port = {port}\n[tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\n[admin]\nenabled = false\n"
    );
    std::fs::write(&path, &base).unwrap();
    let out = run_cli(dir.path(), &["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 2")
            && stderr.contains("proxy.listen")
            && stderr.contains("[access] allow"),
        "{stderr}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "it listened anyway"
    );
    // With rules it is accepted (and `check` shows them).
    std::fs::write(
        &path,
        format!("{base}[access]\nallow = [\"192.168.1.0/24\"]\nusers = [{{ user = \"dev\", password = \"s3cret\" }}]\n"),
    )
    .unwrap();
    let out = run_cli(dir.path(), &["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(
        &path,
        format!("{base}[access]\nallow = [\"192.168.1.0/40\"]\n"),
    )
    .unwrap();
    let out = run_cli(dir.path(), &["check", "--config", path.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("access.allow"),
        "{}",
        text(&out.stderr)
    );
}
