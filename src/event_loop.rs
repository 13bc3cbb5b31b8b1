//! The event loops: `[proxy] workers` threads (default one per core), each with its own
//! `mio::Poll`, listeners, session slab, timers, buffers and resolver answers.
//!
//! Workers share nothing on the request path. Each listener is bound once per worker with
//! `SO_REUSEPORT`, so the kernel spreads new connections over the workers and a connection stays
//! on the worker that accepted it; before that, a plain bind of the same address checks that no
//! other program (or a second Watchtower) is listening there, since `SO_REUSEPORT` would
//! otherwise let it share the port silently. The route table is an `Arc` read without locks; the
//! certificate store is shared behind a mutex that only a worker's first handshake for a name
//! takes (`tls::WorkerCerts`); the log and the resolver threads are reached over channels.
//!
//! Fixed tokens sit at the top of the token space (waker, signal pipe, listeners); every
//! other token is a session's slab key plus a bit for the side (`session::token`). Each
//! iteration polls, reads the clock once into `Ctx::now`, dispatches readiness to sessions,
//! fires due deadlines, re-drives sessions that stopped at their step bound, and resumes
//! accepting if it had to stop (session cap, out of file descriptors).
//!
//! Shutdown (SIGINT/SIGTERM, delivered through a self-pipe by `signal-hook` to the first worker,
//! which raises a shared flag and wakes the others): listeners are closed so nothing new is
//! accepted, idle connections close at once, in-flight exchanges
//! finish (their responses say `Connection: close`) for up to [`DRAIN_GRACE`], then
//! whatever remains is cut and logged, and `run` returns once every worker has finished, so
//! `main` can flush the log. A worker whose poller fails stops all of them the same way.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use crate::access::Access;
use crate::apilog::LogSender;
use crate::config::{Config, Timeouts};
use crate::context::Ctx;
use crate::dns::cache::Cache;
use crate::dns::client::DnsClient;
use crate::http::Via;
use crate::live::Live;
use crate::relay::BufPool;
use crate::resolve::{CACHE_NAMES, Resolver, ResolverPool};
use crate::route::ListenerKind;
use crate::session::{self, CloseReason, Session, UpstreamPool};
use crate::timer::Timers;
use crate::tls::{self, CertStore, LocalCa, WorkerCerts};
use crate::upstream_proxy::UpstreamProxy;

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 16;
/// The DNS client's sockets have tokens from here up, far above any session's.
const DNS_TOKEN_BASE: usize = usize::MAX / 4;
/// Parked upstream connections have tokens from here up.
const POOL_TOKEN_BASE: usize = usize::MAX / 8;

/// How long in-flight exchanges may run on after a shutdown signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How soon a worker that stopped accepting at the connection limit looks again (another
/// worker's connections may have closed meanwhile).
const LIMIT_RETRY: Duration = Duration::from_millis(20);
/// How soon a worker that ran out of file descriptors tries accepting again.
const FD_RETRY: Duration = Duration::from_millis(100);
/// Least time between two "not accepting" warnings while the proxy stays saturated.
const PAUSE_WARNING_EVERY: Duration = Duration::from_secs(5);
/// Most pooled buffers lent at once (64 KiB each: 1 GiB in the worst case), split over the
/// workers.
pub const MAX_BUFFERS: usize = 16_384;
/// Pending connections the kernel queues per listening socket.
const LISTEN_BACKLOG: i32 = 1024;
/// Spare buffers kept for reuse after a burst, per worker.
pub const KEEP_BUFFERS: usize = 256;
/// Host names whose minted certificate stays cached.
const CERT_CACHE_NAMES: usize = 1024;
/// Accepts per listener per readiness event before other work gets a turn.
const ACCEPTS_PER_TURN: usize = 64;

