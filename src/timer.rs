//! Deadlines keyed by session.
//!
//! A session keeps its own deadline (`Deadline`) and moves it freely — every byte of progress
//! pushes an idle deadline later — without touching the shared heap. The heap holds at most
//! one live entry per session: the time at which the loop must next *look* at that session.
//! When an entry comes due, the session's current deadline decides: already passed -> the
//! phase's timeout fires; moved later -> the entry is re-armed for the new time. Setting a
//! deadline earlier than the armed one pushes a new entry and the old one goes stale (each
//! entry carries the session's generation and arm time, so stale and recycled-slot entries are
//! recognised and skipped). Time comes from the loop's cached `now`, read once per poll
//! iteration, so checking deadlines costs no syscall.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A session's deadline and what the heap knows about it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Deadline {
    /// When the current phase gives up; `None` = no limit.
    at: Option<Instant>,
    /// The time of this session's live heap entry, if any.
    armed: Option<Instant>,
}

impl Deadline {
    /// The current deadline.
    pub fn at(&self) -> Option<Instant> {
        self.at
    }
}

/// One heap entry: when to look, at which slab key, for which session generation.
type Entry = Reverse<(Instant, usize, u64)>;

/// The loop's deadline heap.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Entry>,
}

impl Timers {
    /// Sets (or clears, with `None`) the deadline of session `key`/`generation`.
    pub fn set(&mut self, d: &mut Deadline, key: usize, generation: u64, at: Option<Instant>) {
        d.at = at;
        if let Some(at) = at
            && d.armed.is_none_or(|armed| at < armed)
        {
            d.armed = Some(at);
            self.heap.push(Reverse((at, key, generation)));
        }
    }

    /// The earliest time the loop must wake up for, if any entry is armed.
    pub fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops the next entry due at or before `now`: `(key, generation, armed_at)`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, Instant)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                let Reverse((at, key, generation)) = self.heap.pop()?;
                Some((key, generation, at))
            }
            _ => None,
        }
    }

    /// Handles a due entry for a session that still exists: returns true when its deadline
    /// has really passed (the phase must time out); re-arms it when the deadline moved later.
    pub fn is_expired(
        &mut self,
        d: &mut Deadline,
        key: usize,
        generation: u64,
        armed_at: Instant,
        now: Instant,
    ) -> bool {
        if d.armed != Some(armed_at) {
            return false; // a stale entry; the live one is elsewhere in the heap
        }
        d.armed = None;
        match d.at {
            Some(at) if at <= now => true,
            Some(at) => {
                d.armed = Some(at);
                self.heap.push(Reverse((at, key, generation)));
                false
            }
            None => false,
        }
    }

    /// Entries in the heap, live and stale.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no entry is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_deadlines_do_not_grow_the_heap_and_fire_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut d = Deadline::default();
        for i in 1..=100 {
            timers.set(&mut d, 7, 1, Some(t0 + Duration::from_secs(i)));
        }
        assert_eq!(timers.len(), 1, "moving a deadline later pushes nothing");
        // The first entry comes due at t0+1s, but the deadline is now t0+100s.
        let (key, g, armed) = timers.pop_due(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((key, g), (7, 1));
        assert!(!timers.is_expired(&mut d, key, g, armed, t0 + Duration::from_secs(1)));
        assert_eq!(timers.next_wake(), Some(t0 + Duration::from_secs(100)));
        let (key, g, armed) = timers.pop_due(t0 + Duration::from_secs(100)).unwrap();
        assert!(timers.is_expired(&mut d, key, g, armed, t0 + Duration::from_secs(100)));
    }

    #[test]
    fn earlier_deadline_wins_and_stale_entry_is_ignored() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut d = Deadline::default();
        timers.set(&mut d, 1, 1, Some(t0 + Duration::from_secs(10)));
        timers.set(&mut d, 1, 1, Some(t0 + Duration::from_secs(2)));
        let (k, g, armed) = timers.pop_due(t0 + Duration::from_secs(2)).unwrap();
        assert!(timers.is_expired(&mut d, k, g, armed, t0 + Duration::from_secs(2)));
        let (k, g, armed) = timers.pop_due(t0 + Duration::from_secs(10)).unwrap();
        assert!(!timers.is_expired(&mut d, k, g, armed, t0 + Duration::from_secs(10)));
        assert!(timers.is_empty());
    }

    #[test]
    fn cleared_deadline_never_fires() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut d = Deadline::default();
        timers.set(&mut d, 3, 9, Some(t0));
        timers.set(&mut d, 3, 9, None);
        let (k, g, armed) = timers.pop_due(t0).unwrap();
        assert!(!timers.is_expired(&mut d, k, g, armed, t0));
    }
}
