//! The most recent exchanges, kept in memory for the admin API (`/api/exchanges`, its
//! server-sent-events stream, the HAR export) and counted for `/api/stats`.
//!
//! The log thread pushes every record it gets (the event loops never touch this); readers take a
//! short lock to copy what they need. A bounded ring: the oldest record goes when a new one comes
//! and [`Exchanges::new`]'s capacity is reached. Each record gets a sequence number, so a reader
//! asks for "everything after N" and a stream follows with a condition variable.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::record::ApiRecord;

/// Records kept by default.
pub const DEFAULT_CAPACITY: usize = 1000;
/// Most captured heads and bodies (`[log] capture_bodies`) the ring holds in all; past it the
/// oldest records lose their captures (the records themselves stay).
pub const CAPTURE_BUDGET: usize = 64 << 20;

/// Totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub exchanges: u64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx; then no status at all.
    pub by_class: [u64; 6],
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug)]
struct Inner {
    ring: VecDeque<(u64, ApiRecord)>,
    /// The sequence number the next record gets (the first is 1).
    next: u64,
    totals: Totals,
    /// Bytes of captures the ring holds.
    captured: usize,
}

/// The ring and the totals.
#[derive(Debug)]
pub struct Exchanges {
    inner: Mutex<Inner>,
    arrived: Condvar,
    capacity: usize,
    capture_budget: usize,
    started: Instant,
}

impl Exchanges {
    pub fn new(capacity: usize) -> Arc<Exchanges> {
        Exchanges::with_capture_budget(capacity, CAPTURE_BUDGET)
    }

    /// A ring of `capacity` records holding at most `capture_budget` bytes of captures.
    pub fn with_capture_budget(capacity: usize, capture_budget: usize) -> Arc<Exchanges> {
        Arc::new(Exchanges {
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.min(4096)),
                next: 1,
                totals: Totals::default(),
                captured: 0,
            }),
            arrived: Condvar::new(),
            capacity: capacity.max(1),
            capture_budget,
            started: Instant::now(),
        })
    }

    /// Keeps `record` (dropping the oldest past capacity) and wakes the streams.
    pub fn push(&self, record: &ApiRecord) {
        let mut inner = self.lock();
        let seq = inner.next;
        inner.next += 1;
        let totals = &mut inner.totals;
        totals.exchanges += 1;
        let class = match record.status {
            Some(s @ 100..=599) => usize::from(s / 100) - 1,
            _ => 5,
        };
        totals.by_class[class] += 1;
        totals.bytes_in += record.bytes_in;
        totals.bytes_out += record.bytes_out;
        if inner.ring.len() == self.capacity
            && let Some((_, old)) = inner.ring.pop_front()
        {
            inner.captured -= captured_bytes(&old);
        }
        inner.captured += captured_bytes(record);
        inner.ring.push_back((seq, record.clone()));
        // Over budget: the oldest captures go first (the newest record keeps its own unless it
        // alone is over the budget).
        let mut i = 0;
        while inner.captured > self.capture_budget && i < inner.ring.len() {
            let dropped = inner.ring[i].1.capture.take().map_or(0, |c| c.bytes());
            inner.captured -= dropped;
            i += 1;
        }
        drop(inner);
        self.arrived.notify_all();
    }

    /// Records numbered after `since`, oldest first; the most recent `limit` of them.
    pub fn after(&self, since: u64, limit: usize) -> Vec<(u64, ApiRecord)> {
        let inner = self.lock();
        let newer = inner.ring.iter().filter(|(seq, _)| *seq > since).count();
        inner
            .ring
            .iter()
            .filter(|(seq, _)| *seq > since)
            .skip(newer.saturating_sub(limit))
            .cloned()
            .collect()
    }

    /// Like [`Exchanges::after`] (all of them), but waits up to `timeout` for one to arrive.
    pub fn wait_after(&self, since: u64, timeout: Duration) -> Vec<(u64, ApiRecord)> {
        let inner = self.lock();
        let (inner, _) = self
            .arrived
            .wait_timeout_while(inner, timeout, |i| i.next <= since + 1)
            .unwrap_or_else(PoisonError::into_inner);
        inner
            .ring
            .iter()
            .filter(|(seq, _)| *seq > since)
            .cloned()
            .collect()
    }

    /// The number the last record got (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.lock().next - 1
    }

    pub fn totals(&self) -> Totals {
        self.lock().totals
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Bytes of captured heads and bodies held now.
    pub fn captured_bytes(&self) -> usize {
        self.lock().captured
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn captured_bytes(record: &ApiRecord) -> usize {
    record.capture.as_ref().map_or(0, |c| c.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apilog::{Kind, Text};
    use std::time::SystemTime;

    fn record(status: Option<u16>) -> ApiRecord {
        ApiRecord {
            ts: SystemTime::now(),
            client: "127.0.0.1:1".parse().unwrap(),
            method: Text::from_str("GET"),
            host: Text::from_str("a.test"),
            path: Some(Text::from_str("/")),
            status,
            route: None,
            upstream: None,
            kind: Kind::Http,
            duration: Duration::from_millis(1),
            bytes_in: 10,
            bytes_out: 20,
            error: None,
            capture: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_numbers_them() {
        let ex = Exchanges::new(3);
        for status in [200, 404, 502, 101] {
            ex.push(&record(Some(status)));
        }
        ex.push(&record(None));
        let all = ex.after(0, 100);
        let seqs: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [3, 4, 5], "the oldest two were dropped");
        assert_eq!(ex.after(3, 100).len(), 2);
        assert_eq!(ex.after(0, 1)[0].0, 5, "limit keeps the most recent");
        assert_eq!(ex.last_seq(), 5);
        let totals = ex.totals();
        assert_eq!(totals.exchanges, 5);
        assert_eq!(totals.by_class, [1, 1, 0, 1, 1, 1]);
        assert_eq!((totals.bytes_in, totals.bytes_out), (50, 100));
    }

    #[test]
    fn captures_past_the_budget_are_dropped_oldest_first_and_the_records_kept() {
        use crate::apilog::record::Capture;
        let ex = Exchanges::with_capture_budget(10, 2500);
        for _ in 0..4 {
            let mut r = record(Some(200));
            r.capture = Some(Box::new(Capture {
                request_head: vec![b'h'; 100],
                request_body: Vec::new(),
                response_head: vec![b'h'; 100],
                response_body: vec![b'b'; 800],
                truncated: false,
            }));
            ex.push(&r);
        }
        let kept: Vec<bool> = ex
            .after(0, 10)
            .iter()
            .map(|(_, r)| r.capture.is_some())
            .collect();
        assert_eq!(kept, [false, false, true, true]);
        assert_eq!(ex.captured_bytes(), 2000);
        // Records leaving the ring give their bytes back.
        for _ in 0..10 {
            ex.push(&record(Some(200)));
        }
        assert_eq!(ex.captured_bytes(), 0);
    }

    #[test]
    fn a_waiting_reader_wakes_when_a_record_arrives() {
        let ex = Exchanges::new(8);
        assert!(ex.wait_after(0, Duration::from_millis(10)).is_empty());
        let writer = Arc::clone(&ex);
        let t = std::thread::spawn(move || writer.push(&record(Some(200))));
        let got = ex.wait_after(0, Duration::from_secs(10));
        t.join().unwrap();
        assert_eq!(got.len(), 1);
    }
}
