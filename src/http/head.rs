//! Request and response heads: httparse fills a fixed array of header fields on the stack, then
//! this file applies the framing rules of RFC 9112 and the request-smuggling defences on top,
//! and keeps only byte spans into the caller's buffer (no `String`, no `Vec`). It decides where
//! a message body ends (`BodyKind`) and whether the connection may be reused; walking the body is
//! `body.rs`'s job, and producing the head sent on is `rewrite.rs`'s.
//!
//! Requests are parsed strictly, because an ambiguity the upstream resolves differently from
//! us is a smuggling vector. Responses are parsed liberally (obs-fold, bare LF, stray spaces),
//! because they are re-emitted normalised by `rewrite.rs` and only framing ambiguity matters.

#![deny(
    unsafe_code,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::fmt;

/// Largest head (request or status line, fields, final CRLF) accepted, in bytes.
pub const HEAD_LIMIT_BYTES: usize = 64 * 1024;
/// Most header fields accepted in one head.
pub const MAX_HEADERS: usize = 100;
/// Longest request-target accepted, in bytes.
pub const URI_LIMIT_BYTES: usize = 8 * 1024;

/// How far an unfinished request line may run past `URI_LIMIT_BYTES` (method, spaces, version)
/// before it is refused as too long without waiting for the rest of it.
const REQUEST_LINE_SLACK_BYTES: usize = 64;

/// A byte range into the buffer the head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span `part` occupies inside `buf`; `part` must be a sub-slice of `buf` (an unrelated
    /// slice gives an empty span at the end of `buf` rather than a panic).
    pub(crate) fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = part
            .as_ptr()
            .addr()
            .wrapping_sub(buf.as_ptr().addr())
            .min(buf.len());
        let end = start.saturating_add(part.len()).min(buf.len());
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            end: u32::try_from(end).unwrap_or(u32::MAX),
        }
    }

    /// The bytes of this span in `buf`; empty if the span does not fit `buf`.
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }

    /// The span as text. Heads are validated visible ASCII, except obs-text (bytes >= 0x80) that
    /// httparse lets through in values and targets: a span that is not UTF-8 reads as "".
    pub fn str_of<'a>(&self, buf: &'a [u8]) -> &'a str {
        std::str::from_utf8(self.of(buf)).unwrap_or("")
    }

    /// Holds when the span covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }
}

/// Why a head was refused. Each variant maps to the status code the client is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400: the message says what was wrong.
    Malformed(&'static str),
    /// 431: head larger than `HEAD_LIMIT_BYTES`.
    TooLarge,
    /// 431: more than `MAX_HEADERS` header fields.
    TooManyHeaders,
    /// 414: request-target longer than `URI_LIMIT_BYTES`.
    UriTooLong,
    /// 501: a request transfer coding other than the registered ones (RFC 9112 §6.1: a server
    /// that does not understand a coding SHOULD answer 501). Forwarding it would let an
    /// upstream that reads the list differently ("identity, chunked") frame another body.
    UnknownCoding,
    /// 505: a request line naming HTTP major version 2 or later (RFC 9110 §15.6.6), such as the
    /// HTTP/2 connection preface sent to this HTTP/1.1 port.
    VersionNotSupported(u8),
}

impl HeadError {
    /// The status code a client gets for this error (RFC 9110 §15.5.1, §15.5.15; RFC 6585 §5).
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UriTooLong => 414,
            HeadError::UnknownCoding => 501,
            HeadError::VersionNotSupported(_) => 505,
        }
    }

    /// The reason phrase that goes with `status()`.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Malformed(_) => "Bad Request",
            HeadError::TooLarge | HeadError::TooManyHeaders => "Request Header Fields Too Large",
            HeadError::UriTooLong => "URI Too Long",
            HeadError::UnknownCoding => "Not Implemented",
            HeadError::VersionNotSupported(_) => "HTTP Version Not Supported",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(what) => write!(f, "malformed message head: {what}"),
            HeadError::TooLarge => write!(
                f,
                "the message head is larger than {} KiB",
                HEAD_LIMIT_BYTES / 1024
            ),
            HeadError::TooManyHeaders => write!(
                f,
                "the message head has more than {MAX_HEADERS} header fields"
            ),
            HeadError::UriTooLong => write!(
                f,
                "the request-target is longer than {} KiB",
                URI_LIMIT_BYTES / 1024
            ),
            HeadError::UnknownCoding => write!(
                f,
                "unsupported Transfer-Encoding: only chunked, after gzip, deflate or compress, \
                 can be relayed"
            ),
            HeadError::VersionNotSupported(major) => write!(
                f,
                "HTTP/{major} is not supported on this port: Watchtower speaks HTTP/1.1 here"
            ),
        }
    }
}

impl std::error::Error for HeadError {}

/// The request method; methods are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    Other,
}

impl Method {
    fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }
}

/// The four forms of request-target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query` (§3.2.1).
    Origin,
    /// `http://host:port/path?query`, sent to proxies (§3.2.2).
    Absolute,
    /// `host:port`, CONNECT only (§3.2.3).
    Authority,
    /// `*`, OPTIONS only (§3.2.4).
    Asterisk,
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// The body runs until the sender closes the connection (responses only).
    UntilClose,
}

/// A parsed, validated request head; every `Span` points into the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head including the final CRLFCRLF (and any empty lines before the request
    /// line, which RFC 9112 §2.2 lets us skip).
    pub head_len: usize,
    pub method: Method,
    pub method_span: Span,
    pub form: TargetForm,
    /// The raw request-target.
    pub target_span: Span,
    /// host[:port] authority the request is for: from the URI for Absolute/Authority forms, else
    /// from the Host header (None only if no Host and origin-form with HTTP/1.0).
    pub authority: Option<Span>,
    /// path + query to send upstream in origin-form: for Origin form the target itself; for
    /// Absolute the part after the authority (empty span means "/"); for Authority/Asterisk the
    /// target.
    pub path: Span,
    /// The Host header value.
    pub host_header: Option<Span>,
    /// 0 or 1.
    pub minor_version: u8,
    /// None, Length or Chunked (RFC 9112 §6.3: no body if neither header).
    pub body: BodyKind,
    /// 1.1: unless Connection: close; 1.0: only with Connection: keep-alive.
    pub keep_alive: bool,
    /// An Upgrade header is present and Connection lists "upgrade".
    pub upgrade: bool,
    /// HTTP/1.1 with Expect: 100-continue (RFC 9110 §10.1.1 has 1.0 requests' ignored).
    pub expect_continue: bool,
    /// The request carries a Via field (see [`super::Via::seen_in`] for loops).
    pub has_via: bool,
}

