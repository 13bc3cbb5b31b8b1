//! Plain HTTP through the forward and reverse ports: request forms, keep-alive, pipelining,
//! body framing, streaming with bounded memory, forwarded headers, and error answers.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A buffered reader over a clone of `s`, so the test can keep writing on `s`.
fn reader(s: &TcpStream) -> BufReader<TcpStream> {
    BufReader::new(s.try_clone().unwrap())
}

/// Sends `GET path` through the forward port to `raw`; returns the client connection and the
/// backend's end of the upstream connection, with the request head already read off it.
fn get_through(w: &Watchtower, raw: &RawBackend, path: &str) -> (TcpStream, TcpStream) {
    let mut c = w.connect_proxy();
    c.write_all(abs_get(raw.port(), path).as_bytes()).unwrap();
    let mut up = raw.accept();
    read_raw_head(&mut up);
    (c, up)
}

/// Reads exactly `n` bytes.
fn read_n(r: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).unwrap();
    buf
}

/// Reads one chunk of a chunked body (size line, data, CRLF); an empty Vec is the last chunk
/// (its trailer section is consumed too).
fn read_one_chunk(r: &mut impl BufRead) -> Vec<u8> {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
    if size == 0 {
        loop {
            let mut t = String::new();
            r.read_line(&mut t).unwrap();
            if t.trim_end().is_empty() {
                return Vec::new();
            }
        }
    }
    let data = read_n(r, size);
    assert_eq!(read_n(r, 2), b"\r\n", "chunk data not followed by CRLF");
    data
}

/// Reads chunks until the collected data ends with `end` (an event boundary).
fn read_chunks_until(r: &mut impl BufRead, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    while !got.ends_with(end) {
        let chunk = read_one_chunk(r);
        assert!(!chunk.is_empty(), "body ended early after {got:?}");
        got.extend_from_slice(&chunk);
    }
    got
}

#[test]
fn forward_absolute_form_reaches_backend_in_origin_form_with_host_from_uri() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts::default());
    let port = b.port();
    let resp = roundtrip(w.proxy, &abs_get(port, "/a/b?x=1"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "b GET /a/b?x=1");
    let seen = b.wait_requests(1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/a/b?x=1");
    assert!(
        seen[0].raw_head.starts_with("GET /a/b?x=1 HTTP/1.1\r\n"),
        "{}",
        seen[0].raw_head
    );
    assert_eq!(
        seen[0].header_all("host"),
        vec![format!("127.0.0.1:{port}")]
    );
}

#[test]
fn forward_absolute_form_host_header_is_replaced_by_uri_authority() {
    // RFC 9112 §3.2.2: a proxy ignores the Host header of an absolute-form request and uses
    // the URI's authority.
    let b = Backend::named("b");
    let w = Watchtower::start(Opts::default());
    let port = b.port();
    let resp = roundtrip(
        w.proxy,
        &format!("GET http://127.0.0.1:{port}/p HTTP/1.1\r\nHost: other.example.test\r\n\r\n"),
    );
    assert_eq!(resp.status, 200);
    let seen = b.wait_requests(1);
    assert_eq!(
        seen[0].header_all("host"),
        vec![format!("127.0.0.1:{port}")]
    );
}

#[test]
fn reverse_get_is_routed_by_host() {
    let b = Backend::named("web");
    let w = Watchtower::with_routes(route("web", "app.example.test", b.port()));
    let resp = roundtrip(
        w.reverse.unwrap(),
        "GET /page?q=2 HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "web GET /page?q=2");
    let seen = b.wait_requests(1);
    assert_eq!(seen[0].target, "/page?q=2");
    assert_eq!(seen[0].header_all("host"), vec!["app.example.test"]);
}

#[test]
fn keep_alive_reuses_one_backend_connection() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts::default());
    let mut c = w.connect_proxy();
    let mut r = reader(&c);
    for path in ["/one", "/two"] {
        c.write_all(abs_get(b.port(), path).as_bytes()).unwrap();
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body_text(), format!("b GET {path}"));
        assert!(
            resp.header("connection")
                .is_none_or(|v| !v.eq_ignore_ascii_case("close")),
            "keep-alive response says Connection: {:?}",
            resp.header("connection")
        );
    }
    let seen = b.wait_requests(2);
    assert_eq!(seen[0].conn, seen[1].conn);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts::default());
    let port = b.port();
    let mut c = w.connect_proxy();
    // A body in the middle: its framing must not swallow or split the next request.
    let all = abs_get(port, "/1")
        + &format!(
            "POST http://127.0.0.1:{port}/2 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Length: 3\r\n\r\nabc"
        )
        + &abs_get(port, "/3");
    c.write_all(all.as_bytes()).unwrap();
    let mut r = reader(&c);
    for want in ["b GET /1", "b POST /2", "b GET /3"] {
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body_text(), want);
    }
    let seen = b.wait_requests(3);
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["/1", "/2", "/3"]);
    assert_eq!(seen[1].body, b"abc");
}

