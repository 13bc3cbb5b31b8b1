//! Transports: what the session phases read from and write to, on either side.
//!
//! A [`Transport`] is a non-blocking TCP socket, optionally carrying a rustls session (a
//! server session for intercepted CONNECTs and the reverse HTTPS port, a client session for
//! TLS pass-through to real servers). Phases only use its `Read`/`Write` impls and
//! [`Transport::shutdown_write`], so head parsing, exchanges and tunnels exist once for plain
//! and TLS traffic alike.
//!
//! With TLS, a read first flushes records rustls wants to send (handshake messages must go
//! out before the peer can answer), then reads records from the socket until plaintext is
//! available or the socket would block. A write hands plaintext to rustls (bounded by its
//! buffer limit) and flushes what the socket takes; records the socket cannot take yet stay
//! queued and go out on the next [`Transport::flush`], which the session calls whenever it
//! runs, so nothing waits for a phase that has nothing more to say. A peer that closes TCP
//! without `close_notify` is treated as end of stream: HTTP framing, not TLS, decides whether
//! a message was complete.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

use mio::net::TcpStream;

use crate::relay::Ready;

/// Plaintext rustls may hold unsent per connection; beyond it, writes report `WouldBlock`
/// and backpressure reaches the phase as for a plain socket.
const TLS_BUFFER_LIMIT_BYTES: usize = 64 * 1024;

/// The TLS half of a transport.
struct Tls {
    conn: rustls::Connection,
    /// FIN must follow once the queued records (ending with close_notify) are out.
    shutdown_pending: bool,
    /// The error that ended the session, kept for the log line.
    error: Option<rustls::Error>,
}

/// A socket, plain or with TLS.
#[derive(Debug)]
pub struct Transport {
    sock: TcpStream,
    tls: Option<Box<Tls>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl Transport {
    /// A plain TCP transport.
    pub fn plain(sock: TcpStream) -> Transport {
        Transport { sock, tls: None }
    }

    /// Starts speaking TLS on this socket with `conn` (a fresh server or client session).
    pub fn start_tls(&mut self, conn: impl Into<rustls::Connection>) {
        let mut conn = conn.into();
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT_BYTES));
        self.tls = Some(Box::new(Tls {
            conn,
            shutdown_pending: false,
            error: None,
        }));
    }

    /// The socket, for connect checks and socket options.
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The socket, to move it to another poll token.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// True when this transport speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True while a TLS handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.conn.is_handshaking())
    }

    /// The TLS error that broke this transport, if one did.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        self.tls.as_ref().and_then(|t| t.error.as_ref())
    }

    /// Sends FIN: we will write nothing more (half-close, RFC 9293 §3.6). With TLS,
    /// `close_notify` goes first and FIN follows once every queued record is out.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return self.sock.shutdown(Shutdown::Write);
        };
        tls.conn.send_close_notify();
        tls.shutdown_pending = true;
        match flush_records(tls, &mut self.sock) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Writes queued TLS records when the socket is writable; clears `ready.writable` when
    /// it would block. A no-op for plain transports.
    pub fn flush(&mut self, ready: &mut Ready) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        if !ready.writable || !(tls.conn.wants_write() || tls.shutdown_pending) {
            return Ok(());
        }
        match flush_records(tls, &mut self.sock) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.writable = false;
                Ok(())
            }
            other => other,
        }
    }
}

impl AsRawFd for Transport {
    /// The socket's descriptor (for splice; only meaningful on a plain transport).
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Writes queued records until none is left or the socket would block; then sends a pending
/// FIN.
fn flush_records(tls: &mut Tls, sock: &mut TcpStream) -> io::Result<()> {
    while tls.conn.wants_write() {
        match tls.conn.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if tls.shutdown_pending {
        tls.shutdown_pending = false;
        sock.shutdown(Shutdown::Write)?;
    }
    Ok(())
}

/// `WouldBlock` from a flush is not an error for the caller: the records wait.
fn flush_quietly(tls: &mut Tls, sock: &mut TcpStream) -> io::Result<()> {
    match flush_records(tls, sock) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}

impl crate::relay::Source for Transport {
    fn short_read_drains(&self) -> bool {
        self.tls.is_none()
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.sock.read(buf);
        };
        flush_quietly(tls, &mut self.sock)?;
        loop {
            match tls.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                // TCP closed without close_notify: end of stream (see the module doc).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match tls.conn.read_tls(&mut self.sock) {
                Ok(0) => {
                    // The peer's FIN: let rustls see it, then the reader reports the end.
                    if let Err(e) = tls.conn.process_new_packets() {
                        return Err(tls_failed(tls, &mut self.sock, e));
                    }
                    return match tls.conn.reader().read(buf) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                        Err(e) => Err(e),
                    };
                }
                Ok(_) => {
                    if let Err(e) = tls.conn.process_new_packets() {
                        return Err(tls_failed(tls, &mut self.sock, e));
                    }
                    // Handshake replies (and key updates) go out at once.
                    flush_quietly(tls, &mut self.sock)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Records a TLS error, sends the alert rustls queued for it, and turns it into an
/// `io::Error` for the phase.
fn tls_failed(tls: &mut Tls, sock: &mut TcpStream, e: rustls::Error) -> io::Error {
    let _ = flush_records(tls, sock);
    let err = io::Error::new(io::ErrorKind::InvalidData, e.clone());
    tls.error = Some(e);
    err
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.sock.write(buf);
        };
        flush_quietly(tls, &mut self.sock)?;
        let n = tls.conn.writer().write(buf)?;
        flush_quietly(tls, &mut self.sock)?;
        if n == 0 && !buf.is_empty() {
            // rustls' buffer is full and the socket took nothing: wait for writability.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.sock.write_vectored(bufs);
        };
        flush_quietly(tls, &mut self.sock)?;
        let n = tls.conn.writer().write_vectored(bufs)?;
        flush_quietly(tls, &mut self.sock)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(tls) => flush_quietly(tls, &mut self.sock),
            None => self.sock.flush(),
        }
    }
}
