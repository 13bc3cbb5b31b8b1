//! Zero-copy tunnel relay on Linux: socket -> pipe -> socket with splice(2).
//!
//! A plain tunnel (neither side speaks TLS through Watchtower) never needs to look at its
//! bytes, so each direction can move them inside the kernel: `splice` from the source socket
//! into a pipe, then from the pipe into the destination socket. The pipe pair is created the
//! first time a direction has data, so an idle tunnel holds none.
//!
//! Readiness stays edge-triggered and correct: the pipe is filled only when it is empty, so a
//! `EAGAIN` from socket -> pipe can only mean the socket has nothing more (a pipe can also be
//! "full" by its slot count with fewer bytes than its size, which would otherwise make the two
//! cases indistinguishable). `EAGAIN` from pipe -> socket means the destination is full.
//!
//! This is the one module (with `sys`) allowed `unsafe`; every libc call goes through
//! [`cvt`], which turns -1 into `io::Error`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::copy::{IoOutcome, Ready};

/// Pipe capacity asked for: fewer, larger splices per gigabyte. Linux lets any user grow a pipe to
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default); the pages are taken only while bytes sit in
/// the pipe, so an idle tunnel costs nothing more.
const PIPE_BYTES: usize = 1024 * 1024;
/// The capacity every Linux pipe starts with, used when growing it is refused.
const DEFAULT_PIPE_BYTES: usize = 64 * 1024;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A kernel pipe carrying one tunnel direction, and how many bytes sit in it.
#[derive(Debug)]
pub struct Pipe {
    read_end: OwnedFd,
    write_end: OwnedFd,
    /// Bytes spliced in and not yet spliced out.
    pending: usize,
    /// The pipe's capacity: the most one splice moves.
    capacity: usize,
}

impl Pipe {
    /// A non-blocking, close-on-exec pipe, grown to [`PIPE_BYTES`] where the system allows.
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two c_ints that pipe2 fills in; nothing else
        // holds the pointer after the call.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else;
        // each is wrapped exactly once.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours; the
        // descriptor is open (owned by `write_end`).
        let grown = unsafe {
            libc::fcntl(
                write_end.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_BYTES as libc::c_int,
            )
        };
        let capacity = usize::try_from(grown).unwrap_or(DEFAULT_PIPE_BYTES);
        Ok(Pipe {
            read_end,
            write_end,
            pending: 0,
            capacity,
        })
    }

    /// True when bytes are waiting in the pipe.
    pub fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// Moves bytes from socket `from` into the (empty) pipe.
    pub fn fill(&mut self, from: &impl AsRawFd, ready: &mut Ready) -> IoOutcome {
        if self.pending > 0 || !ready.readable {
            return IoOutcome::Blocked;
        }
        match splice(from.as_raw_fd(), self.write_end.as_raw_fd(), self.capacity) {
            Ok(0) => IoOutcome::Eof,
            Ok(n) => {
                // Less than an empty pipe's room: the socket ran dry (see `copy::read_into`).
                if n < self.capacity && !ready.read_closed {
                    ready.readable = false;
                }
                self.pending += n;
                IoOutcome::Done(n)
            }
            // The pipe is empty, so this is the socket running dry.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.readable = false;
                IoOutcome::Blocked
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => IoOutcome::Blocked,
            Err(e) => IoOutcome::Failed(e.kind()),
        }
    }

    /// Moves bytes from the pipe into socket `to`.
    pub fn drain(&mut self, to: &impl AsRawFd, ready: &mut Ready) -> IoOutcome {
        if self.pending == 0 || !ready.writable {
            return IoOutcome::Blocked;
        }
        match splice(self.read_end.as_raw_fd(), to.as_raw_fd(), self.pending) {
            Ok(0) => IoOutcome::Failed(io::ErrorKind::WriteZero),
            Ok(n) => {
                self.pending = self.pending.saturating_sub(n);
                IoOutcome::Done(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.writable = false;
                IoOutcome::Blocked
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => IoOutcome::Blocked,
            Err(e) => IoOutcome::Failed(e.kind()),
        }
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed from owners
    // that outlive it); null offsets are allowed for sockets and pipes.
    cvt_size(unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn bytes_cross_a_pipe_between_two_socket_pairs() {
        let (mut a_out, a_in) = UnixStream::pair().unwrap();
        let (b_out, mut b_in) = UnixStream::pair().unwrap();
        a_in.set_nonblocking(true).unwrap();
        b_out.set_nonblocking(true).unwrap();
        let mut pipe = Pipe::new().unwrap();
        let mut src = Ready {
            readable: true,
            ..Ready::default()
        };
        let mut dst = Ready {
            writable: true,
            ..Ready::default()
        };
        assert!(pipe.capacity >= DEFAULT_PIPE_BYTES);
        a_out.write_all(b"spliced").unwrap();
        assert_eq!(pipe.fill(&a_in, &mut src), IoOutcome::Done(7));
        assert!(pipe.has_pending());
        assert!(
            !src.readable,
            "a short splice into an empty pipe: the socket is dry"
        );
        src.readable = true;
        assert_eq!(
            pipe.fill(&a_in, &mut src),
            IoOutcome::Blocked,
            "fills only when empty"
        );
        assert_eq!(pipe.drain(&b_out, &mut dst), IoOutcome::Done(7));
        let mut got = [0u8; 7];
        b_in.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"spliced");
        assert_eq!(pipe.fill(&a_in, &mut src), IoOutcome::Blocked);
        assert!(!src.readable, "an empty pipe and EAGAIN: the socket is dry");
        // A FIN reported by poll keeps the reads going until the 0-byte one.
        a_out.write_all(b"last").unwrap();
        drop(a_out);
        src.readable = true;
        src.read_closed = true;
        assert_eq!(pipe.fill(&a_in, &mut src), IoOutcome::Done(4));
        assert!(src.readable);
        assert_eq!(pipe.drain(&b_out, &mut dst), IoOutcome::Done(4));
        assert_eq!(pipe.fill(&a_in, &mut src), IoOutcome::Eof);
    }
}
