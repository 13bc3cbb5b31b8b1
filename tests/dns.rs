//! `[proxy] dns_server`: real servers are resolved by asking that server (a fake one here, on
//! loopback), never the system resolver or /etc/hosts; answers are cached for their TTL.

mod common;

use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::dns::{FakeDns, QType, Rec, Script, Transport};
use common::*;

fn start(dns: &FakeDns, timeouts: &str) -> Watchtower {
    Watchtower::start(Opts {
        dns_server: Some(dns.addr),
        timeouts: timeouts.to_string(),
        ..Default::default()
    })
}

fn addr(ip: &str) -> Rec {
    Rec::Addr(ip.parse::<IpAddr>().unwrap())
}

fn records(ttl: u32, recs: Vec<Rec>) -> Script {
    Script::Records { ttl, records: recs }
}

/// GET http://host:port/path through the forward port.
fn get(w: &Watchtower, host: &str, port: u16, path: &str) -> Response {
    roundtrip(
        w.proxy,
        &format!("GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"),
    )
}

#[test]
fn a_and_aaaa_answers_are_dialled() {
    let v4 = Backend::named("v4");
    let v6 = Backend::named_on("[::1]:0", "v6");
    let dns = FakeDns::start();
    dns.set("four.test", QType::A, records(60, vec![addr("127.0.0.1")]));
    dns.set("six.test", QType::Aaaa, records(60, vec![addr("::1")]));
    let w = start(&dns, "");
    let resp = get(&w, "four.test", v4.port(), "/a");
    assert_eq!((resp.status, resp.body_text()), (200, "v4 GET /a".into()));
    let resp = get(&w, "six.test", v6.port(), "/b");
    assert_eq!((resp.status, resp.body_text()), (200, "v6 GET /b".into()));
    for name in ["four.test", "six.test"] {
        // Both types asked, over UDP, once each.
        assert_eq!(dns.count(name, QType::A), 1, "{name}");
        assert_eq!(dns.count(name, QType::Aaaa), 1, "{name}");
    }
    assert!(dns.queries().iter().all(|q| q.transport == Transport::Udp));
}

#[test]
fn cname_chains_are_followed_inside_an_answer_and_across_queries() {
    let b = Backend::named("origin");
    let dns = FakeDns::start();
    // The whole chain in one answer.
    dns.set(
        "www.one.test",
        QType::A,
        records(
            60,
            vec![Rec::Cname("edge.one.test".into()), addr("127.0.0.1")],
        ),
    );
    // A chain that ends at a name the answer does not resolve: asked for separately.
    dns.set(
        "www.two.test",
        QType::A,
        records(
            60,
            vec![
                Rec::Cname("edge.two.test".into()),
                Rec::Cname("origin.two.test".into()),
            ],
        ),
    );
    dns.set(
        "origin.two.test",
        QType::A,
        records(60, vec![addr("127.0.0.1")]),
    );
    let w = start(&dns, "");
    for host in ["www.one.test", "www.two.test"] {
        let resp = get(&w, host, b.port(), "/c");
        assert_eq!(
            (resp.status, resp.body_text()),
            (200, "origin GET /c".into()),
            "{host}"
        );
    }
    assert_eq!(dns.count("edge.one.test", QType::A), 0);
    assert_eq!(dns.count("origin.two.test", QType::A), 1);
}

#[test]
fn failed_lookups_are_502_naming_the_host_and_the_answer() {
    let dns = FakeDns::start();
    dns.set("gone.test", QType::A, Script::NxDomain { negative_ttl: 60 });
    dns.set(
        "gone.test",
        QType::Aaaa,
        Script::NxDomain { negative_ttl: 60 },
    );
    dns.set("broken.test", QType::A, Script::ServFail);
    dns.set("broken.test", QType::Aaaa, Script::ServFail);
    dns.set("empty.test", QType::Aaaa, records(60, vec![addr("::1")]));
    dns.set("empty.test", QType::A, Script::NoData { negative_ttl: 60 });
    dns.set("silent.test", QType::A, silence(1000));
    dns.set("silent.test", QType::Aaaa, silence(1000));
    // A short connect timeout bounds the retries of the silent name.
    let w = start(&dns, "connect = 2");
    for (host, what) in [
        ("gone.test", "NXDOMAIN"),
        ("broken.test", "SERVFAIL"),
        ("silent.test", "timeout"),
    ] {
        let resp = get(&w, host, 80, "/");
        assert_eq!(resp.status, 502, "{host}: {}", resp.body_text());
        let body = resp.body_text();
        assert!(body.contains(host) && body.contains(what), "{host}: {body}");
    }
    // NXDOMAIN is cached (negative TTL); SERVFAIL is not.
    assert_eq!(get(&w, "gone.test", 80, "/").status, 502);
    assert_eq!(get(&w, "broken.test", 80, "/").status, 502);
    assert_eq!(dns.count("gone.test", QType::A), 1);
    assert_eq!(dns.count("broken.test", QType::A), 2);
    // The silent server was asked more than once before giving up.
    assert!(dns.count("silent.test", QType::A) >= 2);
    // No A record but an AAAA one that nothing listens on: the dial fails, not the lookup.
    let resp = get(&w, "empty.test", free_port(), "/");
    assert_eq!(resp.status, 502);
    assert!(resp.body_text().contains("refused"), "{}", resp.body_text());
}

