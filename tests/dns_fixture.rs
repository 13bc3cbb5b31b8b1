//! Self-tests of the fake DNS server (tests/common/dns.rs), through a minimal hand-written
//! client on std sockets.

mod common;

use common::dns::*;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Deadline for anything that should happen.
const WAIT: Duration = Duration::from_secs(10);

const A: u16 = 1;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const AAAA: u16 = 28;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn records(ttl: u32, records: Vec<Rec>) -> Script {
    Script::Records { ttl, records }
}

// ---- a minimal DNS client ----

/// A query for (name, type) with this ID; `rd` sets Recursion Desired.
fn query(id: u16, name: &str, qtype: u16, rd: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&(if rd { 0x0100u16 } else { 0 }).to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

#[derive(Debug, Clone, PartialEq)]
enum Data {
    Addr(IpAddr),
    Name(String),
    Soa { ttl_fields: [u32; 5] },
    Raw(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Rr {
    name: String,
    rtype: u16,
    class: u16,
    ttl: u32,
    data: Data,
}

#[derive(Debug, Clone)]
struct Resp {
    id: u16,
    flags: u16,
    question: Vec<(String, u16, u16)>,
    answers: Vec<Rr>,
    authority: Vec<Rr>,
    additional: usize,
}

impl Resp {
    fn rcode(&self) -> u16 {
        self.flags & 0xf
    }
    fn qr(&self) -> bool {
        self.flags & 0x8000 != 0
    }
    fn aa(&self) -> bool {
        self.flags & 0x0400 != 0
    }
    fn tc(&self) -> bool {
        self.flags & 0x0200 != 0
    }
    fn rd(&self) -> bool {
        self.flags & 0x0100 != 0
    }
    fn ra(&self) -> bool {
        self.flags & 0x0080 != 0
    }
    /// The addresses in the answer section.
    fn addrs(&self) -> Vec<IpAddr> {
        self.answers
            .iter()
            .filter_map(|r| match r.data {
                Data::Addr(a) => Some(a),
                _ => None,
            })
            .collect()
    }
}

/// Decodes a (possibly compressed) name at `*pos`, moving `*pos` past it.
fn name_at(m: &[u8], pos: &mut usize) -> String {
    let mut labels = Vec::new();
    let mut p = *pos;
    let mut jumped = false;
    for _ in 0..128 {
        let len = m[p] as usize;
        if len == 0 {
            if !jumped {
                *pos = p + 1;
            }
            return labels.join(".");
        }
        if len & 0xc0 == 0xc0 {
            if !jumped {
                *pos = p + 2;
            }
            jumped = true;
            p = ((len & 0x3f) << 8) | m[p + 1] as usize;
            continue;
        }
        labels.push(String::from_utf8_lossy(&m[p + 1..p + 1 + len]).into_owned());
        p += 1 + len;
    }
    panic!("name loop");
}

fn u16_at(m: &[u8], pos: &mut usize) -> u16 {
    let v = u16::from_be_bytes([m[*pos], m[*pos + 1]]);
    *pos += 2;
    v
}

fn u32_at(m: &[u8], pos: &mut usize) -> u32 {
    let v = u32::from_be_bytes(m[*pos..*pos + 4].try_into().unwrap());
    *pos += 4;
    v
}

fn rr_at(m: &[u8], pos: &mut usize) -> Rr {
    let name = name_at(m, pos);
    let rtype = u16_at(m, pos);
    let class = u16_at(m, pos);
    let ttl = u32_at(m, pos);
    let len = u16_at(m, pos) as usize;
    let end = *pos + len;
    let rdata = &m[*pos..end];
    let data = match rtype {
        A => Data::Addr(IpAddr::from(<[u8; 4]>::try_from(rdata).unwrap())),
        AAAA => Data::Addr(IpAddr::from(<[u8; 16]>::try_from(rdata).unwrap())),
        CNAME => {
            let mut p = *pos;
            Data::Name(name_at(m, &mut p))
        }
        SOA => {
            let mut p = *pos;
            name_at(m, &mut p);
            name_at(m, &mut p);
            let mut f = [0u32; 5];
            for v in &mut f {
                *v = u32_at(m, &mut p);
            }
            assert_eq!(p, end, "SOA rdata length");
            Data::Soa { ttl_fields: f }
        }
        _ => Data::Raw(rdata.to_vec()),
    };
    *pos = end;
    Rr {
        name,
        rtype,
        class,
        ttl,
        data,
    }
}

fn parse(m: &[u8]) -> Resp {
    let mut pos = 0;
    let id = u16_at(m, &mut pos);
    let flags = u16_at(m, &mut pos);
    let counts: Vec<u16> = (0..4).map(|_| u16_at(m, &mut pos)).collect();
    let question = (0..counts[0])
        .map(|_| {
            let n = name_at(m, &mut pos);
            (n, u16_at(m, &mut pos), u16_at(m, &mut pos))
        })
        .collect();
    let answers = (0..counts[1]).map(|_| rr_at(m, &mut pos)).collect();
    let authority = (0..counts[2]).map(|_| rr_at(m, &mut pos)).collect();
    assert_eq!(pos, m.len(), "trailing bytes after the counted records");
    Resp {
        id,
        flags,
        question,
        answers,
        authority,
        additional: counts[3] as usize,
    }
}

/// A client UDP socket on 127.0.0.1.
fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// The next datagram within `within`, with its source; `None` if none came (or an ICMP error).
fn recv_within(s: &UdpSocket, within: Duration) -> Option<(Resp, SocketAddr)> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    Some((parse(&buf[..n]), from))
}

/// The next datagram, which must come from the server within [`WAIT`].
fn recv(s: &UdpSocket, dns: &FakeDns) -> Resp {
    let (r, from) = recv_within(s, WAIT).expect("no UDP answer in time");
    assert_eq!(from, dns.addr, "answer from the wrong address");
    r
}

/// Sends one UDP query and returns the first answer.
fn ask_udp(dns: &FakeDns, id: u16, name: &str, qtype: u16) -> Resp {
    let s = udp();
    s.send_to(&query(id, name, qtype, true), dns.addr).unwrap();
    recv(&s, dns)
}

fn tcp(dns: &FakeDns) -> TcpStream {
    let s = TcpStream::connect(dns.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn send_frame(s: &mut TcpStream, msg: &[u8]) {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    s.write_all(&f).unwrap();
}

fn read_frame(s: &mut TcpStream) -> Resp {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut m).unwrap();
    parse(&m)
}

/// Sends one query on a new TCP connection and returns the first answer frame.
fn ask_tcp(dns: &FakeDns, id: u16, name: &str, qtype: u16) -> Resp {
    let mut s = tcp(dns);
    send_frame(&mut s, &query(id, name, qtype, true));
    read_frame(&mut s)
}

/// Asserts a negative answer: `rcode`, no answers, one SOA in authority with TTL and MINIMUM
/// `ttl`, owned by a suffix of `name`.
fn assert_negative(r: &Resp, rcode: u16, name: &str, ttl: u32) {
    assert_eq!(r.rcode(), rcode, "{r:?}");
    assert!(r.answers.is_empty(), "{r:?}");
    assert_eq!(r.authority.len(), 1, "{r:?}");
    let soa = &r.authority[0];
    assert_eq!(soa.rtype, SOA);
    assert_eq!(soa.ttl, ttl);
    let Data::Soa { ttl_fields } = soa.data else {
        panic!("{soa:?}")
    };
    assert_eq!(ttl_fields[4], ttl, "MINIMUM");
    assert!(name.ends_with(&soa.name), "SOA owner {:?}", soa.name);
}

// ---- tests ----

#[test]
fn records_answer_by_qtype_with_flags_and_question_echo() {
    let dns = FakeDns::start();
    let recs = vec![
        Rec::Addr(v4("10.0.0.1")),
        Rec::Addr(v6("fd00::1")),
        Rec::Addr(v4("10.0.0.2")),
    ];
    dns.set("host.test", QType::A, records(42, recs.clone()));
    dns.set("host.test", QType::Aaaa, records(43, recs));

    let r = ask_udp(&dns, 0x1234, "host.test", A);
    assert_eq!(r.id, 0x1234);
    assert!(r.qr() && r.aa() && r.ra() && r.rd() && !r.tc(), "{r:?}");
    assert_eq!(r.rcode(), 0);
    assert_eq!(r.question, vec![("host.test".to_string(), A, 1)]);
    assert_eq!(r.addrs(), vec![v4("10.0.0.1"), v4("10.0.0.2")]);
    for rr in &r.answers {
        assert_eq!(
            (rr.name.as_str(), rr.rtype, rr.class, rr.ttl),
            ("host.test", A, 1, 42)
        );
    }
    assert!(r.authority.is_empty() && r.additional == 0);

    let r = ask_udp(&dns, 7, "host.test", AAAA);
    assert_eq!(r.addrs(), vec![v6("fd00::1")]);
    assert_eq!((r.answers[0].rtype, r.answers[0].ttl), (AAAA, 43));

    let r = ask_tcp(&dns, 8, "host.test", A);
    assert_eq!((r.id, r.rcode()), (8, 0));
    assert_eq!(r.addrs(), vec![v4("10.0.0.1"), v4("10.0.0.2")]);
}

#[test]
fn rd_flag_is_echoed() {
    let dns = FakeDns::start();
    let s = udp();
    s.send_to(&query(1, "x.test", A, false), dns.addr).unwrap();
    let r = recv(&s, &dns);
    assert!(!r.rd() && r.qr() && r.ra() && r.aa(), "{r:?}");
    s.send_to(&query(2, "x.test", A, true), dns.addr).unwrap();
    assert!(recv(&s, &dns).rd());
}

#[test]
fn cname_chain_owners_follow_targets() {
    let dns = FakeDns::start();
    let script = records(
        30,
        vec![
            Rec::Cname("Mid.Test.".into()),
            Rec::Cname("end.test".into()),
            Rec::Addr(v4("192.0.2.7")),
            Rec::Addr(v6("2001:db8::7")),
        ],
    );
    dns.set("alias.test", QType::A, script.clone());
    dns.set("alias.test", QType::Aaaa, script);
    let r = ask_udp(&dns, 1, "alias.test", A);
    let got: Vec<(String, u16, Data)> = r
        .answers
        .iter()
        .map(|a| (a.name.clone(), a.rtype, a.data.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("alias.test".into(), CNAME, Data::Name("Mid.Test".into())),
            ("Mid.Test".into(), CNAME, Data::Name("end.test".into())),
            ("end.test".into(), A, Data::Addr(v4("192.0.2.7"))),
        ]
    );
    let r = ask_tcp(&dns, 2, "alias.test", AAAA);
    assert_eq!(r.answers.len(), 3);
    assert_eq!(r.addrs(), vec![v6("2001:db8::7")]);
    assert_eq!(r.answers[2].name, "end.test");

    // A type no address matches still gets the CNAMEs.
    dns.set(
        "alias.test",
        QType::Other(16),
        records(30, vec![Rec::Cname("t.test".into())]),
    );
    let r = ask_udp(&dns, 3, "alias.test", 16);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].data, Data::Name("t.test".into()));
}

#[test]
fn nxdomain_and_nodata_carry_soa_with_negative_ttl() {
    let dns = FakeDns::start();
    dns.set(
        "gone.example.test",
        QType::A,
        Script::NxDomain { negative_ttl: 17 },
    );
    dns.set(
        "empty.example.test",
        QType::Aaaa,
        Script::NoData { negative_ttl: 23 },
    );
    let r = ask_udp(&dns, 1, "gone.example.test", A);
    assert_negative(&r, 3, "gone.example.test", 17);
    assert!(r.aa() && r.qr());
    let r = ask_tcp(&dns, 2, "empty.example.test", AAAA);
    assert_negative(&r, 0, "empty.example.test", 23);
    assert_eq!(
        r.question,
        vec![("empty.example.test".to_string(), AAAA, 1)]
    );
}

#[test]
fn unscripted_names_are_nxdomain_and_unscripted_types_nodata() {
    let dns = FakeDns::start();
    assert_negative(&ask_udp(&dns, 1, "nobody.test", A), 3, "nobody.test", 5);
    assert_negative(&ask_tcp(&dns, 2, "nobody.test", AAAA), 3, "nobody.test", 5);
    // A single-label name: the SOA sits on the name itself.
    assert_negative(&ask_udp(&dns, 3, "localhostish", A), 3, "localhostish", 5);

    dns.set(
        "v4only.test",
        QType::A,
        records(60, vec![Rec::Addr(v4("10.1.1.1"))]),
    );
    assert_negative(&ask_udp(&dns, 4, "v4only.test", AAAA), 0, "v4only.test", 5);
    assert_negative(&ask_udp(&dns, 5, "v4only.test", 15), 0, "v4only.test", 5);
    // Even a negative script for one type makes the name exist for the others.
    dns.set("x.test", QType::Aaaa, Script::ServFail);
    assert_negative(&ask_udp(&dns, 6, "x.test", A), 0, "x.test", 5);
}

#[test]
fn servfail_and_refused() {
    let dns = FakeDns::start();
    dns.set("sf.test", QType::A, Script::ServFail);
    dns.set("no.test", QType::A, Script::Refused);
    for r in [
        ask_udp(&dns, 1, "sf.test", A),
        ask_tcp(&dns, 2, "sf.test", A),
    ] {
        assert_eq!(r.rcode(), 2, "{r:?}");
        assert!(r.answers.is_empty() && r.authority.is_empty() && r.qr());
        assert_eq!(r.question.len(), 1);
    }
    for r in [
        ask_udp(&dns, 3, "no.test", A),
        ask_tcp(&dns, 4, "no.test", A),
    ] {
        assert_eq!(r.rcode(), 5, "{r:?}");
        assert!(r.answers.is_empty() && r.authority.is_empty());
    }
}

#[test]
fn silence_ignores_the_first_n_udp_queries_only() {
    let dns = FakeDns::start();
    let answer = records(9, vec![Rec::Addr(v4("10.9.9.9"))]);
    dns.set(
        "quiet.test",
        QType::A,
        Script::Silence {
            n: 2,
            then: Box::new(answer.clone()),
        },
    );
    // The server handles datagrams one at a time, in order: if the first datagram back
    // answers the third query, the first two got nothing.
    let s = udp();
    for id in [101, 102, 103] {
        s.send_to(&query(id, "quiet.test", A, true), dns.addr)
            .unwrap();
    }
    let r = recv(&s, &dns);
    assert_eq!(r.id, 103);
    assert_eq!(r.addrs(), vec![v4("10.9.9.9")]);
    let seen = dns.wait_queries("quiet.test", QType::A, 3, WAIT);
    assert_eq!(
        seen.iter().map(|q| q.id).collect::<Vec<_>>(),
        [101, 102, 103]
    );
    assert_eq!(dns.count("quiet.test", QType::A), 3);
    // Once through, every later query is answered.
    assert_eq!(ask_udp(&dns, 104, "quiet.test", A).id, 104);

    // TCP is answered at once and does not use up the silence.
    dns.set(
        "quiet2.test",
        QType::A,
        Script::Silence {
            n: 1,
            then: Box::new(answer),
        },
    );
    assert_eq!(
        ask_tcp(&dns, 200, "quiet2.test", A).addrs(),
        vec![v4("10.9.9.9")]
    );
    for id in [201, 202] {
        s.send_to(&query(id, "quiet2.test", A, true), dns.addr)
            .unwrap();
    }
    assert_eq!(recv(&s, &dns).id, 202);
    // Nothing else is on its way for 201.
    assert!(recv_within(&s, Duration::from_millis(200)).is_none());
}

#[test]
fn set_replaces_a_script_and_restarts_its_silence() {
    let dns = FakeDns::start();
    let silent = Script::Silence {
        n: 1,
        then: Box::new(records(1, vec![Rec::Addr(v4("10.0.0.1"))])),
    };
    dns.set("r.test", QType::A, silent.clone());
    let s = udp();
    for id in [1, 2] {
        s.send_to(&query(id, "r.test", A, true), dns.addr).unwrap();
    }
    assert_eq!(recv(&s, &dns).id, 2);
    dns.set("R.test.", QType::A, silent);
    for id in [3, 4] {
        s.send_to(&query(id, "r.test", A, true), dns.addr).unwrap();
    }
    assert_eq!(recv(&s, &dns).id, 4);
    dns.set("r.test", QType::A, Script::Refused);
    assert_eq!(ask_udp(&dns, 5, "r.test", A).rcode(), 5);
}

#[test]
fn truncate_over_udp_then_tcp_answers() {
    let dns = FakeDns::start();
    dns.set(
        "big.test",
        QType::Aaaa,
        Script::Truncate {
            then: Box::new(records(77, vec![Rec::Addr(v6("fd00::77"))])),
        },
    );
    let r = ask_udp(&dns, 0xbeef, "big.test", AAAA);
    assert!(r.tc() && r.qr() && r.aa() && r.ra(), "{r:?}");
    assert_eq!(r.rcode(), 0);
    assert_eq!(r.question, vec![("big.test".to_string(), AAAA, 1)]);
    assert!(r.answers.is_empty() && r.authority.is_empty());
    let r = ask_tcp(&dns, 0xbeef, "big.test", AAAA);
    assert!(!r.tc());
    assert_eq!(r.addrs(), vec![v6("fd00::77")]);
    assert_eq!(r.answers[0].ttl, 77);
}

#[test]
fn wrong_id_first_sends_a_decoy_then_the_answer() {
    let dns = FakeDns::start();
    dns.set(
        "spoof.test",
        QType::A,
        Script::WrongIdFirst {
            decoy: v4("6.6.6.6"),
            then: Box::new(records(5, vec![Rec::Addr(v4("10.5.5.5"))])),
        },
    );
    let s = udp();
    s.send_to(&query(0x0f0f, "spoof.test", A, true), dns.addr)
        .unwrap();
    let decoy = recv(&s, &dns);
    assert_eq!(decoy.id, 0x0f0f ^ 0xffff);
    assert_eq!(decoy.addrs(), vec![v4("6.6.6.6")]);
    assert_eq!(decoy.question, vec![("spoof.test".to_string(), A, 1)]);
    let real = recv(&s, &dns);
    assert_eq!(real.id, 0x0f0f);
    assert_eq!(real.addrs(), vec![v4("10.5.5.5")]);

    // Over TCP: two frames on the connection.
    let mut c = tcp(&dns);
    send_frame(&mut c, &query(0x0101, "spoof.test", A, true));
    let decoy = read_frame(&mut c);
    assert_eq!((decoy.id, decoy.addrs()), (0xfefe, vec![v4("6.6.6.6")]));
    let real = read_frame(&mut c);
    assert_eq!((real.id, real.addrs()), (0x0101, vec![v4("10.5.5.5")]));
}

#[test]
fn wrong_source_first_sends_a_decoy_from_another_port() {
    let dns = FakeDns::start();
    dns.set(
        "spoof.test",
        QType::Aaaa,
        Script::WrongSourceFirst {
            decoy: v6("fd66::6"),
            then: Box::new(records(5, vec![Rec::Addr(v6("fd55::5"))])),
        },
    );
    let s = udp();
    s.send_to(&query(77, "spoof.test", AAAA, true), dns.addr)
        .unwrap();
    let (decoy, from) = recv_within(&s, WAIT).expect("the decoy");
    assert_eq!(from.ip(), dns.addr.ip());
    assert_ne!(from.port(), dns.addr.port());
    assert_eq!(decoy.id, 77);
    assert_eq!(decoy.addrs(), vec![v6("fd66::6")]);
    let real = recv(&s, &dns);
    assert_eq!((real.id, real.addrs()), (77, vec![v6("fd55::5")]));

    // Over TCP only the real answer.
    let mut c = tcp(&dns);
    send_frame(&mut c, &query(78, "spoof.test", AAAA, true));
    send_frame(&mut c, &query(79, "other.test", A, true));
    assert_eq!(read_frame(&mut c).addrs(), vec![v6("fd55::5")]);
    assert_eq!(read_frame(&mut c).id, 79);
}

#[test]
fn scripts_compose() {
    let dns = FakeDns::start();
    // Silence, then truncation over UDP, then over TCP a wrong ID before the answer.
    dns.set(
        "deep.test",
        QType::A,
        Script::Silence {
            n: 1,
            then: Box::new(Script::Truncate {
                then: Box::new(Script::WrongIdFirst {
                    decoy: v4("6.6.6.6"),
                    then: Box::new(records(3, vec![Rec::Addr(v4("10.3.3.3"))])),
                }),
            }),
        },
    );
    let s = udp();
    for id in [1, 2] {
        s.send_to(&query(id, "deep.test", A, true), dns.addr)
            .unwrap();
    }
    let r = recv(&s, &dns);
    assert!(r.id == 2 && r.tc(), "{r:?}");
    let mut c = tcp(&dns);
    send_frame(&mut c, &query(3, "deep.test", A, true));
    assert_eq!(read_frame(&mut c).id, 3 ^ 0xffff);
    assert_eq!(read_frame(&mut c).addrs(), vec![v4("10.3.3.3")]);
}

#[test]
fn names_match_case_insensitively_without_trailing_dot() {
    let dns = FakeDns::start();
    dns.set(
        "MiXeD.Example.TEST.",
        QType::A,
        records(1, vec![Rec::Addr(v4("10.0.0.8"))]),
    );
    let r = ask_udp(&dns, 1, "mixed.EXAMPLE.test", A);
    assert_eq!(r.addrs(), vec![v4("10.0.0.8")]);
    // The question comes back as asked; the first record's owner is the name as asked.
    assert_eq!(r.question[0].0, "mixed.EXAMPLE.test");
    assert_eq!(r.answers[0].name, "mixed.EXAMPLE.test");
    let r = ask_tcp(&dns, 2, "MIXED.EXAMPLE.TEST.", A);
    assert_eq!(r.addrs(), vec![v4("10.0.0.8")]);
    let names: Vec<String> = dns.queries().into_iter().map(|q| q.name).collect();
    assert_eq!(names, ["mixed.example.test", "mixed.example.test"]);
    assert_eq!(dns.count("Mixed.Example.Test.", QType::A), 2);
    assert_eq!(dns.count("mixed.example.test", QType::Aaaa), 0);
}

#[test]
fn queries_counts_and_wait_queries_record_everything() {
    let dns = FakeDns::start();
    assert!(dns.queries().is_empty());
    let s = udp();
    s.send_to(&query(11, "a.test", A, true), dns.addr).unwrap();
    recv(&s, &dns);
    s.send_to(&query(12, "a.test", AAAA, true), dns.addr)
        .unwrap();
    recv(&s, &dns);
    let mut c = tcp(&dns);
    send_frame(&mut c, &query(13, "a.test", A, true));
    read_frame(&mut c);
    send_frame(&mut c, &query(14, "b.test", 33, true));
    read_frame(&mut c);

    let q = dns.queries();
    let tcp_from = c.local_addr().unwrap();
    let udp_from = s.local_addr().unwrap();
    let want = [
        ("a.test", QType::A, Transport::Udp, 11, udp_from),
        ("a.test", QType::Aaaa, Transport::Udp, 12, udp_from),
        ("a.test", QType::A, Transport::Tcp, 13, tcp_from),
        ("b.test", QType::Other(33), Transport::Tcp, 14, tcp_from),
    ];
    assert_eq!(q.len(), want.len(), "{q:?}");
    for (got, (name, qtype, transport, id, from)) in q.iter().zip(want) {
        assert_eq!(
            got,
            &Query {
                name: name.into(),
                qtype,
                transport,
                id,
                from
            }
        );
    }
    assert_eq!(dns.count("a.test", QType::A), 2);
    assert_eq!(dns.count("a.test", QType::Aaaa), 1);
    assert_eq!(dns.count("b.test", QType::Other(33)), 1);
    assert_eq!(dns.count("c.test", QType::A), 0);
    // Other(1) is A.
    assert_eq!(dns.count("a.test", QType::Other(1)), 2);
    assert_eq!(q[0].qtype, QType::Other(1));
    assert!(matches!(q[0].qtype, QType::A));

    let got = dns.wait_queries("a.test", QType::A, 2, WAIT);
    assert_eq!(got.iter().map(|q| q.id).collect::<Vec<_>>(), [11, 13]);

    // A waiter wakes when a query arrives, not at its deadline.
    let addr = dns.addr;
    let sender = std::thread::spawn(move || {
        let s = udp();
        s.send_to(&query(15, "late.test", A, true), addr).unwrap();
        let _ = recv_within(&s, WAIT);
    });
    let start = Instant::now();
    let got = dns.wait_queries("late.test", QType::A, 1, WAIT);
    assert_eq!(got[0].id, 15);
    assert!(start.elapsed() < WAIT);
    sender.join().unwrap();
}

#[test]
#[should_panic(expected = "wanted 2")]
fn wait_queries_panics_at_the_deadline() {
    let dns = FakeDns::start();
    ask_udp(&dns, 1, "once.test", A);
    dns.wait_queries("once.test", QType::A, 2, Duration::from_millis(100));
}

#[test]
fn tcp_serves_many_queries_per_connection_and_parallel_connections() {
    let dns = FakeDns::start();
    dns.set(
        "t.test",
        QType::A,
        records(1, vec![Rec::Addr(v4("10.7.7.7"))]),
    );
    let mut first = tcp(&dns);
    let mut second = tcp(&dns);
    // Three queries in one write, the last split across two writes.
    let mut batch = Vec::new();
    for id in [1u16, 2, 3] {
        let q = query(id, "t.test", A, true);
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    let (head, tail) = batch.split_at(batch.len() - 5);
    first.write_all(head).unwrap();
    // The second connection is served while the first waits for the rest of its frame.
    send_frame(&mut second, &query(9, "t.test", A, true));
    assert_eq!(read_frame(&mut second).id, 9);
    first.write_all(tail).unwrap();
    for id in [1, 2, 3] {
        let r = read_frame(&mut first);
        assert_eq!((r.id, r.addrs()), (id, vec![v4("10.7.7.7")]));
    }
    // Still open for more.
    send_frame(&mut first, &query(4, "t.test", A, true));
    assert_eq!(read_frame(&mut first).id, 4);
    assert_eq!(dns.count("t.test", QType::A), 5);
}

#[test]
fn the_query_parser_handles_pointers_and_edns_and_rejects_garbage() {
    let dns = FakeDns::start();
    dns.set(
        "ptr.test",
        QType::A,
        records(1, vec![Rec::Addr(v4("10.2.2.2"))]),
    );

    // The question name is a pointer to a name placed after the question.
    let mut m = vec![0, 42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[0xc0, 18, 0, 1, 0, 1]);
    m.extend_from_slice(b"\x03ptr\x04test\x00");
    let r = ask_raw_udp(&dns, &m).expect("an answer");
    assert_eq!((r.id, r.addrs()), (42, vec![v4("10.2.2.2")]));
    assert_eq!(r.question[0].0, "ptr.test");

    // A label, then a pointer to the rest.
    let mut m = vec![0, 43, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(b"\x03ptr\xc0\x16\x00\x01\x00\x01");
    m.extend_from_slice(b"\x04test\x00");
    let r = ask_raw_udp(&dns, &m).expect("an answer");
    assert_eq!((r.id, r.addrs()), (43, vec![v4("10.2.2.2")]));

    // An EDNS OPT record in the additional section.
    let mut m = query(44, "ptr.test", A, true);
    m[11] = 1;
    m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let r = ask_raw_udp(&dns, &m).expect("an answer");
    assert_eq!((r.id, r.addrs()), (44, vec![v4("10.2.2.2")]));
    assert_eq!(dns.count("ptr.test", QType::A), 3);

    // A pointer loop, and a truncated question: FORMERR, not logged.
    let mut m = vec![0, 45, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let r = ask_raw_udp(&dns, &m).expect("FORMERR");
    assert_eq!((r.id, r.rcode(), r.question.len()), (45, 1, 0));
    let mut m = query(46, "ptr.test", A, true);
    m.truncate(m.len() - 3);
    let r = ask_raw_udp(&dns, &m).expect("FORMERR");
    assert_eq!((r.id, r.rcode()), (46, 1));
    // Two questions: FORMERR.
    let mut m = query(47, "ptr.test", A, true);
    m[5] = 2;
    assert_eq!(ask_raw_udp(&dns, &m).expect("FORMERR").rcode(), 1);
    // Another opcode: NOTIMP.
    let mut m = query(48, "ptr.test", A, true);
    m[2] |= 2 << 3;
    assert_eq!(ask_raw_udp(&dns, &m).expect("NOTIMP").rcode(), 4);
    // Responses and runts are dropped without a word.
    let mut m = query(49, "ptr.test", A, true);
    m[2] |= 0x80;
    assert!(ask_raw_udp_quiet(&dns, &m));
    assert!(ask_raw_udp_quiet(&dns, &[0, 1, 2]));
    // Logged: the three good ptr.test queries and the two probes, nothing else.
    assert_eq!(dns.count("ptr.test", QType::A), 3);
    assert_eq!(dns.count("probe.invalid", QType::A), 2);
    assert_eq!(dns.queries().len(), 5);
}

/// Sends raw bytes; the answer, if one comes within a second.
fn ask_raw_udp(dns: &FakeDns, m: &[u8]) -> Option<Resp> {
    let s = udp();
    s.send_to(m, dns.addr).unwrap();
    recv_within(&s, Duration::from_secs(1)).map(|(r, _)| r)
}

/// Sends raw bytes, then a real query from the same socket: true if the first datagram back
/// answers the real query (so the raw bytes got no answer; the server works in order).
fn ask_raw_udp_quiet(dns: &FakeDns, m: &[u8]) -> bool {
    let s = udp();
    s.send_to(m, dns.addr).unwrap();
    s.send_to(&query(0x5151, "probe.invalid", A, true), dns.addr)
        .unwrap();
    recv(&s, dns).id == 0x5151
}

#[test]
fn drop_stops_the_server() {
    let dns = FakeDns::start();
    dns.set(
        "up.test",
        QType::A,
        records(1, vec![Rec::Addr(v4("10.0.0.1"))]),
    );
    let addr = dns.addr;
    assert_eq!(ask_udp(&dns, 1, "up.test", A).rcode(), 0);
    let mut open = tcp(&dns);
    send_frame(&mut open, &query(2, "up.test", A, true));
    read_frame(&mut open);
    let start = Instant::now();
    drop(dns);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        start.elapsed()
    );

    let s = udp();
    s.send_to(&query(3, "up.test", A, true), addr).unwrap();
    assert!(recv_within(&s, Duration::from_millis(300)).is_none());
    let err = TcpStream::connect(addr).expect_err("TCP still accepting");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The open connection was closed by the server.
    let mut rest = Vec::new();
    match open.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}
