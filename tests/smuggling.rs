//! Request smuggling defences and head limits, end to end, on both the forward and the reverse
//! listener, as a catalogue: each row is a named raw request (`{T}` stands for the listener's
//! target prefix: absolute-form on the forward proxy, nothing on the reverse one) and what
//! Watchtower must do with it.
//!
//! - `Refused(status)`: refused from its head with that status and a readable body, the
//!   connection closed, and not one byte of it (or of what follows it) reaching the backend.
//! - `BadBody`: the head is fine but the chunked framing is not: 400, the connection closed,
//!   and the upstream got at most the head and the chunks before the bad one, then a close.
//! - `Forwarded`: legitimately accepted. The backend sees exactly one request, with the request
//!   line, framing fields and body bytes the row names, and nothing after that body.
//!
//! "Nothing (more) reached the backend" is proven positively with a canary: after each row a
//! well-formed request goes through the same listener (on the same client connection for a
//! forwarded row, which also proves the proxy's idea of where the request ended matches the
//! client's), and the first backend connection after the row's own must carry the canary. A
//! smuggled request would have opened its upstream connection earlier and be accepted first.
//!
//! A row that fails does not stop the others: the failure is recorded, the rig restarted, and
//! every failure reported at the end together with the table of outcomes (`--nocapture`
//! prints it).

mod common;

use common::catalogue::{CatalogueRig, run_catalogue};
use common::*;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A request the proxy must never forward on its own.
macro_rules! smuggled {
    () => {
        "GET /smuggled HTTP/1.1\r\nHost: app.example.test\r\n\r\n"
    };
}

/// The head of `POST {T}/up` with the given field lines after Host.
macro_rules! post {
    ($($field:expr),* $(,)?) => {
        concat!("POST {T}/up HTTP/1.1\r\nHost: app.example.test\r\n", $($field,)* "\r\n")
    };
}

/// A chunked `POST {T}/up` whose body is `5\r\nhello\r\n`, then `$rest`, then a smuggled request.
macro_rules! chunked_then {
    ($rest:expr) => {
        concat!(
            post!("Transfer-Encoding: chunked\r\n"),
            "5\r\nhello\r\n",
            $rest,
            smuggled!()
        )
    };
}

const SMUGGLED: &str = smuggled!();
const CANARY: &str = "GET {T}/canary HTTP/1.1\r\nHost: app.example.test\r\n\r\n";
/// The request line the upstream gets for the rows' `POST {T}/up`.
const UP_LINE: &str = "POST /up HTTP/1.1";

/// What Watchtower must do with a row's request.
enum Expect {
    /// Answered with this status from its head; the body mentions one of the words.
    Refused(u16, &'static [&'static str]),
    /// The chunked body is invalid: 400 (no response has started), nothing after it forwarded.
    BadBody,
    /// Forwarded as exactly one request.
    Forwarded(Fwd),
}

/// What the backend must see of a forwarded row.
struct Fwd {
    /// The request line.
    line: &'static str,
    /// The body bytes, exactly (chunked bodies are relayed raw).
    body: &'static str,
    /// Fields that must appear exactly once, with this value (case-insensitive).
    once: &'static [(&'static str, &'static str)],
    /// Fields that must not appear.
    absent: &'static [&'static str],
}

struct Row {
    name: &'static str,
    request: String,
    expect: Expect,
}

fn refused(
    name: &'static str,
    request: impl Into<String>,
    status: u16,
    words: &'static [&'static str],
) -> Row {
    Row {
        name,
        request: request.into(),
        expect: Expect::Refused(status, words),
    }
}

fn bad_body(name: &'static str, request: impl Into<String>) -> Row {
    Row {
        name,
        request: request.into(),
        expect: Expect::BadBody,
    }
}

fn forwarded(name: &'static str, request: impl Into<String>, fwd: Fwd) -> Row {
    Row {
        name,
        request: request.into(),
        expect: Expect::Forwarded(fwd),
    }
}

/// A chunked POST forwarded with `body` relayed raw under one `Transfer-Encoding: te`.
fn chunked_fwd(body: &'static str, te: &'static str) -> Fwd {
    let once: &'static [(&'static str, &'static str)] = match te {
        "chunked" => &[("Transfer-Encoding", "chunked")],
        "gzip, chunked" => &[("Transfer-Encoding", "gzip, chunked")],
        other => panic!("no field list for {other:?}"),
    };
    Fwd {
        line: UP_LINE,
        body,
        once,
        absent: &["Content-Length"],
    }
}

