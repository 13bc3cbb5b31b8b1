//! Faults and overload, end to end: a connection limit and a low open-file limit (clients wait
//! in the kernel's queue and are all served), running out of descriptors anyway (503, then
//! recovery), slowloris heads and bodies, a slow reader, clients and upstreams that vanish
//! mid-body with a FIN or a reset, and an upstream that stalls mid-body. Each case checks what
//! the peer sees, that the API log says what happened, and that another client is served
//! normally at the same time.

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A request for `path` through the forward proxy to the backend on `port`, on a fresh
/// connection, answered completely.
fn fetch(proxy: SocketAddr, port: u16, path: &str) -> Response {
    roundtrip(proxy, &abs_get(port, path))
}

/// `GET /api/stats` from the admin API.
fn stats(w: &Watchtower) -> serde_json::Value {
    json(&admin(w, "GET", "/api/stats", None))
}

/// Open descriptors of the Watchtower process.
fn open_fds(w: &Watchtower) -> usize {
    w.fd_targets().len()
}

/// Reads until the peer closes (a FIN or a reset), within the read timeout; returns what came.
fn read_until_closed(s: &mut impl Read, what: &str) -> Vec<u8> {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: not closed: {e}"),
    }
    rest
}

/// The API log record whose `path` is `path`, waiting for it.
fn log_record(w: &Watchtower, path: &str) -> std::collections::HashMap<String, String> {
    let quoted = format!("\"{path}\"");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(w.api_log_path()).unwrap_or_default();
        if let Some(f) = text
            .lines()
            .map(json_fields)
            .find(|f| f.get("path") == Some(&quoted))
        {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "no API log record for {path}:\n{text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn clients_over_max_connections_wait_in_the_queue_and_are_served_when_others_close() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts {
        proxy: "max_connections = 4\n".into(),
        ..Default::default()
    });
    assert_eq!(stats(&w)["max_connections"], 4);
    // Four kept-alive connections, each served once: the limit is reached.
    let mut held = Vec::new();
    for i in 0..4 {
        let mut c = w.connect_proxy();
        c.write_all(abs_get(b.port(), &format!("/held/{i}")).as_bytes())
            .unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        assert_eq!(read_response(&mut r).unwrap().status, 200);
        held.push((c, r));
    }
    // Three more clients connect (the kernel completes their handshakes) and send requests.
    let waiting: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = w.connect_proxy();
            c.write_all(abs_get(b.port(), &format!("/waiting/{i}")).as_bytes())
                .unwrap();
            c
        })
        .collect();
    let line = w.wait_for_stderr(|l| l.contains("not accepting new connections"), WAIT);
    let line = line.expect("no warning that accepting stopped at the limit");
    assert!(line.contains("max_connections (4) reached"), "{line}");
    // The admin API (its own thread) still answers, and sees exactly the limit in use.
    assert_eq!(stats(&w)["open_connections"]["proxy"], 4);
    assert_eq!(b.requests().len(), 4, "a queued request was forwarded");
    // The held connections keep working while others queue.
    for (i, (c, r)) in held.iter_mut().enumerate() {
        c.write_all(abs_get(b.port(), &format!("/again/{i}")).as_bytes())
            .unwrap();
        assert_eq!(read_response(r).unwrap().status, 200);
    }
    drop(held);
    // Room again: the queued clients are taken in and answered, none lost.
    for (i, c) in waiting.into_iter().enumerate() {
        let mut r = BufReader::new(c);
        let resp = read_response(&mut r).unwrap_or_else(|e| panic!("queued client {i}: {e}"));
        assert_eq!(resp.status, 200, "queued client {i}");
        assert_eq!(resp.body_text(), format!("b GET /waiting/{i}"));
    }
    assert_eq!(fetch(w.proxy, b.port(), "/after").status, 200);
}

#[test]
fn a_low_open_file_limit_caps_connections_so_every_client_is_served() {
    let b = Backend::named("b");
    // 64 descriptors: the default limit leaves room for an upstream socket per client.
    let w = Watchtower::start(Opts {
        open_files: Some(64),
        workers: Some(1),
        ..Default::default()
    });
    assert_eq!(stats(&w)["max_connections"], 8);
    // 40 clients at once, each holding its connection until its answer arrives.
    let proxy = w.proxy;
    let port = b.port();
    let clients: Vec<_> = (0..40)
        .map(|i| thread::spawn(move || fetch(proxy, port, &format!("/c/{i}"))))
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let resp = c.join().unwrap();
        assert_eq!(
            (resp.status, resp.body_text()),
            (200, format!("b GET /c/{i}")),
            "client {i}"
        );
    }
    assert!(
        !w.stderr_text().contains("out of file descriptors"),
        "{}",
        w.stderr_text()
    );
}

