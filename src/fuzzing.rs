//! Fuzz entry points that cross module boundaries: the cargo-fuzz targets `response_head`,
//! `connect_authority`, `admin_body` and `conn_state` call these, and so does the corpus-replay
//! test (`tests/fuzz_corpus.rs`), so plain `cargo test` keeps every committed input running.
//!
//! Each entry checks the properties of one path through the proxy with the engine's own code
//! and an independent reading of the RFC beside it:
//!
//! * [`fuzz_response_head`]: an upstream response head as the exchange parses it
//!   (`http::parse_response`), its body framing against RFC 9112 §6.3 worked out here from the
//!   field lines, and the head relayed to the client (`http::write_response_head`) re-parsed
//!   by strict httparse to the same status, fields and framing.
//! * [`fuzz_connect_authority`]: a CONNECT target, a `Host` value and an absolute-form
//!   authority as the request parser accepts them, then as routing splits, formats and looks
//!   them up.
//! * [`fuzz_admin_body`]: an admin API request body for a route (create, replace) or the
//!   switch, through the real handler, which writes the config file; an accepted change must
//!   validate again and read back from the file unchanged, a refused one must change nothing.
//! * [`fuzz_conn_state`] / [`run_conn_scenario`]: a real [`Proxy`] in this process (started
//!   once, on ephemeral loopback ports) and a scripted upstream on a thread, driven by one
//!   client connection per input; see [`ConnScenario`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::access::Access;
use crate::admin::{self, AdminState};
use crate::apilog::{Exchanges, LogSender};
use crate::config::{self, Config, Route, Timeouts};
use crate::event_loop::{Gauges, Proxy};
use crate::http::head::{is_authority, response_config};
use crate::http::{self, BodyKind, ChunkedDecoder, Method, TargetForm, Via};
use crate::live::Live;
use crate::route::{self, Decision, ListenerKind, RouteTable};
use crate::upstream_proxy::UpstreamProxy;

/// Output room for rewritten heads: a head of up to `HEAD_LIMIT_BYTES` plus what a rewrite adds.
const REWRITE_ROOM_BYTES: usize = 96 * 1024;

// ---------------------------------------------------------------------------------------------
// response_head
// ---------------------------------------------------------------------------------------------

/// The request methods a response head is read against (`Other` stands for any other token).
const RESPONSE_METHODS: [Method; 6] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Connect,
    Method::Options,
    Method::Other,
];

/// Fuzz entry: `data[0]` picks the request method (`% 6`), whether the client connection stays
/// open (bit 6 clear) and the client's HTTP version (bit 7 set: 1.0); the rest is what the
/// upstream sent. Checks, for every head `http::parse_response` accepts:
///
/// * its body framing and persistence are what RFC 9112 §6.3 and §9.3 give for the status,
///   the method and the field lines (worked out here independently of `head.rs`), and a head
///   this reading accepts is not refused;
/// * the head relayed to the client fits, parses with strict httparse as exactly one head
///   (no obs-fold, no bare LF, nothing after it), with the same status, exactly the fields
///   that RFC 9110 §7.6.1 lets through (hop-by-hop and nominated fields gone, obs-fold
///   unfolded, one Content-Length, none beside Transfer-Encoding), Via, and the Connection
///   field the client's connection needs; and it frames the body the same way.
pub fn fuzz_response_head(data: &[u8]) {
    let Some((&selector, head)) = data.split_first() else {
        return;
    };
    let method = RESPONSE_METHODS[usize::from(selector & 0x3f) % RESPONSE_METHODS.len()];
    let client_keep_alive = selector & 0x40 == 0;
    let client_minor = if selector & 0x80 == 0 { 1 } else { 0 };

    let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut lenient = httparse::Response::new(&mut fields);
    let window = head.get(..http::HEAD_LIMIT_BYTES).unwrap_or(head);
    let lenient_status = response_config().parse_response(&mut lenient, window);

    let parsed = match http::parse_response(head, method) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(
                matches!(lenient_status, Ok(httparse::Status::Partial)),
                "parse_response waits for more, httparse says {lenient_status:?}"
            );
            return;
        }
        Err(error) => {
            // Refusing is fine when the head is malformed; a head this reading of RFC 9112
            // accepts must not be refused (it would become a 502).
            if let Ok(httparse::Status::Complete(_)) = lenient_status {
                let status = lenient.code.unwrap_or(0);
                let minor = lenient.version.unwrap_or(1);
                if let Ok(model) = model_response_framing(status, minor, method, lenient.headers) {
                    panic!("parse_response refused a head RFC 9112 accepts ({model:?}): {error}");
                }
            }
            return;
        }
    };

    let Ok(httparse::Status::Complete(head_len)) = lenient_status else {
        panic!("parse_response accepted what httparse does not: {lenient_status:?}");
    };
    assert_eq!(parsed.head_len, head_len);
    let status = lenient.code.unwrap_or(0);
    let minor = lenient.version.unwrap_or(1);
    assert_eq!(parsed.status, status);
    assert_eq!(parsed.minor_version, minor);
    let model = model_response_framing(status, minor, method, lenient.headers)
        .unwrap_or_else(|why| panic!("parse_response accepted a head with {why}"));
    assert_eq!(
        parsed.body, model.body,
        "body framing differs from RFC 9112 §6.3"
    );
    assert_eq!(parsed.keep_alive, model.keep_alive, "persistence differs");

    // The relayed head.
    let via = Via::named("watchtower-fuzz");
    let mut out = vec![0u8; REWRITE_ROOM_BYTES];
    let written = http::write_response_head(
        head,
        &parsed,
        client_keep_alive,
        client_minor,
        &via,
        &mut out,
    )
    .unwrap_or_else(|_| panic!("the relayed head does not fit {REWRITE_ROOM_BYTES} bytes"));
    let relayed = &out[..written];

    let mut strict_fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS + 4];
    let mut strict = httparse::Response::new(&mut strict_fields);
    match strict.parse(relayed) {
        Ok(httparse::Status::Complete(len)) => {
            assert_eq!(len, relayed.len(), "bytes after the relayed head")
        }
        // The original may have been right at the limits; what we add can push it over.
        Err(httparse::Error::TooManyHeaders) if lenient.headers.len() + 2 > http::MAX_HEADERS => {
            return;
        }
        other => panic!(
            "the relayed head does not parse strictly ({other:?}): {:?}",
            String::from_utf8_lossy(relayed)
        ),
    }
    assert_eq!(strict.code, Some(status));
    assert_eq!(strict.version, Some(1));

    let expected = expected_relayed_fields(
        lenient.headers,
        status,
        parsed.body,
        client_keep_alive,
        client_minor,
        &via,
    );
    let got: Vec<(String, Vec<u8>)> = strict
        .headers
        .iter()
        .map(|f| (f.name.to_owned(), trim_ows(f.value).to_vec()))
        .collect();
    assert_eq!(
        got, expected,
        "relayed fields differ from RFC 9110 §7.6.1 (left: relayed, right: expected)"
    );

    // The client frames the body exactly as we relay it.
    let relayed_model = model_response_framing(status, 1, method, strict.headers)
        .unwrap_or_else(|why| panic!("the relayed head has {why}"));
    assert_eq!(
        relayed_model.body, parsed.body,
        "the client would frame the relayed body differently"
    );
    match http::parse_response(relayed, method) {
        Ok(Some(again)) => {
            assert_eq!(again.status, status);
            assert_eq!(again.body, parsed.body);
            if status >= 200 && status != 101 && !client_keep_alive {
                assert!(!again.keep_alive, "Connection: close was not relayed");
            }
        }
        Err(http::HeadError::TooLarge | http::HeadError::TooManyHeaders) => {}
        other => panic!("the relayed head does not parse again: {other:?}"),
    }
}

/// Body framing and persistence RFC 9112 gives a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResponseFraming {
    body: BodyKind,
    keep_alive: bool,
}

/// RFC 9112 §6.3 (framing) and §9.3 (persistence), read from the field lines; `Err` names what
/// makes the head unusable (RFC 9110 §8.6: an invalid Content-Length is an unrecoverable error).
fn model_response_framing(
    status: u16,
    minor: u8,
    method: Method,
    fields: &[httparse::Header<'_>],
) -> Result<ResponseFraming, &'static str> {
    // RFC 9110 §15: a status code outside 100-599 cannot be interpreted.
    if !(100..=599).contains(&status) {
        return Err("a status code outside 100-599");
    }
    let mut te_present = false;
    let mut final_coding: Option<Vec<u8>> = None;
    let mut length: Option<u64> = None;
    let (mut close, mut keep) = (false, false);
    for field in fields {
        let name = field.name.to_ascii_lowercase();
        match name.as_str() {
            "transfer-encoding" => {
                te_present = true;
                for coding in list_elements(field.value) {
                    final_coding = Some(coding.to_ascii_lowercase());
                }
            }
            "content-length" => {
                // RFC 9110 §8.6: a list of identical decimal values is that value.
                for item in field.value.split(|&b| b == b',') {
                    let digits = trim_ows(item);
                    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                        return Err("an invalid Content-Length");
                    }
                    let n = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<u64>().ok())
                        .ok_or("a Content-Length that overflows")?;
                    if length.is_some_and(|earlier| earlier != n) {
                        return Err("conflicting Content-Length values");
                    }
                    length = Some(n);
                }
            }
            "connection" => {
                for option in list_elements(field.value) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    keep |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            _ => {}
        }
    }
    let bodiless = method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (method == Method::Connect && (200..300).contains(&status));
    let body = if bodiless {
        BodyKind::None
    } else if te_present {
        if final_coding.as_deref() == Some(b"chunked".as_slice()) {
            BodyKind::Chunked
        } else {
            BodyKind::UntilClose
        }
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        BodyKind::UntilClose
    };
    let persists = if minor >= 1 { !close } else { keep && !close };
    let keep_alive = persists
        && body != BodyKind::UntilClose
        && !(te_present && length.is_some())
        && !(te_present && minor == 0);
    Ok(ResponseFraming { body, keep_alive })
}

/// The fields RFC 9110 §7.6.1 and RFC 9112 §6.3 leave in a relayed response, as (name, value
/// without surrounding whitespace), followed by what `write_response_head` documents it adds.
fn expected_relayed_fields(
    fields: &[httparse::Header<'_>],
    status: u16,
    body: BodyKind,
    client_keep_alive: bool,
    client_minor: u8,
    via: &Via,
) -> Vec<(String, Vec<u8>)> {
    let is = |field: &httparse::Header<'_>, name: &str| field.name.eq_ignore_ascii_case(name);
    let options: Vec<Vec<u8>> = fields
        .iter()
        .filter(|f| is(f, "connection"))
        .flat_map(|f| list_elements(f.value))
        .map(<[u8]>::to_vec)
        .collect();
    let names_fields = options.iter().any(|o| {
        !(o.eq_ignore_ascii_case(b"close")
            || o.eq_ignore_ascii_case(b"keep-alive")
            || o.eq_ignore_ascii_case(b"upgrade"))
    });
    let nominated = |name: &str| {
        names_fields
            && options
                .iter()
                .any(|o| o.eq_ignore_ascii_case(name.as_bytes()))
    };
    let has_te = fields.iter().any(|f| is(f, "transfer-encoding"));
    let switching = status == 101;
    // RFC 9110 §8.6, RFC 9112 §6.1: 1xx and 204 responses carry neither framing field.
    let never_framed = (100..200).contains(&status) || status == 204;
    let mut length_seen = false;
    let mut out = Vec::new();
    for field in fields {
        let lower = field.name.to_ascii_lowercase();
        let keep = match lower.as_str() {
            "upgrade" => switching,
            "content-length" | "transfer-encoding" if never_framed => false,
            "content-length" => {
                if has_te || length_seen {
                    false
                } else {
                    length_seen = true;
                    if let BodyKind::Length(n) = body {
                        out.push(("Content-Length".to_owned(), n.to_string().into_bytes()));
                        false
                    } else {
                        true
                    }
                }
            }
            "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer" => false,
            "transfer-encoding" | "host" => true,
            _ => !nominated(field.name),
        };
        if keep {
            let unfolded: Vec<u8> = field
                .value
                .iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect();
            out.push((field.name.to_owned(), trim_ows(&unfolded).to_vec()));
        }
    }
    let via_line = via.line();
    let via_value = via_line
        .strip_prefix(b"Via:")
        .map(|v| trim_ows(v.strip_suffix(b"\r\n").unwrap_or(v)).to_vec())
        .unwrap_or_default();
    out.push(("Via".to_owned(), via_value));
    if switching {
        out.push(("Connection".to_owned(), b"upgrade".to_vec()));
    } else if status >= 200 {
        if !client_keep_alive {
            out.push(("Connection".to_owned(), b"close".to_vec()));
        } else if client_minor == 0 {
            out.push(("Connection".to_owned(), b"keep-alive".to_vec()));
        }
    }
    out
}

/// `value` without leading and trailing whitespace (SP, HTAB, and CR/LF of an obs-fold).
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |e| e + 1);
    &value[start..end.max(start)]
}

