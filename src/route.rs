//! Routing decisions (SPEC §3, §10 "Wildcards"): owns [`RouteTable`], built once from the
//! configured routes, and [`RouteTable::decide`], which turns a requested host, the local-routing
//! switch and the listener it arrived on into a [`Decision`].
//!
//! Only enabled routes enter the table. Exact domains and wildcard suffixes sit in two hash maps,
//! so a lookup costs one probe per label of the host, whatever the number of routes, and it does
//! not allocate: the host is lowercased into a stack buffer and the maps are probed with `&str`.
//! Validating routes belongs to `crate::config`; connecting to the chosen target belongs to the
//! session code.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{MAX_DOMAIN_BYTES, Route};

/// Stack buffer for a lowercased host; longer hosts cannot be valid names and never match.
const HOST_BUFFER_BYTES: usize = 256;

/// What the proxy should do with a request for some host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Send to the route's `target_host:target_port`.
    Local(&'a Route),
    /// Pass through to the real server.
    Pass,
}

/// The listener a request arrived on; only the reverse listeners apply the loopback rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Forward,
    ReverseHttp,
    ReverseHttps,
}

/// Enabled routes indexed for lookup by host.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Enabled routes in config order, so `routes[0]` is the first enabled route.
    routes: Vec<Route>,
    /// Exact domain (lowercase, no trailing dot) -> index into `routes`.
    exact: HashMap<Box<str>, usize>,
    /// Wildcard suffix ("example.test" for "*.example.test") -> index into `routes`.
    wildcard: HashMap<Box<str>, usize>,
}

impl RouteTable {
    /// Builds the table from routes in config order, leaving out disabled ones. Domains are
    /// normalised the same way hosts are (lowercase, no trailing dot, IPv6 without brackets).
    /// Config validation rejects duplicate domains; should two still arrive, the first wins.
    pub fn new(routes: &[Route]) -> RouteTable {
        let mut table = RouteTable::default();
        for route in routes.iter().filter(|route| route.enabled) {
            let index = table.routes.len();
            let domain = route.domain.to_ascii_lowercase();
            let domain = domain.strip_suffix('.').unwrap_or(&domain);
            let domain = domain
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .unwrap_or(domain);
            let map = match domain.strip_prefix("*.") {
                Some(_) => &mut table.wildcard,
                None => &mut table.exact,
            };
            let key = domain.strip_prefix("*.").unwrap_or(domain);
            if map.contains_key(key) {
                log::warn!(
                    "route {:?}: domain {:?} is already routed; the earlier route wins",
                    route.id,
                    route.domain
                );
            } else {
                map.insert(key.into(), index);
            }
            table.routes.push(route.clone());
        }
        table
    }

    /// The enabled route for `host`: case-insensitive, any ":port" suffix ignored (handle
    /// "[::1]:8080" and "::1" IPv6 forms), a trailing dot ignored. Exact match wins over
    /// wildcard; among wildcards the longest suffix wins; `*.example.test` matches
    /// `a.example.test` and `a.b.example.test` but not `example.test`.
    pub fn lookup(&self, host: &str) -> Option<&Route> {
        let mut buf = [0u8; HOST_BUFFER_BYTES];
        let name = normalize_host(host, &mut buf)?;
        if let Some(&index) = self.exact.get(name) {
            return self.routes.get(index);
        }
        // Walk the proper suffixes from longest to shortest, so the first hit is the longest
        // wildcard. The host itself is never probed: a wildcard does not match its apex.
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(&index) = self.wildcard.get(rest) {
                return self.routes.get(index);
            }
        }
        None
    }

    /// The first enabled route in config order (what reverse ports use for 127.0.0.1 /
    /// localhost / ::1).
    pub fn first_enabled(&self) -> Option<&Route> {
        self.routes.first()
    }

    /// Number of enabled routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when no route is enabled.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// SPEC §3: with local routing off everything passes through. With it on, a host matching a
    /// route goes to that route; on a reverse listener, 127.0.0.1 / localhost / ::1 (any port,
    /// any case) go to the first enabled route; anything else passes through.
    ///
    /// `Pass` for a loopback host on a reverse listener means "the real server" is this very
    /// machine; the caller must not connect back to its own listener.
    pub fn decide(&self, host: &str, local_routing: bool, listener: ListenerKind) -> Decision<'_> {
        if !local_routing {
            return Decision::Pass;
        }
        if let Some(route) = self.lookup(host) {
            return Decision::Local(route);
        }
        let is_reverse = matches!(
            listener,
            ListenerKind::ReverseHttp | ListenerKind::ReverseHttps
        );
        if is_reverse && is_loopback_host(host) {
            return self.first_enabled().map_or(Decision::Pass, Decision::Local);
        }
        Decision::Pass
    }
}

