//! The admin API: the local-routing switch and the routes, changed while Watchtower runs and
//! written back to `watchtower.toml`; the recent exchanges (a list, a live stream, a HAR file) and
//! statistics; the CA certificate for devices to download; a PAC file; a health check.
//!
//! It listens on loopback (`[admin]`, default 127.0.0.1:8889; beyond loopback only with
//! `[access]` rules, which then apply, with `Authorization: Basic`) and runs on its own thread,
//! one short-lived thread per connection (at most [`MAX_CONNECTIONS`]), with blocking sockets and
//! deadlines: admin calls are rare, and keeping them off the event loops keeps the proxy's
//! request path free of them. Changes reach the loops through [`Live`] at once; connections
//! already open keep going.
//!
//! It is a control surface for the machine's user, and web pages the user visits must not be
//! able to drive it: a request whose `Host` is not the admin address itself (DNS rebinding) or
//! whose `Origin` is another site is refused with 403, and state-changing calls require a JSON
//! body (`Content-Type: application/json`), which a cross-site form cannot send without a
//! CORS preflight that is never granted.
//!
//! Nor may other users of the machine, who can reach loopback ports too: every `/api/` call but
//! `/api/phone` needs the admin token, a random secret kept in `admin.token` beside the CA key
//! (mode 0600, so only the user who runs Watchtower can read it), sent as
//! `Authorization: Bearer <token>`, `X-Watchtower-Token: <token>`, or (GET only, for the
//! dashboard's event stream and downloads) `?token=`. Without it: 403. The dashboard page
//! itself is public; it reads the token from the `#token=` fragment of the link Watchtower
//! prints at start (a fragment never reaches a server or a log) and keeps it in the tab's
//! session storage.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | the dashboard (`/app.js`, `/app.css`): switch, routes, live exchanges, phone set-up |
//! | `GET /healthz` | `{"status":"ok"}` |
//! | `GET /api/routing`, `PUT /api/routing` | the switch: `{"enabled": true}` |
//! | `GET /api/routes`, `POST /api/routes` | the routes (SPEC §5 LocalRoute objects); add one |
//! | `PUT /api/routes/{id}`, `DELETE /api/routes/{id}` | replace or remove one |
//! | `GET /api/exchanges?since=N&limit=M` | recent exchanges (the API log's fields, and `seq`) |
//! | `GET /api/exchanges/stream` | server-sent events, one per exchange as it is logged |
//! | `GET /api/exchanges.har` | the recent exchanges as a HAR 1.2 file |
//! | `GET /api/stats` | uptime, open connections per listener, totals by status class, bytes, certificates minted, log records dropped |
//! | `GET /ca.pem`, `GET /ca.crt` | the CA certificate, PEM or DER (for phones) |
//! | `GET /proxy.pac` | a PAC file sending everything through the forward port |
//! | `GET /api/phone`, `GET /qr.svg` | the address a phone types in, the URL of the CA on the forward port, and that URL as a QR code |
//!
//! Errors are JSON: `{"error": "...", "field": "domain"}`, with the same sentences the config
//! file gets for the same mistakes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::access::{Access, Verdict};
use crate::apilog::{ApiRecord, Exchanges, Kind, write_rfc3339};
use crate::config::{self, Route, RouteError};
use crate::event_loop::Gauges;
use crate::http::{self, BodyKind, Method};
use crate::live::Live;

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request head or body accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A client must send each part of its request within this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin API works on.
pub struct AdminState {
    pub live: Arc<Live>,
    /// Where changes are written back; `None` on built-in defaults (changes live only).
    pub config_path: Option<PathBuf>,
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    /// The forward proxy's address, for the PAC file.
    pub proxy_addr: SocketAddr,
    /// The recent exchanges and their totals (kept by the log thread).
    pub exchanges: Arc<Exchanges>,
    /// Open connections, certificates minted, log records dropped.
    pub gauges: Gauges,
    /// Who may use the admin API from other machines (`[admin] listen` beyond loopback).
    pub access: Access,
    /// The secret `/api/` calls must carry (see the module doc).
    pub(crate) token: String,
    /// The address clients must name in `Host`.
    addr: SocketAddr,
    open: AtomicUsize,
}

impl AdminState {
    pub fn new(
        live: Arc<Live>,
        config_path: Option<PathBuf>,
        (ca_pem, ca_der): (String, Vec<u8>),
        proxy_addr: SocketAddr,
        exchanges: Arc<Exchanges>,
        gauges: Gauges,
        access: Access,
    ) -> AdminState {
        AdminState {
            token: String::new(),
            live,
            config_path,
            ca_pem,
            ca_der,
            proxy_addr,
            exchanges,
            gauges,
            access,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            open: AtomicUsize::new(0),
        }
    }
}