/// The non-empty elements of a comma-separated list (RFC 9110 §5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

// ---------------------------------------------------------------------------------------------
// connect_authority
// ---------------------------------------------------------------------------------------------

/// The route the authority and conn_state targets route to.
const FUZZ_ROUTE_DOMAIN: &str = "app.fuzz.test";

/// Fuzz entry: `data` is offered as an authority in the three places a request carries one —
/// a CONNECT request-target, a `Host` field, and the authority of an absolute-form target —
/// and, when it is UTF-8, straight to `is_authority` and `route::split_authority`. For every
/// authority the request parser accepts, routing must take it too (a CONNECT port of 0 is the
/// one documented exception: answered 400), the port must be 1-65535 (and present for
/// CONNECT), the host non-empty without CR, LF, SP, `@`, `/` or brackets, the `host:port` the
/// session dials and logs (`session::upstream_name`) must split back to the same host and port
/// and pass the parser's own check, and the route lookup must match exactly the hosts that name
/// the route (case-insensitively, one trailing dot ignored).
pub fn fuzz_connect_authority(data: &[u8]) {
    check_authorities(data);
}

/// Where an authority came from, which decides what must hold for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthoritySource {
    ConnectTarget,
    HostField,
    AbsoluteTarget,
}

fn check_authorities(data: &[u8]) {
    let table = RouteTable::new(&[Route {
        id: "fuzz".to_owned(),
        domain: FUZZ_ROUTE_DOMAIN.to_owned(),
        target_host: "127.0.0.1".to_owned(),
        target_port: 9,
        enabled: true,
    }]);
    let requests = [
        (
            AuthoritySource::ConnectTarget,
            [b"CONNECT ".as_slice(), data, b" HTTP/1.1\r\n\r\n"].concat(),
        ),
        (
            AuthoritySource::HostField,
            [b"GET / HTTP/1.1\r\nHost: ".as_slice(), data, b"\r\n\r\n"].concat(),
        ),
        (
            AuthoritySource::AbsoluteTarget,
            [
                b"GET http://".as_slice(),
                data,
                b"/p HTTP/1.1\r\nHost: h\r\n\r\n",
            ]
            .concat(),
        ),
    ];
    for (source, request) in &requests {
        let Ok(Some(head)) = http::parse_request(request) else {
            continue;
        };
        let Some(span) = head.authority else {
            continue;
        };
        // The session reads the authority as text; a span that is not UTF-8 reads as "".
        let authority = span.str_of(request);
        if *source == AuthoritySource::ConnectTarget {
            assert_eq!(head.method, Method::Connect);
            assert_eq!(head.form, TargetForm::Authority);
        }
        check_accepted_authority(authority, *source, &table);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for (port_required, source) in [
            (true, AuthoritySource::ConnectTarget),
            (false, AuthoritySource::HostField),
        ] {
            if is_authority(data, port_required) {
                check_accepted_authority(text, source, &table);
            }
        }
        // Routing only ever sees authorities the parser accepted, but it must not panic on
        // any text, nor hand out port 0.
        if let Some((_, port)) = route::split_authority(text) {
            assert_ne!(port, Some(0), "port 0 from {text:?}");
        }
        let _ = table.decide(text, true, ListenerKind::ReverseHttp);
    }
}

/// What must hold for an authority the request parser accepted from `source`.
fn check_accepted_authority(authority: &str, source: AuthoritySource, table: &RouteTable) {
    let port_required = source == AuthoritySource::ConnectTarget;
    assert!(
        is_authority(authority.as_bytes(), port_required),
        "accepted authority {authority:?} fails is_authority"
    );
    if source == AuthoritySource::AbsoluteTarget {
        assert!(!authority.contains('@'), "userinfo accepted: {authority:?}");
    }
    let Some((host, port)) = route::split_authority(authority) else {
        // The session answers 400 "invalid host" — consistent only for the port routing
        // refuses on purpose (0: nothing can be reached there).
        let port_text = authority.rsplit(':').next().unwrap_or("");
        assert!(
            !port_text.is_empty()
                && port_text.bytes().all(|b| b.is_ascii_digit())
                && port_text.bytes().all(|b| b == b'0'),
            "the parser accepts authority {authority:?} ({source:?}) that routing cannot split"
        );
        return;
    };
    if port_required {
        assert!(
            port.is_some(),
            "CONNECT authority {authority:?} routed without a port"
        );
    }
    check_split(authority, host, port, table);
}

