//! The `dns_server` client: A and AAAA queries sent by the event loop itself, on non-blocking
//! sockets it polls like any other.
//!
//! A lookup asks for A and AAAA at once. Each query is a transaction on its own UDP socket,
//! bound to a kernel-chosen (random) source port and *connected* to the server, so the kernel
//! drops datagrams from any other address; the 16-bit ID is random too, and a datagram whose ID
//! or question is not ours is ignored while the transaction keeps waiting (a late answer to an
//! earlier try, or a spoofing attempt). No answer within the attempt timeout: the query is sent
//! again from a fresh socket with a fresh ID, up to [`ATTEMPTS`] times. A truncated answer (TC)
//! is asked again over TCP. An answer that only names a CNAME target is followed by a query for
//! that target (at most [`MAX_CNAME_RESTARTS`] times). When both types are settled the lookup
//! is [`Resolved`]: the addresses with IPv6 and IPv4 interleaved, the smallest TTL, or the most
//! telling failure (NXDOMAIN, SERVFAIL, REFUSED, timeout, no address).
//!
//! Never blocking: sockets are non-blocking, deadlines sit in a small heap the loop reads
//! through [`DnsClient::next_wake`] and fires with [`DnsClient::tick`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::message::{self, ParseError, Rcode, RecordType};
use crate::resolve::ResolveError;

/// Tries per query over UDP before it counts as timed out.
pub const ATTEMPTS: u32 = 3;
/// CNAME targets followed with a query of their own per record type.
pub const MAX_CNAME_RESTARTS: u32 = 8;
/// Transactions open at once per loop; a lookup beyond it fails at once.
pub const MAX_TRANSACTIONS: usize = 4096;
/// Negative answers without an SOA are kept this long.
const DEFAULT_NEGATIVE_TTL: u32 = 5;
/// A response over UDP without EDNS is at most 512 bytes; some servers send more anyway.
const UDP_RECV_BYTES: usize = 4096;

/// One settled lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The name asked for (lowercase, no trailing dot).
    pub name: Box<str>,
    pub result: Result<Vec<IpAddr>, ResolveError>,
    /// How long the result may be cached.
    pub ttl: Duration,
}

/// A transaction's socket.
enum Wire {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        /// Length-prefixed query, and how much of it is written.
        out: Vec<u8>,
        written: usize,
        /// Bytes read so far (length prefix included).
        input: Vec<u8>,
    },
}

/// One query in flight: a (name, type) asked of the server.
struct Transaction {
    lookup: usize,
    /// 0 = A, 1 = AAAA.
    part: usize,
    name: Box<str>,
    qtype: RecordType,
    id: u16,
    attempt: u32,
    wire: Wire,
    deadline: Instant,
    /// Bumped per transaction so a stale heap entry is recognised.
    serial: u64,
}

/// One record type of a lookup.
#[derive(Debug, Clone)]
enum Part {
    /// A query is in flight; `restarts` counts CNAME targets asked for so far.
    Asking { restarts: u32 },
    Done {
        result: Result<Vec<IpAddr>, ResolveError>,
        ttl: u32,
    },
}

struct Lookup {
    name: Box<str>,
    parts: [Part; 2],
}

/// The client of one event loop.
pub struct DnsClient {
    server: SocketAddr,
    /// Per attempt; the last attempt's timeout ends the query.
    attempt_timeout: Duration,
    /// Tokens are `token_base + transaction slot`.
    token_base: usize,
    lookups: Slab<Lookup>,
    transactions: Slab<Transaction>,
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    serial: u64,
    rng: ring::rand::SystemRandom,
    /// Settled lookups for the loop to hand out.
    done: Vec<Resolved>,
    scratch: Vec<u8>,
}

