//! HTTPS through the forward port, end to end: a CONNECT to a routed domain is terminated by
//! Watchtower with a leaf it mints from its CA and the decrypted requests reach the local
//! backend; a CONNECT to anything else (or with local routing off) stays a blind tunnel in which
//! the client sees the real server's own certificate. Clients here are rustls clients trusting
//! only the CA they are given.

mod common;

use common::tls::*;
use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown};
use std::time::Duration;

/// Starts Watchtower with `routes` and a client config trusting only its CA.
fn start(routes: String) -> (Watchtower, std::sync::Arc<rustls::ClientConfig>) {
    let w = Watchtower::with_routes(routes);
    let config = client_trusting(&w.ca_pem());
    (w, config)
}

/// CONNECT `target`, TLS for `sni` trusting only Watchtower's CA; panics if it fails.
fn intercept(w: &Watchtower, target: &str, sni: &str) -> TlsReader {
    let tls = tls_through_connect(w, target, client_trusting(&w.ca_pem()), dns_name(sni))
        .unwrap_or_else(|e| panic!("TLS through CONNECT {target} failed: {e}"));
    BufReader::new(tls)
}

/// Starts Watchtower with one route, `app` for app.example.test, to a backend named "local".
fn start_app() -> (Backend, Watchtower) {
    let backend = Backend::named("local");
    let w = Watchtower::with_routes(route("app", "app.example.test", backend.port()));
    (backend, w)
}