#[test]
fn chunked_upload_reaches_backend_decoded() {
    let b = Backend::start(|req| Reply::text(200, &format!("got {} bytes", req.body.len())));
    let w = Watchtower::start(Opts::default());
    let port = b.port();
    let resp = roundtrip(
        w.proxy,
        &format!(
            "POST http://127.0.0.1:{port}/up HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        ),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "got 11 bytes");
    let seen = b.wait_requests(1);
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen[0].header("content-length"), None);
}

#[test]
fn chunked_upload_bytes_arrive_intact() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let port = raw.port();
    let body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let mut c = w.connect_proxy();
    write!(
        c,
        "POST http://127.0.0.1:{port}/up HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{body}"
    )
    .unwrap();
    let mut up = raw.accept();
    let head = read_raw_head(&mut up);
    assert!(head.starts_with("POST /up HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert_eq!(read_n(&mut up, body.len()), body.as_bytes());
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    let resp = read_response(&mut reader(&c)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
}

#[test]
fn post_with_content_length_reaches_backend() {
    let b = Backend::start(|req| Reply::text(201, &format!("stored {}", req.body.len())));
    let w = Watchtower::start(Opts::default());
    let port = b.port();
    let resp = roundtrip(
        w.proxy,
        &format!(
            "POST http://127.0.0.1:{port}/form HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n\r\nname=value"
        ),
    );
    assert_eq!(resp.status, 201);
    assert_eq!(resp.body_text(), "stored 10");
    let seen = b.wait_requests(1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/form");
    assert_eq!(seen[0].body, b"name=value");
    assert_eq!(seen[0].header("content-length"), Some("10"));
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let b = Backend::start(|req| {
        Reply::text(
            200,
            &format!("got {:?}", String::from_utf8_lossy(&req.body)),
        )
    });
    let w = Watchtower::start(Opts::default());
    let port = b.port();
    let mut c = w.connect_proxy();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        c,
        "PUT http://127.0.0.1:{port}/f HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    .unwrap();
    let mut r = reader(&c);
    let started = Instant::now();
    let (status, _, _) = read_head(&mut r).expect("no 100 Continue before the body was sent");
    assert_eq!(status, 100);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "100 Continue took {:?}",
        started.elapsed()
    );
    c.write_all(b"hello").unwrap();
    let resp = read_response_for(&mut r, "PUT").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "got \"hello\"");
    assert_eq!(b.wait_requests(1)[0].body, b"hello");
}

#[test]
fn head_response_has_no_body_and_connection_stays_usable() {
    let b = Backend::start(|req| {
        if req.method == "HEAD" {
            Reply {
                status: 200,
                headers: vec![("Content-Length".into(), "11".into())],
                body: b"hello world".to_vec(),
            }
        } else {
            Reply::text(200, "after head")
        }
    });
    let w = Watchtower::start(Opts::default());
    let port = b.port();
    let mut c = w.connect_proxy();
    let mut r = reader(&c);
    write!(
        c,
        "HEAD http://127.0.0.1:{port}/h HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let (status, _, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    assert!(
        headers.contains(&("content-length".into(), "11".into())),
        "{headers:?}"
    );
    // If the proxy relayed or waited for a body, this next exchange would be garbled.
    c.write_all(abs_get(port, "/next").as_bytes()).unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "after head");
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

/// Sends `GET path` on `c` and asserts it arrives on the same raw backend connection `up`;
/// `up` answers `200 ok`, which must be the next thing the client reads from `r`.
fn assert_next_exchange_reuses(
    c: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    up: &mut TcpStream,
    port: u16,
    path: &str,
) {
    c.write_all(abs_get(port, path).as_bytes()).unwrap();
    let head = read_raw_head(up);
    assert!(
        head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
        "{head}"
    );
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    let (status, _, _) = read_head(r).unwrap();
    assert_eq!(status, 200);
    assert_eq!(read_n(r, 2), b"ok");
}

#[test]
fn status_204_has_no_body_and_connection_is_reused() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let port = raw.port();
    let mut c = w.connect_proxy();
    let mut r = reader(&c);
    c.write_all(abs_get(port, "/first").as_bytes()).unwrap();
    let mut up = raw.accept();
    let head = read_raw_head(&mut up);
    assert!(head.starts_with("GET /first HTTP/1.1\r\n"), "{head}");
    up.write_all(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
        .unwrap();
    let (status, _, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 204);
    assert!(headers.contains(&("x-a".into(), "1".into())), "{headers:?}");
    // The next request must travel on the same backend connection, and its response must be
    // the next thing the client reads.
    assert_next_exchange_reuses(&mut c, &mut r, &mut up, port, "/after");
}

#[test]
fn status_304_has_no_body_even_with_content_length_and_connection_is_reused() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let port = raw.port();
    let (mut c, mut up) = get_through(&w, &raw, "/cached");
    let mut r = reader(&c);
    // Content-Length on a 304 is the length of the cached representation, not a body.
    up.write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n")
        .unwrap();
    let (status, _, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 304);
    assert!(
        headers.contains(&("etag".into(), "\"v1\"".into())),
        "{headers:?}"
    );
    assert_next_exchange_reuses(&mut c, &mut r, &mut up, port, "/after");
}

#[test]
fn close_delimited_response_is_relayed_whole_then_eof() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let (c, mut up) = get_through(&w, &raw, "/stream");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, ")
        .unwrap();
    up.write_all(b"world").unwrap();
    drop(up);
    let mut r = reader(&c);
    let (status, _, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    assert!(
        !headers
            .iter()
            .any(|(n, _)| n == "content-length" || n == "transfer-encoding"),
        "{headers:?}"
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("the proxy did not close the client connection after a close-delimited body");
    assert_eq!(String::from_utf8_lossy(&rest), "hello, world");
}

/// Waits until `counter` stops moving for 100 ms (the sender is blocked by backpressure or
/// done); returns its value. Fails after `WAIT`.
fn wait_until_stalled(counter: &AtomicU64) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut last = counter.load(Ordering::SeqCst);
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = counter.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "sender never stalled");
        last = now;
    }
}