/// Why Watchtower could not start.
#[derive(Debug)]
pub enum StartError {
    /// A listener could not bind.
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    /// The poller, waker, signal handler or a thread could not be set up.
    Setup(&'static str, io::Error),
    /// The local CA (or the extra roots) could not be loaded or created.
    Ca(crate::tls::CaError),
    /// The leaf-certificate store could not be set up.
    Certs(crate::tls::MintError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind { name, addr, source } => match source.kind() {
                io::ErrorKind::AddrInUse => write!(
                    f,
                    "cannot listen on {addr} ({name}): port {} is in use",
                    addr.port()
                ),
                io::ErrorKind::PermissionDenied => write!(
                    f,
                    "cannot listen on {addr} ({name}): permission denied (ports below 1024 need privileges)"
                ),
                io::ErrorKind::AddrNotAvailable => write!(
                    f,
                    "cannot listen on {addr} ({name}): {} is not an address of this machine",
                    addr.ip()
                ),
                _ => write!(f, "cannot listen on {addr} ({name}): {source}"),
            },
            StartError::Setup(what, e) => write!(f, "cannot set up {what}: {e}"),
            StartError::Ca(e) => write!(f, "{e}"),
            StartError::Certs(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

struct Listener {
    kind: ListenerKind,
    addr: SocketAddr,
    sock: Option<TcpListener>,
    /// More connections may be waiting (we stopped before `WouldBlock`).
    pending: bool,
}

/// Raised to stop every worker (a signal, or a worker whose loop failed); each worker is woken
/// so it notices at once.
struct Shutdown {
    requested: AtomicBool,
    /// The first worker to act on it logs the shutdown line.
    announced: AtomicBool,
    wakers: Vec<Arc<Waker>>,
    /// Client connections open across all workers, by listener (see [`kind_index`]).
    open: [AtomicUsize; 3],
    /// Client connections admitted (or being accepted) across all workers; never above
    /// `max_connections`.
    admitted: AtomicUsize,
    /// `[proxy] max_connections`, or what the open-file limit allows.
    max_connections: usize,
}

/// `Shutdown::open`'s slot for a listener kind.
fn kind_index(kind: ListenerKind) -> usize {
    match kind {
        ListenerKind::Forward => 0,
        ListenerKind::ReverseHttp => 1,
        ListenerKind::ReverseHttps => 2,
    }
}

/// Live figures for the admin API's statistics, readable from any thread.
#[derive(Clone)]
pub struct Gauges {
    shutdown: Arc<Shutdown>,
    certs: Arc<Mutex<CertStore>>,
    log_dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Gauges {
    /// Client connections open now, per listener: forward proxy, reverse HTTP, reverse HTTPS.
    pub fn open_connections(&self) -> [(&'static str, usize); 3] {
        let open = |i: usize| self.shutdown.open[i].load(Ordering::Relaxed);
        [
            ("proxy", open(0)),
            ("reverse_http", open(1)),
            ("reverse_https", open(2)),
        ]
    }

    /// Client connections open now, over all listeners.
    pub fn open_total(&self) -> usize {
        self.shutdown.admitted.load(Ordering::Relaxed)
    }

    /// Most client connections served at once (`[proxy] max_connections` or its default).
    pub fn max_connections(&self) -> usize {
        self.shutdown.max_connections
    }

    /// Leaf certificates minted since start.
    pub fn certificates_minted(&self) -> u64 {
        self.certs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .minted()
    }

    /// API log records dropped because the log thread fell behind.
    pub fn log_records_dropped(&self) -> u64 {
        self.log_dropped.load(Ordering::Relaxed)
    }
}

impl Shutdown {
    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::warn!("could not wake a worker to stop it: {e}");
            }
        }
    }
}

/// A bound, ready-to-run proxy: its workers, each with its own poller and listeners.
pub struct Proxy {
    /// Built on the thread that runs them (a worker holds `Rc`s, so it cannot be sent).
    workers: Vec<WorkerParts>,
    addrs: Vec<(&'static str, SocketAddr)>,
    shutdown: Arc<Shutdown>,
    live: Arc<Live>,
    /// The local CA's certificate, PEM and DER.
    ca: (String, Vec<u8>),
    gauges: Gauges,
}

/// Everything a worker is made of that can cross to its thread.
struct WorkerParts {
    id: usize,
    poll: Poll,
    listeners: Vec<Listener>,
    /// Only the first worker reads the signal pipe.
    signals: Option<UnixStream>,
    certs: WorkerCerts,
    resolver: Resolver,
    log: LogSender,
    live: Arc<Live>,
    tls_client: Arc<rustls::ClientConfig>,
    timeouts: Timeouts,
    own_addrs: Vec<SocketAddr>,
    via: Via,
    upstream_proxy: Option<Arc<UpstreamProxy>>,
    access: Arc<Access>,
    ca: Arc<(String, Vec<u8>)>,
    capture_limit: usize,
    max_buffers: usize,
    shutdown: Arc<Shutdown>,
}

/// One event loop.
struct Worker {
    id: usize,
    poll: Poll,
    listeners: Vec<Listener>,
    sessions: Slab<Session>,
    ctx: Ctx,
    signals: Option<UnixStream>,
    shutdown: Arc<Shutdown>,
    next_generation: u64,
    /// Accepting stopped at the connection limit or out of file descriptors: retry at this
    /// instant, or sooner when one of this worker's connections closes.
    accept_paused: Option<Instant>,
    /// When the last "not accepting" warning was logged.
    warned_paused: Option<Instant>,
}

impl Proxy {
    /// Binds every configured listener (once per worker) and sets up the loops. Nothing is
    /// accepted until [`Proxy::run`].
    pub fn bind(config: &Config, log: LogSender) -> Result<Proxy, StartError> {
        // The CA comes first: a bad CA refuses to start before any port is bound.
        let (ca, created) = LocalCa::load_or_create(&config.tls.ca_cert, &config.tls.ca_key)
            .map_err(StartError::Ca)?;
        if created {
            log::info!(
                "created a new local CA at {}; trust it with `watchtower ca install`",
                config.tls.ca_cert.display()
            );
        }
        let extra_roots = match &config.tls.extra_roots {
            Some(path) => tls::read_pem_certs(path).map_err(StartError::Ca)?,
            None => Vec::new(),
        };
        let ca_certificate = (ca.cert_pem().to_owned(), ca.cert_der().to_vec());
        let certs = Arc::new(Mutex::new(
            CertStore::new(ca, CERT_CACHE_NAMES).map_err(StartError::Certs)?,
        ));
        let n = config.worker_count().max(1);
        let fd_limit = crate::sys::raise_open_file_limit().unwrap_or_else(|e| {
            log::warn!("could not read or raise the open-file limit: {e}");
            1024
        });
        let max_connections = connection_limit(config.max_connections, fd_limit);

        // Per listener, one socket per worker.
        let mut bound = Vec::new();
        for (name, addr) in config.listeners() {
            let kind = match name {
                "reverse_http" => ListenerKind::ReverseHttp,
                "reverse_https" => ListenerKind::ReverseHttps,
                _ => ListenerKind::Forward,
            };
            let (addr, socks) =
                bind_listener(addr, n).map_err(|source| StartError::Bind { name, addr, source })?;
            bound.push((kind, name, addr, socks));
        }
        let addrs: Vec<(&'static str, SocketAddr)> = bound
            .iter()
            .map(|(_, name, addr, _)| (*name, *addr))
            .collect();

        let mut polls = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = Poll::new().map_err(|e| StartError::Setup("the poller", e))?;
            let waker = Waker::new(poll.registry(), WAKER)
                .map_err(|e| StartError::Setup("the waker", e))?;
            polls.push(poll);
            wakers.push(Arc::new(waker));
        }
        let shutdown = Arc::new(Shutdown {
            requested: AtomicBool::new(false),
            announced: AtomicBool::new(false),
            wakers: wakers.clone(),
            open: Default::default(),
            admitted: AtomicUsize::new(0),
            max_connections,
        });
        let resolvers =
            ResolverPool::start().map_err(|e| StartError::Setup("resolver threads", e))?;
        let dns_cache = Arc::new(Mutex::new(Cache::new(CACHE_NAMES)));
        let live = Live::new(config.local_routing, config.routes.clone());
        let tls_client = tls::client_config(&extra_roots);
        let own_addrs: Vec<SocketAddr> = addrs.iter().map(|(_, addr)| *addr).collect();
        let via = Via::for_this_run();
        let upstream_proxy = config.upstream_proxy.clone().map(Arc::new);
        let access = Arc::new(config.access.clone());
        let ca_shared = Arc::new(ca_certificate.clone());
        if let Some(proxy) = &upstream_proxy {
            log::info!("pass-through traffic goes via the upstream proxy {proxy}");
        }

        let mut workers = Vec::with_capacity(n);
        for (id, (poll, waker)) in polls.into_iter().zip(wakers).enumerate() {
            let mut listeners = Vec::with_capacity(bound.len());
            for (i, (kind, _, addr, socks)) in bound.iter_mut().enumerate() {
                let mut sock = socks.pop().expect("one socket per worker");
                poll.registry()
                    .register(&mut sock, Token(LISTENER_BASE - i), Interest::READABLE)
                    .map_err(|e| StartError::Setup("a listener", e))?;
                listeners.push(Listener {
                    kind: *kind,
                    addr: *addr,
                    sock: Some(sock),
                    pending: false,
                });
            }
            let signals = if id == 0 {
                Some(signal_pipe(&poll).map_err(|e| StartError::Setup("signal handling", e))?)
            } else {
                None
            };
            workers.push(WorkerParts {
                id,
                poll,
                listeners,
                signals,
                certs: WorkerCerts::new(Arc::clone(&certs), CERT_CACHE_NAMES),
                resolver: Resolver::new(
                    resolvers.handle(waker),
                    config.dns_server.map(|server| {
                        DnsClient::new(server, config.timeouts.connect, DNS_TOKEN_BASE)
                    }),
                    Arc::clone(&dns_cache),
                ),
                log: log.clone(),
                live: Arc::clone(&live),
                tls_client: Arc::clone(&tls_client),
                timeouts: config.timeouts,
                own_addrs: own_addrs.clone(),
                via: via.clone(),
                upstream_proxy: upstream_proxy.clone(),
                access: Arc::clone(&access),
                ca: Arc::clone(&ca_shared),
                capture_limit: config.capture_bodies,
                max_buffers: MAX_BUFFERS.div_ceil(n),
                shutdown: Arc::clone(&shutdown),
            });
        }
        Ok(Proxy {
            workers,
            addrs,
            gauges: Gauges {
                shutdown: Arc::clone(&shutdown),
                certs: Arc::clone(&certs),
                log_dropped: log.drop_counter(),
            },
            shutdown,
            live,
            ca: ca_certificate,
        })
    }

    /// The switch and routes the loops read, for the admin API to change.
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live)
    }

    /// Live figures for statistics.
    pub fn gauges(&self) -> Gauges {
        self.gauges.clone()
    }

    /// The local CA's certificate as PEM and as DER.
    pub fn ca_certificate(&self) -> (String, Vec<u8>) {
        self.ca.clone()
    }

    /// The bound listeners: (config name, address).
    pub fn local_addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        self.addrs.clone()
    }

    /// How many event loops [`Proxy::run`] starts.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Runs every worker (the first on the calling thread) until a shutdown signal has been
    /// handled and in-flight work drained, or a worker's poller failed (its error is returned).
    pub fn run(self) -> io::Result<()> {
        let mut parts = self.workers.into_iter();
        let first = parts.next().expect("at least one worker");
        let mut threads = Vec::new();
        let mut result = Ok(());
        for part in parts {
            let name = format!("watchtower-w{}", part.id);
            match thread::Builder::new()
                .name(name)
                .spawn(move || Worker::new(part).run())
            {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    self.shutdown.request();
                    result = Err(e);
                    break;
                }
            }
        }
        let first_result = Worker::new(first).run();
        for handle in threads {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a worker thread panicked")));
            if result.is_ok() {
                result = outcome;
            }
        }
        first_result.and(result)
    }
}

