//! A bounded in-memory cache of verified segments, shared by every song a process plays.
//!
//! Keys are segment ids, so a segment is stored once however many songs hold it, and a value
//! is only ever inserted after it was rebuilt and checked against its id. Eviction is least
//! recently used, by bytes.

use std::collections::{BTreeMap, HashMap};

use medley_core::SegmentId;
use parking_lot::Mutex;

/// Where a fetcher keeps verified segments and looks them up before fetching. Only
/// segments checked against their id are inserted; an implementation that reads from disk
/// checks them again.
pub trait SegmentStore: Send + Sync + std::fmt::Debug {
    /// The segment, if held.
    fn get(&self, id: &SegmentId) -> Option<bytes::Bytes>;
    /// Keeps a verified segment (or not, if it does not fit).
    fn insert(&self, id: SegmentId, data: bytes::Bytes);
    /// Counters.
    fn stats(&self) -> CacheStats;
}

impl SegmentStore for SegmentCache {
    fn get(&self, id: &SegmentId) -> Option<bytes::Bytes> {
        SegmentCache::get(self, id)
    }

    fn insert(&self, id: SegmentId, data: bytes::Bytes) {
        SegmentCache::insert(self, id, data);
    }

    fn stats(&self) -> CacheStats {
        SegmentCache::stats(self)
    }
}

/// Segments kept in memory, at most `capacity` bytes of them.
#[derive(Debug)]
pub struct SegmentCache {
    capacity: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Segment → (bytes, last use).
    entries: HashMap<SegmentId, (bytes::Bytes, u64)>,
    /// Last use → segment, oldest first.
    by_use: BTreeMap<u64, SegmentId>,
    clock: u64,
    bytes: u64,
    hits: u64,
    misses: u64,
}

/// Counters of a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Segments held.
    pub segments: usize,
    /// Bytes held.
    pub bytes: u64,
    /// Most bytes held.
    pub capacity: u64,
    /// Lookups that found their segment.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
}

impl SegmentCache {
    /// An empty cache of at most `capacity` bytes (0 keeps nothing).
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The segment, if held; marks it used.
    pub fn get(&self, id: &SegmentId) -> Option<bytes::Bytes> {
        let mut g = self.inner.lock();
        g.clock += 1;
        let now = g.clock;
        let Some((data, used)) = g.entries.get_mut(id) else {
            g.misses += 1;
            return None;
        };
        let (data, old) = (data.clone(), std::mem::replace(used, now));
        g.by_use.remove(&old);
        g.by_use.insert(now, *id);
        g.hits += 1;
        Some(data)
    }

    /// Keeps a verified segment, evicting the least recently used past the capacity. A
    /// segment larger than the whole cache is not kept.
    pub fn insert(&self, id: SegmentId, data: bytes::Bytes) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        let mut g = self.inner.lock();
        g.clock += 1;
        let now = g.clock;
        if let Some((_, old)) = g.entries.insert(id, (data, now)) {
            g.by_use.remove(&old);
            g.bytes -= len;
        }
        g.by_use.insert(now, id);
        g.bytes += len;
        while g.bytes > self.capacity {
            let Some((_, victim)) = g.by_use.pop_first() else {
                break;
            };
            if let Some((d, _)) = g.entries.remove(&victim) {
                g.bytes -= d.len() as u64;
            }
        }
    }

    /// Its counters.
    pub fn stats(&self) -> CacheStats {
        let g = self.inner.lock();
        CacheStats {
            segments: g.entries.len(),
            bytes: g.bytes,
            capacity: self.capacity,
            hits: g.hits,
            misses: g.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u8, len: usize) -> (SegmentId, bytes::Bytes) {
        let data = vec![n; len];
        (SegmentId::of(&data), bytes::Bytes::from(data))
    }

    #[test]
    fn keeps_within_capacity_and_evicts_least_recently_used() {
        let c = SegmentCache::new(300);
        let (a, b, d) = (seg(1, 100), seg(2, 100), seg(3, 100));
        c.insert(a.0, a.1.clone());
        c.insert(b.0, b.1.clone());
        c.insert(d.0, d.1.clone());
        assert_eq!(c.stats().bytes, 300);
        // Use `a`, so `b` is now the oldest.
        assert_eq!(c.get(&a.0).as_deref(), Some(&a.1[..]));
        let e = seg(4, 100);
        c.insert(e.0, e.1);
        assert!(c.get(&b.0).is_none(), "the least recently used goes first");
        assert!(c.get(&a.0).is_some() && c.get(&d.0).is_some() && c.get(&e.0).is_some());
        let s = c.stats();
        assert_eq!((s.segments, s.bytes), (3, 300));
        assert_eq!((s.hits, s.misses), (4, 1));
    }

    #[test]
    fn reinserting_does_not_double_count_and_oversized_is_refused() {
        let c = SegmentCache::new(150);
        let a = seg(1, 100);
        c.insert(a.0, a.1.clone());
        c.insert(a.0, a.1.clone());
        assert_eq!(c.stats().bytes, 100);
        let big = seg(2, 151);
        c.insert(big.0, big.1);
        assert!(c.get(&big.0).is_none());
        assert_eq!(c.stats().bytes, 100);
    }
}