/// Binds `addr` and serves the admin API on a thread of its own, `/api/` calls requiring
/// `token`; returns the bound address.
pub fn start(addr: SocketAddr, mut state: AdminState, token: String) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    state.addr = bound;
    state.token = token;
    let state = Arc::new(state);
    thread::Builder::new()
        .name("watchtower-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if state.open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    state.open.fetch_sub(1, Ordering::SeqCst);
                    let _ = respond(
                        &mut &conn,
                        503,
                        &json!({"error": "too many admin connections"}),
                        false,
                    );
                    continue;
                }
                let state = Arc::clone(&state);
                let spawned = thread::Builder::new()
                    .name("watchtower-admin-conn".into())
                    .spawn(move || {
                        serve(conn, &state);
                        state.open.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    log::warn!("admin API: cannot start a connection thread: {e}");
                }
            }
        })?;
    Ok(bound)
}

/// A response: status, content type, body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    content_type: &'static str,
    pub(crate) body: Vec<u8>,
}

/// The dashboard: one page, its script and its style, embedded in the binary.
const DASHBOARD_HTML: &str = include_str!("admin_ui/index.html");
const DASHBOARD_JS: &str = include_str!("admin_ui/app.js");
const DASHBOARD_CSS: &str = include_str!("admin_ui/app.css");

/// Sent with every response: the dashboard loads only its own files, may not be framed, and
/// nothing is cached or sniffed.
const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'self'; img-src 'self' data:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\nX-Frame-Options: DENY\r\n\
     Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "error": message.into() }))
    }

    fn route_error(e: &RouteError) -> Reply {
        let status = if e.message.contains("already") {
            409
        } else {
            400
        };
        Reply::json(status, &json!({ "error": e.message, "field": e.field }))
    }
}

fn serve(conn: TcpStream, state: &AdminState) {
    let _ = conn.set_read_timeout(Some(READ_TIMEOUT));
    let _ = conn.set_write_timeout(Some(READ_TIMEOUT));
    let mut input: Vec<u8> = Vec::new();
    let mut stream = &conn;
    loop {
        let head = loop {
            match http::parse_request(&input) {
                Ok(Some(head)) => break head,
                Ok(None) if input.len() < MAX_REQUEST_BYTES => {}
                Ok(None) => return,
                Err(e) => {
                    let _ = respond(
                        &mut stream,
                        e.status(),
                        &json!({"error": e.to_string()}),
                        false,
                    );
                    return;
                }
            }
            if !read_more(&mut stream, &mut input) {
                return;
            }
        };
        let body_len = match head.body {
            BodyKind::None | BodyKind::UntilClose => 0,
            BodyKind::Length(n) if n <= MAX_REQUEST_BYTES as u64 => n as usize,
            BodyKind::Length(_) => {
                let _ = respond(&mut stream, 413, &json!({"error": "body too large"}), false);
                return;
            }
            BodyKind::Chunked => {
                let _ = respond(
                    &mut stream,
                    411,
                    &json!({"error": "send the body with Content-Length"}),
                    false,
                );
                return;
            }
        };
        while input.len() < head.head_len + body_len {
            if !read_more(&mut stream, &mut input) {
                return;
            }
        }
        let request = Request {
            client: conn
                .peer_addr()
                .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip()),
            local: conn.local_addr().ok(),
            method: head.method,
            method_text: String::from_utf8_lossy(head.method_span.of(&input)).into_owned(),
            path: String::from_utf8_lossy(head.path.of(&input)).into_owned(),
            host: head
                .host_header
                .map(|h| String::from_utf8_lossy(h.of(&input)).into_owned()),
            head: input[..head.head_len].to_vec(),
            body: input[head.head_len..head.head_len + body_len].to_vec(),
        };
        let keep_alive = head.keep_alive;
        input.drain(..head.head_len + body_len);
        if request.method == Method::Get
            && request.path.split('?').next() == Some("/api/exchanges/stream")
            && check_origin(&request, state.addr).is_none()
            && check_access(&request, state).is_none()
            && check_token(&request, state).is_none()
        {
            stream_exchanges(&mut stream, &request, state);
            return;
        }
        let reply = handle(&request, state);
        if write_reply(&mut stream, &reply, keep_alive).is_err() || !keep_alive {
            return;
        }
    }
}

fn read_more(stream: &mut &TcpStream, input: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            input.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

pub(crate) struct Request {
    /// Who is asking, and the address they reached (what a valid `Host` names).
    pub(crate) client: std::net::IpAddr,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) method: Method,
    pub(crate) method_text: String,
    pub(crate) path: String,
    pub(crate) host: Option<String>,
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.head);
        text.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

