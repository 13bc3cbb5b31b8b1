//! CONNECT through the forward proxy, end to end: the exact `200 Connection Established`
//! answer, a blind byte tunnel that carries bytes both ways unchanged (binary, megabytes,
//! server-speaks-first, bytes pipelined behind the CONNECT head), half-close in both
//! directions, the idle timeout, 502 for a refused target, 400 on the reverse listener, the
//! route table applied to the CONNECT target, and the API log line a tunnel leaves behind.

mod common;

use common::*;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";

/// Opens a tunnel to `target` through the forward proxy; asserts the exact 200 answer.
fn open_tunnel(w: &Watchtower, target: &str) -> TcpStream {
    let mut s = w.connect_proxy();
    s.write_all(connect_request(target).as_bytes()).unwrap();
    expect_established(&mut s);
    s
}

/// Starts Watchtower with `opts` and opens a tunnel to a fresh raw backend; returns the
/// proxy, the client's end of the tunnel and the backend's.
fn tunnel_to_backend(opts: Opts) -> (Watchtower, TcpStream, TcpStream) {
    let backend = RawBackend::start();
    let w = Watchtower::start(opts);
    let c = open_tunnel(&w, &format!("127.0.0.1:{}", backend.port()));
    let b = backend.accept();
    (w, c, b)
}

/// Writes `bytes` on `from` and half-closes it; asserts that `to` reads exactly them and then
/// EOF (`eof` says what failed if the EOF does not come).
fn send_and_half_close(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8], eof: &str) {
    from.write_all(bytes).unwrap();
    from.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    to.read_to_end(&mut got).expect(eof);
    assert_eq!(got, bytes);
}

/// Reads exactly the `200 Connection Established` head, nothing more.
fn expect_established(s: &mut TcpStream) {
    let mut head = vec![0u8; ESTABLISHED.len()];
    s.read_exact(&mut head).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(ESTABLISHED),
        "the CONNECT answer"
    );
}

