//! Idle upstream connections kept for the next request to the same place, per event loop.
//!
//! When a session is done with an upstream connection that can carry another request (the
//! response allowed keep-alive and was read to its end), the connection is parked here under its
//! key — `host:port` as dialled and whether it speaks TLS — instead of being closed, and the next
//! request for that key on any connection of this loop takes it instead of dialling. Local route
//! targets and real servers alike.
//!
//! While parked, a connection is polled under a token of its own: any readiness means the server
//! closed it (or sent bytes nobody asked for), and it is dropped at once; a probe read tells that
//! from a stale flag, and a TLS session's post-handshake messages (tickets) from real data. It is
//! closed after `idle` unused. Bounded: [`MAX_PER_KEY`] per key and [`MAX_TOTAL`] per loop; a
//! connection that does not fit is closed. A connection that dies just as it is reused is the
//! exchange's to handle (it retries once on a fresh connection when that is safe).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};
use slab::Slab;

use super::Upstream;
use crate::relay::Ready;

/// Idle connections kept per `host:port` (and TLS or not).
pub const MAX_PER_KEY: usize = 32;
/// Idle connections kept per event loop.
pub const MAX_TOTAL: usize = 512;

struct Parked {
    up: Upstream,
    tls: bool,
    expires: Instant,
    serial: u64,
}

/// One loop's idle upstream connections.
pub(crate) struct UpstreamPool {
    parked: Slab<Parked>,
    /// Slots per name, plain and TLS apart, most recently parked last (reused first: the
    /// warmest connection). Looked up by `&str`, so taking allocates nothing.
    by_name: [HashMap<Box<str>, Vec<usize>>; 2],
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    serial: u64,
    /// Parked connection `slot` is polled as `token_base + slot`.
    token_base: usize,
    idle: Duration,
}

impl UpstreamPool {
    pub fn new(token_base: usize, idle: Duration) -> UpstreamPool {
        UpstreamPool {
            parked: Slab::new(),
            by_name: [HashMap::new(), HashMap::new()],
            heap: BinaryHeap::new(),
            serial: 0,
            token_base,
            idle,
        }
    }

    /// True when `token` is a parked connection's.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 < self.token_base + MAX_TOTAL
    }

    /// Keeps `up` (idle, connected, nothing pending) for reuse; closes it when the pool is full.
    pub fn park(&mut self, mut up: Upstream, registry: &Registry, now: Instant) {
        let tls = up.sock.is_tls();
        let per_key = self.by_name[usize::from(tls)]
            .get(up.name.as_str())
            .map_or(0, Vec::len);
        if !up.connected || per_key >= MAX_PER_KEY || self.parked.len() >= MAX_TOTAL {
            return; // dropping it closes it
        }
        let slot = self.parked.vacant_key();
        if let Err(e) = registry.reregister(
            up.sock.socket_mut(),
            Token(self.token_base + slot),
            Interest::READABLE,
        ) {
            log::debug!("cannot park the connection to {}: {e}", up.name);
            return;
        }
        up.ready = Ready::default();
        self.serial += 1;
        let expires = now + self.idle;
        let slots = match self.by_name[usize::from(tls)].get_mut(up.name.as_str()) {
            Some(slots) => slots,
            None => self.by_name[usize::from(tls)]
                .entry(up.name.as_str().into())
                .or_default(),
        };
        slots.push(slot);
        self.parked.insert(Parked {
            up,
            tls,
            expires,
            serial: self.serial,
        });
        self.heap.push(Reverse((expires, slot, self.serial)));
    }

    /// A live idle connection to `name` (TLS or not), registered under `token` for its new
    /// session, if one is parked.
    pub fn take(
        &mut self,
        name: &str,
        tls: bool,
        registry: &Registry,
        token: Token,
    ) -> Option<Upstream> {
        loop {
            let slot = self.by_name[usize::from(tls)].get_mut(name)?.pop()?;
            let mut up = self.remove(slot)?;
            if !still_open(&mut up) {
                log::debug!("pooled connection to {name} was closed by the server");
                continue;
            }
            if registry
                .reregister(
                    up.sock.socket_mut(),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            // An idle socket can take a request; a full one says WouldBlock.
            up.ready = Ready {
                writable: true,
                ..Ready::default()
            };
            return Some(up);
        }
    }

    /// Readiness on a parked connection: closed by the server, or worse.
    pub fn on_event(&mut self, token: Token) {
        let slot = token.0 - self.token_base;
        if let Some(p) = self.parked.get_mut(slot)
            && !still_open(&mut p.up)
        {
            log::debug!("pooled connection to {} closed by the server", p.up.name);
            self.remove(slot);
        }
    }

    /// Closes the connections idle past their time.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((at, slot, serial))) = self.heap.peek().copied() {
            if at > now {
                return;
            }
            self.heap.pop();
            if self
                .parked
                .get(slot)
                .is_some_and(|p| p.serial == serial && p.expires <= now)
            {
                self.remove(slot);
            }
        }
    }

    /// When [`UpstreamPool::tick`] next has work.
    pub fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Closes every parked connection (shutdown).
    pub fn clear(&mut self) {
        self.parked.clear();
        self.by_name = [HashMap::new(), HashMap::new()];
        self.heap.clear();
    }

    fn remove(&mut self, slot: usize) -> Option<Upstream> {
        let parked = self.parked.try_remove(slot)?;
        let names = &mut self.by_name[usize::from(parked.tls)];
        if let Some(slots) = names.get_mut(parked.up.name.as_str()) {
            slots.retain(|&s| s != slot);
            // Names come and go (every pass-through host): drop the emptied entry.
            if slots.is_empty() {
                names.remove(parked.up.name.as_str());
            }
        }
        Some(parked.up)
    }
}

/// A probe read on an idle connection: `WouldBlock` means nothing happened (a TLS session may
/// have consumed a ticket); bytes, EOF or an error mean it cannot carry a request.
pub(crate) fn still_open(up: &mut Upstream) -> bool {
    let mut probe = [0u8; 1];
    match up.sock.read(&mut probe) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
        _ => false,
    }
}
