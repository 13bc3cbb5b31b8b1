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

use super::head::{
    Field, MAX_HEADERS, RequestHead, ResponseHead, TargetForm, list_items, lists_token,
    response_config, skip_empty_lines,
};

/// The Via entry this proxy adds (RFC 9110 §7.6.3): protocol version and a pseudonym.
const VIA_LINE: &[u8] = b"Via: 1.1 watchtower\r\n";

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
/// Request line: `METHOD SP path SP HTTP/1.1 CRLF` with path in origin-form (empty -> "/");
/// CONNECT is never passed here; asterisk-form stays "*". Then `Host: <authority>` first (for
/// absolute-form the URI's authority replaces any Host header, RFC 9112 §3.2.2; otherwise the
/// original Host value byte for byte; no Host line for an HTTP/1.0 request that had none), then
/// the other fields in order without the hop-by-hop ones, then `Via: 1.1 watchtower`, the
/// X-Forwarded-* fields and X-Real-IP when `to_local`, `Connection: upgrade` and the Upgrade
/// field when `fwd.upgrade` (and the request has one), and the empty line. Content-Length and
/// Transfer-Encoding are kept as they are: the body is relayed raw.
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
    match head.form {
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
    // RFC 9110 §6.2: an intermediary sends its own HTTP version.
    w.put(b" HTTP/1.1\r\n")?;
    if let Some(authority) = head.authority {
        w.put_field("Host", authority.of(src))?;
    }

    let mut has_upgrade = false;
    for field in fields {
        let kind = Field::of(field.name);
        let dropped = match kind {
            // Written first, above.
            Field::Host => true,
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

    w.put(VIA_LINE)?;
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
/// adds `Via: 1.1 watchtower`; then the client's framing: `Connection: upgrade` for 101, nothing
/// for other 1xx (interim responses say nothing about the connection), else `Connection: close`
/// when `client_keep_alive` is false, `Connection: keep-alive` when it is true and the client
/// spoke HTTP/1.0 (`client_minor_version == 0`), which would otherwise close (RFC 9112 §9.3).
pub fn write_response_head(
    src: &[u8],
    head: &ResponseHead,
    client_keep_alive: bool,
    client_minor_version: u8,
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

    let mut w = Writer::new(out);
    w.put(b"HTTP/1.1 ")?;
    w.put(&status_digits(head.status))?;
    w.put(b" ")?;
    w.put(reason_phrase(head_bytes))?;
    w.put(b"\r\n")?;
    for field in fields {
        let kind = Field::of(field.name);
        let dropped = match kind {
            Field::Upgrade => !switching,
            // An intermediary forwarding TE and CL together must remove CL first, so the
            // client cannot frame by it (RFC 9112 §6.3 ¶3).
            Field::ContentLength => has_transfer_encoding,
            _ => hop_by_hop(kind, field.name, nominations, fields),
        };
        if !dropped {
            w.put(field.name.as_bytes())?;
            w.put(b": ")?;
            w.put_unfolded(field.value)?;
            w.put(b"\r\n")?;
        }
    }
    w.put(VIA_LINE)?;
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
