//! The node's RocksDB store: durable shards, hot segments and node metadata.
//!
//! Laws:
//! - A value is stored only under the BLAKE3 hash of its bytes; a put whose bytes do not
//!   hash to the key is refused and stores nothing.
//! - A read returns bytes only if they hash to their key; anything else is
//!   [`StoreError::Corrupt`], never data.
//! - A put is acknowledged only after RocksDB has synced it to disk (WAL fsync).
//! - Stored bytes (shards + hot segments) never exceed the capacity; a put past it is
//!   [`StoreError::Full`] and stores nothing.
//!
//! Layout: column family `shards` (durable tier, key = `ShardId`), `hot` (whole segments,
//! key = `SegmentId`), `sizes` (tier byte ‖ key → value length, written in the same batch as
//! the value, so presence and size checks never read audio), `meta` (counters and node
//! state). Values of 1 KiB or more go to blob files, so compaction rewrites keys, not audio. Audio is already compressed, so RocksDB
//! compression is off. The byte count lives in `meta` as a merge counter written in the same
//! batch as each put or delete, so it survives crashes and concurrent writers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use medley_core::Hash;
use medley_core::protocol::MAX_BLOB_SIZE;

use crate::cache::HotCache;
use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, DBCompressionType, MergeOperands, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

const CF_SHARDS: &str = "shards";
const CF_HOT: &str = "hot";
const CF_META: &str = "meta";
const CF_SIZES: &str = "sizes";
const KEY_USED: &[u8] = b"used_bytes";
const KEY_FORMAT: &[u8] = b"format_version";
/// Version of the on-disk layout this code writes.
pub const STORE_FORMAT_VERSION: u32 = 1;
/// Number of lock stripes serialising check-and-put on the same key.
const STRIPES: usize = 64;

/// Which tier a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Erasure-coded shards, keyed by `ShardId`.
    Durable,
    /// Whole segments of popular songs, keyed by `SegmentId`.
    Hot,
}

impl Tier {
    fn cf(self) -> &'static str {
        match self {
            Self::Durable => CF_SHARDS,
            Self::Hot => CF_HOT,
        }
    }

    fn size_key(self, key: &Hash) -> [u8; 33] {
        let mut k = [0u8; 33];
        k[0] = match self {
            Self::Durable => b'd',
            Self::Hot => b'h',
        };
        k[1..].copy_from_slice(key.as_bytes());
        k
    }
}

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The value was written.
    Stored,
    /// The key was already present (and verified); nothing changed.
    AlreadyPresent,
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Largest number of value bytes kept (shards + hot segments).
    pub capacity: u64,
    /// Values at least this long go to blob files. 1 KiB: every shard, no metadata.
    pub min_blob_size: u64,
    /// RocksDB block cache for keys and index blocks. 32 MiB is plenty for ~10^6 keys.
    pub block_cache: usize,
    /// Bytes of hot segments kept in memory once read and checked ([`HotCache`]), so a
    /// popular segment is served without a disk read or a second check. Durable shards are
    /// not kept: each read of one is from disk, so the scrubber sees what is there. 0: none.
    pub hot_cache: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            capacity: 10 * 1024 * 1024 * 1024,
            min_blob_size: 1024,
            block_cache: 32 * 1024 * 1024,
            hot_cache: 256 * 1024 * 1024,
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The database was written by a newer version.
    #[error(
        "store at {path} has format version {found}, this build reads up to {STORE_FORMAT_VERSION}"
    )]
    Format {
        /// The database directory.
        path: PathBuf,
        /// Version found on disk.
        found: u32,
    },
    /// A RocksDB operation failed.
    #[error("store {op} failed: {source}")]
    Db {
        /// The operation.
        op: &'static str,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The bytes given do not hash to the key they were put under.
    #[error("bytes do not hash to {key}")]
    HashMismatch {
        /// The key.
        key: Hash,
    },
    /// The value is larger than any blob the protocol can carry.
    #[error("value of {size} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Size given.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Storing the value would exceed the capacity.
    #[error(
        "store full: {size} more bytes would exceed capacity ({used} of {capacity} bytes used)"
    )]
    Full {
        /// Bytes asked for.
        size: u64,
        /// Bytes in use.
        used: u64,
        /// Capacity.
        capacity: u64,
    },
    /// Stored bytes are damaged: they do not hash to their key, or RocksDB's checksums failed.
    #[error("stored value {key} is corrupt: {detail}")]
    Corrupt {
        /// The key.
        key: Hash,
        /// What was wrong.
        detail: String,
    },
}

