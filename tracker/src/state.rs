//! The tracker's state and its rules: catalogue, publishers, node registry and layout. The
//! HTTP layer ([`crate::api`]) only translates requests into these calls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use medley_core::api::{PublishGrants, RepairLoad};
use medley_core::{
    Layout, LayoutError, MAX_GRANT_SHARDS, Manifest, ManifestError, Member, PublisherId,
    SegmentEntry, SegmentId, ShardId, SongId, TrackerId, TrackerKey, partition_of,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::TrackerConfig;
use crate::db::{
    CF_JOURNAL, CF_LAYOUTS, CF_MANIFESTS, CF_NODES, CF_PLACEMENT, CF_PLAYS, CF_PUBLISHERS, Db,
    DbError,
};
use crate::popularity::{Candidate, HotSong, PeerAnnouncement, Popularity, Rules};
use crate::search::{Artist, Hit, Search, SearchError, SearchQuery, SearchResults};

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
    /// Bytes stored (shards and hot copies).
    #[serde(default)]
    pub used: u64,
    /// Durable shards stored.
    #[serde(default)]
    pub shards: u64,
    /// The node's repair work.
    #[serde(default)]
    pub repair: RepairLoad,
    /// Bytes its hot tier may still take (absent: as much as is free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_free: Option<u64>,
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
    /// Songs it holds whole in its hot tier (absent: unchanged).
    #[serde(default)]
    pub hot: Option<Vec<SongId>>,
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
    /// Set by a drain: the node stays up and hands its shards over, but the layout no longer
    /// gives it slots.
    #[serde(default)]
    pub draining: bool,
    /// Set when the node said it is stopping; cleared by its next registration or
    /// heartbeat. A stopped node is no longer offered as a source, but the layout keeps its
    /// slots for the grace period, as for any node gone quiet, so a restart moves no data.
    #[serde(default)]
    pub stopped: bool,
}

/// Most songs one listener may announce.
pub const MAX_ANNOUNCED_SONGS: usize = 10_000;

/// What kind of whole copy a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A listener serving its cache.
    Peer,
    /// A storage node's hot tier.
    Hot,
}

/// A source of whole segments of a song.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeSource {
    /// Its peer id.
    pub peer_id: String,
    /// Its data-plane addresses.
    pub addrs: Vec<String>,
    /// Its region.
    pub region: String,
    /// Peer or hot node.
    pub kind: SourceKind,
}

impl NodeRecord {
    /// The node as a member of a layout.
    fn member(&self) -> Member {
        Member {
            id: self.registration.peer_id.clone(),
            region: self.registration.region.clone(),
            capacity: self.registration.capacity,
        }
    }
}

/// What a layout change would do, computed without applying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutPreview {
    /// Version of the layout in force (`None`: none yet).
    pub current_version: Option<u64>,
    /// Whether the change would give any slot to another node.
    pub changes: bool,
    /// Slots (partition, position) that would get another node.
    pub moved_slots: usize,
    /// Shards the new holders would have to fetch or rebuild.
    pub moved_shards: u64,
    /// Their bytes.
    pub moved_bytes: u64,
    /// Slots per node before and after.
    pub nodes: Vec<NodeSlots>,
}

