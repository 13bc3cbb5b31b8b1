//! Request smuggling defences and head limits, end to end, on both the forward and the reverse
//! listener: every malformed or oversized request gets its error status with a readable body,
//! the connection is closed, and not one byte of it (or of what follows it) reaches the backend.
//!
//! "Nothing reached the backend" is proven positively: after each rejected request a canary
//! request goes through the same listener, and the first connection the backend accepts must
//! carry the canary. A forwarded malformed request would have opened its upstream connection
//! earlier (the proxy answered it before the canary was sent) and be accepted first.

mod common;

use common::*;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A Watchtower with one route, `app.example.test`, to a scripted backend.
struct Rig {
    w: Watchtower,
    backend: RawBackend,
}

/// One listener to attack: its address and the prefix that makes an origin-form path into the
/// request-target this listener expects (absolute-form on the forward proxy).
#[derive(Clone, Copy)]
struct Listener {
    name: &'static str,
    addr: SocketAddr,
    prefix: &'static str,
}

impl Rig {
    fn start() -> Rig {
        let backend = RawBackend::start();
        let w = Watchtower::with_routes(route("app", "app.example.test", backend.port()));
        Rig { w, backend }
    }

    fn listeners(&self) -> [Listener; 2] {
        [
            Listener {
                name: "forward",
                addr: self.w.proxy,
                prefix: "http://app.example.test",
            },
            Listener {
                name: "reverse",
                addr: self.w.reverse.unwrap(),
                prefix: "",
            },
        ]
    }

    /// Sends `request` (with `{T}` replaced by the listener's target prefix) and asserts the
    /// answer is `status` with a body mentioning one of `words`, that the connection is then
    /// closed, and that nothing reached the backend.
    fn expect_rejected(&self, l: Listener, case: &str, request: &str, status: u16, words: &[&str]) {
        let bytes = request.replace("{T}", l.prefix).into_bytes();
        self.expect_rejected_bytes(l, case, &bytes, status, words);
    }

    fn expect_rejected_bytes(
        &self,
        l: Listener,
        case: &str,
        bytes: &[u8],
        status: u16,
        words: &[&str],
    ) {
        let ctx = format!("[{} listener, case {case}]", l.name);
        let mut s = connect(l.addr);
        // The proxy may answer and close before it has read everything; the answer must
        // still arrive, so a failed write is not an error here.
        let _ = s.write_all(bytes);
        let mut r = BufReader::new(s.try_clone().unwrap());
        let resp = read_response_for(&mut r, "POST")
            .unwrap_or_else(|e| panic!("{ctx}: no {status} answer: {e}"));
        assert_eq!(
            resp.status,
            status,
            "{ctx}: status; body {:?}",
            resp.body_text()
        );
        let body = resp.body_text().to_ascii_lowercase();
        assert!(
            !body.trim().is_empty(),
            "{ctx}: the {status} has an empty body"
        );
        assert!(
            words.iter().any(|w| body.contains(&w.to_ascii_lowercase())),
            "{ctx}: the body {body:?} mentions none of {words:?}"
        );
        assert_closed(&mut r, &ctx);
        self.canary(l, &ctx);
    }

    /// Sends `request` (with `{T}` replaced by the listener's target prefix) through `l`;
    /// returns the client connection, the backend connection it opened, and the head the
    /// backend read from it.
    fn forward(&self, l: Listener, request: &str) -> (TcpStream, TcpStream, String) {
        let mut s = connect(l.addr);
        s.write_all(request.replace("{T}", l.prefix).as_bytes())
            .unwrap();
        let mut b = self.backend.accept();
        let head = read_raw_head(&mut b);
        (s, b, head)
    }

    /// A well-formed request through `l` must be the first thing the backend receives.
    fn canary(&self, l: Listener, ctx: &str) {
        let (s, b, head) = self.forward(
            l,
            "GET {T}/canary HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
        );
        assert!(
            head.starts_with("GET /canary HTTP/1.1\r\n"),
            "{ctx}: the backend's first request after the rejected one was not the canary:\n{head}"
        );
        let resp = answer_last(
            b,
            s,
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary",
        );
        assert_eq!(
            (resp.status, resp.body_text().as_str()),
            (200, "canary"),
            "{ctx}"
        );
    }

    /// After a test's cases: no stray connection shows up late either.
    fn assert_backend_quiet(&self) {
        assert!(
            self.backend
                .no_connection_within(Duration::from_millis(200)),
            "the backend got a connection nobody asked for"
        );
    }
}

