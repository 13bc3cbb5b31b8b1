//! The heads the proxy sends on: a request head for the upstream (origin-form, Host first,
//! hop-by-hop fields removed, Via and the X-Forwarded-* family added) and a response head for
//! the client (hop-by-hop fields removed, Via added, Connection set for the client's
//! connection). Both are written straight into a caller's buffer, no allocation; the fields are
//! re-read from the parsed head's own buffer with httparse into a stack array. What to forward
//! and where is decided by the session; the framing was decided by `head.rs`.

#![deny(
    unsafe_code,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt;
use std::net::IpAddr;

use super::via::Via;

use super::head::{
    BodyKind, Field, MAX_HEADERS, RequestHead, ResponseHead, TargetForm, list_items, lists_token,
    response_config, skip_empty_lines,
};

/// How a request is being forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// Going to a local route target: add X-Forwarded-For (the client ip appended to all
    /// existing values), X-Forwarded-Proto, X-Forwarded-Host (the authority the client asked
    /// for) and X-Real-IP, each replacing what the client sent.
    pub to_local: bool,
    pub client_ip: IpAddr,
    /// "http" or "https", as the client spoke.
    pub proto: &'a str,
    /// Pass Upgrade through (WebSocket): keep the Upgrade header and send `Connection: upgrade`.
    pub upgrade: bool,
    /// The Via entry added.
    pub via: &'a Via,
    /// Going to an upstream HTTP proxy: the target is sent in absolute form, with these
    /// credentials.
    pub to_proxy: Option<ProxyForm<'a>>,
}

/// How a request to an upstream proxy differs from one to the origin (RFC 9112 §3.2.2).
#[derive(Debug, Clone, Copy)]
pub struct ProxyForm<'a> {
    /// The `Proxy-Authorization` value, e.g. `Basic dXNlcjpwYXNz`.
    pub authorization: Option<&'a str>,
}

/// The rewritten head does not fit in the output buffer (or `src` is not the buffer the head
/// was parsed from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteError;

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the rewritten message head does not fit in the output buffer")
    }
}

impl std::error::Error for RewriteError {}

