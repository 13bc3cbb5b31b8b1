//! A scriptable fake DNS server for the tests of Watchtower's own DNS client
//! (`[proxy] dns_server = "127.0.0.1:PORT"`).
//!
//! It listens on 127.0.0.1 on one ephemeral port for both UDP and TCP (TCP framed with the
//! 2-byte length prefix, many queries per connection, one thread per connection), records every
//! query it gets, and answers each (name, type) as scripted with [`FakeDns::set`]. The wire code
//! (RFC 1035) lives here and is independent of Watchtower's: incoming queries are parsed fully
//! (compression pointers included); responses are written without compression.
//!
//! Every thread polls with a short timeout and stops when the [`FakeDns`] is dropped; `Drop`
//! joins them, so once it returns the port answers nothing (UDP) and refuses connections (TCP).
#![allow(dead_code)]

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Negative TTL of the answers for names (or types) nobody scripted.
const DEFAULT_NEGATIVE_TTL: u32 = 5;
/// TTL of the decoy records of [`Script::WrongIdFirst`] and [`Script::WrongSourceFirst`].
const DECOY_TTL: u32 = 60;

const RCODE_NOERROR: u16 = 0;
const RCODE_FORMERR: u16 = 1;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;
const RCODE_REFUSED: u16 = 5;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// A query type. `Other(1)` and `Other(28)` are the same as `A` and `Aaaa` (equality and
/// hashing go by the numeric code; the server always reports them as `A` and `Aaaa`).
#[derive(Clone, Copy, Debug)]
pub enum QType {
    A,
    Aaaa,
    Other(u16),
}

impl QType {
    /// The numeric TYPE code.
    pub fn code(self) -> u16 {
        match self {
            QType::A => TYPE_A,
            QType::Aaaa => TYPE_AAAA,
            QType::Other(c) => c,
        }
    }

    /// The type for a numeric TYPE code (1 is `A`, 28 is `Aaaa`).
    pub fn from_code(code: u16) -> QType {
        match code {
            TYPE_A => QType::A,
            TYPE_AAAA => QType::Aaaa,
            c => QType::Other(c),
        }
    }
}

impl PartialEq for QType {
    fn eq(&self, other: &QType) -> bool {
        self.code() == other.code()
    }
}

impl Eq for QType {}

impl Hash for QType {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.code().hash(state);
    }
}

/// How a query reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The question name, ASCII-lowercased, labels joined with `.`, no trailing dot
    /// (the root is `""`).
    pub name: String,
    pub qtype: QType,
    pub transport: Transport,
    /// The message ID the client chose.
    pub id: u16,
    /// The client's address (its UDP socket, or its end of the TCP connection).
    pub from: SocketAddr,
}

/// One answer record of [`Script::Records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rec {
    /// An A (IPv4) or AAAA (IPv6) record; sent only to queries of that type.
    Addr(IpAddr),
    /// A CNAME record to this name. The records after it are owned by this name.
    Cname(String),
}

/// What the server answers for one (name, type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Script {
    /// NOERROR with these answer records, in order, all with TTL `ttl`. The first record is
    /// owned by the question name; each `Cname` makes its target the owner of what follows.
    /// `Addr` records whose family does not match the query type are left out.
    Records { ttl: u32, records: Vec<Rec> },
    /// NXDOMAIN with an SOA in authority whose TTL and MINIMUM are `negative_ttl`.
    NxDomain { negative_ttl: u32 },
    /// NOERROR, no answers, an SOA in authority whose TTL and MINIMUM are `negative_ttl`.
    NoData { negative_ttl: u32 },
    /// SERVFAIL, no records.
    ServFail,
    /// REFUSED, no records.
    Refused,
    /// Ignore the first `n` UDP queries for this name and type (counted from the last `set`),
    /// then answer with `then`. TCP queries are answered with `then` and not counted.
    Silence { n: usize, then: Box<Script> },
    /// Over UDP: NOERROR with TC=1, the question, and no records. Over TCP: `then`.
    Truncate { then: Box<Script> },
    /// First a NOERROR response with the wrong ID (`id ^ 0xffff`) holding one record for
    /// `decoy` (A or AAAA by its family, whatever the query type), then `then`. Over both
    /// UDP and TCP (over TCP as two frames on the connection).
    WrongIdFirst { decoy: IpAddr, then: Box<Script> },
    /// Over UDP: first a NOERROR response with the right ID but sent from a second UDP socket
    /// on 127.0.0.1 (another port), holding one record for `decoy`; then `then` from the
    /// server's own socket. Over TCP: `then`.
    WrongSourceFirst { decoy: IpAddr, then: Box<Script> },
}