/// One node's share of a layout before and after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSlots {
    /// The node.
    pub peer_id: String,
    /// Its region.
    pub region: String,
    /// Slots it holds now.
    pub before: usize,
    /// Slots it would hold.
    pub after: usize,
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
    /// A play report is invalid.
    #[error("invalid play report: {0}")]
    BadPlay(&'static str),
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
    /// No layout has this version.
    #[error("no layout version {0}")]
    UnknownLayout(u64),
    /// The partition number is past the layout's partitions.
    #[error("partition {partition} does not exist; this network has {partitions}")]
    UnknownPartition {
        /// Asked for.
        partition: u16,
        /// Partitions of the network.
        partitions: u16,
    },
    /// Draining the node would leave too few nodes for `k + m` distinct slots.
    #[error(
        "cannot drain {node}: {left} other nodes would be left, a layout needs {need}; add a node first"
    )]
    CannotDrain {
        /// The node.
        node: String,
        /// Live, non-draining nodes that would remain.
        left: usize,
        /// k + m.
        need: usize,
    },
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The tracker's key file could not be read or made.
    #[error(transparent)]
    Key(#[from] medley_daemon::keyfile::KeyFileError),
    /// Search failed or the query was refused.
    #[error(transparent)]
    Search(#[from] SearchError),
}

/// File name of the tracker's signing key inside its data directory.
pub const TRACKER_KEY_FILE: &str = "tracker.key";

fn grant_error(e: &medley_core::GrantError) -> &'static str {
    match e {
        medley_core::GrantError::TooLarge(what) => what,
        _ => "a grant could not be signed",
    }
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
    /// Signs publish grants and the orders nodes act on (`tracker.key` in the data dir).
    key: TrackerKey,
    config: TrackerConfig,
    publishers: RwLock<HashSet<PublisherId>>,
    nodes: RwLock<BTreeMap<String, NodeRecord>>,
    layout: RwLock<Option<Arc<Layout>>>,
    /// The members the current layout was computed for: live, not draining, with capacity.
    members: parking_lot::Mutex<Vec<Member>>,
    search: Search,
    /// Serialises publishes, so the journal and the index advance in the same order.
    publishing: parking_lot::Mutex<u64>,
    /// Serialises play counter updates (read, add one, write).
    counting: parking_lot::Mutex<()>,
    /// Decaying play counters, hot-copy orders, what nodes and peers hold whole.
    popularity: parking_lot::Mutex<Popularity>,
}

