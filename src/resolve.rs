//! Name resolution that never blocks the event loop.
//!
//! The system resolver (`getaddrinfo`) can stall for seconds, so it runs on a few threads
//! shared by every event loop. A loop sends a [`Query`] over an unbounded crossbeam channel
//! (sending never blocks), a resolver thread answers on that loop's own channel and wakes it
//! through its `mio::Waker`; the loop matches the [`Answer`] to its session by slab key *and* generation,
//! so an answer for a session that has since closed is simply dropped. IP literals never get
//! here: the session parses them itself. Caching and the `dns_server` client come later
//! (issue 6); the interface stays the same.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

/// Number of resolver threads: lookups for different hosts proceed in parallel, so one slow
/// name does not hold up the others.
pub const RESOLVER_THREADS: usize = 4;

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
    /// The lookup succeeded but gave no address.
    NoAddress,
    /// The resolver failed; the text is the system's reason.
    Failed(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NoAddress => f.write_str("the name has no address"),
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

/// One event loop's handle on the shared resolver threads. Dropping every handle (and the
/// [`ResolverPool`]) lets the threads exit once they finish their current lookup; nobody joins
/// them, since `getaddrinfo` cannot be cancelled.
pub struct Resolver {
    queries: Sender<Job>,
    reply: Arc<Reply>,
    answers: Receiver<Answer>,
}

/// Where a worker's answers go, and how to wake it.
struct Reply {
    answers: Sender<Answer>,
    waker: Arc<Waker>,
}

struct Job {
    query: Query,
    reply: Arc<Reply>,
}

/// The resolver threads, shared by every event loop; [`ResolverPool::handle`] gives each loop
/// its own answer queue.
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
                    for Job { query, reply } in query_rx {
                        let result = lookup(&query.host, query.port);
                        let answer = Answer {
                            key: query.key,
                            generation: query.generation,
                            result,
                        };
                        if reply.answers.send(answer).is_err() {
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
    pub fn handle(&self, waker: Arc<Waker>) -> Resolver {
        let (answers_tx, answers) = crossbeam_channel::unbounded::<Answer>();
        Resolver {
            queries: self.queries.clone(),
            reply: Arc::new(Reply {
                answers: answers_tx,
                waker,
            }),
            answers,
        }
    }
}

impl Resolver {
    /// Queues a lookup; never blocks.
    pub fn submit(&self, query: Query) {
        let job = Job {
            query,
            reply: Arc::clone(&self.reply),
        };
        if self.queries.send(job).is_err() {
            log::error!("resolver threads are gone; lookups will time out");
        }
    }

    /// The next finished lookup, if any.
    pub fn try_answer(&self) -> Option<Answer> {
        // Empty and Disconnected both mean "nothing to hand over now".
        self.answers.try_recv().ok()
    }
}

fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(ResolveError::NoAddress)
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(ResolveError::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_arrive_and_wake_the_loop() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let resolver = ResolverPool::start().unwrap().handle(waker);
        resolver.submit(Query {
            key: 3,
            generation: 9,
            host: "localhost".into(),
            port: 80,
        });
        let mut events = mio::Events::with_capacity(4);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let answer = loop {
            if let Some(a) = resolver.try_answer() {
                break a;
            }
            assert!(std::time::Instant::now() < deadline, "no answer in 10 s");
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
        };
        assert_eq!((answer.key, answer.generation), (3, 9));
        let addrs = answer.result.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    }
}