impl DnsClient {
    /// A client asking `server`, whose whole lookup (every attempt) fits in `budget` (the
    /// `connect` timeout, so the dial can still report the DNS failure itself).
    pub fn new(server: SocketAddr, budget: Duration, token_base: usize) -> DnsClient {
        let per_attempt = (budget * 3 / 4) / ATTEMPTS;
        DnsClient {
            server,
            attempt_timeout: per_attempt.clamp(Duration::from_millis(200), Duration::from_secs(2)),
            token_base,
            lookups: Slab::new(),
            transactions: Slab::new(),
            heap: BinaryHeap::new(),
            serial: 0,
            rng: ring::rand::SystemRandom::new(),
            done: Vec::new(),
            scratch: vec![0; UDP_RECV_BYTES],
        }
    }

    /// True when `token` is one of this client's sockets.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 < self.token_base + MAX_TRANSACTIONS
    }

    /// Starts resolving `name` (lowercase); the result comes out of [`DnsClient::take_done`].
    pub fn start(&mut self, name: &str, registry: &Registry, now: Instant) {
        if self.transactions.len() + 2 > MAX_TRANSACTIONS {
            self.done.push(Resolved {
                name: name.into(),
                result: Err(ResolveError::Failed(
                    "too many DNS lookups in flight".to_owned(),
                )),
                ttl: Duration::ZERO,
            });
            return;
        }
        let lookup = self.lookups.insert(Lookup {
            name: name.into(),
            parts: [
                Part::Done {
                    result: Err(ResolveError::NoAddress),
                    ttl: 0,
                },
                Part::Done {
                    result: Err(ResolveError::NoAddress),
                    ttl: 0,
                },
            ],
        });
        for (part, qtype) in [(0, RecordType::A), (1, RecordType::Aaaa)] {
            self.ask(lookup, part, name, qtype, 0, 0, registry, now);
        }
        self.finish_if_settled(lookup);
    }

    /// Lookups settled since the last call.
    pub fn take_done(&mut self) -> impl Iterator<Item = Resolved> + '_ {
        self.done.drain(..)
    }

    /// The earliest deadline of a transaction in flight.
    pub fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Fires every due deadline: a retry, or a timed-out query.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        while let Some(Reverse((at, slot, serial))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(t) = self.transactions.get(slot) else {
                continue;
            };
            if t.serial != serial || t.deadline > now {
                continue;
            }
            let (lookup, part, name, qtype, attempt) =
                (t.lookup, t.part, t.name.clone(), t.qtype, t.attempt);
            let udp = matches!(t.wire, Wire::Udp(_));
            let restarts = match self.lookups.get(lookup).map(|l| &l.parts[part]) {
                Some(Part::Asking { restarts }) => *restarts,
                _ => 0,
            };
            self.close_transaction(slot, registry);
            if udp && attempt + 1 < ATTEMPTS {
                log::debug!(
                    "DNS {qtype} {name}: no answer from {}, asking again",
                    self.server
                );
                self.ask(
                    lookup,
                    part,
                    &name,
                    qtype,
                    attempt + 1,
                    restarts,
                    registry,
                    now,
                );
                self.finish_if_settled(lookup);
            } else {
                self.settle(lookup, part, Err(ResolveError::Timeout), 0);
            }
        }
    }

    /// Readiness on transaction socket `token`.
    pub fn on_event(&mut self, token: Token, registry: &Registry, now: Instant) {
        let slot = token.0 - self.token_base;
        if !self.transactions.contains(slot) {
            return;
        }
        loop {
            match self.receive(slot) {
                Ok(Some(msg_len)) => {
                    if self.on_message(slot, msg_len, registry, now) {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let t = &self.transactions[slot];
                    let (lookup, part) = (t.lookup, t.part);
                    log::debug!("DNS {} {}: {e}", t.qtype, t.name);
                    self.close_transaction(slot, registry);
                    self.settle(
                        lookup,
                        part,
                        Err(ResolveError::Failed(format!(
                            "DNS server {} failed: {e}",
                            self.server
                        ))),
                        0,
                    );
                    return;
                }
            }
        }
    }

    /// Reads what the socket has: `Ok(Some(len))` when `scratch[..len]` holds one message,
    /// `Ok(None)` when nothing more is there now.
    fn receive(&mut self, slot: usize) -> io::Result<Option<usize>> {
        let t = &mut self.transactions[slot];
        match &mut t.wire {
            Wire::Udp(sock) => match sock.recv(&mut self.scratch) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                // A refused port shows up as an ICMP error on the connected socket.
                Err(e) => Err(e),
            },
            Wire::Tcp {
                stream,
                out,
                written,
                input,
            } => {
                while *written < out.len() {
                    match stream.write(&out[*written..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => *written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
                loop {
                    if let Some(len) = framed_len(input) {
                        if self.scratch.len() < len {
                            self.scratch.resize(len, 0);
                        }
                        self.scratch[..len].copy_from_slice(&input[2..2 + len]);
                        input.drain(..2 + len);
                        return Ok(Some(len));
                    }
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the DNS server closed the TCP connection without an answer",
                            ));
                        }
                        Ok(n) => input.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// One received message for transaction `slot`; true when the transaction is over.
    fn on_message(&mut self, slot: usize, len: usize, registry: &Registry, now: Instant) -> bool {
        let t = &self.transactions[slot];
        let msg = &self.scratch[..len];
        let answer = match message::parse_response(msg, t.id, &t.name, t.qtype) {
            Ok(answer) => answer,
            // Not an answer to this question: someone else's, or a late one. Keep waiting.
            Err(
                e @ (ParseError::IdMismatch
                | ParseError::QuestionMismatch
                | ParseError::NotAResponse
                | ParseError::Short),
            ) => {
                log::debug!("DNS {} {}: ignored a message: {e}", t.qtype, t.name);
                return false;
            }
            Err(e) => {
                let (lookup, part) = (t.lookup, t.part);
                let why = format!("DNS server {} sent a bad answer: {e}", self.server);
                self.close_transaction(slot, registry);
                self.settle(lookup, part, Err(ResolveError::Failed(why)), 0);
                return true;
            }
        };
        let (lookup, part, name, qtype, id) = (t.lookup, t.part, t.name.clone(), t.qtype, t.id);
        let udp = matches!(t.wire, Wire::Udp(_));
        self.close_transaction(slot, registry);
        if answer.truncated && udp {
            log::debug!("DNS {qtype} {name}: truncated over UDP, asking over TCP");
            if let Err(e) = self.open(lookup, part, &name, qtype, id, 0, true, registry, now) {
                self.settle(lookup, part, Err(dns_io_error(self.server, &e)), 0);
            }
            return true;
        }
        let ttl = answer.ttl.unwrap_or(DEFAULT_NEGATIVE_TTL);
        match answer.rcode {
            Rcode::NoError if !answer.addrs.is_empty() => {
                self.settle(lookup, part, Ok(answer.addrs), ttl);
            }
            Rcode::NoError => match answer.cname_target {
                Some(target) => {
                    let restarts = match &self.lookups[lookup].parts[part] {
                        Part::Asking { restarts } => *restarts,
                        Part::Done { .. } => 0,
                    };
                    if restarts >= MAX_CNAME_RESTARTS {
                        let why = format!("CNAME chain from {name} longer than the limit");
                        self.settle(lookup, part, Err(ResolveError::Failed(why)), 0);
                    } else {
                        self.ask(lookup, part, &target, qtype, 0, restarts + 1, registry, now);
                        self.finish_if_settled(lookup);
                    }
                }
                None => self.settle(lookup, part, Err(ResolveError::NoAddress), ttl),
            },
            Rcode::NxDomain => self.settle(lookup, part, Err(ResolveError::NxDomain), ttl),
            Rcode::Refused => self.settle(lookup, part, Err(ResolveError::Refused), 0),
            _ => self.settle(lookup, part, Err(ResolveError::ServFail), 0),
        }
        true
    }

    /// Opens a UDP transaction for (name, qtype) with a new random ID (`restarts` CNAME
    /// targets into the chain), or settles the part with the reason it could not. The caller
    /// then checks whether the lookup is settled.
    #[allow(clippy::too_many_arguments)]
    fn ask(
        &mut self,
        lookup: usize,
        part: usize,
        name: &str,
        qtype: RecordType,
        attempt: u32,
        restarts: u32,
        registry: &Registry,
        now: Instant,
    ) {
        let id = self.random_id();
        let opened = self.open(lookup, part, name, qtype, id, attempt, false, registry, now);
        if let Part::Asking { restarts: r } = &mut self.lookups[lookup].parts[part] {
            *r = restarts;
        }
        if let Err(e) = opened {
            let why = match e.kind() {
                io::ErrorKind::InvalidInput => ResolveError::Failed(e.to_string()),
                _ => dns_io_error(self.server, &e),
            };
            self.lookups[lookup].parts[part] = Part::Done {
                result: Err(why),
                ttl: 0,
            };
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        lookup: usize,
        part: usize,
        name: &str,
        qtype: RecordType,
        id: u16,
        attempt: u32,
        tcp: bool,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<()> {
        let mut query = Vec::with_capacity(64);
        message::encode_query(id, name, qtype, &mut query)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let slot = self.transactions.vacant_key();
        if slot >= MAX_TRANSACTIONS {
            return Err(io::Error::other("too many DNS queries in flight"));
        }
        let token = Token(self.token_base + slot);
        let wire = if tcp {
            let mut stream = TcpStream::connect(self.server)?;
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            let mut out = Vec::with_capacity(query.len() + 2);
            out.extend_from_slice(&u16::try_from(query.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&query);
            Wire::Tcp {
                stream,
                out,
                written: 0,
                input: Vec::new(),
            }
        } else {
            let local: SocketAddr = match self.server {
                SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let mut sock = UdpSocket::bind(local)?;
            sock.connect(self.server)?;
            sock.send(&query)?;
            registry.register(&mut sock, token, Interest::READABLE)?;
            Wire::Udp(sock)
        };
        let timeout = if tcp {
            self.attempt_timeout * 2
        } else {
            self.attempt_timeout
        };
        self.serial += 1;
        let deadline = now + timeout;
        let inserted = self.transactions.insert(Transaction {
            lookup,
            part,
            name: name.into(),
            qtype,
            id,
            attempt,
            wire,
            deadline,
            serial: self.serial,
        });
        debug_assert_eq!(inserted, slot);
        self.heap.push(Reverse((deadline, slot, self.serial)));
        let restarts = match &self.lookups[lookup].parts[part] {
            Part::Asking { restarts } => *restarts,
            Part::Done { .. } => 0,
        };
        self.lookups[lookup].parts[part] = Part::Asking { restarts };
        Ok(())
    }

    fn close_transaction(&mut self, slot: usize, registry: &Registry) {
        let mut t = self.transactions.remove(slot);
        let _ = match &mut t.wire {
            Wire::Udp(sock) => registry.deregister(sock),
            Wire::Tcp { stream, .. } => registry.deregister(stream),
        };
    }

    fn settle(
        &mut self,
        lookup: usize,
        part: usize,
        result: Result<Vec<IpAddr>, ResolveError>,
        ttl: u32,
    ) {
        if let Some(l) = self.lookups.get_mut(lookup) {
            l.parts[part] = Part::Done { result, ttl };
        }
        self.finish_if_settled(lookup);
    }

    /// When both parts are done: combines them into one [`Resolved`].
    fn finish_if_settled(&mut self, lookup: usize) {
        let Some(l) = self.lookups.get(lookup) else {
            return;
        };
        let (
            Part::Done {
                result: v4,
                ttl: ttl4,
            },
            Part::Done {
                result: v6,
                ttl: ttl6,
            },
        ) = (&l.parts[0], &l.parts[1])
        else {
            return;
        };
        let (result, ttl) = combine(v4, *ttl4, v6, *ttl6);
        let name = l.name.clone();
        self.lookups.remove(lookup);
        self.done.push(Resolved {
            name,
            result,
            ttl: Duration::from_secs(u64::from(ttl)),
        });
    }

    fn random_id(&self) -> u16 {
        let mut id = [0u8; 2];
        // SystemRandom failing leaves the ID predictable, not the lookup broken.
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut id);
        u16::from_be_bytes(id)
    }
}

/// A complete length-prefixed TCP message at the front of `input`: its length.
fn framed_len(input: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*input.first()?, *input.get(1)?]));
    (input.len() >= 2 + len).then_some(len)
}

fn dns_io_error(server: SocketAddr, e: &io::Error) -> ResolveError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            ResolveError::Failed(format!("DNS server {server} refused the connection"))
        }
        _ => ResolveError::Failed(format!("cannot reach DNS server {server}: {e}")),
    }
}