/// Splits "host:port", "[v6]:port", "host", "[v6]" into (host without brackets, Option<port>).
/// Returns None for a malformed authority (empty host, bad port, unbalanced brackets). A bare
/// IPv6 literal ("::1") is accepted without a port. An empty port ("host:") counts as no port,
/// as RFC 3986 §3.2.3 allows; port 0 is malformed, since nothing can be reached there.
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if host.parse::<Ipv6Addr>().is_err() {
            return None;
        }
        let port = match after {
            "" => None,
            _ => parse_port(after.strip_prefix(':')?)?,
        };
        return Some((host, port));
    }
    if authority.contains(']') {
        return None;
    }
    match authority.split_once(':') {
        None if authority.is_empty() => None,
        None => Some((authority, None)),
        // More than one colon: only a bare IPv6 literal can look like that.
        Some((_, rest)) if rest.contains(':') => authority
            .parse::<Ipv6Addr>()
            .ok()
            .map(|_| (authority, None)),
        Some(("", _)) => None,
        Some((host, port)) => Some((host, parse_port(port)?)),
    }
}

/// `Some(None)` for an empty port, `Some(Some(n))` for 1..=65535, `None` when malformed.
fn parse_port(text: &str) -> Option<Option<u16>> {
    if text.is_empty() {
        return Some(None);
    }
    // `u16::from_str` would accept a leading '+'; a port is digits only (RFC 3986 §3.2.3).
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(port) => Some(Some(port)),
    }
}

