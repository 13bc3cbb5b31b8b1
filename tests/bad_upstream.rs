//! Responses from a misbehaving upstream, end to end, on both the forward and the reverse
//! listener, as a catalogue: each row is a scripted raw response (bad status lines, framing
//! conflicts, bodies longer or shorter than framed, early closes, interim responses, bodiless
//! statuses with bodies) and what the client must see.
//!
//! - `Answered(status)`: nothing had been sent to the client yet, so Watchtower answers itself
//!   (502, or 504 for a silent upstream) with a readable body.
//! - `Relayed`: the response is usable and reaches the client, normalised (interim responses
//!   first, then the final one with exactly the body its framing says).
//! - `Truncated`: the head was relayed before the upstream broke its framing; the client gets
//!   the head, the bytes before the break, then a clean close: no hang, no made-up ending.
//!
//! Whatever the row, the client connection is never desynchronised: if it is still open, a
//! second request on it must get its own real answer from a new upstream connection (the one
//! that misbehaved must be closed, never reused), and if it is closed it is closed cleanly.
//! Every row's exchange must also be in the API log with its status (and an error for the
//! failures).

mod common;

use common::catalogue::{CatalogueRig, panic_text, run_catalogue};
use common::*;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;
use std::time::{Duration, Instant};

/// The `upstream_header` timeout of the rig, for the silent-upstream row.
const UPSTREAM_HEADER_SECS: f64 = 1.5;

/// What the upstream does once it has read the request head.
struct Script {
    /// Written at once.
    first: Vec<u8>,
    /// Written once the client has read what it could of `first`.
    then: Option<Vec<u8>>,
    /// Close the connection after writing (else it stays open: the proxy must close it).
    close: bool,
}

/// What the client must see.
enum Want {
    /// Watchtower's own answer with this status; the body mentions one of the words.
    Answered(u16, &'static [&'static str]),
    Relayed(Relayed),
    /// The head with this status, then exactly `partial` of the body, then a clean close.
    Truncated {
        status: u16,
        partial: &'static str,
    },
}

struct Relayed {
    /// Interim (1xx) responses before the final one.
    interim: &'static [u16],
    status: u16,
    body: &'static str,
    /// `(name, Some(value))`: the field has this value; `(name, None)`: it is absent.
    fields: &'static [(&'static str, Option<&'static str>)],
    /// The client connection is closed after this response (a close-delimited body).
    close: bool,
    /// The response was well framed and kept-alive: the proxy may send the next request on
    /// the same upstream connection (otherwise it must not).
    reusable: bool,
}

const fn relayed(status: u16, body: &'static str) -> Relayed {
    Relayed {
        interim: &[],
        status,
        body,
        fields: &[],
        close: false,
        reusable: false,
    }
}

/// A well-framed keep-alive response: the upstream connection may carry the next request.
const fn reusable(status: u16, body: &'static str) -> Relayed {
    Relayed {
        reusable: true,
        ..relayed(status, body)
    }
}

struct Row {
    name: &'static str,
    method: &'static str,
    script: Script,
    want: Want,
}

fn row(name: &'static str, response: &[u8], close: bool, want: Want) -> Row {
    Row {
        name,
        method: "GET",
        script: Script {
            first: response.to_vec(),
            then: None,
            close,
        },
        want,
    }
}

/// The upstream sends `response` and keeps the connection open.
fn open(name: &'static str, response: &[u8], want: Want) -> Row {
    row(name, response, false, want)
}

/// The upstream sends `response` and closes.
fn closing(name: &'static str, response: &[u8], want: Want) -> Row {
    row(name, response, true, want)
}

const BAD: Want = Want::Answered(502, &["malformed", "invalid", "upstream"]);
const CLOSED_EARLY: Want = Want::Answered(502, &["closed"]);

