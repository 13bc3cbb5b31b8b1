//! `Intercept` and `Handshake`: Watchtower terminating TLS itself.
//!
//! A CONNECT to a routed host (local routing on) is not tunnelled: Watchtower answers
//! `200 Connection Established` and looks at the first byte the client sends (`Intercept`).
//! A TLS handshake record (0x16) starts `Handshake`; anything else is plain HTTP sent through
//! the tunnel, served as is. Either way the session is then *pinned* to the route: every
//! request inside goes to its target, logged as `intercepted`.
//!
//! `Handshake` reads the ClientHello with rustls' `Acceptor` (bytes already buffered first),
//! picks the certificate name — the SNI, else the CONNECT host, else `localhost` (what a
//! browser opening `https://127.0.0.1:8443/` expects) — takes the matching `ServerConfig`
//! from the `CertStore` (minted on first use, cached after), and turns the client transport
//! into a TLS one. The rest of the handshake runs inside the transport while `ReadHead`
//! reads, so heads, bodies, pipelining and upgrades work over TLS exactly as over TCP. The
//! reverse HTTPS listener starts every connection here.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use rustls::server::Acceptor;

use crate::apilog::{Kind, Text};
use crate::context::Ctx;
use crate::relay::IoOutcome;
use crate::relay::copy::{read_into, write_from};

use super::head::ReadHead;
use super::{CloseReason, Conn, Phase, Step};

/// The reply to an intercepted CONNECT (RFC 9110 §9.3.6).
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";

/// First byte of a TLS handshake record (RFC 8446 §5.1, ContentType handshake).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Where an intercepted session's requests go, fixed by its CONNECT.
#[derive(Debug)]
pub(crate) struct Pin {
    /// The CONNECT target as requested (`host:port`), for the log.
    pub authority: Text,
    /// The CONNECT host, naming the certificate when the client sends no SNI.
    pub host: Box<str>,
    pub route_id: Text,
    pub target_host: Box<str>,
    pub target_port: u16,
}

/// Answering an intercepted CONNECT, then finding out what the client speaks.
pub(crate) struct Intercept {
    greeting: &'static [u8],
    since: Instant,
}

impl Intercept {
    pub fn new(ctx: &Ctx) -> Intercept {
        Intercept {
            greeting: ESTABLISHED,
            since: ctx.now,
        }
    }

    /// The client must start talking within `request_header`.
    pub fn deadline(&self, ctx: &Ctx) -> Instant {
        self.since + ctx.timeouts.request_header
    }

    pub(super) fn step(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        if !self.greeting.is_empty() {
            return match write_from(&mut conn.client, &mut conn.client_ready, self.greeting) {
                IoOutcome::Done(n) => {
                    self.greeting = &self.greeting[n..];
                    Step::Continue
                }
                IoOutcome::Failed(k) => Step::Close(CloseReason::ClientFailed(k)),
                IoOutcome::Blocked | IoOutcome::Eof => Step::Wait,
            };
        }
        let cin = match conn.cin {
            Some(ref mut b) => b,
            None => match ctx.pool.get() {
                Some(b) => conn.cin.insert(b),
                None => return Step::Close(CloseReason::Overloaded),
            },
        };
        if let Some(&first) = cin.filled().first() {
            return if first == TLS_HANDSHAKE_RECORD {
                Step::Next(Phase::Handshake(Handshake::new(ctx)))
            } else {
                // Plain HTTP through the tunnel (clients that tunnel everything do this).
                Step::Next(ReadHead::next_request(conn, ctx))
            };
        }
        match read_into(&mut conn.client, &mut conn.client_ready, cin) {
            IoOutcome::Done(_) => Step::Continue,
            IoOutcome::Blocked => Step::Wait,
            IoOutcome::Eof => Step::Close(CloseReason::Finished),
            IoOutcome::Failed(k) => Step::Close(CloseReason::ClientFailed(k)),
        }
    }
}

/// Reading a ClientHello and choosing the certificate.
pub(crate) struct Handshake {
    acceptor: Box<Acceptor>,
    since: Instant,
}

impl Handshake {
    pub fn new(ctx: &Ctx) -> Handshake {
        Handshake {
            acceptor: Box::default(),
            since: ctx.now,
        }
    }

    /// The ClientHello must arrive within `request_header`.
    pub fn deadline(&self, ctx: &Ctx) -> Instant {
        self.since + ctx.timeouts.request_header
    }