/// A parsed response head; `rewrite.rs` re-reads the fields from the buffer when it forwards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head including the final empty line.
    pub head_len: usize,
    pub status: u16,
    pub minor_version: u8,
    /// RFC 9112 §6.3 for responses: HEAD request, 1xx, 204, 304 -> None; 2xx to CONNECT -> None;
    /// Transfer-Encoding with final chunked -> Chunked; Transfer-Encoding without final chunked ->
    /// UntilClose; both TE and CL -> TE wins and keep_alive = false; Content-Length -> Length;
    /// else UntilClose.
    pub body: BodyKind,
    /// As for requests, and false when the framing forces a close.
    pub keep_alive: bool,
}

/// Header fields this module or `rewrite.rs` acts on; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    KeepAlive,
    ProxyConnection,
    ProxyAuthorization,
    ProxyAuthenticate,
    Te,
    Trailer,
    Via,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRealIp,
    Other,
}

const KNOWN_FIELDS: [(&str, Field); 17] = [
    ("Host", Field::Host),
    ("Content-Length", Field::ContentLength),
    ("Transfer-Encoding", Field::TransferEncoding),
    ("Connection", Field::Connection),
    ("Upgrade", Field::Upgrade),
    ("Expect", Field::Expect),
    ("Keep-Alive", Field::KeepAlive),
    ("Proxy-Connection", Field::ProxyConnection),
    ("Proxy-Authorization", Field::ProxyAuthorization),
    ("Proxy-Authenticate", Field::ProxyAuthenticate),
    ("TE", Field::Te),
    ("Trailer", Field::Trailer),
    ("Via", Field::Via),
    ("X-Forwarded-For", Field::XForwardedFor),
    ("X-Forwarded-Proto", Field::XForwardedProto),
    ("X-Forwarded-Host", Field::XForwardedHost),
    ("X-Real-IP", Field::XRealIp),
];

impl Field {
    /// Classifies a field name, ignoring case (RFC 9110 §5.1).
    pub(crate) fn of(name: &str) -> Field {
        KNOWN_FIELDS
            .iter()
            .find(|(known, _)| known.len() == name.len() && known.eq_ignore_ascii_case(name))
            .map_or(Field::Other, |&(_, field)| field)
    }
}

/// The non-empty elements of a comma-separated field value, OWS trimmed (RFC 9110 §5.6.1).
/// CR and LF are trimmed too: in a response they can only come from obs-fold, which RFC 9112
/// §5.2 has us read as SP.
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// Holds when the comma-separated `value` lists `token`, ignoring case.
pub(crate) fn lists_token(value: &[u8], token: &str) -> bool {
    list_items(value).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

/// Offset of the first byte after the empty lines httparse skips before a start-line
/// (RFC 9112 §2.2).
pub(crate) fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match buf.get(at..) {
            Some([b'\r', b'\n', ..]) => at += 2,
            Some([b'\n', ..]) => at += 1,
            _ => return at,
        }
    }
}

/// The httparse configuration for responses: liberal wherever the result is unambiguous,
/// because `rewrite.rs` re-emits every field normalised (obs-fold unfolded to SP, names without
/// trailing space, unparseable lines left out), so the client sees exactly what we framed by.
pub(crate) fn response_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .ignore_invalid_headers_in_responses(true);
    config
}

/// What the Transfer-Encoding field lines of a message add up to (RFC 9112 §6.1): the lines
/// form one list, and only the final coding decides the framing.
#[derive(Debug, Clone, Copy, Default)]
struct Codings {
    present: bool,
    chunked_count: u8,
    final_is_chunked: bool,
    /// Some coding is not in the IANA registry (see [`KNOWN_CODINGS`]).
    unknown: bool,
}

/// The registered transfer codings (RFC 9110 §18.7, RFC 9112 §7): what a proxy can relay
/// knowing every recipient reads the list the same way. "identity" is not one of them any more.
const KNOWN_CODINGS: [&[u8]; 6] = [
    b"chunked",
    b"gzip",
    b"deflate",
    b"compress",
    b"x-gzip",
    b"x-compress",
];

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list_items(value) {
            let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if is_chunked {
                self.chunked_count = self.chunked_count.saturating_add(1);
            }
            self.final_is_chunked = is_chunked;
            self.unknown |= !KNOWN_CODINGS
                .iter()
                .any(|known| coding.eq_ignore_ascii_case(known));
        }
    }
}

/// What the Connection field lines of a message say (RFC 9112 §9.3, RFC 9110 §7.6.1).
#[derive(Debug, Clone, Copy, Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl ConnectionOptions {
    fn add(&mut self, value: &[u8]) {
        for option in list_items(value) {
            if option.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if option.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if option.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            }
        }
    }

    /// Persistence per RFC 9112 §9.3: HTTP/1.1 unless "close", HTTP/1.0 only with "keep-alive".
    fn persists(&self, minor_version: u8) -> bool {
        if minor_version >= 1 {
            !self.close
        } else {
            self.keep_alive && !self.close
        }
    }
}