fn rows() -> Vec<Row> {
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let too_many = format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 2\r\n\r\nok");
    let huge = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "b".repeat(70 * 1024)
    );
    vec![
        open("status line that is not HTTP", b"hello world\r\n\r\n", BAD),
        open(
            "status code not a number",
            b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "status code of two digits",
            b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "status code 099",
            b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "status code 600",
            b"HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "status code 999",
            b"HTTP/1.1 999 High\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "HTTP/2.0 status line",
            b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "missing reason phrase",
            b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
            Want::Relayed(reusable(200, "ok")),
        ),
        open(
            "HTTP/1.0 response with Content-Length",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Want::Relayed(relayed(200, "ok")),
        ),
        closing(
            "HTTP/1.0 response delimited by close",
            b"HTTP/1.0 200 OK\r\n\r\nuntil close",
            Want::Relayed(Relayed {
                close: true,
                ..relayed(200, "until close")
            }),
        ),
        open(
            "obs-fold in a response field",
            b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
            Want::Relayed(Relayed {
                fields: &[("x-a", Some("a b"))],
                ..reusable(200, "ok")
            }),
        ),
        open(
            "NUL in a response field value",
            b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "NUL in a response field name",
            b"HTTP/1.1 200 OK\r\nX\0A: a\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "bare CR in a response field value",
            b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: x=1\r\nContent-Length: 2\r\n\r\nok",
            BAD,
        ),
        open(
            "bare LF line endings",
            b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: 1\n\nok",
            Want::Relayed(Relayed {
                fields: &[("x-a", Some("1")), ("content-length", Some("2"))],
                ..reusable(200, "ok")
            }),
        ),
        open(
            "both Content-Length and Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
            Want::Relayed(Relayed {
                fields: &[
                    ("content-length", None),
                    ("transfer-encoding", Some("chunked")),
                ],
                ..relayed(200, "hello")
            }),
        ),
        open(
            "two different Content-Lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
            BAD,
        ),
        open(
            "Content-Length list of one value twice",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
            Want::Relayed(Relayed {
                fields: &[("content-length", Some("2"))],
                ..reusable(200, "ok")
            }),
        ),
        open(
            "Content-Length with a sign",
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            BAD,
        ),
        open(
            "body longer than Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\
              okHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
            Want::Relayed(relayed(200, "ok")),
        ),
        Row {
            name: "a response nobody asked for, after a complete one",
            method: "GET",
            script: Script {
                first: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                then: Some(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec()),
                close: false,
            },
            want: Want::Relayed(relayed(200, "ok")),
        },
        closing(
            "body shorter than Content-Length, then close",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            Want::Truncated {
                status: 200,
                partial: "short",
            },
        ),
        closing(
            "chunked body cut before the last chunk",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            Want::Truncated {
                status: 200,
                partial: "5\r\nhello\r\n",
            },
        ),
        open(
            "invalid chunk size arriving with the head",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            BAD,
        ),
        open(
            "chunk size overflow arriving with the head",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            BAD,
        ),
        Row {
            name: "invalid chunk after the head was relayed",
            method: "GET",
            script: Script {
                first: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                    .to_vec(),
                then: Some(
                    b"zz\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled".to_vec(),
                ),
                close: false,
            },
            want: Want::Truncated {
                status: 200,
                partial: "5\r\nhello\r\n",
            },
        },
        closing("close before any byte", b"", CLOSED_EARLY),
        closing("close in the status line", b"HTTP/1.", CLOSED_EARLY),
        closing(
            "close in the middle of the head",
            b"HTTP/1.1 200 OK\r\nContent-Le",
            CLOSED_EARLY,
        ),
        open(
            "100 Continue, then the response",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Want::Relayed(Relayed {
                interim: &[100],
                ..reusable(200, "ok")
            }),
        ),
        open(
            "103 Early Hints, then the response",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Want::Relayed(Relayed {
                interim: &[103],
                ..reusable(200, "ok")
            }),
        ),
        open(
            "100 and 103, then the response",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Want::Relayed(Relayed {
                interim: &[100, 103],
                ..reusable(200, "ok")
            }),
        ),
        open(
            "1xx with a Content-Length and a body",
            b"HTTP/1.1 103 Early Hints\r\nContent-Length: 4\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Want::Relayed(Relayed {
                interim: &[103],
                ..reusable(200, "ok")
            }),
        ),
        open(
            "101 without an upgrade request",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            Want::Answered(502, &["switched protocols"]),
        ),
        Row {
            name: "response to HEAD with a body",
            method: "HEAD",
            script: Script {
                first: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
                then: None,
                close: false,
            },
            want: Want::Relayed(Relayed {
                fields: &[("content-length", Some("5"))],
                ..relayed(200, "")
            }),
        },
        open(
            "204 with Content-Length and a body",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
            Want::Relayed(Relayed {
                fields: &[("content-length", None)],
                ..relayed(204, "")
            }),
        ),
        open(
            "204 with a chunked body",
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Want::Relayed(Relayed {
                fields: &[("transfer-encoding", None), ("content-length", None)],
                ..relayed(204, "")
            }),
        ),
        open(
            "304 with Content-Length and a body",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello",
            Want::Relayed(Relayed {
                fields: &[("content-length", Some("5"))],
                ..relayed(304, "")
            }),
        ),
        closing(
            "Transfer-Encoding without chunked (delimited by close)",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nraw bytes",
            Want::Relayed(Relayed {
                fields: &[
                    ("transfer-encoding", Some("gzip")),
                    ("content-length", None),
                ],
                close: true,
                ..relayed(200, "raw bytes")
            }),
        ),
        open("more than 100 response header fields", too_many.as_bytes(), BAD),
        open("response head over 64 KiB", huge.as_bytes(), BAD),
        open(
            "no response within upstream_header",
            b"",
            Want::Answered(504, &["did not respond"]),
        ),
    ]
}