/// `[proxy] max_connections` if set (with a warning when the open-file limit cannot hold it),
/// else what the limit allows.
fn connection_limit(configured: Option<u32>, fd_limit: u64) -> usize {
    let fit = crate::config::default_max_connections(fd_limit);
    match configured {
        Some(n) => {
            let n = n as usize;
            if n > fit {
                log::warn!(
                    "max_connections = {n} may not fit the open-file limit ({fd_limit}, about {fit} connections at two descriptors each); when descriptors run out Watchtower stops accepting for a moment and answers 503 to requests it cannot connect upstream"
                );
            }
            n
        }
        None => {
            log::debug!("max_connections: {fit} (open-file limit {fd_limit})");
            fit
        }
    }
}

/// Binds `addr` once per worker, each socket with `SO_REUSEPORT` when there are several; returns
/// the address bound (its port filled in when `addr` asked for port 0).
fn bind_listener(addr: SocketAddr, workers: usize) -> io::Result<(SocketAddr, Vec<TcpListener>)> {
    let shared = workers > 1;
    if shared {
        // A plain bind fails with "address in use" when anything listens on the address,
        // including another process's SO_REUSEPORT group, which we would otherwise join.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    let mut addr = addr;
    let mut socks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        if shared {
            sock.set_reuse_port(true)?;
        }
        sock.bind(&addr.into())?;
        sock.listen(LISTEN_BACKLOG)?;
        sock.set_nonblocking(true)?;
        if let Some(bound) = sock.local_addr()?.as_socket() {
            addr = bound; // later sockets join the port the first one got
        }
        socks.push(TcpListener::from_std(sock.into()));
    }
    Ok((addr, socks))
}

