//! `Tunnel`: bytes copied both ways, for CONNECT and after `101 Switching Protocols`.
//!
//! Each direction moves through one pooled buffer that is read into only when it is empty,
//! so a slow reader on one side stops reads on the other (backpressure) and memory stays
//! at two buffers per busy tunnel, none when idle. When one side closes its sending half,
//! the other side's sending half is shut once the buffered bytes are delivered (half-close,
//! RFC 9293 §3.6); the tunnel ends when both directions are shut, or after `idle` with no
//! traffic. The log record (one line per tunnel, SPEC §10) is written when it ends.
//!
//! When neither side speaks TLS through Watchtower (a blind CONNECT, a plain WebSocket), the
//! bytes never need to reach user space: on Linux a direction that carries bulk data moves
//! through a pipe with splice(2) (`relay::splice`), after any bytes already buffered have been
//! delivered. A direction counts as bulk once one read fills a whole buffer or 128 KiB have
//! passed; until then it is copied, because for the short exchanges most tunnels carry (a TLS
//! handshake, one API call) a pipe pair costs more system calls (pipe2, fcntl, two splices per
//! read, four closes) than it saves.

use std::io;
use std::time::Instant;

use crate::context::Ctx;
use crate::io::Transport;
use crate::relay::copy::{read_into, write_from};
#[cfg(target_os = "linux")]
use crate::relay::splice::Pipe;
use crate::relay::{Buf, BufPool, IoOutcome, Ready};

use super::{CloseReason, Conn, Step};

/// A direction that has carried this much is bulk even if no single read filled a buffer (a
/// sender whose segments arrive a little at a time).
const BULK_BYTES: usize = 128 * 1024;

/// The reply to a CONNECT whose upstream connection is up (RFC 9110 §9.3.6).
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";

/// One direction of a tunnel.
#[derive(Default)]
struct Flow {
    /// Bytes read from the source and not yet written to the destination.
    buf: Option<Buf>,
    /// The source sent FIN.
    eof: bool,
    /// FIN was passed on to the destination; this direction is finished.
    shut: bool,
    /// Bytes read from the source so far (until the direction is bulk).
    read: usize,
    /// A read filled a whole buffer, or [`BULK_BYTES`] have come: worth splicing from now on.
    bulk: bool,
    /// Kernel pipe for zero-copy relaying, created once the direction is bulk.
    #[cfg(target_os = "linux")]
    pipe: Option<Pipe>,
}

/// Which end of a tunnel failed.
enum Failure {
    Source(io::ErrorKind),
    Destination(io::ErrorKind),
}

/// Moves what it can from `src` to `dst` through `flow`. Returns bytes delivered and
/// whether anything changed.
fn pump(
    src: &mut Transport,
    src_ready: &mut Ready,
    dst: &mut Transport,
    dst_ready: &mut Ready,
    flow: &mut Flow,
    pool: &mut BufPool,
) -> Result<(usize, bool), Failure> {
    if flow.shut {
        return Ok((0, false));
    }
    let mut delivered = 0;
    let mut moved = false;
    if let Some(buf) = flow.buf.as_mut().filter(|b| !b.is_empty()) {
        match write_from(dst, dst_ready, buf.filled()) {
            IoOutcome::Done(n) => {
                buf.consume(n);
                delivered = n;
                moved = true;
            }
            IoOutcome::Failed(k) => return Err(Failure::Destination(k)),
            IoOutcome::Blocked | IoOutcome::Eof => {}
        }
    }
    let drained = flow.buf.as_ref().is_none_or(Buf::is_empty);
    if drained && !flow.eof && src_ready.readable {
        let buf = match flow.buf {
            Some(ref mut b) => b,
            None => match pool.get() {
                Some(b) => flow.buf.insert(b),
                // Out of buffers: leave the bytes in the kernel until one comes back.
                None => return Ok((delivered, moved)),
            },
        };
        match read_into(src, src_ready, buf) {
            IoOutcome::Done(n) => {
                flow.read = flow.read.saturating_add(n);
                flow.bulk |= buf.is_full() || flow.read >= BULK_BYTES;
                moved = true;
            }
            IoOutcome::Eof => {
                flow.eof = true;
                moved = true;
            }
            IoOutcome::Blocked => {}
            IoOutcome::Failed(k) => return Err(Failure::Source(k)),
        }
    }
    if flow.buf.as_ref().is_none_or(Buf::is_empty) {
        pool.release(&mut flow.buf);
        if flow.eof {
            // Everything the source sent has been delivered: pass its FIN on. A peer that
            // is already gone makes this fail; the direction is finished either way.
            let _ = dst.shutdown_write();
            flow.shut = true;
            moved = true;
        }
    }
    Ok((delivered, moved))
}

