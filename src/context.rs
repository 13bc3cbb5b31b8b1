//! The services every session phase is handed (`&mut Ctx`): the clock, the poller's
//! registry, buffers, deadlines, routes, the resolver and the log. Each event loop (worker)
//! owns one `Ctx`; what the workers share (routes, the certificate store, the log and resolver
//! queues) sits behind `Arc`s and channels, and only a certificate-cache miss takes a lock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Registry;

use crate::access::Access;
use crate::apilog::LogSender;
use crate::config::Timeouts;
use crate::http::Via;
use crate::live::LiveView;
use crate::relay::BufPool;
use crate::resolve::Resolver;
use crate::session::UpstreamPool;
use crate::timer::Timers;
use crate::tls::WorkerCerts;
use crate::upstream_proxy::UpstreamProxy;

/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// so our final response is not destroyed by a TCP reset (the "lingering close" of RFC 9112
/// §9.6).
pub const LINGER: Duration = Duration::from_secs(2);

/// Shared services for the phases.
pub struct Ctx {
    /// The loop's clock, read once per poll iteration.
    pub now: Instant,
    /// For registering upstream sockets.
    pub registry: Registry,
    pub pool: BufPool,
    pub timers: Timers,
    /// The switch and the route table, as they are now (they change at run time).
    pub live: LiveView,
    /// Minted leaf certificates, one `ServerConfig` per name.
    pub certs: WorkerCerts,
    /// How pass-through TLS connections verify real servers.
    pub tls_client: Arc<rustls::ClientConfig>,
    pub timeouts: Timeouts,
    pub resolver: Resolver,
    pub log: LogSender,
    /// Watchtower's own listening addresses: a pass-through request to one of them would loop.
    pub own_addrs: Vec<SocketAddr>,
    /// The local CA's certificate, PEM and DER, served on the forward port for devices.
    pub ca: Arc<(String, Vec<u8>)>,
    /// `[log] capture_bodies`: bytes of each body kept with the record; 0 = no capture.
    pub capture_limit: usize,
    /// `[access]`: who may use the listeners when they reach beyond loopback.
    pub access: Arc<Access>,
    /// `[upstream] proxy`, for pass-through traffic.
    pub upstream_proxy: Option<Arc<UpstreamProxy>>,
    /// Its `Proxy-Authorization` value, when it has credentials.
    pub proxy_authorization: Option<Box<str>>,
    /// Idle upstream connections kept for reuse.
    pub(crate) upstreams: UpstreamPool,
    /// This run's Via entry, added to every forwarded head; a request already carrying it loops.
    pub via: Via,
    /// Set once shutdown began: finished exchanges close instead of keeping alive.
    pub draining: bool,
    /// Sessions that stopped early with work left (bounded drain) and must be driven again.
    pub redrive: Vec<(usize, u64)>,
}

impl Ctx {
    /// True when `addr` is one of Watchtower's own listeners (also reached through another
    /// loopback or the wildcard address on the same port).
    pub fn is_own_listener(&self, addr: SocketAddr) -> bool {
        self.own_addrs.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip()
                    || own.ip().is_unspecified()
                    || (own.ip().is_loopback() && addr.ip().is_loopback()))
        })
    }
}
