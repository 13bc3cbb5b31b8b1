//! The event loop: one `mio::Poll`, the listeners, the session slab, timers, resolver
//! answers and shutdown.
//!
//! Fixed tokens sit at the top of the token space (waker, signal pipe, listeners); every
//! other token is a session's slab key plus a bit for the side (`session::token`). Each
//! iteration polls, reads the clock once into `Ctx::now`, dispatches readiness to sessions,
//! fires due deadlines, re-drives sessions that stopped at their step bound, and resumes
//! accepting if it had to stop (session cap, out of file descriptors).
//!
//! Shutdown (SIGINT/SIGTERM, delivered through a self-pipe by `signal-hook`): listeners are
//! closed so nothing new is accepted, idle connections close at once, in-flight exchanges
//! finish (their responses say `Connection: close`) for up to [`DRAIN_GRACE`], then
//! whatever remains is cut and logged, and `run` returns so `main` can flush the log.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::apilog::LogSender;
use crate::config::Config;
use crate::context::Ctx;
use crate::relay::BufPool;
use crate::resolve::Resolver;
use crate::route::{ListenerKind, RouteTable};
use crate::session::{self, CloseReason, Session};
use crate::timer::Timers;
use crate::tls::{self, CertStore, LocalCa};

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 16;

/// How long in-flight exchanges may run on after a shutdown signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Most client connections served at once; accepting pauses above it.
pub const MAX_SESSIONS: usize = 16_384;
/// Most pooled buffers lent at once (64 KiB each: 1 GiB in the worst case).
pub const MAX_BUFFERS: usize = 16_384;
/// Spare buffers kept for reuse after a burst.
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
    name: &'static str,
    addr: SocketAddr,
    sock: Option<TcpListener>,
    /// More connections may be waiting (we stopped before `WouldBlock`).
    pending: bool,
}

/// A bound, ready-to-run proxy.
pub struct Proxy {
    poll: Poll,
    listeners: Vec<Listener>,
    sessions: Slab<Session>,
    ctx: Ctx,
    /// Read end of the signal self-pipe.
    signals: UnixStream,
    /// Keeps the waker alive (the resolver threads hold clones).
    _waker: Arc<Waker>,
    next_generation: u64,
    /// Accepting stopped at the session cap or fd limit; retry after closes.
    accept_paused: bool,
}