/// Echoes everything on `s` until EOF, then closes its write side.
fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Asserts the next read on `s` is EOF (or a reset), within the socket's read timeout.
fn expect_eof(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "{what}: expected EOF, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: expected EOF, got {e}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure replays.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn tunnel_echoes_bytes_exactly_in_both_directions() {
    let (_w, mut c, b) = tunnel_to_backend(Opts::default());
    let echoer = thread::spawn(move || echo(b));
    for msg in [
        &b"hello"[..],
        b"\x00\x01\xff\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"x",
    ] {
        c.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    c.shutdown(Shutdown::Write).unwrap();
    expect_eof(&mut c, "after the echo backend finished");
    echoer.join().unwrap();
}

#[test]
fn tunnel_carries_megabytes_of_binary_data_unchanged() {
    const SEED: u64 = 0x5eed_1234_abcd_0001;
    println!("noise seed {SEED:#x}");
    let (_w, c, b) = tunnel_to_backend(Opts::default());
    let echoer = thread::spawn(move || echo(b));
    let data = noise(4 * 1024 * 1024 + 17, SEED);
    let mut writer = c.try_clone().unwrap();
    let to_send = data.clone();
    let sender = thread::spawn(move || {
        for chunk in to_send.chunks(100_003) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(data.len());
    let mut reader = c;
    reader.read_to_end(&mut got).unwrap();
    sender.join().unwrap();
    echoer.join().unwrap();
    assert_eq!(got.len(), data.len(), "echoed byte count");
    let first_diff = got.iter().zip(&data).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "first differing byte offset");
}

#[test]
fn client_half_close_reaches_the_backend_which_can_still_answer() {
    let (_w, mut c, mut b) = tunnel_to_backend(Opts::default());
    send_and_half_close(
        &mut c,
        &mut b,
        b"ping",
        "the backend reads EOF after the client's half-close",
    );
    // The other direction stays open: the answer sent after EOF arrives.
    pass_bytes(&mut b, &mut c, b"pong after your EOF");
    pass_bytes(&mut b, &mut c, b" and more");
    drop(b);
    expect_eof(&mut c, "after the backend closed");
}

#[test]
fn backend_half_close_reaches_the_client_which_can_still_send() {
    let (_w, mut c, mut b) = tunnel_to_backend(Opts::default());
    send_and_half_close(
        &mut b,
        &mut c,
        b"banner",
        "the client reads EOF after the backend's half-close",
    );
    pass_bytes(&mut c, &mut b, b"still talking");
    c.shutdown(Shutdown::Write).unwrap();
    expect_eof(&mut b, "the backend after the client's half-close");
}

#[test]
fn server_speaks_first_bytes_arrive_after_the_200() {
    // SSH, SMTP and friends: the server sends a banner before the client says anything.
    let backend = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let mut c = w.connect_proxy();
    let target = format!("127.0.0.1:{}", backend.port());
    c.write_all(connect_request(&target).as_bytes()).unwrap();
    let mut b = backend.accept();
    b.write_all(b"SSH-2.0-test\r\n").unwrap();
    expect_established(&mut c);
    let mut banner = [0u8; 14];
    c.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-test\r\n");
}

#[test]
fn bytes_pipelined_behind_the_connect_head_are_tunnelled() {
    let backend = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let mut c = w.connect_proxy();
    let target = format!("127.0.0.1:{}", backend.port());
    // One write, so the early bytes travel with the head.
    c.write_all((connect_request(&target) + "early bytes\x00\x01").as_bytes())
        .unwrap();
    let mut b = backend.accept();
    let mut early = [0u8; 13];
    b.read_exact(&mut early).unwrap();
    assert_eq!(&early, b"early bytes\x00\x01");
    expect_established(&mut c);
    pass_bytes(&mut b, &mut c, b"reply");
}

#[test]
fn idle_tunnel_is_closed_by_the_idle_timeout_but_an_active_one_is_not() {
    let (_w, mut c, mut b) = tunnel_to_backend(Opts {
        timeouts: "idle = 1\n".into(),
        ..Default::default()
    });
    // Traffic every 300 ms for 2 s keeps a tunnel with a 1 s idle timeout open.
    let active_until = Instant::now() + Duration::from_secs(2);
    let mut rounds = 0;
    let idle_from = loop {
        c.write_all(b"tick").unwrap();
        let mut tick = [0u8; 4];
        b.read_exact(&mut tick)
            .unwrap_or_else(|e| panic!("round {rounds}: {e}"));
        b.write_all(b"tock").unwrap();
        let mut tock = [0u8; 4];
        c.read_exact(&mut tock)
            .unwrap_or_else(|e| panic!("round {rounds}: tunnel closed while active: {e}"));
        assert_eq!((&tick, &tock), (b"tick", b"tock"));
        let last_traffic = Instant::now();
        rounds += 1;
        if last_traffic >= active_until {
            break last_traffic;
        }
        thread::sleep(Duration::from_millis(300));
    };
    // Now silence: both sides see the tunnel closed, within a deadline, and not long
    // before the idle timeout.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    expect_eof(&mut c, "the client of an idle tunnel");
    let waited = idle_from.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "closed after only {waited:?} of silence"
    );
    expect_eof(&mut b, "the backend of an idle tunnel");
}

#[test]
fn connect_to_a_refused_port_answers_502_naming_the_target() {
    let w = Watchtower::start(Opts::default());
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let resp = roundtrip(w.proxy, &connect_request(&target));
    assert_eq!(resp.status, 502, "{}", resp.body_text());
    assert!(
        resp.body_text().contains(&target),
        "the 502 body names the target: {:?}",
        resp.body_text()
    );
}

#[test]
fn connect_on_the_reverse_port_is_rejected() {
    let backend = RawBackend::start();
    let w = Watchtower::with_routes(route("app", "app.example.test", backend.port()));
    let target = format!("127.0.0.1:{}", backend.port());
    let mut s = w.connect_reverse();
    s.write_all((connect_request(&target) + "after").as_bytes())
        .unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response_for(&mut r, "GET").unwrap();
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    assert!(
        resp.body_text().contains("CONNECT"),
        "the body says why: {:?}",
        resp.body_text()
    );
    assert_closed(&mut r, "the reverse port after the 400");
    assert!(
        backend.no_connection_within(Duration::from_millis(200)),
        "the reverse port opened a tunnel anyway"
    );
}

#[test]
fn plain_http_inside_a_connect_to_a_routed_domain_reaches_the_route_target() {
    // A CONNECT to a routed host is terminated by Watchtower (SPEC §3); a client that then
    // speaks plain HTTP instead of TLS is served on the same route.
    let backend = Backend::named("local");
    let w = Watchtower::with_routes(route("tun", "tunnel.example.test", backend.port()));
    let mut c = open_tunnel(&w, "tunnel.example.test:80");
    c.write_all(b"GET /inside HTTP/1.1\r\nHost: tunnel.example.test\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut BufReader::new(c.try_clone().unwrap())).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "local GET /inside");
    let seen = backend.wait_requests(1);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    let lines = w.wait_log_lines(1);
    let f = json_fields(&lines[0]);
    assert_eq!(f["kind"], "\"intercepted\"", "{}", lines[0]);
    assert_eq!(f["route"], "\"tun\"", "{}", lines[0]);
}

#[test]
fn tunnels_are_logged_with_byte_counts_and_refusals_with_502() {
    let backend = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let target = format!("127.0.0.1:{}", backend.port());
    let mut c = open_tunnel(&w, &target);
    let mut b = backend.accept();
    c.write_all(b"0123456789").unwrap();
    let mut ten = [0u8; 10];
    b.read_exact(&mut ten).unwrap();
    b.write_all(b"abc").unwrap();
    let mut three = [0u8; 3];
    c.read_exact(&mut three).unwrap();
    drop(b);
    expect_eof(&mut c, "after the backend closed");
    drop(c);
    let lines = w.wait_log_lines(1);
    let f = json_fields(&lines[0]);
    assert_eq!(f["method"], "\"CONNECT\"", "{}", lines[0]);
    assert_eq!(f["kind"], "\"tunnel\"", "{}", lines[0]);
    assert_eq!(f["host"], format!("\"{target}\""), "{}", lines[0]);
    assert_eq!(f["path"], "null", "{}", lines[0]);
    assert_eq!(f["status"], "200", "{}", lines[0]);
    // Bytes on the wire: the CONNECT head plus the 10 tunnelled bytes from the client; the
    // 200 head plus the 3 tunnelled bytes to it.
    let connect_head = connect_request(&target);
    let bytes_in = (connect_head.len() + 10).to_string();
    let bytes_out = (ESTABLISHED.len() + 3).to_string();
    assert_eq!(
        f["bytes_in"], bytes_in,
        "bytes from the client: {}",
        lines[0]
    );
    assert_eq!(
        f["bytes_out"], bytes_out,
        "bytes to the client: {}",
        lines[0]
    );

    let refused = format!("127.0.0.1:{}", free_port());
    let resp = roundtrip(w.proxy, &connect_request(&refused));
    assert_eq!(resp.status, 502);
    let lines = w.wait_log_lines(2);
    let f = json_fields(&lines[1]);
    assert_eq!(f["kind"], "\"tunnel\"", "{}", lines[1]);
    assert_eq!(f["status"], "502", "{}", lines[1]);
    assert_eq!(f["host"], format!("\"{refused}\""), "{}", lines[1]);
}

/// Kernel pipes the process holds (splice relays one per tunnel direction).
#[cfg(target_os = "linux")]
fn pipes(w: &Watchtower) -> usize {
    w.fd_targets()
        .iter()
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn short_exchanges_are_copied_and_bulk_transfers_move_through_splice_pipes() {
    let (w, mut c, mut b) = tunnel_to_backend(Opts::default());
    let baseline = pipes(&w); // stderr, piped to this test
    // A short exchange each way: copied through a buffer, no pipe made.
    pass_bytes(&mut c, &mut b, b"hello upstream");
    pass_bytes(&mut b, &mut c, b"hello client");
    assert_eq!(pipes(&w), baseline, "a pipe pair for 26 bytes");
    // 4 MiB upstream: the first full buffer marks the direction bulk, the rest is spliced.
    let data = noise(4 << 20, 7);
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; 4 << 20];
        b.read_exact(&mut got).unwrap();
        (b, got)
    });
    c.write_all(&data).unwrap();
    let (mut b, got) = reader.join().unwrap();
    assert!(got == data, "bytes changed on the way");
    assert_eq!(
        pipes(&w),
        baseline + 2,
        "one pipe (two ends) for the bulk direction"
    );
    // And the tunnel still works both ways.
    pass_bytes(&mut b, &mut c, b"done");
}