impl Worker {
    fn new(parts: WorkerParts) -> Worker {
        let registry = parts
            .poll
            .registry()
            .try_clone()
            .expect("cloning a poller's registry (a dup of its fd)");
        let ctx = Ctx {
            now: Instant::now(),
            registry,
            pool: BufPool::new(parts.max_buffers, KEEP_BUFFERS),
            timers: Timers::default(),
            live: parts.live.view(),
            certs: parts.certs,
            tls_client: parts.tls_client,
            timeouts: parts.timeouts,
            resolver: parts.resolver,
            log: parts.log,
            own_addrs: parts.own_addrs,
            via: parts.via,
            upstreams: UpstreamPool::new(POOL_TOKEN_BASE, parts.timeouts.idle),
            proxy_authorization: parts
                .upstream_proxy
                .as_ref()
                .and_then(|p| p.authorization())
                .map(String::into_boxed_str),
            upstream_proxy: parts.upstream_proxy,
            access: parts.access,
            ca: parts.ca,
            capture_limit: parts.capture_limit,
            draining: false,
            redrive: Vec::new(),
        };
        Worker {
            id: parts.id,
            poll: parts.poll,
            listeners: parts.listeners,
            sessions: Slab::with_capacity(256),
            ctx,
            signals: parts.signals,
            shutdown: parts.shutdown,
            next_generation: 1,
            accept_paused: None,
            warned_paused: None,
        }
    }