/// Bytes streamed in each direction by the large-transfer tests. Big enough that buffering
/// the body in the proxy would show in its RSS, small enough for a debug build.
const BIG: u64 = 256 << 20;
/// Where the receiving side pauses so that only backpressure can stop the sender.
const PAUSE_AT: u64 = 16 << 20;
/// Allowed RSS growth of the proxy during a transfer.
const RSS_BUDGET_KIB: u64 = 64 << 10;
/// The most bytes the kernel's socket buffers on both hops can hold (tcp_rmem/tcp_wmem max
/// here are 32 MiB / 4 MiB per socket, two hops).
const KERNEL_BUFFERS: u64 = 80 << 20;

/// Writes `BIG` zero bytes to `out` in 64 KiB pieces, adding each piece to `written`.
fn write_zeros(out: &mut impl Write, written: &AtomicU64) {
    let zeros = vec![0u8; 64 << 10];
    let mut left = BIG;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
        written.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// Reads the `BIG` zero bytes that `sender` writes (its progress counted in `written`) from
/// `input`, the `receiver`'s end, checking every byte. At `PAUSE_AT` it stops reading until
/// the sender stalls and asserts that backpressure held the sender within `KERNEL_BUFFERS`.
/// Samples the proxy's RSS along the way; returns the peak, starting from `before`.
fn receive_zeros(
    w: &Watchtower,
    input: &mut impl Read,
    written: &AtomicU64,
    (sender, receiver): (&str, &str),
    before: u64,
) -> u64 {
    let mut got = 0u64;
    let mut peak = before;
    let mut paused = false;
    let mut buf = vec![0u8; 64 << 10];
    while got < BIG {
        let want = buf.len().min((BIG - got) as usize);
        let n = input.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "EOF after {got} of {BIG} bytes");
        assert!(buf[..n].iter().all(|&b| b == 0), "corrupted body");
        got += n as u64;
        if got % (16 << 20) < n as u64 {
            peak = peak.max(w.rss_kib());
        }
        if !paused && got >= PAUSE_AT {
            paused = true;
            // Stop reading: a proxy that keeps pulling from the sender would buffer it all.
            let sent = wait_until_stalled(written);
            peak = peak.max(w.rss_kib());
            eprintln!("paused at {got}: {sender} stalled at {sent}");
            assert!(
                sent < got + KERNEL_BUFFERS,
                "{sender} wrote {sent} bytes while the {receiver} had read {got}: no backpressure"
            );
        }
    }
    peak.max(w.rss_kib())
}

