//! The tracker's store: manifests, nodes, layout versions and publisher keys, as ordered
//! keyspaces of bytes. Two backends: an embedded RocksDB (one tracker, the default) and
//! PostgreSQL ([`pg`]), which several tracker replicas share.
//!
//! Every write is durable before it is acknowledged, so a kill -9 loses nothing that a client
//! was told is stored. The few operations replicas could race on are the store's own: a
//! journaled commit of songs ([`Db::commit_songs`]), a write that only creates
//! ([`Db::put_new`]) and counters that add ([`Db::add_counts`]).

mod pg;

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
/// When each node was last heard from: peer id → Unix ms (u64, little-endian). Written only
/// by a shared store, for the replicas that did not hear the heartbeat.
pub(crate) const CF_SEEN: &str = "seen";
/// Reports of wrong bytes: source ‖ 0 ‖ reporter → Unix ms ‖ weight. Written only by a shared
/// store, for the replicas that did not get the report.
pub(crate) const CF_LIES: &str = "lies";
/// What each replica heard of demand, for the others: an append-only log, big-endian
/// sequence number → one replica's batch (see [`Db::append`]). Written only by a shared
/// store.
pub(crate) const CF_DEMAND: &str = "demand";
const ALL: [&str; 11] = [
    CF_MANIFESTS,
    CF_NODES,
    CF_LAYOUTS,
    CF_PUBLISHERS,
    CF_JOURNAL,
    CF_PLACEMENT,
    CF_PLAYS,
    CF_INVITES,
    CF_SEEN,
    CF_LIES,
    CF_DEMAND,
];

/// The sequence number a journal or log key holds (8 bytes, big-endian); `what` names the
/// key in the error when it is not one.
pub(crate) fn seq_of(key: &[u8], what: &str) -> Result<u64, DbError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| crate::error::corrupt(what, "not 8 bytes"))
}

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
    /// A PostgreSQL operation failed.
    #[error("tracker database {op} failed: {source}")]
    Postgres {
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        source: postgres::Error,
    },
    /// No connection to PostgreSQL could be had.
    #[error("cannot reach the tracker database: {0}")]
    Connect(String),
    /// The schema could not be brought up to date.
    #[error("cannot migrate the tracker database: {0}")]
    Migrate(String),
    /// A stored record does not decode.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
}

impl DbError {
    /// Whether the database could not be reached (down, restarting, cut off), rather than
    /// refusing or failing an operation: the request may succeed on a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Connect(_) => true,
            DbError::Postgres { source, .. } => {
                use postgres::error::SqlState;
                let io = std::error::Error::source(source)
                    .is_some_and(|e| e.downcast_ref::<std::io::Error>().is_some());
                source.is_closed()
                    || io
                    || source.code().is_some_and(|c| {
                        [
                            SqlState::ADMIN_SHUTDOWN,
                            SqlState::CRASH_SHUTDOWN,
                            SqlState::CANNOT_CONNECT_NOW,
                        ]
                        .contains(c)
                    })
            }
            _ => false,
        }
    }
}

/// A song to commit: its id, signed manifest and placement records.
pub(crate) struct NewSong<'a> {
    /// The song's id.
    pub id: &'a [u8; 32],
    /// Its signed manifest.
    pub manifest: &'a [u8],
    /// Its placement index records.
    pub placement: &'a [(Vec<u8>, Vec<u8>)],
}

/// The store.
pub(crate) struct Db {
    backend: Backend,
}

enum Backend {
    Rocks(Rocks),
    Postgres(Box<pg::Pg>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Rocks(_) => "Db(rocksdb)",
            Backend::Postgres(_) => "Db(postgres)",
        })
    }
}

/// Calls the backend's method of the same name.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Rocks(b) => b.$method($($arg),*),
            Backend::Postgres(b) => b.$method($($arg),*),
        }
    };
}

impl Db {
    /// The embedded store in `path`, created if missing.
    pub(crate) fn open(path: &Path) -> Result<Self, DbError> {
        Ok(Self {
            backend: Backend::Rocks(Rocks::open(path)?),
        })
    }

