//! One [`Session`] per client connection: the state machine that turns a client socket,
//! and the upstream socket it opens, into proxied exchanges and tunnels.
//!
//! A session is a [`Conn`] (the sockets, their readiness, the client's input buffer, the
//! log record of the exchange in flight) plus a [`Phase`] naming what it is doing or
//! waiting for. Each phase lives in its own file and answers one verb, `step`, with a
//! [`Step`]: go again, wait for an event, move to another phase, or close. The event loop
//! feeds readiness into the session and calls [`Session::drive`]; timeouts and resolver
//! answers arrive through [`Session::on_timeout`] and [`Session::on_resolved`].
//!
//! Phase flow:
//! `ReadHead` -> (`Resolve` ->) `Connect` -> `Exchange` -> `ReadHead` (keep-alive) or
//! `Linger` (close); CONNECT and `101 Switching Protocols` lead to `Tunnel`; any error the
//! client must hear about goes through `Answer`.

mod answer;
mod connect;
mod exchange;
mod head;
mod intercept;
mod tunnel;
mod upstreams;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::apilog::{ApiRecord, Kind, Text};
use crate::context::Ctx;
use crate::http::Method;
use crate::io::Transport;
use crate::relay::{Buf, Ready};
use crate::resolve::ResolveError;
use crate::route::ListenerKind;
use crate::timer::Deadline;

pub(crate) use answer::Answer;
pub(crate) use exchange::Exchange;
pub(crate) use head::{ReadHead, upstream_name};
pub use intercept::fuzz_client_hello;
pub(crate) use intercept::{Handshake, Intercept, Pin};
pub(crate) use tunnel::Tunnel;
pub(crate) use upstreams::UpstreamPool;

/// Bound on phase steps per [`Session::drive`] call, so one busy connection cannot starve
/// the others; a session that hits it is driven again after the next poll.
const MAX_STEPS_PER_DRIVE: usize = 64;

/// Which of a session's two sockets an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client = 0,
    Upstream = 1,
}

/// The poll token of a session's socket: slab key and side in one `usize`.
pub fn token(key: usize, side: Side) -> Token {
    Token((key << 1) | side as usize)
}

/// Inverse of [`token`].
pub fn split_token(t: Token) -> (usize, Side) {
    let side = if t.0 & 1 == 0 {
        Side::Client
    } else {
        Side::Upstream
    };
    (t.0 >> 1, side)
}

/// Why a session ended; the text goes into the log record of an unfinished exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Everything was said; a normal end.
    Finished,
    /// The client closed its side before the exchange was over.
    ClientClosed,
    /// The client socket failed.
    ClientFailed(io::ErrorKind),
    /// The upstream closed before its response was complete.
    UpstreamClosed,
    /// The upstream socket failed after the response had started.
    UpstreamFailed(io::ErrorKind),
    /// The chunked framing of a body was invalid after the response had started.
    BadFraming,
    /// The connection or tunnel sat idle past the `idle` timeout.
    Idle,
    /// Watchtower is shutting down.
    Shutdown,
    /// No buffer or upstream socket could be had.
    Overloaded,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Finished => f.write_str("finished"),
            CloseReason::ClientClosed => f.write_str("client closed the connection"),
            CloseReason::ClientFailed(k) => write!(f, "client connection failed: {k}"),
            CloseReason::UpstreamClosed => {
                f.write_str("upstream closed the connection before the response was complete")
            }
            CloseReason::UpstreamFailed(k) => write!(f, "upstream connection failed: {k}"),
            CloseReason::BadFraming => f.write_str("invalid chunked framing"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::Shutdown => f.write_str("Watchtower is shutting down"),
            CloseReason::Overloaded => f.write_str("out of buffers"),
        }
    }
}

