//! Moving bytes: the buffer pool and the copy primitives the session phases share.
//!
//! [`pool`] owns memory; [`copy`] owns the read/write loops with readiness bookkeeping, so
//! HTTP exchanges and tunnels drain sockets the same way (edge-triggered: a side stays
//! "ready" until a call reports `WouldBlock`); on Linux, [`splice`] moves plain tunnel bytes
//! inside the kernel.

pub mod copy;
pub mod pool;
#[cfg(target_os = "linux")]
pub mod splice;

pub use copy::{Io, IoOutcome, Ready, Source};
pub use pool::{BUF_SIZE_BYTES, Buf, BufPool};
