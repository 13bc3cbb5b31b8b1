//! `Resolve` and `Connect`: reaching the upstream.
//!
//! Addresses are tried in the order the resolver gave them, the next one after a refusal;
//! the whole dial (lookup included) must finish within the `connect` timeout, else 504.
//! An address that is one of Watchtower's own listeners is answered 508 instead of dialled,
//! so a misrouted request cannot loop through the proxy until it runs out of sockets. A
//! CONNECT request becomes a `Tunnel` once connected; anything else an `Exchange`.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::context::Ctx;
use crate::io::Transport;
use crate::resolve::ResolveError;

use super::answer;
use super::exchange::Exchange;
use super::tunnel::Tunnel;
use super::{Conn, Phase, Step, Upstream};

/// Dials the next untried address of `x`, or answers 502 when none is left.
pub(super) fn start(mut x: Exchange, conn: &mut Conn, ctx: &mut Ctx) -> Step {
    while let Some(addr) = x.next_addr() {
        if ctx.is_own_listener(addr) {
            return answer::reply(
                conn,
                ctx,
                508,
                format_args!(
                    "request would loop: {} ({addr}) is Watchtower's own listener",
                    x.upstream_name()
                ),
                false,
            );
        }
        match open(addr, conn, ctx) {
            Ok(up) => {
                conn.upstream = Some(Upstream {
                    sock: Transport::plain(up),
                    ready: Default::default(),
                    name: x.upstream_text(),
                    connected: false,
                    idle: false,
                });
                return Step::Next(Phase::Connect(x));
            }
            Err(e) => x.dial_failed(e.kind()),
        }
    }
    let why = match x.last_dial_error() {
        Some(io::ErrorKind::ConnectionRefused) | None => "refused the connection",
        Some(io::ErrorKind::ConnectionReset) => "reset the connection",
        Some(io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable) => {
            "is unreachable"
        }
        Some(_) => "could not be connected to",
    };
    answer::reply(
        conn,
        ctx,
        502,
        format_args!("upstream {} {why}", x.upstream_name()),
        x.can_keep_client(),
    )
}

fn open(addr: SocketAddr, conn: &Conn, ctx: &Ctx) -> io::Result<TcpStream> {
    let mut sock = TcpStream::connect(addr)?;
    conn.register_upstream(ctx, &mut sock)?;
    Ok(sock)
}

/// The resolver answered.
pub(super) fn resolved(
    mut x: Exchange,
    result: Result<Vec<SocketAddr>, ResolveError>,
    conn: &mut Conn,
    ctx: &mut Ctx,
) -> Step {
    match result {
        Ok(addrs) => {
            x.set_addrs(addrs);
            start(x, conn, ctx)
        }
        Err(e) => {
            let keep = x.can_keep_client();
            answer::reply(
                conn,
                ctx,
                502,
                format_args!("could not resolve {}: {e}", x.upstream_name()),
                keep,
            )
        }
    }
}

/// Waits for the TCP handshake; on failure tries the next address.
pub(super) fn step(x: &mut Exchange, conn: &mut Conn, ctx: &mut Ctx) -> Step {
    let Some(up) = conn.upstream.as_mut() else {
        return start(std::mem::take(x), conn, ctx);
    };
    if !up.ready.writable && !up.ready.readable {
        return Step::Wait;
    }
    // mio: a writable event on a connecting socket means the handshake finished, one way
    // or the other; `take_error` says which, and `peer_addr` filters spurious wake-ups.
    let failure = match up.sock.socket().take_error() {
        Ok(Some(e)) | Err(e) => Some(e.kind()),
        Ok(None) => match up.sock.socket().peer_addr() {
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                up.ready = Default::default();
                return Step::Wait;
            }
            Err(e) => Some(e.kind()),
        },
    };
    if let Some(kind) = failure {
        log::debug!(
            "session {}: connect to {} failed: {kind}",
            conn.key,
            up.name
        );
        conn.drop_upstream();
        x.dial_failed(kind);
        return start(std::mem::take(x), conn, ctx);
    }
    up.connected = true;
    if let Err(e) = up.sock.socket().set_nodelay(true) {
        log::debug!("set_nodelay: {e}");
    }
    if let Some(name) = x.tls_name() {
        // rustls sends the ClientHello with the first flush; the request head waits in it
        // until the handshake is done.
        match rustls::ClientConnection::new(std::sync::Arc::clone(&ctx.tls_client), name.clone()) {
            Ok(client) => up.sock.start_tls(client),
            Err(e) => {
                conn.drop_upstream();
                return answer::reply(
                    conn,
                    ctx,
                    502,
                    format_args!("cannot start TLS with upstream {}: {e}", x.upstream_name()),
                    false,
                );
            }
        }
    }
    if x.is_tunnel() {
        let tunnel = Tunnel::connected(conn, ctx);
        std::mem::take(x).release(ctx);
        Step::Next(Phase::Tunnel(tunnel))
    } else {
        x.connected(ctx);
        Step::Next(Phase::Exchange(std::mem::take(x)))
    }
}

/// The `connect` timeout passed while resolving or connecting.
pub(super) fn timeout(conn: &mut Conn, ctx: &mut Ctx) -> Step {
    let secs = ctx.timeouts.connect.as_secs_f64();
    let name = conn.rec.as_ref().and_then(|r| r.api.upstream.clone());
    let name = name.as_ref().map(|n| n.as_str()).unwrap_or("upstream");
    if conn.upstream.take().is_none() {
        // Still resolving: the name did not resolve in time.
        return answer::reply(
            conn,
            ctx,
            502,
            format_args!("could not resolve {name}: no answer within {secs}s"),
            false,
        );
    }
    answer::reply(
        conn,
        ctx,
        504,
        format_args!("upstream {name} did not accept the connection within {secs}s"),
        false,
    )
}
