//! Name resolution that never blocks the event loop.
//!
//! A session asks its loop's [`Resolver`] for a host; the answer is immediate when the shared
//! [`Cache`] has it (or the name is `localhost`), else it arrives later as an [`Answer`]
//! matched to the session by slab key *and* generation, so an answer for a session that has
//! since closed is simply dropped. Concurrent lookups of one name on one loop share a query.
//! IP literals never get here: the session parses them itself.
//!
//! Two ways to ask, one cache:
//! - with `[proxy] dns_server`, the loop's own [`DnsClient`] asks that server (never the system
//!   resolver, never `/etc/hosts`), and caches answers for their TTL;
//! - without it, the system resolver (`getaddrinfo`), which can stall for seconds, runs on a few
//!   threads shared by every loop: a loop sends the name over an unbounded channel (sending
//!   never blocks), a thread answers on that loop's own channel and wakes it through its
//!   `mio::Waker`. `getaddrinfo` gives no TTL, so its answers are kept [`SYSTEM_TTL`] (and
//!   "no such name" [`SYSTEM_NEGATIVE_TTL`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Registry, Token, Waker};

use crate::dns::cache::{Cache, Found};
use crate::dns::client::{DnsClient, interleave};

/// Number of resolver threads: lookups for different hosts proceed in parallel, so one slow
/// name does not hold up the others.
pub const RESOLVER_THREADS: usize = 4;
/// How long a system resolver answer is kept.
pub const SYSTEM_TTL: Duration = Duration::from_secs(30);
/// How long a system resolver "no such name" is kept.
pub const SYSTEM_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Names kept in the shared cache.
pub const CACHE_NAMES: usize = 4096;

/// A lookup request from the session in slab slot `key`.
#[derive(Debug)]
pub struct Query {
    pub key: usize,
    pub generation: u64,
    pub host: Box<str>,
    pub port: u16,
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The name exists but has no address (NOERROR with no A/AAAA records).
    NoAddress,
    /// The DNS server says the name does not exist.
    NxDomain,
    /// The DNS server failed to answer (SERVFAIL or another error code).
    ServFail,
    /// The DNS server refused the query.
    Refused,
    /// No answer from the DNS server after every try.
    Timeout,
    /// The lookup failed otherwise; the text says how.
    Failed(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NoAddress => f.write_str("the name has no address"),
            ResolveError::NxDomain => f.write_str("no such name (NXDOMAIN)"),
            ResolveError::ServFail => f.write_str("the DNS server failed (SERVFAIL)"),
            ResolveError::Refused => f.write_str("the DNS server refused the query (REFUSED)"),
            ResolveError::Timeout => f.write_str("no answer from the DNS server (timeout)"),
            ResolveError::Failed(why) => f.write_str(why),
        }
    }
}

/// The answer to one [`Query`].
#[derive(Debug)]
pub struct Answer {
    pub key: usize,
    pub generation: u64,
    pub result: Result<Vec<SocketAddr>, ResolveError>,
}

/// A lookup's outcome: now, or later through [`Resolver::try_answer`].
#[derive(Debug)]
pub enum Lookup {
    Ready(Result<Vec<SocketAddr>, ResolveError>),
    Pending,
}

/// The cache every loop shares.
pub type SharedCache = Arc<Mutex<Cache>>;

/// A session waiting for a name.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    key: usize,
    generation: u64,
    port: u16,
}

/// One event loop's resolver.
pub struct Resolver {
    system: SystemHandle,
    dns: Option<DnsClient>,
    cache: SharedCache,
    /// Sessions waiting, by name; one query per name.
    waiting: HashMap<Box<str>, Vec<Waiter>>,
    /// Answers ready for the loop.
    ready: Vec<Answer>,
}

impl Resolver {
    /// The resolver of one loop: `dns` when `dns_server` is set, else the system threads.
    pub fn new(system: SystemHandle, dns: Option<DnsClient>, cache: SharedCache) -> Resolver {
        Resolver {
            system,
            dns,
            cache,
            waiting: HashMap::new(),
            ready: Vec::new(),
        }
    }

