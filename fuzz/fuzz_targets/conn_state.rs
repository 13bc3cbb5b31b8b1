//! Property: one client connection, driven against a real in-process Watchtower (forward and
//! reverse listeners, one local route, the rest through a scripted upstream acting as the
//! upstream proxy), never stops the proxy, never makes it send the upstream anything but the
//! client's own requests in order with their bodies intact, never gives the client a response
//! it cannot read or one meant for another request, and echoes tunnels byte for byte
//! (`watchtower::fuzzing::run_conn_scenario` has the full list).
//!
//! Structure-aware: the bytes are decoded with `arbitrary` into a grammar of near-valid
//! requests (methods, the four target forms, Host variants, framing headers right and wrong,
//! chunked bodies with extensions and trailers, line-ending slips), CONNECT tunnels, TLS and
//! raw bytes, plus the listener, the upstream's script, the write sizes and a half-close. An
//! input that starts with `WTCS\n` is a scenario in its canonical text form instead (how the
//! committed seeds and reproducers are written); `WATCHTOWER_FUZZ_DUMP=1` prints each input in
//! that form, to turn a crash into a named corpus file.
#![no_main]
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use watchtower::fuzzing::{
    CONN_MARKER, ConnScenario, SCENARIO_MAGIC, ScenarioListener, UpstreamScript, run_conn_scenario,
};

/// Caps that keep one input to a few milliseconds.
const MAX_PIECES: usize = 6;
const MAX_HEADERS: usize = 6;
const MAX_BYTES: usize = 512;
const MAX_SPLITS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let scenario = if data.starts_with(SCENARIO_MAGIC) {
        ConnScenario::parse(data)
    } else {
        match Input::arbitrary_take_rest(Unstructured::new(data)) {
            Ok(input) => input.scenario(),
            Err(_) => return,
        }
    };
    if std::env::var_os("WATCHTOWER_FUZZ_DUMP").is_some() {
        eprint!("{}", scenario.to_text());
    }
    run_conn_scenario(&scenario);
});