/// A POST forwarded with a 5-byte `hello` body under one `Content-Length: 5`.
const HELLO_BY_LENGTH: Fwd = Fwd {
    line: UP_LINE,
    body: "hello",
    once: &[("Content-Length", "5")],
    absent: &["Transfer-Encoding"],
};

const CL_TE: &[&str] = &["Content-Length", "Transfer-Encoding"];
const TE: &[&str] = &["Transfer-Encoding"];
const CL: &[&str] = &["Content-Length"];
const HEADER: &[&str] = &["header"];
const LINE: &[&str] = &["request line", "version"];

/// Content-Length / Transfer-Encoding conflicts and obfuscations (RFC 9112 §6).
fn framing_rows() -> Vec<Row> {
    let chunked_hello = "5\r\nhello\r\n0\r\n\r\n";
    vec![
        refused(
            "CL.TE: Content-Length then Transfer-Encoding",
            concat!(
                post!("Content-Length: 6\r\n", "Transfer-Encoding: chunked\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            CL_TE,
        ),
        refused(
            "TE.CL: Transfer-Encoding then Content-Length",
            concat!(
                post!("Transfer-Encoding: chunked\r\n", "Content-Length: 60\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            CL_TE,
        ),
        refused(
            "CL.TE with Content-Length: 0",
            concat!(
                post!("Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n"),
                "5\r\nhello\r\n0\r\n\r\n",
                smuggled!()
            ),
            400,
            CL_TE,
        ),
        refused(
            "CL.TE with Transfer-Encoding: CHUNKED",
            concat!(
                post!("Content-Length: 5\r\n", "Transfer-Encoding: CHUNKED\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            CL_TE,
        ),
        forwarded(
            "TE.TE: Transfer-Encoding: Chunked (coding names ignore case)",
            concat!(
                post!("Transfer-Encoding: Chunked\r\n"),
                "5\r\nhello\r\n0\r\n\r\n"
            ),
            chunked_fwd(chunked_hello, "chunked"),
        ),
        forwarded(
            "TE.TE: Transfer-Encoding: CHUNKED",
            concat!(
                post!("Transfer-Encoding: CHUNKED\r\n"),
                "5\r\nhello\r\n0\r\n\r\n"
            ),
            chunked_fwd(chunked_hello, "chunked"),
        ),
        forwarded(
            "TE.TE: leading whitespace in the value (OWS)",
            concat!(
                post!("Transfer-Encoding: \t  chunked\r\n"),
                "5\r\nhello\r\n0\r\n\r\n"
            ),
            chunked_fwd(chunked_hello, "chunked"),
        ),
        forwarded(
            "TE.TE: trailing whitespace in the value (OWS)",
            concat!(
                post!("Transfer-Encoding: chunked \t \r\n"),
                "5\r\nhello\r\n0\r\n\r\n"
            ),
            chunked_fwd(chunked_hello, "chunked"),
        ),
        refused(
            "TE.TE: space before the colon",
            concat!(
                post!("Content-Length: 5\r\n", "Transfer-Encoding : chunked\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            &["colon", "whitespace"],
        ),
        refused(
            "TE.TE: tab before the colon",
            concat!(
                post!("Transfer-Encoding\t: chunked\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            &["colon", "whitespace"],
        ),
        refused(
            "TE.TE: two Transfer-Encoding: chunked lines",
            concat!(
                post!(
                    "Transfer-Encoding: chunked\r\n",
                    "Transfer-Encoding: chunked\r\n"
                ),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        refused(
            "TE.TE: chunked line, then identity line",
            concat!(
                post!(
                    "Transfer-Encoding: chunked\r\n",
                    "Transfer-Encoding: identity\r\n"
                ),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        refused(
            "TE.TE: chunked, identity",
            concat!(
                post!("Transfer-Encoding: chunked, identity\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        refused(
            "TE.TE: identity, chunked (unknown coding before chunked)",
            concat!(
                post!("Transfer-Encoding: identity, chunked\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            501,
            TE,
        ),
        refused(
            "TE.TE: xchunked, chunked",
            concat!(
                post!("Transfer-Encoding: xchunked, chunked\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            501,
            TE,
        ),
        refused(
            "TE.TE: chunked, chunked",
            concat!(
                post!("Transfer-Encoding: chunked, chunked\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        refused(
            "TE.TE: xchunked",
            concat!(
                post!("Transfer-Encoding: xchunked\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        refused(
            "TE.TE: identity",
            concat!(
                post!("Transfer-Encoding: identity\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        refused(
            "TE.TE: gzip (final coding not chunked)",
            concat!(
                post!("Transfer-Encoding: gzip\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        forwarded(
            "TE.TE: gzip, chunked (a known coding, then chunked)",
            concat!(
                post!("Transfer-Encoding: gzip, chunked\r\n"),
                "5\r\nhello\r\n0\r\n\r\n"
            ),
            chunked_fwd(chunked_hello, "gzip, chunked"),
        ),
        refused(
            "TE.TE: chunked with a parameter",
            concat!(
                post!("Transfer-Encoding: chunked;q=1\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        refused(
            "TE.TE: empty Transfer-Encoding",
            concat!(post!("Transfer-Encoding:\r\n"), "0\r\n\r\n", smuggled!()),
            400,
            TE,
        ),
        refused(
            "TE.TE: vertical tab before chunked",
            concat!(
                post!("Transfer-Encoding: \x0bchunked\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "TE.TE: form feed after chunked",
            concat!(
                post!("Transfer-Encoding: chunked\x0c\r\n"),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "TE.TE: chunked folded onto a continuation line",
            concat!(
                post!(
                    "Content-Length: 5\r\n",
                    "Transfer-Encoding:\r\n chunked\r\n"
                ),
                "0\r\n\r\n",
                smuggled!()
            ),
            400,
            &["fold"],
        ),
        refused(
            "TE in an HTTP/1.0 request",
            concat!(
                "POST {T}/up HTTP/1.0\r\nHost: app.example.test\r\n",
                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                smuggled!()
            ),
            400,
            TE,
        ),
        forwarded(
            "CL: two identical lines (one sent on)",
            concat!(
                post!("Content-Length: 5\r\n", "Content-Length: 5\r\n"),
                "hello"
            ),
            HELLO_BY_LENGTH,
        ),
        forwarded(
            "CL: identical list 5, 5 (one value sent on)",
            concat!(post!("Content-Length: 5, 5\r\n"), "hello"),
            HELLO_BY_LENGTH,
        ),
        forwarded(
            "CL: leading zeros 005",
            concat!(post!("Content-Length: 005\r\n"), "hello"),
            HELLO_BY_LENGTH,
        ),
        refused(
            "CL: two different lines",
            concat!(
                post!("Content-Length: 5\r\n", "Content-Length: 6\r\n"),
                "hello!",
                smuggled!()
            ),
            400,
            CL,
        ),
        refused(
            "CL: different list 5, 6",
            concat!(post!("Content-Length: 5, 6\r\n"), "hello!", smuggled!()),
            400,
            CL,
        ),
        refused(
            "CL: negative -1",
            concat!(post!("Content-Length: -1\r\n"), smuggled!()),
            400,
            CL,
        ),
        refused(
            "CL: sign +5",
            concat!(post!("Content-Length: +5\r\n"), "hello", smuggled!()),
            400,
            CL,
        ),
        refused(
            "CL: hex 0x5",
            concat!(post!("Content-Length: 0x5\r\n"), "hello", smuggled!()),
            400,
            CL,
        ),
        refused(
            "CL: u64 overflow 18446744073709551616",
            concat!(
                post!("Content-Length: 18446744073709551616\r\n"),
                smuggled!()
            ),
            400,
            CL,
        ),
        refused(
            "CL: 30 digits",
            concat!(
                post!("Content-Length: 100000000000000000000000000005\r\n"),
                "hello",
                smuggled!()
            ),
            400,
            CL,
        ),
        refused(
            "CL: not a number 5x",
            concat!(post!("Content-Length: 5x\r\n"), "hello", smuggled!()),
            400,
            CL,
        ),
        refused(
            "CL: two numbers 5 5",
            concat!(post!("Content-Length: 5 5\r\n"), "hello", smuggled!()),
            400,
            CL,
        ),
        refused(
            "CL: empty",
            concat!(post!("Content-Length:\r\n"), smuggled!()),
            400,
            CL,
        ),
        refused(
            "CL: list with an empty element 5,",
            concat!(post!("Content-Length: 5,\r\n"), "hello", smuggled!()),
            400,
            CL,
        ),
        forwarded(
            "Connection: Content-Length does not drop the framing field",
            concat!(
                post!("Content-Length: 5\r\n", "Connection: Content-Length\r\n"),
                "hello"
            ),
            Fwd {
                absent: &["Transfer-Encoding", "Connection"],
                ..HELLO_BY_LENGTH
            },
        ),
        forwarded(
            "Connection: Transfer-Encoding does not drop the framing field",
            concat!(
                post!(
                    "Transfer-Encoding: chunked\r\n",
                    "Connection: Transfer-Encoding\r\n"
                ),
                "5\r\nhello\r\n0\r\n\r\n"
            ),
            chunked_fwd(chunked_hello, "chunked"),
        ),
        forwarded(
            "GET with a body that is a pipelined request",
            concat!(
                "GET {T}/up HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 50\r\n\r\n",
                smuggled!()
            ),
            Fwd {
                line: "GET /up HTTP/1.1",
                body: smuggled!(),
                once: &[("Content-Length", "50")],
                absent: &["Transfer-Encoding"],
            },
        ),
        forwarded(
            "chunked body holding a request",
            concat!(
                post!("Transfer-Encoding: chunked\r\n"),
                "32\r\n",
                smuggled!(),
                "\r\n0\r\n\r\n"
            ),
            chunked_fwd(concat!("32\r\n", smuggled!(), "\r\n0\r\n\r\n"), "chunked"),
        ),
    ]
}

/// Chunked bodies: sizes, extensions, line endings and trailers (RFC 9112 §7.1).
fn chunked_rows() -> Vec<Row> {
    let mut long_extension = String::from(post!("Transfer-Encoding: chunked\r\n"));
    long_extension.push_str("5;a=");
    long_extension.push_str(&"v".repeat(5000));
    long_extension.push_str("\r\nhello\r\n0\r\n\r\n");
    long_extension.push_str(SMUGGLED);
    vec![
        forwarded(
            "chunk extensions (token and quoted values)",
            concat!(
                post!("Transfer-Encoding: chunked\r\n"),
                "5;name=value ; q=\"a \\\" b\"\r\nhello\r\n0;last\r\n\r\n"
            ),
            chunked_fwd(
                "5;name=value ; q=\"a \\\" b\"\r\nhello\r\n0;last\r\n\r\n",
                "chunked",
            ),
        ),
        forwarded(
            "trailer fields after the last chunk",
            concat!(
                post!("Transfer-Encoding: chunked\r\n"),
                "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n"
            ),
            chunked_fwd(
                "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n",
                "chunked",
            ),
        ),
        forwarded(
            "chunk sizes with leading zeros and upper-case hex",
            concat!(
                post!("Transfer-Encoding: chunked\r\n"),
                "00A\r\n0123456789\r\n000\r\n\r\n"
            ),
            chunked_fwd("00A\r\n0123456789\r\n000\r\n\r\n", "chunked"),
        ),
        bad_body("chunk extension over 4 KiB", long_extension),
        bad_body(
            "chunk size overflow ffffffffffffffffff",
            chunked_then!("ffffffffffffffffff\r\nx\r\n"),
        ),
        bad_body(
            "chunk size of 16 hex digits",
            chunked_then!("1000000000000000\r\nx\r\n"),
        ),
        bad_body("chunk size 0x5", chunked_then!("0x5\r\nhello\r\n0\r\n\r\n")),
        bad_body(
            "chunk size with a leading space",
            chunked_then!(" 5\r\nhello\r\n0\r\n\r\n"),
        ),
        bad_body(
            "chunk size with trailing junk 5x",
            chunked_then!("5x\r\nhello\r\n0\r\n\r\n"),
        ),
        bad_body(
            "chunk size with a trailing space",
            chunked_then!("5 \r\nhello\r\n0\r\n\r\n"),
        ),
        bad_body("negative chunk size", chunked_then!("-1\r\n")),
        bad_body("chunk size not hex", chunked_then!("zz\r\n")),
        bad_body(
            "chunk data longer than its size",
            chunked_then!("3\r\nabcXY\r\n0\r\n\r\n"),
        ),
        bad_body(
            "bare LF ending a chunk-size line",
            chunked_then!("5\nhello\r\n0\r\n\r\n"),
        ),
        bad_body(
            "bare CR ending a chunk-size line",
            chunked_then!("5\rhello\r\n0\r\n\r\n"),
        ),
        bad_body(
            "bare LF after chunk data",
            chunked_then!("5\r\nhello\n0\r\n\r\n"),
        ),
        bad_body("bare LF ending the last chunk", chunked_then!("0\n\n")),
        bad_body("bare LF ending the chunked body", chunked_then!("0\r\n\n")),
        bad_body(
            "NUL in a chunk extension",
            chunked_then!("5;a=\0\r\nhello\r\n0\r\n\r\n"),
        ),
        bad_body(
            "Content-Length in the trailer section",
            chunked_then!("0\r\nContent-Length: 50\r\n\r\n"),
        ),
        bad_body(
            "Transfer-Encoding in the trailer section",
            chunked_then!("0\r\ntransfer-encoding: chunked\r\n\r\n"),
        ),
        bad_body(
            "Host in the trailer section",
            chunked_then!("0\r\nHOST: evil.example.test\r\n\r\n"),
        ),
        bad_body(
            "obs-fold in the trailer section",
            chunked_then!("0\r\nX-A: a\r\n b\r\n\r\n"),
        ),
        bad_body(
            "trailer line without a colon",
            chunked_then!("0\r\nX-A\r\n\r\n"),
        ),
    ]
}

/// Request lines, targets, line endings, bytes in fields, Host, versions, limits.
fn head_rows() -> Vec<Row> {
    let big_value = "a".repeat(70 * 1024);
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_path = "a".repeat(9 * 1024);
    vec![
        refused(
            "bare LF line endings throughout",
            concat!("GET {T}/ HTTP/1.1\nHost: app.example.test\n\n", smuggled!()),
            400,
            &["LF"],
        ),
        refused(
            "one bare LF ending a field line",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\nX-A: 1\r\n\r\n",
                smuggled!()
            ),
            400,
            &["LF"],
        ),
        refused(
            "bare LF as the final empty line",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\n\n",
                smuggled!()
            ),
            400,
            &["LF"],
        ),
        refused(
            "bare CR ending a field line",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\rX-A: 1\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "bare CR ending the request line",
            concat!(
                "GET {T}/ HTTP/1.1\rHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "NUL in a field name",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nX-A\0: 1\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "NUL in a field value",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nX-A: a\0b\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "control byte 0x01 in a field value",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nX-A: a\x01b\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "DEL in a field value",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nX-A: a\x7fb\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "escape byte in a field name",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nX\x1bA: 1\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "NUL in the request-target",
            concat!(
                "GET {T}/a\0b HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "obs-fold with a space",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nX-A: a\r\n b\r\n\r\n",
                smuggled!()
            ),
            400,
            &["fold"],
        ),
        refused(
            "obs-fold with a tab",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nX-A: a\r\n\tb\r\n\r\n",
                smuggled!()
            ),
            400,
            &["fold"],
        ),
        refused(
            "whitespace before the first field line",
            concat!(
                "GET {T}/ HTTP/1.1\r\n Host: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            &["whitespace"],
        ),
        refused(
            "space before the colon of Host",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost : app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            &["colon", "whitespace"],
        ),
        refused(
            "empty field name",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\n: v\r\n\r\n",
                smuggled!()
            ),
            400,
            HEADER,
        ),
        refused(
            "space in the request-target",
            concat!(
                "GET {T}/a b HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "tab in the request-target",
            concat!(
                "GET {T}/a\tb HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "two spaces after the method",
            concat!(
                "GET  {T}/ HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "whitespace before the method",
            concat!(
                " GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "absolute-form with userinfo",
            concat!(
                "GET http://user:pw@app.example.test/ HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            &["userinfo"],
        ),
        refused(
            "absolute-form https:// URL",
            concat!(
                "GET https://app.example.test/ HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            &["http://", "CONNECT"],
        ),
        forwarded(
            "absolute-form authority wins over a different Host",
            "GET http://app.example.test/abs HTTP/1.1\r\nHost: other.example.test\r\n\r\n",
            Fwd {
                line: "GET /abs HTTP/1.1",
                body: "",
                once: &[
                    ("Host", "app.example.test"),
                    ("X-Forwarded-Host", "app.example.test"),
                ],
                absent: &["Content-Length", "Transfer-Encoding"],
            },
        ),
        refused(
            "missing Host on HTTP/1.1",
            concat!("GET {T}/ HTTP/1.1\r\nX-A: 1\r\n\r\n", smuggled!()),
            400,
            &["Host"],
        ),
        refused(
            "missing Host on HTTP/1.1 with absolute-form",
            concat!("GET http://app.example.test/ HTTP/1.1\r\n\r\n", smuggled!()),
            400,
            &["Host"],
        ),
        refused(
            "two identical Host lines",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            &["Host"],
        ),
        refused(
            "two different Host lines",
            concat!(
                "GET {T}/ HTTP/1.1\r\nHost: app.example.test\r\nhost: other.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            &["Host"],
        ),
        refused(
            "empty Host with origin-form",
            concat!("GET /x HTTP/1.1\r\nHost:\r\n\r\n", smuggled!()),
            400,
            &["Host"],
        ),
        refused(
            "Host with userinfo",
            concat!(
                "GET /x HTTP/1.1\r\nHost: user@app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            &["Host"],
        ),
        refused(
            "HTTP/0.9 request line",
            concat!("GET {T}/\r\n\r\n", smuggled!()),
            400,
            LINE,
        ),
        refused(
            "HTTP/2 connection preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            505,
            &["HTTP/2"],
        ),
        refused(
            "HTTP/2.0 request line",
            concat!(
                "GET {T}/ HTTP/2.0\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            505,
            &["HTTP/2"],
        ),
        refused(
            "HTTP/3 request line",
            concat!(
                "GET {T}/ HTTP/3\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            505,
            &["HTTP/3"],
        ),
        refused(
            "HTTP/1.2 request line",
            concat!(
                "GET {T}/ HTTP/1.2\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "lower-case version http/1.1",
            concat!(
                "GET {T}/ http/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "garbage version HTTP/one",
            concat!(
                "GET {T}/ HTTP/one\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "not HTTP at all FOO/1.1",
            concat!(
                "GET {T}/ FOO/1.1\r\nHost: app.example.test\r\n\r\n",
                smuggled!()
            ),
            400,
            LINE,
        ),
        refused(
            "head over 64 KiB",
            format!(
                "GET {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\nX-Big: {big_value}\r\n\r\n\
                 {SMUGGLED}"
            ),
            431,
            &["large", "KiB", "header"],
        ),
        refused(
            "over 100 header fields",
            format!("GET {{T}}/ HTTP/1.1\r\nHost: app.example.test\r\n{many}\r\n{SMUGGLED}"),
            431,
            HEADER,
        ),
        refused(
            "request-target over 8 KiB",
            format!("GET {{T}}/{long_path} HTTP/1.1\r\nHost: app.example.test\r\n\r\n{SMUGGLED}"),
            414,
            &["target", "long"],
        ),
    ]
}

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

    /// Runs one row on one listener; returns what happened, for the table.
    fn check(&self, l: Listener, row: &Row, ctx: &str) -> String {
        let bytes = row.request.replace("{T}", l.prefix).into_bytes();
        match &row.expect {
            Expect::Refused(status, words) => {
                let outcome = self.expect_answer(l, ctx, &bytes, *status, words);
                self.canary(l, ctx, false);
                outcome
            }
            Expect::BadBody => {
                let outcome = self.expect_answer(l, ctx, &bytes, 400, &["chunk"]);
                self.canary(l, ctx, true);
                outcome
            }
            Expect::Forwarded(fwd) => self.expect_forwarded(l, ctx, &bytes, fwd),
        }
    }

    /// Sends `bytes` on a new connection and asserts the answer is `status` with a body
    /// mentioning one of `words`, and that the connection is then closed.
    fn expect_answer(
        &self,
        l: Listener,
        ctx: &str,
        bytes: &[u8],
        status: u16,
        words: &[&str],
    ) -> String {
        let mut s = connect(l.addr);
        // The proxy may answer and close before it has read everything; the answer must
        // still arrive, so a failed write is not an error here.
        let _ = s.write_all(bytes);
        let mut r = BufReader::new(s.try_clone().unwrap());
        let resp = read_response_for(&mut r, "POST")
            .unwrap_or_else(|e| panic!("{ctx}: no {status} answer: {e}"));
        let body = resp.body_text();
        assert_eq!(resp.status, status, "{ctx}: status; body {body:?}");
        assert!(
            !body.trim().is_empty(),
            "{ctx}: the {status} has an empty body"
        );
        let lower = body.to_ascii_lowercase();
        assert!(
            words
                .iter()
                .any(|w| lower.contains(&w.to_ascii_lowercase())),
            "{ctx}: the body {body:?} mentions none of {words:?}"
        );
        assert_closed(&mut r, ctx);
        format!("{status} {}", body.trim())
    }

    /// Sends `bytes` on a new connection; the backend must get exactly the request `fwd`
    /// describes, and after its response the same client connection must carry the canary.
    fn expect_forwarded(&self, l: Listener, ctx: &str, bytes: &[u8], fwd: &Fwd) -> String {
        let mut s = connect(l.addr);
        s.write_all(bytes).unwrap();
        let mut b = self.backend.accept();
        let head = read_raw_head(&mut b);
        assert!(
            head.starts_with(&format!("{}\r\n", fwd.line)),
            "{ctx}: the upstream request line is not {:?}:\n{head}",
            fwd.line
        );
        for (name, value) in fwd.once {
            let values = field_values(&head, name);
            assert!(
                values.len() == 1 && values[0].eq_ignore_ascii_case(value),
                "{ctx}: want exactly one `{name}: {value}` upstream, got {values:?}:\n{head}"
            );
        }
        for name in fwd.absent {
            let values = field_values(&head, name);
            assert!(
                values.is_empty(),
                "{ctx}: `{name}` must not go upstream, got {values:?}:\n{head}"
            );
        }
        let mut body = vec![0u8; fwd.body.len()];
        b.read_exact(&mut body).unwrap_or_else(|e| {
            panic!(
                "{ctx}: the upstream did not get the {} body bytes: {e}",
                fwd.body.len()
            )
        });
        assert_eq!(
            String::from_utf8_lossy(&body),
            fwd.body,
            "{ctx}: the upstream body"
        );
        b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        let rest = read_upstream_to_eof(&mut b, ctx);
        assert!(
            rest.is_empty(),
            "{ctx}: the upstream got more after the body: {:?}",
            String::from_utf8_lossy(&rest)
        );
        let mut r = BufReader::new(s.try_clone().unwrap());
        let resp = read_response(&mut r).unwrap_or_else(|e| panic!("{ctx}: no answer: {e}"));
        assert_eq!(
            (resp.status, resp.body_text().as_str()),
            (200, "ok"),
            "{ctx}"
        );
        assert!(
            !resp
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close")),
            "{ctx}: the client connection should stay open after a well-framed request"
        );
        // The canary on the same connection: the proxy's request ended where the client's did.
        s.write_all(CANARY.replace("{T}", l.prefix).as_bytes())
            .unwrap();
        let mut b = self.backend.accept();
        let head = read_raw_head(&mut b);
        assert!(
            head.starts_with("GET /canary HTTP/1.1\r\n"),
            "{ctx}: after the forwarded request the backend got something else than the canary:\n{head}"
        );
        b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary")
            .unwrap();
        drop(b);
        let resp = read_response(&mut r).unwrap_or_else(|e| {
            panic!("{ctx}: no answer to the canary on the same connection: {e}")
        });
        assert_eq!(
            (resp.status, resp.body_text().as_str()),
            (200, "canary"),
            "{ctx}"
        );
        "forwarded".into()
    }

    /// A well-formed request through `l` on a new connection must be the first thing the
    /// backend receives. With `attack_dialled`, the attack may have opened one upstream
    /// connection first (the proxy dials before it reads a body): that one must carry at most
    /// the row's head and the valid chunk, then close.
    fn canary(&self, l: Listener, ctx: &str, attack_dialled: bool) {
        let mut s = connect(l.addr);
        s.write_all(CANARY.replace("{T}", l.prefix).as_bytes())
            .unwrap();
        let mut earlier = 0;
        let b = loop {
            let mut b = self.backend.accept();
            let head = read_raw_head(&mut b);
            if head.starts_with("GET /canary HTTP/1.1\r\n") {
                break b;
            }
            assert!(
                attack_dialled && earlier == 0,
                "{ctx}: the backend's first request after the row was not the canary:\n{head}"
            );
            earlier += 1;
            assert!(
                head.is_empty() || head.starts_with(&format!("{UP_LINE}\r\n")),
                "{ctx}: unexpected upstream head: {head}"
            );
            let rest = read_upstream_to_eof(&mut b, ctx);
            let text = String::from_utf8_lossy(&rest);
            assert!(
                !head.contains("smuggled") && !text.contains("smuggled"),
                "{ctx}: smuggled request forwarded: {text:?}"
            );
            let payload = dechunk_prefix(&rest);
            assert!(
                payload.is_empty() || payload == b"hello",
                "{ctx}: the upstream got {text:?}"
            );
        };
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

    /// After a test's rows: no stray connection shows up late either.
    fn assert_backend_quiet(&self) {
        assert!(
            self.backend
                .no_connection_within(Duration::from_millis(200)),
            "the backend got a connection nobody asked for"
        );
    }
}

/// The values of every `name` field in a raw head, trimmed.
fn field_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// The backend connection `b` sends `response` and closes; returns the response as the client
/// reads it on `s`.
fn answer_last(mut b: TcpStream, s: TcpStream, response: &[u8]) -> Response {
    b.write_all(response).unwrap();
    drop(b);
    read_response(&mut BufReader::new(s)).unwrap()
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
                "{ctx}: the upstream connection stayed open ({e}); got {:?}",
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

impl CatalogueRig for Rig {
    type Row = Row;
    fn start() -> Rig {
        Rig::start()
    }
    fn row_name(row: &Row) -> &str {
        row.name
    }
    fn run_row(&mut self, listener: usize, row: &Row, _index: usize) -> String {
        // Looked up each time: a failed run restarts the rig on new ports.
        let l = self.listeners()[listener];
        let ctx = format!("[{} listener, row {:?}]", l.name, row.name);
        self.check(l, row, &ctx)
    }
    fn problems(&mut self, at_end: bool) -> Vec<String> {
        if at_end {
            self.assert_backend_quiet();
        }
        Vec::new()
    }
}

#[test]
fn catalogue_content_length_and_transfer_encoding() {
    run_catalogue::<Rig>("framing", &framing_rows());
}

#[test]
fn catalogue_chunked_bodies() {
    run_catalogue::<Rig>("chunked", &chunked_rows());
}

#[test]
fn catalogue_request_lines_fields_and_limits() {
    run_catalogue::<Rig>("heads", &head_rows());
}

#[test]
fn the_catalogue_covers_at_least_forty_vectors() {
    let total = framing_rows().len() + chunked_rows().len() + head_rows().len();
    assert!(total >= 40, "only {total} rows");
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
            let mut s = connect(l.addr);
            s.write_all(
                format!(
                    "GET {}{path} HTTP/1.1\r\nHost: app.example.test\r\n{extra}\r\n",
                    l.prefix
                )
                .as_bytes(),
            )
            .unwrap();
            let mut b = rig.backend.accept();
            let head = read_raw_head(&mut b);
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

#[test]
fn a_malformed_request_after_a_good_one_on_a_kept_alive_connection_is_not_forwarded() {
    for listener in 0..2 {
        // A fresh proxy per listener, so no pooled upstream connection is shared.
        let rig = Rig::start();
        let l = rig.listeners()[listener];
        let ctx = format!("[{} listener]", l.name);
        let req = format!(
            "GET {p}/first HTTP/1.1\r\nHost: app.example.test\r\n\r\n\
             POST {p}/second HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 40\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
            p = l.prefix
        );
        let mut s = connect(l.addr);
        s.write_all(req.as_bytes()).unwrap();
        let mut b = rig.backend.accept();
        let head = read_raw_head(&mut b);
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