/// The host part of `host`, lowercased into `buf`, without port or trailing dot. None when the
/// authority is malformed or the name cannot be a DNS name (too long, empty label, non-ASCII).
fn normalize_host<'b>(host: &str, buf: &'b mut [u8; HOST_BUFFER_BYTES]) -> Option<&'b str> {
    let (name, _port) = split_authority(host)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty()
        || name.len() > MAX_DOMAIN_BYTES
        || !name.is_ascii()
        || name.starts_with('.')
        || name.contains("..")
    {
        return None;
    }
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// True when `host` (any port, any case, optional trailing dot) names this machine the way the
/// reverse-port rule means it: `localhost`, `127.0.0.1` or `::1`.
fn is_loopback_host(host: &str) -> bool {
    let Some((name, _port)) = split_authority(host) else {
        return false;
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip == Ipv4Addr::LOCALHOST,
        Ok(IpAddr::V6(ip)) => ip == Ipv6Addr::LOCALHOST,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, domain: &str, enabled: bool) -> Route {
        Route {
            id: id.to_owned(),
            domain: domain.to_owned(),
            target_host: "127.0.0.1".to_owned(),
            target_port: 3000,
            enabled,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("off", "disabled.test", false),
            route("web", "app.example.test", true),
            route("any", "*.example.test", true),
            route("deep", "*.api.example.test", true),
            route("exact-in-wild", "v1.api.example.test", true),
            route("upper", "Shout.Test.", true),
            route("ip", "127.0.0.2", true),
            route("v6", "::2", true),
            route("off-wild", "*.gone.test", false),
            route("loop", "localhost", true),
        ])
    }

    fn id_for(table: &RouteTable, host: &str) -> Option<String> {
        table.lookup(host).map(|route| route.id.clone())
    }

    #[test]
    fn lookup_table() {
        let table = table();
        let cases: &[(&str, Option<&str>)] = &[
            // exact
            ("app.example.test", Some("web")),
            // exact beats wildcard
            ("v1.api.example.test", Some("exact-in-wild")),
            // wildcard, one and several labels deep
            ("b.example.test", Some("any")),
            ("a.b.c.example.test", Some("any")),
            // longest wildcard wins
            ("v2.api.example.test", Some("deep")),
            ("x.y.api.example.test", Some("deep")),
            // the apex is not matched by its wildcard
            ("example.test", None),
            ("api.example.test", Some("any")),
            // case, port, trailing dot
            ("APP.Example.TEST", Some("web")),
            ("app.example.test:8443", Some("web")),
            ("app.example.test.", Some("web")),
            ("App.Example.Test.:80", Some("web")),
            ("shout.test", Some("upper")),
            ("B.EXAMPLE.TEST:1", Some("any")),
            // IP literals
            ("127.0.0.2", Some("ip")),
            ("127.0.0.2:8080", Some("ip")),
            ("[::2]:8080", Some("v6")),
            ("::2", Some("v6")),
            ("[::2]", Some("v6")),
            // disabled routes are not in the table
            ("disabled.test", None),
            ("a.gone.test", None),
            // no match, near misses and malformed hosts
            ("other.test", None),
            ("xexample.test", None),
            ("app.example.test.evil", None),
            ("", None),
            (".example.test", None),
            ("a..example.test", None),
            ("app.example.test:x", None),
            ("[app.example.test", None),
            ("bücher.example.test", None),
        ];
        for (host, expected) in cases {
            assert_eq!(id_for(&table, host).as_deref(), *expected, "host {host:?}");
        }
    }

    #[test]
    fn hosts_longer_than_a_dns_name_do_not_match() {
        let table = table();
        let long = format!("{}.example.test", "a".repeat(MAX_DOMAIN_BYTES));
        assert_eq!(table.lookup(&long), None);
        let at_limit = format!(
            "{}.example.test",
            "a".repeat(MAX_DOMAIN_BYTES - ".example.test".len())
        );
        assert_eq!(id_for(&table, &at_limit).as_deref(), Some("any"));
    }

    #[test]
    fn first_enabled_is_by_config_order_and_skips_disabled() {
        let table = table();
        assert_eq!(table.first_enabled().map(|r| r.id.as_str()), Some("web"));
        assert_eq!(table.len(), 8);
        assert!(!table.is_empty());

        // Config order, not lookup precedence: the wildcard comes first in the file.
        let table = RouteTable::new(&[route("w", "*.a.test", true), route("e", "a.test", true)]);
        assert_eq!(table.first_enabled().map(|r| r.id.as_str()), Some("w"));

        let table = RouteTable::new(&[route("off", "a.test", false)]);
        assert!(table.is_empty());
        assert_eq!(table.first_enabled(), None);
    }

    #[test]
    fn duplicate_domains_keep_the_first_route() {
        let table = RouteTable::new(&[route("a", "x.test", true), route("b", "X.test.", true)]);
        assert_eq!(id_for(&table, "x.test").as_deref(), Some("a"));
    }

    #[test]
    fn decide_follows_the_spec_routing_table() {
        use Decision::Pass;
        use ListenerKind::{Forward, ReverseHttp, ReverseHttps};

        let routes = [
            route("off", "off.test", false),
            route("web", "app.test", true),
        ];
        let table = RouteTable::new(&routes);
        let web = Decision::Local(&routes[1]);
        let cases: &[(&str, bool, ListenerKind, Decision<'_>)] = &[
            // routing on + match -> local, on every listener
            ("app.test", true, Forward, web),
            ("app.test:443", true, ReverseHttps, web),
            ("APP.TEST", true, ReverseHttp, web),
            // routing on, no match -> pass
            ("real.test", true, Forward, Pass),
            ("real.test", true, ReverseHttp, Pass),
            ("off.test", true, Forward, Pass),
            // loopback names: first enabled route on reverse listeners only
            ("127.0.0.1", true, ReverseHttp, web),
            ("127.0.0.1:8080", true, ReverseHttp, web),
            ("LocalHost:8443", true, ReverseHttps, web),
            ("localhost.", true, ReverseHttp, web),
            ("[::1]:8080", true, ReverseHttp, web),
            ("::1", true, ReverseHttps, web),
            ("127.0.0.1:8080", true, Forward, Pass),
            ("localhost", true, Forward, Pass),
            ("[::1]:8080", true, Forward, Pass),
            ("127.0.0.2", true, ReverseHttp, Pass),
            // routing off -> pass everywhere
            ("app.test", false, Forward, Pass),
            ("app.test", false, ReverseHttp, Pass),
            ("127.0.0.1:8080", false, ReverseHttp, Pass),
            ("localhost", false, ReverseHttps, Pass),
        ];
        for (host, routing, listener, expected) in cases {
            assert_eq!(
                table.decide(host, *routing, *listener),
                *expected,
                "host {host:?}, routing {routing}, listener {listener:?}"
            );
        }
    }

    #[test]
    fn loopback_on_reverse_port_without_enabled_routes_passes() {
        let table = RouteTable::new(&[route("off", "a.test", false)]);
        assert_eq!(
            table.decide("127.0.0.1:8080", true, ListenerKind::ReverseHttp),
            Decision::Pass
        );
    }

    #[test]
    fn a_route_for_localhost_beats_the_first_enabled_rule() {
        let routes = [
            route("first", "a.test", true),
            route("lh", "localhost", true),
        ];
        let table = RouteTable::new(&routes);
        assert_eq!(
            table.decide("localhost:8080", true, ListenerKind::ReverseHttp),
            Decision::Local(&routes[1])
        );
        assert_eq!(
            table.decide("localhost", true, ListenerKind::Forward),
            Decision::Local(&routes[1])
        );
    }

    #[test]
    fn split_authority_table() {
        type Split<'a> = Option<(&'a str, Option<u16>)>;
        let cases: &[(&str, Split<'_>)] = &[
            ("example.test", Some(("example.test", None))),
            ("example.test:8080", Some(("example.test", Some(8080)))),
            ("example.test:", Some(("example.test", None))),
            ("127.0.0.1:1", Some(("127.0.0.1", Some(1)))),
            ("[::1]:8080", Some(("::1", Some(8080)))),
            ("[app.test]:443", None),
            ("[1.2.3.4]", None),
            ("[::1]", Some(("::1", None))),
            ("[::1]:", Some(("::1", None))),
            ("::1", Some(("::1", None))),
            ("fe80::1:2", Some(("fe80::1:2", None))),
            ("host:65535", Some(("host", Some(65535)))),
            ("", None),
            (":80", None),
            ("[]", None),
            ("[]:80", None),
            ("[::1", None),
            ("::1]", None),
            ("[::1]x", None),
            ("[::1]:x", None),
            ("[[::1]]", None),
            ("host:0", None),
            ("host:65536", None),
            ("host:+80", None),
            ("host:8a", None),
            ("a:b:c", None),
        ];
        for (input, expected) in cases {
            assert_eq!(split_authority(input), *expected, "authority {input:?}");
        }
    }

    #[test]
    fn ten_thousand_routes_look_up_correctly() {
        let mut routes = Vec::with_capacity(10_000);
        for i in 0..5_000 {
            routes.push(route(
                &format!("e{i}"),
                &format!("host{i}.exact.test"),
                true,
            ));
            routes.push(route(
                &format!("w{i}"),
                &format!("*.zone{i}.wild.test"),
                i % 2 == 0,
            ));
        }
        let table = RouteTable::new(&routes);
        assert_eq!(table.len(), 7_500);
        for i in (0..5_000).step_by(7) {
            let exact = format!("HOST{i}.exact.test:443");
            assert_eq!(id_for(&table, &exact), Some(format!("e{i}")));
            let wild = format!("a.b.zone{i}.wild.test");
            let expected = (i % 2 == 0).then(|| format!("w{i}"));
            assert_eq!(id_for(&table, &wild), expected, "{wild}");
        }
        assert_eq!(table.lookup("zone0.wild.test"), None);
        assert_eq!(table.lookup("host5000.exact.test"), None);
        assert_eq!(table.first_enabled().map(|r| r.id.as_str()), Some("e0"));
    }
}
