//! Loop protection: a request that has already passed through this Watchtower (its Via entry
//! is in the request) is answered 508 Loop Detected and never forwarded, on every listener.

mod common;

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use common::*;

/// This run's Via pseudonym, read off a response Watchtower relayed.
fn our_pseudonym(w: &Watchtower) -> String {
    let resp = roundtrip(
        w.proxy,
        "GET http://app.test/probe HTTP/1.1\r\nHost: app.test\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let via = resp.header("via").expect("a Via header").to_string();
    via.strip_prefix("1.1 ").expect("protocol 1.1").to_string()
}

#[test]
fn a_request_carrying_our_via_is_answered_508_and_not_forwarded() {
    let b = Backend::named("app");
    let w = Watchtower::with_routes(route("app", "app.test", b.port()));
    let ours = our_pseudonym(&w);
    assert_eq!(b.requests().len(), 1);
    let requests = [
        (
            w.proxy,
            format!("GET http://app.test/x HTTP/1.1\r\nHost: app.test\r\nVia: 1.1 {ours}\r\n\r\n"),
        ),
        // Ours among others, spelled differently.
        (
            w.proxy,
            format!(
                "GET http://app.test/x HTTP/1.1\r\nHost: app.test\r\nVia: 1.0 corp\r\nvia: HTTP/1.1 {}, 1.1 edge\r\n\r\n",
                ours.to_uppercase()
            ),
        ),
        (
            w.reverse.unwrap(),
            format!("GET /x HTTP/1.1\r\nHost: app.test\r\nVia: 1.1 {ours}\r\n\r\n"),
        ),
    ];
    for (addr, request) in &requests {
        let mut c = connect(*addr);
        c.write_all(request.as_bytes()).unwrap();
        let mut r = BufReader::new(c);
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 508, "{request}");
        assert!(resp.body_text().contains(&ours), "{}", resp.body_text());
        // The connection stays usable: the next request on it is served.
        r.get_mut()
            .write_all(b"GET http://app.test/next HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut r).unwrap().status, 200);
    }
    // Another proxy's Via, even another Watchtower's, is no loop.
    let resp = roundtrip(
        w.proxy,
        "GET http://app.test/y HTTP/1.1\r\nHost: app.test\r\nVia: 1.1 watchtower-00000000, 1.1 squid\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let paths: Vec<String> = b.requests().iter().map(|s| s.target.clone()).collect();
    assert_eq!(paths, ["/probe", "/next", "/next", "/next", "/y"]);
    let log = w.wait_log_lines(8);
    let looped = log
        .iter()
        .filter(|l| json_fields(l).get("status").map(String::as_str) == Some("508"))
        .count();
    assert_eq!(looped, 3, "{log:#?}");
}

#[test]
fn a_backend_that_proxies_back_through_watchtower_is_stopped_after_one_round() {
    // The backend forwards every request it gets back through Watchtower's forward port,
    // headers and all, as a misconfigured dev server proxying to "the real API" would.
    let proxy: Arc<OnceLock<SocketAddr>> = Arc::new(OnceLock::new());
    let proxy_in_backend = Arc::clone(&proxy);
    let b = Backend::start(move |seen| {
        let mut again = format!("GET http://app.test{} HTTP/1.1\r\n", seen.target);
        for (name, value) in &seen.headers {
            again += &format!("{name}: {value}\r\n");
        }
        again += "\r\n";
        let inner = roundtrip(*proxy_in_backend.get().unwrap(), &again);
        Reply::text(inner.status, &inner.body_text())
    });
    let w = Watchtower::with_routes(route("app", "app.test", b.port()));
    proxy.set(w.proxy).unwrap();
    let resp = roundtrip(
        w.proxy,
        "GET http://app.test/loop HTTP/1.1\r\nHost: app.test\r\n\r\n",
    );
    assert_eq!(resp.status, 508, "{}", resp.body_text());
    assert!(
        resp.body_text().contains("already passed through"),
        "{}",
        resp.body_text()
    );
    assert_eq!(
        b.requests().len(),
        1,
        "the request went round more than once"
    );
}