/// Appends to a fixed output buffer; running out of room is a `RewriteError`, never a panic.
struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl<'o> Writer<'o> {
    fn new(out: &'o mut [u8]) -> Self {
        Writer { out, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), RewriteError> {
        let end = self.len.checked_add(bytes.len()).ok_or(RewriteError)?;
        let room = self.out.get_mut(self.len..end).ok_or(RewriteError)?;
        room.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn put_field(&mut self, name: &str, value: &[u8]) -> Result<(), RewriteError> {
        self.put(name.as_bytes())?;
        self.put(b": ")?;
        self.put(value)?;
        self.put(b"\r\n")
    }

    /// Writes a response field value with each CR and LF of an obs-fold replaced by SP, as
    /// RFC 9112 §5.2 requires of a proxy forwarding such a response.
    fn put_unfolded(&mut self, value: &[u8]) -> Result<(), RewriteError> {
        let mut pieces = value.split(|&b| b == b'\r' || b == b'\n');
        if let Some(first) = pieces.next() {
            self.put(first)?;
        }
        for piece in pieces {
            self.put(b" ")?;
            self.put(piece)?;
        }
        Ok(())
    }

    fn put_content_length(&mut self, n: u64) -> Result<(), RewriteError> {
        fmt::Write::write_fmt(self, format_args!("Content-Length: {n}\r\n"))
            .map_err(|_| RewriteError)
    }

    fn put_ip(&mut self, ip: IpAddr) -> Result<(), RewriteError> {
        // IpAddr's Display formats on the stack; fmt::Write only carries the bytes across.
        fmt::Write::write_fmt(self, format_args!("{ip}")).map_err(|_| RewriteError)
    }
}

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Which Connection options name other fields. "close", "keep-alive" and "upgrade" are left
/// out: the fields they could name are handled on their own, so most heads skip the per-field
/// search of `is_nominated`.
fn names_other_fields(fields: &[httparse::Header<'_>]) -> bool {
    fields
        .iter()
        .filter(|field| Field::of(field.name) == Field::Connection)
        .flat_map(|field| list_items(field.value))
        .any(|option| {
            !(option.eq_ignore_ascii_case(b"close")
                || option.eq_ignore_ascii_case(b"keep-alive")
                || option.eq_ignore_ascii_case(b"upgrade"))
        })
}

/// Holds when a Connection field lists `name`, making that field hop-by-hop
/// (RFC 9110 §7.6.1).
fn is_nominated(name: &str, fields: &[httparse::Header<'_>]) -> bool {
    fields
        .iter()
        .filter(|field| Field::of(field.name) == Field::Connection)
        .any(|field| lists_token(field.value, name))
}

/// Holds when a field is dropped on the way through, by the rules both directions share.
fn hop_by_hop(
    field: Field,
    name: &str,
    nominations: bool,
    fields: &[httparse::Header<'_>],
) -> bool {
    match field {
        // RFC 9110 §7.6.1 and RFC 9112 §9.6 / §7.4 / §11: connection-specific fields.
        Field::Connection
        | Field::KeepAlive
        | Field::ProxyConnection
        | Field::ProxyAuthorization
        | Field::ProxyAuthenticate
        | Field::Te
        | Field::Trailer => true,
        // Framing fields are never dropped because a Connection option names them: the body is
        // relayed raw, so removing them would make the next hop frame it differently than we
        // did ("Connection: Content-Length" is a smuggling trick).
        Field::ContentLength | Field::TransferEncoding | Field::Host => false,
        _ => nominations && is_nominated(name, fields),
    }
}

/// Writes the head to send upstream into `out`, returns its length. `src` is the buffer `head`
/// was parsed from.
///
/// Request line: `METHOD SP path SP HTTP/1.x CRLF` with path in origin-form (empty -> "/") and
/// the client's version (1.1, or 1.0 for an HTTP/1.0 client);
/// CONNECT is never passed here; asterisk-form stays "*". Then `Host: <authority>` first (for
/// absolute-form the URI's authority replaces any Host header, RFC 9112 §3.2.2; otherwise the
/// original Host value byte for byte; no Host line for an HTTP/1.0 request that had none), then
/// the other fields in order without the hop-by-hop ones, then Watchtower's Via entry, the
/// X-Forwarded-* fields and X-Real-IP when `to_local`, `Connection: upgrade` and the Upgrade
/// field when `fwd.upgrade` (and the request has one), and the empty line. Transfer-Encoding
/// is kept (the body is relayed raw), Content-Length as one field with its
/// single value even when the request repeated it.
pub fn write_request_head(
    src: &[u8],
    head: &RequestHead,
    fwd: &Forwarding<'_>,
    out: &mut [u8],
) -> Result<usize, RewriteError> {
    let head_bytes = src.get(..head.head_len).ok_or(RewriteError)?;
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut storage);
    // The head already passed parse_request, so this finds the same fields again.
    if !matches!(request.parse(head_bytes), Ok(httparse::Status::Complete(_))) {
        return Err(RewriteError);
    }
    let fields: &[httparse::Header<'_>] = request.headers;
    let nominations = names_other_fields(fields);

    let mut w = Writer::new(out);
    w.put(head.method_span.of(src))?;
    w.put(b" ")?;
    if fwd.to_proxy.is_some()
        && let Some(authority) = head.authority
    {
        // Absolute form; `OPTIONS *` becomes `OPTIONS http://host` (RFC 9112 §3.2.4).
        w.put(b"http://")?;
        w.put(authority.of(src))?;
    }
    match head.form {
        TargetForm::Asterisk if fwd.to_proxy.is_some() && head.authority.is_some() => {}
        TargetForm::Asterisk => w.put(b"*")?,
        _ => {
            // Absolute-form leaves "" or "?query" after the authority; origin-form needs the
            // leading "/" (RFC 9112 §3.2.1).
            let path = head.path.of(src);
            if path.first() != Some(&b'/') {
                w.put(b"/")?;
            }
            w.put(path)?;
        }
    }
    // RFC 9110 §6.2 lets an intermediary send its own version, but an HTTP/1.0 client cannot
    // read a chunked response (RFC 9112 §7.1), so its requests go on as HTTP/1.0 and the
    // upstream frames the response with Content-Length or by closing, as nginx does.
    w.put(if head.minor_version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    })?;
    if let Some(authority) = head.authority {
        w.put_field("Host", authority.of(src))?;
    }
    if let Some(credentials) = fwd.to_proxy.and_then(|p| p.authorization) {
        w.put_field("Proxy-Authorization", credentials.as_bytes())?;
    }

    let mut has_upgrade = false;
    let mut length_written = false;
    for field in fields {
        let kind = Field::of(field.name);
        let dropped = match kind {
            // Written first, above.
            Field::Host => true,
            // Repeated identical values were accepted by the parser; RFC 9110 §8.6 then
            // requires a proxy to forward exactly one, so no next hop can read two.
            Field::ContentLength => {
                if !length_written && let BodyKind::Length(n) = head.body {
                    w.put_content_length(n)?;
                }
                length_written = true;
                true
            }
            // Re-added after "Connection: upgrade" when passed through.
            Field::Upgrade => {
                has_upgrade = true;
                true
            }
            Field::XForwardedFor
            | Field::XForwardedProto
            | Field::XForwardedHost
            | Field::XRealIp
                if fwd.to_local =>
            {
                true
            }
            _ => hop_by_hop(kind, field.name, nominations, fields),
        };
        if !dropped {
            w.put_field(field.name, field.value)?;
        }
    }

    w.put(fwd.via.line())?;
    if fwd.to_local {
        w.put(b"X-Forwarded-For: ")?;
        for field in fields {
            let forwarded_for = Field::of(field.name) == Field::XForwardedFor
                && !field.value.is_empty()
                && !(nominations && is_nominated(field.name, fields));
            if forwarded_for {
                w.put(field.value)?;
                w.put(b", ")?;
            }
        }
        w.put_ip(fwd.client_ip)?;
        w.put(b"\r\n")?;
        w.put_field("X-Forwarded-Proto", fwd.proto.as_bytes())?;
        if let Some(authority) = head.authority {
            w.put_field("X-Forwarded-Host", authority.of(src))?;
        }
        w.put(b"X-Real-IP: ")?;
        w.put_ip(fwd.client_ip)?;
        w.put(b"\r\n")?;
    }
    if fwd.upgrade && has_upgrade {
        // RFC 9110 §7.8: Upgrade only means something with "upgrade" in Connection.
        w.put(b"Connection: upgrade\r\n")?;
        for field in fields {
            if Field::of(field.name) == Field::Upgrade {
                w.put_field(field.name, field.value)?;
            }
        }
    }
    w.put(b"\r\n")?;
    Ok(w.len)
}

/// Writes the response head to send to the client into `out`, returns its length. `src` is the
/// buffer `head` was parsed from.
///
/// Status line `HTTP/1.1 <status> <reason as received>`; drops the same hop-by-hop set (Upgrade
/// kept for 101); drops Content-Length when Transfer-Encoding is present (RFC 9112 §6.3 ¶3);
/// drops both framing fields from 1xx and 204 responses, which never have a body and must not
/// carry them (RFC 9110 §8.6, RFC 9112 §6.1), so no client can frame the next response by them;
/// adds Watchtower's Via entry; then the client's framing: `Connection: upgrade` for 101, nothing
/// for other 1xx (interim responses say nothing about the connection), else `Connection: close`
/// when `client_keep_alive` is false, `Connection: keep-alive` when it is true and the client
/// spoke HTTP/1.0 (`client_minor_version == 0`), which would otherwise close (RFC 9112 §9.3).
pub fn write_response_head(
    src: &[u8],
    head: &ResponseHead,
    client_keep_alive: bool,
    client_minor_version: u8,
    via: &Via,
    out: &mut [u8],
) -> Result<usize, RewriteError> {
    let head_bytes = src.get(..head.head_len).ok_or(RewriteError)?;
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    if !matches!(
        response_config().parse_response(&mut response, head_bytes),
        Ok(httparse::Status::Complete(_))
    ) {
        return Err(RewriteError);
    }
    let fields: &[httparse::Header<'_>] = response.headers;
    let nominations = names_other_fields(fields);
    let switching = head.status == 101;
    let has_transfer_encoding = fields
        .iter()
        .any(|field| Field::of(field.name) == Field::TransferEncoding);
    let never_framed = (100..200).contains(&head.status) || head.status == 204;

    let mut w = Writer::new(out);
    let mut length_written = false;
    w.put(b"HTTP/1.1 ")?;
    w.put(&status_digits(head.status))?;
    w.put(b" ")?;
    w.put(reason_phrase(head_bytes))?;
    w.put(b"\r\n")?;
    for field in fields {
        let kind = Field::of(field.name);
        let dropped = match kind {
            Field::Upgrade => !switching,
            // A "Content-Length: 5" on a 204 would have a lenient client read the next
            // response's first bytes as this one's body.
            Field::ContentLength | Field::TransferEncoding if never_framed => true,
            // An intermediary forwarding TE and CL together must remove CL first, so the
            // client cannot frame by it (RFC 9112 §6.3 ¶3). Repeated identical values go out
            // as one field (RFC 9110 §8.6).
            Field::ContentLength if has_transfer_encoding || length_written => true,
            Field::ContentLength => {
                length_written = true;
                if let BodyKind::Length(n) = head.body {
                    w.put_content_length(n)?;
                    true
                } else {
                    false
                }
            }
            _ => hop_by_hop(kind, field.name, nominations, fields),
        };
        if !dropped {
            w.put(field.name.as_bytes())?;
            w.put(b": ")?;
            w.put_unfolded(field.value)?;
            w.put(b"\r\n")?;
        }
    }
    w.put(via.line())?;
    if switching {
        w.put(b"Connection: upgrade\r\n")?;
    } else if head.status >= 200 {
        if !client_keep_alive {
            w.put(b"Connection: close\r\n")?;
        } else if client_minor_version == 0 {
            w.put(b"Connection: keep-alive\r\n")?;
        }
    }
    w.put(b"\r\n")?;
    Ok(w.len)
}

/// The three ASCII digits of a status code (httparse reads exactly three).
fn status_digits(status: u16) -> [u8; 3] {
    let status = status.min(999);
    // Each value is below 10 after `% 10`, so the casts cannot truncate.
    [
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]
}

/// The reason phrase exactly as received: what follows the status code on the status line,
/// leading spaces and the line ending removed. httparse hands back "" for a phrase with
/// obs-text, so it is read from the bytes.
fn reason_phrase(head: &[u8]) -> &[u8] {
    let start = skip_empty_lines(head);
    let line = head.get(start..).unwrap_or(&[]);
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(lf) => line.get(..lf).unwrap_or(&[]),
        None => line,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // "HTTP/1.x" SP+ 3DIGIT [ SP+ reason ]
    let after_version = line.get(8..).unwrap_or(&[]).trim_ascii_start();
    after_version.get(3..).unwrap_or(&[]).trim_ascii_start()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::LazyLock;

    use super::*;
    use crate::http::head::{Method, parse_request, parse_response};

    /// The tests' Via entry: `Via: 1.1 watchtower`.
    static VIA: LazyLock<Via> = LazyLock::new(|| Via::named("watchtower"));

    fn pass_through() -> Forwarding<'static> {
        Forwarding {
            to_local: false,
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            proto: "http",
            upgrade: false,
            via: &VIA,
            to_proxy: None,
        }
    }

    fn local() -> Forwarding<'static> {
        Forwarding {
            to_local: true,
            ..pass_through()
        }
    }

    fn rewrite_request(input: &str, fwd: &Forwarding<'_>) -> String {
        let src = input.as_bytes();
        let head = parse_request(src).unwrap().unwrap();
        let mut out = [0u8; 4096];
        let len = write_request_head(src, &head, fwd, &mut out).unwrap();
        String::from_utf8(out[..len].to_vec()).unwrap()
    }

    #[test]
    fn repeated_content_length_goes_out_once() {
        for input in [
            "POST /u HTTP/1.1\r\nHost: a.test\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST /u HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 5\r\n\r\n",
        ] {
            assert_eq!(
                rewrite_request(input, &pass_through()),
                "POST /u HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nVia: 1.1 watchtower\r\n\r\n",
                "{input:?}"
            );
        }
        let response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            rewrite_response(response, Method::Get, true, 1),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 watchtower\r\n\r\n"
        );
    }

    #[test]
    fn requests_to_an_upstream_proxy_are_absolute_form_with_its_credentials() {
        let to_proxy = Forwarding {
            to_proxy: Some(ProxyForm {
                authorization: Some("Basic dTpw"),
            }),
            ..pass_through()
        };
        let table = [
            (
                // The client's own credentials were for Watchtower: replaced by the proxy's.
                "GET http://example.test:8080/p?q=1 HTTP/1.1\r\nHost: example.test:8080\r\n\
                 Proxy-Authorization: Basic Y2xpZW50\r\n\r\n",
                "GET http://example.test:8080/p?q=1 HTTP/1.1\r\nHost: example.test:8080\r\n\
                 Proxy-Authorization: Basic dTpw\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                "GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n",
                "GET http://example.test/a HTTP/1.1\r\nHost: example.test\r\n\
                 Proxy-Authorization: Basic dTpw\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                "OPTIONS * HTTP/1.1\r\nHost: example.test\r\n\r\n",
                "OPTIONS http://example.test HTTP/1.1\r\nHost: example.test\r\n\
                 Proxy-Authorization: Basic dTpw\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
        ];
        for (input, expected) in table {
            assert_eq!(rewrite_request(input, &to_proxy), expected, "{input:?}");
        }
        let anonymous = Forwarding {
            to_proxy: Some(ProxyForm {
                authorization: None,
            }),
            ..pass_through()
        };
        assert_eq!(
            rewrite_request("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n", &anonymous),
            "GET http://example.test/a HTTP/1.1\r\nHost: example.test\r\nVia: 1.1 watchtower\r\n\r\n"
        );
    }

    #[test]
    fn request_heads_are_rewritten_exactly() {
        let upgrade_local = Forwarding {
            client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            upgrade: true,
            ..local()
        };
        let https_local = Forwarding {
            proto: "https",
            ..local()
        };
        let table: &[(&str, Forwarding<'_>, &str)] = &[
            (
                // Pass-through absolute-form: origin-form, Host from the URI, hop-by-hop gone.
                "GET http://example.test:8080/p?q=1 HTTP/1.1\r\nHost: wrong.test\r\nUser-Agent: curl/8\r\n\
                 Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n",
                pass_through(),
                "GET /p?q=1 HTTP/1.1\r\nHost: example.test:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\
                 Via: 1.1 watchtower\r\n\r\n",
            ),
            (
                "GET http://example.test HTTP/1.1\r\nHost: example.test\r\n\r\n",
                pass_through(),
                "GET / HTTP/1.1\r\nHost: example.test\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                "GET http://example.test?x=1 HTTP/1.0\r\n\r\n",
                pass_through(),
                "GET /?x=1 HTTP/1.0\r\nHost: example.test\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                // Local: forwarded fields replaced, the client's XFF values combined, Via kept.
                "POST /api HTTP/1.1\r\nHost: app.test:3000\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.0 corp\r\n\
                 X-Real-IP: 6.6.6.6\r\nx-forwarded-for: 10.0.0.2, 10.0.0.3\r\nX-Forwarded-Proto: https\r\n\
                 X-Forwarded-Host: evil.test\r\nContent-Length: 3\r\n\r\n",
                local(),
                "POST /api HTTP/1.1\r\nHost: app.test:3000\r\nVia: 1.0 corp\r\nContent-Length: 3\r\n\
                 Via: 1.1 watchtower\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n\
                 X-Forwarded-Proto: http\r\nX-Forwarded-Host: app.test:3000\r\nX-Real-IP: 192.0.2.7\r\n\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n",
                https_local,
                "GET / HTTP/1.1\r\nHost: app.test\r\nVia: 1.1 watchtower\r\nX-Forwarded-For: 192.0.2.7\r\n\
                 X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.test\r\nX-Real-IP: 192.0.2.7\r\n\r\n",
            ),
            (
                // Pass-through keeps the client's forwarded fields as they are.
                "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n\r\n",
                pass_through(),
                "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n\
                 Via: 1.1 watchtower\r\n\r\n",
            ),
            (
                // WebSocket passed through: Upgrade kept after "Connection: upgrade".
                "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                upgrade_local,
                "GET /ws HTTP/1.1\r\nHost: app.test\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nVia: 1.1 watchtower\r\nX-Forwarded-For: ::1\r\n\
                 X-Forwarded-Proto: http\r\nX-Forwarded-Host: app.test\r\nX-Real-IP: ::1\r\n\
                 Connection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            ),
            (
                // Not passed through: Upgrade is dropped like any hop-by-hop field.
                "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                pass_through(),
                "GET /ws HTTP/1.1\r\nHost: a\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                // Fields named by Connection are dropped, framing fields never are.
                "POST /f HTTP/1.1\r\nX-Secret: 1\r\nHost: a\r\nConnection: close, X-Secret,x-other\r\n\
                 Connection: Content-Length, Transfer-Encoding, Host\r\nX-Other: 2\r\nKeep-Alive: timeout=5\r\n\
                 TE: trailers\r\nTrailer: X-Sum\r\nProxy-Authenticate: Basic\r\nX-Kept: 3\r\nContent-Length: 4\r\n\r\n",
                pass_through(),
                "POST /f HTTP/1.1\r\nHost: a\r\nX-Kept: 3\r\nContent-Length: 4\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
                pass_through(),
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\
                 Via: 1.1 watchtower\r\n\r\n",
            ),
            (
                "OPTIONS * HTTP/1.1\r\nHost: a:81\r\n\r\n",
                pass_through(),
                "OPTIONS * HTTP/1.1\r\nHost: a:81\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                // An HTTP/1.0 request without Host has no authority to send.
                "GET /old HTTP/1.0\r\nAccept: */*\r\n\r\n",
                local(),
                "GET /old HTTP/1.0\r\nAccept: */*\r\nVia: 1.1 watchtower\r\nX-Forwarded-For: 192.0.2.7\r\n\
                 X-Forwarded-Proto: http\r\nX-Real-IP: 192.0.2.7\r\n\r\n",
            ),
        ];
        for (input, fwd, expected) in table {
            assert_eq!(rewrite_request(input, fwd), *expected, "{input:?}");
        }
    }

    #[test]
    fn request_rewrite_reports_a_small_buffer() {
        let src = b"GET http://example.test/p HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let head = parse_request(src).unwrap().unwrap();
        let mut out = [0u8; 512];
        let needed = write_request_head(src, &head, &local(), &mut out).unwrap();
        for size in 0..needed {
            assert_eq!(
                write_request_head(src, &head, &local(), &mut out[..size]),
                Err(RewriteError),
                "{size}"
            );
        }
        assert_eq!(
            write_request_head(src, &head, &local(), &mut out[..needed]),
            Ok(needed)
        );
        // A buffer that is not the one the head came from is refused, not guessed at.
        assert_eq!(
            write_request_head(b"GET", &head, &local(), &mut out),
            Err(RewriteError)
        );
        assert!(!RewriteError.to_string().is_empty());
    }

    fn rewrite_response(input: &str, method: Method, keep_alive: bool, minor: u8) -> String {
        let src = input.as_bytes();
        let head = parse_response(src, method).unwrap().unwrap();
        let mut out = [0u8; 4096];
        let len = write_response_head(src, &head, keep_alive, minor, &VIA, &mut out).unwrap();
        String::from_utf8_lossy(&out[..len]).into_owned()
    }

    #[test]
    fn response_heads_are_rewritten_exactly() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
                  Server: dev\r\n\r\nok";
        let table: &[(&str, Method, bool, u8, &str)] = &[
            (
                ok,
                Method::Get,
                true,
                1,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: dev\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                ok,
                Method::Get,
                false,
                1,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: dev\r\nVia: 1.1 watchtower\r\n\
                 Connection: close\r\n\r\n",
            ),
            (
                ok,
                Method::Get,
                true,
                0,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: dev\r\nVia: 1.1 watchtower\r\n\
                 Connection: keep-alive\r\n\r\n",
            ),
            (
                ok,
                Method::Get,
                false,
                0,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: dev\r\nVia: 1.1 watchtower\r\n\
                 Connection: close\r\n\r\n",
            ),
            (
                "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\n",
                Method::Get,
                false,
                1,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nVia: 1.1 watchtower\r\n\
                 Connection: close\r\n\r\n",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                Method::Get,
                true,
                1,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nVia: 1.1 watchtower\r\n\
                 Connection: upgrade\r\n\r\n",
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\n",
                Method::Put,
                false,
                1,
                "HTTP/1.1 100 Continue\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                // TE and CL together: CL is removed before forwarding (RFC 9112 §6.3).
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\n\r\n",
                Method::Get,
                false,
                1,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVia: 1.1 watchtower\r\n\
                 Connection: close\r\n\r\n",
            ),
            (
                // Liberal input, normalised output: bare LF, obs-fold, space before colon, no reason.
                "HTTP/1.1 200\nX-Folded: a\n  b\nContent-Length : 0\nConnection: x-hop\nX-Hop: 1\n\n",
                Method::Get,
                true,
                1,
                "HTTP/1.1 200 \r\nX-Folded: a   b\r\nContent-Length: 0\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                // 1xx and 204 never have a body: their framing fields go (RFC 9110 §8.6).
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
                Method::Get,
                true,
                1,
                "HTTP/1.1 204 No Content\r\nX-A: 1\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                "HTTP/1.1 103 Early Hints\r\nContent-Length: 4\r\nLink: </a.css>\r\n\r\n",
                Method::Get,
                true,
                1,
                "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                // A 304's and a HEAD response's Content-Length tell the size of the GET's body.
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                true,
                1,
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Head,
                true,
                1,
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
            (
                "HTTP/1.1  503  Try  later\r\nVia: 1.1 cdn\r\nContent-Length: 0\r\n\r\n",
                Method::Get,
                true,
                1,
                "HTTP/1.1 503 Try  later\r\nVia: 1.1 cdn\r\nContent-Length: 0\r\nVia: 1.1 watchtower\r\n\r\n",
            ),
        ];
        for (input, method, keep_alive, minor, expected) in table {
            assert_eq!(
                rewrite_response(input, *method, *keep_alive, *minor),
                *expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn response_reason_is_kept_byte_for_byte() {
        let src = b"HTTP/1.1 200 D\xe9j\xe0 vu\r\nContent-Length: 0\r\n\r\n";
        let head = parse_response(src, Method::Get).unwrap().unwrap();
        let mut out = [0u8; 256];
        let len = write_response_head(src, &head, true, 1, &VIA, &mut out).unwrap();
        assert!(out[..len].starts_with(b"HTTP/1.1 200 D\xe9j\xe0 vu\r\n"));
    }

    #[test]
    fn response_rewrite_reports_a_small_buffer() {
        let src = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let head = parse_response(src, Method::Get).unwrap().unwrap();
        let mut out = [0u8; 256];
        let needed = write_response_head(src, &head, false, 1, &VIA, &mut out).unwrap();
        for size in 0..needed {
            assert_eq!(
                write_response_head(src, &head, false, 1, &VIA, &mut out[..size]),
                Err(RewriteError)
            );
        }
        assert_eq!(
            write_response_head(src, &head, false, 1, &VIA, &mut out[..needed]),
            Ok(needed)
        );
    }
}