pub(crate) fn handle(req: &Request, state: &AdminState) -> Reply {
    if let Some(refusal) = check_access(req, state) {
        return refusal;
    }
    if let Some(refusal) = check_origin(req, state.addr) {
        return refusal;
    }
    if let Some(refusal) = check_token(req, state) {
        return refusal;
    }
    let changes = matches!(req.method, Method::Post | Method::Put | Method::Delete);
    if changes && !req.body.is_empty() {
        let json = req.header("content-type").is_some_and(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
        if !json {
            return Reply::error(415, "send the body as Content-Type: application/json");
        }
    }
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method, path) {
        (Method::Get | Method::Head, "/healthz") => Reply::json(200, &json!({"status": "ok"})),
        (Method::Get, "/" | "/index.html") => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: DASHBOARD_HTML.as_bytes().to_vec(),
        },
        (Method::Get, "/app.js") => Reply {
            status: 200,
            content_type: "text/javascript; charset=utf-8",
            body: DASHBOARD_JS.as_bytes().to_vec(),
        },
        (Method::Get, "/app.css") => Reply {
            status: 200,
            content_type: "text/css; charset=utf-8",
            body: DASHBOARD_CSS.as_bytes().to_vec(),
        },
        (Method::Get, "/api/routing") => routing_reply(state),
        (Method::Put, "/api/routing") => set_routing(req, state),
        (Method::Get, "/api/routes") => Reply::json(200, &routes_json(&state.live.routes())),
        (Method::Post, "/api/routes") => add_route(req, state),
        (Method::Put, p) if p.starts_with("/api/routes/") => {
            replace_route(req, state, &p["/api/routes/".len()..])
        }
        (Method::Delete, p) if p.starts_with("/api/routes/") => {
            delete_route(state, &p["/api/routes/".len()..])
        }
        (Method::Get, "/api/exchanges") => exchanges_reply(req, state),
        (Method::Get, "/api/exchanges.har") => har_reply(state),
        (Method::Get, "/api/stats") => stats_reply(state),
        (Method::Get, "/api/phone") => {
            let (proxy, ca_url) = phone_addresses(state.proxy_addr);
            Reply::json(200, &json!({"proxy": proxy, "ca_url": ca_url}))
        }
        (Method::Get, "/qr.svg") => Reply {
            status: 200,
            content_type: "image/svg+xml",
            body: qr_svg(&phone_addresses(state.proxy_addr).1).into_bytes(),
        },
        (Method::Get, "/ca.pem") => Reply {
            status: 200,
            content_type: "application/x-pem-file",
            body: state.ca_pem.clone().into_bytes(),
        },
        (Method::Get, "/ca.crt") => Reply {
            status: 200,
            content_type: "application/x-x509-ca-cert",
            body: state.ca_der.clone(),
        },
        (Method::Get, "/proxy.pac") => Reply {
            status: 200,
            content_type: "application/x-ns-proxy-autoconfig",
            body: format!(
                "function FindProxyForURL(url, host) {{\n  return \"PROXY {}\";\n}}\n",
                state.proxy_addr
            )
            .into_bytes(),
        },
        (
            _,
            "/healthz"
            | "/api/routing"
            | "/api/routes"
            | "/api/exchanges"
            | "/api/exchanges.har"
            | "/api/exchanges/stream"
            | "/api/stats"
            | "/ca.pem"
            | "/ca.crt"
            | "/proxy.pac",
        ) => Reply::error(405, format!("{} is not allowed on {path}", req.method_text)),
        (_, p) if p.starts_with("/api/routes/") => {
            Reply::error(405, format!("{} is not allowed on {path}", req.method_text))
        }
        _ => Reply::error(404, format!("no such endpoint: {path}")),
    }
}

/// From other machines (`[admin] listen` beyond loopback), the `[access]` rules apply, with
/// the credentials in `Authorization: Basic` (401 asks for them).
fn check_access(req: &Request, state: &AdminState) -> Option<Reply> {
    match state
        .access
        .check_credentials(req.client, &req.head, Some("authorization"))
    {
        Verdict::Allowed => None,
        Verdict::NeedsCredentials => Some(Reply::error(401, "a user name and password are needed")),
        Verdict::Forbidden => Some(Reply::error(
            403,
            format!("{} may not use the admin API", req.client),
        )),
    }
}