/// What must hold for any `(host, port)` that `split_authority(authority)` returns.
fn check_split(authority: &str, host: &str, port: Option<u16>, table: &RouteTable) {
    assert!(!host.is_empty(), "empty host from {authority:?}");
    assert!(
        !host.contains(['\r', '\n', ' ', '@', '/', '[', ']']),
        "host {host:?} from {authority:?}"
    );
    assert_ne!(port, Some(0), "port 0 from {authority:?}");
    // What the session dials, logs and sends an upstream proxy in its CONNECT.
    let port = port.unwrap_or(80);
    let name = crate::session::upstream_name(host, port);
    assert_eq!(
        route::split_authority(name.as_str()),
        Some((host, Some(port))),
        "{authority:?} formats as {name} which splits differently"
    );
    // An upstream proxy receives `CONNECT <name>`; our own parser must accept that.
    assert!(
        is_authority(name.as_str().as_bytes(), true),
        "{authority:?} formats as {name}, which is not an authority"
    );
    // Routing matches exactly the hosts that name the route.
    let normal = host.to_ascii_lowercase();
    let normal = normal.strip_suffix('.').unwrap_or(&normal);
    let routed = matches!(
        table.decide(authority, true, ListenerKind::Forward),
        Decision::Local(_)
    );
    assert_eq!(
        routed,
        normal == FUZZ_ROUTE_DOMAIN,
        "route lookup for {authority:?} (host {host:?})"
    );
    if authority.starts_with('[') {
        // RFC 3986 §3.2.2: an IP-literal holds an IPv6 address (zone ids and IPvFuture are
        // not dialled, so not accepted); a name in brackets must not route as that name.
        assert!(
            host.parse::<Ipv6Addr>().is_ok(),
            "bracketed {host:?} in {authority:?} is not an IPv6 address"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// admin_body
// ---------------------------------------------------------------------------------------------

/// The config file the admin target starts every input from: comments, a wildcard route, a
/// disabled route and an IPv6 target, as a user might have written it.
const ADMIN_BASE_CONFIG: &str = r#"# Watchtower, as a developer left it.
[proxy]
proxy_port = 8888   # the forward port
local_routing = true

[timeouts]
idle = 30

[[route]]
id = "web"          # the front end
domain = "app.example.test"
target_host = "127.0.0.1"
target_port = 3000

[[route]]
# the API, off for now
id = "api"
domain = "*.api.example.test"
target_host = "::1"
target_port = 3100
enabled = false
"#;

/// The admin API's limit on a request body (`admin::MAX_REQUEST_BYTES`).
const ADMIN_MAX_BODY_BYTES: usize = 64 * 1024;

/// The admin token the fuzzed requests carry.
const ADMIN_TOKEN: &str = "fuzz-token";

/// What every admin input shares: the config file, and what `AdminState` needs from a bound
/// (never run) proxy.
struct AdminFixture {
    path: PathBuf,
    base: Config,
    gauges: Gauges,
    ca: (String, Vec<u8>),
    proxy_addr: SocketAddr,
}

/// Binds a proxy with `config` on the calling thread, its CA in a temporary folder that is
/// removed once the CA is loaded.
fn bind_proxy(mut config: Config, log: LogSender) -> Proxy {
    let dir = scratch_dir("ca");
    config.tls.ca_cert = dir.join("ca.pem");
    config.tls.ca_key = dir.join("ca-key.pem");
    config.tls.extra_roots = None;
    let proxy = Proxy::bind(&config, log).unwrap_or_else(|e| panic!("fuzz proxy: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    proxy
}

/// A fresh folder for this process: on tmpfs when there is one (the admin API syncs the file
/// it writes on every change).
fn scratch_dir(tag: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    // Folders of processes that have ended are removed (nothing runs at a fuzzer's exit).
    let prefix = format!("watchtower-fuzz-{tag}-");
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(&prefix)
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn admin_fixture() -> &'static AdminFixture {
    static FIXTURE: OnceLock<AdminFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch_dir("admin");
        let path = dir.join("watchtower.toml");
        let base = Config::from_toml_str(ADMIN_BASE_CONFIG, &dir, "watchtower.toml")
            .unwrap_or_else(|e| panic!("the admin base config: {e}"));
        let mut bind = base.clone();
        bind.proxy_port = 0;
        bind.workers = Some(1);
        bind.admin = None;
        let proxy = bind_proxy(bind, LogSender::disabled());
        AdminFixture {
            path,
            gauges: proxy.gauges(),
            ca: proxy.ca_certificate(),
            proxy_addr: SocketAddr::from(([127, 0, 0, 1], 8888)),
            base,
        }
    })
}

/// Fuzz entry: `data[0] % 4` picks the call — `POST /api/routes`, `PUT /api/routes/{id}` with
/// the id taken from the bytes up to the first LF (then the body follows), `PUT /api/routing`,
/// `PUT /api/routes/web` — and the rest is the JSON body. The request goes through the admin
/// API's own head parser and handler against a config file reset to [`ADMIN_BASE_CONFIG`].
/// An accepted change must answer with valid JSON naming a route that `config::check_route`
/// accepts again unchanged, whose fields hold no CR, LF or NUL, and the file must then load
/// (`Config::from_toml_str`) to exactly the routes and switch now live, everything else as it
/// was; a refused one must leave the file and the live settings untouched.
pub fn fuzz_admin_body(data: &[u8]) {
    check_admin_body(data);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdminCall {
    AddRoute,
    ReplaceRoute,
    SetRouting,
}

fn check_admin_body(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (call, path, body): (AdminCall, Vec<u8>, &[u8]) = match selector % 4 {
        0 => (AdminCall::AddRoute, b"/api/routes".to_vec(), rest),
        1 => {
            let (id, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => (&rest[..lf], &rest[lf + 1..]),
                None => (rest, &[][..]),
            };
            (
                AdminCall::ReplaceRoute,
                [b"/api/routes/".as_slice(), id].concat(),
                body,
            )
        }
        2 => (AdminCall::SetRouting, b"/api/routing".to_vec(), rest),
        _ => (AdminCall::ReplaceRoute, b"/api/routes/web".to_vec(), rest),
    };
    let method: &[u8] = if call == AdminCall::AddRoute {
        b"POST"
    } else {
        b"PUT"
    };
    let mut input = [
        method,
        b" ",
        &path,
        b" HTTP/1.1\r\nHost: 127.0.0.1:0\r\nAuthorization: Bearer ",
        ADMIN_TOKEN.as_bytes(),
        b"\r\nContent-Type: application/json\r\nContent-Length: ",
        body.len().to_string().as_bytes(),
        b"\r\n\r\n",
    ]
    .concat();
    let head = match http::parse_request(&input) {
        Ok(Some(head)) => head,
        // The admin API answers a head it cannot parse before reading a body.
        _ => return,
    };
    if body.len() > ADMIN_MAX_BODY_BYTES {
        return; // answered 413 before the handler
    }
    input.extend_from_slice(body);

    let fixture = admin_fixture();
    std::fs::write(&fixture.path, ADMIN_BASE_CONFIG)
        .unwrap_or_else(|e| panic!("{}: {e}", fixture.path.display()));
    let live = Live::new(fixture.base.local_routing, fixture.base.routes.clone());
    let mut state = AdminState::new(
        Arc::clone(&live),
        Some(fixture.path.clone()),
        fixture.ca.clone(),
        fixture.proxy_addr,
        Exchanges::new(1),
        fixture.gauges.clone(),
        Access::default(),
    );
    state.token = ADMIN_TOKEN.to_owned();
    // Built the way the admin API's connection loop builds it from the bytes it read.
    let text = |span: http::Span| String::from_utf8_lossy(span.of(&input)).into_owned();
    let request = admin::Request {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        local: None,
        method: head.method,
        method_text: text(head.method_span),
        path: text(head.path),
        host: head.host_header.map(text),
        head: input[..head.head_len].to_vec(),
        body: input[head.head_len..].to_vec(),
    };
    let reply = admin::handle(&request, &state);
    let reply = (reply.status, reply.body);
    if trace_enabled() {
        eprintln!(
            "admin {call:?}: {} {}",
            reply.0,
            String::from_utf8_lossy(&reply.1).trim()
        );
    }

    let file = std::fs::read_to_string(&fixture.path)
        .unwrap_or_else(|e| panic!("{}: {e}", fixture.path.display()));
    let answer: Option<Value> = serde_json::from_slice(&reply.1).ok();
    if !reply.1.is_empty() {
        assert!(
            answer.is_some(),
            "the reply body is not JSON: {:?}",
            reply.1
        );
    }
    if !(200..300).contains(&reply.0) {
        assert_eq!(
            file, ADMIN_BASE_CONFIG,
            "a refused change ({}) wrote the file",
            reply.0
        );
        assert_eq!(&*live.routes(), fixture.base.routes.as_slice());
        assert_eq!(live.routing(), fixture.base.local_routing);
        return;
    }

    let reloaded = Config::from_toml_str(&file, Path::new("/"), "watchtower.toml")
        .unwrap_or_else(|e| panic!("the file the admin API wrote does not load: {e}\n{file}"));
    assert_eq!(
        reloaded.routes,
        &*live.routes(),
        "file and live routes differ"
    );
    assert_eq!(
        reloaded.local_routing,
        live.routing(),
        "file and live switch differ"
    );
    let mut unchanged = reloaded.clone();
    unchanged.routes = fixture.base.routes.clone();
    unchanged.local_routing = fixture.base.local_routing;
    unchanged.tls = fixture.base.tls.clone();
    assert_eq!(
        unchanged, fixture.base,
        "the admin API changed more than routes and switch"
    );
    let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match call {
        AdminCall::SetRouting => {
            assert_eq!(
                sent.get("enabled").and_then(Value::as_bool),
                Some(live.routing()),
                "the switch is not what the body asked for"
            );
            assert_eq!(&*live.routes(), fixture.base.routes.as_slice());
        }
        AdminCall::AddRoute | AdminCall::ReplaceRoute => {
            let answer = answer.unwrap_or(Value::Null);
            let id = answer.get("id").and_then(Value::as_str).unwrap_or_else(|| {
                panic!("an accepted route change answers without an id: {answer}")
            });
            let routes = live.routes();
            let at = routes
                .iter()
                .position(|r| r.id == id)
                .unwrap_or_else(|| panic!("route {id:?} is not live after {reply:?}"));
            let route = &routes[at];
            assert_eq!(
                answer,
                route_value(route),
                "the reply is not the live route"
            );
            if call == AdminCall::AddRoute {
                assert_eq!(at, routes.len() - 1, "a new route goes last");
                assert_eq!(routes.len(), fixture.base.routes.len() + 1);
            } else {
                assert_eq!(routes.len(), fixture.base.routes.len());
            }
            // The body must have said so: an object with the fields as their types.
            assert!(sent.is_object(), "accepted a body that is not an object");
            for key in ["domain", "target_host"] {
                assert!(sent.get(key).is_some_and(Value::is_string), "{key} missing");
            }
            assert!(sent.get("target_port").is_some_and(Value::is_i64));
            assert!(sent.get("enabled").is_none_or(Value::is_boolean));
            let others: Vec<Route> = routes
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != at)
                .map(|(_, r)| r.clone())
                .collect();
            let again = config::check_route(
                &route.id,
                &route.domain,
                &route.target_host,
                i64::from(route.target_port),
                route.enabled,
                &others,
            );
            assert_eq!(
                again.as_ref(),
                Ok(route),
                "an accepted route does not validate again unchanged"
            );
            let control = |s: &str| s.contains(['\r', '\n', '\0']);
            assert!(!control(&route.domain), "domain {:?}", route.domain);
            assert!(
                !control(&route.target_host),
                "target_host {:?}",
                route.target_host
            );
            assert!(!control(&route.id), "route id {:?}", route.id);
        }
    }
}

/// A route as the admin API writes it in JSON.
fn route_value(route: &Route) -> Value {
    serde_json::json!({
        "id": route.id,
        "domain": route.domain,
        "target_host": route.target_host,
        "target_port": route.target_port,
        "enabled": route.enabled,
    })
}

// ---------------------------------------------------------------------------------------------
// conn_state
// ---------------------------------------------------------------------------------------------

/// Which of the proxy's listeners a scenario's client connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScenarioListener {
    /// The forward proxy port (absolute-form requests, CONNECT).
    #[default]
    Forward,
    /// The reverse HTTP port (origin-form requests, routed by `Host`).
    Reverse,
}

/// How the scripted upstream answers each request it has read completely (a CONNECT it gets
/// as an upstream proxy is always answered 200 and then echoed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamScript {
    /// `200` with `Content-Length`, connection kept.
    #[default]
    Length,
    /// `200` with a chunked body in two chunks, connection kept.
    Chunked,
    /// `200` without framing: the body ends when the upstream closes, which it then does.
    UntilClose,
    /// `200` with `Content-Length` and `Connection: close`, then it closes.
    CloseAfter,
    /// `103 Early Hints`, then `200` with `Content-Length`.
    Interim,
    /// `204 No Content`.
    NoContent,
    /// `101 Switching Protocols` to a request carrying `Upgrade` (then it echoes what comes);
    /// any other request as [`UpstreamScript::Length`].
    Upgrade,
    /// `HTTP/1.0 200` with `Content-Length`, then it closes.
    Http10,
    /// `200` with `Content-Length` as soon as a request head with a body arrives, before the
    /// body (which it then reads and discards).
    Early,
    /// `200` with `Content-Length`, then bytes the framing does not cover: the proxy must drop
    /// them and not reuse the connection.
    TrailingJunk,
    /// As [`UpstreamScript::Length`], written a few bytes at a time.
    Trickle,
    /// `200` with `Content-Length` and no `Connection: close`, then it closes anyway (a pooled
    /// connection that dies: idempotent requests are retried, others answered 502).
    SilentClose,
}

impl UpstreamScript {
    const ALL: [(UpstreamScript, &'static str); 12] = [
        (UpstreamScript::Length, "length"),
        (UpstreamScript::Chunked, "chunked"),
        (UpstreamScript::UntilClose, "until-close"),
        (UpstreamScript::CloseAfter, "close-after"),
        (UpstreamScript::Interim, "interim"),
        (UpstreamScript::NoContent, "no-content"),
        (UpstreamScript::Upgrade, "upgrade"),
        (UpstreamScript::Http10, "http10"),
        (UpstreamScript::Early, "early"),
        (UpstreamScript::TrailingJunk, "trailing-junk"),
        (UpstreamScript::Trickle, "trickle"),
        (UpstreamScript::SilentClose, "silent-close"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("length", |(_, n)| n)
    }
}

/// One client connection to the proxy, as the `conn_state` target drives it.
///
/// `stream` is what the client sends, in writes of `splits` bytes in turn (cycled; a 0 sends
/// the rest at once), each on its own with `TCP_NODELAY`; with `half_close` the client then
/// shuts its sending side. Before sending, three placeholders are replaced: `@HTTP@` by the
/// scripted upstream's `127.0.0.1:port`, `@ECHO@` by the echo server's (a CONNECT to it is a
/// blind tunnel), and the digits of `X-Fuzz-Conn: 00000000` by this connection's number, which
/// the upstream checks to attribute what it receives.
///
/// The canonical text form (what [`fuzz_conn_state`] reads and [`ConnScenario::to_text`]
/// writes) is a first line `WTCS`, `key: value` lines (`listener: forward|reverse`,
/// `script: <see UpstreamScript>`, `half-close: yes|no`, `splits: 3 0 …`) and `> ` lines whose
/// escaped contents (`\r`, `\n`, `\t`, `\\`, `\xNN`), concatenated, are the stream. Any bytes
/// read as some scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnScenario {
    pub listener: ScenarioListener,
    pub script: UpstreamScript,
    pub half_close: bool,
    pub splits: Vec<u16>,
    pub stream: Vec<u8>,
}

/// First line of the canonical text form.
pub const SCENARIO_MAGIC: &[u8] = b"WTCS\n";

/// The marker header line the grammar writes; its digits become the connection's number.
pub const CONN_MARKER: &[u8] = b"X-Fuzz-Conn: 00000000";

impl ConnScenario {
    /// Reads the canonical text form; never fails (unknown lines are ignored).
    pub fn parse(data: &[u8]) -> ConnScenario {
        let mut s = ConnScenario::default();
        for line in data.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(data) = line.strip_prefix(b"> ") {
                s.stream.extend(unescape(data));
                continue;
            }
            let text = String::from_utf8_lossy(line);
            let Some((key, value)) = text.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "listener" => {
                    s.listener = if value == "reverse" {
                        ScenarioListener::Reverse
                    } else {
                        ScenarioListener::Forward
                    }
                }
                "script" => {
                    s.script = UpstreamScript::ALL
                        .iter()
                        .find(|(_, n)| *n == value)
                        .map_or(UpstreamScript::Length, |(s, _)| *s)
                }
                "half-close" => s.half_close = value == "yes",
                "splits" => {
                    s.splits = value
                        .split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .take(64)
                        .collect()
                }
                _ => {}
            }
        }
        s
    }

    /// The canonical text form, one `> ` line per line of the stream.
    pub fn to_text(&self) -> String {
        let mut out = String::from_utf8_lossy(SCENARIO_MAGIC).into_owned();
        out.push_str(match self.listener {
            ScenarioListener::Forward => "listener: forward\n",
            ScenarioListener::Reverse => "listener: reverse\n",
        });
        out.push_str(&format!("script: {}\n", self.script.name()));
        out.push_str(if self.half_close {
            "half-close: yes\n"
        } else {
            "half-close: no\n"
        });
        let splits: Vec<String> = self.splits.iter().map(u16::to_string).collect();
        out.push_str(&format!("splits: {}\n", splits.join(" ")));
        for line in self.stream.split_inclusive(|&b| b == b'\n') {
            out.push_str("> ");
            out.push_str(&escape(line));
            out.push('\n');
        }
        out
    }
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b != b'\\' || i + 1 >= text.len() {
            out.push(b);
            i += 1;
            continue;
        }
        match text[i + 1] {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = text
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 4;
                    continue;
                }
                out.extend_from_slice(b"\\x");
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
        i += 2;
    }
    out
}

