//! The listener's persistent cache of played segments: one file per segment under
//! `<data_dir>/cache/`, named by its id, bounded in bytes, kept across restarts.
//!
//! Eviction is segmented LRU, which weighs recency and frequency: a segment enters on
//! probation; a second use promotes it to the protected part (at most 80 % of the bytes,
//! its least recently used spill back to probation); room is made by evicting probation's
//! least recently used first. A one-off play so never pushes out what is played again and
//! again.
//!
//! Every read re-hashes the file: a corrupt entry (disk rot, a truncated write, a file
//! changed behind its back) is deleted and reported as a miss, so the fetcher fetches it
//! again. Writes go to a temporary file renamed into place, so a crash never leaves half a
//! segment under its name. The songs held whole are listed in `songs.json`, which is what
//! the listener announces to the tracker when it serves its cache.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use medley_core::{SegmentId, SongId};
use parking_lot::Mutex;

use crate::cache::{CacheStats, SegmentStore};
use crate::error::ClientError;

/// Share of the capacity the protected (used more than once) part may take.
const PROTECTED_SHARE: f64 = 0.8;
const SONGS_FILE: &str = "songs.json";

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    tick: u64,
    protected: bool,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<SegmentId, Entry>,
    probation: BTreeMap<u64, SegmentId>,
    protected: BTreeMap<u64, SegmentId>,
    bytes: u64,
    protected_bytes: u64,
    clock: u64,
    /// Songs whose every segment was cached, with their segments.
    songs: BTreeMap<SongId, Vec<SegmentId>>,
}

impl Index {
    fn unlink(&mut self, id: &SegmentId) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        if e.protected {
            self.protected.remove(&e.tick);
            self.protected_bytes -= e.size;
        } else {
            self.probation.remove(&e.tick);
        }
        self.bytes -= e.size;
        Some(e)
    }

    fn link(&mut self, id: SegmentId, size: u64, protected: bool) {
        self.clock += 1;
        let tick = self.clock;
        self.entries.insert(
            id,
            Entry {
                size,
                tick,
                protected,
            },
        );
        if protected {
            self.protected.insert(tick, id);
            self.protected_bytes += size;
        } else {
            self.probation.insert(tick, id);
        }
        self.bytes += size;
    }

    /// Demotes protected entries, oldest first, until the protected part fits its share.
    fn rebalance(&mut self, capacity: u64) {
        let cap = (capacity as f64 * PROTECTED_SHARE) as u64;
        while self.protected_bytes > cap {
            let Some((_, id)) = self.protected.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.get(&id).copied() {
                self.protected_bytes -= e.size;
                self.bytes -= e.size;
                self.entries.remove(&id);
                self.link(id, e.size, false);
            }
        }
    }

    /// The next entry to evict: probation's oldest, else protected's oldest.
    fn victim(&self) -> Option<SegmentId> {
        self.probation
            .first_key_value()
            .or_else(|| self.protected.first_key_value())
            .map(|(_, id)| *id)
    }
}

