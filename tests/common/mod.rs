//! Shared helpers for the end-to-end tests: start the real `watchtower` binary on ephemeral
//! loopback ports with a temporary config, run small HTTP backends on std threads, and speak
//! raw HTTP/1.1 to the proxy. Every wait has a deadline; nothing sleeps and hopes.
#![allow(dead_code)]
pub mod catalogue;
pub mod dns;
pub mod tls;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Default deadline for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh, empty temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "watchtower-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `method path` with a JSON `body` (if any) to the admin API, as a same-origin client
/// that has the admin token.
pub fn admin(w: &Watchtower, method: &str, path: &str, body: Option<&str>) -> Response {
    admin_with(w, method, path, body, &[])
}

/// [`admin`] with extra (or replacing) header fields.
pub fn admin_with(
    w: &Watchtower,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Response {
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request += &format!("Host: {}\r\n", w.admin);
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-watchtower-token"))
    {
        request += &format!("X-Watchtower-Token: {}\r\n", w.admin_token());
    }
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    match body {
        Some(body) => {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                request += "Content-Type: application/json\r\n";
            }
            request += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        }
        None => request += "\r\n",
    }
    roundtrip(w.admin, &request)
}

/// A response body as JSON.
pub fn json(resp: &Response) -> serde_json::Value {
    serde_json::from_str(&resp.body_text()).unwrap_or_else(|e| panic!("{e}: {}", resp.body_text()))
}

/// Waits until `cond` holds, failing with `what` at the deadline.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `[[route]]` block.
pub fn route(id: &str, domain: &str, port: u16) -> String {
    format!(
        "[[route]]\nid = \"{id}\"\ndomain = \"{domain}\"\ntarget_host = \"127.0.0.1\"\ntarget_port = {port}\n\n"
    )
}

/// A disabled `[[route]]` block.
pub fn disabled_route(id: &str, domain: &str, port: u16) -> String {
    format!(
        "{}\nenabled = false\n\n",
        route(id, domain, port).trim_end()
    )
}

/// How to start Watchtower.
#[derive(Clone)]
pub struct Opts {
    pub reverse_http: bool,
    pub reverse_https: bool,
    pub local_routing: bool,
    pub api_log: bool,
    /// Lines for the `[timeouts]` table, e.g. `"request_header = 1\n"`.
    pub timeouts: String,
    /// `[[route]]` blocks (see [`route`]).
    pub routes: String,
    /// Extra lines for the `[tls]` table (the CA always lives in the temporary folder),
    /// e.g. `"extra_roots = \"origin-ca.pem\"\n"`.
    pub tls: String,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// `[proxy] workers`; `None` leaves the default (one per core).
    pub workers: Option<u16>,
    /// `[proxy] dns_server`.
    pub dns_server: Option<SocketAddr>,
    /// `[log] capture_bodies`, e.g. "1KiB".
    pub capture_bodies: Option<&'static str>,
    /// Extra lines for the `[proxy]` table, e.g. `"max_connections = 8\n"`.
    pub proxy: String,
    /// Run under `ulimit -n` of this many open files (soft and hard).
    pub open_files: Option<u32>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            reverse_http: true,
            reverse_https: false,
            local_routing: true,
            api_log: true,
            timeouts: String::new(),
            routes: String::new(),
            tls: String::new(),
            args: Vec::new(),
            workers: None,
            dns_server: None,
            capture_bodies: None,
            proxy: String::new(),
            open_files: None,
        }
    }
}

/// A running `watchtower` process, killed on drop.
pub struct Watchtower {
    child: Child,
    pub proxy: SocketAddr,
    pub reverse: Option<SocketAddr>,
    pub reverse_tls: Option<SocketAddr>,
    /// The admin API.
    pub admin: SocketAddr,
    pub dir: TempDir,
    pub config_path: PathBuf,
    stderr: StderrLines,
    open_files: Option<u32>,
}

impl Watchtower {
    /// Starts Watchtower with the default options and the given `[[route]]` blocks.
    pub fn with_routes(routes: String) -> Watchtower {
        Watchtower::start(Opts {
            routes,
            ..Default::default()
        })
    }