    /// The PostgreSQL store at `url` (`postgres://…`), its schema migrated.
    pub(crate) fn open_postgres(url: &str) -> Result<Self, DbError> {
        Ok(Self {
            backend: Backend::Postgres(Box::new(pg::Pg::open(url)?)),
        })
    }

    /// Whether other tracker replicas share this store: then what each replica keeps in
    /// memory must be read back from it.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Writes a record.
    pub(crate) fn put(&self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        dispatch!(self.put(cf, key, value))
    }

    /// Writes a record unless its key is taken; returns whether it wrote it.
    pub(crate) fn put_new(
        &self,
        cf: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, DbError> {
        dispatch!(self.put_new(cf, key, value))
    }

    /// Deletes a record.
    pub(crate) fn delete(&self, cf: &'static str, key: &[u8]) -> Result<(), DbError> {
        dispatch!(self.delete(cf, key))
    }

    /// Appends `value` to the log `cf` under the next sequence number (big-endian key), which
    /// it returns. Appends become visible in sequence order: a reader that follows the log
    /// from the last number it read never skips one.
    pub(crate) fn append(&self, cf: &'static str, value: &[u8]) -> Result<u64, DbError> {
        dispatch!(self.append(cf, value))
    }

    /// Deletes every record of `cf` whose key sorts before `key`.
    pub(crate) fn delete_below(&self, cf: &'static str, key: &[u8]) -> Result<(), DbError> {
        dispatch!(self.delete_below(cf, key))
    }

    /// Writes several records atomically.
    pub(crate) fn put_all(&self, records: &[(&'static str, &[u8], &[u8])]) -> Result<(), DbError> {
        dispatch!(self.put_all(records))
    }

    /// Adds `delta` to each counter of [`CF_PLAYS`], atomically (a counter starts at 0).
    pub(crate) fn add_counts(&self, deltas: &[(Vec<u8>, u64)]) -> Result<(), DbError> {
        dispatch!(self.add_counts(deltas))
    }

    /// Commits songs new to the catalogue: each one's manifest, placement records and the
    /// next journal entry, all in one atomic write. Returns each song's journal position,
    /// or `None` for a song the catalogue has already.
    pub(crate) fn commit_songs(&self, songs: &[NewSong<'_>]) -> Result<Vec<Option<u64>>, DbError> {
        dispatch!(self.commit_songs(songs))
    }

    /// Takes or renews lease `name` for `holder` until `now_ms + ttl_ms`, unless another
    /// holder's is still running. Returns whether `holder` holds it. The embedded store has
    /// one tracker: it always does.
    pub(crate) fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, DbError> {
        match &self.backend {
            Backend::Rocks(_) => Ok(true),
            Backend::Postgres(b) => b.take_lease(name, holder, now_ms, ttl_ms),
        }
    }

    /// Waits up to `timeout` for a commit to the journal by any replica; returns whether
    /// one was announced. The embedded store has no other writer: it sleeps.
    pub(crate) fn wait_for_journal(&self, timeout: std::time::Duration) -> bool {
        match &self.backend {
            Backend::Rocks(_) => {
                std::thread::sleep(timeout);
                false
            }
            Backend::Postgres(b) => b.wait_for_journal(timeout),
        }
    }

    /// Records of a column family from `start` on, in key order.
    pub(crate) fn scan_from(&self, cf: &'static str, start: &[u8]) -> Result<Vec<Record>, DbError> {
        dispatch!(self.scan_from(cf, start))
    }

    /// Calls `f` with every record whose key starts with `prefix`, in key order.
    pub(crate) fn for_each_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DbError> {
        dispatch!(self.for_each_prefix(cf, prefix, &mut f))
    }

    /// Up to `limit` records whose keys start with `prefix`, from `start` on (`start` itself
    /// begins with `prefix`), in key order.
    pub(crate) fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Record>, DbError> {
        dispatch!(self.scan_prefix(cf, prefix, start, limit))
    }

    /// Up to `limit` records of a column family after skipping the first `offset`, in key
    /// order. A deep offset costs its depth. Stops early, with what it has, once
    /// `cancelled` is set (its request was given up).
    pub(crate) fn page(
        &self,
        cf: &'static str,
        offset: usize,
        limit: usize,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<Record>, DbError> {
        dispatch!(self.page(cf, offset, limit, cancelled))
    }

    /// Whether a column family holds no record.
    pub(crate) fn is_empty(&self, cf: &'static str) -> Result<bool, DbError> {
        Ok(self.first(cf)?.is_none())
    }

    /// The record at `key`.
    pub(crate) fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        dispatch!(self.get(cf, key))
    }

    /// The records at `keys`, in their order.
    pub(crate) fn get_many(
        &self,
        cf: &'static str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, DbError> {
        dispatch!(self.get_many(cf, keys))
    }

    /// All records of a column family, in key order.
    pub(crate) fn scan(&self, cf: &'static str) -> Result<Vec<Record>, DbError> {
        self.scan_from(cf, &[])
    }

    /// The last record of a column family.
    pub(crate) fn last(&self, cf: &'static str) -> Result<Option<Record>, DbError> {
        dispatch!(self.last(cf))
    }

    /// The first record of a column family.
    pub(crate) fn first(&self, cf: &'static str) -> Result<Option<Record>, DbError> {
        dispatch!(self.first(cf))
    }
}

/// The embedded RocksDB store. One process writes it: what replicas would race on is
/// serialised by a lock.
struct Rocks {
    db: DB,
    /// Held by a check-then-write; holds the last journal position.
    writing: parking_lot::Mutex<u64>,
}

fn op(op: &'static str) -> impl FnOnce(rocksdb::Error) -> DbError {
    move |source| DbError::Op { op, source }
}

impl Rocks {
    fn open(path: &Path) -> Result<Self, DbError> {
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
        let mut rocks = Self {
            db,
            writing: parking_lot::Mutex::new(0),
        };
        let head = match rocks.last(CF_JOURNAL)? {
            Some((key, _)) => seq_of(&key, "journal key")?,
            None => 0,
        };
        *rocks.writing.get_mut() = head;
        Ok(rocks)
    }

    fn put_new(&self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<bool, DbError> {
        let _writing = self.writing.lock();
        if self.get(cf, key)?.is_some() {
            return Ok(false);
        }
        self.put(cf, key, value)?;
        Ok(true)
    }

    fn add_counts(&self, deltas: &[(Vec<u8>, u64)]) -> Result<(), DbError> {
        let _writing = self.writing.lock();
        let mut values = Vec::with_capacity(deltas.len());
        for (key, delta) in deltas {
            let stored = self
                .get(CF_PLAYS, key)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map_or(0, u64::from_le_bytes);
            values.push(stored.saturating_add(*delta).to_le_bytes());
        }
        let records: Vec<(&'static str, &[u8], &[u8])> = deltas
            .iter()
            .zip(&values)
            .map(|((k, _), v)| (CF_PLAYS, k.as_slice(), v.as_slice()))
            .collect();
        self.put_all(&records)
    }

    fn commit_songs(&self, songs: &[NewSong<'_>]) -> Result<Vec<Option<u64>>, DbError> {
        let mut head = self.writing.lock();
        let mut next = *head;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(songs.len());
        let mut keys = Vec::new();
        for song in songs {
            if !seen.insert(song.id) || self.get(CF_MANIFESTS, song.id)?.is_some() {
                out.push(None);
            } else {
                next += 1;
                out.push(Some(next));
                keys.push(next.to_be_bytes());
            }
        }
        let mut batch = WriteBatch::default();
        let mut keys = keys.iter();
        for (song, seq) in songs.iter().zip(&out) {
            if seq.is_none() {
                continue;
            }
            let key = keys.next().ok_or_else(|| DbError::Corrupt {
                what: "journal".into(),
                reason: "positions out of step".into(),
            })?;
            batch.put_cf(self.cf(CF_MANIFESTS)?, song.id, song.manifest);
            batch.put_cf(self.cf(CF_JOURNAL)?, key, song.id);
            for (k, v) in song.placement {
                batch.put_cf(self.cf(CF_PLACEMENT)?, k, v);
            }
        }
        if next != *head {
            let mut w = WriteOptions::default();
            w.set_sync(true);
            self.db.write_opt(batch, &w).map_err(op("commit"))?;
            *head = next;
        }
        Ok(out)
    }

    fn get_many(&self, cf: &'static str, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, DbError> {
        let cf = self.cf(cf)?;
        self.db
            .multi_get_cf(keys.iter().map(|k| (cf, *k)))
            .into_iter()
            .map(|r| r.map_err(op("get")))
            .collect()
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, DbError> {
        self.db.cf_handle(name).ok_or_else(|| DbError::Corrupt {
            what: format!("column family {name}"),
            reason: "missing".into(),
        })
    }

    fn put(&self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db
            .put_cf_opt(self.cf(cf)?, key, value, &w)
            .map_err(op("put"))
    }

    /// Deletes a record, synced.
    fn delete(&self, cf: &'static str, key: &[u8]) -> Result<(), DbError> {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db
            .delete_cf_opt(self.cf(cf)?, key, &w)
            .map_err(op("delete"))
    }

    fn append(&self, cf: &'static str, value: &[u8]) -> Result<u64, DbError> {
        let _writing = self.writing.lock();
        let last = match self.last(cf)? {
            Some((k, _)) => seq_of(&k, "log key")?,
            None => 0,
        };
        let seq = last + 1;
        self.put(cf, &seq.to_be_bytes(), value)?;
        Ok(seq)
    }

    fn delete_below(&self, cf: &'static str, key: &[u8]) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(cf)?, [].as_slice(), key);
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(op("delete"))
    }

    /// Writes several records atomically, synced.
    fn put_all(&self, records: &[(&'static str, &[u8], &[u8])]) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        for (cf, key, value) in records {
            batch.put_cf(self.cf(cf)?, key, value);
        }
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(op("batch"))
    }

    /// Records of a column family from `start` on, in key order.
    fn scan_from(&self, cf: &'static str, start: &[u8]) -> Result<Vec<Record>, DbError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(start, Direction::Forward))
            .map(|r| r.map_err(op("scan")))
            .collect()
    }

    fn for_each_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
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

    fn scan_prefix(
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
    fn page(
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

    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(op("get"))
    }

    /// The last record of a column family.
    fn last(&self, cf: &'static str) -> Result<Option<Record>, DbError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::End)
            .next()
            .transpose()
            .map_err(op("last"))
    }

    /// The first record of a column family.
    fn first(&self, cf: &'static str) -> Result<Option<Record>, DbError> {
        self.db
            .iterator_cf(self.cf(cf)?, IteratorMode::Start)
            .next()
            .transpose()
            .map_err(op("first"))
    }
}

/// The store's behaviour, the same suite on both backends: each test runs once on an
/// embedded RocksDB and once on a real PostgreSQL (a private cluster the harness starts).
/// A test gets a way to open its store again, as a restart or another replica would.
#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;

    /// Where a test's store lives: opening it again gives another handle on the same data
    /// (for PostgreSQL, what another replica would have).
    pub(crate) enum Place {
        Rocks(tempfile::TempDir),
        Postgres(String),
    }

    impl Place {
        pub(crate) fn rocks() -> Self {
            Place::Rocks(tempfile::tempdir().expect("a temporary directory"))
        }

        pub(crate) fn postgres() -> Self {
            Place::Postgres(
                medley_daemon::pgcluster::test_database().expect("a PostgreSQL test database"),
            )
        }

        pub(crate) fn open(&self) -> Arc<Db> {
            Arc::new(match self {
                Place::Rocks(dir) => Db::open(&dir.path().join("db")).expect("open RocksDB"),
                Place::Postgres(url) => Db::open_postgres(url).expect("open PostgreSQL"),
            })
        }

        /// Whether two handles may be open at once (replicas of a shared store).
        pub(crate) fn shared(&self) -> bool {
            matches!(self, Place::Postgres(_))
        }
    }

    /// Runs each test body on both backends: `name::rocks` and `name::postgres`.
    macro_rules! on_both_stores {
        ($(fn $name:ident($place:ident: &Place) $body:block)*) => {
            $(
                mod $name {
                    #[allow(unused_imports)]
                    use super::*;
                    fn body($place: &Place) $body
                    #[test]
                    fn rocks() {
                        body(&Place::rocks())
                    }
                    #[test]
                    fn postgres() {
                        body(&Place::postgres())
                    }
                }
            )*
        };
    }
    pub(crate) use on_both_stores;

    fn keys(records: &[Record]) -> Vec<Vec<u8>> {
        records.iter().map(|(k, _)| k.to_vec()).collect()
    }

    type Song = ([u8; 32], Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    fn song(n: u8) -> Song {
        let id = [n; 32];
        let mut key = vec![0, n % 3];
        key.extend_from_slice(&[n; 32]);
        (id, vec![n; 100], vec![(key, vec![n; 36])])
    }

    fn commit(db: &Db, songs: &[u8]) -> Vec<Option<u64>> {
        let made: Vec<_> = songs.iter().map(|n| song(*n)).collect();
        let new: Vec<NewSong<'_>> = made
            .iter()
            .map(|(id, m, p)| NewSong {
                id,
                manifest: m,
                placement: p,
            })
            .collect();
        db.commit_songs(&new).expect("commit")
    }

    on_both_stores! {
        fn records_read_back_in_key_order(place: &Place) {
            let db = place.open();
            assert!(db.is_empty(CF_NODES).unwrap());
            for k in [b"b2".as_slice(), b"a1", b"b1", b"c\xff", b"b\xff\xff"] {
                db.put(CF_NODES, k, &[k[0]; 3]).unwrap();
            }
            db.put(CF_NODES, b"a1", b"new").unwrap();
            assert_eq!(db.get(CF_NODES, b"a1").unwrap().as_deref(), Some(b"new".as_slice()));
            assert_eq!(db.get(CF_NODES, b"zz").unwrap(), None);
            assert_eq!(
                keys(&db.scan(CF_NODES).unwrap()),
                vec![b"a1".to_vec(), b"b1".to_vec(), b"b2".to_vec(), b"b\xff\xff".to_vec(), b"c\xff".to_vec()]
            );
            assert_eq!(
                keys(&db.scan_prefix(CF_NODES, b"b", b"b2", 10).unwrap()),
                vec![b"b2".to_vec(), b"b\xff\xff".to_vec()]
            );
            assert_eq!(keys(&db.scan_prefix(CF_NODES, b"b", b"b", 1).unwrap()), vec![b"b1".to_vec()]);
            assert_eq!(keys(&db.scan_prefix(CF_NODES, b"c\xff", b"c\xff", 9).unwrap()), vec![b"c\xff".to_vec()]);
            assert_eq!(keys(&db.scan_from(CF_NODES, b"b3").unwrap()), vec![b"b\xff\xff".to_vec(), b"c\xff".to_vec()]);
            let mut seen = Vec::new();
            db.for_each_prefix(CF_NODES, b"b", |k, _| seen.push(k.to_vec())).unwrap();
            assert_eq!(seen.len(), 3);
            let never = std::sync::atomic::AtomicBool::new(false);
            assert_eq!(keys(&db.page(CF_NODES, 1, 2, &never).unwrap()), vec![b"b1".to_vec(), b"b2".to_vec()]);
            assert_eq!(db.first(CF_NODES).unwrap().unwrap().0.as_ref(), b"a1");
            assert_eq!(db.last(CF_NODES).unwrap().unwrap().0.as_ref(), b"c\xff");
            let many = db.get_many(CF_NODES, &[b"b1", b"nope", b"a1"]).unwrap();
            assert_eq!(many, vec![Some(b"bbb".to_vec()), None, Some(b"new".to_vec())]);
            db.delete(CF_NODES, b"a1").unwrap();
            db.put_all(&[(CF_LAYOUTS, b"x", b"1"), (CF_NODES, b"x", b"2"), (CF_NODES, b"x", b"3")]).unwrap();
            drop(db);
            // What was written is there for the next handle (a restart, another replica).
            let db = place.open();
            assert_eq!(db.get(CF_NODES, b"a1").unwrap(), None);
            assert_eq!(db.get(CF_NODES, b"x").unwrap().as_deref(), Some(b"3".as_slice()));
            assert_eq!(db.get(CF_LAYOUTS, b"x").unwrap().as_deref(), Some(b"1".as_slice()));
            assert_eq!(db.scan(CF_NODES).unwrap().len(), 5);
        }

        fn a_record_is_created_once(place: &Place) {
            let db = place.open();
            assert!(db.put_new(CF_LAYOUTS, b"v1", b"first").unwrap());
            assert!(!db.put_new(CF_LAYOUTS, b"v1", b"second").unwrap());
            assert_eq!(db.get(CF_LAYOUTS, b"v1").unwrap().as_deref(), Some(b"first".as_slice()));
            // Racing writers, each through its own handle where the store is shared: one
            // creates each key, whichever it is.
            let handles: Vec<Arc<Db>> = (0..4)
                .map(|_| if place.shared() { place.open() } else { db.clone() })
                .collect();
            let won: usize = std::thread::scope(|s| {
                let tasks: Vec<_> = handles
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        s.spawn(move || {
                            (0..20u8)
                                .filter(|k| h.put_new(CF_LAYOUTS, &[*k], &[i as u8]).unwrap())
                                .count()
                        })
                    })
                    .collect();
                tasks.into_iter().map(|t| t.join().unwrap()).sum()
            });
            assert_eq!(won, 20);
        }

        fn commits_take_journal_positions_in_order_once_each(place: &Place) {
            let db = place.open();
            assert_eq!(commit(&db, &[1, 2, 1]), vec![Some(1), Some(2), None]);
            assert_eq!(commit(&db, &[2, 3]), vec![None, Some(3)]);
            assert_eq!(db.get(CF_MANIFESTS, &[3; 32]).unwrap(), Some(vec![3; 100]));
            assert_eq!(db.scan_prefix(CF_PLACEMENT, &[0, 0], &[0, 0], 10).unwrap().len(), 1);
            // Concurrent commits through several handles (replicas): every song once, the
            // journal without gap or repeat.
            let handles: Vec<Arc<Db>> = (0..3)
                .map(|_| if place.shared() { place.open() } else { db.clone() })
                .collect();
            std::thread::scope(|s| {
                for (i, h) in handles.iter().enumerate() {
                    s.spawn(move || {
                        for n in 0..20u8 {
                            // Every writer commits every song; each is new once.
                            let songs = [10 + n, 10 + (n + i as u8 * 7) % 20];
                            commit(h, &songs);
                        }
                    });
                }
            });
            drop((handles, db));
            let db = place.open();
            let journal = db.scan(CF_JOURNAL).unwrap();
            let positions: Vec<u64> = journal
                .iter()
                .map(|(k, _)| u64::from_be_bytes(k.as_ref().try_into().unwrap()))
                .collect();
            assert_eq!(positions, (1..=23).collect::<Vec<_>>());
            let mut ids: Vec<Vec<u8>> = journal.iter().map(|(_, v)| v.to_vec()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 23, "a song journaled twice");
            assert_eq!(commit(&db, &[40]), vec![Some(24)]);
        }

        fn a_log_is_read_in_order_without_a_gap_while_several_append(place: &Place) {
            let db = place.open();
            assert_eq!(db.append(CF_DEMAND, b"first").unwrap(), 1);
            let handles: Vec<Arc<Db>> = (0..3)
                .map(|_| if place.shared() { place.open() } else { db.clone() })
                .collect();
            let done = std::sync::atomic::AtomicBool::new(false);
            // A follower reads from the last number it read on, while the writers append:
            // it must see every number once, in order.
            let read = std::thread::scope(|s| {
                let follower = s.spawn(|| {
                    let (mut next, mut read) = (1u64, Vec::new());
                    loop {
                        let last_round = done.load(std::sync::atomic::Ordering::SeqCst);
                        for (k, _) in db.scan_prefix(CF_DEMAND, &[], &next.to_be_bytes(), 7).unwrap() {
                            let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap());
                            read.push(seq);
                            next = seq + 1;
                        }
                        if last_round && read.len() == 61 {
                            return read;
                        }
                        assert!(read.len() <= 61);
                    }
                });
                let writers: Vec<_> = handles
                    .iter()
                    .map(|h| s.spawn(move || {
                        (0..20).map(|_| h.append(CF_DEMAND, b"batch").unwrap()).collect::<Vec<u64>>()
                    }))
                    .collect();
                let mut taken: Vec<u64> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
                taken.sort_unstable();
                assert_eq!(taken, (2..=61).collect::<Vec<_>>(), "each number once");
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                follower.join().unwrap()
            });
            assert_eq!(read, (1..=61).collect::<Vec<_>>());
            // Trimmed below 50: the rest stays, and numbering goes on after the last.
            db.delete_below(CF_DEMAND, &50u64.to_be_bytes()).unwrap();
            let kept = db.scan(CF_DEMAND).unwrap();
            assert_eq!(kept.len(), 12);
            assert_eq!(kept[0].0.as_ref(), 50u64.to_be_bytes());
            assert_eq!(db.append(CF_DEMAND, b"after").unwrap(), 62);
        }

        fn counts_add_up_across_writers(place: &Place) {
            let db = place.open();
            db.add_counts(&[(b"song-a".to_vec(), 2)]).unwrap();
            let handles: Vec<Arc<Db>> = (0..3)
                .map(|_| if place.shared() { place.open() } else { db.clone() })
                .collect();
            std::thread::scope(|s| {
                for h in &handles {
                    s.spawn(move || {
                        for _ in 0..10 {
                            h.add_counts(&[(b"song-a".to_vec(), 1), (b"song-b".to_vec(), 5)]).unwrap();
                        }
                    });
                }
            });
            let read = |k: &[u8]| {
                u64::from_le_bytes(db.get(CF_PLAYS, k).unwrap().unwrap().try_into().unwrap())
            };
            assert_eq!(read(b"song-a"), 32);
            assert_eq!(read(b"song-b"), 150);
            assert_eq!(db.scan_prefix(CF_PLAYS, b"song-", b"song-", 9).unwrap().len(), 2);
        }

        fn one_holder_has_a_lease_until_it_runs_out(place: &Place) {
            let db = place.open();
            assert!(db.take_lease("auditor", "a", 1_000, 500).unwrap());
            assert!(db.take_lease("auditor", "a", 1_200, 500).unwrap(), "its holder renews it");
            let other = db.take_lease("auditor", "b", 1_400, 500).unwrap();
            // One tracker on the embedded store: it holds every lease.
            assert_eq!(other, !place.shared());
            assert!(db.take_lease("auditor", "b", 1_800, 500).unwrap(), "taken once run out");
        }
    }

    #[test]
    fn a_bad_database_url_is_a_clear_error() {
        let e = Db::open_postgres("postgres://nobody@127.0.0.1:1/none").unwrap_err();
        assert!(
            e.to_string().contains("cannot reach the tracker database"),
            "{e}"
        );
        let e = Db::open_postgres("postgres://x@[::1").unwrap_err();
        assert!(e.to_string().contains("bad database URL"), "{e}");
    }
}