    /// Runs until shutdown has been requested and in-flight work drained. A poller failure
    /// stops every worker and is returned.
    fn run(mut self) -> io::Result<()> {
        let result = self.run_loop();
        if let Err(e) = &result {
            log::error!("worker {}: event loop failed: {e}; stopping", self.id);
            self.shutdown.request();
        }
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(s) = self.sessions.get_mut(key) {
                s.abort(CloseReason::Shutdown, &mut self.ctx);
            }
            self.remove(key);
        }
        result
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut drain_until: Option<Instant> = None;
        loop {
            let timeout = self.poll_timeout(drain_until);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.ctx.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {} // resolver answers are collected below
                    token if self.ctx.upstreams.owns(token) => self.ctx.upstreams.on_event(token),
                    token if self.ctx.resolver.owns(token) => {
                        self.ctx
                            .resolver
                            .on_event(token, &self.ctx.registry, self.ctx.now);
                    }
                    SIGNALS => {
                        if self.signalled() {
                            self.shutdown.request();
                        }
                    }
                    Token(t) if t > LISTENER_BASE - self.listeners.len() && t <= LISTENER_BASE => {
                        let i = LISTENER_BASE - t;
                        self.listeners[i].pending = true;
                    }
                    token => {
                        let (key, side) = session::split_token(token);
                        if let Some(s) = self.sessions.get_mut(key) {
                            s.on_ready(side, event);
                            if !s.drive(&mut self.ctx) {
                                self.remove(key);
                            }
                        }
                    }
                }
            }
            if drain_until.is_none() && self.shutdown.requested.load(Ordering::SeqCst) {
                drain_until = Some(self.begin_drain());
            }
            self.ctx.resolver.tick(&self.ctx.registry, self.ctx.now);
            self.ctx.upstreams.tick(self.ctx.now);
            self.resolver_answers();
            self.fire_deadlines();
            self.redrive();
            if self.accept_paused.is_some_and(|at| self.ctx.now >= at) {
                self.resume_accepting();
            }
            self.accept_all();
            if let Some(until) = drain_until
                && (self.sessions.is_empty() || self.ctx.now >= until)
            {
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self, drain_until: Option<Instant>) -> Option<Duration> {
        let busy = !self.ctx.redrive.is_empty()
            || self.ctx.resolver.has_ready()
            || (self.accept_paused.is_none() && self.listeners.iter().any(|l| l.pending));
        if busy {
            return Some(Duration::ZERO);
        }
        let wake = [
            self.ctx.timers.next_wake(),
            drain_until,
            self.ctx.resolver.next_wake(),
            self.ctx.upstreams.next_wake(),
            self.accept_paused,
        ]
        .into_iter()
        .flatten()
        .min();
        // Round up so a deadline is never polled for a moment too early and spun on.
        wake.map(|at| at.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    fn accept_all(&mut self) {
        if self.accept_paused.is_some() {
            return;
        }
        for i in 0..self.listeners.len() {
            if self.listeners[i].pending {
                self.accept(i);
            }
        }
    }

    fn accept(&mut self, i: usize) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listeners[i].sock.as_ref() else {
                self.listeners[i].pending = false;
                return;
            };
            // Reserve the slot first, so workers accepting at once cannot overshoot.
            let limit = self.shutdown.max_connections;
            if self.shutdown.admitted.fetch_add(1, Ordering::AcqRel) >= limit {
                self.shutdown.admitted.fetch_sub(1, Ordering::AcqRel);
                self.pause_accepting(
                    format_args!("max_connections ({limit}) reached"),
                    LIMIT_RETRY,
                );
                return;
            }
            let accepted = listener.accept();
            if accepted.is_err() {
                self.shutdown.admitted.fetch_sub(1, Ordering::AcqRel);
            }
            match accepted {
                Ok((sock, addr)) => self.admit(i, sock, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listeners[i].pending = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    self.pause_accepting(format_args!("out of file descriptors ({e})"), FD_RETRY);
                    return;
                }
                // ECONNABORTED and friends concern one connection only.
                Err(e) => log::debug!("accept on {}: {e}", self.listeners[i].addr),
            }
        }
    }

    /// Leaves waiting clients in the kernel's accept queue until `retry` has passed or one of
    /// this worker's connections closes.
    fn pause_accepting(&mut self, why: std::fmt::Arguments<'_>, retry: Duration) {
        let now = self.ctx.now;
        if self
            .warned_paused
            .is_none_or(|at| now.saturating_duration_since(at) >= PAUSE_WARNING_EVERY)
        {
            log::warn!(
                "not accepting new connections for now: {why}; {} open on this worker, {} in all; waiting clients stay queued",
                self.sessions.len(),
                self.shutdown.admitted.load(Ordering::Relaxed)
            );
            self.warned_paused = Some(now);
        }
        self.accept_paused = Some(now + retry);
    }

    fn resume_accepting(&mut self) {
        self.accept_paused = None;
        for l in &mut self.listeners {
            l.pending = l.sock.is_some();
        }
    }

    fn admit(&mut self, i: usize, mut sock: mio::net::TcpStream, addr: SocketAddr) {
        if let Err(e) = sock.set_nodelay(true) {
            log::debug!("set_nodelay: {e}");
        }
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.ctx.registry.register(
            &mut sock,
            session::token(key, session::Side::Client),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register a connection from {addr}: {e}");
            self.shutdown.admitted.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let kind = self.listeners[i].kind;
        self.shutdown.open[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
        entry.insert(Session::new(
            key,
            generation,
            kind,
            sock,
            addr,
            &mut self.ctx,
        ));
    }

    fn remove(&mut self, key: usize) {
        if let Some(session) = self.sessions.try_remove(key) {
            self.shutdown.open[kind_index(session.listener())].fetch_sub(1, Ordering::Relaxed);
            self.shutdown.admitted.fetch_sub(1, Ordering::AcqRel);
        }
        if self.accept_paused.is_some() {
            self.resume_accepting();
        }
    }

    fn resolver_answers(&mut self) {
        while let Some(answer) = self.ctx.resolver.try_answer(self.ctx.now) {
            let Some(s) = self.sessions.get_mut(answer.key) else {
                continue;
            };
            if s.generation() != answer.generation {
                continue;
            }
            if !s.on_resolved(answer.result, &mut self.ctx) {
                self.remove(answer.key);
            }
        }
    }

    fn fire_deadlines(&mut self) {
        let now = self.ctx.now;
        while let Some((key, generation, armed)) = self.ctx.timers.pop_due(now) {
            let Some(s) = self.sessions.get_mut(key) else {
                continue;
            };
            if s.generation() != generation {
                continue;
            }
            let mut deadline = *s.deadline_mut();
            let expired = self
                .ctx
                .timers
                .is_expired(&mut deadline, key, generation, armed, now);
            *s.deadline_mut() = deadline;
            if expired {
                log::debug!("session {key}: deadline passed in {}", s.phase_name());
                if !s.on_timeout(&mut self.ctx) {
                    self.remove(key);
                }
            }
        }
    }

    fn redrive(&mut self) {
        let pending = std::mem::take(&mut self.ctx.redrive);
        for (key, generation) in pending {
            if let Some(s) = self.sessions.get_mut(key)
                && s.generation() == generation
                && !s.drive(&mut self.ctx)
            {
                self.remove(key);
            }
        }
    }

    /// Reads the signal pipe; true if a signal arrived.
    fn signalled(&mut self) -> bool {
        let Some(signals) = self.signals.as_mut() else {
            return false;
        };
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match signals.read(&mut buf) {
                Ok(0) => return got,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return got,
            }
        }
    }

    /// Stops accepting and closes idle connections; returns the drain deadline.
    fn begin_drain(&mut self) -> Instant {
        if !self.shutdown.announced.swap(true, Ordering::SeqCst) {
            log::info!(
                "shutting down: {} connection(s) open, waiting up to {}s for them",
                self.shutdown
                    .open
                    .iter()
                    .map(|n| n.load(Ordering::Relaxed))
                    .sum::<usize>(),
                DRAIN_GRACE.as_secs()
            );
        }
        // Connections the kernel completed but we had not accepted yet would be reset when
        // the listener closes, with their requests possibly already sent: take them in first,
        // so they are answered (or closed as idle) like every other connection.
        for i in 0..self.listeners.len() {
            self.listeners[i].pending = self.listeners[i].sock.is_some();
            while self.listeners[i].pending && self.accept_paused.is_none() {
                self.accept(i);
            }
        }
        for l in &mut self.listeners {
            if let Some(mut sock) = l.sock.take() {
                let _ = self.poll.registry().deregister(&mut sock);
            }
            l.pending = false;
        }
        self.ctx.draining = true;
        self.ctx.upstreams.clear();
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(s) = self.sessions.get_mut(key)
                && !s.on_drain(&mut self.ctx)
            {
                self.remove(key);
            }
        }
        self.ctx.now + DRAIN_GRACE
    }
}

/// SIGINT and SIGTERM write a byte into a socket pair whose read end the loop polls.
fn signal_pipe(poll: &Poll) -> io::Result<UnixStream> {
    let (read, write) = StdUnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    let write2 = write.try_clone()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, write2)?;
    let mut read = UnixStream::from_std(read);
    poll.registry()
        .register(&mut read, SIGNALS, Interest::READABLE)?;
    Ok(read)
}