#[derive(Arbitrary, Debug)]
struct Input {
    reverse: bool,
    script: Script,
    half_close: bool,
    splits: Vec<u8>,
    pieces: Vec<Piece>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Script {
    Length,
    Chunked,
    UntilClose,
    CloseAfter,
    Interim,
    NoContent,
    Upgrade,
    Http10,
    Early,
    TrailingJunk,
    Trickle,
    SilentClose,
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Request(Request),
    /// A ClientHello's first bytes (after an intercepted CONNECT this starts TLS).
    TlsRecord,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Request {
    method: MethodChoice,
    target: Target,
    version: Version,
    host: HostField,
    marker: bool,
    headers: Vec<Header>,
    body: Body,
    line_end: LineEnd,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MethodChoice {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    /// Methods are case-sensitive: `get` is not GET.
    Lowercase,
    Custom,
    Empty,
}

#[derive(Arbitrary, Debug)]
enum Target {
    Origin(PathChoice),
    Absolute(HostChoice, PathChoice),
    /// `http://` with another scheme's spelling.
    OtherScheme(HostChoice),
    Asterisk,
    Authority(HostChoice),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PathChoice {
    Root,
    Plain(u8),
    Query,
    Empty,
    Encoded,
    Fragment,
    DotSegments,
    Long(u8),
    CaCert,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HostChoice {
    Routed,
    RoutedUpper,
    RoutedDot,
    RoutedPort,
    Pass,
    PassPort,
    HttpFake,
    EchoFake,
    Loopback,
    Localhost,
    Bracketed,
    Ipv6,
    Empty,
    Userinfo,
    PortZero,
    PortHuge,
    TwoColons,
}

#[derive(Arbitrary, Debug)]
enum HostField {
    /// The target's authority (the routed host for origin-form).
    Matching,
    Missing,
    Other(HostChoice),
    Twice,
    Empty,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Version {
    V11,
    V10,
    V20,
    Lowercase,
    Missing,
    V19,
}

#[derive(Arbitrary, Debug)]
enum Header {
    ContentLength(LengthChoice),
    TransferEncoding(CodingChoice),
    Connection(ConnectionChoice),
    Upgrade,
    Expect,
    Via,
    ProxyConnection,
    KeepAlive,
    ForwardedFor,
    Te,
    Trailer,
    Custom(u8, Vec<u8>),
    ObsFold,
    SpaceBeforeColon,
    NoColon,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum LengthChoice {
    Right,
    More(u8),
    Less(u8),
    Repeated,
    Conflicting,
    Negative,
    Hex,
    Huge,
    Empty,
    Plus,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum CodingChoice {
    Chunked,
    GzipChunked,
    ChunkedGzip,
    ChunkedTwice,
    Identity,
    Uppercase,
    TrailingComma,
    Tab,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ConnectionChoice {
    Close,
    KeepAlive,
    Upgrade,
    NamesMarker,
    NamesLength,
    NamesCoding,
    Other,
}

#[derive(Arbitrary, Debug)]
enum Body {
    None,
    /// With a Content-Length unless a header says otherwise.
    Data(Vec<u8>),
    /// With `Transfer-Encoding: chunked` unless a header says otherwise.
    Chunked(Vec<Chunk>, Vec<Header>, bool),
    /// Bytes after the head, no framing header added.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Chunk {
    Data(Vec<u8>),
    Extension(Vec<u8>),
    QuotedExtension(Vec<u8>),
    BadSize,
    BareLf(Vec<u8>),
    Short(Vec<u8>),
    LeadingZeros(Vec<u8>),
    SpaceBeforeExtension(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum LineEnd {
    Crlf,
    Lf,
    LastLf,
}

impl Input {
    fn scenario(&self) -> ConnScenario {
        let mut stream = Vec::new();
        for piece in self.pieces.iter().take(MAX_PIECES) {
            match piece {
                Piece::Request(r) => r.render(&mut stream),
                Piece::TlsRecord => {
                    stream.extend_from_slice(b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03")
                }
                Piece::Raw(bytes) => stream.extend_from_slice(cap(bytes)),
            }
        }
        ConnScenario {
            listener: if self.reverse {
                ScenarioListener::Reverse
            } else {
                ScenarioListener::Forward
            },
            script: match self.script {
                Script::Length => UpstreamScript::Length,
                Script::Chunked => UpstreamScript::Chunked,
                Script::UntilClose => UpstreamScript::UntilClose,
                Script::CloseAfter => UpstreamScript::CloseAfter,
                Script::Interim => UpstreamScript::Interim,
                Script::NoContent => UpstreamScript::NoContent,
                Script::Upgrade => UpstreamScript::Upgrade,
                Script::Http10 => UpstreamScript::Http10,
                Script::Early => UpstreamScript::Early,
                Script::TrailingJunk => UpstreamScript::TrailingJunk,
                Script::Trickle => UpstreamScript::Trickle,
                Script::SilentClose => UpstreamScript::SilentClose,
            },
            half_close: self.half_close,
            splits: self
                .splits
                .iter()
                .take(MAX_SPLITS)
                .map(|&s| u16::from(s % 64))
                .collect(),
            stream,
        }
    }
}

fn cap(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(MAX_BYTES)]
}

impl HostChoice {
    fn text(self) -> &'static str {
        match self {
            HostChoice::Routed => "app.fuzz.test",
            HostChoice::RoutedUpper => "APP.Fuzz.TEST",
            HostChoice::RoutedDot => "app.fuzz.test.",
            HostChoice::RoutedPort => "app.fuzz.test:443",
            HostChoice::Pass => "pass.fuzz.test",
            HostChoice::PassPort => "pass.fuzz.test:8080",
            HostChoice::HttpFake => "@HTTP@",
            HostChoice::EchoFake => "@ECHO@",
            HostChoice::Loopback => "127.0.0.1",
            HostChoice::Localhost => "localhost",
            HostChoice::Bracketed => "[app.fuzz.test]:443",
            HostChoice::Ipv6 => "[2001:db8::1]:443",
            HostChoice::Empty => "",
            HostChoice::Userinfo => "user@app.fuzz.test",
            HostChoice::PortZero => "pass.fuzz.test:0",
            HostChoice::PortHuge => "pass.fuzz.test:65536",
            HostChoice::TwoColons => "pass.fuzz.test:80:80",
        }
    }
}

impl PathChoice {
    fn render(self, out: &mut Vec<u8>) {
        match self {
            PathChoice::Root => out.push(b'/'),
            PathChoice::Plain(n) => out.extend_from_slice(format!("/p{}", n % 8).as_bytes()),
            PathChoice::Query => out.extend_from_slice(b"/search?q=a%20b&x="),
            PathChoice::Empty => {}
            PathChoice::Encoded => out.extend_from_slice(b"/%2e%2E/a%00b"),
            PathChoice::Fragment => out.extend_from_slice(b"/f#frag"),
            PathChoice::DotSegments => out.extend_from_slice(b"/a/../../b/./c"),
            PathChoice::Long(n) => {
                out.push(b'/');
                out.extend(std::iter::repeat_n(b'a', usize::from(n) * 40));
            }
            PathChoice::CaCert => out.extend_from_slice(b"/ca.crt"),
        }
    }
}

impl Request {
    fn render(&self, out: &mut Vec<u8>) {
        let eol: &[u8] = match self.line_end {
            LineEnd::Crlf | LineEnd::LastLf => b"\r\n",
            LineEnd::Lf => b"\n",
        };
        out.extend_from_slice(match self.method {
            MethodChoice::Get => b"GET",
            MethodChoice::Head => b"HEAD",
            MethodChoice::Post => b"POST",
            MethodChoice::Put => b"PUT",
            MethodChoice::Delete => b"DELETE",
            MethodChoice::Options => b"OPTIONS",
            MethodChoice::Patch => b"PATCH",
            MethodChoice::Connect => b"CONNECT",
            MethodChoice::Lowercase => b"get",
            MethodChoice::Custom => b"PROPFIND",
            MethodChoice::Empty => b"",
        });
        out.push(b' ');
        let mut authority: &str = "app.fuzz.test";
        match &self.target {
            Target::Origin(path) => path.render(out),
            Target::Absolute(host, path) => {
                out.extend_from_slice(b"http://");
                out.extend_from_slice(host.text().as_bytes());
                authority = host.text();
                path.render(out);
            }
            Target::OtherScheme(host) => {
                out.extend_from_slice(b"https://");
                out.extend_from_slice(host.text().as_bytes());
                out.push(b'/');
                authority = host.text();
            }
            Target::Asterisk => out.push(b'*'),
            Target::Authority(host) => {
                out.extend_from_slice(host.text().as_bytes());
                authority = host.text();
            }
            Target::Raw(bytes) => out.extend_from_slice(cap(bytes)),
        }
        out.extend_from_slice(match self.version {
            Version::V11 => b" HTTP/1.1",
            Version::V10 => b" HTTP/1.0",
            Version::V20 => b" HTTP/2.0",
            Version::Lowercase => b" http/1.1",
            Version::Missing => b"",
            Version::V19 => b" HTTP/1.9",
        });
        out.extend_from_slice(eol);
        let mut field = |out: &mut Vec<u8>, line: &[u8]| {
            out.extend_from_slice(line);
            out.extend_from_slice(eol);
        };
        match &self.host {
            HostField::Matching => field(out, format!("Host: {authority}").as_bytes()),
            HostField::Missing => {}
            HostField::Other(host) => field(out, format!("Host: {}", host.text()).as_bytes()),
            HostField::Twice => {
                field(out, format!("Host: {authority}").as_bytes());
                field(out, format!("Host: {authority}").as_bytes());
            }
            HostField::Empty => field(out, b"Host:"),
        }
        if self.marker {
            field(out, CONN_MARKER);
        }
        let body = self.body.bytes();
        let has = |f: fn(&Header) -> bool| self.headers.iter().take(MAX_HEADERS).any(f);
        match &self.body {
            Body::Data(_) if !has(|h| matches!(h, Header::ContentLength(_))) => {
                field(out, format!("Content-Length: {}", body.len()).as_bytes())
            }
            Body::Chunked(..) if !has(|h| matches!(h, Header::TransferEncoding(_))) => {
                field(out, b"Transfer-Encoding: chunked")
            }
            _ => {}
        }
        for header in self.headers.iter().take(MAX_HEADERS) {
            header.render(body.len(), &mut field, out);
        }
        match self.line_end {
            LineEnd::LastLf => out.push(b'\n'),
            _ => out.extend_from_slice(eol),
        }
        out.extend_from_slice(&body);
    }
}

impl Header {
    fn render(
        &self,
        body_len: usize,
        field: &mut impl FnMut(&mut Vec<u8>, &[u8]),
        out: &mut Vec<u8>,
    ) {
        let line: Vec<u8> = match self {
            Header::ContentLength(choice) => {
                let value = match choice {
                    LengthChoice::Right => body_len.to_string(),
                    LengthChoice::More(n) => (body_len + usize::from(*n % 16) + 1).to_string(),
                    LengthChoice::Less(n) => body_len
                        .saturating_sub(usize::from(*n % 16) + 1)
                        .to_string(),
                    LengthChoice::Repeated => format!("{body_len}, {body_len}"),
                    LengthChoice::Conflicting => format!("{body_len}, {}", body_len + 1),
                    LengthChoice::Negative => "-1".to_owned(),
                    LengthChoice::Hex => format!("0x{body_len:x}"),
                    LengthChoice::Huge => "99999999999999999999999".to_owned(),
                    LengthChoice::Empty => String::new(),
                    LengthChoice::Plus => format!("+{body_len}"),
                };
                format!("Content-Length: {value}").into_bytes()
            }
            Header::TransferEncoding(choice) => format!(
                "Transfer-Encoding: {}",
                match choice {
                    CodingChoice::Chunked => "chunked",
                    CodingChoice::GzipChunked => "gzip, chunked",
                    CodingChoice::ChunkedGzip => "chunked, gzip",
                    CodingChoice::ChunkedTwice => "chunked, chunked",
                    CodingChoice::Identity => "identity",
                    CodingChoice::Uppercase => "CHUNKED",
                    CodingChoice::TrailingComma => "chunked,",
                    CodingChoice::Tab => "\tchunked",
                }
            )
            .into_bytes(),
            Header::Connection(choice) => format!(
                "Connection: {}",
                match choice {
                    ConnectionChoice::Close => "close",
                    ConnectionChoice::KeepAlive => "keep-alive",
                    ConnectionChoice::Upgrade => "Upgrade",
                    ConnectionChoice::NamesMarker => "X-Fuzz-Conn",
                    ConnectionChoice::NamesLength => "Content-Length",
                    ConnectionChoice::NamesCoding => "transfer-encoding, close",
                    ConnectionChoice::Other => "X-Other",
                }
            )
            .into_bytes(),
            Header::Upgrade => b"Upgrade: websocket".to_vec(),
            Header::Expect => b"Expect: 100-continue".to_vec(),
            Header::Via => b"Via: 1.1 other-proxy".to_vec(),
            Header::ProxyConnection => b"Proxy-Connection: keep-alive".to_vec(),
            Header::KeepAlive => b"Keep-Alive: timeout=5".to_vec(),
            Header::ForwardedFor => b"X-Forwarded-For: 10.0.0.1".to_vec(),
            Header::Te => b"TE: trailers".to_vec(),
            Header::Trailer => b"Trailer: X-Sum".to_vec(),
            Header::Custom(name, value) => {
                let mut line = format!("X-F{}: ", name % 4).into_bytes();
                line.extend_from_slice(&value[..value.len().min(64)]);
                line
            }
            Header::ObsFold => b"X-Folded: a\r\n b".to_vec(),
            Header::SpaceBeforeColon => b"X-Space : v".to_vec(),
            Header::NoColon => b"X-No-Colon".to_vec(),
            Header::Raw(bytes) => bytes[..bytes.len().min(64)].to_vec(),
        };
        field(out, &line);
    }
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::None => Vec::new(),
            Body::Data(data) | Body::Raw(data) => cap(data).to_vec(),
            Body::Chunked(chunks, trailers, last) => {
                let mut out = Vec::new();
                for chunk in chunks.iter().take(8) {
                    chunk.render(&mut out);
                }
                if *last {
                    out.extend_from_slice(b"0\r\n");
                    let mut field = |out: &mut Vec<u8>, line: &[u8]| {
                        out.extend_from_slice(line);
                        out.extend_from_slice(b"\r\n");
                    };
                    for trailer in trailers.iter().take(2) {
                        trailer.render(0, &mut field, &mut out);
                    }
                    out.extend_from_slice(b"\r\n");
                }
                out
            }
        }
    }
}

impl Chunk {
    fn render(&self, out: &mut Vec<u8>) {
        let data = |d: &Vec<u8>| d[..d.len().min(64)].to_vec();
        match self {
            Chunk::Data(d) => {
                let d = data(d);
                out.extend_from_slice(format!("{:x}\r\n", d.len()).as_bytes());
                out.extend_from_slice(&d);
                out.extend_from_slice(b"\r\n");
            }
            Chunk::Extension(d) => {
                let d = data(d);
                out.extend_from_slice(format!("{:x};ext=v;flag\r\n", d.len()).as_bytes());
                out.extend_from_slice(&d);
                out.extend_from_slice(b"\r\n");
            }
            Chunk::QuotedExtension(d) => {
                let d = data(d);
                out.extend_from_slice(format!("{:x};q=\"a\\\"b;c\"\r\n", d.len()).as_bytes());
                out.extend_from_slice(&d);
                out.extend_from_slice(b"\r\n");
            }
            Chunk::BadSize => out.extend_from_slice(b"xyz\r\nabc\r\n"),
            Chunk::BareLf(d) => {
                let d = data(d);
                out.extend_from_slice(format!("{:x}\n", d.len()).as_bytes());
                out.extend_from_slice(&d);
                out.extend_from_slice(b"\n");
            }
            Chunk::Short(d) => {
                let d = data(d);
                out.extend_from_slice(format!("{:x}\r\n", d.len() + 3).as_bytes());
                out.extend_from_slice(&d);
                out.extend_from_slice(b"\r\n");
            }
            Chunk::LeadingZeros(d) => {
                let d = data(d);
                out.extend_from_slice(format!("000{:x}\r\n", d.len()).as_bytes());
                out.extend_from_slice(&d);
                out.extend_from_slice(b"\r\n");
            }
            Chunk::SpaceBeforeExtension(d) => {
                let d = data(d);
                out.extend_from_slice(format!("{:x} ;ext\r\n", d.len()).as_bytes());
                out.extend_from_slice(&d);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}
