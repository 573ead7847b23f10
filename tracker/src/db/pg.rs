//! The tracker's store on PostgreSQL, shared by every tracker replica.
//!
//! Each keyspace is a table of `(k BYTEA PRIMARY KEY, v BYTEA)` (`tracker/migrations/`,
//! applied at start by refinery, which keeps the applied versions in its own table). What
//! replicas could race on is settled by the database:
//!
//! - a publish locks the journal's head row, so journal positions are handed out and become
//!   visible in one order, and a reader following the journal never skips a position;
//! - a layout version is inserted only if absent (`ON CONFLICT DO NOTHING`): one replica
//!   makes each version, the others read it;
//! - play counts are added to in the database, not overwritten.
//!
//! The SQL is what PostgreSQL-compatible distributed databases also run; `NOTIFY` (which
//! they may lack) only wakes replicas sooner than their poll.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use super::{
    CF_DEMAND, CF_INVITES, CF_JOURNAL, CF_LAYOUTS, CF_LIES, CF_MANIFESTS, CF_NODES, CF_PLACEMENT,
    CF_PLAYS, CF_PUBLISHERS, CF_SEEN, DbError, NewSong, Record,
};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The channel a commit to the journal is announced on.
const JOURNAL_CHANNEL: &str = "medley_journal";
/// Connections a replica keeps at most.
const POOL_SIZE: u32 = 16;
/// How long an operation waits for a connection (the database may be down).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Songs written per statement of a commit.
const CHUNK: usize = 2_000;

/// The PostgreSQL store.
pub(super) struct Pg {
    pool: r2d2::Pool<PostgresConnectionManager<NoTls>>,
    config: Config,
    /// The connection that listens for journal commits, made at the first wait.
    listener: Mutex<Option<Client>>,
}

fn pg(op: &'static str) -> impl FnOnce(postgres::Error) -> DbError {
    move |source| DbError::Postgres { op, source }
}

/// The table of a keyspace: its name is the keyspace's.
fn table(cf: &'static str) -> Result<&'static str, DbError> {
    match cf {
        CF_MANIFESTS | CF_NODES | CF_LAYOUTS | CF_PUBLISHERS | CF_JOURNAL | CF_PLACEMENT
        | CF_INVITES | CF_SEEN | CF_LIES | CF_DEMAND => Ok(cf),
        _ => Err(DbError::Corrupt {
            what: format!("keyspace {cf}"),
            reason: "not a table of the store".into(),
        }),
    }
}

/// The first key after every key that starts with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn record(row: &postgres::Row) -> Record {
    let k: Vec<u8> = row.get(0);
    let v: Vec<u8> = row.get(1);
    (k.into_boxed_slice(), v.into_boxed_slice())
}

/// Play counts are stored as numbers; readers get them as the embedded store keeps them.
fn count_record(row: &postgres::Row) -> Record {
    let k: Vec<u8> = row.get(0);
    let n: i64 = row.get(1);
    (
        k.into_boxed_slice(),
        Box::new(u64::try_from(n).unwrap_or(0).to_le_bytes()),
    )
}

/// How the rows of a read decode.
type Decode = fn(&postgres::Row) -> Record;

/// The table and columns a read selects, and how its rows decode.
fn columns(cf: &'static str) -> Result<(&'static str, &'static str, Decode), DbError> {
    if cf == CF_PLAYS {
        Ok(("plays", "k, n", count_record))
    } else {
        Ok((table(cf)?, "k, v", record))
    }
}

