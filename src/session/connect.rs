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

use crate::relay::IoOutcome;
use crate::relay::copy::write_from;

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
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                log::warn!(
                    "session {}: cannot open a connection to {}: {e}",
                    conn.key,
                    x.upstream_name()
                );
                return answer::reply(
                    conn,
                    ctx,
                    503,
                    format_args!(
                        "Watchtower is out of file descriptors ({e}) and cannot connect to {} now; try again in a moment, or raise the open-file limit (ulimit -n) or lower [proxy] max_connections",
                        x.upstream_name()
                    ),
                    false,
                );
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
    if !up.connected && !up.ready.writable && !up.ready.readable {
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
    if !up.connected {
        up.connected = true;
        if let Err(e) = up.sock.socket().set_nodelay(true) {
            log::debug!("set_nodelay: {e}");
        }
    }
    if let Some(tunnel) = x.proxy_tunnel_mut() {
        match tunnel.step(up) {
            Ok(false) => return Step::Wait,
            Ok(true) => {}
            Err(why) => {
                conn.drop_upstream();
                let proxy = x
                    .upstream_name()
                    .rsplit(" via ")
                    .next()
                    .unwrap_or("")
                    .to_owned();
                return answer::reply(
                    conn,
                    ctx,
                    502,
                    format_args!("upstream proxy {proxy} {why}"),
                    x.can_keep_client(),
                );
            }
        }
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

/// Asking an upstream proxy for a tunnel: `CONNECT host:port`, then its answer, read without
/// taking a byte of what follows it (the tunnel's first bytes stay in the socket).
pub(crate) struct ProxyTunnel {
    request: Vec<u8>,
    sent: usize,
    open: bool,
}

/// Longest answer head a proxy may give to CONNECT.
const PROXY_ANSWER_LIMIT: usize = 16 * 1024;

impl ProxyTunnel {
    pub fn new(authority: &str, authorization: Option<&str>) -> ProxyTunnel {
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(credentials) = authorization {
            request += &format!("Proxy-Authorization: {credentials}\r\n");
        }
        request += "\r\n";
        ProxyTunnel {
            request: request.into_bytes(),
            sent: 0,
            open: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Starts over, for a new connection to the proxy.
    pub fn reset(&mut self) {
        self.sent = 0;
        self.open = false;
    }

    /// Sends the request and reads the answer as far as readiness allows: `Ok(true)` once
    /// the tunnel is open, `Ok(false)` to wait, `Err` with what the proxy did instead.
    pub fn step(&mut self, up: &mut super::Upstream) -> Result<bool, String> {
        while self.sent < self.request.len() {
            match write_from(&mut up.sock, &mut up.ready, &self.request[self.sent..]) {
                IoOutcome::Done(n) => self.sent += n,
                IoOutcome::Blocked | IoOutcome::Eof => return Ok(false),
                IoOutcome::Failed(k) => {
                    return Err(format!("failed while asked for a tunnel ({k})"));
                }
            }
        }
        if !up.ready.readable {
            return Ok(false);
        }
        let mut peeked = [0u8; PROXY_ANSWER_LIMIT];
        let n = match up.sock.socket().peek(&mut peeked) {
            Ok(0) => return Err("closed the connection instead of opening a tunnel".to_owned()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                up.ready.readable = false;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(format!("failed while asked for a tunnel ({})", e.kind())),
        };
        let Some(end) = peeked[..n].windows(4).position(|w| w == b"\r\n\r\n") else {
            if n == PROXY_ANSWER_LIMIT {
                return Err("answered CONNECT with an oversized head".to_owned());
            }
            // The rest of the head raises a new edge when it comes.
            up.ready.readable = false;
            return Ok(false);
        };
        let head_len = end + 4;
        let mut head = vec![0u8; head_len];
        match io::Read::read_exact(&mut up.sock, &mut head) {
            Ok(()) => {}
            Err(e) => return Err(format!("failed while answering CONNECT ({})", e.kind())),
        }
        match crate::http::parse_response(&head, crate::http::Method::Connect) {
            Ok(Some(answer)) if (200..300).contains(&answer.status) => {
                self.open = true;
                Ok(true)
            }
            Ok(Some(_)) => {
                let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
                Err(format!(
                    "refused the tunnel: {}",
                    String::from_utf8_lossy(line).trim()
                ))
            }
            Ok(None) | Err(_) => Err("answered CONNECT with a malformed head".to_owned()),
        }
    }
}