/// Every `/api/` call but `/api/phone` must carry the admin token (see the module doc).
fn check_token(req: &Request, state: &AdminState) -> Option<Reply> {
    let path = req.path.split('?').next().unwrap_or("");
    if !path.starts_with("/api/") || path == "/api/phone" {
        return None;
    }
    let bearer = req.header("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    });
    let query = (req.method == Method::Get)
        .then(|| query_param(req, "token"))
        .flatten();
    let offered = bearer
        .into_iter()
        .chain(req.header("x-watchtower-token"))
        .chain(query)
        .find(|t| !t.is_empty());
    match offered {
        Some(t) if same_secret(t.as_bytes(), state.token.as_bytes()) => None,
        Some(_) => Some(Reply::error(403, "wrong admin token")),
        None => Some(Reply::error(
            403,
            "the admin API needs its token: open the dashboard link Watchtower printed at start, \
             or send Authorization: Bearer <the contents of admin.token beside the CA key>",
        )),
    }
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the admin token lives: `admin.token` beside the CA key (in its 0700 folder).
pub fn token_path(ca_key: &Path) -> PathBuf {
    ca_key.with_file_name("admin.token")
}

/// Reads the admin token at `path`, or creates one (32 random bytes, hex) with mode 0600.
pub fn load_or_create_token(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match read_token(path) {
        Ok(token) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                log::warn!(
                    "{} is readable by other users (mode {mode:o}); `chmod 600` it, or delete it for a new token",
                    path.display()
                );
            }
            return Ok(token);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            log::warn!("{}: {e}; writing a new token", path.display());
        }
        Err(e) => return Err(e),
    }
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| io::Error::other("no randomness for the admin token"))?;
    let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(token)
}

/// Reads the admin token a running instance wrote to `path`.
pub fn read_token(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim();
    if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(token.to_owned())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an admin token (64 hex digits)",
        ))
    }
}

/// DNS-rebinding and cross-site protection: the `Host` must name the admin address itself (or
/// the address the client actually reached), and an `Origin`, when present, must be that same
/// address.
fn check_origin(req: &Request, addr: SocketAddr) -> Option<Reply> {
    let port = addr.port();
    let reached = req.local.map(|a| a.to_string());
    let ours = |authority: &str| {
        [
            Some(format!("127.0.0.1:{port}")),
            Some(format!("localhost:{port}")),
            Some(format!("[::1]:{port}")),
            Some(addr.to_string()),
            reached.clone(),
        ]
        .iter()
        .flatten()
        .any(|a| a.eq_ignore_ascii_case(authority))
    };
    match &req.host {
        Some(host) if ours(host) => {}
        Some(host) => {
            return Some(Reply::error(
                403,
                format!("Host {host:?} is not this admin API's address ({addr})"),
            ));
        }
        None => {
            return Some(Reply::error(
                403,
                "a Host header naming the admin address is required",
            ));
        }
    }
    if let Some(origin) = req.header("origin") {
        let same = origin
            .strip_prefix("http://")
            .is_some_and(|authority| ours(authority.trim_end_matches('/')));
        if !same {
            return Some(Reply::error(
                403,
                format!("requests from {origin} may not use the admin API"),
            ));
        }
    }
    None
}

/// `name=value` from the query string.
fn query_param(req: &Request, name: &str) -> Option<String> {
    let query = req.path.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| percent_decode(v))
    })
}

/// A record as the API log writes it, plus its sequence number.
fn record_json(seq: u64, record: &ApiRecord) -> Value {
    let mut line = String::new();
    record.write_json(&mut line);
    let mut value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("seq".into(), seq.into());
    }
    value
}

fn exchanges_reply(req: &Request, state: &AdminState) -> Reply {
    let number = |name: &str, default: u64| -> Result<u64, Reply> {
        match query_param(req, name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Reply::json(
                    400,
                    &json!({"error": format!("{name} must be a number"), "field": name}),
                )
            }),
        }
    };
    let since = match number("since", 0) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let limit = match number("limit", 100) {
        Ok(n) => n.clamp(1, 1000) as usize,
        Err(reply) => return reply,
    };
    let records = state.exchanges.after(since, limit);
    Reply::json(
        200,
        &json!({
            "last": state.exchanges.last_seq(),
            "exchanges": records.iter().map(|(seq, r)| record_json(*seq, r)).collect::<Vec<_>>(),
        }),
    )
}