/// Reports a large transfer and asserts the proxy's RSS grew by less than `RSS_BUDGET_KIB`.
fn assert_rss_bounded(what: &str, before: u64, peak: u64, started: Instant) {
    eprintln!(
        "{what} {} MiB in {:?}, rss {before} -> peak {peak} KiB",
        BIG >> 20,
        started.elapsed()
    );
    assert!(
        peak - before < RSS_BUDGET_KIB,
        "proxy RSS grew from {before} KiB to {peak} KiB"
    );
}

#[test]
fn large_download_streams_with_bounded_memory() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let before = w.rss_kib();
    let (c, mut up) = get_through(&w, &raw, "/big");
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let backend = thread::spawn(move || {
        up.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").as_bytes())
            .unwrap();
        write_zeros(&mut up, &counter);
    });
    let mut r = reader(&c);
    let (status, _, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    assert!(
        headers.contains(&("content-length".into(), BIG.to_string())),
        "{headers:?}"
    );
    let started = Instant::now();
    let peak = receive_zeros(&w, &mut r, &written, ("upstream", "client"), before);
    backend.join().unwrap();
    assert_rss_bounded("download", before, peak, started);
}

#[test]
fn large_upload_streams_with_bounded_memory() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let before = w.rss_kib();
    let port = raw.port();
    let c = w.connect_proxy();
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let mut cw = c.try_clone().unwrap();
    let client = thread::spawn(move || {
        write!(
            cw,
            "PUT http://127.0.0.1:{port}/big HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Length: {BIG}\r\n\r\n"
        )
        .unwrap();
        write_zeros(&mut cw, &counter);
    });
    let mut up = raw.accept();
    let head = read_raw_head(&mut up);
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\ncontent-length: {BIG}\r\n")),
        "{head}"
    );
    let started = Instant::now();
    let peak = receive_zeros(&w, &mut up, &written, ("client", "upstream"), before);
    client.join().unwrap();
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .unwrap();
    let resp = read_response_for(&mut reader(&c), "PUT").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
    assert_rss_bounded("upload", before, peak, started);
}

