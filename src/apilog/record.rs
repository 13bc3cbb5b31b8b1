//! [`ApiRecord`], the one value the event loop hands to the log per exchange, and its two
//! spellings: the `api_log` JSON line (SPEC §9, §10) and the human access line for stderr.
//!
//! Records are built on the loop thread, so [`Text`] keeps short strings inline and building a
//! record does not touch the heap; the formatting below runs on the log worker
//! (`super::worker`), which owns every output buffer. Deciding what goes into a record (status,
//! route, byte counts) is the session's job, not this file's.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes of text a [`Text`] holds without allocating. A host name, a method, a route id, an
/// `ip:port` and most paths and error sentences fit.
const INLINE_CAPACITY: usize = 96;

// The inline length is stored in a `u8`.
const _: () = assert!(INLINE_CAPACITY <= u8::MAX as usize);

/// Short text carried inside a record without a heap allocation when it fits (the event loop
/// sends one record per exchange and must not allocate per request). Longer text goes to a
/// `Box<str>`. Never truncates.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is valid UTF-8: it is only ever filled from whole `&str`s.
    Inline {
        len: u8,
        bytes: [u8; INLINE_CAPACITY],
    },
    Heap(Box<str>),
}

impl Text {
    /// The empty text; allocates nothing.
    pub const fn empty() -> Text {
        Text(Repr::Inline {
            len: 0,
            bytes: [0; INLINE_CAPACITY],
        })
    }

    /// Copies `s`: inline when it fits, else into one heap allocation.
    // Named like `FromStr::from_str` because callers were written against this name; it cannot
    // fail, so it returns `Text` rather than a `Result` (`From<&str>` and `FromStr` exist too).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(s: &str) -> Text {
        match Text::inline(s) {
            Some(text) => text,
            None => Text(Repr::Heap(Box::from(s))),
        }
    }

    /// Text from request bytes, each invalid UTF-8 sequence replaced by U+FFFD (as
    /// `String::from_utf8_lossy` does), without an intermediate `String`.
    pub fn from_bytes_lossy(b: &[u8]) -> Text {
        if let Ok(s) = std::str::from_utf8(b) {
            return Text::from_str(s);
        }
        let mut builder = TextBuilder::new();
        for chunk in b.utf8_chunks() {
            builder.push(chunk.valid());
            if !chunk.invalid().is_empty() {
                builder.push("\u{FFFD}");
            }
        }
        builder.finish()
    }

    /// Formats `args` straight into inline storage, moving to the heap only if the result
    /// outgrows it: `Text::from_fmt(format_args!("upstream {addr} refused the connection"))`.
    pub fn from_fmt(args: fmt::Arguments<'_>) -> Text {
        if let Some(s) = args.as_str() {
            return Text::from_str(s);
        }
        let mut builder = TextBuilder::new();
        // `TextBuilder` itself never fails; an error can only come from a `Display` impl that
        // reports one, and then the text written so far is the best we have.
        let _ = builder.write_fmt(args);
        builder.finish()
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Cannot fail (see `Repr::Inline`); the empty fallback only avoids a panic path.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Repr::Inline { len, .. } => *len == 0,
            Repr::Heap(s) => s.is_empty(),
        }
    }

    fn inline(s: &str) -> Option<Text> {
        let mut bytes = [0; INLINE_CAPACITY];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        let len = s.len() as u8; // fits: `s.len() <= INLINE_CAPACITY <= u8::MAX`
        Some(Text(Repr::Inline { len, bytes }))
    }
}

impl Default for Text {
    fn default() -> Text {
        Text::empty()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::from_str(s)
    }
}

impl std::str::FromStr for Text {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Text, Self::Err> {
        Ok(Text::from_str(s))
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Accumulates text inline and spills to a `String` on the first write that would not fit.
struct TextBuilder {
    len: usize,
    bytes: [u8; INLINE_CAPACITY],
    /// `Some` once the text outgrew `bytes`; from then on everything goes here.
    heap: Option<String>,
}

impl TextBuilder {
    fn new() -> TextBuilder {
        TextBuilder {
            len: 0,
            bytes: [0; INLINE_CAPACITY],
            heap: None,
        }
    }