struct Entry {
    script: Script,
    /// UDP queries for this name and type since the script was set.
    udp_seen: usize,
}

struct Shared {
    scripts: Mutex<HashMap<(String, QType), Entry>>,
    log: Mutex<Vec<Query>>,
    arrived: Condvar,
    stop: AtomicBool,
}

/// The fake DNS server; serves until dropped.
pub struct FakeDns {
    /// 127.0.0.1 and the port, the same for UDP and TCP.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeDns {
    /// Starts a server with no scripts: every name is NXDOMAIN (negative TTL 5).
    pub fn start() -> FakeDns {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().unwrap();
        let decoy = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(POLL)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            scripts: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let udp_thread = thread::Builder::new()
            .name("fake-dns-udp".into())
            .spawn(move || udp_loop(&udp, &decoy, &s))
            .unwrap();
        let s = Arc::clone(&shared);
        let tcp_thread = thread::Builder::new()
            .name("fake-dns-tcp".into())
            .spawn(move || tcp_loop(tcp, &s))
            .unwrap();
        FakeDns {
            addr,
            shared,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// What to answer for (name, type). Names are matched case-insensitively, without a
    /// trailing dot. Replacing a script restarts its [`Script::Silence`] count.
    pub fn set(&self, name: &str, qtype: QType, script: Script) {
        check_script(&script);
        let key = (normalize(name), QType::from_code(qtype.code()));
        lock(&self.shared.scripts).insert(
            key,
            Entry {
                script,
                udp_seen: 0,
            },
        );
    }

    /// Every query received so far, in arrival order.
    pub fn queries(&self) -> Vec<Query> {
        lock(&self.shared.log).clone()
    }

    /// How many queries for (name, type) arrived so far, over either transport.
    pub fn count(&self, name: &str, qtype: QType) -> usize {
        let name = normalize(name);
        lock(&self.shared.log)
            .iter()
            .filter(|q| q.name == name && q.qtype == qtype)
            .count()
    }

    /// Waits until at least `n` queries for (name, type) arrived; returns them (all of them,
    /// in arrival order). Panics if they have not arrived within `within`.
    pub fn wait_queries(&self, name: &str, qtype: QType, n: usize, within: Duration) -> Vec<Query> {
        let name = normalize(name);
        let deadline = Instant::now() + within;
        let mut log = lock(&self.shared.log);
        loop {
            let hits: Vec<Query> = log
                .iter()
                .filter(|q| q.name == name && q.qtype == qtype)
                .cloned()
                .collect();
            if hits.len() >= n {
                return hits;
            }
            let now = Instant::now();
            if now >= deadline {
                let all = log.clone();
                drop(log);
                panic!(
                    "fake DNS: {} queries for {name:?} {qtype:?} within {within:?}, wanted {n}; \
                     all queries: {all:?}",
                    hits.len()
                );
            }
            log = self
                .shared
                .arrived
                .wait_timeout(log, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A UDP socket on an ephemeral 127.0.0.1 port and a TCP listener on the same port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("fake DNS: found no 127.0.0.1 port free for both UDP and TCP");
}

/// Lowercase, without a trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn udp_loop(sock: &UdpSocket, decoy: &UdpSocket, shared: &Shared) {
    let mut buf = vec![0u8; 65535];
    while !shared.stop.load(Ordering::SeqCst) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => {
                // Nothing expected here; do not spin on a persistent error.
                thread::sleep(POLL);
                continue;
            }
        };
        for out in shared.handle(&buf[..n], Transport::Udp, from) {
            let via = if out.other_source { decoy } else { sock };
            let _ = via.send_to(&out.bytes, from);
        }
    }
}

fn tcp_loop(listener: TcpListener, shared: &Arc<Shared>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, from)) => {
                let s = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name("fake-dns-conn".into())
                    .spawn(move || serve_tcp(stream, from, &s));
                if let Ok(t) = spawned {
                    conns.push(t);
                }
            }
            // Non-blocking accept: nothing pending (or a failed accept), look again shortly.
            Err(_) => thread::sleep(POLL),
        }
        conns.retain(|t| !t.is_finished());
    }
    drop(listener);
    for t in conns {
        let _ = t.join();
    }
}