/// The A and AAAA results as one: addresses (IPv6 first, then alternating) with the smaller
/// TTL of the parts that gave some, else the most telling failure.
fn combine(
    v4: &Result<Vec<IpAddr>, ResolveError>,
    ttl4: u32,
    v6: &Result<Vec<IpAddr>, ResolveError>,
    ttl6: u32,
) -> (Result<Vec<IpAddr>, ResolveError>, u32) {
    match (v4, v6) {
        (Ok(a), Ok(b)) => (Ok(interleave(b, a)), ttl4.min(ttl6)),
        (Ok(a), Err(_)) => (Ok(a.clone()), ttl4),
        (Err(_), Ok(b)) => (Ok(b.clone()), ttl6),
        (Err(a), Err(b)) => {
            let rank = |e: &ResolveError| match e {
                ResolveError::NxDomain => 0,
                ResolveError::ServFail => 1,
                ResolveError::Refused => 2,
                ResolveError::Failed(_) => 3,
                ResolveError::Timeout => 4,
                ResolveError::NoAddress => 5,
            };
            if rank(a) <= rank(b) {
                (Err(a.clone()), ttl4.min(ttl6))
            } else {
                (Err(b.clone()), ttl4.min(ttl6))
            }
        }
    }
}

/// `first[0], second[0], first[1], second[1], ...`, then the rest of the longer list.
pub fn interleave(first: &[IpAddr], second: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(first.len() + second.len());
    let mut a = first.iter();
    let mut b = second.iter();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y).copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn v6(last: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, last))
    }

    #[test]
    fn families_alternate_starting_with_ipv6() {
        assert_eq!(
            interleave(&[v6(1), v6(2), v6(3)], &[v4(1)]),
            [v6(1), v4(1), v6(2), v6(3)]
        );
        assert_eq!(interleave(&[], &[v4(1), v4(2)]), [v4(1), v4(2)]);
    }

    #[test]
    fn the_most_telling_failure_wins() {
        let (r, _) = combine(
            &Err(ResolveError::Timeout),
            0,
            &Err(ResolveError::NxDomain),
            9,
        );
        assert_eq!(r, Err(ResolveError::NxDomain));
        let (r, _) = combine(
            &Err(ResolveError::NoAddress),
            5,
            &Err(ResolveError::ServFail),
            0,
        );
        assert_eq!(r, Err(ResolveError::ServFail));
        let (r, ttl) = combine(&Ok(vec![v4(1)]), 30, &Err(ResolveError::NoAddress), 5);
        assert_eq!((r, ttl), (Ok(vec![v4(1)]), 30));
        let (r, ttl) = combine(&Ok(vec![v4(1)]), 30, &Ok(vec![v6(1)]), 10);
        assert_eq!((r, ttl), (Ok(vec![v6(1), v4(1)]), 10));
    }

    #[test]
    fn tcp_frames_are_split_on_their_length_prefix() {
        assert_eq!(framed_len(&[0]), None);
        assert_eq!(framed_len(&[0, 3, 1, 2]), None);
        assert_eq!(framed_len(&[0, 3, 1, 2, 3, 9]), Some(3));
    }
}