/// Share of the capacity in use (percent) from which the store counts as nearly full.
pub(crate) const NEARLY_FULL_PERCENT: u128 = 90;

/// The node's store. Thread-safe; share it behind an `Arc`.
pub struct Store {
    db: DB,
    path: PathBuf,
    capacity: u64,
    used: AtomicU64,
    /// Durable shards stored, counted at open and kept up to date by puts and deletes.
    shards: AtomicU64,
    /// Hot segments stored, likewise.
    hot: AtomicU64,
    stripes: Vec<Mutex<()>>,
    /// Hot segments read and checked most recently.
    hot_cache: HotCache,
    /// Set while the store is nearly full, so the warning is logged once per crossing.
    warned_full: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("capacity", &self.capacity)
            .field("used", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

// RocksDB's merge operators answer an Option: `None` would fail the merge.
#[allow(clippy::unnecessary_wraps)]
fn add_counter(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut total = existing.map_or(0, decode_i64);
    for op in operands {
        total = total.wrapping_add(decode_i64(op));
    }
    Some(total.to_le_bytes().to_vec())
}

fn decode_i64(bytes: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    i64::from_le_bytes(buf)
}

fn db_err(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

impl Store {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>, config: &StoreConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_compression_type(DBCompressionType::None);
        // Background work is bounded: two cores are the design target.
        db_opts.increase_parallelism(2);

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(config.block_cache));
        table.set_bloom_filter(10.0, false);

        let mut blob_opts = Options::default();
        blob_opts.set_compression_type(DBCompressionType::None);
        blob_opts.set_enable_blob_files(true);
        blob_opts.set_min_blob_size(config.min_blob_size);
        blob_opts.set_blob_compression_type(DBCompressionType::None);
        blob_opts.set_enable_blob_gc(true);
        blob_opts.set_block_based_table_factory(&table);

        let mut sizes_opts = Options::default();
        sizes_opts.set_compression_type(DBCompressionType::None);
        sizes_opts.set_block_based_table_factory(&table);

        let mut meta_opts = Options::default();
        meta_opts.set_compression_type(DBCompressionType::None);
        meta_opts.set_merge_operator_associative("medley_add_i64", add_counter);

        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_SHARDS, blob_opts.clone()),
            ColumnFamilyDescriptor::new(CF_HOT, blob_opts),
            ColumnFamilyDescriptor::new(CF_SIZES, sizes_opts),
            ColumnFamilyDescriptor::new(CF_META, meta_opts),
        ];
        let db =
            DB::open_cf_descriptors(&db_opts, &path, cfs).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let store = Self {
            db,
            path,
            capacity: config.capacity,
            used: AtomicU64::new(0),
            shards: AtomicU64::new(0),
            hot: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hot_cache: HotCache::new(config.hot_cache),
            warned_full: std::sync::atomic::AtomicBool::new(false),
        };
        store.check_format()?;
        let used = store.read_used()?;
        store.used.store(used, Ordering::SeqCst);
        for tier in [Tier::Durable, Tier::Hot] {
            let n = store.count_keys(tier)?;
            store.count_of(tier).store(n, Ordering::SeqCst);
        }
        Ok(store)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        // Every column family is created at open; a missing one means a broken database.
        self.db.cf_handle(name).ok_or_else(|| StoreError::Corrupt {
            key: Hash::of(name.as_bytes()),
            detail: format!("column family {name} is missing"),
        })
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let meta = self.cf(CF_META)?;
        match self
            .db
            .get_cf(meta, KEY_FORMAT)
            .map_err(db_err("read format"))?
        {
            None => self
                .db
                .put_cf_opt(
                    meta,
                    KEY_FORMAT,
                    STORE_FORMAT_VERSION.to_le_bytes(),
                    &sync_writes(),
                )
                .map_err(db_err("write format")),
            Some(v) => {
                let found = u32::from_le_bytes(
                    v.get(..4)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or([0xff; 4]),
                );
                if found > STORE_FORMAT_VERSION {
                    Err(StoreError::Format {
                        path: self.path.clone(),
                        found,
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    fn read_used(&self) -> Result<u64, StoreError> {
        let meta = self.cf(CF_META)?;
        let v = self
            .db
            .get_cf(meta, KEY_USED)
            .map_err(db_err("read usage"))?;
        Ok(v.map_or(0, |v| decode_i64(&v).max(0) as u64))
    }

    fn stripe(&self, key: &Hash) -> &Mutex<()> {
        &self.stripes[usize::from(key.as_bytes()[0]) % STRIPES]
    }

    /// Stores `bytes` under `key` in `tier`, after checking that they hash to `key`.
    pub fn put(&self, tier: Tier, key: Hash, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
        if bytes.len() > MAX_BLOB_SIZE {
            return Err(StoreError::TooLarge {
                size: bytes.len(),
                max: MAX_BLOB_SIZE,
            });
        }
        if !key.matches(bytes) {
            return Err(StoreError::HashMismatch { key });
        }
        let cf = self.cf(tier.cf())?;
        let _guard = self.stripe(&key).lock();
        // Present according to the index: read it back from disk, so a damaged copy gets
        // replaced (not from memory, which holds what the disk held when it was read).
        let existing = match self.size_of(tier, key)? {
            Some(_) => self.read(tier, key),
            None => Ok(None),
        };
        match existing {
            Ok(Some(_)) => return Ok(PutOutcome::AlreadyPresent),
            Ok(None) => {}
            // A damaged copy is replaced by the good bytes we were just given.
            Err(StoreError::Corrupt { .. }) => {
                self.delete_locked(tier, key)?;
            }
            Err(e) => return Err(e),
        }
        let size = bytes.len() as u64;
        self.reserve(size)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key.as_bytes(), bytes);
        batch.put_cf(
            self.cf(CF_SIZES)?,
            tier.size_key(&key),
            (bytes.len() as u32).to_le_bytes(),
        );
        batch.merge_cf(self.cf(CF_META)?, KEY_USED, (size as i64).to_le_bytes());
        if let Err(source) = self.db.write_opt(batch, &sync_writes()) {
            self.used.fetch_sub(size, Ordering::SeqCst);
            return Err(StoreError::Db { op: "put", source });
        }
        self.count_of(tier).fetch_add(1, Ordering::SeqCst);
        self.warn_if_nearly_full();
        Ok(PutOutcome::Stored)
    }

    /// Whether at least 90 % of the capacity is used: writes will soon be
    /// refused.
    pub fn nearly_full(&self) -> bool {
        u128::from(self.used()) * 100 >= u128::from(self.capacity) * NEARLY_FULL_PERCENT
    }

    /// Logs a warning when the store crosses into nearly full (once per crossing).
    fn warn_if_nearly_full(&self) {
        let full = self.nearly_full();
        if full && !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                used = self.used(),
                capacity = self.capacity,
                "the store is {NEARLY_FULL_PERCENT} % full: writes past its capacity will be \
                 refused; raise `capacity` or add disk"
            );
        } else if !full {
            self.warned_full.store(false, Ordering::Relaxed);
        }
    }

    fn reserve(&self, size: u64) -> Result<(), StoreError> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(size).filter(|&n| n <= self.capacity)
            })
            .map(|_| ())
            .map_err(|used| StoreError::Full {
                size,
                used,
                capacity: self.capacity,
            })
    }

    /// Reads the value under `key` in `tier`; `Ok(None)` if absent. Bytes read from disk
    /// that do not hash to `key` are [`StoreError::Corrupt`]. A hot segment read and checked
    /// recently comes from memory ([`HotCache`]).
    pub fn get(&self, tier: Tier, key: Hash) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.get_in_memory(tier, key) {
            return Ok(Some(value));
        }
        let value = self.read(tier, key)?;
        if tier == Tier::Hot
            && let Some(value) = &value
            && self.hot_cache.would_hold(value.len())
        {
            // Under the key's lock and only if still stored: a delete that ran meanwhile
            // must not be undone in memory.
            let _guard = self.stripe(&key).lock();
            if self.size_of(tier, key)?.is_some() {
                self.hot_cache.insert(key, value);
            }
        }
        Ok(value)
    }

    /// The value under `key` in `tier` if it is in memory (a hot segment read and checked
    /// recently), without waiting for the disk, so it may run where blocking must not.
    /// `None` otherwise, whether or not it is stored.
    pub fn get_in_memory(&self, tier: Tier, key: Hash) -> Option<Vec<u8>> {
        match tier {
            Tier::Hot => self.hot_cache.get(&key).map(|v| v.to_vec()),
            Tier::Durable => None,
        }
    }

    /// Reads `key` from disk and checks it.
    fn read(&self, tier: Tier, key: Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.cf(tier.cf())?;
        // Every value is checked against its BLAKE3 key below, which catches anything a
        // CRC would; RocksDB's own CRC32C over the blob cost 10% of a node's CPU when serving.
        let mut opts = ReadOptions::default();
        opts.set_verify_checksums(false);
        let value = match self.db.get_pinned_cf_opt(cf, key.as_bytes(), &opts) {
            Ok(v) => v,
            Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => {
                return Err(StoreError::Corrupt {
                    key,
                    detail: e.to_string(),
                });
            }
            Err(source) => return Err(StoreError::Db { op: "get", source }),
        };
        match value {
            None => Ok(None),
            Some(v) if key.matches(&v) => Ok(Some(v.to_vec())),
            Some(v) => Err(StoreError::Corrupt {
                key,
                detail: format!("{} stored bytes hash to {}", v.len(), Hash::of(&v)),
            }),
        }
    }

    /// Whether `key` is present in `tier` (from the index; not verified, use [`Store::get`]
    /// to read).
    pub fn contains(&self, tier: Tier, key: Hash) -> Result<bool, StoreError> {
        Ok(self.size_of(tier, key)?.is_some())
    }

    /// The stored length of `key` in `tier`, from the index.
    pub fn size_of(&self, tier: Tier, key: Hash) -> Result<Option<u32>, StoreError> {
        let cf = self.cf(CF_SIZES)?;
        let k = tier.size_key(&key);
        if !self.db.key_may_exist_cf(cf, k) {
            return Ok(None);
        }
        Ok(self
            .db
            .get_pinned_cf(cf, k)
            .map_err(db_err("size"))?
            .map(|v| decode_i64(&v) as u32))
    }

    /// Deletes `key` from `tier`; returns whether it was present.
    pub fn delete(&self, tier: Tier, key: Hash) -> Result<bool, StoreError> {
        let _guard = self.stripe(&key).lock();
        self.delete_locked(tier, key)
    }

    /// Deletes `key` from `tier` if its stored bytes are damaged (checked again under the
    /// key's lock, so a good copy written meanwhile is kept). Returns whether it deleted.
    pub fn remove_if_corrupt(&self, tier: Tier, key: Hash) -> Result<bool, StoreError> {
        let _guard = self.stripe(&key).lock();
        // From disk, not memory: the question is what the disk holds (and `get` may take
        // the key's lock, held here).
        match self.read(tier, key) {
            Err(StoreError::Corrupt { .. }) => self.delete_locked(tier, key),
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn delete_locked(&self, tier: Tier, key: Hash) -> Result<bool, StoreError> {
        if tier == Tier::Hot {
            self.hot_cache.remove(&key);
        }
        let cf = self.cf(tier.cf())?;
        let Some(size) = self.size_of(tier, key)? else {
            return Ok(false);
        };
        let size = u64::from(size);
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf, key.as_bytes());
        batch.delete_cf(self.cf(CF_SIZES)?, tier.size_key(&key));
        batch.merge_cf(self.cf(CF_META)?, KEY_USED, (-(size as i64)).to_le_bytes());
        self.db
            .write_opt(batch, &sync_writes())
            .map_err(db_err("delete"))?;
        // Never below zero, even if another thread raced a reservation in between.
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(size))
            });
        let _ = self
            .count_of(tier)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
        Ok(true)
    }

    fn count_keys(&self, tier: Tier) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut after = None;
        loop {
            let page = self.keys_after(tier, after, 4096)?;
            n += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == 4096 => after = Some(*last),
                _ => return Ok(n),
            }
        }
    }

    /// Up to `limit` keys of `tier` in key order, after `after` (from the first if `None`).
    /// Reads the index only, never the values.
    pub fn keys_after(
        &self,
        tier: Tier,
        after: Option<Hash>,
        limit: usize,
    ) -> Result<Vec<Hash>, StoreError> {
        Ok(self
            .sizes_after(tier, after, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Up to `limit` keys of `tier` with their stored lengths, in key order, after `after`
    /// (from the first if `None`). Reads the index only, never the values.
    pub fn sizes_after(
        &self,
        tier: Tier,
        after: Option<Hash>,
        limit: usize,
    ) -> Result<Vec<(Hash, u32)>, StoreError> {
        let prefix = tier.size_key(&Hash::from_bytes([0; 32]))[0];
        let mut start = vec![prefix];
        if let Some(a) = after {
            start.extend_from_slice(a.as_bytes());
            start.push(0);
        }
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_SIZES)?,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for r in iter {
            let (k, v) = r.map_err(db_err("scan"))?;
            if k.first() != Some(&prefix) || out.len() >= limit {
                break;
            }
            let key: [u8; 32] = k[1..].try_into().map_err(|_| StoreError::Corrupt {
                key: Hash::of(&k),
                detail: "index key is not 33 bytes".into(),
            })?;
            out.push((Hash::from_bytes(key), decode_i64(&v) as u32));
        }
        Ok(out)
    }

    /// Durable shards stored.
    pub fn shard_count(&self) -> u64 {
        self.shards.load(Ordering::SeqCst)
    }

    /// Whole segments in the hot tier.
    pub fn hot_count(&self) -> u64 {
        self.hot.load(Ordering::SeqCst)
    }

    fn count_of(&self, tier: Tier) -> &AtomicU64 {
        match tier {
            Tier::Durable => &self.shards,
            Tier::Hot => &self.hot,
        }
    }

    /// Reads a node-state record from the meta column family.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(CF_META)?, meta_key(key))
            .map_err(db_err("read node state"))
    }

    /// Writes a node-state record to the meta column family, synced.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db
            .put_cf_opt(self.cf(CF_META)?, meta_key(key), value, &sync_writes())
            .map_err(db_err("write node state"))
    }

    /// Value bytes stored, both tiers.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes memtables to SST and blob files (used at shutdown and by tests that look at
    /// the files). Data is durable without it, through the WAL.
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in [CF_SHARDS, CF_HOT, CF_SIZES, CF_META] {
            self.db.flush_cf(self.cf(name)?).map_err(db_err("flush"))?;
        }
        Ok(())
    }

    /// Overwrites the bytes of a stored value without any check, to simulate bit rot in
    /// tests. The index and usage are left as they were.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn corrupt_for_test(&self, tier: Tier, key: Hash, bytes: &[u8]) -> Result<(), StoreError> {
        // What was read before the rot is no longer what the disk holds.
        self.hot_cache.remove(&key);
        let cf = self.cf(tier.cf())?;
        self.db
            .put_cf_opt(cf, key.as_bytes(), bytes, &sync_writes())
            .map_err(db_err("put"))
    }
}