    /// Resolves `query.host`: from the cache at once, or by asking (the answer comes later).
    pub fn lookup(&mut self, query: Query, registry: &Registry, now: Instant) -> Lookup {
        let name = normalize(&query.host);
        if is_localhost(&name) {
            // RFC 6761 §6.3: never sent to a DNS server.
            let loopback = [
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ];
            return Lookup::Ready(Ok(with_port(&loopback, query.port)));
        }
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name, now);
        if let Some(found) = cached {
            return Lookup::Ready(found.map(|addrs| with_port(&addrs, query.port)));
        }
        let waiter = Waiter {
            key: query.key,
            generation: query.generation,
            port: query.port,
        };
        if let Some(waiters) = self.waiting.get_mut(name.as_str()) {
            waiters.push(waiter);
            return Lookup::Pending;
        }
        self.waiting.insert(name.clone().into(), vec![waiter]);
        match &mut self.dns {
            Some(dns) => {
                dns.start(&name, registry, now);
                self.collect_dns(now);
            }
            None => self.system.submit(name.into()),
        }
        Lookup::Pending
    }

    /// The next finished lookup, if any (answers from the system threads are cached here).
    pub fn try_answer(&mut self, now: Instant) -> Option<Answer> {
        if let Some(answer) = self.ready.pop() {
            return Some(answer);
        }
        // Empty and Disconnected both mean "nothing to hand over now".
        while let Ok((name, found)) = self.system.answers.try_recv() {
            let ttl = match found {
                Ok(_) => SYSTEM_TTL,
                Err(_) => SYSTEM_NEGATIVE_TTL,
            };
            self.settle(&name, found, ttl, now);
            if let Some(answer) = self.ready.pop() {
                return Some(answer);
            }
        }
        None
    }

    /// True when `token` is one of the DNS client's sockets.
    pub fn owns(&self, token: Token) -> bool {
        self.dns.as_ref().is_some_and(|d| d.owns(token))
    }

    /// Readiness on a DNS client socket.
    pub fn on_event(&mut self, token: Token, registry: &Registry, now: Instant) {
        if let Some(dns) = &mut self.dns {
            dns.on_event(token, registry, now);
            self.collect_dns(now);
        }
    }

    /// Fires the DNS client's due deadlines.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        if let Some(dns) = &mut self.dns
            && dns.next_wake().is_some_and(|at| at <= now)
        {
            dns.tick(registry, now);
            self.collect_dns(now);
        }
    }

    /// When the DNS client next needs [`Resolver::tick`].
    pub fn next_wake(&self) -> Option<Instant> {
        self.dns.as_ref().and_then(DnsClient::next_wake)
    }

    /// True when answers are ready without polling.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    fn collect_dns(&mut self, now: Instant) {
        let Some(dns) = &mut self.dns else { return };
        let done: Vec<_> = dns.take_done().collect();
        for resolved in done {
            let found = resolved.result.map(Arc::from);
            self.settle(&resolved.name, found, resolved.ttl, now);
        }
    }

    /// Caches what was found for `name` and readies an answer for every session waiting.
    fn settle(&mut self, name: &str, found: Found, ttl: Duration, now: Instant) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(name, found.clone(), ttl, now);
        for w in self.waiting.remove(name).unwrap_or_default() {
            self.ready.push(Answer {
                key: w.key,
                generation: w.generation,
                result: match &found {
                    Ok(addrs) => Ok(with_port(addrs, w.port)),
                    Err(e) => Err(e.clone()),
                },
            });
        }
    }
}

/// Lowercase, without one trailing dot: the cache key.
fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

fn with_port(addrs: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
}

/// One event loop's handle on the shared system-resolver threads.
pub struct SystemHandle {
    queries: Sender<Job>,
    reply: Arc<Reply>,
    answers: Receiver<(Box<str>, Found)>,
}

/// Where a loop's answers go, and how to wake it.
struct Reply {
    answers: Sender<(Box<str>, Found)>,
    waker: Arc<Waker>,
}

struct Job {
    name: Box<str>,
    reply: Arc<Reply>,
}

impl SystemHandle {
    /// Queues a lookup; never blocks.
    fn submit(&self, name: Box<str>) {
        let job = Job {
            name,
            reply: Arc::clone(&self.reply),
        };
        if self.queries.send(job).is_err() {
            log::error!("resolver threads are gone; lookups will time out");
        }
    }
}

/// The system-resolver threads, shared by every event loop; [`ResolverPool::handle`] gives each
/// loop its own answer queue. Dropping every handle (and the pool) lets the threads exit once
/// they finish their current lookup; nobody joins them, since `getaddrinfo` cannot be
/// cancelled.
pub struct ResolverPool {
    queries: Sender<Job>,
}