/// A bounded, persistent, verified cache of segments on disk.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    /// Songs fetched lately, most recent last, with their segments: what it holds of each
    /// is announced while they arrive (at most [`medley_api::MAX_PARTIAL_SONGS`]).
    fetching: Mutex<VecDeque<(SongId, Vec<SegmentId>)>>,
    /// Woken when a segment is added.
    added: tokio::sync::Notify,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DiskCache {
    /// Opens (or creates) the cache in `dir`, at most `capacity` bytes. What an earlier run
    /// left is indexed (oldest files first to go); files that are not segments are ignored
    /// and leftovers of interrupted writes removed.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut found: Vec<(std::time::SystemTime, SegmentId, u64)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Ok(id) = name.parse::<SegmentId>() else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((when, id, meta.len()));
        }
        found.sort();
        let mut index = Index::default();
        for (_, id, size) in found {
            index.link(id, size, false);
        }
        if let Ok(bytes) = std::fs::read(dir.join(SONGS_FILE)) {
            index.songs = serde_json::from_slice(&bytes).unwrap_or_default();
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            capacity,
            index: Mutex::new(index),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            fetching: Mutex::new(VecDeque::new()),
            added: tokio::sync::Notify::new(),
        };
        cache.make_room(0);
        Ok(cache)
    }

    fn path(&self, id: &SegmentId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Evicts until `incoming` more bytes fit.
    fn make_room(&self, incoming: u64) {
        let mut doomed = Vec::new();
        {
            let mut idx = self.index.lock();
            while idx.bytes + incoming > self.capacity {
                let Some(id) = idx.victim() else { break };
                idx.unlink(&id);
                doomed.push(id);
            }
            if !doomed.is_empty() {
                let gone: BTreeSet<SegmentId> = doomed.iter().copied().collect();
                idx.songs
                    .retain(|_, segs| !segs.iter().any(|s| gone.contains(s)));
            }
        }
        for id in doomed {
            let _ = std::fs::remove_file(self.path(&id));
        }
    }

    /// Corrupt entries found (and deleted) since open.
    pub fn corrupt_found(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Records that every segment of `song` is cached, if they all are.
    pub fn note_song(&self, song: SongId, segments: &[SegmentId]) {
        let snapshot = {
            let mut idx = self.index.lock();
            if !segments.iter().all(|s| idx.entries.contains_key(s)) {
                return;
            }
            if idx.songs.get(&song).is_some_and(|s| s == segments) {
                return;
            }
            idx.songs.insert(song, segments.to_vec());
            serde_json::to_vec(&idx.songs).unwrap_or_default()
        };
        self.write_songs(&snapshot);
    }

    fn write_songs(&self, bytes: &[u8]) {
        let tmp = self.dir.join(format!("{SONGS_FILE}.tmp"));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join(SONGS_FILE));
        }
    }

    /// Songs held whole now.
    pub fn songs(&self) -> Vec<SongId> {
        let idx = self.index.lock();
        idx.songs
            .iter()
            .filter(|(_, segs)| segs.iter().all(|s| idx.entries.contains_key(s)))
            .map(|(song, _)| *song)
            .collect()
    }

    /// Records that `song` (with these segments) is being fetched into the cache, so that
    /// the segments it holds of it are announced as they arrive.
    pub fn note_fetching(&self, song: SongId, segments: &[SegmentId]) {
        let mut f = self.fetching.lock();
        f.retain(|(s, _)| *s != song);
        if f.len() >= medley_api::MAX_PARTIAL_SONGS {
            f.pop_front();
        }
        f.push_back((song, segments.to_vec()));
    }

    /// What it holds to serve: the songs held whole, and of the songs fetched lately those
    /// held in part with the segments held (most recent first). A song fetched whole is
    /// noted as held whole from then on.
    pub fn holdings(&self) -> (Vec<SongId>, Vec<medley_api::PartialCopy>) {
        let fetching: Vec<(SongId, Vec<SegmentId>)> =
            self.fetching.lock().iter().rev().cloned().collect();
        // What is held of each, read under one lock.
        let held: Vec<Vec<usize>> = {
            let idx = self.index.lock();
            fetching
                .iter()
                .map(|(_, segments)| {
                    (0..segments.len())
                        .filter(|&i| idx.entries.contains_key(&segments[i]))
                        .collect()
                })
                .collect()
        };
        let mut partial = Vec::new();
        for ((song, segments), held) in fetching.into_iter().zip(held) {
            if held.len() == segments.len() {
                self.note_song(song, &segments);
            } else if !held.is_empty() {
                partial.push(medley_api::PartialCopy {
                    song,
                    have: medley_api::HaveMap::from_held(segments.len(), held),
                });
            }
        }
        (self.songs(), partial)
    }

    /// Woken whenever a segment is added.
    pub fn added(&self) -> &tokio::sync::Notify {
        &self.added
    }

    /// Whether segment `id` is held (without reading it).
    pub fn contains(&self, id: &SegmentId) -> bool {
        self.index.lock().entries.contains_key(id)
    }

    fn forget(&self, id: &SegmentId) {
        let mut idx = self.index.lock();
        idx.unlink(id);
        idx.songs.retain(|_, segs| !segs.contains(id));
    }
}