/// What a phase's `step` asks the session to do next.
///
/// `Next` carries a whole phase (an `Exchange` is a few hundred bytes) by value: it is moved
/// once into the session's phase slot, and boxing it would cost an allocation per transition,
/// i.e. several per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Step {
    /// Something moved: run the phase again.
    Continue,
    /// Nothing more can happen until an event, an answer or a deadline.
    Wait,
    /// Enter another phase and run it.
    Next(Phase),
    /// The session is over.
    Close(CloseReason),
}

/// What the session is doing or waiting for.
pub(crate) enum Phase {
    /// Reading a request head from the client (or idling between requests).
    ReadHead(ReadHead),
    /// Waiting for the resolver to name the upstream's addresses.
    Resolve(Exchange),
    /// Waiting for the upstream TCP connection.
    Connect(Exchange),
    /// Relaying one HTTP request and its response.
    Exchange(Exchange),
    /// Copying bytes both ways (CONNECT, or after `101 Switching Protocols`).
    Tunnel(Tunnel),
    /// Answering an intercepted CONNECT and sniffing what the client speaks.
    Intercept(Intercept),
    /// Reading a ClientHello and choosing the certificate.
    Handshake(Handshake),
    /// Writing a response Watchtower made itself.
    Answer(Answer),
    /// Our side is shut; reading and discarding what the client still sends.
    Linger,
}

impl Phase {
    /// The spelling used in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::ReadHead(_) => "ReadHead",
            Phase::Resolve(_) => "Resolve",
            Phase::Connect(_) => "Connect",
            Phase::Exchange(_) => "Exchange",
            Phase::Tunnel(_) => "Tunnel",
            Phase::Intercept(_) => "Intercept",
            Phase::Handshake(_) => "Handshake",
            Phase::Answer(_) => "Answer",
            Phase::Linger => "Linger",
        }
    }
}

/// The upstream socket of a session, kept across requests when the response allowed it.
pub(crate) struct Upstream {
    pub sock: Transport,
    pub ready: Ready,
    /// `host:port` as dialled; a later request for the same name reuses this connection.
    pub name: Text,
    /// True once the TCP handshake completed.
    pub connected: bool,
    /// Between requests: the last response was read to its end and allowed keep-alive, so the
    /// connection can carry another request (here or, parked, on another session).
    pub idle: bool,
}

/// The log record of the exchange or tunnel in flight, and when it began.
pub(crate) struct Rec {
    pub api: ApiRecord,
    pub started: Instant,
}

/// A session's sockets and the state every phase shares.
pub(crate) struct Conn {
    pub key: usize,
    pub generation: u64,
    pub listener: ListenerKind,
    pub client: Transport,
    pub client_addr: SocketAddr,
    pub client_ready: Ready,
    /// Bytes read from the client and not consumed yet: a head in progress, body bytes, or
    /// pipelined requests. `None` while idle, so an idle connection holds no buffer.
    pub cin: Option<Buf>,
    pub upstream: Option<Upstream>,
    /// The exchange or tunnel being logged; sent to the log worker when it ends.
    pub rec: Option<Rec>,
    /// Method of the request in flight (a HEAD gets canned answers without a body).
    pub method: Method,
    /// Set by an intercepted CONNECT: the route every request on this connection goes to.
    pub pin: Option<Rc<Pin>>,
    pub deadline: Deadline,
    /// Requests read on this connection so far.
    pub requests: u32,
}

impl Conn {
    /// Starts the log record of a new exchange or tunnel.
    pub fn begin_record(
        &mut self,
        ctx: &Ctx,
        kind: Kind,
        method: &[u8],
        host: &[u8],
        path: Option<&[u8]>,
    ) {
        self.rec = Some(Rec {
            api: ApiRecord {
                ts: SystemTime::now(),
                client: self.client_addr,
                method: Text::from_bytes_lossy(method),
                host: Text::from_bytes_lossy(host),
                path: path.map(Text::from_bytes_lossy),
                status: None,
                route: None,
                upstream: None,
                kind,
                duration: Default::default(),
                bytes_in: 0,
                bytes_out: 0,
                error: None,
                capture: None,
            },
            started: ctx.now,
        });
    }