    pub(super) fn step(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        // Bytes read while sniffing (or pipelined behind the CONNECT) go in first.
        if let Some(cin) = conn.cin.as_mut().filter(|b| !b.is_empty()) {
            let mut pending = cin.filled();
            match self.acceptor.read_tls(&mut pending) {
                Ok(n) => cin.consume(n),
                Err(e) => return handshake_failed(conn, ctx, format_args!("{e}")),
            }
        } else {
            ctx.pool.release(&mut conn.cin);
            if !conn.client_ready.readable {
                return self.accept(conn, ctx, false);
            }
            let mut sock = conn.client.socket();
            match self.acceptor.read_tls(&mut sock) {
                Ok(0) => return Step::Close(CloseReason::ClientClosed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.client_ready.readable = false;
                    return self.accept(conn, ctx, false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Step::Continue,
                Err(e) => return Step::Close(CloseReason::ClientFailed(e.kind())),
            }
        }
        self.accept(conn, ctx, true)
    }

    /// Tries to complete the ClientHello with what was fed so far.
    fn accept(&mut self, conn: &mut Conn, ctx: &mut Ctx, fed: bool) -> Step {
        let accepted = match self.acceptor.accept() {
            Ok(Some(accepted)) => accepted,
            Ok(None) if fed => return Step::Continue,
            Ok(None) => return Step::Wait,
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut conn.client.socket());
                return handshake_failed(conn, ctx, format_args!("{e}"));
            }
        };
        let hello = accepted.client_hello();
        let pin = conn.pin.clone();
        let name = hello
            .server_name()
            .or(pin.as_deref().map(|p| &*p.host))
            .unwrap_or("localhost");
        let config = match ctx.certs.config_for(name) {
            Ok((config, minted)) => {
                if minted {
                    log::info!("minted a certificate for {name}");
                }
                config
            }
            Err(e) => return handshake_failed(conn, ctx, format_args!("{e}")),
        };
        match accepted.into_connection(config) {
            Ok(server) => {
                conn.client.start_tls(server);
                Step::Next(ReadHead::next_request(conn, ctx))
            }
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut conn.client.socket());
                handshake_failed(conn, ctx, format_args!("{e}"))
            }
        }
    }
}

/// Logs a failed handshake (one line, with the reason) and ends the session.
fn handshake_failed(conn: &mut Conn, ctx: &mut Ctx, why: std::fmt::Arguments<'_>) -> Step {
    log_tls_failure(conn, ctx, &why);
    Step::Close(CloseReason::ClientFailed(io::ErrorKind::InvalidData))
}

/// Writes the log line of a client-side TLS failure: `intercepted` for a CONNECT, `http` for
/// the reverse HTTPS port.
pub(super) fn log_tls_failure(conn: &mut Conn, ctx: &mut Ctx, why: &dyn std::fmt::Display) {
    let pin: Option<Rc<Pin>> = conn.pin.clone();
    if conn.rec.is_none() {
        match pin.as_deref() {
            Some(p) => {
                conn.begin_record(
                    ctx,
                    Kind::Intercepted,
                    b"CONNECT",
                    p.authority.as_str().as_bytes(),
                    None,
                );
                if let Some(rec) = conn.rec_mut() {
                    rec.route = Some(p.route_id.clone());
                }
            }
            None => conn.begin_record(ctx, Kind::Http, b"", b"", None),
        }
    }
    let what = if conn.client.is_handshaking() || conn.client.tls_error().is_none() {
        "TLS handshake failed"
    } else {
        "TLS error"
    };
    let error = Text::from_fmt(format_args!("{what}: {why}"));
    log::debug!("session {}: {error}", conn.key);
    if let Some(rec) = conn.rec_mut() {
        rec.error = Some(error);
    }
    conn.finish_record(ctx, None);
}

/// Fuzz entry (cargo-fuzz target `client_hello` and the corpus replay): arbitrary bytes as
/// what a client sends first on an intercepted tunnel or the reverse HTTPS port. The sniff
/// and rustls' ClientHello reading must never panic, whatever the bytes and however they are
/// split.
pub fn fuzz_client_hello(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let _is_tls = rest.first() == Some(&TLS_HANDSHAKE_RECORD);
    let mut acceptor = Acceptor::default();
    let cut = usize::from(split).min(rest.len());
    for mut piece in [&rest[..cut], &rest[cut..]] {
        while !piece.is_empty() {
            match acceptor.read_tls(&mut piece) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    let _ = hello.server_name();
                    let _ = hello.alpn().map(|a| a.count());
                    return;
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }
}