/// Fuzz entry (and corpus replay): reads `data` as a [`ConnScenario`] in its canonical text
/// form and runs it with [`run_conn_scenario`].
pub fn fuzz_conn_state(data: &[u8]) {
    run_conn_scenario(&ConnScenario::parse(data));
}

/// Inputs between two health checks (a fresh request through each listener must get a 200).
const HEALTH_EVERY: u64 = 32;
/// How long a client waits for everything it expects before calling the proxy stalled
/// (everything is on loopback: a healthy answer takes well under a millisecond).
const STALL_LIMIT: Duration = Duration::from_secs(2);
/// How long a client waits for a byte when it expects nothing more (or cannot tell).
const CLIENT_QUIET: Duration = Duration::from_millis(60);
/// How long a session may stay open after its client has gone.
const SESSION_END_LIMIT: Duration = Duration::from_secs(3);
/// Writes after which the client pauses a moment for the proxy to act on what it has.
const PAUSED_WRITES: usize = 8;
/// Largest stream a scenario sends (bigger ones are cut).
const MAX_STREAM_BYTES: usize = 64 * 1024;

/// The proxy and the scripted upstream every scenario in this process shares.
struct ConnFixture {
    forward: SocketAddr,
    reverse: SocketAddr,
    gauges: Gauges,
    proxy: JoinHandle<io::Result<()>>,
    upstream: FakeUpstream,
    /// Serialises scenarios: attribution relies on one client connection at a time.
    turn: Mutex<ConnCounters>,
}

#[derive(Default)]
struct ConnCounters {
    connections: u64,
    inputs: u64,
    skipped: u64,
}

fn conn_fixture() -> &'static ConnFixture {
    static FIXTURE: OnceLock<ConnFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        ignore_sigpipe();
        let upstream = FakeUpstream::start();
        let mut config = Config::defaults();
        config.listen = IpAddr::V4(Ipv4Addr::LOCALHOST);
        config.proxy_port = 0;
        config.reverse_http_port = Some(0);
        config.reverse_https_port = None;
        config.admin = None;
        config.workers = Some(1);
        config.local_routing = true;
        config.api_log = None;
        config.timeouts = Timeouts::default();
        config.routes = vec![Route {
            id: "fuzz".to_owned(),
            domain: FUZZ_ROUTE_DOMAIN.to_owned(),
            target_host: "127.0.0.1".to_owned(),
            target_port: upstream.http.port(),
            enabled: true,
        }];
        // Everything that is not routed and not loopback goes to the scripted upstream as an
        // HTTP proxy: no lookups, no real servers.
        config.upstream_proxy = Some(UpstreamProxy {
            host: "127.0.0.1".to_owned(),
            port: upstream.http.port(),
            credentials: None,
            no_proxy: Vec::new(),
        });
        let (ready, bound) = mpsc::channel();
        let proxy = thread::Builder::new()
            .name("watchtower-fuzz-proxy".into())
            .spawn(move || {
                let proxy = bind_proxy(config, LogSender::disabled());
                let _ = ready.send((proxy.local_addrs(), proxy.gauges()));
                proxy.run()
            })
            .unwrap_or_else(|e| panic!("cannot start the proxy thread: {e}"));
        let (addrs, gauges) = bound
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the fuzz proxy did not start: {e}"));
        let addr = |name: &str| {
            addrs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, a)| *a)
                .unwrap_or_else(|| panic!("no {name} listener"))
        };
        let fixture = ConnFixture {
            forward: addr("proxy"),
            reverse: addr("reverse_http"),
            gauges,
            proxy,
            upstream,
            turn: Mutex::new(ConnCounters::default()),
        };
        {
            let mut counters = fixture.turn.lock().unwrap_or_else(|e| e.into_inner());
            health_check(&fixture, &mut counters);
        }
        fixture
    })
}

/// A client whose peer has gone must get EPIPE, not SIGPIPE, also in a libFuzzer binary
/// (which does not start through Rust's `main`, where SIGPIPE is ignored).
fn ignore_sigpipe() {
    static IGNORED: OnceLock<()> = OnceLock::new();
    IGNORED.get_or_init(|| {
        let _ = signal_hook::flag::register(
            signal_hook::consts::SIGPIPE,
            Arc::new(AtomicBool::new(false)),
        );
    });
}

/// Runs one scenario against the shared proxy (started on first use) and checks:
///
/// * the proxy thread is alive, and every [`HEALTH_EVERY`] inputs a fresh well-formed request
///   through each listener gets a 200 from the upstream;
/// * the client gets everything its requests call for within [`STALL_LIMIT`] (one final
///   response per complete request, the echo of a tunnel, or the close it was told of), and
///   the session ends within [`SESSION_END_LIMIT`] of the client closing;
/// * the upstream never receives a head or body it cannot parse (strict httparse, RFC 9112
///   chunked), nor a request on a connection it left junk on;
/// * the requests the upstream receives are, in order, a subsequence of the requests the
///   engine's own parser reads from the client's bytes, with the same method, path, Host,
///   framing, body bytes and connection marker; none carries a hop-by-hop field or one the
///   client's Connection nominated, and all but the proxy's own CONNECTs carry its Via;
/// * what the client receives parses strictly as a sequence of responses framed by RFC 9112,
///   each upstream response answering the request at its position, and a request that asked
///   to close is answered with `Connection: close`;
/// * through a tunnel (CONNECT to the echo server or through the upstream as a proxy, or a
///   `101`), the client gets back exactly what it sent after the head.
pub fn run_conn_scenario(scenario: &ConnScenario) {
    let fixture = conn_fixture();
    let mut counters = fixture.turn.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        !fixture.proxy.is_finished(),
        "the proxy thread has stopped (see its panic above)"
    );
    counters.inputs += 1;
    if counters.inputs.is_multiple_of(HEALTH_EVERY) {
        health_check(fixture, &mut counters);
    }
    if std::env::var_os("WATCHTOWER_FUZZ_STATS").is_some() && counters.inputs.is_multiple_of(1000) {
        eprintln!(
            "conn_state: {} inputs, {} connections, {} skipped (they would reach other ports)",
            counters.inputs, counters.connections, counters.skipped
        );
    }
    run_one(fixture, &mut counters, scenario);
}

/// `WATCHTOWER_FUZZ_TRACE` set: one line per connection on stderr.
fn trace_enabled() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("WATCHTOWER_FUZZ_TRACE").is_some())
}

/// The health check on its own, for the end of a replay.
pub fn conn_state_health_check() {
    let fixture = conn_fixture();
    let mut counters = fixture.turn.lock().unwrap_or_else(|e| e.into_inner());
    assert!(!fixture.proxy.is_finished(), "the proxy thread has stopped");
    health_check(fixture, &mut counters);
}

fn health_check(fixture: &ConnFixture, counters: &mut ConnCounters) {
    for (listener, request) in [
        (
            ScenarioListener::Forward,
            &b"GET http://app.fuzz.test/health?f HTTP/1.1\r\nHost: app.fuzz.test\r\nX-Fuzz-Conn: 00000000\r\n\r\n"[..],
        ),
        (
            ScenarioListener::Reverse,
            &b"GET /health?r HTTP/1.1\r\nHost: app.fuzz.test\r\nX-Fuzz-Conn: 00000000\r\n\r\n"[..],
        ),
    ] {
        let scenario = ConnScenario {
            listener,
            script: UpstreamScript::Length,
            half_close: false,
            splits: Vec::new(),
            stream: request.to_vec(),
        };
        let outcome = run_one(fixture, counters, &scenario);
        assert_eq!(
            outcome.statuses,
            [200],
            "health check through {listener:?}: {:?}",
            String::from_utf8_lossy(&outcome.received)
        );
        assert_eq!(outcome.upstream_requests, 1, "health check through {listener:?}");
    }
}

/// What a scenario ended with, for the health check.
struct Outcome {
    statuses: Vec<u16>,
    upstream_requests: usize,
    received: Vec<u8>,
}

fn run_one(fixture: &ConnFixture, counters: &mut ConnCounters, scenario: &ConnScenario) -> Outcome {
    let nothing = Outcome {
        statuses: Vec::new(),
        upstream_requests: 0,
        received: Vec::new(),
    };
    counters.connections += 1;
    let number = counters.connections % 100_000_000;
    let stream = substitute(scenario, &fixture.upstream, number);
    let listener = match scenario.listener {
        ScenarioListener::Forward => ListenerKind::Forward,
        ScenarioListener::Reverse => ListenerKind::ReverseHttp,
    };
    let model = ClientModel::read(&stream, listener, scenario.script, &fixture.upstream);
    if !model.safe {
        // The proxy would connect somewhere on this machine other than the fake upstream.
        counters.skipped += 1;
        return nothing;
    }
    // Whatever came before (a pooled connection's idle state) is settled and forgotten.
    let stale = fixture.upstream.sync(scenario.script);
    check_no_stale(&stale);

    let addr = match scenario.listener {
        ScenarioListener::Forward => fixture.forward,
        ScenarioListener::Reverse => fixture.reverse,
    };
    let mut client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = client.set_nodelay(true);
    let _ = client.set_write_timeout(Some(Duration::from_secs(1)));
    let mut received = Vec::new();
    let mut eof = false;
    let mut at = 0;
    let mut turn = 0;
    while at < stream.len() {
        let size = match scenario.splits.get(turn % scenario.splits.len().max(1)) {
            Some(&0) | None => stream.len() - at,
            Some(&n) => usize::from(n),
        };
        turn += 1;
        let end = (at + size).min(stream.len());
        if client.write_all(&stream[at..end]).is_err() {
            break; // the proxy closed (an answer and close); what it said is read below
        }
        at = end;
        if at < stream.len() && turn <= PAUSED_WRITES {
            // Let the proxy act on this piece before the next one (a timed wait would cost a
            // timer tick), and take what it has said so far.
            thread::yield_now();
            thread::yield_now();
            let _ = client.set_nonblocking(true);
            drain(&mut client, &mut received, &mut eof, false);
            let _ = client.set_nonblocking(false);
        }
    }
    if scenario.half_close {
        let _ = client.shutdown(Shutdown::Write);
    }
    let waited = read_until_settled(&mut client, &model, scenario, &mut received, &mut eof);
    if !eof && received.is_empty() {
        // Nothing came back: the proxy may not even have accepted the connection yet, and a
        // connection it accepts after the barrier below would talk to the next scenario's
        // upstream. Its session is alive while the client is, so wait until it shows.
        wait_for_session(fixture, &client);
    }
    if waited && std::env::var_os("WATCHTOWER_FUZZ_WAITS").is_some() {
        eprintln!(
            "waited on:\n{}--- received: {}\n--- model: {model:?}",
            scenario.to_text(),
            escape(&received)
        );
    }
    drop(client);
    wait_for_sessions_to_end(fixture);
    let records = fixture.upstream.sync(scenario.script);
    let view = ClientView::read(&received, eof, &model);
    if trace_enabled() {
        eprintln!(
            "conn {number}: {:?} {:?} tail {:?}, {} requests ({} complete), statuses {:?}, \
             {} upstream records, eof {eof}, waited {waited}, tunnel {:?}",
            scenario.listener,
            scenario.script,
            model.tail,
            model.requests.len(),
            model.complete_requests(),
            view.finals.iter().map(|f| f.status).collect::<Vec<_>>(),
            records.len(),
            view.tunnel.as_ref().map(Vec::len),
        );
        if std::env::var_os("WATCHTOWER_FUZZ_TRACE").is_some_and(|v| v == "2") {
            eprintln!(
                "  sent: {}\n  received: {}\n  upstream: {records:?}",
                escape(&stream),
                escape(&received)
            );
        }
    }
    check_conn(scenario, &model, &view, &records, &received, waited);
    Outcome {
        statuses: view.finals.iter().map(|f| f.status).collect(),
        upstream_requests: records
            .iter()
            .filter(|r| matches!(r.event, UpEvent::Request(_)))
            .count(),
        received,
    }
}