impl SegmentStore for DiskCache {
    fn get(&self, id: &SegmentId) -> Option<bytes::Bytes> {
        if !self.contains(id) {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(data) if id.matches(&data) => {
                let mut idx = self.index.lock();
                if let Some(e) = idx.unlink(id) {
                    // A second use: protected from one-off plays.
                    idx.link(*id, e.size, true);
                    idx.rebalance(self.capacity);
                }
                drop(idx);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(bytes::Bytes::from(data))
            }
            Ok(_) => {
                tracing::warn!(segment = %id, path = %path.display(), "corrupt cache entry: deleted, it will be fetched again");
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.forget(id);
                let _ = std::fs::remove_file(&path);
                None
            }
            Err(e) => {
                tracing::debug!(segment = %id, error = %e, "cache entry unreadable");
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.forget(id);
                None
            }
        }
    }

    fn insert(&self, id: SegmentId, data: bytes::Bytes) {
        let size = data.len() as u64;
        if size > self.capacity || self.contains(&id) || !id.matches(&data) {
            return;
        }
        self.make_room(size);
        let path = self.path(&id);
        let tmp = self.dir.join(format!("{id}.tmp"));
        let written = std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write to the cache");
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.index.lock().link(id, size, false);
        self.added.notify_one();
    }

    fn stats(&self) -> CacheStats {
        let idx = self.index.lock();
        CacheStats {
            segments: idx.entries.len(),
            bytes: idx.bytes,
            capacity: self.capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u8, len: usize) -> (SegmentId, bytes::Bytes) {
        let data = bytes::Bytes::from(vec![n; len]);
        (SegmentId::of(&data), data)
    }

    #[test]
    fn survives_a_reopen_and_stays_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<_> = (0..10).map(|n| seg(n, 1000)).collect();
        {
            let c = DiskCache::open(dir.path(), 5_000).unwrap();
            for (id, data) in &ids {
                c.insert(*id, data.clone());
                assert!(c.stats().bytes <= 5_000);
            }
            assert_eq!(c.stats().segments, 5);
        }
        let c = DiskCache::open(dir.path(), 5_000).unwrap();
        assert_eq!(c.stats().segments, 5, "what was cached is still there");
        for (id, data) in &ids[5..] {
            assert_eq!(c.get(id).as_ref(), Some(data));
        }
        assert_eq!(c.get(&ids[0].0), None, "evicted first");
        // A smaller bound at open evicts down to it.
        let c = DiskCache::open(dir.path(), 2_000).unwrap();
        assert_eq!(c.stats().segments, 2);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "evicted files are deleted");
    }

    #[test]
    fn segments_used_twice_outlive_a_stream_of_one_offs() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 10_000).unwrap();
        let (fav, fav_data) = seg(200, 1000);
        c.insert(fav, fav_data);
        assert!(c.get(&fav).is_some(), "used a second time: protected");
        for n in 0..30 {
            let (id, data) = seg(n, 1000);
            c.insert(id, data);
        }
        assert!(
            c.get(&fav).is_some(),
            "30 one-off segments did not push it out"
        );
        assert!(c.stats().bytes <= 10_000);
    }

    #[test]
    fn a_corrupt_entry_is_deleted_and_missed() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 10_000).unwrap();
        let (id, data) = seg(7, 1000);
        c.insert(id, data.clone());
        let song = SongId::of(b"song");
        c.note_song(song, &[id]);
        assert_eq!(c.songs(), vec![song]);
        let mut rotten = data.to_vec();
        rotten[10] ^= 1;
        std::fs::write(dir.path().join(id.to_string()), &rotten).unwrap();
        assert_eq!(c.get(&id), None);
        assert_eq!(c.corrupt_found(), 1);
        assert!(!dir.path().join(id.to_string()).exists());
        assert!(c.songs().is_empty(), "no longer held whole");
        c.insert(id, data.clone());
        assert_eq!(c.get(&id), Some(data), "fetched again, served again");
    }

    #[test]
    fn bytes_that_are_not_the_segment_are_never_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 10_000).unwrap();
        let (id, _) = seg(1, 1000);
        c.insert(id, bytes::Bytes::from(vec![2u8; 1000]));
        assert_eq!(c.stats().segments, 0);
        std::fs::write(dir.path().join("x.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hi").unwrap();
        let c = DiskCache::open(dir.path(), 10_000).unwrap();
        assert_eq!(c.stats().segments, 0);
        assert!(
            !dir.path().join("x.tmp").exists(),
            "interrupted writes are removed"
        );
    }
}