/// A Watchtower with one route, `app.example.test`, to the scripted upstream.
struct Rig {
    w: Watchtower,
    up: RawBackend,
    /// API log records still to be checked: path, status, whether `error` must be set.
    logged: Vec<(String, u16, bool, String)>,
}

#[derive(Clone, Copy)]
struct Listener {
    name: &'static str,
    addr: SocketAddr,
    prefix: &'static str,
}

impl Rig {
    fn start() -> Rig {
        let up = RawBackend::start();
        let w = Watchtower::start(Opts {
            routes: route("app", "app.example.test", up.addr.port()),
            timeouts: format!("upstream_header = {UPSTREAM_HEADER_SECS}\n"),
            ..Opts::default()
        });
        Rig {
            w,
            up,
            logged: Vec::new(),
        }
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

    /// Runs one row on one listener; returns what the client saw, for the table.
    fn check(&mut self, l: Listener, row: &Row, index: usize, ctx: &str) -> String {
        let path = format!("/r{index}-{}", l.name);
        let mut s = connect(l.addr);
        write!(
            s,
            "{} {}{path} HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
            row.method, l.prefix
        )
        .unwrap();
        let mut b = self.up.accept_for(ctx);
        let head = read_raw_head(&mut b);
        assert!(
            head.starts_with(&format!("{} {path} HTTP/1.1\r\n", row.method)),
            "{ctx}: the upstream got {head:?}"
        );
        b.write_all(&row.script.first).unwrap();
        let mut old = Some(b);
        let then = |old: &mut Option<TcpStream>| {
            if let (Some(then), Some(b)) = (&row.script.then, old.as_mut()) {
                b.write_all(then).unwrap();
            }
            if row.script.close {
                *old = None;
            }
        };
        if row.script.then.is_none() {
            then(&mut old);
        }
        let mut r = BufReader::new(s.try_clone().unwrap());
        let may_reuse = matches!(&row.want, Want::Relayed(w) if w.reusable);
        let (outcome, open, status, failed) = match &row.want {
            Want::Answered(status, words) => {
                let resp = read_response_for(&mut r, row.method)
                    .unwrap_or_else(|e| panic!("{ctx}: no {status} answer: {e}"));
                let body = resp.body_text();
                assert_eq!(resp.status, *status, "{ctx}: status; body {body:?}");
                if row.method != "HEAD" {
                    let lower = body.to_ascii_lowercase();
                    assert!(
                        words
                            .iter()
                            .any(|w| lower.contains(&w.to_ascii_lowercase())),
                        "{ctx}: the body {body:?} mentions none of {words:?}"
                    );
                }
                let open = !is_close(&resp);
                (format!("{status} {}", body.trim()), open, *status, true)
            }
            Want::Relayed(want) => {
                for interim in want.interim {
                    let (got, _, fields) = read_head(&mut r)
                        .unwrap_or_else(|e| panic!("{ctx}: no {interim} response: {e}"));
                    assert_eq!(got, *interim, "{ctx}: the interim response");
                    assert!(
                        !fields
                            .iter()
                            .any(|(n, _)| n == "content-length" || n == "transfer-encoding"),
                        "{ctx}: a 1xx goes to the client without framing fields: {fields:?}"
                    );
                }
                let resp = read_response_for(&mut r, row.method)
                    .unwrap_or_else(|e| panic!("{ctx}: no response: {e}"));
                assert_eq!(
                    (resp.status, resp.body_text().as_str()),
                    (want.status, want.body),
                    "{ctx}: status and body"
                );
                for (name, value) in want.fields {
                    // Runs of spaces compare as one: an unfolded obs-fold may leave several.
                    let got = resp
                        .header(name)
                        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "));
                    assert_eq!(
                        got.as_deref(),
                        *value,
                        "{ctx}: field {name}; fields {:?}",
                        resp.headers
                    );
                }
                assert_eq!(
                    is_close(&resp),
                    want.close,
                    "{ctx}: Connection: close on the response; fields {:?}",
                    resp.headers
                );
                then(&mut old);
                let interim: String = want.interim.iter().map(|s| format!("{s}, ")).collect();
                (
                    format!("relayed {interim}{} {:?}", want.status, want.body),
                    !want.close,
                    want.status,
                    false,
                )
            }
            Want::Truncated { status, partial } => {
                let (got, _, _) =
                    read_head(&mut r).unwrap_or_else(|e| panic!("{ctx}: no response head: {e}"));
                assert_eq!(got, *status, "{ctx}: status");
                then(&mut old);
                let rest = read_to_clean_close(&mut r, ctx);
                assert_eq!(
                    String::from_utf8_lossy(&rest),
                    *partial,
                    "{ctx}: the body bytes before the close"
                );
                (
                    format!("{status} head, {partial:?}, then closed"),
                    false,
                    *status,
                    true,
                )
            }
        };
        if open {
            self.follow_up(l, ctx, index, &mut s, &mut r, &mut old, may_reuse);
        } else {
            assert_closed(&mut r, ctx);
        }
        // The connection that misbehaved (or said it would close) is never kept. One that may
        // be reused and was not stays parked in the proxy's pool: closing it here is the
        // upstream's right.
        if let Some(mut b) = old.filter(|_| !may_reuse) {
            let rest = read_upstream_to_eof(&mut b, ctx);
            assert!(
                rest.is_empty(),
                "{ctx}: the upstream got more: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
        self.logged.push((path, status, failed, ctx.to_string()));
        outcome
    }

    /// A second request on the same client connection gets its own answer, never the
    /// leftovers of the first response, from a new upstream connection: on `old` only when
    /// `may_reuse`.
    #[allow(clippy::too_many_arguments)]
    fn follow_up(
        &self,
        l: Listener,
        ctx: &str,
        index: usize,
        s: &mut TcpStream,
        r: &mut BufReader<TcpStream>,
        old: &mut Option<TcpStream>,
        may_reuse: bool,
    ) {
        let path = format!("/second{index}-{}", l.name);
        write!(
            s,
            "GET {}{path} HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
            l.prefix
        )
        .unwrap();
        let deadline = Instant::now() + WAIT;
        let mut b = loop {
            assert!(
                Instant::now() < deadline,
                "{ctx}: the second request never reached the upstream"
            );
            if let Some(b) = self.up.try_accept(Duration::from_millis(20)) {
                break b;
            }
            if let Some(o) = old.as_mut() {
                o.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                let mut buf = [0u8; 1];
                match o.peek(&mut buf) {
                    Ok(0) => *old = None,
                    Ok(_) if may_reuse => {
                        o.set_read_timeout(Some(WAIT)).unwrap();
                        break old.take().unwrap();
                    }
                    Ok(_) => panic!(
                        "{ctx}: the second request went out on the connection that misbehaved: {:?}",
                        String::from_utf8_lossy(&read_all(o))
                    ),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => *old = None,
                }
            }
        };
        let head = read_raw_head(&mut b);
        assert!(
            head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{ctx}: the second upstream connection got {head:?}"
        );
        b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecond")
            .unwrap();
        let resp = read_response(r)
            .unwrap_or_else(|e| panic!("{ctx}: no answer to the second request: {e}"));
        assert_eq!(
            (resp.status, resp.body_text().as_str()),
            (200, "second"),
            "{ctx}: the second request got someone else's answer"
        );
        let rest = read_upstream_to_eof(&mut b, ctx);
        assert!(rest.is_empty(), "{ctx}: more on the second connection");
    }

    /// Every exchange run on this rig is in the API log with its status, and the failures
    /// with an error.
    fn check_log(&self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut problems;
        loop {
            problems = Vec::new();
            let text = std::fs::read_to_string(self.w.api_log_path()).unwrap_or_default();
            let lines: Vec<_> = text.lines().map(json_fields).collect();
            for (path, status, failed, ctx) in &self.logged {
                let quoted = format!("\"{path}\"");
                let Some(f) = lines.iter().find(|f| f.get("path") == Some(&quoted)) else {
                    problems.push(format!("{ctx}: no API log line for {path}"));
                    continue;
                };
                if f.get("status") != Some(&status.to_string()) {
                    problems.push(format!("{ctx}: logged status {:?}", f.get("status")));
                }
                let error = f.get("error").map(String::as_str).unwrap_or("null");
                if *failed && error == "null" {
                    problems.push(format!("{ctx}: logged without an error: {f:?}"));
                }
            }
            if problems.is_empty() || Instant::now() >= deadline {
                return problems;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn is_close(resp: &Response) -> bool {
    resp.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// Reads the client side until EOF; a timeout (a hang) is a failure.
fn read_to_clean_close(r: &mut impl Read, ctx: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "{ctx}: the client connection was not closed ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Reads from an upstream connection until the proxy closes it; a timeout is a failure.
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
                "{ctx}: the proxy kept the upstream connection open ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

impl CatalogueRig for Rig {
    type Row = Row;
    fn start() -> Rig {
        Rig::start()
    }
    fn row_name(row: &Row) -> &str {
        row.name
    }
    fn run_row(&mut self, listener: usize, row: &Row, index: usize) -> String {
        // Looked up each time: a failed run restarts the rig on new ports.
        let l = self.listeners()[listener];
        let ctx = format!("[{} listener, row {:?}]", l.name, row.name);
        self.check(l, row, index, &ctx)
    }
    fn problems(&mut self, _at_end: bool) -> Vec<String> {
        self.check_log()
    }
}

#[test]
fn catalogue_of_misbehaving_upstreams() {
    let rows = rows();
    // Two halves on two rigs, so they run side by side.
    let (a, b) = rows.split_at(rows.len() / 2);
    thread::scope(|scope| {
        let first =
            scope.spawn(|| catch_unwind(AssertUnwindSafe(|| run_catalogue::<Rig>("first", a))));
        let second = catch_unwind(AssertUnwindSafe(|| run_catalogue::<Rig>("second", b)));
        let first = first.join().unwrap();
        let failed: Vec<String> = [first, second]
            .into_iter()
            .filter_map(|result| result.err().map(|panic| panic_text(&*panic)))
            .collect();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    });
}