    fn push(&mut self, s: &str) {
        if let Some(heap) = &mut self.heap {
            heap.push_str(s);
            return;
        }
        let end = self.len + s.len();
        if let Some(dst) = self.bytes.get_mut(self.len..end) {
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            return;
        }
        let mut heap = String::with_capacity(end.max(2 * INLINE_CAPACITY));
        heap.push_str(std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default());
        heap.push_str(s);
        self.heap = Some(heap);
    }

    fn finish(self) -> Text {
        match self.heap {
            Some(heap) => Text(Repr::Heap(heap.into_boxed_str())),
            None => Text(Repr::Inline {
                len: self.len as u8, // fits: `len <= INLINE_CAPACITY <= u8::MAX`
                bytes: self.bytes,
            }),
        }
    }
}

impl fmt::Write for TextBuilder {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s);
        Ok(())
    }
}

/// What kind of traffic a record describes; `Display` gives the JSON spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain HTTP exchange (forward or reverse-HTTP listener, or reverse HTTPS after TLS).
    Http,
    /// A blind CONNECT tunnel: one record for its whole life, written when it closes.
    Tunnel,
    /// One request inside a CONNECT tunnel whose TLS Watchtower terminated.
    Intercepted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tunnel => "tunnel",
            Kind::Intercepted => "intercepted",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One proxied exchange or tunnel, as SPEC §9 names its fields.
#[derive(Debug, Clone)]
pub struct ApiRecord {
    /// When the exchange started; written as RFC 3339 UTC with milliseconds.
    pub ts: SystemTime,
    /// The client's address, written `ip:port` (`[v6]:port`).
    pub client: SocketAddr,
    pub method: Text,
    /// The host as requested (`host` or `host:port`).
    pub host: Text,
    /// `None` for tunnels.
    pub path: Option<Text>,
    /// `None` when no status was produced (e.g. the client vanished first).
    pub status: Option<u16>,
    /// The id of the local route taken; `None` for pass-through.
    pub route: Option<Text>,
    /// `ip:port` or `host:port` reached (or attempted); `None` if none was chosen.
    pub upstream: Option<Text>,
    pub kind: Kind,
    /// From the start of the exchange to its end; written as `duration_ms`.
    pub duration: Duration,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// What went wrong, in a sentence; `None` when nothing did.
    pub error: Option<Text>,
    /// Heads and the first bytes of the bodies, when `[log] capture_bodies` is on (kept with the
    /// recent exchanges for the HAR export, never written to the API log).
    pub capture: Option<Box<Capture>>,
}

/// What `[log] capture_bodies` keeps of one exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// The request head as forwarded upstream.
    pub request_head: Vec<u8>,
    pub request_body: Vec<u8>,
    /// The response head as the upstream sent it.
    pub response_head: Vec<u8>,
    /// The response body as relayed (chunked framing included when the upstream chunked it).
    pub response_body: Vec<u8>,
    /// A body was longer than the limit and was cut.
    pub truncated: bool,
}

