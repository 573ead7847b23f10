//! The tracker's state and its rules: catalogue, publishers, node registry and layout. The
//! HTTP layer ([`crate::api`]) only translates requests into these calls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use medley_core::{Layout, LayoutError, Manifest, ManifestError, Member, PublisherId, SongId};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::TrackerConfig;
use crate::db::{CF_JOURNAL, CF_LAYOUTS, CF_MANIFESTS, CF_NODES, CF_PUBLISHERS, Db, DbError};
use crate::search::{Search, SearchError, SearchQuery, SearchResults};

/// What a node tells the tracker when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// libp2p peer id.
    pub peer_id: String,
    /// Data-plane multiaddrs.
    pub addrs: Vec<String>,
    /// Region.
    pub region: String,
    /// Capacity in bytes.
    pub capacity: u64,
}

/// Load a node reports in its heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Free bytes.
    pub free: u64,
    /// Bytes per second served, recently.
    pub bytes_per_sec: u64,
    /// Transfers in flight.
    pub transfers: u32,
}

/// A heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The node.
    pub peer_id: String,
    /// Its load.
    #[serde(flatten)]
    pub load: Load,
}

/// A node as the tracker knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// What it registered.
    #[serde(flatten)]
    pub registration: Registration,
    /// Last reported load.
    pub load: Load,
    /// Unix milliseconds of the last register or heartbeat.
    pub last_seen_ms: u64,
}

/// Why a tracker operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest is signed by a key that may not publish here.
    #[error("publisher {0} is not authorised on this tracker")]
    UnknownPublisher(PublisherId),
    /// The manifest uses another code than the network.
    #[error("manifest uses {k}+{m} coding, this network uses {net_k}+{net_m}")]
    Coding {
        /// Manifest's k.
        k: u8,
        /// Manifest's m.
        m: u8,
        /// Network's k.
        net_k: u8,
        /// Network's m.
        net_m: u8,
    },
    /// No such song.
    #[error("no song {0}")]
    UnknownSong(SongId),
    /// No such node.
    #[error("no node {0} is registered")]
    UnknownNode(String),
    /// A registration field is invalid.
    #[error("invalid registration: {0}")]
    BadRegistration(&'static str),
    /// There is no layout yet (too few nodes).
    #[error("no layout yet: {0}")]
    NoLayout(LayoutError),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Search failed or the query was refused.
    #[error(transparent)]
    Search(#[from] SearchError),
}

/// Result of a publish commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Committed {
    /// The song's id.
    pub id: SongId,
    /// False when the same manifest was already committed.
    pub created: bool,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Songs new to the catalogue.
    pub created: usize,
    /// Songs it had already (or repeated in the input).
    pub existing: usize,
    /// Manifests refused: their position in the input and why.
    pub rejected: Vec<(usize, String)>,
}

/// The tracker's state.
#[derive(Debug)]
pub struct State {
    db: Db,
    config: TrackerConfig,
    publishers: RwLock<HashSet<PublisherId>>,
    nodes: RwLock<BTreeMap<String, NodeRecord>>,
    layout: RwLock<Option<Arc<Layout>>>,
    search: Search,
    /// Serialises publishes, so the journal and the index advance in the same order.
    publishing: parking_lot::Mutex<u64>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn corrupt(what: impl Into<String>, reason: impl ToString) -> DbError {
    DbError::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
    }
}