#[test]
fn sse_chunked_events_arrive_while_upstream_is_still_open() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let (mut c, mut up) = get_through(&w, &raw, "/events");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    up.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
          Transfer-Encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n",
    )
    .unwrap();
    let mut r = reader(&c);
    let (status, _, headers) = read_head(&mut r).expect("response head not relayed promptly");
    assert_eq!(status, 200);
    assert!(
        headers.contains(&("content-type".into(), "text/event-stream".into())),
        "{headers:?}"
    );
    // The upstream has sent nothing more: the first event must already be here.
    assert_eq!(read_chunks_until(&mut r, b"\n\n"), b"data: one\n\n");
    up.write_all(b"b\r\ndata: two\n\n\r\n").unwrap();
    assert_eq!(read_chunks_until(&mut r, b"\n\n"), b"data: two\n\n");
    up.write_all(b"0\r\n\r\n").unwrap();
    assert_eq!(read_one_chunk(&mut r), b"");
    // The chunked body ended cleanly: both connections carry the next exchange.
    assert_next_exchange_reuses(&mut c, &mut r, &mut up, raw.port(), "/next");
}

#[test]
fn sse_close_delimited_events_arrive_while_upstream_is_still_open() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let (c, mut up) = get_through(&w, &raw, "/events");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: one\n\n")
        .unwrap();
    let mut r = reader(&c);
    let (status, _, _) = read_head(&mut r).expect("response head not relayed promptly");
    assert_eq!(status, 200);
    assert_eq!(read_n(&mut r, 11), b"data: one\n\n");
    up.write_all(b"data: two\n\n").unwrap();
    assert_eq!(read_n(&mut r, 11), b"data: two\n\n");
    drop(up);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("no EOF after the upstream closed");
    assert_eq!(rest, b"");
}

/// Asserts the Host and forwarding headers the upstream got: `Host: host`,
/// `X-Forwarded-For: xff`, `X-Forwarded-Proto: http`, `X-Forwarded-Host: host`, the client's
/// `X-Real-IP` and Watchtower's `Via`.
fn assert_forwarded_headers(seen: &Seen, host: &str, xff: &str) {
    assert_eq!(seen.header_all("host"), vec![host]);
    assert_eq!(seen.header_all("x-forwarded-for"), vec![xff]);
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), vec![host]);
    assert_eq!(seen.header_all("x-real-ip"), vec!["127.0.0.1"]);
    let via = seen.header_all("via");
    assert_eq!(via.len(), 1, "{via:?}");
    assert_is_our_via(via[0]);
}

/// Watchtower's Via entry: `1.1 watchtower-` and 8 hex digits, this run's pseudonym.
fn assert_is_our_via(value: &str) {
    let id = value
        .strip_prefix("1.1 watchtower-")
        .unwrap_or_else(|| panic!("Via {value:?}"));
    assert!(
        id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "Via {value:?}"
    );
}

#[test]
fn hop_by_hop_request_headers_removed_and_forwarded_headers_added() {
    let b = Backend::named("web");
    let w = Watchtower::with_routes(route("web", "app.example.test", b.port()));
    let resp = roundtrip(
        w.proxy,
        "GET http://app.example.test/h HTTP/1.1\r\nHost: app.example.test\r\n\
         Connection: keep-alive, x-secret\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         TE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Secret: s\r\nX-Keep: k\r\n\
         X-Forwarded-For: 1.2.3.4\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "web GET /h");
    assert_is_our_via(resp.header("via").unwrap());
    let seen = &b.wait_requests(1)[0];
    for gone in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "x-secret",
    ] {
        assert_eq!(
            seen.header(gone),
            None,
            "{gone} reached the upstream:\n{}",
            seen.raw_head
        );
    }
    assert_eq!(seen.header_all("x-keep"), vec!["k"]);
    assert_forwarded_headers(seen, "app.example.test", "1.2.3.4, 127.0.0.1");
}