/// Folds one Content-Length field line into `seen`. RFC 9110 §8.6 lets a recipient accept a
/// list of identical values ("5, 5" or repeated lines) as that one value; any other list, an
/// empty element, a sign or an overflow is an error (RFC 9112 §6.3 ¶5).
fn add_content_length(value: &[u8], seen: &mut Option<u64>) -> Result<(), HeadError> {
    for item in value.split(|&b| b == b',') {
        let Some(length) = parse_decimal(item.trim_ascii()) else {
            return Err(HeadError::Malformed("invalid Content-Length"));
        };
        match *seen {
            Some(earlier) if earlier != length => {
                return Err(HeadError::Malformed("conflicting Content-Length values"));
            }
            _ => *seen = Some(length),
        }
    }
    Ok(())
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)` means incomplete: read more and call again with the grown buffer. Limits are
/// checked on partial input too, so a client cannot make us buffer more than
/// `HEAD_LIMIT_BYTES` or wait out an endless request line.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    // Never hand httparse more than the limit: the work per call stays bounded however much
    // the client has sent, and a head that does not end inside the window is too large.
    let window = buf.get(..HEAD_LIMIT_BYTES).unwrap_or(buf);
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            check_partial_request_line(window, request.path)?;
            if buf.len() >= HEAD_LIMIT_BYTES {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        }
        Err(error) => return Err(request_error(window, error)),
    };
    let head = window.get(..head_len).unwrap_or(window);

    // RFC 9112 §2.2 lets a recipient accept a bare LF as a line terminator; httparse does.
    // A proxy must not: an upstream that does not would see different lines than we did.
    if has_bare_lf(head) {
        return Err(HeadError::Malformed("bare LF in request head"));
    }

    let target = request.path.unwrap_or("").as_bytes();
    if target.len() > URI_LIMIT_BYTES {
        return Err(HeadError::UriTooLong);
    }
    let method_token = request.method.unwrap_or("").as_bytes();
    let method = Method::from_token(method_token);
    let minor_version = request.version.unwrap_or(1);
    let target_parts = split_target(method, target)?;

    let mut host: Option<&[u8]> = None;
    let mut content_length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut connection = ConnectionOptions::default();
    let mut has_upgrade_field = false;
    let mut expect_continue = false;
    let mut has_via = false;
    for field in request.headers.iter() {
        match Field::of(field.name) {
            Field::Host => {
                // RFC 9112 §3.2: more than one Host line, or an invalid value, is a 400.
                if host.is_some() {
                    return Err(HeadError::Malformed("multiple Host headers"));
                }
                if !field.value.is_empty() && !is_authority(field.value, false) {
                    return Err(HeadError::Malformed("invalid Host header"));
                }
                host = Some(field.value);
            }
            Field::ContentLength => add_content_length(field.value, &mut content_length)?,
            Field::TransferEncoding => codings.add(field.value),
            Field::Connection => connection.add(field.value),
            Field::Upgrade => has_upgrade_field = true,
            Field::Expect => {
                expect_continue |= field.value.eq_ignore_ascii_case(b"100-continue");
            }
            Field::Via => has_via = true,
            _ => {}
        }
    }

    let body = if codings.present {
        // RFC 9112 §6.1: Transfer-Encoding is an HTTP/1.1 feature; a 1.0 message carrying it
        // has faulty framing.
        if minor_version == 0 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        // RFC 9112 §6.1 ¶15: both headers in one request is the classic smuggling vector; a
        // proxy that forwards it lets the upstream pick a different framing than ours.
        if content_length.is_some() {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        // RFC 9112 §6.3 ¶4: a request whose final coding is not chunked cannot be framed;
        // chunked twice is forbidden (§6.1) and one more place for parsers to disagree.
        if !codings.final_is_chunked || codings.chunked_count != 1 {
            return Err(HeadError::Malformed("unsupported Transfer-Encoding"));
        }
        // The framing is clear to us, but "identity, chunked" or "xchunked, chunked" is
        // exactly what an upstream may read as "not chunked" and frame differently (TE.TE).
        if codings.unknown {
            return Err(HeadError::UnknownCoding);
        }
        BodyKind::Chunked
    } else if let Some(length) = content_length {
        BodyKind::Length(length)
    } else {
        // RFC 9112 §6.3 ¶7: a request with neither header has no body.
        BodyKind::None
    };

    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400. CONNECT is let through without
    // one: its authority-form target already names the host, and older clients omit it.
    if minor_version >= 1 && host.is_none() && method != Method::Connect {
        return Err(HeadError::Malformed("missing Host header"));
    }
    let authority = match target_parts.authority {
        Some(authority) => Some(authority),
        None => match host {
            // An empty Host is only valid when the target carries the authority itself.
            Some([]) => return Err(HeadError::Malformed("invalid Host header")),
            Some(host) => Some(host),
            None => None,
        },
    };

    Ok(Some(RequestHead {
        head_len,
        method,
        method_span: Span::within(buf, method_token),
        form: target_parts.form,
        target_span: Span::within(buf, target),
        authority: authority.map(|a| Span::within(buf, a)),
        path: Span::within(buf, target_parts.path),
        host_header: host.map(|h| Span::within(buf, h)),
        minor_version,
        body,
        keep_alive: connection.persists(minor_version),
        upgrade: has_upgrade_field && connection.upgrade,
        expect_continue: expect_continue && minor_version >= 1,
        has_via,
    }))
}

/// Parses a response head from the start of `buf`, framing its body by the method of the
/// request it answers. `Ok(None)` means incomplete.
pub fn parse_response(
    buf: &[u8],
    request_method: Method,
) -> Result<Option<ResponseHead>, HeadError> {
    let window = buf.get(..HEAD_LIMIT_BYTES).unwrap_or(buf);
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let head_len = match response_config().parse_response(&mut response, window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= HEAD_LIMIT_BYTES {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Status | httparse::Error::Version | httparse::Error::Token) => {
            return Err(HeadError::Malformed("invalid response status line"));
        }
        Err(_) => return Err(HeadError::Malformed("invalid response header")),
    };
    let status = response.code.unwrap_or(0);
    // RFC 9110 §15: values outside 100..=599 are invalid. Relaying a 600-999 would hand the
    // client a status it cannot interpret; the proxy answers 502 instead.
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("invalid response status code"));
    }
    let minor_version = response.version.unwrap_or(1);

    let mut content_length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut connection = ConnectionOptions::default();
    for field in response.headers.iter() {
        match Field::of(field.name) {
            Field::ContentLength => add_content_length(field.value, &mut content_length)?,
            Field::TransferEncoding => codings.add(field.value),
            Field::Connection => connection.add(field.value),
            _ => {}
        }
    }

    // RFC 9112 §6.3 ¶1-2: these responses end with their head whatever their fields say.
    let bodiless = request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (request_method == Method::Connect && (200..300).contains(&status));
    let body = if bodiless {
        BodyKind::None
    } else if codings.present {
        // RFC 9112 §6.3 ¶3-4: Transfer-Encoding overrides Content-Length; without a final
        // chunked the response runs until the server closes.
        if codings.final_is_chunked {
            BodyKind::Chunked
        } else {
            BodyKind::UntilClose
        }
    } else if let Some(length) = content_length {
        BodyKind::Length(length)
    } else {
        // RFC 9112 §6.3 ¶8: no framing fields, the body is everything until close.
        BodyKind::UntilClose
    };

    let keep_alive = connection.persists(minor_version)
        && body != BodyKind::UntilClose
        // RFC 9112 §6.3 ¶3: TE and CL together "ought to be handled as an error"; we relay by
        // TE and close afterwards so nothing that follows can be misread.
        && !(codings.present && content_length.is_some())
        // RFC 9112 §6.1: Transfer-Encoding in a 1.0 message means faulty framing: close after.
        && !(codings.present && minor_version == 0);

    Ok(Some(ResponseHead {
        head_len,
        status,
        minor_version,
        body,
        keep_alive,
    }))
}

/// The parts of a request-target that the proxy cares about, as sub-slices of the target.
struct TargetParts<'a> {
    form: TargetForm,
    authority: Option<&'a [u8]>,
    path: &'a [u8],
}

/// Classifies the request-target (RFC 9112 §3.2) and checks that it fits the method.
fn split_target(method: Method, target: &[u8]) -> Result<TargetParts<'_>, HeadError> {
    // §3.2.3: CONNECT uses authority-form, and only authority-form; the port is required.
    if method == Method::Connect {
        if !is_authority(target, true) {
            return Err(HeadError::Malformed("CONNECT needs a host:port target"));
        }
        return Ok(TargetParts {
            form: TargetForm::Authority,
            authority: Some(target),
            path: target,
        });
    }
    match target {
        [b'/', ..] => Ok(TargetParts {
            form: TargetForm::Origin,
            authority: None,
            path: target,
        }),
        // §3.2.4: asterisk-form is only used for a server-wide OPTIONS.
        b"*" if method == Method::Options => Ok(TargetParts {
            form: TargetForm::Asterisk,
            authority: None,
            path: target,
        }),
        b"*" => Err(HeadError::Malformed(
            "asterisk-form (*) is only allowed with OPTIONS",
        )),
        _ => split_absolute_target(target),
    }
}

/// §3.2.2: absolute-form, which a proxy must accept. Only `http` is proxied in the clear; an
/// `https` URL has to come through CONNECT, which is where TLS interception happens.
fn split_absolute_target(target: &[u8]) -> Result<TargetParts<'_>, HeadError> {
    let colon = target.iter().position(|&b| b == b':');
    let (scheme, rest) = match colon {
        Some(at) => (
            target.get(..at).unwrap_or(&[]),
            target.get(at + 1..).unwrap_or(&[]),
        ),
        None => return Err(HeadError::Malformed("invalid request-target")),
    };
    let Some(hierarchy) = rest.strip_prefix(b"//").filter(|_| is_scheme(scheme)) else {
        // "host:port" parses as a scheme with no "//"; say what it is rather than "invalid".
        if is_authority(target, true) {
            return Err(HeadError::Malformed(
                "authority-form is only allowed with CONNECT",
            ));
        }
        return Err(HeadError::Malformed("invalid request-target"));
    };
    if !scheme.eq_ignore_ascii_case(b"http") {
        return Err(HeadError::Malformed(
            "only http:// URLs can be proxied (use CONNECT for https)",
        ));
    }
    let authority_len = hierarchy
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(hierarchy.len());
    let (authority, path) = hierarchy.split_at(authority_len);
    // RFC 9110 §4.2.1: an http URI with an empty host is invalid and must be rejected.
    if authority.is_empty() {
        return Err(HeadError::Malformed("missing host in request-target"));
    }
    // RFC 9110 §4.2.4: userinfo is deprecated in http URIs; refusing it also removes the
    // "http://trusted@evil/" trick for disagreeing about which host is meant.
    if authority.contains(&b'@') {
        return Err(HeadError::Malformed("userinfo (@) in request-target"));
    }
    if !is_authority(authority, false) {
        return Err(HeadError::Malformed("invalid host in request-target"));
    }
    Ok(TargetParts {
        form: TargetForm::Absolute,
        authority: Some(authority),
        path,
    })
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(scheme: &[u8]) -> bool {
    match scheme {
        [first, rest @ ..] => {
            first.is_ascii_alphabetic()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        }
        [] => false,
    }
}

/// RFC 3986 §3.2: `host [ ":" port ]` without userinfo, host a reg-name or a bracketed IP
/// literal, port 1-5 digits up to 65535 (required when `port_required`).
pub(crate) fn is_authority(authority: &[u8], port_required: bool) -> bool {
    let port = if let Some(literal) = authority.strip_prefix(b"[") {
        let Some(close) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let (address, after) = literal.split_at(close);
        // Brackets hold an IPv6 address and nothing else (RFC 3986 §3.2.2; zone ids and
        // IPvFuture are not dialled): `[app.test]` must not route as the name inside.
        let valid_address = std::str::from_utf8(address)
            .is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok());
        if !valid_address {
            return false;
        }
        match after {
            [b']'] => None,
            [b']', b':', port @ ..] => Some(port),
            _ => return false,
        }
    } else {
        let (host, port) = match authority.iter().rposition(|&b| b == b':') {
            Some(at) => (
                authority.get(..at).unwrap_or(&[]),
                Some(authority.get(at + 1..).unwrap_or(&[])),
            ),
            None => (authority, None),
        };
        if host.is_empty() || !host.iter().all(|&b| is_reg_name_byte(b)) {
            return false;
        }
        port
    };
    match port {
        None => !port_required,
        Some(digits) => digits.len() <= 5 && parse_decimal(digits).is_some_and(|p| p <= 65535),
    }
}

/// unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// tchar (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Holds when some LF in `head` is not preceded by CR.
fn has_bare_lf(head: &[u8]) -> bool {
    let mut previous = 0u8;
    for &b in head {
        if b == b'\n' && previous != b'\r' {
            return true;
        }
        previous = b;
    }
    false
}

/// Refuses an unfinished request line that is already too long to become acceptable, so a
/// client cannot keep us waiting for a target we would refuse anyway.
fn check_partial_request_line(window: &[u8], parsed_target: Option<&str>) -> Result<(), HeadError> {
    match parsed_target {
        Some(target) if target.len() > URI_LIMIT_BYTES => Err(HeadError::UriTooLong),
        Some(_) => Ok(()),
        None => {
            // httparse has not found the end of the target yet, so the request line is not
            // finished: everything after the leading empty lines belongs to it.
            let line_len = window.len().saturating_sub(skip_empty_lines(window));
            if line_len > URI_LIMIT_BYTES + REQUEST_LINE_SLACK_BYTES {
                Err(HeadError::UriTooLong)
            } else {
                Ok(())
            }
        }
    }
}

/// Turns an httparse error into a message that says what was wrong; the error paths re-scan
/// the head to tell apart cases httparse reports alike.
fn request_error(window: &[u8], error: httparse::Error) -> HeadError {
    match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed(explain_header_name_error(window)),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed(explain_new_line_error(window)),
        httparse::Error::Version => match unsupported_major_version(window) {
            Some(major) => HeadError::VersionNotSupported(major),
            None => HeadError::Malformed("invalid request line"),
        },
        httparse::Error::Token | httparse::Error::Status => {
            HeadError::Malformed("invalid request line")
        }
    }
}

/// The major version of a request line ending in `HTTP/<d>` or `HTTP/<d>.<d>` with `d` of 2 or
/// more (the HTTP/2 preface is `PRI * HTTP/2.0`). HTTP/0.x and HTTP/1.x that httparse refuses
/// stay plain malformed request lines (SPEC §10: HTTP/0.9 is a bad request line).
fn unsupported_major_version(window: &[u8]) -> Option<u8> {
    let start = skip_empty_lines(window);
    let line = window.get(start..).unwrap_or(&[]);
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(lf) => line.get(..lf).unwrap_or(&[]),
        None => line,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next()?;
    let major = match version.strip_prefix(b"HTTP/")? {
        [major] | [major, b'.', b'0'..=b'9'] => *major,
        _ => return None,
    };
    match major {
        b'2'..=b'9' => Some(major - b'0'),
        _ => None,
    }
}

/// The field lines after the request line, split on LF with any CR before it removed.
fn field_lines(window: &[u8]) -> impl Iterator<Item = &[u8]> {
    let start = skip_empty_lines(window);
    let after_start = window.get(start..).unwrap_or(&[]);
    let fields = after_start
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|lf| after_start.get(lf + 1..))
        .unwrap_or(&[]);
    fields
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
}

/// httparse reports obs-fold, whitespace before the colon and a bad name byte all as
/// `HeaderName`; find the first field line that is not `token ":"` and say which it was.
fn explain_header_name_error(window: &[u8]) -> &'static str {
    for (index, line) in field_lines(window).enumerate() {
        if let [b' ' | b'\t', ..] = line {
            // RFC 9112 §5.2: obs-fold in a request is rejected with 400. Whitespace before the
            // first field line (§2.2) is rejected the same way.
            return if index == 0 {
                "whitespace before the first header field"
            } else {
                "obsolete line folding"
            };
        }
        let name_len = line
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(line.len());
        let after_name = line.get(name_len..).unwrap_or(&[]);
        match after_name.first() {
            Some(b':') if name_len > 0 => continue,
            Some(b' ' | b'\t') if name_len > 0 => {
                let after_space = after_name.trim_ascii_start();
                // RFC 9112 §5.1: whitespace between name and colon must be rejected with 400.
                return if after_space.first() == Some(&b':') {
                    "whitespace before colon in header name"
                } else {
                    "invalid header name"
                };
            }
            _ => return "invalid header name",
        }
    }
    "invalid header name"
}

/// httparse reports a CR not followed by LF as `NewLine`, as it does junk after the version.
fn explain_new_line_error(window: &[u8]) -> &'static str {
    let start = skip_empty_lines(window);
    let after_start = window.get(start..).unwrap_or(&[]);
    let Some(lf) = after_start.iter().position(|&b| b == b'\n') else {
        return "invalid request line";
    };
    let line = after_start.get(..lf).unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let well_formed =
        !line.contains(&b'\r') && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"));
    if well_formed {
        "bare CR in request head"
    } else {
        "invalid request line"
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// A request head as text, for comparing against a table row.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen<'a> {
        method: Method,
        form: TargetForm,
        target: &'a str,
        authority: Option<&'a str>,
        path: &'a str,
        host_header: Option<&'a str>,
        minor_version: u8,
        body: BodyKind,
        keep_alive: bool,
        upgrade: bool,
        expect_continue: bool,
    }

    fn seen<'a>(buf: &'a [u8], head: &RequestHead) -> Seen<'a> {
        Seen {
            method: head.method,
            form: head.form,
            target: head.target_span.str_of(buf),
            authority: head.authority.map(|a| a.str_of(buf)),
            path: head.path.str_of(buf),
            host_header: head.host_header.map(|h| h.str_of(buf)),
            minor_version: head.minor_version,
            body: head.body,
            keep_alive: head.keep_alive,
            upgrade: head.upgrade,
            expect_continue: head.expect_continue,
        }
    }

    /// The defaults of a plain `GET / HTTP/1.1` with `Host: a`; rows override what differs.
    fn plain() -> Seen<'static> {
        Seen {
            method: Method::Get,
            form: TargetForm::Origin,
            target: "/",
            authority: Some("a"),
            path: "/",
            host_header: Some("a"),
            minor_version: 1,
            body: BodyKind::None,
            keep_alive: true,
            upgrade: false,
            expect_continue: false,
        }
    }

    fn valid_requests() -> Vec<(&'static str, Seen<'static>)> {
        vec![
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", plain()),
            (
                "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.test:8080\r\n\r\n",
                Seen {
                    target: "/a/b?x=1&y=%20",
                    path: "/a/b?x=1&y=%20",
                    authority: Some("example.test:8080"),
                    host_header: Some("example.test:8080"),
                    ..plain()
                },
            ),
            (
                "GET http://example.test HTTP/1.1\r\nHost: a\r\n\r\n",
                Seen {
                    form: TargetForm::Absolute,
                    target: "http://example.test",
                    authority: Some("example.test"),
                    path: "",
                    ..plain()
                },
            ),
            (
                "GET http://example.test:8080/p/q?z=1 HTTP/1.1\r\nHost: other\r\n\r\n",
                Seen {
                    form: TargetForm::Absolute,
                    target: "http://example.test:8080/p/q?z=1",
                    authority: Some("example.test:8080"),
                    path: "/p/q?z=1",
                    host_header: Some("other"),
                    ..plain()
                },
            ),
            (
                "GET HTTP://Example.TEST?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
                Seen {
                    form: TargetForm::Absolute,
                    target: "HTTP://Example.TEST?x=1",
                    authority: Some("Example.TEST"),
                    path: "?x=1",
                    ..plain()
                },
            ),
            (
                "GET http://[::1]:3000/ HTTP/1.1\r\nHost: [::1]:3000\r\n\r\n",
                Seen {
                    form: TargetForm::Absolute,
                    target: "http://[::1]:3000/",
                    authority: Some("[::1]:3000"),
                    path: "/",
                    host_header: Some("[::1]:3000"),
                    ..plain()
                },
            ),
            (
                "GET http://example.test/ HTTP/1.1\r\nHost:\r\n\r\n",
                Seen {
                    form: TargetForm::Absolute,
                    target: "http://example.test/",
                    authority: Some("example.test"),
                    path: "/",
                    host_header: Some(""),
                    ..plain()
                },
            ),
            (
                "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
                Seen {
                    method: Method::Connect,
                    form: TargetForm::Authority,
                    target: "example.test:443",
                    authority: Some("example.test:443"),
                    path: "example.test:443",
                    host_header: Some("example.test:443"),
                    ..plain()
                },
            ),
            (
                "CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n",
                Seen {
                    method: Method::Connect,
                    form: TargetForm::Authority,
                    target: "[2001:db8::1]:8443",
                    authority: Some("[2001:db8::1]:8443"),
                    path: "[2001:db8::1]:8443",
                    host_header: None,
                    ..plain()
                },
            ),
            (
                "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
                Seen {
                    method: Method::Options,
                    form: TargetForm::Asterisk,
                    target: "*",
                    path: "*",
                    ..plain()
                },
            ),
            (
                "GET / HTTP/1.0\r\n\r\n",
                Seen {
                    authority: None,
                    host_header: None,
                    minor_version: 0,
                    keep_alive: false,
                    ..plain()
                },
            ),
            (
                "GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n",
                Seen {
                    minor_version: 0,
                    ..plain()
                },
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n",
                Seen {
                    keep_alive: false,
                    ..plain()
                },
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                Seen {
                    keep_alive: false,
                    ..plain()
                },
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                Seen {
                    method: Method::Post,
                    body: BodyKind::Length(5),
                    ..plain()
                },
            ),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\ncontent-length: 005\r\n\r\n",
                Seen {
                    method: Method::Put,
                    body: BodyKind::Length(5),
                    ..plain()
                },
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                Seen {
                    method: Method::Post,
                    body: BodyKind::Length(0),
                    ..plain()
                },
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Seen {
                    method: Method::Post,
                    body: BodyKind::Chunked,
                    ..plain()
                },
            ),
            (
                "PATCH / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n",
                Seen {
                    method: Method::Patch,
                    body: BodyKind::Chunked,
                    ..plain()
                },
            ),
            (
                "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
                Seen {
                    target: "/ws",
                    path: "/ws",
                    upgrade: true,
                    ..plain()
                },
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
                plain(),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
                plain(),
            ),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
                Seen {
                    method: Method::Put,
                    body: BodyKind::Length(1),
                    expect_continue: true,
                    ..plain()
                },
            ),
            (
                "PUT / HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                Seen {
                    method: Method::Put,
                    minor_version: 0,
                    body: BodyKind::Length(1),
                    keep_alive: false,
                    ..plain()
                },
            ),
            (
                "\r\n\r\nDELETE /x HTTP/1.1\r\nHost: a\r\n\r\n",
                Seen {
                    method: Method::Delete,
                    target: "/x",
                    path: "/x",
                    ..plain()
                },
            ),
            (
                "HEAD / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n",
                Seen {
                    method: Method::Head,
                    ..plain()
                },
            ),
            (
                "PURGE / HTTP/1.1\r\nHost: a\r\n\r\n",
                Seen {
                    method: Method::Other,
                    ..plain()
                },
            ),
            (
                "get / HTTP/1.1\r\nHost: a\r\n\r\n",
                Seen {
                    method: Method::Other,
                    ..plain()
                },
            ),
        ]
    }

    #[test]
    fn parse_request_accepts_every_valid_form() {
        for (input, expected) in valid_requests() {
            let mut buf = input.as_bytes().to_vec();
            buf.extend_from_slice(b"next bytes");
            let head = parse_request(&buf)
                .unwrap_or_else(|e| panic!("{input:?}: {e}"))
                .unwrap_or_else(|| panic!("{input:?}: incomplete"));
            assert_eq!(head.head_len, input.len(), "{input:?}");
            assert_eq!(seen(&buf, &head), expected, "{input:?}");
            assert_eq!(
                head.method_span.of(&buf),
                input.trim_start().split(' ').next().unwrap().as_bytes()
            );
        }
    }

    #[test]
    fn parse_request_every_prefix_is_incomplete() {
        for (input, _) in valid_requests() {
            for end in 0..input.len() {
                assert_eq!(
                    parse_request(&input.as_bytes()[..end]),
                    Ok(None),
                    "{:?}",
                    &input[..end]
                );
            }
        }
    }

    fn bad(message: &'static str) -> HeadError {
        HeadError::Malformed(message)
    }

    #[test]
    fn parse_request_refuses_smuggling_vectors() {
        let table: &[(&str, HeadError)] = &[
            (
                "GET / HTTP/1.1\nHost: a\r\n\r\n",
                bad("bare LF in request head"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
                bad("bare LF in request head"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\n\n",
                bad("bare LF in request head"),
            ),
            (
                "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("bare LF in request head"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n",
                bad("obsolete line folding"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n",
                bad("obsolete line folding"),
            ),
            (
                "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
                bad("whitespace before the first header field"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
                bad("whitespace before colon in header name"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n",
                bad("whitespace before colon in header name"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX(: b\r\n\r\n",
                bad("invalid header name"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
                bad("invalid header name"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
                bad("invalid header value"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
                bad("invalid header value"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\n\rX",
                bad("bare CR in request head"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad("both Content-Length and Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
                bad("both Content-Length and Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                bad("conflicting Content-Length values"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
                bad("conflicting Content-Length values"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                bad("unsupported Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                bad("unsupported Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                bad("unsupported Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad("unsupported Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
                bad("unsupported Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
                bad("unsupported Transfer-Encoding"),
            ),
            (
                "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad("Transfer-Encoding in an HTTP/1.0 request"),
            ),
            (
                "GET / HTTP/0.9\r\nHost: a\r\n\r\n",
                bad("invalid request line"),
            ),
            (
                "GET / HTTP/20\r\nHost: a\r\n\r\n",
                bad("invalid request line"),
            ),
            (
                "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
                bad("invalid request line"),
            ),
            (
                "GET / HTTP/1.1x\r\nHost: a\r\n\r\n",
                bad("invalid request line"),
            ),
            ("GET /\r\n\r\n", bad("invalid request line")),
            (
                "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("invalid request line"),
            ),
            (
                "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("invalid request line"),
            ),
            ("GET / HTTP/1.1\r\n\r\n", bad("missing Host header")),
            ("GET http://a/ HTTP/1.1\r\n\r\n", bad("missing Host header")),
            (
                "GET / HTTP/1.1\r\nHost:\r\n\r\n",
                bad("invalid Host header"),
            ),
            (
                "GET / HTTP/1.0\r\nHost:\r\n\r\n",
                bad("invalid Host header"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
                bad("invalid Host header"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
                bad("invalid Host header"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                bad("invalid Host header"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
                bad("invalid Host header"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: [app.test]\r\n\r\n",
                bad("invalid Host header"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]:80\r\n\r\n",
                bad("invalid Host header"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                bad("multiple Host headers"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                bad("multiple Host headers"),
            ),
            (
                "GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("only http:// URLs can be proxied (use CONNECT for https)"),
            ),
            (
                "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("only http:// URLs can be proxied (use CONNECT for https)"),
            ),
            (
                "GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("missing host in request-target"),
            ),
            (
                "GET http://?q HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("missing host in request-target"),
            ),
            (
                "GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("userinfo (@) in request-target"),
            ),
            (
                "GET http://a:b/ HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("invalid host in request-target"),
            ),
            (
                "GET http:a HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("invalid request-target"),
            ),
            (
                "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("invalid request-target"),
            ),
            (
                "GET a.test:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("authority-form is only allowed with CONNECT"),
            ),
            (
                "CONNECT a.test HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("CONNECT needs a host:port target"),
            ),
            (
                "CONNECT a.test: HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("CONNECT needs a host:port target"),
            ),
            (
                "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("CONNECT needs a host:port target"),
            ),
            (
                "CONNECT http://a.test:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("CONNECT needs a host:port target"),
            ),
            (
                "CONNECT a.test:65536 HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("CONNECT needs a host:port target"),
            ),
            (
                "CONNECT u@a.test:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("CONNECT needs a host:port target"),
            ),
            (
                "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
                bad("asterisk-form (*) is only allowed with OPTIONS"),
            ),
        ];
        for (input, expected) in table {
            assert_eq!(parse_request(input.as_bytes()), Err(*expected), "{input:?}");
            assert_eq!(expected.status(), 400);
        }
    }

    #[test]
    fn parse_request_refuses_unknown_codings_and_later_versions() {
        let table: &[(&str, HeadError)] = &[
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
                HeadError::UnknownCoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::UnknownCoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;level=1, chunked\r\n\r\n",
                HeadError::UnknownCoding,
            ),
            // A final coding other than chunked stays a 400 (RFC 9112 §6.3 ¶4 says MUST).
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                HeadError::Malformed("unsupported Transfer-Encoding"),
            ),
            (
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                HeadError::VersionNotSupported(2),
            ),
            (
                "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                HeadError::VersionNotSupported(2),
            ),
            (
                "GET / HTTP/3\r\nHost: a\r\n\r\n",
                HeadError::VersionNotSupported(3),
            ),
            // Still incomplete, but no later byte can make it HTTP/1.x.
            ("GET / HTTP/2", HeadError::VersionNotSupported(2)),
        ];
        for (input, expected) in table {
            assert_eq!(parse_request(input.as_bytes()), Err(*expected), "{input:?}");
        }
        assert_eq!(HeadError::UnknownCoding.status(), 501);
        assert_eq!(HeadError::VersionNotSupported(2).status(), 505);
        assert_eq!(
            HeadError::VersionNotSupported(2).to_string(),
            "HTTP/2 is not supported on this port: Watchtower speaks HTTP/1.1 here"
        );
        // Every registered coding before chunked is relayed.
        for coding in [
            "gzip",
            "GZIP",
            "deflate",
            "compress",
            "x-gzip",
            "x-compress",
        ] {
            let request = format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}, chunked\r\n\r\n"
            );
            let head = parse_request(request.as_bytes()).unwrap().unwrap();
            assert_eq!(head.body, BodyKind::Chunked, "{coding}");
        }
    }

    #[test]
    fn parse_request_enforces_limits() {
        // A complete head of exactly the limit is fine; one byte more is too large.
        let mut exact = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        exact.resize(HEAD_LIMIT_BYTES - 4, b'v');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&exact).unwrap().unwrap().head_len,
            HEAD_LIMIT_BYTES
        );
        let mut over = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        over.resize(HEAD_LIMIT_BYTES - 3, b'v');
        over.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&over), Err(HeadError::TooLarge));
        // Unfinished and already at the limit.
        assert_eq!(
            parse_request(&over[..HEAD_LIMIT_BYTES]),
            Err(HeadError::TooLarge)
        );
        assert_eq!(parse_request(&over[..HEAD_LIMIT_BYTES - 1]), Ok(None));

        let head_with_fields = |count: usize| {
            let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            for i in 1..count {
                head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            head
        };
        assert!(
            parse_request(&head_with_fields(MAX_HEADERS))
                .unwrap()
                .is_some()
        );
        let too_many = head_with_fields(MAX_HEADERS + 1);
        assert_eq!(parse_request(&too_many), Err(HeadError::TooManyHeaders));
        // Found before the head ends.
        assert_eq!(
            parse_request(&too_many[..too_many.len() - 2]),
            Err(HeadError::TooManyHeaders)
        );

        let with_target = |len: usize| {
            let mut head = b"GET /".to_vec();
            head.resize(4 + len, b'a');
            head.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
            head
        };
        assert!(
            parse_request(&with_target(URI_LIMIT_BYTES))
                .unwrap()
                .is_some()
        );
        let long = with_target(URI_LIMIT_BYTES + 1);
        assert_eq!(parse_request(&long), Err(HeadError::UriTooLong));
        // Known as soon as the target has ended, before the head has.
        assert_eq!(
            parse_request(&long[..URI_LIMIT_BYTES + 20]),
            Err(HeadError::UriTooLong)
        );
        // An unfinished target is refused once it cannot fit any more.
        let endless = vec![b'/'; URI_LIMIT_BYTES + 64];
        let mut endless_line = b"GET ".to_vec();
        endless_line.extend_from_slice(&endless);
        assert_eq!(
            parse_request(&endless_line[..URI_LIMIT_BYTES + 64]),
            Ok(None)
        );
        assert_eq!(parse_request(&endless_line), Err(HeadError::UriTooLong));
    }

    #[test]
    fn head_errors_map_to_statuses() {
        let table = [
            (HeadError::Malformed("x"), 400, "Bad Request"),
            (HeadError::TooLarge, 431, "Request Header Fields Too Large"),
            (
                HeadError::TooManyHeaders,
                431,
                "Request Header Fields Too Large",
            ),
            (HeadError::UriTooLong, 414, "URI Too Long"),
            (HeadError::UnknownCoding, 501, "Not Implemented"),
            (
                HeadError::VersionNotSupported(2),
                505,
                "HTTP Version Not Supported",
            ),
        ];
        for (error, status, reason) in table {
            assert_eq!((error.status(), error.reason()), (status, reason));
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(
            HeadError::Malformed("missing Host header").to_string(),
            "malformed message head: missing Host header"
        );
    }

    #[test]
    fn spans_never_panic() {
        let buf = b"abc";
        assert_eq!(Span { start: 1, end: 3 }.of(buf), b"bc");
        assert_eq!(Span { start: 2, end: 9 }.of(buf), b"");
        assert_eq!(Span { start: 3, end: 1 }.of(buf), b"");
        assert!(Span { start: 3, end: 1 }.is_empty());
        assert_eq!(Span { start: 3, end: 1 }.len(), 0);
        assert_eq!(Span { start: 0, end: 2 }.str_of(b"\xff\xfe"), "");
        assert_eq!(Span::within(buf, &buf[1..2]), Span { start: 1, end: 2 });
        assert_eq!(Span::within(buf, b"elsewhere").of(buf), b"");
    }

    /// What a row expects of a response head: body, keep_alive.
    fn response(
        input: &str,
        method: Method,
    ) -> Result<Option<(u16, u8, BodyKind, bool)>, HeadError> {
        parse_response(input.as_bytes(), method).map(|head| {
            head.map(|h| {
                assert!(h.head_len <= input.len());
                (h.status, h.minor_version, h.body, h.keep_alive)
            })
        })
    }

    #[test]
    fn parse_response_frames_bodies() {
        use BodyKind::{Chunked, Length, UntilClose};
        const NO_BODY: BodyKind = BodyKind::None;
        let table: &[(&str, Method, u16, u8, BodyKind, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                200,
                1,
                Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Head,
                200,
                1,
                NO_BODY,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Head,
                200,
                1,
                NO_BODY,
                true,
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\n",
                Method::Put,
                100,
                1,
                NO_BODY,
                true,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                Method::Get,
                101,
                1,
                NO_BODY,
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                Method::Delete,
                204,
                1,
                NO_BODY,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                Method::Get,
                304,
                1,
                NO_BODY,
                true,
            ),
            (
                "HTTP/1.1 200 Connection established\r\n\r\n",
                Method::Connect,
                200,
                1,
                NO_BODY,
                true,
            ),
            (
                "HTTP/1.1 407 Proxy Auth\r\nContent-Length: 3\r\n\r\n",
                Method::Connect,
                407,
                1,
                Length(3),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Get,
                200,
                1,
                Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Method::Get,
                200,
                1,
                Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Method::Get,
                200,
                1,
                UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                200,
                1,
                Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Method::Get,
                200,
                1,
                UntilClose,
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                200,
                0,
                Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
                Method::Get,
                200,
                0,
                Length(5),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
                Method::Get,
                200,
                0,
                Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                Method::Get,
                200,
                1,
                Length(5),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Method::Get,
                200,
                1,
                Length(5),
                true,
            ),
            // Liberal where nothing is ambiguous: bare LF, obs-fold, space before colon.
            (
                "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
                Method::Get,
                200,
                1,
                Length(0),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 1\r\n\r\n",
                Method::Get,
                200,
                1,
                Length(1),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n",
                Method::Get,
                200,
                1,
                Length(2),
                true,
            ),
            (
                "HTTP/1.1 404\r\nContent-Length: 2\r\n\r\n",
                Method::Get,
                404,
                1,
                Length(2),
                true,
            ),
            (
                "HTTP/1.1  503  Busy\r\nContent-Length: 2\r\n\r\n",
                Method::Get,
                503,
                1,
                Length(2),
                true,
            ),
        ];
        for &(input, method, status, minor, body, keep_alive) in table {
            assert_eq!(
                response(input, method),
                Ok(Some((status, minor, body, keep_alive))),
                "{input:?}"
            );
            assert_eq!(
                parse_response(input.as_bytes(), method)
                    .unwrap()
                    .unwrap()
                    .head_len,
                input.len()
            );
            for end in 0..input.len() {
                assert_eq!(
                    response(&input[..end], method),
                    Ok(None),
                    "{:?}",
                    &input[..end]
                );
            }
        }
    }

    #[test]
    fn parse_response_refuses_ambiguous_framing() {
        let table: &[(&str, HeadError)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                bad("conflicting Content-Length values"),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                bad("conflicting Content-Length values"),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n 2\r\n\r\n",
                bad("invalid Content-Length"),
            ),
            ("HTTP/1.1 OK\r\n\r\n", bad("invalid response status line")),
            ("HTTP/2 200 OK\r\n\r\n", bad("invalid response status line")),
            (
                "HTTP/1.1 099 Odd\r\n\r\n",
                bad("invalid response status code"),
            ),
            (
                "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
                bad("invalid response status code"),
            ),
            (
                "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
                bad("invalid response status code"),
            ),
        ];
        for (input, expected) in table {
            assert_eq!(
                parse_response(input.as_bytes(), Method::Get),
                Err(*expected),
                "{input:?}"
            );
        }
        // The edges of the valid range.
        for status in [100, 599] {
            let input = format!("HTTP/1.1 {status} Edge\r\nContent-Length: 0\r\n\r\n");
            let head = parse_response(input.as_bytes(), Method::Get)
                .unwrap()
                .unwrap();
            assert_eq!(head.status, status);
        }
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(HEAD_LIMIT_BYTES, b'v');
        assert_eq!(
            parse_response(&big[..HEAD_LIMIT_BYTES - 1], Method::Get),
            Ok(None)
        );
        assert_eq!(parse_response(&big, Method::Get), Err(HeadError::TooLarge));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_response(&many, Method::Get),
            Err(HeadError::TooManyHeaders)
        );
    }
}