fn silence(n: usize) -> Script {
    Script::Silence {
        n,
        then: Box::new(Script::ServFail),
    }
}

#[test]
fn an_unanswered_query_is_sent_again() {
    let b = Backend::named("app");
    let dns = FakeDns::start();
    dns.set(
        "slow.test",
        QType::A,
        Script::Silence {
            n: 1,
            then: Box::new(records(60, vec![addr("127.0.0.1")])),
        },
    );
    let w = start(&dns, "");
    let resp = get(&w, "slow.test", b.port(), "/s");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let asked = dns.queries();
    let ids: Vec<u16> = asked
        .iter()
        .filter(|q| q.name == "slow.test" && q.qtype == QType::A)
        .map(|q| q.id)
        .collect();
    assert_eq!(ids.len(), 2, "{asked:?}");
    assert_ne!(ids[0], ids[1], "a retry gets a fresh ID");
}

#[test]
fn a_truncated_answer_is_asked_again_over_tcp() {
    let b = Backend::named("app");
    let dns = FakeDns::start();
    dns.set(
        "big.test",
        QType::A,
        Script::Truncate {
            then: Box::new(records(60, vec![addr("127.0.0.1")])),
        },
    );
    let w = start(&dns, "");
    let resp = get(&w, "big.test", b.port(), "/t");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let transports: Vec<Transport> = dns
        .queries()
        .iter()
        .filter(|q| q.name == "big.test" && q.qtype == QType::A)
        .map(|q| q.transport)
        .collect();
    assert_eq!(transports, [Transport::Udp, Transport::Tcp]);
}

#[test]
fn answers_with_a_wrong_id_or_from_a_wrong_address_are_ignored() {
    let b = Backend::named("app");
    let dns = FakeDns::start();
    // The decoys point where nothing listens: using one would fail the request.
    let decoy: IpAddr = "127.0.0.3".parse().unwrap();
    let real = records(60, vec![addr("127.0.0.1")]);
    dns.set(
        "id.test",
        QType::A,
        Script::WrongIdFirst {
            decoy,
            then: Box::new(real.clone()),
        },
    );
    dns.set(
        "source.test",
        QType::A,
        Script::WrongSourceFirst {
            decoy,
            then: Box::new(real),
        },
    );
    let w = start(&dns, "");
    for host in ["id.test", "source.test"] {
        let resp = get(&w, host, b.port(), "/w");
        assert_eq!(
            (resp.status, resp.body_text()),
            (200, "app GET /w".into()),
            "{host}"
        );
    }
}

#[test]
fn cached_answers_make_no_query_until_their_ttl_runs_out() {
    // The backend closes every connection, so each request dials (and resolves) afresh
    // instead of reusing a pooled connection.
    let b = Backend::start(|_| Reply {
        status: 200,
        headers: vec![("Connection".into(), "close".into())],
        body: b"app".to_vec(),
    });
    let dns = FakeDns::start();
    dns.set("short.test", QType::A, records(1, vec![addr("127.0.0.1")]));
    dns.set(
        "long.test",
        QType::A,
        records(3600, vec![addr("127.0.0.1")]),
    );
    let w = start(&dns, "");
    for _ in 0..5 {
        for host in ["short.test", "long.test"] {
            assert_eq!(get(&w, host, b.port(), "/").status, 200);
        }
    }
    assert_eq!(
        dns.count("long.test", QType::A),
        1,
        "cache hits asked again"
    );
    // Once the 1-second TTL has run out, the next request asks again.
    let deadline = Instant::now() + WAIT;
    while dns.count("short.test", QType::A) < 2 {
        assert!(Instant::now() < deadline, "short.test never asked again");
        thread::sleep(Duration::from_millis(100));
        assert_eq!(get(&w, "short.test", b.port(), "/").status, 200);
    }
    assert_eq!(dns.count("long.test", QType::A), 1);
}

/// A name /etc/hosts maps to an address (the machine's own name, as container and VM images
/// write it), else the host name itself.
fn a_hosts_file_name() -> String {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split_whitespace().skip(1))
        .find(|name| !name.contains("localhost") && !name.contains(':') && name.len() > 1)
        .map(str::to_string)
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
                .to_string()
        })
}

#[test]
fn a_name_in_the_hosts_file_is_still_asked_of_the_dns_server() {
    let name = a_hosts_file_name();
    // The DNS server's answer is 127.0.0.2, where the only backend listens.
    let b = Backend::named_on("127.0.0.2:0", "dns-answer");
    let dns = FakeDns::start();
    dns.set(&name, QType::A, records(60, vec![addr("127.0.0.2")]));
    let w = start(&dns, "");
    let resp = get(&w, &name, b.port(), "/h");
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, "dns-answer GET /h".into()),
        "{name}"
    );
    assert_eq!(dns.count(&name, QType::A), 1);
}

#[test]
fn addresses_are_tried_ipv6_first_and_the_next_after_a_refusal() {
    // Only the IPv4 address has a listener: [::1] on the same port refuses.
    let b = Backend::named("v4");
    let dns = FakeDns::start();
    dns.set("both.test", QType::A, records(60, vec![addr("127.0.0.1")]));
    dns.set("both.test", QType::Aaaa, records(60, vec![addr("::1")]));
    let w = start(&dns, "");
    let resp = get(&w, "both.test", b.port(), "/both");
    assert_eq!(
        (resp.status, resp.body_text()),
        (200, "v4 GET /both".into())
    );
}