impl Capture {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.request_head.len()
            + self.request_body.len()
            + self.response_head.len()
            + self.response_body.len()
    }

    /// Appends `bytes` to `body` up to `limit` bytes in all.
    pub fn keep(body: &mut Vec<u8>, truncated: &mut bool, bytes: &[u8], limit: usize) {
        let room = limit.saturating_sub(body.len());
        if bytes.len() > room {
            *truncated = true;
        }
        body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl ApiRecord {
    /// One JSON object, no trailing newline, keys in this order: ts, client, method, host, path,
    /// status, route, upstream, kind, duration_ms, bytes_in, bytes_out, error.
    pub fn write_json(&self, out: &mut String) {
        // `write!` into a `String` cannot fail, hence the ignored results below.
        out.push_str("{\"ts\":\"");
        write_rfc3339(self.ts, out);
        let _ = write!(out, "\",\"client\":\"{}\",\"method\":", self.client);
        push_json_str(out, self.method.as_str());
        out.push_str(",\"host\":");
        push_json_str(out, self.host.as_str());
        out.push_str(",\"path\":");
        push_json_opt(out, self.path.as_ref());
        out.push_str(",\"status\":");
        match self.status {
            Some(status) => {
                let _ = write!(out, "{status}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"route\":");
        push_json_opt(out, self.route.as_ref());
        out.push_str(",\"upstream\":");
        push_json_opt(out, self.upstream.as_ref());
        let _ = write!(out, ",\"kind\":\"{}\",\"duration_ms\":", self.kind);
        // Integer arithmetic rather than `{:.3}` on an f64: exact, and rounds to the nearest µs.
        let micros = (self.duration.as_nanos() + 500) / 1_000;
        let _ = write!(
            out,
            "{}.{:03},\"bytes_in\":{},\"bytes_out\":{},\"error\":",
            micros / 1_000,
            micros % 1_000,
            self.bytes_in,
            self.bytes_out,
        );
        push_json_opt(out, self.error.as_ref());
        out.push('}');
    }

    /// Human access line for stderr, no trailing newline, e.g.
    /// `127.0.0.1:51234 GET app.example.test/api/x -> 200 local:web 127.0.0.1:3100 3.2ms in=120B out=845B`,
    /// with ` error="..."` appended when there is one. The route column reads `local:<id>`,
    /// `pass`, or `tunnel` for a blind tunnel; a missing status or upstream reads `-`.
    /// Control characters from the request are escaped so one record stays one line.
    pub fn write_access_line(&self, out: &mut String) {
        let _ = write!(out, "{} ", self.client);
        push_human(out, self.method.as_str(), false);
        out.push(' ');
        push_human(out, self.host.as_str(), false);
        if let Some(path) = &self.path {
            push_human(out, path.as_str(), false);
        }
        out.push_str(" -> ");
        match self.status {
            Some(status) => {
                let _ = write!(out, "{status} ");
            }
            None => out.push_str("- "),
        }
        match (&self.route, self.kind) {
            (_, Kind::Tunnel) => out.push_str("tunnel"),
            (Some(route), _) => {
                out.push_str("local:");
                push_human(out, route.as_str(), false);
            }
            (None, _) => out.push_str("pass"),
        }
        out.push(' ');
        match &self.upstream {
            Some(upstream) => push_human(out, upstream.as_str(), false),
            None => out.push('-'),
        }
        out.push(' ');
        push_human_duration(out, self.duration);
        let _ = write!(out, " in={}B out={}B", self.bytes_in, self.bytes_out);
        if let Some(error) = &self.error {
            out.push_str(" error=\"");
            push_human(out, error.as_str(), true);
            out.push('"');
        }
    }
}

/// RFC 3339 UTC with milliseconds (`2026-11-27T02:41:07.123Z`) from a `SystemTime`. Times
/// before 1970 print as `1970-01-01T00:00:00.000Z`: a clock that far off is not worth a date
/// library.
pub fn write_rfc3339(t: SystemTime, out: &mut String) {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let secs_of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs_of_day / 3_600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        since_epoch.subsec_millis(),
    );
}

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01: Howard Hinnant's
/// `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>), unsigned because
/// `days` is never negative here. Eras are 400-year cycles starting on 0000-03-01, so the leap day
/// is the last day of its "year" and needs no special case.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z - era * 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `null`, or `text` as a JSON string.
fn push_json_opt(out: &mut String, text: Option<&Text>) {
    match text {
        Some(text) => push_json_str(out, text.as_str()),
        None => out.push_str("null"),
    }
}

/// `s` as a quoted JSON string (RFC 8259 §7): `"` and `\` escaped, control characters as `\n`,
/// `\r`, `\t` or `\u00XX`, everything else (non-ASCII included) copied as UTF-8.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut run_start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` indexes an ASCII byte, which is always a char boundary.
        out.push_str(&s[run_start..i]);
        if escape.is_empty() {
            push_u00xx(out, byte);
        } else {
            out.push_str(escape);
        }
        run_start = i + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

fn push_u00xx(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u00");
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

/// `s` for a terminal: control characters (C0, DEL, C1) escaped so they can neither break the
/// line nor drive the terminal; with `in_quotes`, `"` and `\` escaped too.
fn push_human(out: &mut String, s: &str, in_quotes: bool) {
    let needs_escape = |c: char| c.is_control() || (in_quotes && (c == '"' || c == '\\'));
    if !s.chars().any(needs_escape) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' | '\\' if in_quotes => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// `3.2ms` below one second, `12.34s` from there on (tunnels can last minutes).
fn push_human_duration(out: &mut String, duration: Duration) {
    let nanos = duration.as_nanos();
    let tenths_of_ms = (nanos + 50_000) / 100_000;
    let _ = if tenths_of_ms < 10_000 {
        write!(out, "{}.{}ms", tenths_of_ms / 10, tenths_of_ms % 10)
    } else {
        let centis = (nanos + 5_000_000) / 10_000_000;
        write!(out, "{}.{:02}s", centis / 100, centis % 100)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn rfc3339(t: SystemTime) -> String {
        let mut out = String::new();
        write_rfc3339(t, &mut out);
        out
    }

    fn full_record() -> ApiRecord {
        ApiRecord {
            ts: at(1_795_747_267, 123),
            client: "127.0.0.1:51234".parse().unwrap(),
            method: Text::from("GET"),
            host: Text::from("app.example.test"),
            path: Some(Text::from("/api/x?q=1")),
            status: Some(200),
            route: Some(Text::from("web")),
            upstream: Some(Text::from("127.0.0.1:3100")),
            kind: Kind::Http,
            duration: Duration::from_micros(3_217),
            bytes_in: 120,
            bytes_out: 845,
            error: None,
            capture: None,
        }
    }

    fn tunnel_record() -> ApiRecord {
        ApiRecord {
            ts: at(951_782_400, 0),
            client: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 40000, 0, 0)),
            method: Text::from("CONNECT"),
            host: Text::from("api.real.com:443"),
            path: None,
            status: None,
            route: None,
            upstream: None,
            kind: Kind::Tunnel,
            duration: Duration::from_nanos(1_500),
            bytes_in: 0,
            bytes_out: 0,
            error: None,
            capture: None,
        }
    }

    fn json(record: &ApiRecord) -> String {
        let mut out = String::new();
        record.write_json(&mut out);
        out
    }

    fn access(record: &ApiRecord) -> String {
        let mut out = String::new();
        record.write_access_line(&mut out);
        out
    }

    fn json_str(s: &str) -> String {
        let mut out = String::new();
        push_json_str(&mut out, s);
        out
    }

    #[test]
    fn json_full_record() {
        assert_eq!(
            json(&full_record()),
            concat!(
                r#"{"ts":"2026-11-27T02:41:07.123Z","client":"127.0.0.1:51234","method":"GET","#,
                r#""host":"app.example.test","path":"/api/x?q=1","status":200,"route":"web","#,
                r#""upstream":"127.0.0.1:3100","kind":"http","duration_ms":3.217,"#,
                r#""bytes_in":120,"bytes_out":845,"error":null}"#
            )
        );
    }

    #[test]
    fn json_tunnel_record_with_nulls() {
        assert_eq!(
            json(&tunnel_record()),
            concat!(
                r#"{"ts":"2000-02-29T00:00:00.000Z","client":"[::1]:40000","method":"CONNECT","#,
                r#""host":"api.real.com:443","path":null,"status":null,"route":null,"#,
                r#""upstream":null,"kind":"tunnel","duration_ms":0.002,"#,
                r#""bytes_in":0,"bytes_out":0,"error":null}"#
            )
        );
    }

    #[test]
    fn json_error_and_intercepted() {
        let record = ApiRecord {
            kind: Kind::Intercepted,
            status: Some(502),
            route: None,
            upstream: Some(Text::from("api.real.com:80")),
            duration: Duration::from_secs(61),
            error: Some(Text::from(
                "upstream api.real.com:80 refused the connection",
            )),
            ..full_record()
        };
        let line = json(&record);
        assert!(
            line.ends_with(concat!(
                r#""status":502,"route":null,"upstream":"api.real.com:80","kind":"intercepted","#,
                r#""duration_ms":61000.000,"bytes_in":120,"bytes_out":845,"#,
                r#""error":"upstream api.real.com:80 refused the connection"}"#
            )),
            "{line}"
        );
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str(""), r#""""#);
        assert_eq!(json_str(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(json_str(r"C:\dir\"), r#""C:\\dir\\""#);
        assert_eq!(json_str("a\nb\r\tc"), r#""a\nb\r\tc""#);
        assert_eq!(json_str("\u{1}x\u{1f}\u{0}"), r#""\u0001x\u001f\u0000""#);
        assert_eq!(json_str("héllo ✓ 日本 🦀"), "\"héllo ✓ 日本 🦀\"");
        assert_eq!(json_str("\u{7f}"), "\"\u{7f}\"");
        assert_eq!(json_str("é\"é"), "\"é\\\"é\"");
    }

    #[test]
    fn json_escapes_record_fields() {
        let record = ApiRecord {
            path: Some(Text::from_bytes_lossy(b"/a\"b\\c\n\x01\xff")),
            ..full_record()
        };
        let line = json(&record);
        assert!(line.contains(r#""path":"/a\"b\\c\n\u0001�","#), "{line}");
    }

    #[test]
    fn rfc3339_known_instants() {
        let cases = [
            (at(0, 0), "1970-01-01T00:00:00.000Z"),
            (at(951_782_400, 0), "2000-02-29T00:00:00.000Z"),
            (at(951_868_800, 0), "2000-03-01T00:00:00.000Z"),
            (at(946_684_799, 999), "1999-12-31T23:59:59.999Z"),
            (at(1_735_689_599, 1), "2024-12-31T23:59:59.001Z"),
            (at(1_795_747_267, 123), "2026-11-27T02:41:07.123Z"),
            (at(2_147_483_648, 0), "2038-01-19T03:14:08.000Z"),
            (at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z"),
            (at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z"),
            (at(253_402_300_799, 0), "9999-12-31T23:59:59.000Z"),
            (
                at(0, 0) + Duration::from_micros(1_999),
                "1970-01-01T00:00:00.001Z",
            ),
            (
                UNIX_EPOCH - Duration::from_secs(1),
                "1970-01-01T00:00:00.000Z",
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(rfc3339(t), expected);
        }
    }

    #[test]
    fn rfc3339_every_day_is_valid_and_consecutive() {
        // Walks 1970..2401 day by day: each date is the successor of the previous one.
        let (mut y, mut m, mut d) = (1969, 12, 31);
        for days in 0..157_000 {
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > month_len[m as usize - 1] {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
        }
    }

    #[test]
    fn text_inline_and_spilled() {
        let short = Text::from_str("app.example.test");
        assert!(matches!(short.0, Repr::Inline { .. }));
        assert_eq!(short.as_str(), "app.example.test");

        let exactly = "x".repeat(INLINE_CAPACITY);
        let text = Text::from_str(&exactly);
        assert!(matches!(text.0, Repr::Inline { .. }));
        assert_eq!(text.as_str(), exactly);

        let long = "y".repeat(INLINE_CAPACITY + 1);
        let text = Text::from_str(&long);
        assert!(matches!(text.0, Repr::Heap(_)));
        assert_eq!(text.as_str(), long);

        assert!(Text::empty().is_empty());
        assert!(Text::default().is_empty());
        assert!(!short.is_empty());
        assert_eq!(Text::empty().as_str(), "");
        assert_eq!(short.clone(), short);
        assert_eq!("web".parse::<Text>(), Ok(Text::from("web")));
    }

    #[test]
    fn text_from_fmt_inline_then_spilling() {
        let addr: SocketAddr = "127.0.0.1:3100".parse().unwrap();
        let text = Text::from_fmt(format_args!("upstream {addr} refused the connection"));
        assert!(matches!(text.0, Repr::Inline { .. }));
        assert_eq!(
            text.as_str(),
            "upstream 127.0.0.1:3100 refused the connection"
        );

        let host = "h".repeat(80);
        let text = Text::from_fmt(format_args!("upstream {host}:443 timed out after {}s", 60));
        assert!(matches!(text.0, Repr::Heap(_)));
        assert_eq!(
            text.as_str(),
            format!("upstream {host}:443 timed out after 60s")
        );

        let text = Text::from_fmt(format_args!("static"));
        assert_eq!(text.as_str(), "static");
        let text = Text::from_fmt(format_args!("{}", "z".repeat(300)));
        assert_eq!(text.as_str().len(), 300);
    }

    #[test]
    fn text_from_bytes_lossy() {
        assert_eq!(Text::from_bytes_lossy(b"/ok").as_str(), "/ok");
        assert_eq!(
            Text::from_bytes_lossy(b"a\xffb\xe2\x82").as_str(),
            "a\u{FFFD}b\u{FFFD}"
        );
        let bytes = b"\xc3\xa9\xff".repeat(40);
        assert_eq!(
            Text::from_bytes_lossy(&bytes).as_str(),
            String::from_utf8_lossy(&bytes)
        );
    }

    #[test]
    fn text_debug_and_display() {
        let text = Text::from("a\"b");
        assert_eq!(format!("{text:?}"), r#""a\"b""#);
        assert_eq!(format!("{text}|{text:>5}|"), "a\"b|  a\"b|");
        assert_eq!(Kind::Intercepted.to_string(), "intercepted");
    }

    #[test]
    fn access_lines() {
        assert_eq!(
            access(&full_record()),
            "127.0.0.1:51234 GET app.example.test/api/x?q=1 -> 200 local:web 127.0.0.1:3100 3.2ms in=120B out=845B"
        );
        let error = ApiRecord {
            method: Text::from("POST"),
            host: Text::from("api.real.com"),
            path: Some(Text::from("/v1")),
            status: Some(502),
            route: None,
            upstream: Some(Text::from("api.real.com:80")),
            duration: Duration::from_micros(999),
            bytes_in: 80,
            bytes_out: 120,
            error: Some(Text::from(
                "upstream api.real.com:80 refused the \"connection\"\n",
            )),
            ..full_record()
        };
        assert_eq!(
            access(&error),
            r#"127.0.0.1:51234 POST api.real.com/v1 -> 502 pass api.real.com:80 1.0ms in=80B out=120B error="upstream api.real.com:80 refused the \"connection\"\n""#
        );
        let tunnel = ApiRecord {
            status: Some(200),
            upstream: Some(Text::from("93.184.216.34:443")),
            duration: Duration::from_millis(65_432),
            bytes_in: 5_000,
            bytes_out: 70_000,
            ..tunnel_record()
        };
        assert_eq!(
            access(&tunnel),
            "[::1]:40000 CONNECT api.real.com:443 -> 200 tunnel 93.184.216.34:443 65.43s in=5000B out=70000B"
        );
        assert_eq!(
            access(&tunnel_record()),
            "[::1]:40000 CONNECT api.real.com:443 -> - tunnel - 0.0ms in=0B out=0B"
        );
    }

    #[test]
    fn access_line_escapes_control_characters() {
        let record = ApiRecord {
            host: Text::from("evil\u{1b}[2J"),
            path: Some(Text::from("/\u{9b}x\"\\")),
            ..full_record()
        };
        let line = access(&record);
        assert!(line.contains(" evil\\u001b[2J/\\u009bx\"\\ -> "), "{line}");
    }

    #[test]
    fn human_durations() {
        let cases = [
            (Duration::ZERO, "0.0ms"),
            (Duration::from_micros(3_249), "3.2ms"),
            (Duration::from_micros(3_250), "3.3ms"),
            (Duration::from_micros(999_949), "999.9ms"),
            (Duration::from_micros(999_950), "1.00s"),
            (Duration::from_millis(1_234), "1.23s"),
            (Duration::from_secs(3_600), "3600.00s"),
        ];
        for (duration, expected) in cases {
            let mut out = String::new();
            push_human_duration(&mut out, duration);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn record_size_is_pinned() {
        // Every queued record costs this much of the bounded channel's preallocated slots;
        // changing it should be a decision, not an accident.
        let size = std::mem::size_of::<ApiRecord>();
        assert_eq!(size, 720, "size_of::<ApiRecord>() is now {size}");
        let size = std::mem::size_of::<Text>();
        assert_eq!(size, 104, "size_of::<Text>() is now {size}");
        let size = std::mem::size_of::<Option<Text>>();
        assert_eq!(size, 104, "size_of::<Option<Text>>() is now {size}");
    }
}
