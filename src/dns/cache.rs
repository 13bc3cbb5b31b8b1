//! Answers kept for their time to live, shared by every event loop and by both resolvers (the
//! `dns_server` client and the system resolver), so a name is looked up once per TTL however
//! many loops and connections need it.
//!
//! Bounded: at most [`Cache::new`]'s capacity names; when full, expired entries go first, then
//! the one closest to expiry. Positive answers are kept for their TTL (capped at an hour);
//! "no such name" and "no address" answers for their negative TTL (RFC 2308), capped at
//! [`MAX_NEGATIVE_TTL`] so a name a developer just created starts working soon; failures that
//! may be transient (SERVFAIL, timeouts) are not kept at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::resolve::ResolveError;

/// Longest a positive answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Longest a negative answer is kept.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// What a lookup found: addresses (IPv6 and IPv4 interleaved, the order to dial them in), or why
/// there are none.
pub type Found = Result<Arc<[IpAddr]>, ResolveError>;

struct Entry {
    found: Found,
    expires: Instant,
}

/// Name -> answer, until each expires.
pub struct Cache {
    map: HashMap<Box<str>, Entry>,
    capacity: usize,
}

impl Cache {
    /// A cache of at most `capacity` names (at least 1).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The live answer for `name` (lowercase), if any; an expired one is dropped.
    pub fn get(&mut self, name: &str, now: Instant) -> Option<Found> {
        let entry = self.map.get(name)?;
        if entry.expires > now {
            return Some(entry.found.clone());
        }
        self.map.remove(name);
        None
    }

    /// Keeps `found` for `ttl` (capped as the module doc says); a zero TTL or a transient
    /// failure keeps nothing.
    pub fn put(&mut self, name: &str, found: Found, ttl: Duration, now: Instant) {
        let ttl = match &found {
            Ok(_) => ttl.min(MAX_TTL),
            Err(ResolveError::NxDomain | ResolveError::NoAddress) => ttl.min(MAX_NEGATIVE_TTL),
            Err(_) => Duration::ZERO,
        };
        if ttl.is_zero() {
            self.map.remove(name);
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(name) {
            self.make_room(now);
        }
        self.map.insert(
            name.into(),
            Entry {
                found,
                expires: now + ttl,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops every expired entry, and if none was, the one expiring soonest.
    fn make_room(&mut self, now: Instant) {
        let before = self.map.len();
        self.map.retain(|_, e| e.expires > now);
        if self.map.len() < before {
            return;
        }
        let soonest = self
            .map
            .iter()
            .min_by_key(|(_, e)| e.expires)
            .map(|(name, _)| name.clone());
        if let Some(name) = soonest {
            self.map.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addrs(last: u8) -> Found {
        Ok(Arc::from([IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))]))
    }

    #[test]
    fn answers_live_for_their_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(8);
        cache.put("a.test", addrs(1), Duration::from_secs(5), t0);
        assert_eq!(
            cache.get("a.test", t0 + Duration::from_secs(4)),
            Some(addrs(1))
        );
        assert_eq!(cache.get("a.test", t0 + Duration::from_secs(5)), None);
        assert!(cache.is_empty(), "the expired entry is dropped");
        cache.put("b.test", addrs(2), Duration::ZERO, t0);
        assert_eq!(cache.get("b.test", t0), None, "TTL 0 is not kept");
    }

    #[test]
    fn negative_answers_are_kept_briefly_and_failures_not_at_all() {
        let t0 = Instant::now();
        let mut cache = Cache::new(8);
        let day = Duration::from_secs(86_400);
        cache.put("gone.test", Err(ResolveError::NxDomain), day, t0);
        let live = t0 + MAX_NEGATIVE_TTL - Duration::from_millis(1);
        assert_eq!(
            cache.get("gone.test", live),
            Some(Err(ResolveError::NxDomain))
        );
        assert_eq!(cache.get("gone.test", t0 + MAX_NEGATIVE_TTL), None);
        cache.put("flaky.test", Err(ResolveError::ServFail), day, t0);
        cache.put("slow.test", Err(ResolveError::Timeout), day, t0);
        assert!(cache.is_empty());
        cache.put("long.test", addrs(3), day, t0);
        assert_eq!(
            cache.get("long.test", t0 + MAX_TTL),
            None,
            "capped at an hour"
        );
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_soonest_to_expire() {
        let t0 = Instant::now();
        let mut cache = Cache::new(2);
        cache.put("a", addrs(1), Duration::from_secs(10), t0);
        cache.put("b", addrs(2), Duration::from_secs(20), t0);
        cache.put("c", addrs(3), Duration::from_secs(30), t0);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a", t0), None, "a expired soonest");
        let later = t0 + Duration::from_secs(25);
        cache.put("d", addrs(4), Duration::from_secs(30), later);
        assert_eq!(cache.get("b", later), None);
        assert_eq!(cache.get("c", later), Some(addrs(3)));
        assert_eq!(cache.get("d", later), Some(addrs(4)));
    }
}