/// CONNECT app.example.test:443, then a TLS handshake for that name with `config`.
fn tls_to_app(
    w: &Watchtower,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<TlsStream, String> {
    tls_through_connect(
        w,
        "app.example.test:443",
        config,
        dns_name("app.example.test"),
    )
}

/// Number of `minted a certificate for <name>` lines on stderr so far.
fn minted_lines(w: &Watchtower, name: &str) -> usize {
    let want = format!("minted a certificate for {name}");
    w.stderr_text()
        .lines()
        .filter(|l| l.ends_with(&want))
        .count()
}

#[test]
fn connect_to_a_routed_domain_reaches_the_local_backend_as_https() {
    let backend = Backend::named("local");
    let (w, config) = start(route("app", "app.example.test", backend.port()));
    let tls = tls_to_app(&w, config).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut r = BufReader::new(tls);
    let resp = tls_roundtrip(&mut r, &get("app.example.test", "/api/items?x=1"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_text(), "local GET /api/items?x=1");

    let seen = backend.wait_requests(1);
    assert_eq!(seen[0].target, "/api/items?x=1");
    assert_eq!(seen[0].header("host"), Some("app.example.test"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen[0].header("x-forwarded-host"), Some("app.example.test"));

    let lines = w.wait_log_lines(1);
    let f = json_fields(&lines[0]);
    assert_eq!(f["kind"], "\"intercepted\"", "{}", lines[0]);
    assert_eq!(f["route"], "\"app\"", "{}", lines[0]);
    assert_eq!(f["method"], "\"GET\"", "{}", lines[0]);
    assert_eq!(f["path"], "\"/api/items?x=1\"", "{}", lines[0]);
    assert_eq!(f["status"], "200", "{}", lines[0]);
    assert_eq!(f["error"], "null", "{}", lines[0]);
    assert!(f["host"].contains("app.example.test"), "{}", lines[0]);
}

#[test]
fn the_leaf_names_the_host_and_chains_to_the_watchtower_ca_only() {
    let backend = Backend::named("local");
    let (w, config) = start(route("app", "app.example.test", backend.port()));
    let tls =
        tls_to_app(&w, config).expect("a client trusting only the Watchtower CA accepts the leaf");
    let chain = peer_chain(&tls);
    let ca = pem_certs(&w.ca_pem()).remove(0);
    assert_eq!(chain.len(), 2, "leaf + CA");
    assert!(chain[1] == ca, "the second certificate is the CA itself");
    assert!(
        has_dns_san(&chain[0], "app.example.test"),
        "the leaf's SAN names the host"
    );
    assert_eq!(
        verify_leaf(&chain[0], &[], &dns_name("app.example.test"), &w.ca_pem()),
        Ok(())
    );
    assert!(
        verify_leaf(&chain[0], &[], &dns_name("other.example.test"), &w.ca_pem()).is_err(),
        "the leaf must not be valid for another name"
    );

    // A client that only knows the public roots rejects the same leaf.
    let err = tls_to_app(&w, client_trusting_public_roots())
        .expect_err("the public roots must not accept Watchtower's leaf");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn a_wildcard_route_serves_a_deep_subdomain_with_a_leaf_for_that_name() {
    let backend = Backend::named("wild");
    let (w, config) = start(route("wild", "*.example.test", backend.port()));
    let tls = tls_through_connect(
        &w,
        "deep.a.example.test:443",
        config,
        dns_name("deep.a.example.test"),
    )
    .unwrap();
    assert!(has_dns_san(&peer_chain(&tls)[0], "deep.a.example.test"));
    let mut r = BufReader::new(tls);
    let resp = tls_roundtrip(&mut r, &get("deep.a.example.test", "/w"));
    assert_eq!(
        (resp.status, resp.body_text().as_str()),
        (200, "wild GET /w")
    );
    let seen = backend.wait_requests(1);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    let f = json_fields(&w.wait_log_lines(1)[0]);
    assert_eq!(
        (f["kind"].as_str(), f["route"].as_str()),
        ("\"intercepted\"", "\"wild\"")
    );
}

#[test]
fn an_ip_address_host_without_sni_gets_a_leaf_for_the_ip() {
    let backend = Backend::named("ip");
    let (w, config) = start(route("ip", "127.0.0.5", backend.port()));
    // ServerName::IpAddress: rustls sends no SNI and checks an iPAddress SAN.
    let tls = tls_through_connect(&w, "127.0.0.5:443", config, ip_name([127, 0, 0, 5])).unwrap();
    assert!(has_ip_san(
        &peer_chain(&tls)[0],
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))
    ));
    let mut r = BufReader::new(tls);
    let resp = tls_roundtrip(&mut r, &get("127.0.0.5", "/by-ip"));
    assert_eq!(
        (resp.status, resp.body_text().as_str()),
        (200, "ip GET /by-ip")
    );
    assert_eq!(
        backend.wait_requests(1)[0].header("x-forwarded-proto"),
        Some("https")
    );
}

#[test]
fn the_second_handshake_for_a_host_does_not_mint_again() {
    let backend = Backend::named("local");
    let w = Watchtower::with_routes(route("app", "*.example.test", backend.port()));
    for _ in 0..2 {
        let mut r = intercept(&w, "app.example.test:443", "app.example.test");
        assert_eq!(
            tls_roundtrip(&mut r, &get("app.example.test", "/")).status,
            200
        );
    }
    // A third host is minted after the two handshakes above: once its line is there, any
    // second line for the first host would be there too.
    let mut r = intercept(&w, "other.example.test:443", "other.example.test");
    assert_eq!(
        tls_roundtrip(&mut r, &get("other.example.test", "/")).status,
        200
    );
    assert!(
        w.wait_for_stderr(
            |l| l.ends_with("minted a certificate for other.example.test"),
            WAIT
        )
        .is_some(),
        "no mint line for a new host:\n{}",
        w.stderr_text()
    );
    assert_eq!(
        minted_lines(&w, "app.example.test"),
        1,
        "stderr:\n{}",
        w.stderr_text()
    );
}

#[test]
fn keep_alive_and_pipelining_work_inside_the_tls_tunnel() {
    let (backend, w) = start_app();
    let mut r = intercept(&w, "app.example.test:443", "app.example.test");
    let first = tls_roundtrip(&mut r, &get("app.example.test", "/one"));
    assert_eq!(first.body_text(), "local GET /one");
    assert_ne!(first.header("connection"), Some("close"));

    // Three requests in one TLS write, answered in order on the same session.
    let pipelined = ["/two", "/three", "/four"]
        .iter()
        .map(|p| get("app.example.test", p))
        .collect::<String>();
    r.get_mut().write_all(pipelined.as_bytes()).unwrap();
    for p in ["/two", "/three", "/four"] {
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body_text(), format!("local GET {p}"));
    }
    let targets: Vec<String> = backend
        .wait_requests(4)
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(targets, ["/one", "/two", "/three", "/four"]);
    let lines = w.wait_log_lines(4);
    for line in &lines {
        assert_eq!(json_fields(line)["kind"], "\"intercepted\"", "{line}");
    }
}

#[test]
fn a_chunked_post_inside_the_tunnel_reaches_the_backend_whole() {
    let backend = Backend::start(|req| {
        Reply::text(
            201,
            &format!(
                "got {} bytes: {}",
                req.body.len(),
                String::from_utf8_lossy(&req.body)
            ),
        )
    });
    let w = Watchtower::with_routes(route("app", "app.example.test", backend.port()));
    let mut r = intercept(&w, "app.example.test:443", "app.example.test");
    let request = "POST /upload HTTP/1.1\r\nHost: app.example.test\r\n\
                   Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
                   5\r\nhello\r\n7\r\n, world\r\n1;ext=1\r\n!\r\n0\r\n\r\n";
    let resp = tls_roundtrip(&mut r, request);
    assert_eq!(
        (resp.status, resp.body_text().as_str()),
        (201, "got 13 bytes: hello, world!")
    );
    let seen = backend.wait_requests(1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, b"hello, world!");
    // The connection stays usable after the body.
    assert_eq!(
        tls_roundtrip(&mut r, &get("app.example.test", "/after")).status,
        201
    );
}

#[test]
fn plain_http_after_connect_to_a_routed_https_host_is_served_by_the_route() {
    let (_backend, w) = start_app();
    let mut s = open_connect(&w, "app.example.test:443");
    s.write_all(get("app.example.test", "/plain").as_bytes())
        .unwrap();
    let resp = read_response(&mut BufReader::new(s)).unwrap();
    assert_eq!(
        (resp.status, resp.body_text().as_str()),
        (200, "local GET /plain")
    );
    let f = json_fields(&w.wait_log_lines(1)[0]);
    assert_eq!(
        (f["kind"].as_str(), f["route"].as_str()),
        ("\"intercepted\"", "\"app\"")
    );
}

#[test]
fn a_client_that_does_not_trust_the_ca_fails_and_the_next_client_is_served() {
    let (backend, w) = start_app();
    let err = tls_to_app(&w, client_trusting_public_roots())
        .expect_err("an untrusting client must reject the leaf");
    assert!(err.contains("UnknownIssuer"), "{err}");

    let lines = w.wait_log_lines(1);
    let f = json_fields(&lines[0]);
    assert_eq!(f["kind"], "\"intercepted\"", "{}", lines[0]);
    assert_eq!(f["method"], "\"CONNECT\"", "{}", lines[0]);
    assert_eq!(f["route"], "\"app\"", "{}", lines[0]);
    assert!(
        f["error"].contains("TLS handshake failed") && f["error"].contains("UnknownCA"),
        "the error names the failure and the alert: {}",
        lines[0]
    );
    assert!(backend.requests().is_empty(), "nothing reached the backend");

    // The proxy goes on serving a client that trusts the CA.
    let mut r = intercept(&w, "app.example.test:443", "app.example.test");
    assert_get_body(&mut r, "app.example.test", "/next", "local GET /next");
}

#[test]
fn connect_to_an_unrouted_tls_origin_is_a_blind_tunnel_showing_its_own_certificate() {
    let origin = TlsOrigin::start();
    let (backend, w) = start_app();
    let target = format!("127.0.0.1:{}", origin.port());
    let tls = tls_through_connect(
        &w,
        &target,
        client_trusting(&origin.ca_pem),
        dns_name("localhost"),
    )
    .expect("a client trusting only the origin's CA must accept what it sees");
    assert!(
        peer_chain(&tls)[0] != pem_certs(&w.ca_pem())[0],
        "not Watchtower's CA"
    );
    let mut r = BufReader::new(tls);
    let resp = tls_roundtrip(&mut r, &get("localhost", "/real"));
    assert_eq!(resp.header("x-origin"), Some("tls-origin"));
    assert_eq!(resp.body_text(), "origin GET /real");
    assert!(origin.requests()[0].header("x-forwarded-proto").is_none());
    drop(r);
    let lines = w.wait_log_lines(1);
    let f = json_fields(&lines[0]);
    assert_eq!(f["kind"], "\"tunnel\"", "{}", lines[0]);
    assert_eq!(f["method"], "\"CONNECT\"", "{}", lines[0]);
    assert_eq!(f["route"], "null", "{}", lines[0]);
    assert!(backend.requests().is_empty());
}

#[test]
fn with_local_routing_off_a_routed_domain_is_a_blind_tunnel() {
    let origin = TlsOrigin::start();
    let backend = Backend::named("local");
    let w = Watchtower::start(Opts {
        local_routing: false,
        routes: route("ip", "127.0.0.1", backend.port()),
        ..Default::default()
    });
    let target = format!("127.0.0.1:{}", origin.port());
    let tls = tls_through_connect(
        &w,
        &target,
        client_trusting(&origin.ca_pem),
        ip_name([127, 0, 0, 1]),
    )
    .expect("the origin's own certificate, verified against its CA");
    let mut r = BufReader::new(tls);
    let resp = tls_roundtrip(&mut r, &get("127.0.0.1", "/off"));
    assert_eq!(resp.body_text(), "origin GET /off");
    assert!(backend.requests().is_empty(), "the local route was used");
    assert_eq!(minted_lines(&w, "127.0.0.1"), 0, "{}", w.stderr_text());
}

#[test]
fn a_client_offering_only_h2_is_refused_and_the_next_client_is_served() {
    let (backend, w) = start_app();
    let h2_only = client_config_with(roots_from_pem(&w.ca_pem()), &[b"h2"]);
    let err = tls_to_app(&w, h2_only).expect_err("an h2-only client must not get a session");
    assert!(
        err.contains("NoApplicationProtocol"),
        "refused with the ALPN alert: {err}"
    );
    let mut r = intercept(&w, "app.example.test:443", "app.example.test");
    assert_eq!(
        tls_roundtrip(&mut r, &get("app.example.test", "/h1")).status,
        200
    );
    assert_eq!(backend.requests().len(), 1);
}

#[test]
fn wss_through_interception_reaches_the_local_backend() {
    let ws = ws_echo();
    let w = Watchtower::with_routes(route("ws", "ws.example.test", ws.port()));
    let mut r = intercept(&w, "ws.example.test:443", "ws.example.test");
    let heads = ws_exercise_once(&mut r, "ws.example.test", &ws);
    assert_eq!(head_header(&heads[0], "x-forwarded-proto"), Some("https"));
    assert_eq!(head_header(&heads[0], "sec-websocket-key"), Some(WS_KEY));
}

/// After a broken start on one tunnel, a fresh intercepted exchange still works.
fn assert_still_serving(w: &Watchtower) {
    let mut r = intercept(w, "app.example.test:443", "app.example.test");
    assert_get_body(&mut r, "app.example.test", "/alive", "local GET /alive");
}

#[test]
fn garbage_tls_bytes_after_connect_close_the_tunnel_and_the_proxy_lives_on() {
    let (backend, w) = start_app();
    let mut s = open_connect(&w, "app.example.test:443");
    s.write_all(TLS_GARBAGE).unwrap();
    assert_closed_after_optional_alert(&mut s, "garbage TLS record");
    assert_still_serving(&w);
    assert!(
        backend.requests().iter().all(|s| s.target == "/alive"),
        "garbage reached the backend"
    );
}

#[test]
fn a_truncated_client_hello_after_connect_is_closed_and_the_proxy_lives_on() {
    let (_backend, w) = start_app();
    let hello = client_hello_bytes("app.example.test");

    // Half a ClientHello, then the client stops sending.
    let mut s = open_connect(&w, "app.example.test:443");
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_closed_after_optional_alert(&mut s, "half a ClientHello then EOF");
    assert_still_serving(&w);
}

#[test]
fn a_stalled_client_hello_is_closed_by_the_header_deadline() {
    let backend = Backend::named("local");
    let w = Watchtower::start(Opts {
        timeouts: "request_header = 1\n".into(),
        routes: route("app", "app.example.test", backend.port()),
        ..Default::default()
    });
    let hello = client_hello_bytes("app.example.test");
    let mut s = open_connect(&w, "app.example.test:443");
    s.write_all(&hello[..10]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_closed_after_optional_alert(&mut s, "ten bytes of a ClientHello, then silence");
    assert_still_serving(&w);
}

#[test]
fn leaves_are_valid_now_for_at_most_180_days_with_distinct_serials() {
    let backend = Backend::named("local");
    let w = Watchtower::with_routes(route("wild", "*.example.test", backend.port()));
    let mut leaves = Vec::new();
    for host in ["a.example.test", "b.example.test"] {
        let tls = tls_through_connect(
            &w,
            &format!("{host}:443"),
            client_trusting(&w.ca_pem()),
            dns_name(host),
        )
        .unwrap();
        leaves.push(peer_chain(&tls).remove(0));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for leaf in &leaves {
        let (not_before, not_after) = validity_of(leaf);
        assert!(not_before <= now && now < not_after, "valid now");
        assert!(
            not_after - not_before <= 180 * 86400,
            "validity {} days, back-dating included; browsers refuse more",
            (not_after - not_before) / 86400
        );
        assert!(not_after - now >= 86400, "still valid tomorrow");
    }
    assert_ne!(
        serial_of(&leaves[0]),
        serial_of(&leaves[1]),
        "serials are unique"
    );
}

#[test]
fn a_tls_1_2_client_is_intercepted_too() {
    let (_backend, w) = start_app();
    let tls = tls_to_app(&w, client_tls12_trusting(&w.ca_pem())).expect("a TLS 1.2 handshake");
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut r = BufReader::new(tls);
    assert_get_body(&mut r, "app.example.test", "/v12", "local GET /v12");
}

#[test]
fn a_client_hello_sent_one_byte_at_a_time_is_accepted() {
    let (_backend, w) = start_app();
    let mut s = open_connect(&w, "app.example.test:443");
    let mut conn =
        rustls::ClientConnection::new(client_trusting(&w.ca_pem()), dns_name("app.example.test"))
            .unwrap();
    for b in take_first_flight(&mut conn) {
        s.write_all(&[b]).unwrap();
    }
    let tls = finish_handshake(conn, s).expect("the handshake completes");
    let mut r = BufReader::new(tls);
    assert_get_body(&mut r, "app.example.test", "/slow", "local GET /slow");
}

#[test]
fn a_client_hello_sent_with_the_connect_head_is_accepted() {
    // Some clients do not wait for the 200 before starting TLS.
    let (_backend, w) = start_app();
    let mut conn =
        rustls::ClientConnection::new(client_trusting(&w.ca_pem()), dns_name("app.example.test"))
            .unwrap();
    let mut bytes = connect_request("app.example.test:443").into_bytes();
    bytes.extend(take_first_flight(&mut conn));
    let mut s = w.connect_proxy();
    s.write_all(&bytes).unwrap();
    let head = read_raw_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    let tls = finish_handshake(conn, s).expect("the handshake completes");
    let mut r = BufReader::new(tls);
    assert_get_body(&mut r, "app.example.test", "/eager", "local GET /eager");
}

#[test]
fn megabyte_bodies_cross_the_tls_tunnel_both_ways() {
    const SIZE: usize = 3 << 20;
    let body: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let download = body.clone();
    let backend = Backend::start(move |req| {
        if req.method == "POST" {
            Reply::text(
                200,
                &format!(
                    "{} {}",
                    req.body.len(),
                    req.body.iter().map(|&b| b as u64).sum::<u64>()
                ),
            )
        } else {
            Reply {
                status: 200,
                headers: vec![],
                body: download.clone(),
            }
        }
    });
    let w = Watchtower::with_routes(route("app", "app.example.test", backend.port()));
    let mut r = intercept(&w, "app.example.test:443", "app.example.test");
    let resp = tls_roundtrip(&mut r, &get("app.example.test", "/big"));
    assert_eq!(resp.body.len(), SIZE);
    assert!(resp.body == body, "the download differs");

    let head =
        format!("POST /up HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: {SIZE}\r\n\r\n");
    r.get_mut().write_all(head.as_bytes()).unwrap();
    r.get_mut().write_all(&body).unwrap();
    let resp = read_response(&mut r).unwrap();
    let sum: u64 = body.iter().map(|&b| b as u64).sum();
    assert_eq!(resp.body_text(), format!("{SIZE} {sum}"));
}

#[test]
fn an_unreachable_route_target_is_answered_502_inside_the_tls_session() {
    let closed = free_port();
    let w = Watchtower::with_routes(route("down", "down.example.test", closed));
    let mut r = intercept(&w, "down.example.test:443", "down.example.test");
    let resp = tls_roundtrip(&mut r, &get("down.example.test", "/"));
    assert_eq!(resp.status, 502);
    assert!(!resp.body.is_empty(), "a readable reason");
    let f = json_fields(&w.wait_log_lines(1)[0]);
    assert_eq!(
        (
            f["kind"].as_str(),
            f["status"].as_str(),
            f["route"].as_str()
        ),
        ("\"intercepted\"", "502", "\"down\"")
    );
}

#[test]
fn many_clients_handshaking_at_once_are_all_served() {
    let backend = Backend::named("local");
    let w = std::sync::Arc::new(Watchtower::with_routes(route(
        "wild",
        "*.example.test",
        backend.port(),
    )));
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let w = std::sync::Arc::clone(&w);
            std::thread::spawn(move || {
                let host = format!("h{}.example.test", i % 8);
                let mut r = intercept(&w, &format!("{host}:443"), &host);
                tls_roundtrip(&mut r, &get(&host, &format!("/{i}"))).body_text()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), format!("local GET /{i}"));
    }
    for i in 0..8 {
        assert_eq!(
            minted_lines(&w, &format!("h{i}.example.test")),
            1,
            "{}",
            w.stderr_text()
        );
    }
}

#[test]
fn an_idle_intercepted_session_is_closed_by_the_idle_timeout() {
    let backend = Backend::named("local");
    let w = Watchtower::start(Opts {
        timeouts: "idle = 1\n".into(),
        routes: route("app", "app.example.test", backend.port()),
        ..Default::default()
    });
    let mut r = intercept(&w, "app.example.test:443", "app.example.test");
    assert_eq!(
        tls_roundtrip(&mut r, &get("app.example.test", "/")).status,
        200
    );
    r.get_ref()
        .sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        // A close_notify, or the socket closed without one: either way, closed.
        Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
        Err(e) => assert!(
            e.kind() == std::io::ErrorKind::UnexpectedEof
                || e.kind() == std::io::ErrorKind::ConnectionReset,
            "not closed within 5 s: {e}"
        ),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}
