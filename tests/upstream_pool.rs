//! The upstream keep-alive pool: idle upstream connections are reused by later requests from
//! any client connection, dropped when the server closes them or after `idle`, bounded per host,
//! and a reused connection that turns out dead is retried once for idempotent requests.
//! One worker, so every request meets the same pool.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn one_worker(routes: String, timeouts: &str) -> Watchtower {
    Watchtower::start(Opts {
        routes,
        timeouts: timeouts.to_string(),
        workers: Some(1),
        ..Default::default()
    })
}

/// One request on a new client connection; then the client closes and waits until Watchtower
/// has closed its side too, by which time the session has handed its upstream connection to the
/// pool.
fn once(proxy: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut c = connect(proxy);
    let framing = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    write!(
        c,
        "{method} http://app.test{path} HTTP/1.1\r\nHost: app.test\r\n{framing}\r\n{body}"
    )
    .unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let resp = read_response(&mut r).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed(&mut r, "client connection after its last response");
    (resp.status, resp.body_text())
}

fn get(w: &Watchtower, path: &str) -> (u16, String) {
    once(w.proxy, "GET", path, "")
}

#[test]
fn requests_from_different_clients_reuse_one_upstream_connection() {
    let b = Backend::named("app");
    let w = one_worker(route("app", "app.test", b.port()), "");
    for i in 0..5 {
        assert_eq!(get(&w, &format!("/{i}")), (200, format!("app GET /{i}")));
    }
    assert_eq!(b.requests().len(), 5);
    assert_eq!(
        b.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "each client connection dialled its own upstream"
    );
}

/// Answers one keep-alive request on `s`.
fn answer(s: &mut TcpStream, body: &str) {
    let head = read_raw_head(s);
    assert!(head.starts_with("GET "), "{head}");
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

use std::net::TcpStream;

#[test]
fn a_pooled_connection_the_server_closed_is_not_used() {
    let raw = RawBackend::start();
    let w = one_worker(route("app", "app.test", raw.port()), "");
    let client = thread::spawn({
        let proxy = w.proxy;
        move || {
            let first = roundtrip(
                proxy,
                "GET http://app.test/1 HTTP/1.1\r\nHost: app.test\r\n\r\n",
            );
            (first.status, first.body_text())
        }
    });
    let mut up = raw.accept();
    answer(&mut up, "one");
    assert_eq!(client.join().unwrap(), (200, "one".into()));
    // The server closes the idle connection; the next request must not be lost on it.
    drop(up);
    let client = thread::spawn({
        let proxy = w.proxy;
        move || {
            let second = roundtrip(
                proxy,
                "GET http://app.test/2 HTTP/1.1\r\nHost: app.test\r\n\r\n",
            );
            (second.status, second.body_text())
        }
    });
    let mut up = raw.accept();
    answer(&mut up, "two");
    assert_eq!(client.join().unwrap(), (200, "two".into()));
}

#[test]
fn a_reused_connection_that_dies_unanswered_is_retried_once_for_idempotent_requests() {
    let raw = RawBackend::start();
    let w = one_worker(route("app", "app.test", raw.port()), "");
    let proxy = w.proxy;
    let request = |method: &'static str| {
        thread::spawn(move || {
            let body = if method == "POST" {
                "Content-Length: 1\r\n\r\nx"
            } else {
                "\r\n"
            };
            let resp = roundtrip(
                proxy,
                &format!("{method} http://app.test/r HTTP/1.1\r\nHost: app.test\r\n{body}"),
            );
            (resp.status, resp.body_text())
        })
    };
    let first = request("GET");
    let mut up = raw.accept();
    answer(&mut up, "one");
    assert_eq!(first.join().unwrap(), (200, "one".into()));

    // The server takes the next request on the kept connection and closes without a word
    // (its keep-alive timer fired as the request arrived): the GET goes again on a new one.
    let second = request("GET");
    let head = read_raw_head(&mut up);
    assert!(head.starts_with("GET /r "), "{head}");
    drop(up);
    let mut up = raw.accept();
    answer(&mut up, "again");
    assert_eq!(second.join().unwrap(), (200, "again".into()));

    // A POST is not repeated (RFC 9110 §9.2.2): the client hears about the failure instead.
    let third = request("POST");
    let head = read_raw_head(&mut up);
    assert!(head.starts_with("POST /r "), "{head}");
    drop(up);
    let (status, body) = third.join().unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        raw.no_connection_within(Duration::from_millis(300)),
        "the POST was sent again"
    );
}

#[test]
fn idle_pooled_connections_are_closed_after_the_idle_timeout() {
    let raw = RawBackend::start();
    let w = one_worker(route("app", "app.test", raw.port()), "idle = 0.5");
    let proxy = w.proxy;
    let client = thread::spawn(move || {
        roundtrip(
            proxy,
            "GET http://app.test/1 HTTP/1.1\r\nHost: app.test\r\n\r\n",
        )
        .status
    });
    let mut up = raw.accept();
    answer(&mut up, "one");
    assert_eq!(client.join().unwrap(), 200);
    // Watchtower closes its idle upstream connection: the backend reads EOF.
    up.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    up.read_to_end(&mut rest).expect("EOF from Watchtower");
    assert!(rest.is_empty());
    assert!(started.elapsed() < WAIT);
}

#[test]
fn the_pool_keeps_at_most_32_idle_connections_per_upstream() {
    const CLIENTS: usize = 40;
    // Each response waits until all 40 requests are in, so 40 upstream connections are open.
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let b = Backend::start({
        let barrier = Arc::clone(&barrier);
        move |_| {
            barrier.wait();
            Reply::text(200, "ok")
        }
    });
    let w = one_worker(route("app", "app.test", b.port()), "");
    for round in 1..=2 {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let proxy = w.proxy;
                thread::spawn(move || {
                    roundtrip(
                        proxy,
                        "GET http://app.test/p HTTP/1.1\r\nHost: app.test\r\n\r\n",
                    )
                    .status
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), 200);
        }
        let dialled = b.connections.load(std::sync::atomic::Ordering::SeqCst);
        // Round 1 opens 40; round 2 reuses the 32 kept and opens 8 more.
        let expected = if round == 1 {
            CLIENTS
        } else {
            CLIENTS + CLIENTS - 32
        };
        assert_eq!(dialled, expected, "round {round}");
    }
}