fn serve_tcp(mut stream: TcpStream, from: SocketAddr, shared: &Shared) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while buf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if buf.len() < 2 + len {
                break;
            }
            let msg: Vec<u8> = buf.drain(..2 + len).skip(2).collect();
            for out in shared.handle(&msg, Transport::Tcp, from) {
                let Ok(len) = u16::try_from(out.bytes.len()) else {
                    continue;
                };
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&out.bytes);
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// One message to send back to the client.
struct Out {
    /// Send it from the second UDP socket instead of the server's.
    other_source: bool,
    bytes: Vec<u8>,
}

impl Out {
    fn main(bytes: Vec<u8>) -> Out {
        Out {
            other_source: false,
            bytes,
        }
    }
}

impl Shared {
    /// Logs the query in `msg` and returns what to send back (possibly nothing).
    fn handle(&self, msg: &[u8], transport: Transport, from: SocketAddr) -> Vec<Out> {
        let q = match parse_query(msg) {
            Ok(q) => q,
            Err(Bad::Ignore) => return Vec::new(),
            Err(Bad::Reply(rcode)) => return vec![Out::main(error_reply(msg, rcode))],
        };
        let qtype = QType::from_code(q.qtype);
        {
            let mut log = lock(&self.log);
            log.push(Query {
                name: q.name.clone(),
                qtype,
                transport,
                id: q.id,
                from,
            });
            self.arrived.notify_all();
        }
        let (script, seen) = {
            let mut scripts = lock(&self.scripts);
            let name_known = scripts.keys().any(|(name, _)| *name == q.name);
            match scripts.get_mut(&(q.name.clone(), qtype)) {
                Some(entry) => {
                    let seen = entry.udp_seen;
                    if transport == Transport::Udp {
                        entry.udp_seen += 1;
                    }
                    (entry.script.clone(), seen)
                }
                None if name_known => (
                    Script::NoData {
                        negative_ttl: DEFAULT_NEGATIVE_TTL,
                    },
                    0,
                ),
                None => (
                    Script::NxDomain {
                        negative_ttl: DEFAULT_NEGATIVE_TTL,
                    },
                    0,
                ),
            }
        };
        plan(&q, &script, transport, seen)
    }
}

/// What to send for `script`; `seen` is how many earlier UDP queries this script got.
fn plan(q: &Parsed, script: &Script, transport: Transport, seen: usize) -> Vec<Out> {
    let udp = transport == Transport::Udp;
    match script {
        Script::Records { ttl, records } => {
            let answers = answer_records(q, *ttl, records);
            vec![Out::main(response(
                q,
                q.id,
                RCODE_NOERROR,
                false,
                &answers,
                &[],
            ))]
        }
        Script::NxDomain { negative_ttl } => vec![Out::main(response(
            q,
            q.id,
            RCODE_NXDOMAIN,
            false,
            &[],
            &[soa_record(q, *negative_ttl)],
        ))],
        Script::NoData { negative_ttl } => vec![Out::main(response(
            q,
            q.id,
            RCODE_NOERROR,
            false,
            &[],
            &[soa_record(q, *negative_ttl)],
        ))],
        Script::ServFail => vec![Out::main(response(
            q,
            q.id,
            RCODE_SERVFAIL,
            false,
            &[],
            &[],
        ))],
        Script::Refused => vec![Out::main(response(q, q.id, RCODE_REFUSED, false, &[], &[]))],
        Script::Silence { n, then } => {
            if !udp {
                plan(q, then, transport, seen)
            } else if seen < *n {
                Vec::new()
            } else {
                plan(q, then, transport, seen - n)
            }
        }
        Script::Truncate { then } => {
            if udp {
                vec![Out::main(response(q, q.id, RCODE_NOERROR, true, &[], &[]))]
            } else {
                plan(q, then, transport, seen)
            }
        }
        Script::WrongIdFirst { decoy, then } => {
            let decoy = addr_record(&q.labels, DECOY_TTL, *decoy);
            let mut out = vec![Out::main(response(
                q,
                q.id ^ 0xffff,
                RCODE_NOERROR,
                false,
                &[decoy],
                &[],
            ))];
            out.extend(plan(q, then, transport, seen));
            out
        }
        Script::WrongSourceFirst { decoy, then } => {
            if !udp {
                return plan(q, then, transport, seen);
            }
            let decoy = addr_record(&q.labels, DECOY_TTL, *decoy);
            let mut out = vec![Out {
                other_source: true,
                bytes: response(q, q.id, RCODE_NOERROR, false, &[decoy], &[]),
            }];
            out.extend(plan(q, then, transport, seen));
            out
        }
    }
}