fn play_count(v: &[u8]) -> u64 {
    v.try_into().map_or(0, u64::from_le_bytes)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks the identity fields a node registration or a peer announcement carries.
fn check_peer(peer_id: &str, region: &str, addrs: &[String]) -> Result<(), StateError> {
    if peer_id.is_empty() || peer_id.len() > 128 {
        return Err(StateError::BadRegistration(
            "peer_id must be 1 to 128 characters",
        ));
    }
    if region.is_empty() || region.len() > 64 {
        return Err(StateError::BadRegistration(
            "region must be 1 to 64 characters",
        ));
    }
    if addrs.is_empty() || addrs.len() > 16 || addrs.iter().any(|a| a.len() > 256) {
        return Err(StateError::BadRegistration(
            "addrs must list 1 to 16 addresses of at most 256 characters",
        ));
    }
    Ok(())
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
        let key = TrackerKey::from_seed(medley_daemon::keyfile::load_or_create_seed(
            &config.data_dir.join(TRACKER_KEY_FILE),
        )?);
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
        let layout = match db.last(CF_LAYOUTS)? {
            Some((_, v)) => {
                Some(serde_json::from_slice::<Layout>(&v).map_err(|e| corrupt("layout", e))?)
            }
            None => None,
        };
        let in_layout: HashSet<&str> = layout
            .iter()
            .flat_map(|l| l.partitions.iter().flatten())
            .map(String::as_str)
            .collect();
        let mut nodes = BTreeMap::new();
        for (k, v) in db.scan(CF_NODES)? {
            let mut rec: NodeRecord = serde_json::from_slice(&v)
                .map_err(|e| corrupt(format!("node {}", String::from_utf8_lossy(&k)), e))?;
            // Heartbeats are not persisted: every node of the current layout gets a full grace
            // period from this start before it counts as down, so a tracker restart moves no
            // data. Nodes outside the layout stay down until they are heard from.
            if in_layout.contains(rec.registration.peer_id.as_str()) {
                rec.last_seen_ms = now_ms();
            }
            nodes.insert(rec.registration.peer_id.clone(), rec);
        }
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
            key,
            config,
            publishers: RwLock::new(keys),
            nodes: RwLock::new(nodes),
            layout: RwLock::new(layout.map(Arc::new)),
            members: parking_lot::Mutex::new(Vec::new()),
            search,
            publishing: parking_lot::Mutex::new(last_seq),
            counting: parking_lot::Mutex::new(()),
            popularity: parking_lot::Mutex::default(),
        };
        *state.members.lock() = state.eligible();
        state.catch_up_index(fresh)?;
        state.backfill_placement()?;
        Ok(state)
    }

    /// Builds the placement index from the catalogue when it is empty but songs exist (a
    /// database written before the index existed).
    fn backfill_placement(&self) -> Result<(), StateError> {
        if !self.db.is_empty(CF_PLACEMENT)? || self.db.is_empty(CF_MANIFESTS)? {
            return Ok(());
        }
        info!("building the placement index from the catalogue");
        let partitions = self.config.partitions;
        for chunk in self.db.scan(CF_MANIFESTS)?.chunks(10_000) {
            let mut owned = Vec::new();
            for (k, v) in chunk {
                let id = SongId::from_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("manifest key", "not 32 bytes"))?,
                );
                let m = Manifest::decode_expecting(v, id)?;
                owned.extend(placement_records(&m, partitions));
            }
            let records: Vec<(&'static str, &[u8], &[u8])> = owned
                .iter()
                .map(|(k, v)| (CF_PLACEMENT, k.as_slice(), v.as_slice()))
                .collect();
            self.db.put_all(&records)?;
        }
        Ok(())
    }

    /// Segments of partition `partition` in id order, after `after`, at most `limit`: what
    /// the nodes on its slots must hold.
    pub fn partition_segments(
        &self,
        partition: u16,
        after: Option<SegmentId>,
        limit: usize,
    ) -> Result<Vec<SegmentEntry>, StateError> {
        let partitions = self.config.partitions;
        if partition >= partitions {
            return Err(StateError::UnknownPartition {
                partition,
                partitions,
            });
        }
        let prefix = partition.to_be_bytes();
        let mut start = prefix.to_vec();
        if let Some(a) = after {
            start.extend_from_slice(a.as_bytes());
            // The first key after `after`: append a zero byte.
            start.push(0);
        }
        let slots = usize::from(self.config.k + self.config.m);
        self.db
            .scan_prefix(CF_PLACEMENT, &prefix, &start, limit)?
            .into_iter()
            .map(|(k, v)| {
                let id: [u8; 32] = k
                    .get(2..)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt("placement key", "not 34 bytes"))?;
                if v.len() != 4 + 32 * slots {
                    return Err(corrupt("placement record", "wrong length").into());
                }
                let len = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                let shards = v[4..]
                    .chunks_exact(32)
                    .map(|c| {
                        let mut b = [0u8; 32];
                        b.copy_from_slice(c);
                        ShardId::from_bytes(b)
                    })
                    .collect();
                Ok(SegmentEntry {
                    id: SegmentId::from_bytes(id),
                    len,
                    shards,
                })
            })
            .collect()
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

    /// A page of the catalogue's artists (see [`crate::search`]).
    pub fn artists(&self, after: &str, limit: usize) -> Result<Vec<Artist>, StateError> {
        Ok(self.search.artists(after, limit)?)
    }

    /// Up to `size` songs at random, optionally of one genre.
    pub fn random_songs(&self, size: usize, genre: Option<&str>) -> Result<Vec<Hit>, StateError> {
        Ok(self.search.random(size, genre)?)
    }

    /// Every song of the catalogue in id order, `limit` (1 to 500) after the first `offset`.
    pub fn songs_page(&self, offset: usize, limit: usize) -> Result<Vec<Hit>, StateError> {
        if limit == 0 || limit > 500 {
            return Err(SearchError::BadQuery("limit must be 1 to 500".into()).into());
        }
        let mut out = Vec::new();
        for (k, v) in self.db.page(CF_MANIFESTS, offset, limit)? {
            let id = SongId::from_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("manifest key", "not 32 bytes"))?,
            );
            let m = Manifest::decode_expecting(&v, id)?;
            out.push(Hit::of(&id, m.meta()));
        }
        Ok(out)
    }

    /// Records one play of song `id` in `region`; returns the song's plays there so far.
    pub fn record_play(&self, id: SongId, region: &str) -> Result<u64, StateError> {
        if region.is_empty() || region.len() > 64 {
            return Err(StateError::BadPlay("region must be 1 to 64 bytes"));
        }
        // Only songs of the catalogue are counted.
        self.manifest(id)?;
        let mut key = id.as_bytes().to_vec();
        key.extend_from_slice(region.as_bytes());
        let _guard = self.counting.lock();
        let manifest = self.manifest(id)?;
        let plays = self.db.get(CF_PLAYS, &key)?.map_or(0, |v| play_count(&v)) + 1;
        self.db.put(CF_PLAYS, &key, &plays.to_le_bytes())?;
        drop(_guard);
        if self.config.hot_copies > 0 {
            let candidates = self.hot_candidates();
            self.popularity.lock().play(
                self.rules(),
                id,
                manifest.body().total_size,
                region,
                &candidates,
                now_ms(),
            );
        }
        Ok(plays)
    }

    fn rules(&self) -> Rules {
        Rules {
            hot_plays: self.config.hot_plays,
            half_life_ms: self.config.hot_half_life_secs as f64 * 1000.0,
            copies: self.config.hot_copies,
            peer_ttl_ms: self.config.peer_ttl_secs * 1000,
            ban_reporters: self.config.ban_reporters,
            ban_ms: self.config.ban_secs * 1000,
        }
    }

    /// Whether clients reported that `source` sent them wrong bytes often enough (from
    /// distinct signed reporters) that it is no longer offered.
    pub fn banned(&self, source: &str) -> bool {
        self.popularity
            .lock()
            .banned(source, self.rules(), now_ms())
    }

    /// Nodes that may take a hot copy: alive, not draining, with capacity.
    fn hot_candidates(&self) -> Vec<Candidate> {
        let now = now_ms();
        let (rules, pop) = (self.rules(), self.popularity.lock());
        self.nodes
            .read()
            .values()
            .filter(|r| !r.draining && r.registration.capacity > 0 && self.is_alive(r, now))
            .filter(|r| !pop.banned(&r.registration.peer_id, rules, now))
            .map(|r| Candidate {
                id: r.registration.peer_id.clone(),
                region: r.registration.region.clone(),
                // Before its first heartbeat a node has reported nothing: assume it is empty.
                free: if r.load == Load::default() {
                    r.registration.capacity
                } else {
                    r.load.free.min(r.load.hot_free.unwrap_or(u64::MAX))
                },
                bytes_per_sec: r.load.bytes_per_sec,
            })
            .collect()
    }

    /// Releases hot copies of songs that cooled and replaces ordered nodes that went away;
    /// called periodically. Returns the number of songs released.
    pub fn sweep_hot(&self) -> usize {
        let candidates = self.hot_candidates();
        self.popularity
            .lock()
            .sweep(self.rules(), &candidates, now_ms())
    }

    /// Songs node `peer_id` is ordered to hold whole.
    pub fn hot_orders(&self, peer_id: &str) -> Result<Vec<SongId>, StateError> {
        if !self.nodes.read().contains_key(peer_id) {
            return Err(StateError::UnknownNode(peer_id.to_string()));
        }
        Ok(self.popularity.lock().orders_of(peer_id))
    }

    /// The songs hot in some region, hottest first.
    pub fn hot_songs(&self) -> Vec<HotSong> {
        self.popularity.lock().hot(self.rules(), now_ms())
    }

    /// Records a listener's announcement of the songs it holds whole and serves.
    pub fn announce_peer(&self, a: PeerAnnouncement) -> Result<(), StateError> {
        check_peer(&a.peer_id, &a.region, &a.addrs)?;
        if a.songs.len() > MAX_ANNOUNCED_SONGS {
            return Err(StateError::BadRegistration(
                "a peer announces at most 10000 songs",
            ));
        }
        self.popularity.lock().announce(a, now_ms());
        Ok(())
    }

    /// Records a client's report that `source` failed it. Sources with recent failures are
    /// ranked last. A report of wrong bytes (`lied`) signed by `reporter` also counts
    /// towards a ban: `ban_reporters` distinct reporters within `ban_secs` ban the source,
    /// which is then offered to nobody. Returns whether the source is banned.
    pub fn report_source(
        &self,
        source: &str,
        reporter: Option<&str>,
        lied: bool,
    ) -> Result<bool, StateError> {
        if source.is_empty() || source.len() > 128 {
            return Err(StateError::BadRegistration(
                "peer_id must be 1 to 128 characters",
            ));
        }
        let (rules, now) = (self.rules(), now_ms());
        let mut pop = self.popularity.lock();
        pop.failed(source, rules, now);
        Ok(match reporter {
            Some(r) if lied && r != source => {
                let was = pop.banned(source, rules, now);
                let is = pop.lied(source, r, rules, now);
                if is && !was {
                    tracing::warn!(
                        source,
                        "banned: distinct listeners report it sends wrong bytes"
                    );
                }
                is
            }
            _ => pop.banned(source, rules, now),
        })
    }

    /// Whole copies of `song`, best first for a client in `region`: listener peers, then hot
    /// nodes, each ranked by region (same first), recent failures and load.
    pub fn whole_sources(&self, song: SongId, region: Option<&str>) -> Vec<WholeSource> {
        let now = now_ms();
        let rules = self.rules();
        let pop = self.popularity.lock();
        let nodes = self.nodes.read();
        // Rank: same region, no recent failure, peer before hot node, fewer failures, less
        // load.
        let mut out: Vec<(WholeSource, (bool, bool, u8, u64, u64))> = Vec::new();
        for a in pop.peers_with(song, rules, now) {
            if pop.banned(&a.peer_id, rules, now) {
                continue;
            }
            let failures = pop.failures_of(&a.peer_id, rules, now);
            out.push((
                WholeSource {
                    peer_id: a.peer_id.clone(),
                    addrs: a.addrs.clone(),
                    region: a.region.clone(),
                    kind: SourceKind::Peer,
                },
                (
                    region.is_some_and(|r| r != a.region),
                    failures >= 0.5,
                    0,
                    (failures * 1000.0) as u64,
                    0,
                ),
            ));
        }
        for id in pop.holders(song) {
            let Some(rec) = nodes.get(id).filter(|r| self.is_alive(r, now)) else {
                continue;
            };
            if pop.banned(id, rules, now) {
                continue;
            }
            let failures = pop.failures_of(id, rules, now);
            out.push((
                WholeSource {
                    peer_id: id.to_string(),
                    addrs: rec.registration.addrs.clone(),
                    region: rec.registration.region.clone(),
                    kind: SourceKind::Hot,
                },
                (
                    region.is_some_and(|r| r != rec.registration.region),
                    failures >= 0.5,
                    1,
                    (failures * 1000.0) as u64,
                    rec.load.bytes_per_sec,
                ),
            ));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.peer_id.cmp(&b.0.peer_id)));
        out.into_iter().map(|(s, _)| s).collect()
    }

    /// Plays of song `id` per region.
    pub fn plays(&self, id: SongId) -> Result<BTreeMap<String, u64>, StateError> {
        let prefix = id.as_bytes();
        Ok(self
            .db
            .scan_prefix(CF_PLAYS, prefix, prefix, usize::MAX)?
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                    play_count(&v),
                )
            })
            .collect())
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

    /// Revokes a publisher key: manifests it signs are refused from now on (songs it
    /// published stay). Returns whether it was authorised.
    pub fn remove_publisher(&self, key: PublisherId) -> Result<bool, StateError> {
        self.db.delete(CF_PUBLISHERS, &key.0)?;
        Ok(self.publishers.write().remove(&key))
    }

    /// The authorised publisher keys.
    pub fn publishers(&self) -> Vec<PublisherId> {
        let mut v: Vec<_> = self.publishers.read().iter().copied().collect();
        v.sort();
        v
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
        let placement = placement_records(&manifest, self.config.partitions);
        let key = next.to_be_bytes();
        let mut records: Vec<(&'static str, &[u8], &[u8])> = vec![
            (CF_MANIFESTS, id.as_bytes(), manifest.encoded()),
            (CF_JOURNAL, &key, id.as_bytes()),
        ];
        records.extend(
            placement
                .iter()
                .map(|(k, v)| (CF_PLACEMENT, k.as_slice(), v.as_slice())),
        );
        self.db.put_all(&records)?;
        *seq = next;
        // The commit is durable; the index is derived. If indexing fails, the song is found
        // once the index catches up at the next start.
        if let Err(e) = self.search.add(&[(id, manifest.meta().clone())], next) {
            tracing::error!(song = %id, error = %e, "indexing failed; will catch up at restart");
        }
        info!(song = %id, title = %manifest.meta().title, "song published");
        Ok(Committed { id, created: true })
    }

    /// The public key nodes check grants and orders against.
    pub fn tracker_id(&self) -> TrackerId {
        self.key.id()
    }

    /// Signs a statement to nodes (see [`TrackerKey::sign_statement`]).
    pub fn sign_statement(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign_statement(message)
    }

    /// Publish grants for a signed manifest of an authorised publisher (checked as by
    /// [`State::publish`]): for each node of the current layout, the ids of the song's
    /// shards placed on it, at most [`MAX_GRANT_SHARDS`] per grant, valid for
    /// `grant_ttl_secs`.
    pub fn grants(&self, bytes: &[u8]) -> Result<PublishGrants, StateError> {
        let manifest = self.check(bytes)?;
        let layout = self.layout()?;
        let partitions = u16::try_from(layout.partitions.len()).unwrap_or(u16::MAX);
        let mut by_node: BTreeMap<&str, Vec<ShardId>> = BTreeMap::new();
        for seg in &manifest.body().segments {
            let Some(slots) = layout
                .partitions
                .get(usize::from(partition_of(&seg.id, partitions)))
            else {
                continue;
            };
            for (shard, node) in seg.shards.iter().zip(slots) {
                let ids = by_node.entry(node.as_str()).or_default();
                if !ids.contains(shard) {
                    ids.push(*shard);
                }
            }
        }
        let expires = medley_core::unix_now() + self.config.grant_ttl_secs;
        let mut grants = Vec::new();
        for (node, ids) in by_node {
            for chunk in ids.chunks(MAX_GRANT_SHARDS) {
                grants.push(
                    self.key
                        .grant(node, chunk.to_vec(), expires)
                        .map_err(|e| StateError::BadRegistration(grant_error(&e)))?,
                );
            }
        }
        Ok(PublishGrants {
            song: manifest.id(),
            layout_version: layout.version,
            expires,
            grants,
        })
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
        let placement: Vec<(Vec<u8>, Vec<u8>)> = fresh
            .iter()
            .flat_map(|(_, m)| placement_records(m, self.config.partitions))
            .collect();
        let mut records: Vec<(&'static str, &[u8], &[u8])> =
            Vec::with_capacity(fresh.len() * 2 + placement.len());
        for (((_, m), key), id) in fresh.iter().zip(&seqs).zip(&ids) {
            records.push((CF_MANIFESTS, id.as_bytes(), m.encoded()));
            records.push((CF_JOURNAL, key, id.as_bytes()));
        }
        records.extend(
            placement
                .iter()
                .map(|(k, v)| (CF_PLACEMENT, k.as_slice(), v.as_slice())),
        );
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
        check_peer(&reg.peer_id, &reg.region, &reg.addrs)?;
        {
            let mut nodes = self.nodes.write();
            let previous = nodes.get(&reg.peer_id).cloned();
            let rec = NodeRecord {
                draining: previous.as_ref().is_some_and(|p| p.draining),
                load: previous.map(|p| p.load).unwrap_or_default(),
                registration: reg,
                last_seen_ms: now_ms(),
                stopped: false,
            };
            self.store_node(&rec)?;
            nodes.insert(rec.registration.peer_id.clone(), rec);
        }
        self.refresh_layout()?;
        Ok(self.layout_version())
    }

    /// Starts (`true`) or cancels (`false`) the drain of a node: a draining node gets no
    /// slots in the next layout; it keeps serving until the new holders have its shards.
    pub fn set_draining(&self, peer_id: &str, draining: bool) -> Result<u64, StateError> {
        {
            let mut nodes = self.nodes.write();
            let rec = nodes
                .get(peer_id)
                .ok_or_else(|| StateError::UnknownNode(peer_id.to_string()))?;
            if rec.draining == draining {
                drop(nodes);
                return self.layout().map(|l| l.version);
            }
            if draining {
                let need = usize::from(self.config.k + self.config.m);
                let now = now_ms();
                let left = nodes
                    .values()
                    .filter(|r| r.registration.peer_id != peer_id && self.is_eligible(r, now))
                    .count();
                if left < need {
                    return Err(StateError::CannotDrain {
                        node: peer_id.to_string(),
                        left,
                        need,
                    });
                }
            }
            let mut rec = rec.clone();
            rec.draining = draining;
            self.store_node(&rec)?;
            info!(node = peer_id, draining, "drain state changed");
            nodes.insert(peer_id.to_string(), rec);
        }
        self.refresh_layout()?;
        self.layout().map(|l| l.version)
    }

    /// Heard from within the grace period: the layout keeps its slots.
    fn is_recent(&self, rec: &NodeRecord, now: u64) -> bool {
        now.saturating_sub(rec.last_seen_ms) <= self.config.node_grace_secs * 1000
    }

    /// Serving: heard from recently and not stopped.
    fn is_alive(&self, rec: &NodeRecord, now: u64) -> bool {
        !rec.stopped && self.is_recent(rec, now)
    }

    fn is_eligible(&self, rec: &NodeRecord, now: u64) -> bool {
        self.eligible_if(rec, rec.draining, now)
    }

    /// Whether `rec` would get slots were its drain state `draining`.
    fn eligible_if(&self, rec: &NodeRecord, draining: bool, now: u64) -> bool {
        !draining && rec.registration.capacity > 0 && self.is_recent(rec, now)
    }

    /// The nodes the layout should place shards on: alive, not draining, with capacity.
    fn eligible(&self) -> Vec<Member> {
        let now = now_ms();
        self.nodes
            .read()
            .values()
            .filter(|r| self.is_eligible(r, now))
            .map(NodeRecord::member)
            .collect()
    }

    /// Recomputes the layout if the eligible nodes changed since the last computation: a
    /// node went down (no heartbeat for the grace period), came back, registered, or started
    /// or stopped draining. Called on every registration and drain, and periodically.
    /// Returns the new layout version when the layout changed.
    pub fn refresh_layout(&self) -> Result<Option<u64>, StateError> {
        let eligible = self.eligible();
        let mut members = self.members.lock();
        if *members == eligible && self.layout.read().is_some() {
            return Ok(None);
        }
        let before = self.layout_version();
        self.recompute_layout(&eligible)?;
        *members = eligible;
        let after = self.layout_version();
        Ok(if after == before { None } else { after })
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
        let now = now_ms();
        let was_down = !self.is_recent(rec, now);
        rec.load = hb.load;
        rec.last_seen_ms = now;
        rec.stopped = false;
        drop(nodes);
        if let Some(hot) = hb.hot {
            self.popularity
                .lock()
                .set_held(&hb.peer_id, hot.into_iter().collect());
        }
        // Heartbeats are frequent and only liveness hints: kept in memory, persisted on
        // register. A node back from the dead rejoins the layout.
        if was_down {
            info!(node = %hb.peer_id, "node is back");
            self.refresh_layout()?;
        }
        Ok(())
    }

    /// Records that a node is stopping: it is no longer offered as a source from now on.
    /// Its slots stay until the grace period ends, so a restart moves nothing.
    pub fn leave(&self, peer_id: &str) -> Result<(), StateError> {
        let mut nodes = self.nodes.write();
        let rec = nodes
            .get_mut(peer_id)
            .ok_or_else(|| StateError::UnknownNode(peer_id.to_string()))?;
        rec.stopped = true;
        let rec = rec.clone();
        drop(nodes);
        info!(node = peer_id, "node is stopping");
        self.store_node(&rec)
    }

    /// What the layout would become if the nodes in `drain` started draining and those in
    /// `undrain` stopped, with every other node as it is now; nothing is applied.
    pub fn preview_layout(
        &self,
        drain: &[String],
        undrain: &[String],
    ) -> Result<LayoutPreview, StateError> {
        let now = now_ms();
        let (members, regions) = {
            let nodes = self.nodes.read();
            for id in drain.iter().chain(undrain) {
                if !nodes.contains_key(id) {
                    return Err(StateError::UnknownNode(id.clone()));
                }
            }
            let members: Vec<Member> = nodes
                .values()
                .filter(|r| {
                    let id = &r.registration.peer_id;
                    let draining = drain.contains(id) || (r.draining && !undrain.contains(id));
                    self.eligible_if(r, draining, now)
                })
                .map(NodeRecord::member)
                .collect();
            let regions: HashMap<String, String> = nodes
                .iter()
                .map(|(id, r)| (id.clone(), r.registration.region.clone()))
                .collect();
            (members, regions)
        };
        let current = self.layout.read().clone();
        let slots = self.config.k + self.config.m;
        let next = Layout::compute(current.as_deref(), &members, self.config.partitions, slots)
            .map_err(StateError::NoLayout)?;
        let before = current.as_deref().map(Layout::load).unwrap_or_default();
        let after = next.load();
        let mut ids: Vec<&str> = before.keys().chain(after.keys()).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let nodes = ids
            .into_iter()
            .map(|id| NodeSlots {
                peer_id: id.to_string(),
                region: regions.get(id).cloned().unwrap_or_default(),
                before: before.get(id).copied().unwrap_or(0),
                after: after.get(id).copied().unwrap_or(0),
            })
            .collect();
        let (mut moved_slots, mut moved_shards, mut moved_bytes) = (0, 0, 0);
        if let Some(current) = &current {
            let codec = medley_core::Codec::new(self.config.k, self.config.m)
                .map_err(|e| corrupt("coding", e))?;
            for (p, (a, b)) in current.partitions.iter().zip(&next.partitions).enumerate() {
                let moved = a.iter().zip(b).filter(|(x, y)| x != y).count();
                if moved == 0 {
                    continue;
                }
                moved_slots += moved;
                let (segments, shard_bytes) = self.partition_size(p as u16, &codec)?;
                moved_shards += segments * moved as u64;
                moved_bytes += shard_bytes * moved as u64;
            }
        }
        Ok(LayoutPreview {
            current_version: current.as_ref().map(|l| l.version),
            changes: moved_slots > 0 || current.is_none(),
            moved_slots,
            moved_shards,
            moved_bytes,
            nodes,
        })
    }

    /// Segments placed in `partition` and the bytes of one slot's shards of them.
    fn partition_size(
        &self,
        partition: u16,
        codec: &medley_core::Codec,
    ) -> Result<(u64, u64), StateError> {
        let (mut segments, mut bytes) = (0u64, 0u64);
        self.db
            .for_each_prefix(CF_PLACEMENT, &partition.to_be_bytes(), |_, v| {
                if let Some(len) = v.get(..4) {
                    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
                    segments += 1;
                    bytes += codec.shard_len(len as usize) as u64;
                }
            })?;
        Ok((segments, bytes))
    }

    /// All nodes with whether each is alive (heard from within the grace period and not
    /// stopped).
    pub fn nodes(&self) -> Vec<(NodeRecord, bool)> {
        let now = now_ms();
        self.nodes
            .read()
            .values()
            .map(|r| (r.clone(), self.is_alive(r, now)))
            .collect()
    }

    /// Every node's data-plane addresses and whether it is alive, by peer id.
    pub fn addresses(&self) -> HashMap<String, (Vec<String>, bool)> {
        let now = now_ms();
        self.nodes
            .read()
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    (r.registration.addrs.clone(), self.is_alive(r, now)),
                )
            })
            .collect()
    }

    fn recompute_layout(&self, members: &[Member]) -> Result<(), StateError> {
        let mut layout = self.layout.write();
        let slots = self.config.k + self.config.m;
        match Layout::compute(layout.as_deref(), members, self.config.partitions, slots) {
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

    /// Layout `version`, current or past. Nodes compare it with the current one to find who
    /// held their new slots before.
    pub fn layout_at(&self, version: u64) -> Result<Layout, StateError> {
        if let Some(l) = self.layout.read().as_ref()
            && l.version == version
        {
            return Ok(l.as_ref().clone());
        }
        let bytes = self
            .db
            .get(CF_LAYOUTS, &version.to_be_bytes())?
            .ok_or(StateError::UnknownLayout(version))?;
        serde_json::from_slice(&bytes).map_err(|e| corrupt("layout", e).into())
    }

    /// The current layout's version, if there is a layout.
    pub fn layout_version(&self) -> Option<u64> {
        self.layout.read().as_ref().map(|l| l.version)
    }
}

/// The placement index records of a manifest's segments.
fn placement_records(m: &Manifest, partitions: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.body()
        .segments
        .iter()
        .map(|seg| {
            let mut key = Vec::with_capacity(34);
            key.extend_from_slice(&partition_of(&seg.id, partitions).to_be_bytes());
            key.extend_from_slice(seg.id.as_bytes());
            let mut value = Vec::with_capacity(4 + 32 * seg.shards.len());
            value.extend_from_slice(&seg.len.to_le_bytes());
            for s in &seg.shards {
                value.extend_from_slice(s.as_bytes());
            }
            (key, value)
        })
        .collect()
}