    pub fn start(opts: Opts) -> Watchtower {
        // Ports found free can be taken by someone else before we bind: retry a few times.
        for attempt in 0..5 {
            match Self::try_start(&opts) {
                Ok(w) => return w,
                Err(msg) if msg.contains("in use") && attempt < 4 => continue,
                Err(msg) => panic!("watchtower did not start: {msg}"),
            }
        }
        unreachable!()
    }

    fn try_start(opts: &Opts) -> Result<Watchtower, String> {
        let dir = TempDir::new("wt");
        // Four different ports: the system may hand the same free port out twice in a row.
        let mut ports = Vec::new();
        while ports.len() < 4 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let proxy_port = ports[0];
        let reverse_port = opts.reverse_http.then_some(ports[1]);
        let reverse_tls_port = opts.reverse_https.then_some(ports[2]);
        let admin_port = ports[3];
        let mut toml = format!(
            "[proxy]\nlisten = \"127.0.0.1\"\nproxy_port = {proxy_port}\nlocal_routing = {}\n",
            opts.local_routing
        );
        if let Some(p) = reverse_port {
            toml += &format!("reverse_http_port = {p}\n");
        }
        if let Some(p) = reverse_tls_port {
            toml += &format!("reverse_https_port = {p}\n");
        }
        if let Some(n) = opts.workers {
            toml += &format!("workers = {n}\n");
        }
        if let Some(dns) = opts.dns_server {
            toml += &format!("dns_server = \"{dns}\"\n");
        }
        toml += &opts.proxy;
        // Never the user's data directory: each run gets its own CA.
        toml += &format!(
            "\n[tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\n{}",
            opts.tls
        );
        if opts.api_log || opts.capture_bodies.is_some() {
            toml += "\n[log]\n";
        }
        if opts.api_log {
            toml += "api_log = \"api.jsonl\"\n";
        }
        if let Some(size) = opts.capture_bodies {
            toml += &format!("capture_bodies = {size:?}\n");
        }
        if !opts.timeouts.is_empty() {
            toml += &format!("\n[timeouts]\n{}\n", opts.timeouts);
        }
        toml += &format!("\n[admin]\nport = {admin_port}\n");
        toml += "\n";
        toml += &opts.routes;
        let config_path = dir.path().join("watchtower.toml");
        std::fs::write(&config_path, toml).unwrap();
        let (child, stderr) =
            spawn_watchtower(&config_path, dir.path(), &opts.args, opts.open_files);
        let mut w = Watchtower {
            child,
            proxy: SocketAddr::from(([127, 0, 0, 1], proxy_port)),
            reverse: reverse_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            reverse_tls: reverse_tls_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir,
            config_path,
            stderr,
            open_files: opts.open_files,
        };
        let line = w.wait_for_stderr(|l| l.contains(" ready: ") || l == "<stderr closed>", WAIT);
        match line {
            Some(l) if l.contains(" ready: ") => Ok(w),
            _ => {
                let _ = w.child.kill();
                Err(w.stderr_text())
            }
        }
    }