// ---- wire format (RFC 1035) ----

/// A parsed query: just its header and its one question.
struct Parsed {
    id: u16,
    flags: u16,
    /// The question name's labels, as received (case kept).
    labels: Vec<Vec<u8>>,
    /// The question name, lowercased, labels joined with `.`.
    name: String,
    qtype: u16,
    qclass: u16,
}

enum Bad {
    /// Not a query at all (too short for a header, or a response): drop it silently.
    Ignore,
    /// A query we cannot serve: answer with this RCODE and no question.
    Reply(u16),
}

fn be16(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

fn parse_query(msg: &[u8]) -> Result<Parsed, Bad> {
    if msg.len() < 12 {
        return Err(Bad::Ignore);
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & 0x8000 != 0 {
        return Err(Bad::Ignore);
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(Bad::Reply(RCODE_NOTIMP));
    }
    if u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return Err(Bad::Reply(RCODE_FORMERR));
    }
    let (labels, end) = read_name(msg, 12).ok_or(Bad::Reply(RCODE_FORMERR))?;
    let qtype = be16(msg, end).ok_or(Bad::Reply(RCODE_FORMERR))?;
    let qclass = be16(msg, end + 2).ok_or(Bad::Reply(RCODE_FORMERR))?;
    let name = labels
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".");
    Ok(Parsed {
        id,
        flags,
        labels,
        name,
        qtype,
        qclass,
    })
}

/// Reads the (possibly compressed) name at `start`; returns its labels and the offset just
/// past it in the message (past the first pointer, if any). `None` if it is malformed: out of
/// bounds, a reserved label type, longer than 255 bytes, or a pointer loop.
fn read_name(msg: &[u8], start: usize) -> Option<(Vec<Vec<u8>>, usize)> {
    let mut labels = Vec::new();
    let mut pos = start;
    let mut end = None;
    let mut jumps = 0;
    let mut wire_len = 1;
    loop {
        let len = usize::from(*msg.get(pos)?);
        match len & 0xc0 {
            0x00 if len == 0 => return Some((labels, end.unwrap_or(pos + 1))),
            0x00 => {
                let label = msg.get(pos + 1..pos + 1 + len)?;
                wire_len += 1 + len;
                if wire_len > 255 {
                    return None;
                }
                labels.push(label.to_vec());
                pos += 1 + len;
            }
            0xc0 => {
                let low = usize::from(*msg.get(pos + 1)?);
                end.get_or_insert(pos + 2);
                jumps += 1;
                if jumps > 64 {
                    return None;
                }
                pos = ((len & 0x3f) << 8) | low;
            }
            _ => return None,
        }
    }
}