/// The stream with its placeholders filled in.
fn substitute(scenario: &ConnScenario, upstream: &FakeUpstream, number: u64) -> Vec<u8> {
    let mut stream = scenario.stream.clone();
    stream.truncate(MAX_STREAM_BYTES);
    let marker = format!("X-Fuzz-Conn: {number:08}");
    let stream = replace_all(&stream, CONN_MARKER, marker.as_bytes());
    let stream = replace_all(&stream, b"@HTTP@", upstream.http.to_string().as_bytes());
    replace_all(&stream, b"@ECHO@", upstream.echo.to_string().as_bytes())
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Reads what is there: until the socket would block (`once` false, non-blocking socket), or
/// one read that waits up to the socket's read timeout (`once` true, blocking socket).
fn drain(client: &mut TcpStream, received: &mut Vec<u8>, eof: &mut bool, once: bool) {
    let mut buf = [0u8; 16 * 1024];
    while !*eof {
        match client.read(&mut buf) {
            Ok(0) => *eof = true,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if once {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Timed out, or reset (which ends the conversation as EOF does).
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut {
                    *eof = true;
                }
                return;
            }
        }
    }
}

/// Reads until the client has what the model expects (or EOF). Returns true when it had to
/// stop on a timeout instead.
fn read_until_settled(
    client: &mut TcpStream,
    model: &ClientModel,
    scenario: &ConnScenario,
    received: &mut Vec<u8>,
    eof: &mut bool,
) -> bool {
    let start = Instant::now();
    let mut last_byte = start;
    loop {
        if *eof {
            return false;
        }
        let view = ClientView::read(received, false, model);
        if view.settled(model, scenario.half_close) {
            return false;
        }
        let now = Instant::now();
        let left = STALL_LIMIT.saturating_sub(now.duration_since(start));
        let quiet_left = CLIENT_QUIET.saturating_sub(now.duration_since(last_byte));
        let wait = if view.error.is_some() {
            left.min(quiet_left)
        } else {
            left
        };
        if wait.is_zero() {
            return true;
        }
        // Returns as soon as a byte (or EOF) comes; times out only when nothing does.
        let _ = client.set_read_timeout(Some(wait));
        let before = received.len();
        drain(client, received, eof, true);
        if received.len() > before {
            last_byte = Instant::now();
        }
    }
}

/// Waits until the proxy has accepted the client's connection (its session shows in the
/// gauges, or it has already answered or closed).
fn wait_for_session(fixture: &ConnFixture, client: &TcpStream) {
    let start = Instant::now();
    let _ = client.set_nonblocking(true);
    let mut probe = [0u8; 1];
    loop {
        let open = fixture.gauges.open_total();
        let answered =
            !matches!(client.peek(&mut probe), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock);
        if open > 0 || answered {
            break;
        }
        assert!(
            start.elapsed() < SESSION_END_LIMIT,
            "the proxy did not accept a connection within {SESSION_END_LIMIT:?}"
        );
        assert!(!fixture.proxy.is_finished(), "the proxy thread has stopped");
        thread::sleep(Duration::from_micros(50));
    }
    let _ = client.set_nonblocking(false);
}

/// Waits until the proxy has closed every client session (the client has closed its end).
fn wait_for_sessions_to_end(fixture: &ConnFixture) {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let open = fixture.gauges.open_total();
        if open == 0 {
            return;
        }
        assert!(
            start.elapsed() < SESSION_END_LIMIT,
            "a session is still open {SESSION_END_LIMIT:?} after its client closed"
        );
        assert!(!fixture.proxy.is_finished(), "the proxy thread has stopped");
        spins += 1;
        if spins < 50 {
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_micros(100));
        }
    }
}

/// What the session does with a request, as far as can be told from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Relayed to the scripted upstream (which may still be answered by Watchtower itself,
    /// e.g. a 400 for an authority routing cannot split).
    Upstream,
    /// Answered by Watchtower: origin-form on the forward port, CONNECT elsewhere.
    Answered,
    /// A CONNECT that becomes a blind tunnel (to the echo server, or through the upstream as
    /// an HTTP proxy, which then echoes).
    Tunnel,
    /// A CONNECT to the routed host: answered 200, then served here.
    Intercept,
}

/// How the client's bytes end, as the engine's parser reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Every byte belongs to a complete request.
    Done,
    /// An unfinished head.
    Head,
    /// An unfinished body.
    Body,
    /// A head or chunked body the parser refuses: answered 400 and closed.
    Malformed,
    /// A tunnel opened; the rest is tunnel payload.
    Tunnel,
    /// TLS after an intercepted CONNECT: not HTTP any more.
    Tls,
    /// The connection closes after the last request's response.
    Closed,
}

/// A request as the engine's own parser reads it from the client's bytes.
#[derive(Clone)]
struct ModelRequest {
    method: Method,
    method_token: Vec<u8>,
    form: TargetForm,
    /// Origin-form path (never empty), `*`, or the CONNECT authority.
    path: Vec<u8>,
    authority: Option<String>,
    body_kind: BodyKind,
    /// The body bytes as sent (chunk framing included), when complete.
    body: Option<Vec<u8>>,
    marker: Option<Vec<u8>>,
    /// Field names the request's Connection options nominate (RFC 9110 §7.6.1), lowercased.
    nominated: Vec<String>,
    /// The client asked for the connection to stay open (RFC 9112 §9.3).
    keep_alive: bool,
    /// An upgrade request (Upgrade, nominated by Connection): the scripted upstream waits for
    /// its body before answering, even when it answers other uploads early.
    upgrade: bool,
    fate: Fate,
}

/// What the client's bytes are, read the way the proxy reads them.
#[derive(Debug)]
struct ClientModel {
    requests: Vec<ModelRequest>,
    tail: Tail,
    /// Payload after the head that opened a tunnel, which must come back from the echo.
    tunnel_after: Vec<u8>,
    /// The proxy would connect only to the route target or the scripted upstream.
    safe: bool,
    script: UpstreamScript,
}

impl ClientModel {
    fn read(
        stream: &[u8],
        listener: ListenerKind,
        script: UpstreamScript,
        upstream: &FakeUpstream,
    ) -> ClientModel {
        let table = RouteTable::new(&[Route {
            id: "fuzz".to_owned(),
            domain: FUZZ_ROUTE_DOMAIN.to_owned(),
            target_host: "127.0.0.1".to_owned(),
            target_port: upstream.http.port(),
            enabled: true,
        }]);
        let proxy = UpstreamProxy {
            host: "127.0.0.1".to_owned(),
            port: upstream.http.port(),
            credentials: None,
            no_proxy: Vec::new(),
        };
        let mut model = ClientModel {
            requests: Vec::new(),
            tail: Tail::Done,
            tunnel_after: Vec::new(),
            safe: true,
            script,
        };
        let mut pos = 0;
        let mut pinned = false;
        loop {
            let rest = &stream[pos..];
            if rest.is_empty() {
                model.tail = Tail::Done;
                break;
            }
            let head = match http::parse_request(rest) {
                Ok(Some(head)) => head,
                Ok(None) => {
                    model.tail = Tail::Head;
                    break;
                }
                Err(_) => {
                    model.tail = Tail::Malformed;
                    break;
                }
            };
            let after_head = &rest[head.head_len..];
            let mut bad_body = false;
            // A CONNECT has no content (RFC 9110 §9.3.6): the session takes what follows its
            // head as tunnel payload (or, intercepted, as the next request), whatever framing
            // fields it carries.
            let body_len = match head.body {
                _ if head.method == Method::Connect => Some(0),
                BodyKind::None | BodyKind::UntilClose => Some(0),
                BodyKind::Length(n) => usize::try_from(n).ok().filter(|&n| n <= after_head.len()),
                BodyKind::Chunked => match ChunkedDecoder::new().scan(after_head) {
                    Ok(scan) if scan.done => Some(scan.consumed),
                    Ok(_) => None,
                    Err(_) => {
                        bad_body = true;
                        None
                    }
                },
            };
            let authority = head.authority.map(|a| a.str_of(rest).to_owned());
            let is_connect = head.method == Method::Connect;
            let forward_unpinned = listener == ListenerKind::Forward && !pinned;
            let fate = if is_connect {
                if !forward_unpinned {
                    Fate::Answered
                } else if matches!(
                    table.decide(authority.as_deref().unwrap_or(""), true, listener),
                    Decision::Local(_)
                ) {
                    Fate::Intercept
                } else {
                    Fate::Tunnel
                }
            } else if forward_unpinned
                && matches!(head.form, TargetForm::Origin | TargetForm::Asterisk)
            {
                Fate::Answered
            } else {
                Fate::Upstream
            };
            if matches!(fate, Fate::Upstream | Fate::Tunnel) && !pinned {
                model.safe &= reaches_only_fakes(
                    authority.as_deref().unwrap_or(""),
                    is_connect,
                    listener,
                    &table,
                    &proxy,
                    upstream,
                );
            }
            let path = if is_connect {
                authority.clone().unwrap_or_default().into_bytes()
            } else if head.form == TargetForm::Asterisk {
                b"*".to_vec()
            } else {
                let p = head.path.of(rest);
                if p.first() == Some(&b'/') {
                    p.to_vec()
                } else {
                    [b"/".as_slice(), p].concat()
                }
            };
            model.requests.push(ModelRequest {
                method: head.method,
                method_token: head.method_span.of(rest).to_vec(),
                form: head.form,
                path,
                authority,
                body_kind: head.body,
                body: body_len.map(|n| after_head[..n].to_vec()),
                marker: marker_of(&rest[..head.head_len]),
                nominated: nominated_by(&rest[..head.head_len]),
                keep_alive: head.keep_alive,
                upgrade: head.upgrade,
                fate,
            });
            let Some(body_len) = body_len else {
                model.tail = if bad_body {
                    Tail::Malformed
                } else {
                    Tail::Body
                };
                break;
            };
            pos += head.head_len + body_len;
            let answered_close =
                fate == Fate::Answered && !(head.keep_alive && head.body == BodyKind::None);
            if is_connect && fate == Fate::Answered {
                model.tail = Tail::Closed;
                break;
            }
            if fate == Fate::Tunnel
                || (fate == Fate::Upstream && head.upgrade && script == UpstreamScript::Upgrade)
            {
                model.tail = Tail::Tunnel;
                model.tunnel_after = stream[pos..].to_vec();
                break;
            }
            if fate == Fate::Intercept {
                pinned = true;
                if stream.get(pos) == Some(&0x16) {
                    model.tail = Tail::Tls;
                    break;
                }
                continue;
            }
            if answered_close
                || !head.keep_alive
                // A close-delimited response ends the connection; one to HEAD has no body.
                || (fate == Fate::Upstream
                    && script == UpstreamScript::UntilClose
                    && head.method != Method::Head)
            {
                model.tail = Tail::Closed;
                break;
            }
        }
        model
    }

    /// Requests the proxy has all of (each gets one final response, in order), and with an
    /// upstream that answers before the body, the one whose body is still coming.
    fn complete_requests(&self) -> usize {
        let complete = self.requests.iter().filter(|r| r.body.is_some()).count();
        let answered_early = self.script == UpstreamScript::Early
            && self.tail == Tail::Body
            && self.requests.last().is_some_and(|r| {
                r.fate == Fate::Upstream && !matches!(r.body_kind, BodyKind::None) && !r.upgrade
            });
        complete + usize::from(answered_early)
    }
}