/// Like [`pump`], but moving the bytes inside the kernel once the direction is bulk: buffered
/// leftovers first, then socket -> pipe -> socket. Falls back to [`pump`] when no pipe can be
/// had.
#[cfg(target_os = "linux")]
fn pump_spliced(
    src: &mut Transport,
    src_ready: &mut Ready,
    dst: &mut Transport,
    dst_ready: &mut Ready,
    flow: &mut Flow,
    pool: &mut BufPool,
) -> Result<(usize, bool), Failure> {
    if flow.shut {
        return Ok((0, false));
    }
    if flow.buf.as_ref().is_some_and(|b| !b.is_empty()) {
        return pump(src, src_ready, dst, dst_ready, flow, pool);
    }
    pool.release(&mut flow.buf);
    let pipe = match flow.pipe {
        Some(ref mut p) => p,
        None if !flow.bulk || flow.eof || !src_ready.readable => {
            return pump(src, src_ready, dst, dst_ready, flow, pool);
        }
        None => match Pipe::new() {
            Ok(p) => flow.pipe.insert(p),
            Err(e) => {
                log::debug!("no pipe for splice ({e}); copying through a buffer");
                return pump(src, src_ready, dst, dst_ready, flow, pool);
            }
        },
    };
    let mut delivered = 0;
    let mut moved = false;
    for _ in 0..2 {
        match pipe.drain(dst, dst_ready) {
            IoOutcome::Done(n) => {
                delivered += n;
                moved = true;
            }
            IoOutcome::Failed(k) => return Err(Failure::Destination(k)),
            IoOutcome::Blocked | IoOutcome::Eof => {}
        }
        if pipe.has_pending() || flow.eof {
            break;
        }
        match pipe.fill(src, src_ready) {
            IoOutcome::Done(_) => moved = true,
            IoOutcome::Eof => {
                flow.eof = true;
                moved = true;
            }
            IoOutcome::Blocked => break,
            IoOutcome::Failed(k) => return Err(Failure::Source(k)),
        }
    }
    if flow.eof && !pipe.has_pending() {
        let _ = dst.shutdown_write();
        flow.shut = true;
        moved = true;
    }
    Ok((delivered, moved))
}

/// Relaying bytes between client and upstream.
pub(crate) struct Tunnel {
    /// Unwritten part of the CONNECT reply; nothing is relayed before it is out.
    greeting: &'static [u8],
    /// Client -> upstream.
    c2u: Flow,
    /// Upstream -> client.
    u2c: Flow,
    last_progress: Instant,
}

impl Tunnel {
    /// A CONNECT tunnel whose upstream just connected. Bytes the client sent right after
    /// its CONNECT head (an eager TLS ClientHello) are already in `cin` and go first.
    pub fn connected(conn: &mut Conn, ctx: &mut Ctx) -> Tunnel {
        if let Some(rec) = conn.rec_mut() {
            rec.status = Some(200);
        }
        Tunnel {
            greeting: ESTABLISHED,
            c2u: Flow {
                buf: conn.cin.take(),
                ..Flow::default()
            },
            u2c: Flow::default(),
            last_progress: ctx.now,
        }
    }

    /// A tunnel after `101 Switching Protocols`: bytes either side sent after the heads
    /// are already buffered and go first.
    pub fn upgraded(conn: &mut Conn, upstream_bytes: Option<Buf>, ctx: &Ctx) -> Tunnel {
        Tunnel {
            greeting: b"",
            c2u: Flow {
                buf: conn.cin.take(),
                ..Flow::default()
            },
            u2c: Flow {
                buf: upstream_bytes,
                ..Flow::default()
            },
            last_progress: ctx.now,
        }
    }

    pub fn deadline(&self, ctx: &Ctx) -> Instant {
        self.last_progress + ctx.timeouts.idle
    }

    pub fn release(mut self, ctx: &mut Ctx) {
        ctx.pool.release(&mut self.c2u.buf);
        ctx.pool.release(&mut self.u2c.buf);
    }

    pub(super) fn step(&mut self, conn: &mut Conn, ctx: &mut Ctx) -> Step {
        let Some(up) = conn.upstream.as_mut() else {
            return Step::Close(CloseReason::UpstreamClosed);
        };
        if !self.greeting.is_empty() {
            match write_from(&mut conn.client, &mut conn.client_ready, self.greeting) {
                IoOutcome::Done(n) => {
                    self.greeting = &self.greeting[n..];
                    conn.count_out(n);
                    self.last_progress = ctx.now;
                    return Step::Continue;
                }
                IoOutcome::Failed(k) => return Step::Close(CloseReason::ClientFailed(k)),
                IoOutcome::Blocked | IoOutcome::Eof => return Step::Wait,
            }
        }
        #[cfg(target_os = "linux")]
        let relay = if conn.client.is_tls() || up.sock.is_tls() {
            pump
        } else {
            pump_spliced
        };
        #[cfg(not(target_os = "linux"))]
        let relay = pump;
        let c2u = relay(
            &mut conn.client,
            &mut conn.client_ready,
            &mut up.sock,
            &mut up.ready,
            &mut self.c2u,
            &mut ctx.pool,
        );
        let (sent, moved_up) = match c2u {
            Ok(r) => r,
            Err(Failure::Source(k)) => return Step::Close(CloseReason::ClientFailed(k)),
            Err(Failure::Destination(k)) => return Step::Close(CloseReason::UpstreamFailed(k)),
        };
        let u2c = relay(
            &mut up.sock,
            &mut up.ready,
            &mut conn.client,
            &mut conn.client_ready,
            &mut self.u2c,
            &mut ctx.pool,
        );
        let (received, moved_down) = match u2c {
            Ok(r) => r,
            Err(Failure::Source(k)) => return Step::Close(CloseReason::UpstreamFailed(k)),
            Err(Failure::Destination(k)) => return Step::Close(CloseReason::ClientFailed(k)),
        };
        conn.count_in(sent);
        conn.count_out(received);
        if self.c2u.shut && self.u2c.shut {
            return Step::Close(CloseReason::Finished);
        }
        if moved_up || moved_down {
            self.last_progress = ctx.now;
            Step::Continue
        } else {
            Step::Wait
        }
    }
}
