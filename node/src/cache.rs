//! Memory for hot segments: the ones served most recently, as they were when their bytes
//! were read from disk and checked against their id.
//!
//! A popular segment is asked for again and again; from here it is served without a disk
//! read, RocksDB's copies or a second BLAKE3 pass. Only checked bytes come in, so what
//! comes out was checked. Bounded by bytes: the least recently used go first.

use std::sync::Arc;

use lru::LruCache;
use medley_core::Hash;
use parking_lot::Mutex;

/// Checked values in memory, at most `budget` bytes of them.
pub(crate) struct HotCache {
    budget: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<Hash, Arc<[u8]>>,
    bytes: usize,
}

impl HotCache {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// The value under `key`, if held; it becomes the most recently used.
    pub(crate) fn get(&self, key: &Hash) -> Option<Arc<[u8]>> {
        self.inner.lock().entries.get(key).cloned()
    }

    /// Whether a value of `len` bytes would be held: not if larger than the whole budget.
    pub(crate) fn would_hold(&self, len: usize) -> bool {
        len <= self.budget && self.budget > 0
    }

    /// Holds `value`, which must be the checked bytes of `key`, pushing out the least
    /// recently used past the budget. A value it [would not hold](Self::would_hold) is not.
    pub(crate) fn insert(&self, key: Hash, value: &[u8]) {
        if !self.would_hold(value.len()) {
            return;
        }
        let value: Arc<[u8]> = Arc::from(value);
        let mut inner = self.inner.lock();
        inner.bytes += value.len();
        if let Some(old) = inner.entries.put(key, value) {
            inner.bytes -= old.len();
        }
        while inner.bytes > self.budget {
            match inner.entries.pop_lru() {
                Some((_, old)) => inner.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &Hash) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.entries.pop(key) {
            inner.bytes -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Hash {
        Hash::of(&[n])
    }

    #[test]
    fn holds_at_most_its_budget_and_drops_the_least_recently_used() {
        let cache = HotCache::new(300);
        for n in 0..3 {
            cache.insert(key(n), &[n; 100]);
        }
        // Touch 0, so 1 is now the least recently used.
        assert_eq!(cache.get(&key(0)).as_deref(), Some(&[0u8; 100][..]));
        cache.insert(key(3), &[3; 100]);
        assert!(cache.get(&key(1)).is_none());
        for n in [0, 2, 3] {
            assert_eq!(cache.get(&key(n)).as_deref(), Some(&[n; 100][..]));
        }
        // The same key again replaces, not adds: three fit still.
        cache.insert(key(3), &[3; 100]);
        assert!(cache.get(&key(0)).is_some() && cache.get(&key(2)).is_some());
        // A value larger than the budget is not held, and pushes nothing out.
        cache.insert(key(9), &[9; 301]);
        assert!(cache.get(&key(9)).is_none());
        assert!(cache.get(&key(0)).is_some());
        cache.remove(&key(0));
        assert!(cache.get(&key(0)).is_none());
        // Room freed by the removal: a fourth fits without pushing another out.
        cache.insert(key(4), &[4; 100]);
        for n in [2, 3, 4] {
            assert!(cache.get(&key(n)).is_some(), "{n}");
        }
    }

    #[test]
    fn a_zero_budget_holds_nothing() {
        let cache = HotCache::new(0);
        assert!(!cache.would_hold(0));
        cache.insert(key(1), &[1; 10]);
        cache.insert(key(2), &[]);
        assert!(cache.get(&key(1)).is_none() && cache.get(&key(2)).is_none());
    }
}
