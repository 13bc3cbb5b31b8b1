//! Which upstream a request reaches: exact and wildcard routes, precedence, case and port,
//! disabled routes, the local-routing switch, and the reverse port's localhost rule.

mod common;

use common::*;

/// Sends an absolute-form GET for `url` (`http://authority/path`) through the forward port.
fn forward_get(w: &Watchtower, authority: &str, path: &str) -> Response {
    roundtrip(
        w.proxy,
        &format!("GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
    )
}

/// Sends an origin-form GET with `Host: host` to the reverse port.
fn reverse_get(w: &Watchtower, host: &str, path: &str) -> Response {
    roundtrip(
        w.reverse.unwrap(),
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
}

/// The Host headers of the first `n` requests `b` gets, waiting for them.
fn hosts_seen(b: &Backend, n: usize) -> Vec<String> {
    b.wait_requests(n)
        .iter()
        .map(|s| s.header("host").unwrap().to_string())
        .collect()
}

/// Asserts that `resp` is the 502 of a pass-through to `name`, which does not resolve.
fn assert_unresolved(resp: &Response, name: &str) {
    assert_eq!(resp.status, 502);
    assert!(
        resp.body_text()
            .contains(&format!("could not resolve {name}")),
        "{}",
        resp.body_text()
    );
}

/// Starts backends named "a" and "b" and a Watchtower with the routes `routes(a_port, b_port)`.
fn two_backends(routes: impl FnOnce(u16, u16) -> String) -> (Backend, Backend, Watchtower) {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let w = Watchtower::with_routes(routes(a.port(), b.port()));
    (a, b, w)
}

/// Asserts that `resp` is a 200 from the backend `Backend::named(name)`.
fn assert_from(resp: &Response, name: &str, path: &str) {
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.body_text(), format!("{name} GET {path}"));
}

#[test]
fn exact_route_sends_forward_request_to_its_target() {
    let a = Backend::named("a");
    let w = Watchtower::with_routes(route("web", "app.example.test", a.port()));
    assert_from(&forward_get(&w, "app.example.test", "/x"), "a", "/x");
    let seen = a.wait_requests(1);
    assert_eq!(seen[0].target, "/x");
    assert_eq!(seen[0].header_all("host"), vec!["app.example.test"]);
}

#[test]
fn wildcard_route_matches_subdomains_at_any_depth() {
    let a = Backend::named("a");
    let w = Watchtower::with_routes(route("wild", "*.example.test", a.port()));
    for host in ["a.example.test", "b.c.example.test", "x.y.z.example.test"] {
        assert_from(&forward_get(&w, host, "/"), "a", "/");
    }
    assert_eq!(
        hosts_seen(&a, 3),
        ["a.example.test", "b.c.example.test", "x.y.z.example.test"]
    );
}

#[test]
fn wildcard_route_does_not_match_its_apex() {
    // `.invalid` never resolves, so a pass-through of the apex shows as "could not resolve".
    let a = Backend::named("a");
    let w = Watchtower::with_routes(route("wild", "*.app.invalid", a.port()));
    assert_from(&forward_get(&w, "www.app.invalid", "/sub"), "a", "/sub");
    assert_unresolved(&forward_get(&w, "app.invalid", "/apex"), "app.invalid");
    assert_eq!(
        a.requests().len(),
        1,
        "the apex reached the wildcard's target"
    );
}

#[test]
fn exact_route_beats_wildcard() {
    // The wildcard comes first in the file: precedence must not be file order.
    let (_a, _b, w) = two_backends(|a, b| {
        route("wild", "*.example.test", a) + &route("api", "api.example.test", b)
    });
    assert_from(&forward_get(&w, "api.example.test", "/"), "b", "/");
    assert_from(&forward_get(&w, "www.example.test", "/"), "a", "/");
}

#[test]
fn longest_wildcard_wins() {
    let (_a, _b, w) = two_backends(|a, b| {
        route("wide", "*.example.test", a) + &route("narrow", "*.api.example.test", b)
    });
    assert_from(&forward_get(&w, "v1.api.example.test", "/"), "b", "/");
    assert_from(&forward_get(&w, "www.example.test", "/"), "a", "/");
    // The narrow wildcard's own apex is still under the wide one.
    assert_from(&forward_get(&w, "api.example.test", "/"), "a", "/");
}

#[test]
fn matching_ignores_case_and_port() {
    let (a, _b, w) =
        two_backends(|a, b| route("web", "App.Example.Test", a) + &route("wild", "*.Wild.Test", b));
    assert_from(&forward_get(&w, "APP.example.TEST:8080", "/1"), "a", "/1");
    assert_from(&forward_get(&w, "app.example.test:1", "/2"), "a", "/2");
    assert_from(&forward_get(&w, "X.WILD.test:9999", "/3"), "b", "/3");
    assert_from(&reverse_get(&w, "App.EXAMPLE.test:443", "/4"), "a", "/4");
    // The Host the upstream sees is the one the client sent.
    assert_eq!(
        hosts_seen(&a, 3),
        [
            "APP.example.TEST:8080",
            "app.example.test:1",
            "App.EXAMPLE.test:443"
        ]
    );
}

#[test]
fn disabled_route_is_ignored() {
    let (a, _b, w) = two_backends(|a, b| {
        disabled_route("off", "app.example.test", a) + &route("wild", "*.example.test", b)
    });
    assert_from(&forward_get(&w, "app.example.test", "/"), "b", "/");
    assert!(a.requests().is_empty());
}

#[test]
fn ip_literal_route_applies_when_local_routing_is_on() {
    let target = Backend::named("target");
    let real = Backend::named("real");
    let w = Watchtower::with_routes(route("ip", "127.0.0.1", target.port()));
    let authority = format!("127.0.0.1:{}", real.port());
    assert_from(&forward_get(&w, &authority, "/"), "target", "/");
    assert!(real.requests().is_empty());
}

#[test]
fn local_routing_off_passes_everything_through() {
    let target = Backend::named("target");
    let real = Backend::named("real");
    let w = Watchtower::start(Opts {
        local_routing: false,
        routes: route("ip", "127.0.0.1", target.port()),
        ..Default::default()
    });
    let authority = format!("127.0.0.1:{}", real.port());
    assert_from(&forward_get(&w, &authority, "/"), "real", "/");
    // The reverse port's localhost rule is local routing too: off, the Host is the destination.
    assert_from(&reverse_get(&w, &authority, "/rev"), "real", "/rev");
    // A routed name is not routed either: `.invalid` shows the attempted pass-through.
    let w2 = Watchtower::start(Opts {
        local_routing: false,
        routes: route("web", "app.invalid", target.port()),
        ..Default::default()
    });
    assert_unresolved(&forward_get(&w2, "app.invalid", "/"), "app.invalid");
    assert!(target.requests().is_empty());
}

#[test]
fn reverse_port_localhost_goes_to_first_enabled_route() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let c = Backend::named("c");
    let w = Watchtower::with_routes(
        disabled_route("first", "one.example.test", a.port())
            + &route("second", "two.example.test", b.port())
            + &route("third", "three.example.test", c.port()),
    );
    let rev = w.reverse.unwrap();
    for host in [
        rev.to_string(),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        format!("localhost:{}", rev.port()),
        "[::1]:8080".to_string(),
    ] {
        assert_from(&reverse_get(&w, &host, "/home"), "b", "/home");
    }
    assert!(a.requests().is_empty());
    assert!(c.requests().is_empty());
    // Host is kept as the browser sent it.
    assert_eq!(
        b.wait_requests(1)[0].header_all("host"),
        vec![rev.to_string()]
    );
}