impl Pg {
    pub(super) fn open(url: &str) -> Result<Self, DbError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| DbError::Connect(format!("bad database URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("medley-tracker");
        }
        let mut client = config
            .connect(NoTls)
            .map_err(|e| DbError::Connect(e.to_string()))?;
        migrate(&mut client)?;
        drop(client);
        let manager = PostgresConnectionManager::new(config.clone(), NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(2))
            .connection_timeout(CONNECT_TIMEOUT)
            .build(manager)
            .map_err(|e| DbError::Connect(e.to_string()))?;
        Ok(Self {
            pool,
            config,
            listener: Mutex::new(None),
        })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, DbError> {
        self.pool.get().map_err(|e| DbError::Connect(e.to_string()))
    }

    pub(super) fn put(&self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<(), DbError> {
        let t = table(cf)?;
        self.conn()?
            .execute(
                &format!(
                    "INSERT INTO {t} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                ),
                &[&key, &value],
            )
            .map_err(pg("put"))?;
        Ok(())
    }

    pub(super) fn put_new(
        &self,
        cf: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, DbError> {
        let t = table(cf)?;
        let n = self
            .conn()?
            .execute(
                &format!("INSERT INTO {t} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING"),
                &[&key, &value],
            )
            .map_err(pg("insert"))?;
        Ok(n == 1)
    }

    pub(super) fn delete(&self, cf: &'static str, key: &[u8]) -> Result<(), DbError> {
        let t = table(cf)?;
        self.conn()?
            .execute(&format!("DELETE FROM {t} WHERE k = $1"), &[&key])
            .map_err(pg("delete"))?;
        Ok(())
    }

    pub(super) fn append(&self, cf: &'static str, value: &[u8]) -> Result<u64, DbError> {
        let t = table(cf)?;
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg("begin"))?;
        // The head row stays locked until the commit: numbers are taken and made visible in
        // one order across replicas.
        let seq: i64 = tx
            .query_one(
                "UPDATE log_heads SET seq = seq + 1 WHERE name = $1 RETURNING seq",
                &[&t],
            )
            .map_err(pg("log head"))?
            .get(0);
        let seq = u64::try_from(seq).unwrap_or(0);
        tx.execute(
            &format!("INSERT INTO {t} (k, v) VALUES ($1, $2)"),
            &[&seq.to_be_bytes().as_slice(), &value],
        )
        .map_err(pg("append"))?;
        tx.commit().map_err(pg("commit"))?;
        Ok(seq)
    }

    pub(super) fn delete_below(&self, cf: &'static str, key: &[u8]) -> Result<(), DbError> {
        let t = table(cf)?;
        self.conn()?
            .execute(&format!("DELETE FROM {t} WHERE k < $1"), &[&key])
            .map_err(pg("delete"))?;
        Ok(())
    }

    pub(super) fn put_all(&self, records: &[(&'static str, &[u8], &[u8])]) -> Result<(), DbError> {
        // By table, the last value of a key written (one statement may not write a row twice).
        let mut by_table: BTreeMap<&'static str, BTreeMap<&[u8], &[u8]>> = BTreeMap::new();
        for (cf, k, v) in records {
            by_table.entry(table(cf)?).or_default().insert(k, v);
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg("begin"))?;
        for (t, rows) in by_table {
            let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = rows.into_iter().unzip();
            for (keys, values) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
                tx.execute(
                    &format!(
                        "INSERT INTO {t} (k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                    ),
                    &[&keys, &values],
                )
                .map_err(pg("batch"))?;
            }
        }
        tx.commit().map_err(pg("commit"))
    }

    pub(super) fn add_counts(&self, deltas: &[(Vec<u8>, u64)]) -> Result<(), DbError> {
        let mut summed: BTreeMap<&[u8], i64> = BTreeMap::new();
        for (k, d) in deltas {
            let n = summed.entry(k).or_default();
            *n = n.saturating_add(i64::try_from(*d).unwrap_or(i64::MAX));
        }
        let (keys, counts): (Vec<&[u8]>, Vec<i64>) = summed.into_iter().unzip();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg("begin"))?;
        for (keys, counts) in keys.chunks(CHUNK).zip(counts.chunks(CHUNK)) {
            tx.execute(
                "INSERT INTO plays (k, n) SELECT * FROM UNNEST($1::bytea[], $2::int8[]) \
                 ON CONFLICT (k) DO UPDATE SET n = plays.n + EXCLUDED.n",
                &[&keys, &counts],
            )
            .map_err(pg("count"))?;
        }
        tx.commit().map_err(pg("commit"))
    }

    pub(super) fn commit_songs(&self, songs: &[NewSong<'_>]) -> Result<Vec<Option<u64>>, DbError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg("begin"))?;
        // The head row stays locked until the commit: positions are taken and made visible
        // in one order across replicas.
        let head: i64 = tx
            .query_one("SELECT seq FROM journal_head WHERE id = 1 FOR UPDATE", &[])
            .map_err(pg("journal head"))?
            .get(0);
        let mut next = u64::try_from(head).unwrap_or(0);
        let mut out = vec![None; songs.len()];
        let mut placement: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
        let mut journal: (Vec<Vec<u8>>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        for (i, chunk) in songs.chunks(CHUNK).enumerate() {
            let ids: Vec<&[u8]> = chunk.iter().map(|s| s.id.as_slice()).collect();
            let manifests: Vec<&[u8]> = chunk.iter().map(|s| s.manifest).collect();
            let created: std::collections::HashSet<Vec<u8>> = tx
                .query(
                    "INSERT INTO manifests (k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (k) DO NOTHING RETURNING k",
                    &[&ids, &manifests],
                )
                .map_err(pg("commit manifests"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut taken = std::collections::HashSet::new();
            for (j, song) in chunk.iter().enumerate() {
                if created.contains(song.id.as_slice()) && taken.insert(song.id) {
                    next += 1;
                    out[i * CHUNK + j] = Some(next);
                    journal.0.push(next.to_be_bytes().to_vec());
                    journal.1.push(song.id.as_slice());
                    placement.extend(
                        song.placement
                            .iter()
                            .map(|(k, v)| (k.as_slice(), v.as_slice())),
                    );
                }
            }
        }
        if journal.0.is_empty() {
            return Ok(out);
        }
        for (keys, values) in journal.0.chunks(CHUNK).zip(journal.1.chunks(CHUNK)) {
            tx.execute(
                "INSERT INTO journal (k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[])",
                &[&keys, &values],
            )
            .map_err(pg("commit journal"))?;
        }
        let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = placement.into_iter().unzip();
        for (keys, values) in keys.chunks(CHUNK * 8).zip(values.chunks(CHUNK * 8)) {
            tx.execute(
                "INSERT INTO placement (k, v) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO NOTHING",
                &[&keys, &values],
            )
            .map_err(pg("commit placement"))?;
        }
        let head = i64::try_from(next).unwrap_or(i64::MAX);
        tx.execute("UPDATE journal_head SET seq = $1 WHERE id = 1", &[&head])
            .map_err(pg("journal head"))?;
        tx.commit().map_err(pg("commit"))?;
        // Wakes the other replicas' indexes; without it they find the entry at their poll.
        if let Err(e) = conn.batch_execute(&format!("NOTIFY {JOURNAL_CHANNEL}")) {
            tracing::debug!(error = %e, "cannot announce a commit");
        }
        Ok(out)
    }

    pub(super) fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, DbError> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let until = i64::try_from(now_ms.saturating_add(ttl_ms)).unwrap_or(i64::MAX);
        let n = self
            .conn()?
            .execute(
                "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms \
                 WHERE leases.holder = EXCLUDED.holder OR leases.until_ms < $4",
                &[&name, &holder, &until, &now],
            )
            .map_err(pg("lease"))?;
        Ok(n == 1)
    }

    pub(super) fn wait_for_journal(&self, timeout: Duration) -> bool {
        let mut listener = self.listener.lock();
        if listener.is_none() {
            match self.config.connect(NoTls).and_then(|mut c| {
                c.batch_execute(&format!("LISTEN {JOURNAL_CHANNEL}"))?;
                Ok(c)
            }) {
                Ok(c) => *listener = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for commits");
                    drop(listener);
                    std::thread::sleep(timeout);
                    return false;
                }
            }
        }
        let Some(client) = listener.as_mut() else {
            return false;
        };
        let first = client.notifications().timeout_iter(timeout).next();
        match first {
            Ok(Some(_)) => {
                // Several commits announced together wake the reader once.
                while let Ok(Some(_)) = client.notifications().iter().next() {}
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "the commit listener's connection broke");
                *listener = None;
                false
            }
            Ok(None) => false,
        }
    }

    pub(super) fn scan_from(&self, cf: &'static str, start: &[u8]) -> Result<Vec<Record>, DbError> {
        let (t, cols, decode) = columns(cf)?;
        let rows = self
            .conn()?
            .query(
                &format!("SELECT {cols} FROM {t} WHERE k >= $1 ORDER BY k"),
                &[&start],
            )
            .map_err(pg("scan"))?;
        Ok(rows.iter().map(decode).collect())
    }

    pub(super) fn for_each_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), DbError> {
        for (k, v) in self.scan_prefix(cf, prefix, prefix, usize::MAX)? {
            f(&k, &v);
        }
        Ok(())
    }

    pub(super) fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Record>, DbError> {
        let (t, cols, decode) = columns(cf)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.conn()?;
        let rows = match prefix_end(prefix) {
            Some(end) => conn.query(
                &format!("SELECT {cols} FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"),
                &[&start, &end, &limit],
            ),
            None => conn.query(
                &format!("SELECT {cols} FROM {t} WHERE k >= $1 ORDER BY k LIMIT $2"),
                &[&start, &limit],
            ),
        }
        .map_err(pg("scan"))?;
        Ok(rows
            .iter()
            .map(decode)
            .filter(|(k, _)| k.starts_with(prefix))
            .collect())
    }

    pub(super) fn page(
        &self,
        cf: &'static str,
        offset: usize,
        limit: usize,
        _cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<Record>, DbError> {
        let (t, cols, decode) = columns(cf)?;
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .conn()?
            .query(
                &format!("SELECT {cols} FROM {t} ORDER BY k OFFSET $1 LIMIT $2"),
                &[&offset, &limit],
            )
            .map_err(pg("page"))?;
        Ok(rows.iter().map(decode).collect())
    }

    pub(super) fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let (t, cols, decode) = columns(cf)?;
        let row = self
            .conn()?
            .query_opt(&format!("SELECT {cols} FROM {t} WHERE k = $1"), &[&key])
            .map_err(pg("get"))?;
        Ok(row.map(|r| decode(&r).1.into_vec()))
    }

    pub(super) fn get_many(
        &self,
        cf: &'static str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, DbError> {
        let (t, cols, decode) = columns(cf)?;
        let mut found = std::collections::HashMap::new();
        let mut conn = self.conn()?;
        for chunk in keys.chunks(CHUNK) {
            let rows = conn
                .query(
                    &format!("SELECT {cols} FROM {t} WHERE k = ANY($1::bytea[])"),
                    &[&chunk],
                )
                .map_err(pg("get"))?;
            found.extend(rows.iter().map(|r| {
                let (k, v) = decode(r);
                (k, v.into_vec())
            }));
        }
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    fn end(&self, cf: &'static str, order: &str) -> Result<Option<Record>, DbError> {
        let (t, cols, decode) = columns(cf)?;
        let row = self
            .conn()?
            .query_opt(
                &format!("SELECT {cols} FROM {t} ORDER BY k {order} LIMIT 1"),
                &[],
            )
            .map_err(pg("scan"))?;
        Ok(row.map(|r| decode(&r)))
    }

    pub(super) fn last(&self, cf: &'static str) -> Result<Option<Record>, DbError> {
        self.end(cf, "DESC")
    }

    pub(super) fn first(&self, cf: &'static str) -> Result<Option<Record>, DbError> {
        self.end(cf, "ASC")
    }
}

impl Drop for Pg {
    /// Closes the connections on a thread of its own: the driver closes a connection by
    /// blocking on its runtime, which must not happen on a thread that drives async tasks
    /// (the tracker's state may be dropped on one).
    fn drop(&mut self) {
        let listener = self.listener.lock().take();
        let pool = self.pool.clone();
        let closing = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop((pool, listener)));
        match closing {
            Ok(t) => {
                let _ = t.join();
            }
            Err(e) => tracing::warn!(error = %e, "cannot close the database connections"),
        }
    }
}

/// Brings the schema up to date. Replicas starting together may race to apply the same
/// migration: the loser's transaction rolls back, and its next try finds it applied.
fn migrate(client: &mut Client) -> Result<(), DbError> {
    let mut last = String::new();
    for attempt in 0..5 {
        match embedded::migrations::runner().run(client) {
            Ok(report) => {
                for m in report.applied_migrations() {
                    tracing::info!(version = m.version(), name = m.name(), "database migrated");
                }
                return Ok(());
            }
            Err(e) => {
                last = e.to_string();
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
        }
    }
    Err(DbError::Migrate(last))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(&[0, 1]), Some(vec![0, 2]));
        assert_eq!(prefix_end(&[0, 0xff]), Some(vec![1]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
