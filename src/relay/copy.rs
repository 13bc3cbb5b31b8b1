//! Readiness-aware reads and writes shared by every phase.
//!
//! Sockets are registered edge-triggered, so a side's [`Ready`] flags are set by poll events
//! and cleared when a call returns `WouldBlock`; a phase that stops early (its buffer is
//! full, the other side is slow) can therefore resume later without a new event. One more
//! case clears `readable`: a plain TCP read that returns less than it asked for has emptied the
//! socket's receive queue, and any byte arriving later raises a new edge, so the extra read that
//! would only return `WouldBlock` is skipped (one system call less per request). Not when the
//! last event said the peer closed (the FIN may already be queued behind the data and would
//! raise no new edge), nor for TLS, whose reads move whole records. Errors are
//! reported as [`IoOutcome`] values, never panics, and carry the `io::ErrorKind` so the session
//! can say which side failed and how.

use std::io::{self, IoSlice, Read, Write};

use super::pool::Buf;

/// What poll last told us about one socket, kept until an operation hits `WouldBlock`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// An event reported the peer's FIN (or an error): read until the 0-byte read.
    pub read_closed: bool,
}

/// The result of one read or write attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOutcome {
    /// `n > 0` bytes moved.
    Done(usize),
    /// The peer closed its sending side (a 0-byte read).
    Eof,
    /// Nothing to do now: the socket would block, or the buffer has no room.
    Blocked,
    /// The socket failed; the connection is unusable.
    Failed(io::ErrorKind),
}

/// Anything a phase reads from and writes to: a plain socket now, a TLS session later.
pub trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

/// A byte source that knows whether a short read emptied the socket beneath it.
pub trait Source: Read {
    /// True when a read that returned fewer bytes than asked left nothing queued in the kernel
    /// (a plain TCP socket); false when more may wait below (a TLS session).
    fn short_read_drains(&self) -> bool {
        false
    }
}

/// Reads once into the spare room of `buf`.
pub fn read_into(src: &mut impl Source, ready: &mut Ready, buf: &mut Buf) -> IoOutcome {
    if !ready.readable {
        return IoOutcome::Blocked;
    }
    loop {
        let spare = buf.spare();
        if spare.is_empty() {
            return IoOutcome::Blocked;
        }
        match src.read(spare) {
            // A 0-byte read into a non-empty buffer is the peer's FIN (RFC 9293 §3.6).
            Ok(0) => return IoOutcome::Eof,
            Ok(n) => {
                if n < spare.len() && !ready.read_closed && src.short_read_drains() {
                    ready.readable = false;
                }
                buf.commit(n);
                return IoOutcome::Done(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.readable = false;
                return IoOutcome::Blocked;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return IoOutcome::Failed(e.kind()),
        }
    }
}

/// Writes as much of `data` as the socket takes in one call.
pub fn write_from(dst: &mut impl Write, ready: &mut Ready, data: &[u8]) -> IoOutcome {
    if !ready.writable || data.is_empty() {
        return IoOutcome::Blocked;
    }
    write_outcome(ready, || dst.write(data))
}

/// Writes `first` then `second` in one vectored call (a head and the body bytes already
/// buffered behind it cost one syscall, not two). Returns how many bytes went, counted
/// across both.
pub fn write_two(
    dst: &mut impl Write,
    ready: &mut Ready,
    first: &[u8],
    second: &[u8],
) -> IoOutcome {
    if first.is_empty() || second.is_empty() {
        let only = if first.is_empty() { second } else { first };
        return write_from(dst, ready, only);
    }
    if !ready.writable {
        return IoOutcome::Blocked;
    }
    let bufs = [IoSlice::new(first), IoSlice::new(second)];
    write_outcome(ready, || dst.write_vectored(&bufs))
}

/// One write attempt, retried on `EINTR`: `WouldBlock` clears the writable flag (the next
/// edge will set it), a 0-byte write means the socket can take nothing more.
fn write_outcome(ready: &mut Ready, mut write: impl FnMut() -> io::Result<usize>) -> IoOutcome {
    loop {
        match write() {
            Ok(0) => return IoOutcome::Failed(io::ErrorKind::WriteZero),
            Ok(n) => return IoOutcome::Done(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.writable = false;
                return IoOutcome::Blocked;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return IoOutcome::Failed(e.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::BufPool;

    struct Scripted(Vec<io::Result<usize>>);
    impl Source for Scripted {}
    impl Read for Scripted {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.0.remove(0) {
                Ok(n) => {
                    out[..n].fill(b'x');
                    Ok(n)
                }
                Err(e) => Err(e),
            }
        }
    }

    #[test]
    fn would_block_clears_readiness_and_eof_is_reported() {
        let mut pool = BufPool::new(1, 1);
        let mut buf = pool.get().unwrap();
        let mut ready = Ready {
            readable: true,
            ..Ready::default()
        };
        let mut src = Scripted(vec![Ok(3), Err(io::ErrorKind::WouldBlock.into()), Ok(0)]);
        assert_eq!(
            read_into(&mut src, &mut ready, &mut buf),
            IoOutcome::Done(3)
        );
        assert_eq!(
            read_into(&mut src, &mut ready, &mut buf),
            IoOutcome::Blocked
        );
        assert!(!ready.readable);
        assert_eq!(
            read_into(&mut src, &mut ready, &mut buf),
            IoOutcome::Blocked
        );
        ready.readable = true;
        assert_eq!(read_into(&mut src, &mut ready, &mut buf), IoOutcome::Eof);
        assert_eq!(buf.filled(), b"xxx");
    }

    /// A plain socket: a short read says the receive queue is empty.
    struct PlainScripted(Scripted);
    impl Read for PlainScripted {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.0.read(out)
        }
    }
    impl Source for PlainScripted {
        fn short_read_drains(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_short_plain_read_clears_readiness_unless_the_peer_closed() {
        let mut pool = BufPool::new(1, 1);
        let mut buf = pool.get().unwrap();
        let mut ready = Ready {
            readable: true,
            ..Ready::default()
        };
        let mut src = PlainScripted(Scripted(vec![Ok(5), Ok(7), Ok(0)]));
        assert_eq!(
            read_into(&mut src, &mut ready, &mut buf),
            IoOutcome::Done(5)
        );
        assert!(!ready.readable, "a short read left the flag set");
        // The next edge sets it again; a FIN seen with it keeps reads going to the end.
        ready.readable = true;
        ready.read_closed = true;
        assert_eq!(
            read_into(&mut src, &mut ready, &mut buf),
            IoOutcome::Done(7)
        );
        assert!(ready.readable);
        assert_eq!(read_into(&mut src, &mut ready, &mut buf), IoOutcome::Eof);
    }

    #[test]
    fn a_short_tls_read_keeps_readiness() {
        let mut pool = BufPool::new(1, 1);
        let mut buf = pool.get().unwrap();
        let mut ready = Ready {
            readable: true,
            ..Ready::default()
        };
        let mut src = Scripted(vec![Ok(5)]);
        assert_eq!(
            read_into(&mut src, &mut ready, &mut buf),
            IoOutcome::Done(5)
        );
        assert!(ready.readable);
    }
}