    /// The record in flight, if any.
    pub fn rec_mut(&mut self) -> Option<&mut ApiRecord> {
        self.rec.as_mut().map(|r| &mut r.api)
    }

    /// Sends the record in flight to the log worker; `error` is kept only if none was set.
    pub fn finish_record(&mut self, ctx: &Ctx, error: Option<&dyn fmt::Display>) {
        if let Some(mut rec) = self.rec.take() {
            rec.api.duration = ctx.now.saturating_duration_since(rec.started);
            if rec.api.error.is_none()
                && let Some(e) = error
            {
                rec.api.error = Some(Text::from_fmt(format_args!("{e}")));
            }
            ctx.log.send(rec.api);
        }
    }

    /// Counts bytes received from the client for the record in flight.
    pub fn count_in(&mut self, n: usize) {
        if let Some(r) = self.rec_mut() {
            r.bytes_in += n as u64;
        }
    }

    /// Counts bytes sent to the client for the record in flight.
    pub fn count_out(&mut self, n: usize) {
        if let Some(r) = self.rec_mut() {
            r.bytes_out += n as u64;
        }
    }

    /// Sends TLS records queued on either side when its socket can take them.
    fn flush_transports(&mut self) -> Result<(), CloseReason> {
        self.client
            .flush(&mut self.client_ready)
            .map_err(|e| CloseReason::ClientFailed(e.kind()))?;
        if let Some(up) = self.upstream.as_mut() {
            up.sock
                .flush(&mut up.ready)
                .map_err(|e| CloseReason::UpstreamFailed(e.kind()))?;
        }
        Ok(())
    }

    /// Closes the upstream connection (dropping the socket deregisters it).
    pub fn drop_upstream(&mut self) {
        self.upstream = None;
    }

    /// Lets go of the upstream connection: an idle one is parked for reuse, any other closed.
    pub fn release_upstream(&mut self, ctx: &mut Ctx) {
        if let Some(up) = self.upstream.take()
            && up.idle
            && !ctx.draining
        {
            ctx.upstreams.park(up, &ctx.registry, ctx.now);
        }
    }

    /// Sets the session deadline.
    pub fn set_deadline(&mut self, ctx: &mut Ctx, at: Option<Instant>) {
        ctx.timers
            .set(&mut self.deadline, self.key, self.generation, at);
    }

    /// Registers a fresh upstream socket under this session's upstream token.
    pub fn register_upstream(&self, ctx: &Ctx, sock: &mut TcpStream) -> io::Result<()> {
        ctx.registry.register(
            sock,
            token(self.key, Side::Upstream),
            Interest::READABLE | Interest::WRITABLE,
        )
    }
}

/// One client connection and where it stands.
pub struct Session {
    conn: Conn,
    phase: Phase,
}

impl Session {
    /// A session for a freshly accepted client socket (already registered by the loop).
    pub fn new(
        key: usize,
        generation: u64,
        listener: ListenerKind,
        client: TcpStream,
        client_addr: SocketAddr,
        ctx: &mut Ctx,
    ) -> Session {
        let mut conn = Conn {
            key,
            generation,
            listener,
            client: Transport::plain(client),
            client_addr,
            client_ready: Ready::default(),
            cin: None,
            upstream: None,
            rec: None,
            method: Method::Other,
            pin: None,
            deadline: Deadline::default(),
            requests: 0,
        };
        let phase = if listener == ListenerKind::ReverseHttps {
            let h = Handshake::new(ctx);
            let at = h.deadline(ctx);
            conn.set_deadline(ctx, Some(at));
            Phase::Handshake(h)
        } else {
            ReadHead::fresh(&mut conn, ctx)
        };
        Session { conn, phase }
    }

    /// The listener this client connected to.
    pub fn listener(&self) -> ListenerKind {
        self.conn.listener
    }

    /// The generation stamped on this session (slab keys are reused; generations are not).
    pub fn generation(&self) -> u64 {
        self.conn.generation
    }

