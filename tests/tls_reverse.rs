//! The reverse HTTPS listener, end to end: TLS terminated with a leaf for the SNI name (or, with
//! no SNI, one valid for localhost / 127.0.0.1 / ::1), then routing by Host as SPEC §3 says,
//! including the localhost rule; an unrouted host passes through to its real server over TLS
//! verified against the Mozilla roots plus `extra_roots`; Watchtower's own listener as the
//! destination is answered 508.

mod common;

use common::tls::*;
use common::*;
use std::io::{BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown};

fn opts(routes: String) -> Opts {
    Opts {
        reverse_https: true,
        routes,
        ..Default::default()
    }
}

/// A TLS session to the reverse HTTPS port for `name` (SNI), trusting only Watchtower's CA.
fn reverse(w: &Watchtower, name: rustls::pki_types::ServerName<'static>) -> TlsReader {
    let tls = tls_to_reverse(w, client_trusting(&w.ca_pem()), name)
        .unwrap_or_else(|e| panic!("TLS to the reverse HTTPS port failed: {e}"));
    BufReader::new(tls)
}

/// Starts Watchtower with one route, `app` for app.example.test, to a backend named "app".
fn start_app() -> (Backend, Watchtower) {
    let app = Backend::named("app");
    let w = Watchtower::start(opts(route("app", "app.example.test", app.port())));
    (app, w)
}

/// A TLS origin, Watchtower with no routes (trusting the origin through `extra_roots` when
/// `trusted`), the origin's `localhost:<port>` and a session to the reverse port for
/// localhost.
fn towards_origin(trusted: bool) -> (TlsOrigin, Watchtower, String, TlsReader) {
    let origin = TlsOrigin::start();
    let tls = if trusted {
        origin.extra_roots_line()
    } else {
        String::new()
    };
    let w = Watchtower::start(Opts {
        tls,
        ..opts(String::new())
    });
    let host = format!("localhost:{}", origin.port());
    let r = reverse(&w, dns_name("localhost"));
    (origin, w, host, r)
}