impl State {
    /// Opens the state in `config.data_dir/db` and adds the configured publisher keys.
    pub fn open(config: TrackerConfig, publishers: &[PublisherId]) -> Result<Self, StateError> {
        let db = Db::open(&config.data_dir.join("db"))?;
        for p in publishers {
            db.put(CF_PUBLISHERS, &p.0, b"")?;
        }
        let mut keys = HashSet::new();
        for (k, _) in db.scan(CF_PUBLISHERS)? {
            let bytes: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("publisher key", "not 32 bytes"))?;
            keys.insert(PublisherId(bytes));
        }
        let mut nodes = BTreeMap::new();
        for (k, v) in db.scan(CF_NODES)? {
            let rec: NodeRecord = serde_json::from_slice(&v)
                .map_err(|e| corrupt(format!("node {}", String::from_utf8_lossy(&k)), e))?;
            nodes.insert(rec.registration.peer_id.clone(), rec);
        }
        let layout = match db.last(CF_LAYOUTS)? {
            Some((_, v)) => {
                Some(serde_json::from_slice::<Layout>(&v).map_err(|e| corrupt("layout", e))?)
            }
            None => None,
        };
        let (search, fresh) = Search::open(&config.data_dir.join("index"))?;
        let last_seq = match db.last(CF_JOURNAL)? {
            Some((k, _)) => u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("journal key", "not 8 bytes"))?,
            ),
            None => 0,
        };
        let state = Self {
            db,
            config,
            publishers: RwLock::new(keys),
            nodes: RwLock::new(nodes),
            layout: RwLock::new(layout.map(Arc::new)),
            search,
            publishing: parking_lot::Mutex::new(last_seq),
        };
        state.catch_up_index(fresh)?;
        Ok(state)
    }

    /// Indexes every journal entry the search index has not reached yet.
    fn catch_up_index(&self, fresh: bool) -> Result<(), StateError> {
        let from = if fresh { 0 } else { self.search.position()? };
        let entries = self.db.scan_from(CF_JOURNAL, &(from + 1).to_be_bytes())?;
        if entries.is_empty() {
            return Ok(());
        }
        info!(from, entries = entries.len(), "search index catching up");
        for chunk in entries.chunks(10_000) {
            let mut songs = Vec::with_capacity(chunk.len());
            let mut last = from;
            for (k, v) in chunk {
                last = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("journal key", "not 8 bytes"))?,
                );
                let id = SongId::from_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("journal entry", "not 32 bytes"))?,
                );
                songs.push((id, self.manifest(id)?.meta().clone()));
            }
            self.search.add(&songs, last)?;
        }
        Ok(())
    }

    /// Searches the catalogue's metadata.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults, StateError> {
        Ok(self.search.search(query)?)
    }

    /// The configuration.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Authorises a publisher key.
    pub fn add_publisher(&self, key: PublisherId) -> Result<(), StateError> {
        self.db.put(CF_PUBLISHERS, &key.0, b"")?;
        self.publishers.write().insert(key);
        Ok(())
    }

    /// Commits a signed manifest: it must decode, be consistent, carry a valid signature of
    /// an authorised publisher, and use the network's code. Idempotent.
    pub fn publish(&self, bytes: &[u8]) -> Result<Committed, StateError> {
        let manifest = self.check(bytes)?;
        let id = manifest.id();
        let mut seq = self.publishing.lock();
        if self.db.get(CF_MANIFESTS, id.as_bytes())?.is_some() {
            return Ok(Committed { id, created: false });
        }
        let next = *seq + 1;
        self.db.put_all(&[
            (CF_MANIFESTS, id.as_bytes(), manifest.encoded()),
            (CF_JOURNAL, &next.to_be_bytes(), id.as_bytes()),
        ])?;
        *seq = next;
        // The commit is durable; the index is derived. If indexing fails, the song is found
        // once the index catches up at the next start.
        if let Err(e) = self.search.add(&[(id, manifest.meta().clone())], next) {
            tracing::error!(song = %id, error = %e, "indexing failed; will catch up at restart");
        }
        info!(song = %id, title = %manifest.meta().title, "song published");
        Ok(Committed { id, created: true })
    }

    /// Checks a manifest as [`State::publish`] does, without committing it.
    fn check(&self, bytes: &[u8]) -> Result<Manifest, StateError> {
        let manifest = Manifest::decode(bytes)?;
        let body = manifest.body();
        if !self.publishers.read().contains(&body.publisher) {
            return Err(StateError::UnknownPublisher(body.publisher));
        }
        if (body.k, body.m) != (self.config.k, self.config.m) {
            return Err(StateError::Coding {
                k: body.k,
                m: body.m,
                net_k: self.config.k,
                net_m: self.config.m,
            });
        }
        Ok(manifest)
    }

    /// Commits many signed manifests at once, for bulk loads: each is checked as by
    /// [`State::publish`] (on all cores), the new ones are written in one synced batch and
    /// indexed in one index commit. A rejected manifest is reported and skipped; the others
    /// are committed.
    pub fn import(&self, manifests: &[Vec<u8>]) -> Result<Imported, StateError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = manifests.len().div_ceil(threads).max(1);
        let checked: Vec<Result<Manifest, StateError>> = std::thread::scope(|s| {
            let parts: Vec<_> = manifests
                .chunks(per)
                .map(|c| s.spawn(move || c.iter().map(|b| self.check(b)).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(StateError::Db(corrupt(
                            "import",
                            "a checking thread panicked",
                        )))]
                    })
                })
                .collect()
        });
        let mut out = Imported::default();
        let mut seq = self.publishing.lock();
        let mut next = *seq;
        let mut fresh = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in checked.into_iter().enumerate() {
            match r {
                Ok(m) => {
                    let id = m.id();
                    if !seen.insert(id) || self.db.get(CF_MANIFESTS, id.as_bytes())?.is_some() {
                        out.existing += 1;
                    } else {
                        next += 1;
                        fresh.push((next, m));
                    }
                }
                Err(e) => out.rejected.push((i, e.to_string())),
            }
        }
        let seqs: Vec<[u8; 8]> = fresh.iter().map(|(n, _)| n.to_be_bytes()).collect();
        let ids: Vec<SongId> = fresh.iter().map(|(_, m)| m.id()).collect();
        let mut records: Vec<(&'static str, &[u8], &[u8])> = Vec::with_capacity(fresh.len() * 2);
        for (((_, m), key), id) in fresh.iter().zip(&seqs).zip(&ids) {
            records.push((CF_MANIFESTS, id.as_bytes(), m.encoded()));
            records.push((CF_JOURNAL, key, id.as_bytes()));
        }
        if records.is_empty() {
            return Ok(out);
        }
        self.db.put_all(&records)?;
        *seq = next;
        out.created = fresh.len();
        let songs: Vec<_> = fresh
            .iter()
            .map(|(_, m)| (m.id(), m.meta().clone()))
            .collect();
        if let Err(e) = self.search.add(&songs, next) {
            tracing::error!(error = %e, "indexing an import failed; will catch up at restart");
        }
        Ok(out)
    }

    /// A committed manifest.
    pub fn manifest(&self, id: SongId) -> Result<Manifest, StateError> {
        let bytes = self
            .db
            .get(CF_MANIFESTS, id.as_bytes())?
            .ok_or(StateError::UnknownSong(id))?;
        // Stored manifests were verified on commit; check again, the disk may have rotted.
        Ok(Manifest::decode_expecting(&bytes, id)?)
    }

    /// Number of committed songs: the journal gains one entry per new song.
    pub fn song_count(&self) -> u64 {
        *self.publishing.lock()
    }

    /// Registers (or re-registers) a node and recomputes the layout if membership changed.
    pub fn register(&self, reg: Registration) -> Result<Option<u64>, StateError> {
        if reg.peer_id.is_empty() || reg.peer_id.len() > 128 {
            return Err(StateError::BadRegistration(
                "peer_id must be 1 to 128 characters",
            ));
        }
        if reg.region.is_empty() || reg.region.len() > 64 {
            return Err(StateError::BadRegistration(
                "region must be 1 to 64 characters",
            ));
        }
        if reg.addrs.is_empty() || reg.addrs.len() > 16 || reg.addrs.iter().any(|a| a.len() > 256) {
            return Err(StateError::BadRegistration(
                "addrs must list 1 to 16 addresses of at most 256 characters",
            ));
        }
        let changed = {
            let mut nodes = self.nodes.write();
            let previous = nodes.get(&reg.peer_id).cloned();
            let changed = previous.as_ref().is_none_or(|p| {
                p.registration.region != reg.region || p.registration.capacity != reg.capacity
            });
            let rec = NodeRecord {
                load: previous.map(|p| p.load).unwrap_or_default(),
                registration: reg,
                last_seen_ms: now_ms(),
            };
            self.store_node(&rec)?;
            nodes.insert(rec.registration.peer_id.clone(), rec);
            changed
        };
        if changed {
            self.recompute_layout()?;
        }
        Ok(self.layout_version())
    }

    fn store_node(&self, rec: &NodeRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec(rec).map_err(|e| corrupt("node record", e))?;
        Ok(self
            .db
            .put(CF_NODES, rec.registration.peer_id.as_bytes(), &json)?)
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, hb: Heartbeat) -> Result<(), StateError> {
        let mut nodes = self.nodes.write();
        let rec = nodes
            .get_mut(&hb.peer_id)
            .ok_or_else(|| StateError::UnknownNode(hb.peer_id.clone()))?;
        rec.load = hb.load;
        rec.last_seen_ms = now_ms();
        // Heartbeats are frequent and only liveness hints: kept in memory, persisted on
        // register. A restart shows nodes as down until their next heartbeat.
        Ok(())
    }

    /// All nodes with whether each is alive (heard from within the grace period).
    pub fn nodes(&self) -> Vec<(NodeRecord, bool)> {
        let now = now_ms();
        let grace = self.config.node_grace_secs * 1000;
        self.nodes
            .read()
            .values()
            .map(|r| (r.clone(), now.saturating_sub(r.last_seen_ms) <= grace))
            .collect()
    }

    /// Every node's data-plane addresses, by peer id.
    pub fn addresses(&self) -> HashMap<String, Vec<String>> {
        self.nodes
            .read()
            .iter()
            .map(|(id, r)| (id.clone(), r.registration.addrs.clone()))
            .collect()
    }

    fn recompute_layout(&self) -> Result<(), StateError> {
        let members: Vec<Member> = self
            .nodes
            .read()
            .values()
            .map(|r| Member {
                id: r.registration.peer_id.clone(),
                region: r.registration.region.clone(),
                capacity: r.registration.capacity,
            })
            .collect();
        let mut layout = self.layout.write();
        let slots = self.config.k + self.config.m;
        match Layout::compute(layout.as_deref(), &members, self.config.partitions, slots) {
            Ok(next) => {
                if layout
                    .as_ref()
                    .is_some_and(|l| l.partitions == next.partitions)
                {
                    return Ok(());
                }
                let json = serde_json::to_vec(&next).map_err(|e| corrupt("layout", e))?;
                self.db
                    .put(CF_LAYOUTS, &next.version.to_be_bytes(), &json)?;
                if let Some(prev) = layout.as_ref() {
                    info!(
                        version = next.version,
                        moved = prev.moved_slots(&next),
                        "layout changed"
                    );
                } else {
                    info!(version = next.version, "first layout");
                }
                *layout = Some(Arc::new(next));
                Ok(())
            }
            // Not enough nodes yet: keep what we have (or nothing).
            Err(LayoutError::TooFewNodes { .. }) => Ok(()),
            Err(e) => Err(StateError::NoLayout(e)),
        }
    }

    /// The current layout.
    pub fn layout(&self) -> Result<Arc<Layout>, StateError> {
        if let Some(l) = self.layout.read().clone() {
            return Ok(l);
        }
        let members = self
            .nodes
            .read()
            .values()
            .filter(|r| r.registration.capacity > 0)
            .count();
        Err(StateError::NoLayout(LayoutError::TooFewNodes {
            have: members,
            need: usize::from(self.config.k + self.config.m),
        }))
    }

    /// The current layout's version, if there is a layout.
    pub fn layout_version(&self) -> Option<u64> {
        self.layout.read().as_ref().map(|l| l.version)
    }
}