    /// The deadline, for the loop's timer bookkeeping.
    pub fn deadline_mut(&mut self) -> &mut Deadline {
        &mut self.conn.deadline
    }

    /// The current phase's name, for logs.
    pub fn phase_name(&self) -> &'static str {
        self.phase.name()
    }

    /// Records what poll reported for one side. Errors and hang-ups count as ready, so the
    /// next read or write reports them.
    pub fn on_ready(&mut self, side: Side, event: &mio::event::Event) {
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        let ready = match side {
            Side::Client => Some(&mut self.conn.client_ready),
            Side::Upstream => self.conn.upstream.as_mut().map(|u| &mut u.ready),
        };
        if let Some(r) = ready {
            r.readable |= readable;
            r.writable |= writable;
            r.read_closed |= event.is_read_closed() || event.is_error();
        }
    }

    /// Makes as much progress as readiness allows. Returns false when the session is over
    /// (its record logged, its buffers handed back); the loop then removes it.
    pub fn drive(&mut self, ctx: &mut Ctx) -> bool {
        for _ in 0..MAX_STEPS_PER_DRIVE {
            let conn = &mut self.conn;
            if let Err(reason) = conn.flush_transports() {
                self.close(reason, ctx);
                return false;
            }
            let step = match &mut self.phase {
                Phase::ReadHead(r) => r.step(conn, ctx),
                Phase::Resolve(_) => Step::Wait,
                Phase::Connect(x) => connect::step(x, conn, ctx),
                Phase::Exchange(x) => x.step(conn, ctx),
                Phase::Tunnel(t) => t.step(conn, ctx),
                Phase::Intercept(i) => i.step(conn, ctx),
                Phase::Handshake(h) => h.step(conn, ctx),
                Phase::Answer(a) => a.step(conn, ctx),
                Phase::Linger => answer::linger(conn),
            };
            match step {
                Step::Continue => {}
                Step::Wait => {
                    self.arm(ctx);
                    return true;
                }
                Step::Next(next) => self.enter(next, ctx),
                Step::Close(reason) => {
                    self.close(reason, ctx);
                    return false;
                }
            }
        }
        ctx.redrive.push((self.conn.key, self.conn.generation));
        self.arm(ctx);
        true
    }

    /// The resolver answered for this session.
    pub fn on_resolved(
        &mut self,
        result: Result<Vec<SocketAddr>, ResolveError>,
        ctx: &mut Ctx,
    ) -> bool {
        let phase = std::mem::replace(&mut self.phase, Phase::Linger);
        let Phase::Resolve(x) = phase else {
            self.phase = phase; // a stale answer; nothing waits for it
            return true;
        };
        let step = connect::resolved(x, result, &mut self.conn, ctx);
        self.apply(step, ctx)
    }

    /// The session's deadline passed.
    pub fn on_timeout(&mut self, ctx: &mut Ctx) -> bool {
        let conn = &mut self.conn;
        let step = match &mut self.phase {
            Phase::ReadHead(r) => r.timeout(conn, ctx),
            Phase::Resolve(_) | Phase::Connect(_) => connect::timeout(conn, ctx),
            Phase::Exchange(x) => x.timeout(conn, ctx),
            Phase::Tunnel(_) | Phase::Answer(_) | Phase::Intercept(_) => {
                Step::Close(CloseReason::Idle)
            }
            Phase::Handshake(_) => {
                intercept::log_tls_failure(conn, ctx, &"no ClientHello in time");
                Step::Close(CloseReason::Idle)
            }
            Phase::Linger => Step::Close(CloseReason::Finished),
        };
        self.apply(step, ctx)
    }

    /// Shutdown began: a connection idling between requests closes now; others finish
    /// their exchange and then close (see `Ctx::draining`).
    pub fn on_drain(&mut self, ctx: &mut Ctx) -> bool {
        if let Phase::ReadHead(r) = &self.phase
            && !r.has_started()
        {
            // A request may be waiting in the socket that no readiness event has announced
            // yet (it arrived during this very iteration): read before calling the connection
            // idle, so a request the client finished sending is answered, not dropped.
            self.conn.client_ready.readable = true;
            if !self.drive(ctx) {
                return false;
            }
            if let Phase::ReadHead(r) = &self.phase
                && !r.has_started()
            {
                self.close(CloseReason::Shutdown, ctx);
                return false;
            }
        }
        true
    }

    /// Ends the session at once (shutdown deadline passed).
    pub fn abort(&mut self, reason: CloseReason, ctx: &mut Ctx) {
        self.close(reason, ctx);
    }

    fn apply(&mut self, step: Step, ctx: &mut Ctx) -> bool {
        match step {
            Step::Continue => self.drive(ctx),
            Step::Wait => {
                self.arm(ctx);
                true
            }
            Step::Next(next) => {
                self.enter(next, ctx);
                self.drive(ctx)
            }
            Step::Close(reason) => {
                self.close(reason, ctx);
                false
            }
        }
    }

    fn enter(&mut self, next: Phase, ctx: &mut Ctx) {
        log::trace!(
            "session {} {} -> {}",
            self.conn.key,
            self.phase.name(),
            next.name()
        );
        let old = std::mem::replace(&mut self.phase, next);
        release_phase(old, ctx);
        if let Phase::Linger = self.phase {
            answer::enter_linger(&mut self.conn, ctx);
        }
        self.arm(ctx);
    }

    /// Sets the deadline the current phase wants.
    fn arm(&mut self, ctx: &mut Ctx) {
        let at = match &self.phase {
            Phase::ReadHead(r) => Some(r.deadline(ctx)),
            Phase::Resolve(x) | Phase::Connect(x) => Some(x.dial_deadline(ctx)),
            Phase::Exchange(x) => Some(x.deadline(ctx)),
            Phase::Tunnel(t) => Some(t.deadline(ctx)),
            Phase::Intercept(i) => Some(i.deadline(ctx)),
            Phase::Handshake(h) => Some(h.deadline(ctx)),
            Phase::Answer(a) => Some(a.deadline(ctx)),
            Phase::Linger => self.conn.deadline.at(),
        };
        self.conn.set_deadline(ctx, at);
    }

    fn close(&mut self, reason: CloseReason, ctx: &mut Ctx) {
        log::debug!(
            "session {} ({}) closed in {}: {reason}",
            self.conn.key,
            self.conn.client_addr,
            self.phase.name()
        );
        if let CloseReason::ClientFailed(_) = reason
            && let Some(e) = self.conn.client.tls_error().cloned()
        {
            intercept::log_tls_failure(&mut self.conn, ctx, &e);
        }
        let error: Option<&dyn fmt::Display> = match reason {
            CloseReason::Finished => None,
            _ => Some(&reason),
        };
        self.conn.finish_record(ctx, error);
        let old = std::mem::replace(&mut self.phase, Phase::Linger);
        release_phase(old, ctx);
        ctx.pool.release(&mut self.conn.cin);
        self.conn.release_upstream(ctx);
        self.conn.set_deadline(ctx, None);
    }
}

/// Hands a finished phase's buffers back to the pool.
fn release_phase(phase: Phase, ctx: &mut Ctx) {
    match phase {
        Phase::Resolve(x) | Phase::Connect(x) | Phase::Exchange(x) => x.release(ctx),
        Phase::Tunnel(t) => t.release(ctx),
        Phase::ReadHead(_)
        | Phase::Answer(_)
        | Phase::Linger
        | Phase::Intercept(_)
        | Phase::Handshake(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for key in [0usize, 1, 7, 1 << 20] {
            for side in [Side::Client, Side::Upstream] {
                assert_eq!(split_token(token(key, side)), (key, side));
            }
        }
    }

    /// Most of a session is its inline log record (about 700 bytes, kept inline so a request
    /// allocates nothing) and the largest phase, `Exchange`. Raise the bound on purpose.
    #[test]
    fn session_size_is_a_visible_decision() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 1480, "Session grew to {size} bytes");
    }
}