#[test]
fn sni_and_host_of_a_routed_domain_reach_that_route() {
    let first = Backend::named("first");
    let app = Backend::named("app");
    let w = Watchtower::start(opts(
        route("first", "first.example.test", first.port())
            + &route("app", "app.example.test", app.port()),
    ));
    let tls = tls_to_reverse(
        &w,
        client_trusting(&w.ca_pem()),
        dns_name("app.example.test"),
    )
    .expect("a client trusting only the CA accepts the leaf");
    let chain = peer_chain(&tls);
    assert!(has_dns_san(&chain[0], "app.example.test"));
    assert_eq!(
        verify_leaf(&chain[0], &[], &dns_name("app.example.test"), &w.ca_pem()),
        Ok(())
    );
    let mut r = BufReader::new(tls);
    let resp = tls_roundtrip(&mut r, &get("app.example.test", "/page"));
    assert_eq!(
        (resp.status, resp.body_text().as_str()),
        (200, "app GET /page")
    );
    let seen = app.wait_requests(1);
    assert_eq!(seen[0].header("host"), Some("app.example.test"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert!(first.requests().is_empty(), "the first route got it");
    let lines = w.wait_log_lines(1);
    let f = json_fields(&lines[0]);
    assert_eq!(f["route"], "\"app\"", "{}", lines[0]);
    assert_eq!(f["status"], "200", "{}", lines[0]);
}

#[test]
fn localhost_goes_to_the_first_enabled_route() {
    let disabled = Backend::named("disabled");
    let first = Backend::named("first");
    let second = Backend::named("second");
    let w = Watchtower::start(opts(
        disabled_route("off", "off.example.test", disabled.port())
            + &route("first", "first.example.test", first.port())
            + &route("second", "second.example.test", second.port()),
    ));
    let port = w.reverse_tls.unwrap().port();
    let mut r = reverse(&w, dns_name("localhost"));
    assert!(has_dns_san(&peer_chain(r.get_ref())[0], "localhost"));
    let resp = tls_roundtrip(&mut r, &get(&format!("localhost:{port}"), "/"));
    assert_eq!(resp.body_text(), "first GET /");
    assert_eq!(
        first.wait_requests(1)[0].header("x-forwarded-proto"),
        Some("https")
    );
    assert!(disabled.requests().is_empty() && second.requests().is_empty());
}

#[test]
fn a_client_without_sni_gets_a_certificate_for_localhost_and_its_addresses() {
    let first = Backend::named("first");
    let w = Watchtower::start(opts(route("first", "first.example.test", first.port())));
    // An IP server name: rustls sends no SNI, and verifies an iPAddress SAN for 127.0.0.1.
    let mut r = reverse(&w, ip_name([127, 0, 0, 1]));
    let leaf = peer_chain(r.get_ref()).remove(0);
    assert!(has_ip_san(&leaf, IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert!(has_ip_san(&leaf, IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert!(has_dns_san(&leaf, "localhost"));
    let host = w.reverse_tls.unwrap().to_string();
    let resp = tls_roundtrip(&mut r, &get(&host, "/no-sni"));
    assert_eq!(resp.body_text(), "first GET /no-sni");
}

#[test]
fn an_unrouted_host_passes_through_to_the_real_server_over_verified_tls() {
    let (origin, w, host, mut r) = towards_origin(true);
    let resp = tls_roundtrip(&mut r, &get(&host, "/real"));
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.header("x-origin"), Some("tls-origin"));
    assert_eq!(resp.body_text(), "origin GET /real");
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("host"), Some(host.as_str()));
    assert!(seen[0].header("via").is_some(), "{}", seen[0].raw_head);
    // Keep-alive towards the client: a second request on the same session.
    let again = tls_roundtrip(&mut r, &get(&host, "/again"));
    assert_eq!(again.body_text(), "origin GET /again");
    let f = json_fields(&w.wait_log_lines(1)[0]);
    assert_eq!(f["route"], "null");
}

#[test]
fn pass_through_to_a_server_no_trusted_root_vouches_for_answers_502() {
    // No extra_roots: only the Mozilla roots, which do not know the origin's CA.
    let (origin, _w, host, mut r) = towards_origin(false);
    let resp = tls_roundtrip(&mut r, &get(&host, "/real"));
    assert_eq!(resp.status, 502, "{}", resp.body_text());
    assert!(!resp.body.is_empty(), "a readable reason");
    assert!(
        origin.requests().is_empty(),
        "the request reached the origin"
    );
    assert_eq!(
        origin.handshakes.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "Watchtower completed a handshake with an unverified origin"
    );
}

#[test]
fn a_request_for_watchtowers_own_listeners_is_answered_508() {
    let w = Watchtower::start(opts(String::new()));
    for own in [w.reverse_tls.unwrap(), w.proxy] {
        let mut r = reverse(&w, dns_name("localhost"));
        let resp = tls_roundtrip(&mut r, &get(&own.to_string(), "/loop"));
        assert_eq!(resp.status, 508, "Host {own}: {}", resp.body_text());
        assert!(!resp.body.is_empty(), "a readable reason");
    }
}

#[test]
fn a_request_that_already_passed_through_watchtower_is_answered_508() {
    let b = Backend::named("app");
    let w = Watchtower::start(opts(route("app", "app.example.test", b.port())));
    let mut r = reverse(&w, dns_name("app.example.test"));
    let first = tls_roundtrip(&mut r, &get("app.example.test", "/first"));
    assert_eq!(first.status, 200);
    let ours = first.header("via").expect("Via").to_string();
    let again = format!("GET /again HTTP/1.1\r\nHost: app.example.test\r\nVia: {ours}\r\n\r\n");
    let resp = tls_roundtrip(&mut r, &again);
    assert_eq!(resp.status, 508, "{}", resp.body_text());
    assert_eq!(b.requests().len(), 1, "the looping request was forwarded");
}

#[test]
fn wss_through_the_reverse_https_port_reaches_the_route() {
    let ws = ws_echo();
    let w = Watchtower::start(opts(route("ws", "ws.example.test", ws.port())));
    let mut r = reverse(&w, dns_name("ws.example.test"));
    let heads = ws_exercise_once(&mut r, "ws.example.test", &ws);
    assert_eq!(head_header(&heads[0], "host"), Some("ws.example.test"));
    assert_eq!(head_header(&heads[0], "x-forwarded-proto"), Some("https"));
}

#[test]
fn a_client_that_does_not_trust_the_ca_fails_and_the_next_is_served() {
    let (_app, w) = start_app();
    let err = tls_to_reverse(
        &w,
        client_trusting_public_roots(),
        dns_name("app.example.test"),
    )
    .expect_err("the public roots must not accept Watchtower's leaf");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let lines = w.wait_log_lines(1);
    let f = json_fields(&lines[0]);
    assert!(
        f["error"].contains("TLS handshake failed") && f["error"].contains("UnknownCA"),
        "{}",
        lines[0]
    );
    let mut r = reverse(&w, dns_name("app.example.test"));
    assert_get_body(&mut r, "app.example.test", "/next", "app GET /next");
}

/// A fresh TLS exchange on the reverse HTTPS port still works.
fn assert_still_serving(w: &Watchtower) {
    let mut r = reverse(w, dns_name("app.example.test"));
    assert_get_body(&mut r, "app.example.test", "/alive", "app GET /alive");
}

#[test]
fn garbage_on_the_reverse_https_port_is_closed_and_the_listener_lives_on() {
    let (app, w) = start_app();
    let addr = w.reverse_tls.unwrap();
    let plain_http = get("app.example.test", "/plain");
    for bytes in [
        TLS_GARBAGE,
        plain_http.as_bytes(),
        b"\x00\x01\x02\x03\xff\r\n\r\n",
    ] {
        let mut s = connect(addr);
        s.write_all(bytes).unwrap();
        assert_closed_after_optional_alert(
            &mut s,
            &format!("{:?}", String::from_utf8_lossy(bytes)),
        );
    }
    assert_still_serving(&w);
    let targets: Vec<String> = app.requests().iter().map(|s| s.target.clone()).collect();
    assert_eq!(
        targets,
        ["/alive"],
        "only the real request reached the route"
    );
}

#[test]
fn a_truncated_client_hello_on_the_reverse_https_port_is_closed() {
    let (_app, w) = start_app();
    let hello = client_hello_bytes("app.example.test");
    let mut s = connect(w.reverse_tls.unwrap());
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_closed_after_optional_alert(&mut s, "half a ClientHello then EOF");
    assert_still_serving(&w);
}

#[test]
fn a_megabyte_download_passes_through_from_the_real_server_intact() {
    const SIZE: usize = 3 << 20;
    let (_origin, _w, host, mut r) = towards_origin(true);
    let resp = tls_roundtrip(&mut r, &get(&host, &format!("/bytes/{SIZE}")));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), SIZE);
    assert!(resp.body == origin_bytes(SIZE), "the body differs");
    let after = tls_roundtrip(&mut r, &get(&host, "/after"));
    assert_eq!(after.body_text(), "origin GET /after");
}