/// The labels of a dotted name (a trailing dot is allowed; `""` and `"."` are the root).
fn labels_of(name: &str) -> Vec<Vec<u8>> {
    name.split('.')
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Panics (in the test's thread, at `set`) if a name in the script cannot be encoded.
fn check_script(script: &Script) {
    match script {
        Script::Records { records, .. } => {
            for r in records {
                if let Rec::Cname(target) = r {
                    let labels = labels_of(target);
                    assert!(
                        labels.iter().all(|l| l.len() <= 63)
                            && labels.iter().map(|l| l.len() + 1).sum::<usize>() < 255,
                        "fake DNS: CNAME target {target:?} is not an encodable name"
                    );
                }
            }
        }
        Script::Silence { then, .. }
        | Script::Truncate { then }
        | Script::WrongIdFirst { then, .. }
        | Script::WrongSourceFirst { then, .. } => check_script(then),
        Script::NxDomain { .. } | Script::NoData { .. } | Script::ServFail | Script::Refused => {}
    }
}

fn put_name(out: &mut Vec<u8>, labels: &[Vec<u8>]) {
    for l in labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// One resource record of class IN.
fn record(owner: &[Vec<u8>], rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_name(&mut out, owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

fn addr_record(owner: &[Vec<u8>], ttl: u32, addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => record(owner, TYPE_A, ttl, &a.octets()),
        IpAddr::V6(a) => record(owner, TYPE_AAAA, ttl, &a.octets()),
    }
}

fn answer_records(q: &Parsed, ttl: u32, records: &[Rec]) -> Vec<Vec<u8>> {
    let mut owner = q.labels.clone();
    let mut out = Vec::new();
    for r in records {
        match r {
            Rec::Cname(target) => {
                let target = labels_of(target);
                let mut rdata = Vec::new();
                put_name(&mut rdata, &target);
                out.push(record(&owner, TYPE_CNAME, ttl, &rdata));
                owner = target;
            }
            Rec::Addr(a @ IpAddr::V4(_)) if q.qtype == TYPE_A => {
                out.push(addr_record(&owner, ttl, *a));
            }
            Rec::Addr(a @ IpAddr::V6(_)) if q.qtype == TYPE_AAAA => {
                out.push(addr_record(&owner, ttl, *a));
            }
            Rec::Addr(_) => {}
        }
    }
    out
}

/// The SOA for a negative answer: owned by the question name's parent (the name itself if it
/// has one label), TTL and MINIMUM `negative_ttl`.
fn soa_record(q: &Parsed, negative_ttl: u32) -> Vec<u8> {
    let zone = if q.labels.len() >= 2 {
        &q.labels[1..]
    } else {
        &q.labels[..]
    };
    let mut rdata = Vec::new();
    put_name(&mut rdata, &labels_of("ns.fake-dns.invalid"));
    put_name(&mut rdata, &labels_of("hostmaster.fake-dns.invalid"));
    for v in [1, 3600, 600, 86400, negative_ttl] {
        rdata.extend_from_slice(&u32::to_be_bytes(v));
    }
    record(zone, TYPE_SOA, negative_ttl, &rdata)
}

/// A response to `q`: the question echoed, QR=1, AA=1, RA=1, RD as in the query.
fn response(
    q: &Parsed,
    id: u16,
    rcode: u16,
    truncated: bool,
    answers: &[Vec<u8>],
    authority: &[Vec<u8>],
) -> Vec<u8> {
    let mut flags = 0x8000 | 0x0400 | 0x0080 | (q.flags & 0x0100) | rcode;
    if truncated {
        flags |= 0x0200;
    }
    let mut out = Vec::with_capacity(512);
    for v in [
        id,
        flags,
        1,
        answers.len() as u16,
        authority.len() as u16,
        0,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    put_name(&mut out, &q.labels);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    for r in answers.iter().chain(authority) {
        out.extend_from_slice(r);
    }
    out
}

/// A header-only response to a message we cannot serve (ID, opcode and RD echoed).
fn error_reply(msg: &[u8], rcode: u16) -> Vec<u8> {
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let query_flags = u16::from_be_bytes([msg[2], msg[3]]);
    let flags = 0x8000 | (query_flags & 0x7900) | 0x0080 | rcode;
    let mut out = Vec::with_capacity(12);
    for v in [id, flags, 0, 0, 0, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}