/// Server-sent events, one `exchange` event per record as it is logged; `Last-Event-ID` (or
/// `?since=`) resumes after a record, else the stream starts with the next one. A comment line
/// every 15 s keeps idle connections (and proxies between) from timing out.
fn stream_exchanges(stream: &mut &TcpStream, req: &Request, state: &AdminState) {
    let mut last = req
        .header("last-event-id")
        .or_else(|| query_param(req, "since"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| state.exchanges.last_seq());
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n: watchtower exchanges\n\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    loop {
        let records = state.exchanges.wait_after(last, Duration::from_secs(15));
        let mut out = String::new();
        if records.is_empty() {
            out.push_str(": keep-alive\n\n");
        }
        for (seq, record) in &records {
            out.push_str(&format!(
                "id: {seq}\nevent: exchange\ndata: {}\n\n",
                record_json(*seq, record)
            ));
            last = *seq;
        }
        if stream.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// The recent exchanges as a HAR 1.2 log (heads and bodies are not kept, so their fields are
/// empty; method, URL, status, times and sizes are real). Blind tunnels have no HTTP to show.
fn har_reply(state: &AdminState) -> Reply {
    let entries: Vec<Value> = state
        .exchanges
        .after(0, usize::MAX)
        .iter()
        .filter(|(_, r)| r.kind != Kind::Tunnel)
        .map(|(_, r)| {
            let scheme = if r.kind == Kind::Intercepted {
                "https"
            } else {
                "http"
            };
            let url = format!(
                "{scheme}://{}{}",
                r.host,
                r.path.as_ref().map_or("/", |p| p.as_str())
            );
            let mut started = String::new();
            write_rfc3339(r.ts, &mut started);
            let ms = r.duration.as_secs_f64() * 1000.0;
            let mut entry = json!({
                "startedDateTime": started,
                "time": ms,
                "request": {
                    "method": r.method.as_str(), "url": url, "httpVersion": "HTTP/1.1",
                    "cookies": [], "headers": [], "queryString": [],
                    "headersSize": -1, "bodySize": -1,
                },
                "response": {
                    "status": r.status.unwrap_or(0), "statusText": "", "httpVersion": "HTTP/1.1",
                    "cookies": [], "headers": [],
                    "content": {"size": r.bytes_out, "mimeType": ""},
                    "redirectURL": "", "headersSize": -1, "bodySize": -1,
                },
                "cache": {},
                "timings": {"send": 0, "wait": ms, "receive": 0},
            });
            if let Some(c) = &r.capture {
                add_captured(&mut entry, c);
            }
            let mut comment = Vec::new();
            if c_truncated(r) {
                comment.push("bodies cut at [log] capture_bodies".to_owned());
            }
            if let Some(route) = &r.route {
                comment.push(format!("route {route}"));
            }
            if let Some(up) = &r.upstream {
                comment.push(format!("upstream {up}"));
            }
            if let Some(e) = &r.error {
                comment.push(format!("error: {e}"));
            }
            if !comment.is_empty() {
                entry["comment"] = comment.join("; ").into();
            }
            entry
        })
        .collect();
    Reply::json(
        200,
        &json!({"log": {
            "version": "1.2",
            "creator": {"name": "Watchtower", "version": env!("CARGO_PKG_VERSION")},
            "pages": [],
            "entries": entries,
        }}),
    )
}

/// The proxy address a device on the LAN types in, and the URL of the CA on the forward port.
/// A wildcard `listen` is shown as this machine's address on the network the default route
/// uses (asked of the kernel with an unsent UDP "connection", so nothing leaves the machine).
fn phone_addresses(proxy: SocketAddr) -> (String, String) {
    let ip = if proxy.ip().is_unspecified() {
        std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| {
                s.connect("192.0.2.1:9")?;
                s.local_addr()
            })
            .map(|a| a.ip())
            .unwrap_or(proxy.ip())
    } else {
        proxy.ip()
    };
    let host = SocketAddr::new(ip, proxy.port()).to_string();
    let url = format!("http://{host}/ca.crt");
    (host, url)
}

/// `text` as a QR code (error correction M), drawn as SVG squares with a 4-module quiet zone.
fn qr_svg(text: &str) -> String {
    let Ok(qr) = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium) else {
        return String::new();
    };
    let size = qr.size();
    let border = 4;
    let dim = size + 2 * border;
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                path += &format!("M{},{}h1v1h-1z", x + border, y + border);
            }
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {dim} {dim}\" shape-rendering=\"crispEdges\">\
         <title>{text}</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>\n"
    )
}

fn c_truncated(r: &ApiRecord) -> bool {
    r.capture.as_ref().is_some_and(|c| c.truncated)
}

/// The header fields of a head (after its first line) as HAR `{name, value}` pairs.
fn har_headers(head: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| json!({"name": n.trim(), "value": v.trim()}))
        .collect()
}