impl Proxy {
    /// Binds every configured listener and sets up the loop. Nothing is accepted until
    /// [`Proxy::run`].
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
        let certs = CertStore::new(ca, CERT_CACHE_NAMES).map_err(StartError::Certs)?;
        let poll = Poll::new().map_err(|e| StartError::Setup("the poller", e))?;
        let mut listeners = Vec::new();
        for (name, addr) in config.listeners() {
            let kind = match name {
                "reverse_http" => ListenerKind::ReverseHttp,
                "reverse_https" => ListenerKind::ReverseHttps,
                _ => ListenerKind::Forward,
            };
            let mut sock = TcpListener::bind(addr).map_err(|source| StartError::Bind {
                name,
                addr,
                source,
            })?;
            let addr = sock.local_addr().unwrap_or(addr);
            poll.registry()
                .register(
                    &mut sock,
                    Token(LISTENER_BASE - listeners.len()),
                    Interest::READABLE,
                )
                .map_err(|e| StartError::Setup("a listener", e))?;
            listeners.push(Listener {
                kind,
                name,
                addr,
                sock: Some(sock),
                pending: false,
            });
        }
        if let Some(dns) = config.dns_server {
            log::warn!(
                "dns_server = {dns} is not used yet (issue 6); real servers are resolved by the system resolver"
            );
        }
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| StartError::Setup("the waker", e))?,
        );
        let resolver = Resolver::start(Arc::clone(&waker))
            .map_err(|e| StartError::Setup("resolver threads", e))?;
        let signals = signal_pipe(&poll).map_err(|e| StartError::Setup("signal handling", e))?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(|e| StartError::Setup("the poller", e))?;
        if let Err(e) = crate::sys::raise_open_file_limit() {
            log::warn!("could not raise the open-file limit: {e}");
        }
        let ctx = Ctx {
            now: Instant::now(),
            registry,
            pool: BufPool::new(MAX_BUFFERS, KEEP_BUFFERS),
            timers: Timers::default(),
            routes: Rc::new(RouteTable::new(&config.routes)),
            certs,
            tls_client: tls::client_config(&extra_roots),
            local_routing: config.local_routing,
            timeouts: config.timeouts,
            resolver,
            log,
            own_addrs: listeners.iter().map(|l| l.addr).collect(),
            draining: false,
            redrive: Vec::new(),
        };
        Ok(Proxy {
            poll,
            listeners,
            sessions: Slab::with_capacity(256),
            ctx,
            signals,
            _waker: waker,
            next_generation: 1,
            accept_paused: false,
        })
    }

    /// The bound listeners: (config name, address).
    pub fn local_addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        self.listeners.iter().map(|l| (l.name, l.addr)).collect()
    }

    /// Runs until a shutdown signal has been handled and in-flight work drained.
    pub fn run(mut self) -> io::Result<()> {
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
                    WAKER => self.resolver_answers(),
                    SIGNALS => {
                        if self.signalled() && drain_until.is_none() {
                            drain_until = Some(self.begin_drain());
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
            self.fire_deadlines();
            self.redrive();
            self.accept_all();
            if let Some(until) = drain_until
                && (self.sessions.is_empty() || self.ctx.now >= until)
            {
                break;
            }
        }
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(s) = self.sessions.get_mut(key) {
                s.abort(CloseReason::Shutdown, &mut self.ctx);
            }
            self.sessions.remove(key);
        }
        Ok(())
    }

    fn poll_timeout(&self, drain_until: Option<Instant>) -> Option<Duration> {
        let busy = !self.ctx.redrive.is_empty()
            || (!self.accept_paused && self.listeners.iter().any(|l| l.pending));
        if busy {
            return Some(Duration::ZERO);
        }
        let wake = match (self.ctx.timers.next_wake(), drain_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Round up so a deadline is never polled for a moment too early and spun on.
        wake.map(|at| at.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    fn accept_all(&mut self) {
        if self.accept_paused {
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
            if self.sessions.len() >= MAX_SESSIONS {
                self.pause_accepting("session limit reached");
                return;
            }
            let Some(listener) = self.listeners[i].sock.as_ref() else {
                self.listeners[i].pending = false;
                return;
            };
            match listener.accept() {
                Ok((sock, addr)) => self.admit(i, sock, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listeners[i].pending = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    self.pause_accepting("out of file descriptors");
                    return;
                }
                // ECONNABORTED and friends concern one connection only.
                Err(e) => log::debug!("accept on {}: {e}", self.listeners[i].addr),
            }
        }
    }

    fn pause_accepting(&mut self, why: &str) {
        if !self.accept_paused {
            log::warn!(
                "not accepting new connections for now: {why} ({} open)",
                self.sessions.len()
            );
        }
        self.accept_paused = true;
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
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let kind = self.listeners[i].kind;
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
        self.sessions.remove(key);
        if self.accept_paused {
            self.accept_paused = false;
            for l in &mut self.listeners {
                l.pending = l.sock.is_some();
            }
        }
    }

    fn resolver_answers(&mut self) {
        while let Some(answer) = self.ctx.resolver.try_answer() {
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
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match self.signals.read(&mut buf) {
                Ok(0) => return got,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return got,
            }
        }
    }

    /// Stops accepting and closes idle connections; returns the drain deadline.
    fn begin_drain(&mut self) -> Instant {
        log::info!(
            "shutting down: {} connection(s) open, waiting up to {}s for them",
            self.sessions.len(),
            DRAIN_GRACE.as_secs()
        );
        for l in &mut self.listeners {
            if let Some(mut sock) = l.sock.take() {
                let _ = self.poll.registry().deregister(&mut sock);
            }
            l.pending = false;
        }
        self.ctx.draining = true;
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(s) = self.sessions.get_mut(key)
                && !s.on_drain(&mut self.ctx)
            {
                self.sessions.remove(key);
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