/// The backend connection `b` sends `response` and closes; returns the response as the client
/// reads it on `s`.
fn answer_last(mut b: TcpStream, s: TcpStream, response: &[u8]) -> Response {
    b.write_all(response).unwrap();
    drop(b);
    read_response(&mut BufReader::new(s)).unwrap()
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: app.example.test\r\n\r\n";

#[test]
fn content_length_with_transfer_encoding_is_rejected() {
    let rig = Rig::start();
    let cases = [
        (
            "CL then TE",
            format!(
                "POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 6\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "TE then CL",
            format!(
                "POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: 60\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "CL 0 with TE",
            format!(
                "POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 0\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
    ];
    for l in rig.listeners() {
        for (case, req) in &cases {
            rig.expect_rejected(l, case, req, 400, &["Content-Length", "Transfer-Encoding"]);
        }
    }
    rig.assert_backend_quiet();
}

#[test]
fn conflicting_content_lengths_are_rejected() {
    let rig = Rig::start();
    let cases = [
        (
            "two headers",
            format!(
                "POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 5\r\n\
                 Content-Length: 6\r\n\r\nhello!{SMUGGLED}"
            ),
        ),
        (
            "one list",
            format!(
                "POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 5, 6\r\n\r\n\
                 hello!{SMUGGLED}"
            ),
        ),
        (
            "not a number",
            format!(
                "POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 5x\r\n\r\n\
                 hello{SMUGGLED}"
            ),
        ),
        (
            "negative",
            format!(
                "POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: -1\r\n\r\n\
                 {SMUGGLED}"
            ),
        ),
    ];
    for l in rig.listeners() {
        for (case, req) in &cases {
            rig.expect_rejected(l, case, req, 400, &["Content-Length"]);
        }
    }
    rig.assert_backend_quiet();
}

#[test]
fn identical_repeated_content_lengths_are_forwarded_once() {
    // RFC 9110 §8.6: a recipient either rejects repeated identical Content-Length values or
    // replaces them with one field before forwarding. Watchtower accepts them, so the upstream
    // must see exactly one `Content-Length: 5`.
    let rig = Rig::start();
    let mut wrong = Vec::new();
    for l in rig.listeners() {
        for (case, headers) in [
            ("two headers", "Content-Length: 5\r\nContent-Length: 5\r\n"),
            ("one list", "Content-Length: 5, 5\r\n"),
        ] {
            let ctx = format!("[{} listener, {case}]", l.name);
            let (s, mut b, head) = rig.forward(
                l,
                &format!("POST {{T}}/up HTTP/1.1\r\nHost: app.example.test\r\n{headers}\r\nhello"),
            );
            assert!(head.starts_with("POST /up HTTP/1.1\r\n"), "{ctx}: {head}");
            let lengths: Vec<&str> = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim())
                .collect();
            if lengths != ["5"] {
                wrong.push(format!("{ctx}: upstream Content-Length fields {lengths:?}"));
            }
            let mut body = [0u8; 5];
            b.read_exact(&mut body).unwrap();
            assert_eq!(&body, b"hello", "{ctx}");
            let resp = answer_last(
                b,
                s,
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
            assert_eq!(
                (resp.status, resp.body_text().as_str()),
                (201, "ok"),
                "{ctx}"
            );
        }
    }
    rig.assert_backend_quiet();
    assert!(
        wrong.is_empty(),
        "want exactly one Content-Length upstream:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn transfer_encodings_other_than_final_chunked_are_rejected() {
    let rig = Rig::start();
    let body = format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    let cases = [
        ("gzip", "Transfer-Encoding: gzip\r\n"),
        ("chunked, gzip", "Transfer-Encoding: chunked, gzip\r\n"),
        ("identity", "Transfer-Encoding: identity\r\n"),
        ("xchunked", "Transfer-Encoding: xchunked\r\n"),
        (
            "chunked then a second TE header",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
    ];
    for l in rig.listeners() {
        for (case, te) in cases {
            let req = format!("POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\n{te}\r\n{body}");
            rig.expect_rejected(l, case, &req, 400, &["Transfer-Encoding"]);
        }
    }
    rig.assert_backend_quiet();
}

#[test]
fn malformed_heads_are_rejected() {
    let rig = Rig::start();
    let cases: [(&str, String, &[&str]); 9] = [
        (
            "bare LF everywhere",
            format!("GET {{T}}/ HTTP/1.1\nHost: app.example.test\n\n{SMUGGLED}"),
            &["LF", "line"],
        ),
        (
            "one bare LF",
            format!("GET {{T}}/ HTTP/1.1\r\nHost: app.example.test\nX-A: 1\r\n\r\n{SMUGGLED}"),
            &["LF", "line"],
        ),
        (
            "obs-fold with a space",
            format!(
                "GET {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nX-A: a\r\n b\r\n\r\n{SMUGGLED}"
            ),
            &["fold", "header", "continuation"],
        ),
        (
            "obs-fold with a tab",
            format!(
                "GET {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nX-A: a\r\n\tb\r\n\r\n{SMUGGLED}"
            ),
            &["fold", "header", "continuation"],
        ),
        (
            "space before the colon",
            format!("GET {{T}}/ HTTP/1.1\r\nHost : app.example.test\r\n\r\n{SMUGGLED}"),
            &["header", "colon", "whitespace"],
        ),
        (
            "space before the colon of Transfer-Encoding",
            format!(
                "POST {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 5\r\n\
                 Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
            &["header", "colon", "whitespace"],
        ),
        (
            "HTTP/0.9 request line",
            format!("GET {{T}}/\r\n\r\n{SMUGGLED}"),
            &["request line", "version"],
        ),
        (
            "garbage version",
            format!("GET {{T}}/ HTTP/one\r\nHost: app.example.test\r\n\r\n{SMUGGLED}"),
            &["request line", "version"],
        ),
        (
            "not HTTP at all",
            format!("GET {{T}}/ FOO/1.1\r\nHost: app.example.test\r\n\r\n{SMUGGLED}"),
            &["request line", "version"],
        ),
    ];
    for l in rig.listeners() {
        for (case, req, words) in &cases {
            rig.expect_rejected(l, case, req, 400, words);
        }
    }
    rig.assert_backend_quiet();
}

#[test]
fn oversized_heads_and_targets_are_rejected() {
    let rig = Rig::start();
    let big_value = "a".repeat(70 * 1024);
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_path = "a".repeat(9 * 1024);
    let cases = [
        (
            "head over 64 KiB",
            format!("GET {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nX-Big: {big_value}\r\n\r\n"),
            431,
            &["large", "KiB", "header"][..],
        ),
        (
            "over 100 header fields",
            format!("GET {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\n{many}\r\n"),
            431,
            &["header"][..],
        ),
        (
            "request-target over 8 KiB",
            format!("GET {{T}}/{long_path} HTTP/1.1\r\nHost: app.example.test\r\n\r\n"),
            414,
            &["target", "URI", "URL", "long"][..],
        ),
    ];
    for l in rig.listeners() {
        for (case, req, status, words) in &cases {
            rig.expect_rejected(l, case, req, *status, words);
        }
    }
    rig.assert_backend_quiet();
}

#[test]
fn heads_just_inside_the_limits_are_forwarded() {
    let rig = Rig::start();
    // Host plus 99 more fields = 100 fields; a 60 KiB field; an 8000-byte target.
    let ninety_nine: String = (0..99).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_value = "b".repeat(60 * 1024);
    let long_path = format!("/{}", "p".repeat(7999));
    for l in rig.listeners() {
        for (case, path, extra) in [
            (
                "100 header fields",
                "/many".to_string(),
                ninety_nine.clone(),
            ),
            (
                "a 60 KiB field",
                "/big".to_string(),
                format!("X-Big: {big_value}\r\n"),
            ),
            ("an 8000-byte target", long_path.clone(), String::new()),
        ] {
            let ctx = format!("[{} listener, {case}]", l.name);
            let (s, b, head) = rig.forward(
                l,
                &format!("GET {{T}}{path} HTTP/1.1\r\nHost: app.example.test\r\n{extra}\r\n"),
            );
            assert!(
                head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
                "{ctx}: {}",
                &head[..head.len().min(200)]
            );
            assert!(head.contains(&extra), "{ctx}: the fields arrive intact");
            let resp = answer_last(
                b,
                s,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
            assert_eq!(resp.status, 200, "{ctx}: {}", resp.body_text());
        }
    }
    rig.assert_backend_quiet();
}

/// Reads from a backend connection until EOF; a timeout is a failure (the proxy must abandon
/// an upstream request whose body it cannot finish).
fn read_upstream_to_eof(b: &mut TcpStream, ctx: &str) -> Vec<u8> {
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match b.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "{ctx}: the upstream connection stayed open after the bad chunk ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Decodes the chunked body the backend got, up to wherever it stops; returns the payload.
fn dechunk_prefix(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..pos])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap().trim(), 16).ok());
        let Some(size) = size else { break };
        let data = &body[pos + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        body = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

#[test]
fn invalid_chunk_framing_stops_the_request_and_nothing_after_it_is_forwarded() {
    let rig = Rig::start();
    let cases = [
        ("chunk size not hex", "zz\r\n"),
        ("chunk size overflows", "fffffffffffffffffffff\r\nx\r\n"),
        ("chunk data not followed by CRLF", "3\r\nabcXY0\r\n\r\n"),
        ("negative chunk size", "-1\r\n"),
    ];
    for l in rig.listeners() {
        for (case, bad) in cases {
            let ctx = format!("[{} listener, {case}]", l.name);
            let mut s = connect(l.addr);
            let req = format!(
                "POST {}/upload HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n{bad}{SMUGGLED}",
                l.prefix
            );
            let _ = s.write_all(req.as_bytes());
            let mut b = rig.backend.accept();
            // When the bad chunk arrives with the head, the proxy sees it before forwarding
            // anything and the upstream gets nothing at all; otherwise it got the head (and
            // at most the valid chunk) before the request was abandoned.
            let head = read_raw_head(&mut b);
            assert!(
                head.is_empty() || head.starts_with("POST /upload HTTP/1.1\r\n"),
                "{ctx}: {head}"
            );
            // The client hears first: 400 (no response has started) or a plain close.
            let mut r = BufReader::new(s.try_clone().unwrap());
            match read_response(&mut r) {
                Ok(resp) => {
                    assert_eq!(resp.status, 400, "{ctx}: {}", resp.body_text());
                    assert!(!resp.body.is_empty(), "{ctx}: empty 400 body");
                    assert_closed(&mut r, &ctx);
                }
                Err(e) => assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                    ),
                    "{ctx}: neither a 400 nor a close: {e}"
                ),
            }
            let body = read_upstream_to_eof(&mut b, &ctx);
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains("smuggled"),
                "{ctx}: smuggled request forwarded: {text:?}"
            );
            assert!(
                !text.contains("XY") && !text.contains("zz"),
                "{ctx}: bad chunk forwarded: {text:?}"
            );
            let payload = dechunk_prefix(&body);
            assert!(
                payload.is_empty() || payload == b"hello",
                "{ctx}: the upstream got {text:?}"
            );
            rig.canary(l, &ctx);
        }
    }
    rig.assert_backend_quiet();
}

#[test]
fn a_malformed_request_after_a_good_one_on_a_kept_alive_connection_is_not_forwarded() {
    for listener in 0..2 {
        // A fresh proxy per listener, so no pooled upstream connection is shared.
        let rig = Rig::start();
        let l = rig.listeners()[listener];
        let ctx = format!("[{} listener]", l.name);
        let req = format!(
            "GET {{T}}/first HTTP/1.1\r\nHost: app.example.test\r\n\r\n\
             POST {{T}}/second HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 40\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
        );
        let (s, mut b, head) = rig.forward(l, &req);
        assert!(head.starts_with("GET /first HTTP/1.1\r\n"), "{ctx}: {head}");
        b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let first = read_response(&mut r).unwrap();
        assert_eq!(
            (first.status, first.body_text().as_str()),
            (200, "first"),
            "{ctx}"
        );
        let second = read_response(&mut r).unwrap();
        assert_eq!(second.status, 400, "{ctx}: {}", second.body_text());
        assert_closed(&mut r, &ctx);
        // The 400 proves the proxy has dealt with the second request: from here on the
        // kept-alive upstream connection carries nothing (EOF or silence), and no new one opens.
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut extra = [0u8; 256];
        match b.read(&mut extra) {
            Ok(0) => {}
            Ok(n) => panic!(
                "{ctx}: forwarded after the malformed request: {:?}",
                String::from_utf8_lossy(&extra[..n])
            ),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionReset
                ),
                "{ctx}: {e}"
            ),
        }
        rig.assert_backend_quiet();
    }
}

#[test]
fn a_bad_chunk_after_the_head_was_forwarded_abandons_the_upstream_request() {
    let raw = RawBackend::start();
    let w = Watchtower::with_routes(route("web", "app.example.test", raw.port()));
    let mut s = w.connect_reverse();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    let mut b = raw.accept();
    let head = read_raw_head(&mut b);
    assert!(head.starts_with("POST /upload HTTP/1.1\r\n"), "{head}");
    let mut valid = [0u8; 10];
    b.read_exact(&mut valid).unwrap();
    assert_eq!(&valid, b"5\r\nhello\r\n");
    // Only now the bad chunk, and a request smuggled behind it.
    s.write_all(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut BufReader::new(s.try_clone().unwrap())).unwrap();
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    let rest = read_upstream_to_eof(&mut b, "bad chunk after the head");
    assert!(
        rest.is_empty(),
        "forwarded after the bad chunk: {:?}",
        String::from_utf8_lossy(&rest)
    );
}