#[test]
fn reverse_port_host_without_route_passes_through_to_that_host() {
    // No enabled route: the localhost rule has nothing to pick, so the Host is the destination.
    let a = Backend::named("a");
    let real = Backend::named("real");
    let w = Watchtower::with_routes(disabled_route("off", "127.0.0.1", a.port()));
    let host = format!("127.0.0.1:{}", real.port());
    assert_from(&reverse_get(&w, &host, "/p"), "real", "/p");
    assert!(a.requests().is_empty());
    assert_eq!(real.wait_requests(1)[0].header_all("host"), vec![host]);
}

#[test]
fn reverse_port_unrouted_name_passes_through_not_to_a_route() {
    let a = Backend::named("a");
    let w = Watchtower::with_routes(route("web", "app.example.test", a.port()));
    assert_unresolved(
        &reverse_get(&w, "elsewhere.invalid", "/"),
        "elsewhere.invalid",
    );
    assert!(a.requests().is_empty());
    // The route itself still works on the same listener.
    assert_from(&reverse_get(&w, "app.example.test", "/"), "a", "/");
}

#[test]
fn unrouted_host_on_forward_port_passes_through() {
    let a = Backend::named("a");
    let real = Backend::named("real");
    let w = Watchtower::with_routes(route("web", "app.example.test", a.port()));
    let authority = format!("127.0.0.1:{}", real.port());
    assert_from(&forward_get(&w, &authority, "/z"), "real", "/z");
    assert!(a.requests().is_empty());
}
