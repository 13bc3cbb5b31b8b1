//! WebSocket through Watchtower, end to end: a tiny echo server in this file answers the
//! upgrade with a correctly computed `Sec-WebSocket-Accept` (SHA-1 and base64 written out here,
//! no crates) and echoes frames. Checked through the forward port (absolute-form, pass-through
//! and routed) and the reverse port (localhost rule and Host route): the 101 reaches the
//! client, the upgrade headers reach the backend, frames flow both ways, frames the backend
//! sends in the same write as its 101 arrive, and a close handshake tears both sides down.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

// ---- SHA-1 (FIPS 180-4) and base64 (RFC 4648), just enough for Sec-WebSocket-Accept ----

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
fn accept_for(key: &str) -> String {
    base64(&sha1(
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    ))
}

#[test]
fn accept_computation_matches_rfc_6455_and_fips_vectors() {
    assert_eq!(
        accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(base64(&sha1(b"abc")), "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
    assert_eq!(base64(&sha1(b"")), "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
}

// ---- frames ----

const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;

/// One frame (FIN set); masked with `mask` when given (client to server), else unmasked.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame as read: opcode, whether it was masked, the unmasked payload.
#[derive(Debug, PartialEq)]
struct Frame {
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

fn read_frame(r: &mut impl Read) -> std::io::Result<Frame> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            r.read_exact(&mut l)?;
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            r.read_exact(&mut l)?;
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Frame {
        opcode: h[0] & 0x0f,
        masked,
        payload,
    })
}

// ---- the echo backend ----

const GREETING: &[u8] = b"hello from the backend";

/// A WebSocket echo server: answers the upgrade with 101 (plus a greeting frame in the same
/// write), then echoes every data frame unmasked; answers a close frame with a close frame
/// and closes the connection. Records every upgrade request head it got.
fn ws_backend() -> WsServer {
    WsServer::start(ws_serve)
}

fn ws_serve(mut s: TcpStream, seen: &Mutex<Vec<String>>) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let head = read_raw_head(&mut s);
    seen.lock().unwrap().push(head.clone());
    let Some(key) = head_header(&head, "sec-websocket-key") else {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\n\r\nno key");
        return;
    };
    let mut out = ws_switching_protocols(&accept_for(key)).into_bytes();
    // The greeting goes out in the same write as the 101.
    out.extend(frame(OP_TEXT, GREETING, None));
    if s.write_all(&out).is_err() {
        return;
    }
    let mut r = BufReader::new(s.try_clone().unwrap());
    while let Ok(f) = read_frame(&mut r) {
        if !f.masked {
            // RFC 6455 §5.1: a server closes on an unmasked client frame.
            return;
        }
        let reply = frame(f.opcode, &f.payload, None);
        if s.write_all(&reply).is_err() || f.opcode == OP_CLOSE {
            return;
        }
    }
}

// ---- the client ----

/// A client that has completed the upgrade; reads through the same buffer as the 101.
struct WsClient {
    w: TcpStream,
    r: BufReader<TcpStream>,
    mask_seed: u8,
}

impl WsClient {
    /// Sends the upgrade for `target` with `host` to `addr`; asserts the 101 and its accept.
    fn open(addr: SocketAddr, target: &str, host: &str) -> WsClient {
        let mut w = connect(addr);
        w.write_all(ws_upgrade(host, target).as_bytes()).unwrap();
        let mut r = BufReader::new(w.try_clone().unwrap());
        let answer = read_ws_upgrade_answer(&mut r);
        let get = |name: &str| answer.header(name).unwrap_or_default();
        let headers = &answer.headers;
        assert!(
            get("connection").to_ascii_lowercase().contains("upgrade"),
            "{headers:?}"
        );
        assert_eq!(
            get("sec-websocket-accept"),
            accept_for(WS_KEY),
            "{headers:?}"
        );
        WsClient { w, r, mask_seed: 1 }
    }

    fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.mask_seed = self.mask_seed.wrapping_mul(31).wrapping_add(7);
        let m = self.mask_seed;
        let mask = [m, m ^ 0x5a, m.wrapping_add(3), !m];
        self.w
            .write_all(&frame(opcode, payload, Some(mask)))
            .unwrap();
    }

    fn recv(&mut self) -> Frame {
        read_frame(&mut self.r).expect("a frame from the backend")
    }

    /// Greeting first, then several messages of each length encoding, then the close
    /// handshake and EOF.
    fn exercise(mut self) {
        let greeting = self.recv();
        assert_eq!(
            greeting,
            Frame {
                opcode: OP_TEXT,
                masked: false,
                payload: GREETING.to_vec()
            },
            "the frame sent with the 101"
        );
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let messages: [(u8, Vec<u8>); 5] = [
            (OP_TEXT, b"first".to_vec()),
            (OP_TEXT, "second, with \u{2603}".as_bytes().to_vec()),
            (OP_BINARY, (0..=255u8).collect()),
            (OP_BINARY, vec![]),
            (OP_BINARY, big),
        ];
        for (i, (opcode, payload)) in messages.iter().enumerate() {
            self.send(*opcode, payload);
            let echo = self.recv();
            assert_eq!(
                (echo.opcode, echo.masked, echo.payload.len()),
                (*opcode, false, payload.len()),
                "message {i}"
            );
            assert!(echo.payload == *payload, "message {i}: payload differs");
        }
        // Two frames in one write come back as two frames.
        let mut both = frame(OP_TEXT, b"one", Some([1, 2, 3, 4]));
        both.extend(frame(OP_TEXT, b"two", Some([5, 6, 7, 8])));
        self.w.write_all(&both).unwrap();
        assert_eq!(self.recv().payload, b"one");
        assert_eq!(self.recv().payload, b"two");
        // Close handshake: 1000 normal closure; the backend answers and closes.
        self.send(OP_CLOSE, &1000u16.to_be_bytes());
        let close = self.recv();
        assert_eq!(
            (close.opcode, close.payload),
            (OP_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        assert_closed(&mut self.r, "after the close frame");
    }
}

/// Waits until the backend has recorded `n` upgrade heads; returns the last.
fn wait_head(backend: &WsServer, n: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let heads = backend.heads();
        if heads.len() >= n {
            return heads[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the backend saw {} upgrades",
            heads.len()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The upgrade reached the backend as an upgrade: origin-form target, the Upgrade header,
/// `Connection: upgrade`, the key and version intact.
fn assert_upgrade_head(head: &str, host: &str) {
    assert!(head.starts_with("GET /chat HTTP/1.1\r\n"), "{head}");
    assert_eq!(head_header(head, "host"), Some(host), "{head}");
    assert!(
        head_header(head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head}"
    );
    assert!(
        head_header(head, "connection").is_some_and(|v| v
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))),
        "{head}"
    );
    assert_eq!(
        head_header(head, "sec-websocket-key"),
        Some(WS_KEY),
        "{head}"
    );
    assert_eq!(
        head_header(head, "sec-websocket-version"),
        Some("13"),
        "{head}"
    );
}

/// Upgrades through `addr` with request-target `target` and `Host: host`, runs
/// [`WsClient::exercise`], and asserts the upgrade reached `backend` as an upgrade.
fn echo_through(addr: SocketAddr, target: &str, host: &str, backend: &WsServer) {
    WsClient::open(addr, target, host).exercise();
    assert_upgrade_head(&wait_head(backend, 1), host);
}

#[test]
fn websocket_echo_through_the_forward_port_pass_through() {
    let backend = ws_backend();
    let w = Watchtower::start(Opts::default());
    let host = format!("127.0.0.1:{}", backend.port());
    echo_through(w.proxy, &format!("http://{host}/chat"), &host, &backend);
}

#[test]
fn websocket_echo_through_the_forward_port_to_a_routed_domain() {
    let backend = ws_backend();
    let w = Watchtower::with_routes(route("ws", "ws.example.test", backend.port()));
    echo_through(
        w.proxy,
        "http://ws.example.test/chat",
        "ws.example.test",
        &backend,
    );
}

#[test]
fn websocket_echo_through_the_reverse_port_by_the_localhost_rule() {
    let backend = ws_backend();
    let w = Watchtower::with_routes(route("app", "app.example.test", backend.port()));
    let host = w.reverse.unwrap().to_string();
    echo_through(w.reverse.unwrap(), "/chat", &host, &backend);
}

#[test]
fn websocket_echo_through_the_reverse_port_by_host_route() {
    let other = ws_backend();
    let backend = ws_backend();
    let w = Watchtower::with_routes(
        route("first", "first.example.test", other.port())
            + &route("ws", "ws.example.test", backend.port()),
    );
    echo_through(w.reverse.unwrap(), "/chat", "ws.example.test", &backend);
    assert!(
        other.heads().is_empty(),
        "the first route's backend got the upgrade"
    );
}

#[test]
fn two_websockets_at_once_stay_separate() {
    let backend = ws_backend();
    let w = Watchtower::start(Opts::default());
    let host = format!("127.0.0.1:{}", backend.port());
    let target = format!("http://{host}/chat");
    let mut a = WsClient::open(w.proxy, &target, &host);
    let mut b = WsClient::open(w.proxy, &target, &host);
    assert_eq!(a.recv().payload, GREETING);
    assert_eq!(b.recv().payload, GREETING);
    for i in 0..5 {
        a.send(OP_TEXT, format!("a{i}").as_bytes());
        b.send(OP_TEXT, format!("b{i}").as_bytes());
        assert_eq!(b.recv().payload, format!("b{i}").as_bytes());
        assert_eq!(a.recv().payload, format!("a{i}").as_bytes());
    }
}

#[test]
fn a_refused_upgrade_is_relayed_as_an_ordinary_response() {
    let backend = Backend::start(|_| Reply::text(426, "websocket not here"));
    let w = Watchtower::start(Opts::default());
    let host = format!("127.0.0.1:{}", backend.port());
    let mut s = w.connect_proxy();
    s.write_all(ws_upgrade(&host, &format!("http://{host}/chat")).as_bytes())
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let resp = read_response(&mut r).unwrap();
    assert_eq!(
        (resp.status, resp.body_text().as_str()),
        (426, "websocket not here")
    );
    let seen = backend.wait_requests(1);
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
}