/// Node-state keys live under `state/`, apart from the counters.
fn meta_key(key: &str) -> Vec<u8> {
    let mut k = b"state/".to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

fn sync_writes() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use medley_core::ShardId;

    fn open(dir: &Path, capacity: u64) -> Store {
        Store::open(
            dir,
            &StoreConfig {
                capacity,
                ..StoreConfig::default()
            },
        )
        .unwrap()
    }

    fn shard(n: u8, len: usize) -> (Hash, Vec<u8>) {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(n).wrapping_add(n))
            .collect();
        (ShardId::of(&bytes).0, bytes)
    }

    #[test]
    fn put_get_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<_> = (1..=20).map(|n| shard(n, 5000 + usize::from(n))).collect();
        {
            let s = open(dir.path(), 1 << 30);
            for (k, v) in &items {
                assert_eq!(s.put(Tier::Durable, *k, v).unwrap(), PutOutcome::Stored);
            }
            assert_eq!(
                s.put(Tier::Durable, items[0].0, &items[0].1).unwrap(),
                PutOutcome::AlreadyPresent
            );
        }
        let s = open(dir.path(), 1 << 30);
        for (k, v) in &items {
            assert_eq!(s.get(Tier::Durable, *k).unwrap().as_ref(), Some(v));
            assert!(s.contains(Tier::Durable, *k).unwrap());
            // Tiers are separate.
            assert_eq!(s.get(Tier::Hot, *k).unwrap(), None);
        }
        let total: u64 = items.iter().map(|(_, v)| v.len() as u64).sum();
        assert_eq!(
            s.used(),
            total,
            "usage survives a reopen, duplicates not counted"
        );
        assert!(s.delete(Tier::Durable, items[0].0).unwrap());
        assert_eq!(s.get(Tier::Durable, items[0].0).unwrap(), None);
        assert_eq!(s.used(), total - items[0].1.len() as u64);
    }

    #[test]
    fn wrong_hash_is_refused_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let (k, _) = shard(1, 100);
        let (_, other) = shard(2, 100);
        assert!(matches!(
            s.put(Tier::Durable, k, &other),
            Err(StoreError::HashMismatch { .. })
        ));
        assert_eq!(s.get(Tier::Durable, k).unwrap(), None);
        assert_eq!(s.used(), 0);
    }

    #[test]
    fn capacity_is_enforced_and_full_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 10_000);
        let (k1, v1) = shard(1, 6000);
        let (k2, v2) = shard(2, 6000);
        s.put(Tier::Durable, k1, &v1).unwrap();
        let err = s.put(Tier::Hot, k2, &v2).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Full {
                    size: 6000,
                    used: 6000,
                    capacity: 10_000
                }
            ),
            "{err}"
        );
        assert_eq!(s.get(Tier::Hot, k2).unwrap(), None);
        assert_eq!(s.used(), 6000);
        // Freeing space makes room again.
        s.delete(Tier::Durable, k1).unwrap();
        s.put(Tier::Hot, k2, &v2).unwrap();
        assert_eq!(s.used(), 6000);
    }

    #[test]
    fn nearly_full_is_reported_before_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 10_000);
        let (k1, v1) = shard(1, 8500);
        s.put(Tier::Durable, k1, &v1).unwrap();
        assert!(!s.nearly_full(), "85 % is not nearly full");
        let (k2, v2) = shard(2, 600);
        s.put(Tier::Durable, k2, &v2).unwrap();
        assert!(s.nearly_full(), "91 % is");
        // Still writable below the capacity; freeing space clears it.
        let (k3, v3) = shard(3, 800);
        s.put(Tier::Durable, k3, &v3).unwrap();
        s.delete(Tier::Durable, k1).unwrap();
        assert!(!s.nearly_full());
    }

    #[test]
    fn oversized_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), u64::MAX);
        let big = vec![0u8; MAX_BLOB_SIZE + 1];
        let k = Hash::of(&big);
        assert!(matches!(
            s.put(Tier::Durable, k, &big),
            Err(StoreError::TooLarge { .. })
        ));
    }

    #[test]
    fn logically_corrupt_value_is_reported_not_returned_and_replaced_by_a_good_put() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let (k, v) = shard(3, 4096);
        s.put(Tier::Durable, k, &v).unwrap();
        let mut bad = v.clone();
        bad[100] ^= 0x40;
        s.corrupt_for_test(Tier::Durable, k, &bad).unwrap();
        assert!(matches!(
            s.get(Tier::Durable, k),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(
            s.contains(Tier::Durable, k).unwrap(),
            "still indexed: the scrubber will find it"
        );
        // A put of the right bytes repairs it, and usage counts it once.
        assert_eq!(s.put(Tier::Durable, k, &v).unwrap(), PutOutcome::Stored);
        assert_eq!(s.get(Tier::Durable, k).unwrap(), Some(v));
        assert_eq!(s.used(), 4096);
        drop(s);
        assert_eq!(open(dir.path(), 1 << 30).used(), 4096, "on disk too");
    }

    #[test]
    fn bytes_corrupted_on_disk_are_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<_> = (1..=8).map(|n| shard(n, 64 * 1024)).collect();
        {
            let s = open(dir.path(), 1 << 30);
            for (k, v) in &items {
                s.put(Tier::Durable, *k, v).unwrap();
            }
            s.flush().unwrap();
        }
        // Flip bytes in the middle of every blob file, inside the shard payloads.
        rot_blob_files(dir.path());
        let s = open(dir.path(), 1 << 30);
        assert!(count_corrupt(&s, &items) > 0, "no corruption was detected");
    }

    /// Reads every durable shard of `items`: how many are reported corrupt. Any other bytes
    /// returned must be the right ones.
    fn count_corrupt(s: &Store, items: &[(Hash, Vec<u8>)]) -> usize {
        let mut corrupt = 0;
        for (k, v) in items {
            match s.get(Tier::Durable, *k) {
                Ok(Some(got)) => assert_eq!(&got, v, "wrong bytes returned as data"),
                Err(StoreError::Corrupt { .. }) => corrupt += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        corrupt
    }

    /// Flips bytes every 4 KiB in the middle of every blob file under `dir`.
    fn rot_blob_files(dir: &Path) {
        let mut flipped = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "blob") {
                let mut bytes = std::fs::read(&path).unwrap();
                let len = bytes.len();
                for i in (len / 8..len * 7 / 8).step_by(4096) {
                    bytes[i] ^= 0xff;
                }
                std::fs::write(&path, bytes).unwrap();
                flipped += 1;
            }
        }
        assert!(flipped > 0, "no blob files were written");
    }

    #[test]
    fn hot_segments_are_served_from_memory_and_durable_shards_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let durable: Vec<_> = (1..=4).map(|n| shard(n, 64 * 1024)).collect();
        let hot: Vec<_> = (5..=8).map(|n| shard(n, 64 * 1024)).collect();
        for (k, v) in &durable {
            s.put(Tier::Durable, *k, v).unwrap();
        }
        for (k, v) in &hot {
            s.put(Tier::Hot, *k, v).unwrap();
        }
        s.flush().unwrap();
        for (tier, items) in [(Tier::Durable, &durable), (Tier::Hot, &hot)] {
            for (k, v) in items {
                assert_eq!(s.get(tier, *k).unwrap().as_ref(), Some(v));
            }
        }
        // The disk rots under the open store.
        rot_blob_files(dir.path());
        // Hot segments just read come from the cache, still checked and still right, and
        // can be read without the disk; durable shards cannot.
        for (k, v) in &hot {
            assert_eq!(s.get(Tier::Hot, *k).unwrap().as_ref(), Some(v));
            assert_eq!(s.get_in_memory(Tier::Hot, *k).as_ref(), Some(v));
        }
        for (k, _) in &durable {
            assert_eq!(s.get_in_memory(Tier::Durable, *k), None);
        }
        // Durable shards are read from disk every time, so the rot is seen at once.
        assert!(
            count_corrupt(&s, &durable) > 0,
            "rot in durable shards was not seen"
        );
        // A deleted hot segment is gone from memory too.
        let (k, _) = &hot[0];
        assert!(s.delete(Tier::Hot, *k).unwrap());
        assert_eq!(s.get_in_memory(Tier::Hot, *k), None);
        assert_eq!(s.get(Tier::Hot, *k).unwrap(), None);
    }

    #[test]
    fn a_hot_segment_put_again_is_already_present_and_a_rotten_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (k, v) = shard(3, 64 * 1024);
        {
            let s = open(dir.path(), 1 << 30);
            s.put(Tier::Hot, k, &v).unwrap();
        }
        // Reopened: on disk, not in memory.
        let s = open(dir.path(), 1 << 30);
        assert_eq!(s.get_in_memory(Tier::Hot, k), None);
        assert!(matches!(
            s.put(Tier::Hot, k, &v).unwrap(),
            PutOutcome::AlreadyPresent
        ));
        assert_eq!(s.get(Tier::Hot, k).unwrap(), Some(v.clone()));
        // The disk copy rots (and memory forgets it): a get reports the rot, and a put sees
        // it and writes the good bytes.
        s.corrupt_for_test(Tier::Hot, k, b"rot").unwrap();
        s.get(Tier::Hot, k).unwrap_err();
        assert!(matches!(
            s.put(Tier::Hot, k, &v).unwrap(),
            PutOutcome::Stored
        ));
        assert_eq!(s.get(Tier::Hot, k).unwrap(), Some(v));
    }

    #[test]
    fn keys_list_in_order_and_counts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<_> = (1..=9).map(|n| shard(n, 2000)).collect();
        {
            let s = open(dir.path(), 1 << 30);
            for (k, v) in &items {
                s.put(Tier::Durable, *k, v).unwrap();
            }
            // A hot segment is not a shard: neither listed nor counted as one.
            let (hk, hv) = shard(50, 3000);
            s.put(Tier::Hot, hk, &hv).unwrap();
            assert_eq!((s.shard_count(), s.hot_count()), (9, 1));
            assert!(s.delete(Tier::Durable, items[0].0).unwrap());
            assert_eq!(s.shard_count(), 8);
            s.put_meta("held", b"[1,2]").unwrap();
        }
        let s = open(dir.path(), 1 << 30);
        assert_eq!((s.shard_count(), s.hot_count()), (8, 1));
        assert_eq!(s.get_meta("held").unwrap().as_deref(), Some(&b"[1,2]"[..]));
        assert_eq!(s.get_meta("absent").unwrap(), None);
        let mut want: Vec<Hash> = items[1..].iter().map(|(k, _)| *k).collect();
        want.sort();
        let mut got = s.keys_after(Tier::Durable, None, 3).unwrap();
        while got.len() < want.len() {
            let page = s.keys_after(Tier::Durable, got.last().copied(), 3).unwrap();
            assert!(!page.is_empty());
            got.extend(page);
        }
        assert_eq!(got, want);
        assert!(
            s.keys_after(Tier::Durable, want.last().copied(), 3)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.keys_after(Tier::Hot, None, 10).unwrap().len(), 1);
    }

    #[test]
    fn only_corrupt_values_are_removed_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let (good, gv) = shard(3, 4000);
        let (bad, bv) = shard(4, 4000);
        s.put(Tier::Durable, good, &gv).unwrap();
        s.put(Tier::Durable, bad, &bv).unwrap();
        s.corrupt_for_test(Tier::Durable, bad, b"rot").unwrap();
        assert!(!s.remove_if_corrupt(Tier::Durable, good).unwrap());
        assert!(s.remove_if_corrupt(Tier::Durable, bad).unwrap());
        assert_eq!(s.get(Tier::Durable, bad).unwrap(), None);
        assert_eq!(s.get(Tier::Durable, good).unwrap(), Some(gv));
        assert_eq!(s.shard_count(), 1);
        assert_eq!(s.used(), 4000);
    }
}