#[test]
fn out_of_descriptors_answers_503_pauses_accepting_and_recovers() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts {
        open_files: Some(64),
        workers: Some(1),
        proxy: "max_connections = 1000\n".into(),
        ..Default::default()
    });
    assert!(
        w.stderr_text()
            .contains("may not fit the open-file limit (64"),
        "{}",
        w.stderr_text()
    );
    // Fill every free descriptor with idle clients, then some more that must queue.
    let free = 64 - open_fds(&w);
    let mut idle: Vec<TcpStream> = (0..free + 4).map(|_| w.connect_proxy()).collect();
    let line = w.wait_for_stderr(|l| l.contains("not accepting new connections"), WAIT);
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("out of file descriptors")),
        "{line:?}"
    );
    // An accepted client asks for something: no descriptor is left for the upstream.
    idle[0]
        .write_all(abs_get(b.port(), "/starved").as_bytes())
        .unwrap();
    let resp = read_response(&mut BufReader::new(idle[0].try_clone().unwrap())).unwrap();
    assert_eq!(resp.status, 503, "{}", resp.body_text());
    assert!(
        resp.body_text().contains("out of file descriptors"),
        "{}",
        resp.body_text()
    );
    assert_eq!(log_record(&w, "/starved")["status"], "503");
    // The clients go away: Watchtower recovers without a restart.
    idle.clear();
    wait_until("the idle connections to close", || open_fds(&w) < 40);
    for i in 0..10 {
        let resp = fetch(w.proxy, b.port(), &format!("/recovered/{i}"));
        assert_eq!(resp.status, 200, "after recovery: {}", resp.body_text());
    }
}

#[test]
fn slowloris_heads_and_bodies_are_cut_off_while_other_clients_are_served() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts {
        timeouts: "request_header = 1\nidle = 1\n".into(),
        ..Default::default()
    });
    // 30 clients trickle request heads; 10 send a head and stall in the body.
    let mut heads: Vec<TcpStream> = (0..30).map(|_| w.connect_proxy()).collect();
    let mut bodies: Vec<TcpStream> = (0..10)
        .map(|i| {
            let mut c = w.connect_proxy();
            let req = format!(
                "POST http://127.0.0.1:{}/body/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nonly a little",
                b.port()
            );
            c.write_all(req.as_bytes()).unwrap();
            c
        })
        .collect();
    let started = Instant::now();
    let trickle = b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let mut sent = 0;
    let mut answered = 0;
    // While they trickle, a normal client is served promptly, again and again.
    while started.elapsed() < Duration::from_millis(600) {
        for h in &mut heads {
            let _ = h.write_all(&trickle[sent % trickle.len()..][..1]);
        }
        sent += 1;
        assert_eq!(fetch(w.proxy, b.port(), "/normal").status, 200);
        answered += 1;
    }
    assert!(answered > 0);
    // Every slow head gets 408 and a close; every stalled body a close.
    for (i, h) in heads.iter_mut().enumerate() {
        let mut r = BufReader::new(h.try_clone().unwrap());
        let resp = read_response(&mut r).unwrap_or_else(|e| panic!("slow head {i}: {e}"));
        assert_eq!(resp.status, 408, "slow head {i}");
        assert_closed(&mut r, &format!("slow head {i}"));
    }
    for (i, c) in bodies.iter_mut().enumerate() {
        read_until_closed(c, &format!("stalled body {i}"));
    }
    let f = log_record(&w, "/body/0");
    assert!(f["error"].contains("idle"), "{f:?}");
    // Each cut-off head is in the API log as a 408 too.
    let timed_out = |text: &str| {
        text.lines()
            .filter(|l| json_fields(l)["status"] == "408")
            .count()
    };
    wait_until("30 logged 408s", || {
        timed_out(&std::fs::read_to_string(w.api_log_path()).unwrap_or_default()) == 30
    });
    // None of the incomplete bodies reached the backend as a complete request.
    assert!(
        b.requests().iter().all(|s| !s.target.starts_with("/body/")),
        "an incomplete body was delivered as a complete request"
    );
}