    /// Stops the process and starts it again on the same config file (which the test may have
    /// changed), waiting until it is ready.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, stderr) =
            spawn_watchtower(&self.config_path, self.dir.path(), &[], self.open_files);
        self.child = child;
        self.stderr = stderr;
        let line = self.wait_for_stderr(|l| l.contains(" ready: ") || l == "<stderr closed>", WAIT);
        assert!(
            line.is_some_and(|l| l.contains(" ready: ")),
            "watchtower did not restart:\n{}",
            self.stderr_text()
        );
    }

    /// Waits until a stderr line satisfies `pred`; returns it, or `None` at the deadline.
    pub fn wait_for_stderr(&self, pred: impl Fn(&str) -> bool, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let (lines, cv) = &*self.stderr;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Everything written to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.0.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal, named as `kill` takes it ("HUP").
    pub fn signal(&self, sig: &str) {
        assert!(unsafe_free_kill(self.child.id(), sig), "kill -{sig} failed");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let rc = unsafe_free_kill(self.child.id(), "TERM");
        assert!(rc, "kill -TERM failed");
    }

    /// Waits for the process to exit; returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "watchtower did not exit within {within:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size of the process in KiB (Linux /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// What the process's open descriptors point at (`socket:[..]`, `pipe:[..]`, files).
    pub fn fd_targets(&self) -> Vec<PathBuf> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .collect()
    }

    /// The admin API's token (written beside the CA key at start).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The CA certificate this instance created, as PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.pem")).unwrap()
    }

    /// Path of the API log.
    pub fn api_log_path(&self) -> PathBuf {
        self.dir.path().join("api.jsonl")
    }

    /// Waits until the API log has at least `n` lines; returns all lines.
    pub fn wait_log_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(self.api_log_path()).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "api log has {} lines, wanted {n}:\n{text}",
                lines.len()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET http://host/` through the forward proxy, on a new connection.
    pub fn get(&self, host: &str) -> Response {
        roundtrip(
            self.proxy,
            &format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
    }

    /// A new connection to the forward proxy port.
    pub fn connect_proxy(&self) -> TcpStream {
        connect(self.proxy)
    }

    /// A new connection to the reverse HTTP port.
    pub fn connect_reverse(&self) -> TcpStream {
        connect(self.reverse.expect("reverse_http not enabled"))
    }
}

impl Drop for Watchtower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type StderrLines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// Starts `watchtower --config <config> <args>` in `cwd`, collecting its stderr lines.
fn spawn_watchtower(
    config: &Path,
    cwd: &Path,
    args: &[String],
    open_files: Option<u32>,
) -> (Child, StderrLines) {
    let bin = env!("CARGO_BIN_EXE_watchtower");
    let mut command = match open_files {
        // The shell lowers the limit (soft and hard, so Watchtower cannot raise it back) and
        // becomes Watchtower, keeping the pid.
        Some(n) => {
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = command
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(cwd)
        // Tests read info-level lines (the ready line, mints): a caller's RUST_LOG
        // must not silence them.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr: StderrLines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let sink = Arc::clone(&stderr);
    let pipe = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let (lines, cv) = &*sink;
            lines.lock().unwrap().push(line);
            cv.notify_all();
        }
        let (lines, cv) = &*sink;
        lines.lock().unwrap().push("<stderr closed>".into());
        cv.notify_all();
    });
    (child, stderr)
}

/// Runs `watchtower <args>` to completion in `cwd` (it must finish within [`WAIT`]) and
/// returns what it printed.
pub fn run_cli(cwd: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchtower"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("watchtower {args:?} did not exit within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Command output as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kill -SIG pid` through the kill(1) command, so the tests need no unsafe code.
fn unsafe_free_kill(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A connected client socket with read/write timeouts (so a bug fails, not hangs).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// An absolute-form GET for `http://127.0.0.1:port{path}`.
pub fn abs_get(port: u16, path: &str) -> String {
    format!("GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
}

/// A CONNECT request head for `target` (`host:port`).
pub fn connect_request(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

/// Writes `bytes` on `from` and asserts that exactly they arrive on `to`.
pub fn pass_bytes(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
    from.write_all(bytes).unwrap();
    let mut got = vec![0u8; bytes.len()];
    to.read_exact(&mut got).unwrap();
    assert_eq!(got, bytes);
}

/// Asserts the peer closed the connection: EOF (or a reset), not a timeout and not more bytes.
/// `ctx` says what the connection was for.
pub fn assert_closed(r: &mut impl Read, ctx: &str) {
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "{ctx}: bytes where EOF was expected: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{ctx}: the connection was not closed: {e}"),
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Header (lowercased name, value), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response head: status, reason, (lowercased name, value) headers.
pub type Head = (u16, String, Vec<(String, String)>);

/// Reads one response head (status line + headers) from `r`.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Head> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no response"));
    }
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    let _version = parts.next().unwrap_or("");
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {line:?}"),
        )
    })?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"));
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap_or((h, ""));
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok((status, reason, headers))
}