fn header_value(headers: &[Value], name: &str) -> String {
    headers
        .iter()
        .find(|h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .and_then(|h| h["value"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// A body as HAR text: as is when it is UTF-8, else base64 with `encoding`.
fn har_text(body: &[u8]) -> (String, Option<&'static str>) {
    match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (crate::upstream_proxy::base64(body), Some("base64")),
    }
}

/// Fills a HAR entry's heads and bodies from what `capture_bodies` kept.
fn add_captured(entry: &mut Value, c: &crate::apilog::Capture) {
    let request_headers = har_headers(&c.request_head);
    let response_headers = har_headers(&c.response_head);
    entry["request"]["headersSize"] = c.request_head.len().into();
    entry["request"]["bodySize"] = c.request_body.len().into();
    if !c.request_body.is_empty() {
        let (text, _) = har_text(&c.request_body);
        entry["request"]["postData"] = json!({
            "mimeType": header_value(&request_headers, "content-type"),
            "text": text,
        });
    }
    entry["request"]["headers"] = request_headers.into();
    entry["response"]["headersSize"] = c.response_head.len().into();
    entry["response"]["bodySize"] = c.response_body.len().into();
    let status_text = String::from_utf8_lossy(&c.response_head)
        .split("\r\n")
        .next()
        .and_then(|line| line.splitn(3, ' ').nth(2))
        .unwrap_or("")
        .to_owned();
    entry["response"]["statusText"] = status_text.into();
    let (text, encoding) = har_text(&c.response_body);
    let mut content = json!({
        "size": c.response_body.len(),
        "mimeType": header_value(&response_headers, "content-type"),
        "text": text,
    });
    if let Some(encoding) = encoding {
        content["encoding"] = encoding.into();
    }
    entry["response"]["content"] = content;
    entry["response"]["headers"] = response_headers.into();
}

fn stats_reply(state: &AdminState) -> Reply {
    let totals = state.exchanges.totals();
    let open: serde_json::Map<String, Value> = state
        .gauges
        .open_connections()
        .iter()
        .map(|(name, n)| (name.to_string(), (*n).into()))
        .collect();
    let [c1, c2, c3, c4, c5, none] = totals.by_class;
    Reply::json(
        200,
        &json!({
            "uptime_s": state.exchanges.uptime().as_secs_f64().floor(),
            "local_routing": state.live.routing(),
            "routes": state.live.routes().len(),
            "open_connections": open,
            "max_connections": state.gauges.max_connections(),
            "exchanges": totals.exchanges,
            "status_classes": {"1xx": c1, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5, "none": none},
            "bytes_in": totals.bytes_in,
            "bytes_out": totals.bytes_out,
            "certificates_minted": state.gauges.certificates_minted(),
            "log_records_dropped": state.gauges.log_records_dropped(),
        }),
    )
}

fn routing_reply(state: &AdminState) -> Reply {
    Reply::json(200, &json!({ "enabled": state.live.routing() }))
}

fn set_routing(req: &Request, state: &AdminState) -> Reply {
    let enabled = match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) => match v.get("enabled").and_then(Value::as_bool) {
            Some(b) => b,
            None => {
                return Reply::json(
                    400,
                    &json!({"error": "expected {\"enabled\": true} or {\"enabled\": false}", "field": "enabled"}),
                );
            }
        },
        Err(e) => return Reply::error(400, format!("the body is not JSON: {e}")),
    };
    let _guard = state.live.edit_lock();
    if let Err(e) = persist(state, Some(enabled), None) {
        return Reply::error(500, e);
    }
    state.live.set_routing(enabled);
    log::info!(
        "local routing switched {} (admin API)",
        if enabled { "on" } else { "off" }
    );
    routing_reply(state)
}

/// The fields of a route in a request body.
fn route_fields(
    body: &[u8],
    id_from_path: Option<&str>,
) -> Result<(String, String, String, i64, bool), Reply> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Reply::error(400, format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Reply::error(400, "the body must be a JSON object"));
    }
    let text = |field: &'static str| -> Result<String, Reply> {
        match v.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Reply::json(
                400,
                &json!({"error": format!("{field} must be a string"), "field": field}),
            )),
            None => Err(Reply::json(
                400,
                &json!({"error": format!("{field} is required"), "field": field}),
            )),
        }
    };
    let id = match (id_from_path, v.get("id")) {
        (Some(path_id), Some(Value::String(body_id))) if body_id != path_id => {
            return Err(Reply::json(
                400,
                &json!({"error": format!("id {body_id:?} in the body differs from {path_id:?} in the path"), "field": "id"}),
            ));
        }
        (Some(path_id), _) => path_id.to_owned(),
        (None, _) => text("id")?,
    };
    let target_port = match v.get("target_port") {
        Some(p) => p.as_i64().ok_or_else(|| {
            Reply::json(
                400,
                &json!({"error": "target_port must be an integer", "field": "target_port"}),
            )
        })?,
        None => {
            return Err(Reply::json(
                400,
                &json!({"error": "target_port is required", "field": "target_port"}),
            ));
        }
    };
    let enabled = match v.get("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Reply::json(
                400,
                &json!({"error": "enabled must be true or false", "field": "enabled"}),
            ));
        }
    };
    for key in v
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if !["id", "domain", "target_host", "target_port", "enabled"].contains(&key.as_str()) {
            return Err(Reply::json(
                400,
                &json!({"error": format!("unknown field {key:?}"), "field": key}),
            ));
        }
    }
    Ok((
        id,
        text("domain")?,
        text("target_host")?,
        target_port,
        enabled,
    ))
}