#[test]
fn a_slow_reader_holds_bounded_memory_and_does_not_slow_anyone_else() {
    let raw = RawBackend::start();
    let b = Backend::named("b");
    let w = Watchtower::start(Opts::default());
    let rss_before = w.rss_kib();
    let mut slow = w.connect_proxy();
    slow.write_all(abs_get(raw.port(), "/big").as_bytes())
        .unwrap();
    let mut up = raw.accept();
    let head = read_raw_head(&mut up);
    assert!(head.starts_with("GET /big "), "{head}");
    const LEN: u64 = 256 << 20;
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let writer = thread::spawn(move || {
        up.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        up.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").as_bytes())
            .unwrap();
        let chunk = vec![b'z'; 64 * 1024];
        let mut sent = 0;
        while sent < LEN {
            if up.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len() as u64;
            counter.store(sent, Ordering::Relaxed);
        }
    });
    // The slow reader reads nothing: the backend must stall well short of the whole body.
    let mut last = 0;
    let mut still_since = Instant::now();
    loop {
        let now = written.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(
            now < LEN,
            "the whole body was taken in while the client read nothing"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        last < 64 << 20,
        "{last} bytes buffered for a reader that reads nothing"
    );
    // Meanwhile everyone else is served.
    for i in 0..20 {
        assert_eq!(fetch(w.proxy, b.port(), &format!("/other/{i}")).status, 200);
    }
    let grown = w.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "RSS grew {grown} KiB behind a slow reader"
    );
    // The reader wakes up and gets every byte.
    let mut r = BufReader::new(slow.try_clone().unwrap());
    let (status, _, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    while got < LEN {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {got} of {LEN} bytes");
        assert!(buf[..n].iter().all(|&c| c == b'z'));
        got += n as u64;
    }
    writer.join().unwrap();
    assert_eq!(got, LEN);
}

/// How a peer goes away mid-body.
#[derive(Clone, Copy, Debug)]
enum Vanish {
    /// A normal close (FIN).
    Fin,
    /// An abortive close (RST: SO_LINGER 0).
    Rst,
}

fn vanish(s: TcpStream, how: Vanish) {
    match how {
        Vanish::Fin => {
            let _ = s.shutdown(Shutdown::Both);
        }
        Vanish::Rst => {
            // SO_LINGER with a zero timeout makes close() send a reset.
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    }
    drop(s);
}

#[test]
fn a_client_that_vanishes_mid_upload_is_logged_and_the_upstream_request_abandoned() {
    for how in [Vanish::Fin, Vanish::Rst] {
        let raw = RawBackend::start();
        let b = Backend::named("b");
        let w = Watchtower::start(Opts::default());
        let mut c = w.connect_proxy();
        let path = format!("/upload/{how:?}");
        c.write_all(
            format!(
                "POST http://127.0.0.1:{}{path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
                raw.port()
            )
            .as_bytes(),
        )
        .unwrap();
        c.write_all(&[b'u'; 30_000]).unwrap();
        let mut up = raw.accept();
        let head = read_raw_head(&mut up);
        assert!(head.starts_with(&format!("POST {path} ")), "{head}");
        // The backend has part of the body; the client goes away.
        let mut part = vec![0u8; 30_000];
        up.read_exact(&mut part).unwrap();
        vanish(c, how);
        // The upstream request is abandoned: its connection closes rather than idling on,
        // waiting for a body that will never come.
        let rest = read_until_closed(&mut up, &format!("{how:?}: upstream connection"));
        assert!(rest.len() < 70_000, "{how:?}: the body was completed");
        let f = log_record(&w, &path);
        assert!(f["error"].contains("client"), "{how:?}: {f:?}");
        assert_eq!(fetch(w.proxy, b.port(), "/next").status, 200, "{how:?}");
    }
}

#[test]
fn an_upstream_that_vanishes_mid_body_closes_the_client_connection_and_is_logged() {
    for how in [Vanish::Fin, Vanish::Rst] {
        let raw = RawBackend::start();
        let b = Backend::named("b");
        let w = Watchtower::start(Opts::default());
        let mut c = w.connect_proxy();
        let path = format!("/download/{how:?}");
        c.write_all(abs_get(raw.port(), &path).as_bytes()).unwrap();
        let mut up = raw.accept();
        read_raw_head(&mut up);
        up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            .unwrap();
        up.write_all(&[b'd'; 20_000]).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        assert_eq!(read_head(&mut r).unwrap().0, 200);
        let mut first = vec![0u8; 20_000];
        r.read_exact(&mut first).unwrap();
        vanish(up, how);
        // The client sees its connection end short of Content-Length (so it knows the body
        // is truncated), never a hang and never a second response on the same connection.
        let rest = read_until_closed(&mut r, &format!("{how:?}: client connection"));
        assert!(
            rest.is_empty(),
            "{how:?}: {} bytes after the cut",
            rest.len()
        );
        let f = log_record(&w, &path);
        assert!(f["error"].contains("upstream"), "{how:?}: {f:?}");
        assert_eq!(fetch(w.proxy, b.port(), "/next").status, 200, "{how:?}");
    }
}

#[test]
fn an_upstream_that_stalls_mid_body_is_cut_at_the_idle_timeout() {
    let raw = RawBackend::start();
    let b = Backend::named("b");
    let w = Watchtower::start(Opts {
        timeouts: "idle = 1\n".into(),
        ..Default::default()
    });
    let mut c = w.connect_proxy();
    c.write_all(abs_get(raw.port(), "/stalls").as_bytes())
        .unwrap();
    let mut up = raw.accept();
    read_raw_head(&mut up);
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nsome of it")
        .unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    assert_eq!(read_head(&mut r).unwrap().0, 200);
    // Another client is served while this one waits.
    assert_eq!(fetch(w.proxy, b.port(), "/other").status, 200);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("client connection not closed after the stall");
    assert_eq!(rest, b"some of it");
    // The upstream connection is closed too.
    read_until_closed(&mut up, "the upstream connection after the stall");
    let f = log_record(&w, "/stalls");
    assert!(f["error"].contains("idle"), "{f:?}");
}