/// Reads one complete response to a request with method `method`, skipping interim 1xx
/// responses (they are returned in `interim`).
pub fn read_response_for(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    loop {
        let (status, reason, headers) = read_head(r)?;
        let mut resp = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        if method == "HEAD" || status == 204 || status == 304 || status == 101 {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            resp.body = read_chunked(r)?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            let mut body = vec![0; len];
            r.read_exact(&mut body)?;
            resp.body = body;
        } else {
            r.read_to_end(&mut resp.body)?;
        }
        return Ok(resp);
    }
}

/// Reads one complete response to a GET.
pub fn read_response(r: &mut impl BufRead) -> io::Result<Response> {
    read_response_for(r, "GET")
}

/// Decodes a chunked body (trailers skipped).
pub fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(
            |_| io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}")),
        )?;
        if size == 0 {
            loop {
                let mut t = String::new();
                r.read_line(&mut t)?;
                if t.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// Sends `request` on a new connection to `addr` and reads one response.
pub fn roundtrip(addr: SocketAddr, request: &str) -> Response {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    let method = request.split(' ').next().unwrap_or("GET").to_string();
    let mut r = BufReader::new(s);
    read_response_for(&mut r, &method).unwrap()
}

/// Reads until EOF (or the read timeout) and returns everything.
pub fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A request as a test backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which backend connection (0, 1, ...) carried it.
    pub conn: usize,
    pub raw_head: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What a backend handler answers: status, headers, body (Content-Length is added).
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A keep-alive HTTP/1.1 backend on 127.0.0.1 that records every request it gets.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Backend {
    /// A backend answering `200 <name> <method> <target>` to everything.
    pub fn named(name: &'static str) -> Backend {
        Backend::start(move |req| {
            Reply::text(200, &format!("{name} {} {}", req.method, req.target))
        })
    }

    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Backend {
        Backend::start_on("127.0.0.1:0", handler)
    }

    /// A backend named `name` (as [`Backend::named`]) listening on `addr` (e.g. "[::1]:0").
    pub fn named_on(addr: &str, name: &'static str) -> Backend {
        Backend::start_on(addr, move |req| {
            Reply::text(200, &format!("{name} {} {}", req.method, req.target))
        })
    }

    pub fn start_on(
        addr: &str,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, conns2) = (Arc::clone(&seen), Arc::clone(&connections));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let id = conns2.fetch_add(1, Ordering::SeqCst);
                let (seen, handler) = (Arc::clone(&seen2), Arc::clone(&handler));
                thread::spawn(move || serve(stream, id, &seen, &*handler));
            }
        });
        Backend {
            addr,
            seen,
            connections,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived.
    pub fn wait_requests(&self, n: usize) -> Vec<Seen> {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.requests();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "backend saw {} requests, wanted {n}",
                seen.len()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve(stream: TcpStream, id: usize, seen: &Mutex<Vec<Seen>>, handler: &Handler) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let Ok(Some(req)) = read_request(&mut r, id) else {
            return;
        };
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            // Body already read by read_request; nothing more to do for Expect here.
        }
        let close = req
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        let reply = handler(&req);
        seen.lock().unwrap().push(req.clone());
        let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (n, v) in &reply.headers {
            out += &format!("{n}: {v}\r\n");
        }
        if req.method != "HEAD"
            || !reply
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            out += &format!("Content-Length: {}\r\n", reply.body.len());
        }
        out += "\r\n";
        let mut bytes = out.into_bytes();
        if req.method != "HEAD" {
            bytes.extend_from_slice(&reply.body);
        }
        if w.write_all(&bytes).is_err() || close {
            return;
        }
    }
}