fn add_route(req: &Request, state: &AdminState) -> Reply {
    let (id, domain, host, port, enabled) = match route_fields(&req.body, None) {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    let _guard = state.live.edit_lock();
    let mut routes = state.live.routes().to_vec();
    let route = match config::check_route(&id, &domain, &host, port, enabled, &routes) {
        Ok(r) => r,
        Err(e) => return Reply::route_error(&e),
    };
    routes.push(route.clone());
    apply_routes(state, routes, 201, &route)
}

fn replace_route(req: &Request, state: &AdminState, id: &str) -> Reply {
    let id = percent_decode(id);
    let (id, domain, host, port, enabled) = match route_fields(&req.body, Some(&id)) {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    let _guard = state.live.edit_lock();
    let mut routes = state.live.routes().to_vec();
    let Some(at) = routes.iter().position(|r| r.id == id) else {
        return Reply::error(404, format!("no route with id {id:?}"));
    };
    let mut others = routes.clone();
    others.remove(at);
    let route = match config::check_route(&id, &domain, &host, port, enabled, &others) {
        Ok(r) => r,
        Err(e) => return Reply::route_error(&e),
    };
    routes[at] = route.clone();
    apply_routes(state, routes, 200, &route)
}

fn delete_route(state: &AdminState, id: &str) -> Reply {
    let id = percent_decode(id);
    let _guard = state.live.edit_lock();
    let mut routes = state.live.routes().to_vec();
    let Some(at) = routes.iter().position(|r| r.id == id) else {
        return Reply::error(404, format!("no route with id {id:?}"));
    };
    routes.remove(at);
    if let Err(e) = persist(state, None, Some(&routes)) {
        return Reply::error(500, e);
    }
    state.live.set_routes(routes);
    log::info!("route {id:?} removed (admin API)");
    Reply {
        status: 204,
        content_type: "application/json",
        body: Vec::new(),
    }
}

/// Writes `routes` to the file, then makes them live; answers with `route`.
fn apply_routes(state: &AdminState, routes: Vec<Route>, status: u16, route: &Route) -> Reply {
    if let Err(e) = persist(state, None, Some(&routes)) {
        return Reply::error(500, e);
    }
    state.live.set_routes(routes);
    log::info!("route {:?} saved (admin API)", route.id);
    Reply::json(status, &route_json(route))
}

fn route_json(r: &Route) -> Value {
    json!({
        "id": r.id,
        "domain": r.domain,
        "target_host": r.target_host,
        "target_port": r.target_port,
        "enabled": r.enabled,
    })
}

fn routes_json(routes: &[Route]) -> Value {
    Value::Array(routes.iter().map(route_json).collect())
}

/// Writes the switch and/or the routes into the config file, when there is one.
fn persist(
    state: &AdminState,
    routing: Option<bool>,
    routes: Option<&[Route]>,
) -> Result<(), String> {
    match &state.config_path {
        Some(path) => persist_to(path, routing, routes),
        None => Ok(()), // built-in defaults: nothing to write to
    }
}

/// Writes the switch and/or the routes into the config file at `path`, keeping everything else
/// (comments, order, other keys) as the user wrote it: a temporary file beside it, then a
/// rename, so a reader never sees half a file.
pub fn persist_to(
    path: &Path,
    routing: Option<bool>,
    routes: Option<&[Route]>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let updated = config_edit::apply(&text, routing, routes)
        .map_err(|e| format!("cannot update {}: {e}", path.display()))?;
    write_atomically(path, &updated).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(&temp, meta.permissions());
        }
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// `%XX` escapes decoded; text that does not decode is taken as written.
fn percent_decode(text: &str) -> String {
    crate::upstream_proxy::percent_decode(text).unwrap_or_else(|| text.to_owned())
}

fn write_reply(stream: &mut &TcpStream, reply: &Reply, keep_alive: bool) -> io::Result<()> {
    let challenge = if reply.status == 401 {
        "WWW-Authenticate: Basic realm=\"Watchtower admin\"\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{challenge}{SECURITY_HEADERS}Connection: {}\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    out.extend_from_slice(&reply.body);
    stream.write_all(&out)
}

fn respond(stream: &mut &TcpStream, status: u16, body: &Value, keep_alive: bool) -> io::Result<()> {
    write_reply(stream, &Reply::json(status, body), keep_alive)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Editing `watchtower.toml` in place with toml_edit, so comments and layout survive.
mod config_edit {
    use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

    use crate::config::Route;

    /// `text` with `[proxy] local_routing` and/or the `[[route]]` tables replaced.
    pub fn apply(
        text: &str,
        routing: Option<bool>,
        routes: Option<&[Route]>,
    ) -> Result<String, String> {
        let mut doc: DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| e.to_string())?;
        if let Some(on) = routing {
            let proxy = doc
                .entry("proxy")
                .or_insert(Item::Table(Table::new()))
                .as_table_mut()
                .ok_or("[proxy] is not a table")?;
            set(proxy, "local_routing", on.into());
        }
        if let Some(routes) = routes {
            let existing = doc
                .get("route")
                .and_then(Item::as_array_of_tables)
                .cloned()
                .unwrap_or_default();
            let mut tables = ArrayOfTables::new();
            for route in routes {
                // Keep the table the user wrote for this id (its comments, its key order).
                let mut table = existing
                    .iter()
                    .find(|t| t.get("id").and_then(Item::as_str) == Some(route.id.as_str()))
                    .cloned()
                    .unwrap_or_default();
                set(&mut table, "id", route.id.as_str().into());
                set(&mut table, "domain", route.domain.as_str().into());
                set(&mut table, "target_host", route.target_host.as_str().into());
                set(
                    &mut table,
                    "target_port",
                    i64::from(route.target_port).into(),
                );
                // `enabled` defaults to true: left out when the user left it out.
                if !route.enabled || table.contains_key("enabled") {
                    set(&mut table, "enabled", route.enabled.into());
                }
                tables.push(table);
            }
            if tables.is_empty() {
                doc.remove("route");
            } else {
                doc["route"] = Item::ArrayOfTables(tables);
            }
        }
        Ok(doc.to_string())
    }

    /// Sets `key` to `new`, keeping the comment and spacing around the old value.
    fn set(table: &mut Table, key: &str, new: Value) {
        match table.get_mut(key).and_then(Item::as_value_mut) {
            Some(old) => {
                let decor = old.decor().clone();
                *old = new;
                *old.decor_mut() = decor;
            }
            None => table[key] = Item::Value(new),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn route(id: &str, domain: &str, port: u16, enabled: bool) -> Route {
            Route {
                id: id.into(),
                domain: domain.into(),
                target_host: "127.0.0.1".into(),
                target_port: port,
                enabled,
            }
        }

        const FILE: &str = "# my proxy\n[proxy]\nproxy_port = 8888 # the port\nlocal_routing = true\n\n# the web app\n[[route]]\nid = \"web\" # main\ndomain = \"app.test\"\ntarget_host = \"127.0.0.1\"\ntarget_port = 3100\n\n[[route]]\nid = \"old\"\ndomain = \"old.test\"\ntarget_host = \"127.0.0.1\"\ntarget_port = 3200\n";

        #[test]
        fn edits_keep_comments_and_layout() {
            let out = apply(
                FILE,
                Some(false),
                Some(&[
                    route("web", "app.test", 3101, false),
                    route("new", "new.test", 4000, true),
                ]),
            )
            .unwrap();
            assert!(
                out.starts_with("# my proxy\n[proxy]\nproxy_port = 8888 # the port\n"),
                "{out}"
            );
            assert!(out.contains("local_routing = false"), "{out}");
            assert!(
                out.contains("# the web app\n[[route]]\nid = \"web\" # main\n"),
                "{out}"
            );
            assert!(out.contains("target_port = 3101"), "{out}");
            assert!(!out.contains("old.test"), "{out}");
            assert!(out.contains("id = \"new\""), "{out}");
            let config =
                crate::config::Config::from_toml_str(&out, std::path::Path::new("/x"), "t")
                    .unwrap();
            assert!(!config.local_routing);
            assert_eq!(
                config.routes,
                [
                    route("web", "app.test", 3101, false),
                    route("new", "new.test", 4000, true)
                ]
            );
        }

        #[test]
        fn no_routes_left_removes_the_tables() {
            let out = apply(FILE, None, Some(&[])).unwrap();
            assert!(!out.contains("[[route]]"), "{out}");
            let config =
                crate::config::Config::from_toml_str(&out, std::path::Path::new("/x"), "t")
                    .unwrap();
            assert!(config.routes.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wt-admin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_token_is_created_private_kept_and_replaced_when_unreadable() {
        let dir = temp_dir("token");
        let path = token_path(&dir.join("ca-key.pem"));
        assert_eq!(path, dir.join("admin.token"));
        let first = load_or_create_token(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_or_create_token(&path).unwrap(),
            first,
            "kept across starts"
        );
        assert_eq!(read_token(&path).unwrap(), first);
        // A damaged file is not a token: reading says so, starting writes a fresh one.
        std::fs::write(&path, "not a token\n").unwrap();
        assert_eq!(
            read_token(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let second = load_or_create_token(&path).unwrap();
        assert!(second != first && second.len() == 64);
        assert_eq!(read_token(&path).unwrap(), second);
        assert_eq!(
            read_token(&dir.join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