#[test]
fn x_forwarded_for_appends_to_all_existing_values() {
    let b = Backend::named("web");
    let w = Watchtower::with_routes(route("web", "app.example.test", b.port()));
    let resp = roundtrip(
        w.proxy,
        "GET http://app.example.test/ HTTP/1.1\r\nHost: app.example.test\r\n\
         X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8, 9.9.9.9\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let seen = &b.wait_requests(1)[0];
    // Several field lines are one list (RFC 9110 §5.3); the client's IP goes last.
    let joined = seen.header_all("x-forwarded-for").join(", ");
    assert_eq!(
        joined, "1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1",
        "{}",
        seen.raw_head
    );
}

#[test]
fn reverse_request_gets_forwarded_headers() {
    let b = Backend::named("web");
    let w = Watchtower::with_routes(route("web", "app.example.test", b.port()));
    let resp = roundtrip(
        w.reverse.unwrap(),
        "GET /r HTTP/1.1\r\nHost: app.example.test:8080\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_is_our_via(resp.header("via").unwrap());
    let seen = &b.wait_requests(1)[0];
    assert_forwarded_headers(seen, "app.example.test:8080", "127.0.0.1");
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let b = Backend::start(|_| Reply {
        status: 200,
        headers: vec![
            ("Connection".into(), "X-Resp-Secret".into()),
            ("Keep-Alive".into(), "timeout=5".into()),
            ("X-Resp-Secret".into(), "1".into()),
            ("X-Resp-Keep".into(), "2".into()),
        ],
        body: b"ok".to_vec(),
    });
    let w = Watchtower::start(Opts::default());
    let resp = roundtrip(w.proxy, &abs_get(b.port(), "/"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
    assert_eq!(resp.header("x-resp-keep"), Some("2"));
    assert_eq!(resp.header("x-resp-secret"), None, "{:?}", resp.headers);
    assert_eq!(resp.header("keep-alive"), None, "{:?}", resp.headers);
    assert!(
        resp.header("connection")
            .is_none_or(|v| !v.to_ascii_lowercase().contains("x-resp-secret")),
        "{:?}",
        resp.headers
    );
}

#[test]
fn origin_form_on_forward_port_is_400_with_helpful_body() {
    let w = Watchtower::start(Opts::default());
    let resp = roundtrip(
        w.proxy,
        "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert_eq!(resp.status, 400);
    let body = resp.body_text();
    assert!(body.contains("use it as a proxy"), "{body}");
    assert!(body.contains("HTTP_PROXY"), "{body}");
}

#[test]
fn https_absolute_form_is_400() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let port = raw.port();
    let resp = roundtrip(
        w.proxy,
        &format!("GET https://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
    );
    assert_eq!(resp.status, 400);
    let body = resp.body_text();
    assert!(body.contains("CONNECT"), "{body}");
    assert!(raw.no_connection_within(Duration::from_millis(200)));
}

#[test]
fn refused_upstream_is_502_naming_it() {
    let w = Watchtower::start(Opts::default());
    let port = free_port();
    let resp = roundtrip(w.proxy, &abs_get(port, "/"));
    assert_eq!(resp.status, 502);
    let body = resp.body_text();
    assert!(
        body.contains(&format!("upstream 127.0.0.1:{port} refused the connection")),
        "{body}"
    );
}

#[test]
fn keep_alive_continues_after_502() {
    let b = Backend::named("b");
    let w = Watchtower::start(Opts::default());
    let mut c = w.connect_proxy();
    let mut r = reader(&c);
    c.write_all(abs_get(free_port(), "/dead").as_bytes())
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 502);
    assert!(
        resp.header("connection")
            .is_none_or(|v| !v.eq_ignore_ascii_case("close")),
        "{:?}",
        resp.headers
    );
    c.write_all(abs_get(b.port(), "/alive").as_bytes()).unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "b GET /alive");
}

#[test]
fn silent_upstream_is_504_after_upstream_header_timeout() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts {
        timeouts: "upstream_header = 0.5\n".into(),
        ..Default::default()
    });
    let started = Instant::now();
    let (c, up) = get_through(&w, &raw, "/slow");
    c.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let resp = read_response(&mut reader(&c)).expect("no 504 in time");
    let took = started.elapsed();
    assert_eq!(resp.status, 504);
    assert!(
        resp.body_text().contains("did not respond within"),
        "{}",
        resp.body_text()
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "504 after {took:?}"
    );
    drop(up);
}

#[test]
fn trickled_request_head_gets_408_then_close() {
    let w = Watchtower::start(Opts {
        timeouts: "request_header = 1\n".into(),
        ..Default::default()
    });
    let c = w.connect_proxy();
    c.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let mut cw = c.try_clone().unwrap();
    let started = Instant::now();
    // One byte every 200 ms: every byte arrives well within any per-read timer, but the head
    // as a whole never finishes within request_header.
    let trickler = thread::spawn(move || {
        let head = format!(
            "GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-Pad: {}",
            "a".repeat(100)
        );
        for b in head.bytes() {
            if stop2.load(Ordering::SeqCst) || cw.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let mut r = reader(&c);
    let resp = read_response(&mut r);
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let resp = resp.expect("no 408 before the client's read timeout");
    assert_eq!(resp.status, 408);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "408 after {took:?}"
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("connection not closed after 408");
    assert_eq!(rest, b"");
    trickler.join().unwrap();
}

/// An HTTP/1.0 client cannot read chunked bodies: its request goes upstream as HTTP/1.0, so
/// the upstream frames the response by length or close, and the client gets it whole.
#[test]
fn http10_client_is_forwarded_as_http10_and_gets_an_unchunked_body() {
    let raw = RawBackend::start();
    let w = Watchtower::start(Opts::default());
    let port = raw.port();
    let mut c = w.connect_proxy();
    write!(
        c,
        "GET http://127.0.0.1:{port}/old HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut up = raw.accept();
    let head = read_raw_head(&mut up);
    assert!(head.starts_with("GET /old HTTP/1.0\r\n"), "{head}");
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nwhole body")
        .unwrap();
    drop(up);
    let raw_response = String::from_utf8(read_all(&mut c)).unwrap();
    assert!(
        raw_response.starts_with("HTTP/1.1 200 OK\r\n"),
        "{raw_response}"
    );
    assert!(
        !raw_response
            .to_ascii_lowercase()
            .contains("transfer-encoding")
    );
    assert!(
        raw_response.ends_with("\r\n\r\nwhole body"),
        "{raw_response}"
    );
}

/// An upstream that never completes the TCP handshake (its accept queue is full, so the
/// kernel drops our SYN) is answered 504 after the `connect` timeout, naming the upstream.
#[test]
fn upstream_that_never_accepts_is_504_after_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Fill the accept queue; nobody ever accepts.
    let mut fillers = Vec::new();
    for _ in 0..1024 {
        match std::net::TcpStream::connect_timeout(
            &listener.local_addr().unwrap(),
            Duration::from_millis(100),
        ) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    let w = Watchtower::start(Opts {
        timeouts: "connect = 0.5\n".into(),
        ..Default::default()
    });
    let resp = roundtrip(w.proxy, &abs_get(port, "/slow"));
    assert_eq!(resp.status, 504, "{}", resp.body_text());
    assert!(
        resp.body_text()
            .contains(&format!("127.0.0.1:{port} did not accept the connection")),
        "{}",
        resp.body_text()
    );
    drop(fillers);
}
