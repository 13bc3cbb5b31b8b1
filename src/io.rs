//! The client's byte source: what the session phases read requests from and write
//! responses to.
//!
//! Today every client is a plain TCP socket; HTTPS interception (issue 4) adds a `Tls`
//! variant wrapping a rustls server session over the same socket. Phases only use the
//! `Read`/`Write` impls and [`ClientIo::shutdown_write`], so head parsing, exchanges and
//! tunnels exist once for both.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

/// A client connection as the phases see it.
#[derive(Debug)]
pub enum ClientIo {
    Plain(TcpStream),
}

impl ClientIo {
    /// The socket to register with the poller.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            ClientIo::Plain(s) => s,
        }
    }

    /// Sends FIN: we will write nothing more (half-close, RFC 9293 §3.6).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            ClientIo::Plain(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for ClientIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientIo::Plain(s) => s.read(buf),
        }
    }
}

impl Write for ClientIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientIo::Plain(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientIo::Plain(s) => s.flush(),
        }
    }
}