impl ResolverPool {
    /// Starts [`RESOLVER_THREADS`] threads.
    pub fn start() -> io::Result<ResolverPool> {
        let (queries, query_rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..RESOLVER_THREADS {
            let query_rx = query_rx.clone();
            thread::Builder::new()
                .name(format!("watchtower-dns{i}"))
                .spawn(move || {
                    for Job { name, reply } in query_rx {
                        let found = system_lookup(&name);
                        if reply.answers.send((name, found)).is_err() {
                            continue; // that loop is gone
                        }
                        if let Err(e) = reply.waker.wake() {
                            log::warn!("resolver could not wake the event loop: {e}");
                        }
                    }
                })?;
        }
        Ok(ResolverPool { queries })
    }

    /// A handle for the loop that `waker` wakes.
    pub fn handle(&self, waker: Arc<Waker>) -> SystemHandle {
        let (answers_tx, answers) = crossbeam_channel::unbounded();
        SystemHandle {
            queries: self.queries.clone(),
            reply: Arc::new(Reply {
                answers: answers_tx,
                waker,
            }),
            answers,
        }
    }
}

/// `getaddrinfo` for `name`, addresses interleaved IPv6/IPv4 and without duplicates.
fn system_lookup(name: &str) -> Found {
    match (name, 0).to_socket_addrs() {
        Ok(addrs) => {
            let mut v6 = Vec::new();
            let mut v4 = Vec::new();
            for addr in addrs {
                let list = if addr.is_ipv6() { &mut v6 } else { &mut v4 };
                if !list.contains(&addr.ip()) {
                    list.push(addr.ip());
                }
            }
            if v6.is_empty() && v4.is_empty() {
                Err(ResolveError::NoAddress)
            } else {
                Ok(Arc::from(interleave(&v6, &v4)))
            }
        }
        Err(e) => Err(system_error(&e.to_string())),
    }
}

/// std reports a `getaddrinfo` failure as text only (`gai_strerror`); the two answers that mean
/// the name has no address, and are worth caching, are told apart by it.
fn system_error(text: &str) -> ResolveError {
    if text.contains("Name or service not known") || text.contains("nodename nor servname provided")
    {
        ResolveError::NxDomain
    } else if text.contains("No address associated with hostname") {
        ResolveError::NoAddress
    } else {
        ResolveError::Failed(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(poll: &mio::Poll) -> Resolver {
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let system = ResolverPool::start().unwrap().handle(waker);
        Resolver::new(system, None, Arc::new(Mutex::new(Cache::new(16))))
    }

    fn query(key: usize, host: &str, port: u16) -> Query {
        Query {
            key,
            generation: 9,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn system_answers_arrive_wake_the_loop_and_are_cached() {
        let mut poll = mio::Poll::new().unwrap();
        let mut resolver = resolver(&poll);
        let now = Instant::now();
        // Two sessions, one lookup.
        for key in [3, 4] {
            let lookup = resolver.lookup(
                query(key, "LOCALHOST.localdomain.", 80),
                poll.registry(),
                now,
            );
            assert!(matches!(lookup, Lookup::Pending), "{lookup:?}");
        }
        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answers = Vec::new();
        while answers.len() < 2 {
            match resolver.try_answer(now) {
                Some(a) => answers.push(a),
                None => {
                    assert!(Instant::now() < deadline, "no answer in 10 s");
                    poll.poll(&mut events, Some(Duration::from_millis(100)))
                        .unwrap();
                }
            }
        }
        answers.sort_by_key(|a| a.key);
        assert_eq!((answers[0].key, answers[1].key), (3, 4));
        assert!(answers.iter().all(|a| a.generation == 9));
        // Whatever the system said (the name may not exist here) is now cached.
        let again = resolver.lookup(query(5, "localhost.localdomain", 443), poll.registry(), now);
        match (again, &answers[0].result) {
            (Lookup::Ready(Ok(addrs)), Ok(first)) => {
                assert!(addrs.iter().all(|a| a.port() == 443));
                assert_eq!(addrs.len(), first.len());
            }
            (Lookup::Ready(Err(e)), Err(first)) => assert_eq!(&e, first),
            (other, first) => panic!("not cached: {other:?} after {first:?}"),
        }
    }

    #[test]
    fn localhost_never_leaves_the_loop() {
        let poll = mio::Poll::new().unwrap();
        let mut resolver = resolver(&poll);
        for name in ["localhost", "LocalHost.", "app.localhost"] {
            match resolver.lookup(query(1, name, 3000), poll.registry(), Instant::now()) {
                Lookup::Ready(Ok(addrs)) => assert_eq!(
                    addrs,
                    [
                        "[::1]:3000".parse().unwrap(),
                        "127.0.0.1:3000".parse().unwrap()
                    ]
                ),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