/// The value of the request's `X-Fuzz-Conn` field, if it has one.
fn marker_of(head: &[u8]) -> Option<Vec<u8>> {
    let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    request.parse(head).ok()?;
    request
        .headers
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("x-fuzz-conn"))
        .map(|f| f.value.to_vec())
}

/// The field names a request head's Connection options nominate, lowercased (the three
/// options that name no field are left out).
fn nominated_by(head: &[u8]) -> Vec<String> {
    let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    if request.parse(head).is_err() {
        return Vec::new();
    }
    request
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| list_elements(f.value))
        .map(|o| String::from_utf8_lossy(o).to_ascii_lowercase())
        .filter(|o| !matches!(o.as_str(), "close" | "keep-alive" | "upgrade"))
        .collect()
}

/// RFC 9110 §7.6.1 on what the upstream got: no hop-by-hop field of the client's (Connection
/// only as the proxy's own `upgrade`), no field the client's Connection nominated (except the
/// framing fields and Host, which the proxy keeps on purpose, and the fields it writes itself),
/// and the proxy's own Via. `None` when all holds, else what does not.
fn forwarded_fields_problem(expected: &ModelRequest, got: &UpRequest) -> Option<String> {
    let has = |name: &str| got.fields.iter().any(|(n, _)| n == name);
    for (name, value) in &got.fields {
        match name.as_str() {
            "keep-alive" | "proxy-connection" | "proxy-authorization" | "te" | "trailer" => {
                return Some(format!("hop-by-hop field {name} was forwarded"));
            }
            "connection" if !(value.eq_ignore_ascii_case(b"upgrade") && has("upgrade")) => {
                return Some(format!(
                    "Connection: {} was forwarded",
                    String::from_utf8_lossy(value)
                ));
            }
            _ => {}
        }
        let written_by_proxy = matches!(
            name.as_str(),
            "content-length"
                | "transfer-encoding"
                | "host"
                | "via"
                | "connection"
                | "upgrade"
                | "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-real-ip"
        );
        if !written_by_proxy && expected.nominated.iter().any(|n| n == name) {
            return Some(format!(
                "field {name}, nominated by Connection, was forwarded"
            ));
        }
    }
    let ours = got
        .fields
        .iter()
        .any(|(n, v)| n == "via" && v.windows(11).any(|w| w == b"watchtower-"));
    // The CONNECT the proxy writes to an upstream proxy is its own, without Via.
    if !ours && expected.method != Method::Connect {
        return Some("the proxy's Via is missing".to_owned());
    }
    None
}

/// False when a request for `authority` would make the proxy connect anywhere on this machine
/// but the route target, the scripted upstream (for HTTP) or the echo server (for CONNECT):
/// loopback destinations bypass the upstream proxy.
fn reaches_only_fakes(
    authority: &str,
    connect: bool,
    listener: ListenerKind,
    table: &RouteTable,
    proxy: &UpstreamProxy,
    upstream: &FakeUpstream,
) -> bool {
    if matches!(table.decide(authority, true, listener), Decision::Local(_)) {
        return true;
    }
    let Some((host, port)) = route::split_authority(authority) else {
        return true; // answered 400
    };
    let port = port.unwrap_or(80);
    if !proxy.bypasses(host, port) {
        return true; // through the scripted upstream as a proxy
    }
    let allowed = if connect {
        upstream.echo
    } else {
        upstream.http
    };
    host == "127.0.0.1" && port == allowed.port()
}

/// A final response as the client reads it.
#[derive(Debug, Clone)]
struct FinalResponse {
    status: u16,
    /// The scripted upstream's sequence number for the request it answers (`X-Fuzz-Up`).
    up_seq: Option<u64>,
    /// The request it answers (responses come in request order).
    index: usize,
    /// It says `Connection: close`.
    close: bool,
}

/// What the client has received, read as responses in the order of its requests.
#[derive(Debug, Default)]
struct ClientView {
    finals: Vec<FinalResponse>,
    /// A response is still incomplete.
    partial: bool,
    /// A response said the connection closes.
    closing: bool,
    /// Bytes after the response that opened a tunnel (or started TLS).
    tunnel: Option<Vec<u8>>,
    /// The tunnel is the echo of the client's payload (not TLS).
    echoing: bool,
    error: Option<String>,
}

impl ClientView {
    fn read(received: &[u8], eof: bool, model: &ClientModel) -> ClientView {
        let mut view = ClientView::default();
        let mut pos = 0;
        loop {
            let rest = &received[pos..];
            if view.tunnel.is_some() {
                view.tunnel = Some(rest.to_vec());
                break;
            }
            if rest.is_empty() {
                break;
            }
            let index = view.finals.len();
            let request = model.requests.get(index);
            let method = request.map_or(Method::Get, |r| r.method);
            let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS + 8];
            let mut response = httparse::Response::new(&mut fields);
            let head_len = match response.parse(rest) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    view.partial = true;
                    if eof {
                        view.error = Some("the connection closed inside a response head".into());
                    }
                    break;
                }
                Err(e) => {
                    view.error = Some(format!("response head does not parse: {e}"));
                    break;
                }
            };
            let status = response.code.unwrap_or(0);
            let minor = response.version.unwrap_or(1);
            let framing = match model_response_framing(status, minor, method, response.headers) {
                Ok(f) => f,
                Err(why) => {
                    view.error = Some(format!("response with {why}"));
                    break;
                }
            };
            let body = &rest[head_len..];
            let body_len = match framing.body {
                BodyKind::None => Some(0),
                BodyKind::Length(n) => usize::try_from(n).ok().filter(|&n| n <= body.len()),
                BodyKind::Chunked => match chunked_end(body) {
                    Ok(end) => end,
                    Err(why) => {
                        view.error = Some(format!("chunked response body: {why}"));
                        break;
                    }
                },
                BodyKind::UntilClose => eof.then_some(body.len()),
            };
            let Some(body_len) = body_len else {
                view.partial = true;
                if eof {
                    view.error = Some("the connection closed inside a response body".into());
                }
                break;
            };
            pos += head_len + body_len;
            if (100..200).contains(&status) && status != 101 {
                continue; // interim
            }
            let up_seq = response
                .headers
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case("x-fuzz-up"))
                .and_then(|f| std::str::from_utf8(f.value).ok()?.parse().ok());
            let close = response
                .headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                .any(|f| list_elements(f.value).any(|o| o.eq_ignore_ascii_case(b"close")));
            view.closing |= close;
            view.finals.push(FinalResponse {
                status,
                up_seq,
                index,
                close,
            });
            let opens = match request.map(|r| r.fate) {
                Some(Fate::Tunnel) => method == Method::Connect && (200..300).contains(&status),
                Some(Fate::Intercept) => {
                    model.tail == Tail::Tls && index + 1 == model.requests.len()
                }
                _ => status == 101,
            };
            if opens {
                view.echoing = model.tail == Tail::Tunnel && index + 1 == model.requests.len();
                view.tunnel = Some(Vec::new());
            }
        }
        view
    }

    /// The client has everything it expects and need not wait for more.
    fn settled(&self, model: &ClientModel, half_close: bool) -> bool {
        if self.error.is_some() || half_close || self.partial || self.closing {
            return false;
        }
        match model.tail {
            Tail::Malformed => false,
            // Closing is the proxy's to announce (`Connection: close`, then EOF, which the
            // check above waits for); an answer of its own may keep the connection instead.
            Tail::Closed => self.finals.len() >= model.complete_requests(),
            // What TLS makes of the bytes (an alert, or waiting for the rest of a record) is
            // not this target's business: the CONNECT's 200 is all there is to wait for.
            Tail::Tls => self.finals.len() >= model.complete_requests(),
            Tail::Tunnel => self
                .tunnel
                .as_ref()
                .is_some_and(|t| t.len() >= model.tunnel_after.len()),
            Tail::Done | Tail::Head | Tail::Body => self.finals.len() >= model.complete_requests(),
        }
    }
}

/// RFC 9112 §7.1 read strictly: where a chunked body that starts `body` ends, `None` when it
/// is not complete yet.
fn chunked_end(body: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut pos = 0;
    loop {
        let Some(line_len) = find_crlf(&body[pos..])? else {
            return Ok(None);
        };
        let line = &body[pos..pos + line_len];
        pos += line_len + 2;
        let digits = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        if digits == 0 {
            return Err("a chunk size without hex digits");
        }
        check_chunk_ext(&line[digits..])?;
        let size = std::str::from_utf8(&line[..digits])
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or("a chunk size that overflows")?;
        if size == 0 {
            // Trailer section: field lines, then the empty line.
            loop {
                let Some(line_len) = find_crlf(&body[pos..])? else {
                    return Ok(None);
                };
                let line = &body[pos..pos + line_len];
                pos += line_len + 2;
                if line.is_empty() {
                    return Ok(Some(pos));
                }
                let colon = line
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or("a trailer without ':'")?;
                if colon == 0 || !line[..colon].iter().all(|&b| http::head::is_tchar(b)) {
                    return Err("a trailer field name that is not a token");
                }
            }
        }
        let Some(end) = pos.checked_add(size).filter(|&e| e + 2 <= body.len()) else {
            return Ok(None);
        };
        if &body[end..end + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF");
        }
        pos = end + 2;
    }
}