/// Reads one request (head + Content-Length or chunked body). `Ok(None)` on clean EOF.
pub fn read_request(r: &mut impl BufRead, conn: usize) -> io::Result<Option<Seen>> {
    let mut raw = String::new();
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    raw += &line;
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        raw += &h;
        let t = h.trim_end_matches(['\r', '\n']);
        if t.is_empty() {
            break;
        }
        let (n, v) = t.split_once(':').unwrap_or((t, ""));
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut seen = Seen {
        method,
        target,
        headers,
        body: Vec::new(),
        conn,
        raw_head: raw,
    };
    if seen
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        seen.body = read_chunked(r)?;
    } else if let Some(len) = seen.header("content-length") {
        let mut body = vec![0; len.parse().unwrap_or(0)];
        r.read_exact(&mut body)?;
        seen.body = body;
    }
    Ok(Some(seen))
}

/// A backend that hands each accepted connection to the test to script byte by byte.
pub struct RawBackend {
    pub addr: SocketAddr,
    conns: mpsc::Receiver<TcpStream>,
}

impl RawBackend {
    pub fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::channel();
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { break };
                s.set_read_timeout(Some(WAIT)).ok();
                if tx.send(s).is_err() {
                    break;
                }
            }
        });
        RawBackend { addr, conns }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The next connection the proxy opened to us.
    pub fn accept(&self) -> TcpStream {
        self.conns
            .recv_timeout(WAIT)
            .expect("the proxy did not connect to the backend in time")
    }

    /// The next connection, `ctx` naming the case when it does not come.
    pub fn accept_for(&self, ctx: &str) -> TcpStream {
        self.conns
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{ctx}: the proxy did not connect to the backend"))
    }

    /// The next connection if one arrives within `within`.
    pub fn try_accept(&self, within: Duration) -> Option<TcpStream> {
        self.conns.recv_timeout(within).ok()
    }

    /// True if no connection arrives within `within`.
    pub fn no_connection_within(&self, within: Duration) -> bool {
        self.conns.recv_timeout(within).is_err()
    }
}

/// Reads a head (request or response, up to CRLFCRLF) byte by byte, so nothing after it is
/// consumed.
pub fn read_raw_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ---- WebSocket handshake ----

/// The RFC 6455 §1.3 sample key and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The upgrade request for `path` with `Host: host`.
pub fn ws_upgrade(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The 101 answer to an upgrade request, with `Sec-WebSocket-Accept: accept`.
pub fn ws_switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Reads the answer to an upgrade request and asserts it is a 101 with `Upgrade: websocket`;
/// returns it (without a body) for further checks.
pub fn read_ws_upgrade_answer(r: &mut impl BufRead) -> Response {
    let (status, reason, headers) = read_head(r).expect("the upgrade answer");
    let answer = Response {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    let headers = &answer.headers;
    assert_eq!(answer.status, 101, "{} {headers:?}", answer.reason);
    assert!(
        answer
            .header("upgrade")
            .unwrap_or_default()
            .eq_ignore_ascii_case("websocket"),
        "{headers:?}"
    );
    answer
}

/// A WebSocket test backend on 127.0.0.1: every connection goes to its serve function on a
/// thread of its own, with the list where that function records the upgrade heads it got.
pub struct WsServer {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl WsServer {
    pub fn start(serve: fn(TcpStream, &Mutex<Vec<String>>)) -> WsServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { break };
                let seen = Arc::clone(&seen);
                thread::spawn(move || serve(s, &seen));
            }
        });
        WsServer { addr, heads }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The upgrade heads recorded so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// The value of header `name` in a raw request head.
pub fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Parses a JSONL line into a flat map of key -> raw JSON value text (enough for asserts
/// on the API log without a JSON dependency: strings keep their quotes).
pub fn json_fields(line: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let s = line.trim();
    let s = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .expect("a JSON object");
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // key
        while i < bytes.len() && bytes[i] != b'"' {
            i += 1;
        }
        let kstart = i + 1;
        i = kstart;
        while bytes[i] != b'"' {
            i += 1;
        }
        let key = &s[kstart..i];
        i += 1;
        while bytes[i] == b':' || bytes[i] == b' ' {
            i += 1;
        }
        let vstart = i;
        if bytes[i] == b'"' {
            i += 1;
            while bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
        }
        out.insert(key.to_string(), s[vstart..i].trim().to_string());
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
    }
    out
}
