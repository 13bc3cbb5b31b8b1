//! SIGTERM: stop accepting, let in-flight exchanges finish, flush the log, exit 0.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Waits until connecting to `addr` fails; panics if it still succeeds after `within`.
fn wait_refused(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections {within:?} after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_lets_in_flight_exchange_finish_and_refuses_new_connections() {
    let raw = RawBackend::start();
    let mut w = Watchtower::start(Opts::default());
    let port = raw.port();
    let mut c = w.connect_proxy();
    c.write_all(abs_get(port, "/slow").as_bytes()).unwrap();
    let mut up = raw.accept();
    let head = read_raw_head(&mut up);
    assert!(head.starts_with("GET /slow HTTP/1.1\r\n"), "{head}");

    w.sigterm();
    wait_refused(w.proxy, Duration::from_secs(2));
    wait_refused(w.reverse.unwrap(), Duration::from_secs(2));

    // The upstream answers only now; the client still gets all of it.
    up.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let answered = Instant::now();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let resp = read_response(&mut r).expect("in-flight exchange cut off by SIGTERM");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "hello");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("client connection not closed after the drained exchange");
    assert_eq!(rest, b"");
    assert!(
        answered.elapsed() < Duration::from_secs(1),
        "response and close took {:?}",
        answered.elapsed()
    );
    // The client, having read EOF, closes as well: nothing is left to wait for.
    drop(r);
    drop(c);
    let closed = Instant::now();
    assert_eq!(w.wait_exit(Duration::from_secs(5)), Some(0), "exit code");
    assert!(
        closed.elapsed() < Duration::from_secs(1),
        "exit took {:?} after the last connection closed",
        closed.elapsed()
    );
    let log = std::fs::read_to_string(w.api_log_path()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    let f = json_fields(lines[0]);
    assert_eq!(f["path"], "\"/slow\"");
    assert_eq!(f["status"], "200");
}

#[test]
fn sigterm_with_idle_keep_alive_connection_exits_promptly() {
    let b = Backend::named("b");
    let mut w = Watchtower::start(Opts::default());
    let port = b.port();
    let mut c = w.connect_proxy();
    c.write_all(abs_get(port, "/").as_bytes()).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    // The connection is kept alive and idle, which must not hold up the shutdown.
    w.sigterm();
    let started = Instant::now();
    assert_eq!(w.wait_exit(Duration::from_secs(5)), Some(0), "exit code");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "exit took {:?} with an idle connection open",
        started.elapsed()
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("idle connection not closed at exit");
    assert_eq!(rest, b"");
    // The exchange before the signal is on disk.
    let log = std::fs::read_to_string(w.api_log_path()).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
}