/// Length of the line at the start of `bytes` up to its CRLF; a bare CR or LF is an error.
fn find_crlf(bytes: &[u8]) -> Result<Option<usize>, &'static str> {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\r' => {
                return match bytes.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err("a bare CR"),
                    None => Ok(None),
                };
            }
            b'\n' => return Err("a bare LF"),
            _ => {}
        }
    }
    if bytes.len() > 16 * 1024 {
        return Err("a line longer than 16 KiB");
    }
    Ok(None)
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )` (RFC 9112 §7.1.1).
fn check_chunk_ext(mut ext: &[u8]) -> Result<(), &'static str> {
    let skip_bws =
        |s: &[u8]| -> usize { s.iter().take_while(|&&b| b == b' ' || b == b'\t').count() };
    let token_len =
        |s: &[u8]| -> usize { s.iter().take_while(|&&b| http::head::is_tchar(b)).count() };
    loop {
        ext = &ext[skip_bws(ext)..];
        if ext.is_empty() {
            return Ok(());
        }
        ext = ext.strip_prefix(b";").ok_or("junk in a chunk extension")?;
        ext = &ext[skip_bws(ext)..];
        let name = token_len(ext);
        if name == 0 {
            return Err("a chunk extension without a name");
        }
        ext = &ext[name..];
        let after = skip_bws(ext);
        if ext.get(after) != Some(&b'=') {
            continue;
        }
        ext = &ext[after + 1..];
        ext = &ext[skip_bws(ext)..];
        if let Some(quoted) = ext.strip_prefix(b"\"") {
            let mut i = 0;
            loop {
                match quoted.get(i) {
                    None => return Err("an unterminated quoted chunk extension"),
                    Some(b'"') => break,
                    Some(b'\\') => i += 2,
                    Some(&b) if b == b'\t' || b == b' ' || b >= 0x21 && b != 0x7f => i += 1,
                    Some(_) => return Err("a control byte in a quoted chunk extension"),
                }
            }
            ext = &quoted[i + 1..];
        } else {
            let value = token_len(ext);
            if value == 0 {
                return Err("a chunk extension with an empty value");
            }
            ext = &ext[value..];
        }
    }
}

/// What the scripted upstream saw, in order.
#[derive(Debug, Clone)]
struct UpRecord {
    /// Its sequence number, also sent back as `X-Fuzz-Up` on the response.
    seq: u64,
    /// The upstream connection it came on (shown in failure messages).
    #[allow(dead_code)]
    conn: u64,
    event: UpEvent,
}

#[derive(Clone)]
enum UpEvent {
    /// A complete request.
    Request(UpRequest),
    /// Bytes the upstream could not read as a request: something the proxy must never send.
    Malformed { why: String, bytes: Vec<u8> },
    /// The connection closed in the middle of a request.
    Truncated { bytes: Vec<u8> },
}

#[derive(Clone)]
struct UpRequest {
    method: String,
    target: String,
    host: Option<Vec<u8>>,
    marker: Option<Vec<u8>>,
    framing: BodyKind,
    body: Vec<u8>,
    /// Answered before its body came ([`UpstreamScript::Early`]); `body` is then empty.
    early: bool,
    /// Every field line, name lowercased.
    fields: Vec<(String, Vec<u8>)>,
}

/// The scripted upstream: an HTTP server (route target and upstream proxy in one) and an echo
/// server, on one mio loop thread, so that a sync can drain every socket at once.
struct FakeUpstream {
    http: SocketAddr,
    echo: SocketAddr,
    commands: Mutex<mpsc::Sender<FakeCommand>>,
    waker: mio::Waker,
}

struct FakeCommand {
    script: UpstreamScript,
    reply: mpsc::Sender<Vec<UpRecord>>,
}

const FAKE_HTTP: mio::Token = mio::Token(0);
const FAKE_ECHO: mio::Token = mio::Token(1);
const FAKE_WAKE: mio::Token = mio::Token(2);
const FAKE_FIRST_CONN: usize = 3;

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let bind = |what: &str| {
            mio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .unwrap_or_else(|e| panic!("the fake {what} server: {e}"))
        };
        let (mut http_listener, mut echo_listener) = (bind("http"), bind("echo"));
        let http = http_listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let echo = echo_listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let poll = mio::Poll::new().unwrap_or_else(|e| panic!("fake upstream poll: {e}"));
        let registry = poll.registry();
        registry
            .register(&mut http_listener, FAKE_HTTP, mio::Interest::READABLE)
            .and_then(|()| {
                registry.register(&mut echo_listener, FAKE_ECHO, mio::Interest::READABLE)
            })
            .unwrap_or_else(|e| panic!("fake upstream register: {e}"));
        let waker = mio::Waker::new(registry, FAKE_WAKE).unwrap_or_else(|e| panic!("{e}"));
        let (commands, rx) = mpsc::channel();
        let mut fake = FakeLoop {
            poll,
            http: http_listener,
            echo: echo_listener,
            conns: std::collections::HashMap::new(),
            next_token: FAKE_FIRST_CONN,
            next_conn: 0,
            seq: 0,
            script: UpstreamScript::Length,
            records: Vec::new(),
            commands: rx,
        };
        thread::Builder::new()
            .name("watchtower-fuzz-upstream".into())
            .spawn(move || fake.run())
            .unwrap_or_else(|e| panic!("cannot start the fake upstream: {e}"));
        FakeUpstream {
            http,
            echo,
            commands: Mutex::new(commands),
            waker,
        }
    }

    /// Reads everything that has arrived on every connection, answers it with the script in
    /// force so far, then switches to `script`; returns what was seen since the last sync.
    fn sync(&self, script: UpstreamScript) -> Vec<UpRecord> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(FakeCommand { script, reply })
            .unwrap_or_else(|_| panic!("the fake upstream thread has stopped"));
        self.waker
            .wake()
            .unwrap_or_else(|e| panic!("waking the fake upstream: {e}"));
        answer
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the fake upstream did not answer a sync: {e}"))
    }
}

struct FakeLoop {
    poll: mio::Poll,
    http: mio::net::TcpListener,
    echo: mio::net::TcpListener,
    conns: std::collections::HashMap<usize, FakeConn>,
    next_token: usize,
    next_conn: u64,
    seq: u64,
    script: UpstreamScript,
    records: Vec<UpRecord>,
    commands: mpsc::Receiver<FakeCommand>,
}

struct FakeConn {
    sock: mio::net::TcpStream,
    id: u64,
    /// Echoing everything (the echo server, or after a CONNECT or a 101).
    tunnel: bool,
    input: Vec<u8>,
    output: VecDeque<u8>,
    /// A head has been read; its body is still coming.
    pending: Option<Pending>,
    read_eof: bool,
    /// Close once the output is written (the script said so).
    close_after: bool,
    write_shut: bool,
    /// The upstream sent more than its response framed: no request may follow on this
    /// connection.
    junked: bool,
    dead: bool,
}

/// A request whose head has been read.
struct Pending {
    request: UpRequest,
    upgrade: bool,
    /// Already answered (and recorded) before its body came ([`UpstreamScript::Early`]).
    answered: bool,
}

impl FakeConn {
    fn new(sock: mio::net::TcpStream, id: u64, tunnel: bool) -> FakeConn {
        FakeConn {
            sock,
            id,
            tunnel,
            input: Vec::new(),
            output: VecDeque::new(),
            pending: None,
            read_eof: false,
            close_after: false,
            write_shut: false,
            junked: false,
            dead: false,
        }
    }
}

impl FakeLoop {
    fn run(&mut self) {
        let mut events = mio::Events::with_capacity(256);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                panic!("fake upstream poll: {e}");
            }
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    FAKE_HTTP | FAKE_ECHO => self.accept_all(),
                    FAKE_WAKE => woken = true,
                    mio::Token(t) => self.service(t),
                }
            }
            if woken {
                while let Ok(command) = self.commands.try_recv() {
                    self.accept_all();
                    let tokens: Vec<usize> = self.conns.keys().copied().collect();
                    for t in tokens {
                        self.service(t);
                    }
                    self.script = command.script;
                    let _ = command.reply.send(std::mem::take(&mut self.records));
                }
            }
            self.conns.retain(|_, c| !c.dead);
        }
    }

    fn accept_all(&mut self) {
        for tunnel in [false, true] {
            loop {
                let listener = if tunnel { &self.echo } else { &self.http };
                let (mut sock, _) = match listener.accept() {
                    Ok(pair) => pair,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let _ = sock.set_nodelay(true);
                let token = self.next_token;
                self.next_token += 1;
                if self
                    .poll
                    .registry()
                    .register(
                        &mut sock,
                        mio::Token(token),
                        mio::Interest::READABLE | mio::Interest::WRITABLE,
                    )
                    .is_err()
                {
                    continue;
                }
                self.next_conn += 1;
                self.conns
                    .insert(token, FakeConn::new(sock, self.next_conn, tunnel));
                self.service(token);
            }
        }
    }

    /// Reads all that is there, acts on it, writes all that can be written.
    fn service(&mut self, token: usize) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        while !conn.read_eof && !conn.dead {
            match conn.sock.read(&mut buf) {
                Ok(0) => conn.read_eof = true,
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => conn.dead = true,
            }
        }
        self.act(&mut conn);
        // Trickle: a few bytes per write, giving the proxy a chance to read each on its own.
        let piece = if self.script == UpstreamScript::Trickle && !conn.tunnel {
            3
        } else {
            usize::MAX
        };
        while !conn.output.is_empty() && !conn.dead {
            let (front, _) = conn.output.as_slices();
            let front = &front[..front.len().min(piece)];
            match conn.sock.write(front) {
                Ok(0) => conn.dead = true,
                Ok(n) => {
                    conn.output.drain(..n);
                    if piece != usize::MAX {
                        thread::yield_now();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => conn.dead = true,
            }
        }
        let finished =
            conn.output.is_empty() && (conn.close_after || (conn.tunnel && conn.read_eof));
        if finished && !conn.write_shut {
            let _ = conn.sock.shutdown(Shutdown::Write);
            conn.write_shut = true;
        }
        if conn.read_eof && (conn.write_shut || !conn.tunnel) && conn.output.is_empty() {
            let unanswered = conn.pending.as_ref().is_none_or(|p| !p.answered);
            if !conn.tunnel && !conn.close_after && unanswered {
                let mut bytes = Vec::new();
                if let Some(p) = conn.pending.take() {
                    bytes.extend_from_slice(
                        format!("{} {} ...", p.request.method, p.request.target).as_bytes(),
                    );
                }
                bytes.extend_from_slice(&conn.input);
                if !bytes.is_empty() {
                    self.record(conn.id, UpEvent::Truncated { bytes });
                }
            }
            conn.dead = true;
        }
        if conn.close_after && conn.write_shut && !conn.dead {
            // Nothing more is read from a connection the script closed.
            conn.input.clear();
        }
        if conn.dead {
            let _ = self.poll.registry().deregister(&mut conn.sock);
        } else {
            self.conns.insert(token, conn);
        }
    }

    fn record(&mut self, conn: u64, event: UpEvent) -> u64 {
        self.seq += 1;
        self.records.push(UpRecord {
            seq: self.seq,
            conn,
            event,
        });
        self.seq
    }

    /// Parses and answers requests; echoes in tunnel mode.
    fn act(&mut self, conn: &mut FakeConn) {
        loop {
            if conn.tunnel {
                conn.output.extend(conn.input.drain(..));
                return;
            }
            if conn.close_after {
                return;
            }
            if conn.pending.is_none() {
                if conn.input.is_empty() {
                    return;
                }
                if conn.junked {
                    let bytes = std::mem::take(&mut conn.input);
                    let why = "a request on a connection whose last response had bytes after it \
                               (the proxy must not reuse it)"
                        .to_owned();
                    self.record(conn.id, UpEvent::Malformed { why, bytes });
                    conn.close_after = true;
                    return;
                }
                match parse_upstream_head(&conn.input) {
                    Ok(None) => return,
                    Err(why) => {
                        let bytes = std::mem::take(&mut conn.input);
                        self.record(conn.id, UpEvent::Malformed { why, bytes });
                        conn.close_after = true;
                        return;
                    }
                    Ok(Some((request, head_len, upgrade))) => {
                        conn.input.drain(..head_len);
                        let early = self.script == UpstreamScript::Early
                            && request.framing != BodyKind::None
                            && request.method != "CONNECT"
                            && !upgrade;
                        let mut pending = Pending {
                            request,
                            upgrade,
                            answered: false,
                        };
                        if early {
                            // Answer at once, before the body (as a server refusing an upload
                            // does), and go on reading the body to find the next request.
                            let mut request = pending.request.clone();
                            request.early = true;
                            let head_request = request.method == "HEAD";
                            let seq = self.record(conn.id, UpEvent::Request(request));
                            let (response, close) =
                                scripted_response(self.script, seq, head_request);
                            conn.output.extend(response);
                            conn.close_after |= close;
                            pending.answered = true;
                        }
                        conn.pending = Some(pending);
                    }
                }
            }
            let Some(pending) = conn.pending.as_mut() else {
                return;
            };
            let body_len = match pending.request.framing {
                BodyKind::Length(n) => match usize::try_from(n) {
                    Ok(n) if conn.input.len() >= n => n,
                    _ => return,
                },
                BodyKind::Chunked => match chunked_end(&conn.input) {
                    Ok(Some(n)) => n,
                    Ok(None) => return,
                    Err(why) => {
                        let bytes = std::mem::take(&mut conn.input);
                        let why = format!("chunked body: {why}");
                        self.record(conn.id, UpEvent::Malformed { why, bytes });
                        conn.close_after = true;
                        return;
                    }
                },
                BodyKind::None | BodyKind::UntilClose => 0,
            };
            let Some(mut pending) = conn.pending.take() else {
                return;
            };
            let body: Vec<u8> = conn.input.drain(..body_len).collect();
            if pending.answered {
                continue;
            }
            pending.request.body = body;
            let connect = pending.request.method == "CONNECT";
            let head_request = pending.request.method == "HEAD";
            let seq = self.record(conn.id, UpEvent::Request(pending.request));
            if connect {
                conn.output.extend(
                    format!("HTTP/1.1 200 Connection established\r\nX-Fuzz-Up: {seq}\r\n\r\n")
                        .bytes(),
                );
                conn.tunnel = true;
                continue;
            }
            if pending.upgrade && self.script == UpstreamScript::Upgrade {
                conn.output.extend(
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\
                         Upgrade: fuzz\r\nX-Fuzz-Up: {seq}\r\n\r\n"
                    )
                    .bytes(),
                );
                conn.tunnel = true;
                continue;
            }
            let (response, close) = scripted_response(self.script, seq, head_request);
            conn.output.extend(response);
            conn.close_after |= close;
            if self.script == UpstreamScript::TrailingJunk {
                conn.junked = true;
            }
        }
    }
}

/// The response the script gives to request `seq`, and whether the upstream closes after it.
fn scripted_response(script: UpstreamScript, seq: u64, head_request: bool) -> (Vec<u8>, bool) {
    let body = format!("up{seq}\n");
    let body_if = |b: &str| {
        if head_request {
            String::new()
        } else {
            b.to_owned()
        }
    };
    let length = |extra: &str, version: &str| {
        format!(
            "HTTP/1.{version} 200 OK\r\nContent-Length: {}\r\nX-Fuzz-Up: {seq}\r\n{extra}\r\n{}",
            body.len(),
            body_if(&body)
        )
    };
    let (text, close) = match script {
        UpstreamScript::Length
        | UpstreamScript::Upgrade
        | UpstreamScript::Early
        | UpstreamScript::Trickle => (length("", "1"), false),
        UpstreamScript::Chunked => {
            let (a, b) = body.split_at(2);
            let chunks = format!(
                "{:x}\r\n{a}\r\n{:x};fuzz=1\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n",
                a.len(),
                b.len()
            );
            (
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Fuzz-Up: {seq}\r\n\r\n{}",
                    body_if(&chunks)
                ),
                false,
            )
        }
        // A response to HEAD has no body to delimit by closing: a server that then closes
        // says so (RFC 9112 §9.6); closing without a word is `SilentClose`'s part.
        UpstreamScript::UntilClose => (
            format!(
                "HTTP/1.1 200 OK\r\nX-Fuzz-Up: {seq}\r\n{}\r\n{}",
                if head_request {
                    "Connection: close\r\n"
                } else {
                    ""
                },
                body_if(&body)
            ),
            true,
        ),
        UpstreamScript::CloseAfter => (length("Connection: close\r\n", "1"), true),
        UpstreamScript::SilentClose => (length("", "1"), true),
        UpstreamScript::Interim => (
            format!(
                "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n{}",
                length("", "1")
            ),
            false,
        ),
        UpstreamScript::NoContent => (
            format!("HTTP/1.1 204 No Content\r\nX-Fuzz-Up: {seq}\r\n\r\n"),
            false,
        ),
        UpstreamScript::Http10 => (length("", "0"), true),
        UpstreamScript::TrailingJunk => (format!("{}JUNK\r\n\r\n", length("", "1")), false),
    };
    (text.into_bytes(), close)
}

/// A request head as a strict origin server reads it (httparse's defaults, no bare LF, one
/// Host, RFC 9112 framing): the request (body still empty), the head's length, and whether it
/// asks to upgrade. `Ok(None)`: incomplete.
fn parse_upstream_head(input: &[u8]) -> Result<Option<(UpRequest, usize, bool)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > 256 * 1024 => {
            return Err("a head longer than 256 KiB".into());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("head: {e}")),
    };
    if input[..head_len]
        .windows(2)
        .any(|w| w[1] == b'\n' && w[0] != b'\r')
        || input.first() == Some(&b'\n')
    {
        return Err("a bare LF in the head".into());
    }
    let method = request.method.unwrap_or("").to_owned();
    let target = request.path.unwrap_or("").to_owned();
    let headers: &[httparse::Header<'_>] = request.headers;
    let field = |name: &'static str| {
        headers
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    };
    let hosts: Vec<&[u8]> = field("host").collect();
    if hosts.len() > 1 {
        return Err("more than one Host".into());
    }
    let lengths: Vec<&[u8]> = field("content-length").collect();
    let codings: Vec<&[u8]> = field("transfer-encoding").flat_map(list_elements).collect();
    let upgrade = field("upgrade").next().is_some();
    let framing = if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err("both Content-Length and Transfer-Encoding".into());
        }
        let chunked = codings
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
            .count();
        if chunked != 1
            || !codings
                .last()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        {
            return Err("a Transfer-Encoding that does not end in one chunked".into());
        }
        BodyKind::Chunked
    } else if let Some(value) = lengths.first() {
        if lengths.len() > 1 {
            return Err("more than one Content-Length field".into());
        }
        let n = std::str::from_utf8(value)
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("an invalid Content-Length")?;
        BodyKind::Length(n)
    } else {
        BodyKind::None
    };
    let up = UpRequest {
        method,
        target,
        host: hosts.first().map(|h| h.to_vec()),
        marker: field("x-fuzz-conn").next().map(<[u8]>::to_vec),
        framing,
        body: Vec::new(),
        early: false,
        fields: headers
            .iter()
            .map(|f| (f.name.to_ascii_lowercase(), f.value.to_vec()))
            .collect(),
    };
    Ok(Some((up, head_len, upgrade)))
}

/// Nothing may reach the upstream between scenarios.
fn check_no_stale(records: &[UpRecord]) {
    for record in records {
        assert!(
            matches!(record.event, UpEvent::Truncated { .. }),
            "the upstream received something between two client connections: {record:?}"
        );
    }
}

/// The checks of [`run_conn_scenario`] on what one connection did.
fn check_conn(
    scenario: &ConnScenario,
    model: &ClientModel,
    view: &ClientView,
    records: &[UpRecord],
    received: &[u8],
    waited: bool,
) {
    let context = || {
        format!(
            "\n--- scenario (canonical form):\n{}--- client received:\n{}\n--- upstream saw:\n{records:#?}",
            scenario.to_text(),
            escape(received),
        )
    };
    if let Some(error) = &view.error {
        panic!(
            "the client cannot read what the proxy sent: {error}{}",
            context()
        );
    }
    if waited {
        panic!(
            "the proxy stalled: {STALL_LIMIT:?} after the last write the client still lacks \
             what its requests call for ({} final responses for {} complete requests, tail \
             {:?}, tunnel {:?}){}",
            view.finals.len(),
            model.complete_requests(),
            model.tail,
            view.tunnel.as_ref().map(Vec::len),
            context()
        );
    }
    // Upstream requests are, in order, a subsequence of the client's requests.
    let mut next = 0;
    let mut matched: Vec<(u64, usize)> = Vec::new();
    for record in records {
        let request = match &record.event {
            UpEvent::Request(request) => request,
            UpEvent::Malformed { why, bytes } => panic!(
                "the proxy sent the upstream bytes a strict server cannot read ({why}): {}{}",
                escape(bytes),
                context()
            ),
            UpEvent::Truncated { .. } => continue,
        };
        // A marker is checked as part of the request: one from another connection (or none the
        // client sent) matches no request of this one.
        let found = (next..model.requests.len()).find(|&i| {
            let expected = &model.requests[i];
            matches!(expected.fate, Fate::Upstream | Fate::Tunnel)
                && same_request(expected, request)
        });
        let Some(i) = found else {
            panic!(
                "the upstream received a request the client did not send at that point \
                 (record {}, model requests from #{next} on):\n{request:#?}\nclient requests: {:#?}{}",
                record.seq,
                model.requests,
                context()
            );
        };
        if let Some(problem) = forwarded_fields_problem(&model.requests[i], request) {
            panic!(
                "request #{i} reached the upstream with {problem}:\n{request:#?}{}",
                context()
            );
        }
        matched.push((record.seq, i));
        next = i + 1;
    }
    // Each upstream response answers the request at its position.
    for response in &view.finals {
        let Some(seq) = response.up_seq else {
            continue;
        };
        match matched.iter().find(|(s, _)| *s == seq) {
            Some(&(_, i)) => assert_eq!(
                i,
                response.index,
                "response #{} answers request #{i}{}",
                response.index,
                context()
            ),
            None => panic!(
                "the client got the upstream's response {seq}, which answers no request of this \
                 connection{}",
                context()
            ),
        }
    }
    // A client that asked to close is told the connection closes (RFC 9112 §9.6).
    for response in &view.finals {
        let Some(request) = model.requests.get(response.index) else {
            continue;
        };
        let opens_tunnel = response.status == 101
            || (request.method == Method::Connect && (200..300).contains(&response.status));
        if !request.keep_alive && !opens_tunnel {
            assert!(
                response.close,
                "response #{} to a request that asked to close lacks Connection: close{}",
                response.index,
                context()
            );
        }
    }
    // Through a tunnel, the echo is exactly the payload.
    if view.echoing
        && let Some(echo) = &view.tunnel
    {
        assert!(
            model.tunnel_after.starts_with(echo),
            "the tunnel echo differs from what the client sent{}",
            context()
        );
        if !waited {
            assert_eq!(
                echo.len(),
                model.tunnel_after.len(),
                "the tunnel lost bytes{}",
                context()
            );
        }
    }
}

/// The upstream request is the client's request as the proxy forwards it.
fn same_request(expected: &ModelRequest, got: &UpRequest) -> bool {
    if expected.method_token != got.method.as_bytes() {
        return false;
    }
    if expected.method == Method::Connect {
        let want = expected
            .authority
            .as_deref()
            .and_then(route::split_authority);
        return want.is_some() && route::split_authority(&got.target) == want;
    }
    // Origin-form, or absolute-form to the upstream as a proxy.
    let target = got.target.as_bytes();
    let path: &[u8] = match target.strip_prefix(b"http://") {
        Some(rest) => {
            let end = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            if expected.authority.as_deref().map(str::as_bytes) != Some(&rest[..end]) {
                return false;
            }
            match &rest[end..] {
                b"" if expected.form == TargetForm::Asterisk => b"*",
                p => p,
            }
        }
        None => target,
    };
    if path != expected.path.as_slice() {
        return false;
    }
    if got.host.as_deref() != expected.authority.as_deref().map(str::as_bytes) {
        return false;
    }
    if got.framing != expected.body_kind {
        return false;
    }
    // The marker may be dropped (a Connection option can name it), never changed.
    if got.marker.is_some() && got.marker != expected.marker {
        return false;
    }
    if got.early {
        return true; // answered before its body; the body is read and dropped
    }
    // A body the client did not finish cannot have reached the upstream whole.
    expected.body.as_ref() == Some(&got.body)
}

/// Bytes shown as escaped text in failure messages.
struct Shown<'a>(&'a [u8]);

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", escape(self.0))
    }
}

impl std::fmt::Debug for ModelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRequest")
            .field("method", &Shown(&self.method_token))
            .field("form", &self.form)
            .field("path", &Shown(&self.path))
            .field("authority", &self.authority)
            .field("body_kind", &self.body_kind)
            .field("body", &self.body.as_deref().map(Shown))
            .field("marker", &self.marker.as_deref().map(Shown))
            .field("fate", &self.fate)
            .finish()
    }
}

impl std::fmt::Debug for UpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpRequest")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("host", &self.host.as_deref().map(Shown))
            .field("marker", &self.marker.as_deref().map(Shown))
            .field("framing", &self.framing)
            .field("body", &Shown(&self.body))
            .field("early", &self.early)
            .field(
                "fields",
                &self
                    .fields
                    .iter()
                    .map(|(n, v)| format!("{n}: {}", escape(v)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl std::fmt::Debug for UpEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpEvent::Request(r) => r.fmt(f),
            UpEvent::Malformed { why, bytes } => f
                .debug_struct("Malformed")
                .field("why", why)
                .field("bytes", &Shown(bytes))
                .finish(),
            UpEvent::Truncated { bytes } => f
                .debug_struct("Truncated")
                .field("bytes", &Shown(bytes))
                .finish(),
        }
    }
}
