//! Pooled I/O buffers.
//!
//! Every byte Watchtower relays passes through a [`Buf`] checked out of the [`BufPool`]
//! just before a read and handed back as soon as it is drained, so an idle keep-alive
//! connection or an idle tunnel owns no buffer at all. The pool keeps a bounded free list
//! (memory goes back to the allocator after a burst) and a cap on buffers in use: when it
//! is reached, [`BufPool::get`] returns `None` and the caller stops reading or answers 503
//! instead of growing without bound. Buffers are allocated zeroed (`calloc`), so pages of a
//! buffer that never fills are never touched.

/// Size of every pooled buffer. It bounds a request or response head (see
/// `http::HEAD_LIMIT_BYTES`) and is large enough that bulk relays make few syscalls.
pub const BUF_SIZE_BYTES: usize = 64 * 1024;

use std::cell::Cell;
use std::rc::Rc;

/// A fixed-size byte buffer with a filled window `start..end`.
pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
    /// The owning pool's count of live buffers; decremented on drop.
    live: Rc<Cell<usize>>,
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.live.set(self.live.get().saturating_sub(1));
    }
}

impl Buf {
    fn new(live: &Rc<Cell<usize>>) -> Buf {
        live.set(live.get() + 1);
        Buf {
            data: vec![0u8; BUF_SIZE_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            live: Rc::clone(live),
        }
    }

    /// The bytes read in and not yet consumed.
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Number of bytes in [`Buf::filled`].
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when no unconsumed bytes are held.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// True when no more bytes can be read in without consuming some first.
    pub fn is_full(&self) -> bool {
        self.end == self.data.len() && self.start == 0
    }

    /// Room to read into. Moves the filled window to the front first when the tail is
    /// exhausted, so a partial head at the end of the buffer can keep growing.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` bytes of [`Buf::spare`] as filled.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Drops `n` bytes from the front of the filled window.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Writable view of the whole buffer, for formatting a head into it; follow with
    /// [`Buf::set_filled`].
    pub fn raw_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Sets the filled window to `0..n` after writing through [`Buf::raw_mut`].
    pub fn set_filled(&mut self, n: usize) {
        self.start = 0;
        self.end = n.min(self.data.len());
    }

    /// Appends `bytes` when they fit; false (nothing written) otherwise.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if self.data.len() - self.end < bytes.len() {
            return false;
        }
        self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        true
    }
}

/// The shared store of buffers, owned by the event loop's context.
pub struct BufPool {
    /// Buffers handed back and ready for reuse; at most `keep` of them.
    free: Vec<Buf>,
    /// Buffers alive anywhere (checked out or free), maintained by `Buf` itself.
    live: Rc<Cell<usize>>,
    /// Cap on buffers checked out.
    max_in_use: usize,
    /// Cap on `free.len()`.
    keep: usize,
}

impl BufPool {
    /// A pool that lends at most `max_in_use` buffers and keeps at most `keep` spare ones.
    pub fn new(max_in_use: usize, keep: usize) -> BufPool {
        BufPool {
            free: Vec::with_capacity(keep),
            live: Rc::new(Cell::new(0)),
            max_in_use,
            keep,
        }
    }

    /// An empty buffer, or `None` when `max_in_use` are already out.
    pub fn get(&mut self) -> Option<Buf> {
        if let Some(buf) = self.free.pop() {
            return Some(buf);
        }
        if self.in_use() >= self.max_in_use {
            return None;
        }
        Some(Buf::new(&self.live))
    }

    /// Takes a buffer back; its contents are discarded.
    pub fn put(&mut self, mut buf: Buf) {
        if self.free.len() < self.keep {
            buf.start = 0;
            buf.end = 0;
            self.free.push(buf);
        }
    }

    /// Hands back the buffer in `slot`, if any.
    pub fn release(&mut self, slot: &mut Option<Buf>) {
        if let Some(buf) = slot.take() {
            self.put(buf);
        }
    }

    /// Hands back the buffer in `slot` when it holds no unconsumed bytes.
    pub fn release_if_empty(&mut self, slot: &mut Option<Buf>) {
        if slot.as_ref().is_some_and(Buf::is_empty) {
            self.release(slot);
        }
    }

    /// Buffers currently checked out.
    pub fn in_use(&self) -> usize {
        self.live.get() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_put_reuses_and_caps() {
        let mut pool = BufPool::new(2, 1);
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        assert!(pool.get().is_none(), "cap of 2 in use");
        pool.put(a);
        pool.put(b);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.free.len(), 1, "keeps at most `keep` spares");
        assert!(pool.get().is_some());
    }

    #[test]
    fn dropped_buffers_free_their_place() {
        let mut pool = BufPool::new(1, 1);
        drop(pool.get().unwrap());
        assert_eq!(pool.in_use(), 0);
        assert!(pool.get().is_some());
    }

    #[test]
    fn window_moves_to_front_when_tail_is_full() {
        let mut buf = Buf::new(&Rc::new(Cell::new(0)));
        let n = buf.spare().len();
        buf.commit(n);
        assert!(buf.is_full());
        buf.consume(10);
        assert_eq!(buf.spare().len(), 10);
        assert_eq!(buf.len(), BUF_SIZE_BYTES - 10);
        buf.consume(BUF_SIZE_BYTES);
        assert!(buf.is_empty());
        assert_eq!(buf.spare().len(), BUF_SIZE_BYTES);
    }

    #[test]
    fn push_refuses_what_does_not_fit() {
        let mut buf = Buf::new(&Rc::new(Cell::new(0)));
        assert!(buf.push(b"abc"));
        assert_eq!(buf.filled(), b"abc");
        assert!(!buf.push(&vec![0u8; BUF_SIZE_BYTES]));
        assert_eq!(buf.filled(), b"abc");
    }
}
