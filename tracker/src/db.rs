//! The tracker's RocksDB state: manifests, nodes, layout versions and publisher keys.
//!
//! Every write is synced before it is acknowledged, so a kill -9 loses nothing that a client
//! was told is stored.

use std::path::{Path, PathBuf};

use rocksdb::{
    ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

/// Column families.
pub(crate) const CF_MANIFESTS: &str = "manifests";
pub(crate) const CF_NODES: &str = "nodes";
pub(crate) const CF_LAYOUTS: &str = "layouts";
pub(crate) const CF_PUBLISHERS: &str = "publishers";
/// Publish journal: big-endian sequence number → song id. The search index replays it.
pub(crate) const CF_JOURNAL: &str = "journal";
/// Placement index: partition (u16, big-endian) ‖ segment id → segment length (u32,
/// little-endian) ‖ its `k + m` shard ids. Nodes page through it to learn which shards their
/// slots hold.
pub(crate) const CF_PLACEMENT: &str = "placement";
/// Play reports: song id ‖ region → plays (u64, little-endian).
pub(crate) const CF_PLAYS: &str = "plays";
/// Join tokens made, by id: what each allows and which node used it.
pub(crate) const CF_INVITES: &str = "invites";
const ALL: [&str; 8] = [
    CF_MANIFESTS,
    CF_NODES,
    CF_LAYOUTS,
    CF_PUBLISHERS,
    CF_JOURNAL,
    CF_PLACEMENT,
    CF_PLAYS,
    CF_INVITES,
];

/// A key and its value, as RocksDB returns them.
pub(crate) type Record = (Box<[u8]>, Box<[u8]>);

/// A RocksDB failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Opening the database failed.
    #[error("cannot open the tracker database at {path}: {source}")]
    Open {
        /// Directory.
        path: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// An operation failed.
    #[error("tracker database {op} failed: {source}")]
    Op {
        /// What was being done.
        op: &'static str,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// A stored record does not decode.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
}

/// The database.
pub(crate) struct Db {
    db: DB,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

fn op(op: &'static str) -> impl FnOnce(rocksdb::Error) -> DbError {
    move |source| DbError::Op { op, source }
}

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Self, DbError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::None);
        let cfs = ALL.iter().map(|name| {
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::None);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self { db })
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, DbError> {
        self.db.cf_handle(name).ok_or_else(|| DbError::Corrupt {
            what: format!("column family {name}"),
            reason: "missing".into(),
        })
    }

    pub(crate) fn put(&self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db
            .put_cf_opt(self.cf(cf)?, key, value, &w)
            .map_err(op("put"))
    }

    /// Deletes a record, synced.
    pub(crate) fn delete(&self, cf: &'static str, key: &[u8]) -> Result<(), DbError> {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db
            .delete_cf_opt(self.cf(cf)?, key, &w)
            .map_err(op("delete"))
    }

    /// Writes several records atomically, synced.
    pub(crate) fn put_all(&self, records: &[(&'static str, &[u8], &[u8])]) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        for (cf, key, value) in records {
            batch.put_cf(self.cf(cf)?, key, value);
        }
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(op("batch"))
    }

    /// Records of a column family from `start` on, in key order.
    pub(crate) fn scan_from(&self, cf: &'static str, start: &[u8]) -> Result<Vec<Record>, DbError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(start, Direction::Forward))
            .map(|r| r.map_err(op("scan")))
            .collect()
    }

    /// Up to `limit` records whose keys start with `prefix`, from `start` on (`start` itself
    /// begins with `prefix`), in key order.
    /// Calls `f` with every record whose key starts with `prefix`, in key order.
    pub(crate) fn for_each_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DbError> {
        for r in self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = r.map_err(op("scan"))?;
            if !k.starts_with(prefix) {
                break;
            }
            f(&k, &v);
        }
        Ok(())
    }

    pub(crate) fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Record>, DbError> {
        let mut out = Vec::new();
        for r in self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(start, Direction::Forward))
        {
            let (k, v) = r.map_err(op("scan"))?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// Up to `limit` records of a column family after skipping the first `offset`, in key
    /// order. Skipped records are stepped over by key, but still read from disk: a deep
    /// offset costs its depth.
    /// Stops early, with what it has, once `cancelled` is set (its request was given up).
    pub(crate) fn page(
        &self,
        cf: &'static str,
        offset: usize,
        limit: usize,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<Record>, DbError> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf)?);
        it.seek_to_first();
        for i in 0..offset {
            if !it.valid()
                || (i % 1024 == 0 && cancelled.load(std::sync::atomic::Ordering::Relaxed))
            {
                return Ok(Vec::new());
            }
            it.next();
        }
        let mut out = Vec::new();
        while it.valid() && out.len() < limit {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                out.push((k.into(), v.into()));
            }
            it.next();
        }
        it.status().map_err(op("page"))?;
        Ok(out)
    }

    /// Whether a column family holds no record.
    pub(crate) fn is_empty(&self, cf: &'static str) -> Result<bool, DbError> {
        Ok(self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::Start)
            .next()
            .transpose()
            .map_err(op("scan"))?
            .is_none())
    }

    pub(crate) fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(op("get"))
    }

    /// All records of a column family, in key order.
    pub(crate) fn scan(&self, cf: &'static str) -> Result<Vec<Record>, DbError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::Start)
            .map(|r| r.map_err(op("scan")))
            .collect()
    }

    /// The last record of a column family.
    pub(crate) fn last(&self, cf: &'static str) -> Result<Option<Record>, DbError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::End)
            .next()
            .transpose()
            .map_err(op("last"))
    }

    /// The first record of a column family.
    pub(crate) fn first(&self, cf: &'static str) -> Result<Option<Record>, DbError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::Start)
            .next()
            .transpose()
            .map_err(op("first"))
    }
}
