//! Demand and whole copies: the popularity state ([`crate::popularity`]) behind one lock,
//! with its rules, joined with the node registry where a decision needs the nodes (which
//! may take a hot copy, which hot holders are alive). Soft state: nothing here is persisted.
//! Every method takes `now` (Unix ms) from its caller.
//!
//! Replicas on a shared store tell each other what they heard through the store's demand
//! log ([`Demand::share`]): each appends one batch a second (plays counted, listeners'
//! announcements, reports that confirm or fault a source, the whole copies nodes report)
//! and takes up the others'. One replica at a time, the holder of the `hot-orders` lease,
//! makes the orders for hot copies and shares them the same way; the others serve them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use medley_api::{HotSong, Load, PeerAnnouncement, ReportReason, SourceKind, WholeSource};
use medley_core::SongId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::TrackerConfig;
use crate::db::{CF_DEMAND, Db};
use crate::error::StateError;
use crate::popularity::{Candidate, Ordered, Popularity, Rules};
use crate::registry::{Registry, check_peer};

/// Most songs one listener may announce.
pub const MAX_ANNOUNCED_SONGS: usize = 10_000;
/// Most whole-copy sources listed per region for a song.
pub(crate) const MAX_WHOLE_PER_REGION: usize = 4;

/// How a whole copy ranks (smaller first): in another region, failed lately, class
/// (confirmed peer 0, hot node 1, unconfirmed peer 2), failures (milli), load (bytes/s).
type Rank = (bool, bool, u8, u64, u64);

/// A report of wrong bytes to share with the other replicas: source, signed reporter, Unix
/// ms, weight.
pub(crate) type Lie = (String, String, u64, f64);

/// Reports of wrong bytes kept for the next share at most.
const MAX_UNSHARED_LIES: usize = 10_000;

/// The lease whose holder makes the orders for hot copies.
const ORDERS_LEASE: &str = "hot-orders";
/// How long the orders lease holds unrenewed (it is renewed every second).
const ORDERS_LEASE_MS: u64 = 10_000;
/// How often the whole copies a node holds, and the orders, are shared again unchanged, so
/// a replica that starts learns them from the log's last minutes.
const HELD_REFRESH_MS: u64 = 60_000;
const ORDERS_REFRESH_MS: u64 = 30_000;
/// Shortest span of the log kept: twice the longest refresh.
const MIN_LOG_WINDOW_MS: u64 = 2 * HELD_REFRESH_MS;
/// Batches read from the log per query.
const LOG_PAGE: usize = 256;
/// Most events and (song, region) play counters a replica keeps for its next batch.
const MAX_UNSENT_EVENTS: usize = 20_000;
const MAX_UNSENT_PLAYS: usize = 100_000;

/// What one replica heard, for the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Heard {
    /// Plays of a song (of `size` bytes) in a region.
    Plays {
        song: SongId,
        region: String,
        size: u64,
        n: u32,
    },
    /// A listener's announcement.
    Announced(PeerAnnouncement),
    /// A client other than the peer got a verified segment from it.
    Confirmed(String),
    /// A client reported that the source failed it.
    Failed(String),
    /// The whole copies a node reports holding.
    Held { node: String, songs: Vec<SongId> },
    /// Every order for hot copies, from the replica that makes them.
    Orders(Vec<Ordered>),
}

/// One replica's batch in the demand log.
#[derive(Debug, Serialize, Deserialize)]
struct Batch {
    replica: String,
    at_ms: u64,
    heard: Vec<Heard>,
}

/// What a replica shares with the others, and how far it read theirs.
#[derive(Debug, Default)]
struct Sharing {
    /// Whether this replica makes the orders (holds the lease).
    maker: AtomicBool,
    unsent: Mutex<Unsent>,
    /// node → when its whole copies were last shared, by this replica or another.
    held_shared: Mutex<HashMap<String, u64>>,
    /// The orders last shared, and when.
    orders_shared: Mutex<(Vec<Ordered>, u64)>,
    log: Mutex<LogCursor>,
}

/// What this replica heard since its last batch.
#[derive(Debug, Default)]
struct Unsent {
    plays: HashMap<(SongId, String), (u64, u32)>,
    heard: Vec<Heard>,
    /// Reports of wrong bytes (shared through their own table).
    lies: Vec<Lie>,
}

/// How far a replica read the log.
#[derive(Debug, Default)]
struct LogCursor {
    /// The next sequence number to read.
    next: u64,
    /// (sequence number, Unix ms) of the batches read and still in the log, oldest first.
    read: VecDeque<(u64, u64)>,
}

/// Demand and whole copies.
#[derive(Debug)]
pub(crate) struct Demand {
    rules: Rules,
    state: Mutex<Popularity>,
    /// With replicas: what this one heard and shares, and the orders' maker.
    sharing: Option<Sharing>,
}

impl Demand {
    /// Empty, with the rules of `config`.
    pub(crate) fn new(config: &TrackerConfig) -> Self {
        Self {
            rules: Rules {
                hot_plays: config.hot_plays,
                half_life_ms: config.hot_half_life_secs as f64 * 1000.0,
                copies: config.hot_copies,
                surge_requests: config.hot_surge_requests,
                surge_half_life_ms: config.hot_surge_secs as f64 * 1000.0,
                peer_ttl_ms: config.peer_ttl_secs * 1000,
                ban_reporters: config.ban_reporters,
                ban_ms: config.ban_secs * 1000,
                trust_ms: config.report_trust_secs * 1000,
            },
            state: Mutex::default(),
            sharing: config.postgres_url().map(|_| Sharing::default()),
        }
    }

    /// Whether this replica makes the orders for hot copies: alone, always; with replicas,
    /// while it holds the lease.
    fn makes_orders(&self) -> bool {
        self.sharing
            .as_ref()
            .is_none_or(|s| s.maker.load(Ordering::Relaxed))
    }

    /// Takes (or renews) the lease to make the orders for hot copies, if no other replica
    /// holds it (replicas only). Returns whether this replica holds it.
    pub(crate) fn claim_orders(
        &self,
        db: &Db,
        replica: &str,
        now: u64,
    ) -> Result<bool, StateError> {
        let Some(sharing) = &self.sharing else {
            return Ok(true);
        };
        let maker = db.take_lease(ORDERS_LEASE, replica, now, ORDERS_LEASE_MS)?;
        if sharing.maker.swap(maker, Ordering::Relaxed) != maker {
            tracing::info!(
                maker,
                "orders for hot copies: this replica makes them: {maker}"
            );
        }
        Ok(maker)
    }

    /// Notes something heard for the next batch (replicas only).
    fn tell(&self, heard: impl FnOnce() -> Heard) {
        if let Some(sharing) = &self.sharing {
            let mut unsent = sharing.unsent.lock();
            if unsent.heard.len() < MAX_UNSENT_EVENTS {
                unsent.heard.push(heard());
            }
        }
    }

    /// Shares what this replica heard since it last did, takes up what the others shared
    /// since it last looked, and (the orders' maker) trims the log to its window. Replicas
    /// only; called every second.
    pub(crate) fn share(
        &self,
        db: &Db,
        registry: &Registry,
        replica: &str,
        now: u64,
    ) -> Result<(), StateError> {
        let Some(sharing) = &self.sharing else {
            return Ok(());
        };
        let maker = self.claim_orders(db, replica, now)?;
        // Read first: orders made from what others heard go out in this second's batch.
        let mut log = sharing.log.lock();
        loop {
            let page = db.scan_prefix(CF_DEMAND, &[], &log.next.to_be_bytes(), LOG_PAGE)?;
            for (k, v) in &page {
                let seq = crate::db::seq_of(k, "demand log key")?;
                log.next = seq + 1;
                match serde_json::from_slice::<Batch>(v) {
                    Ok(batch) => {
                        log.read.push_back((seq, batch.at_ms));
                        if batch.replica != replica {
                            self.learn(batch, registry, now);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "skipping an unreadable demand batch")
                    }
                }
            }
            if page.len() < LOG_PAGE {
                break;
            }
        }
        if let Some(batch) = self.take_batch(sharing, replica, maker, now) {
            let body =
                serde_json::to_vec(&batch).map_err(|e| crate::error::corrupt("demand batch", e))?;
            db.append(CF_DEMAND, &body)?;
        }
        let window = self.rules.peer_ttl_ms.max(MIN_LOG_WINDOW_MS);
        let mut below = None;
        while log
            .read
            .front()
            .is_some_and(|(_, at)| now.saturating_sub(*at) > window)
        {
            below = log.read.pop_front().map(|(seq, _)| seq);
        }
        if let (true, Some(seq)) = (maker, below) {
            db.delete_below(CF_DEMAND, &(seq + 1).to_be_bytes())?;
        }
        Ok(())
    }

    /// This replica's next batch: what it heard, and the orders if it makes them and they
    /// changed or were not shared lately.
    fn take_batch(&self, sharing: &Sharing, replica: &str, maker: bool, now: u64) -> Option<Batch> {
        let (plays, mut heard) = {
            let mut unsent = sharing.unsent.lock();
            (
                std::mem::take(&mut unsent.plays),
                std::mem::take(&mut unsent.heard),
            )
        };
        heard.extend(
            plays
                .into_iter()
                .map(|((song, region), (size, n))| Heard::Plays {
                    song,
                    region,
                    size,
                    n,
                }),
        );
        if maker {
            let orders = self.state.lock().orders();
            let mut shared = sharing.orders_shared.lock();
            if orders != shared.0 || now.saturating_sub(shared.1) >= ORDERS_REFRESH_MS {
                heard.push(Heard::Orders(orders.clone()));
                *shared = (orders, now);
            }
        }
        (!heard.is_empty()).then(|| Batch {
            replica: replica.to_string(),
            at_ms: now,
            heard,
        })
    }

    /// Takes up what another replica heard.
    fn learn(&self, batch: Batch, registry: &Registry, now: u64) {
        let Some(sharing) = &self.sharing else {
            return;
        };
        let rules = self.rules;
        let at = batch.at_ms.min(now);
        let maker = self.makes_orders();
        let mut pop = self.state.lock();
        let candidates = if maker {
            self.candidates(registry, &pop, now)
        } else {
            Vec::new()
        };
        for heard in batch.heard {
            match heard {
                Heard::Plays {
                    song,
                    region,
                    size,
                    n,
                } => {
                    // Plays heard a while ago (a replica catching up) count decayed since.
                    let age = now.saturating_sub(at) as f64;
                    let plays =
                        f64::from(n) * (-age / rules.half_life_ms * std::f64::consts::LN_2).exp();
                    let candidates = maker.then_some(candidates.as_slice());
                    pop.plays(rules, song, size, &region, plays, candidates, now);
                }
                Heard::Announced(a) => {
                    if now.saturating_sub(at) <= rules.peer_ttl_ms {
                        pop.heard_from(&a.peer_id, at);
                        pop.announce(a, rules, at);
                    }
                }
                Heard::Confirmed(peer) => pop.confirm(&peer),
                Heard::Failed(source) => pop.failed(&source, rules, at),
                Heard::Held { node, songs } => {
                    sharing.held_shared.lock().insert(node.clone(), at);
                    pop.set_held(&node, songs.into_iter().collect());
                }
                Heard::Orders(orders) => {
                    if !maker {
                        pop.set_orders(orders);
                    }
                }
            }
        }
    }

    /// The reports of wrong bytes got since the last call, to share (replicas only).
    pub(crate) fn take_lies(&self) -> Vec<Lie> {
        self.sharing
            .as_ref()
            .map(|s| std::mem::take(&mut s.unsent.lock().lies))
            .unwrap_or_default()
    }

    /// Takes up reports of wrong bytes other replicas got.
    pub(crate) fn learn_lies(&self, lies: &[Lie], now: u64) {
        let mut pop = self.state.lock();
        for (source, reporter, at, weight) in lies {
            pop.learn_lie(source, reporter, (*at, *weight), self.rules, now);
        }
    }

    /// How long a report of wrong bytes counts.
    pub(crate) fn ban_ms(&self) -> u64 {
        self.rules.ban_ms
    }

    /// Whether clients reported that `source` sent them wrong bytes often enough (from
    /// distinct signed reporters) that it is no longer offered.
    pub(crate) fn banned(&self, source: &str, now: u64) -> bool {
        self.state.lock().banned(source, self.rules, now)
    }

    /// Nodes that may take a hot copy: alive, not draining, with capacity, not banned.
    fn candidates(&self, registry: &Registry, pop: &Popularity, now: u64) -> Vec<Candidate> {
        registry
            .serving(now)
            .into_iter()
            .filter(|r| !pop.banned(&r.peer_id, self.rules, now))
            .map(|r| Candidate {
                // Before its first heartbeat a node has reported nothing: assume it is empty.
                free: if r.load == Load::default() {
                    r.capacity
                } else {
                    r.load.free.min(r.load.hot_free.unwrap_or(u64::MAX))
                },
                bytes_per_sec: r.load.bytes_per_sec,
                id: r.peer_id,
                region: r.region,
            })
            .collect()
    }

    /// Counts a request for `song`'s sources from `region`: a surge of them makes the song
    /// hot there at once (see [`Popularity::request`]), shared with the other replicas as
    /// the plays it stands for.
    pub(crate) fn request(
        &self,
        registry: &Registry,
        song: SongId,
        size: u64,
        region: &str,
        now: u64,
    ) {
        let plays = self.state.lock().request(self.rules, song, region, now);
        if plays > 0.0 {
            let plays = u32::try_from(plays as u64).unwrap_or(u32::MAX);
            self.plays(registry, song, size, region, plays, now);
        }
    }

    /// Counts `plays` plays of `song` (`size` bytes) in `region`; orders hot copies when it
    /// turns hot there (on the replica that makes the orders), and shares them with the
    /// other replicas.
    pub(crate) fn plays(
        &self,
        registry: &Registry,
        song: SongId,
        size: u64,
        region: &str,
        plays: u32,
        now: u64,
    ) {
        if self.rules.copies == 0 {
            return;
        }
        if let Some(sharing) = &self.sharing {
            let mut unsent = sharing.unsent.lock();
            let key = (song, region.to_string());
            if unsent.plays.len() < MAX_UNSENT_PLAYS || unsent.plays.contains_key(&key) {
                let entry = unsent.plays.entry(key).or_insert((size, 0));
                entry.1 = entry.1.saturating_add(plays);
            }
        }
        let mut pop = self.state.lock();
        let candidates = self
            .makes_orders()
            .then(|| self.candidates(registry, &pop, now));
        pop.plays(
            self.rules,
            song,
            size,
            region,
            f64::from(plays),
            candidates.as_deref(),
            now,
        );
    }

    /// Releases hot copies of songs that cooled and replaces ordered nodes that went away.
    /// Returns the number of songs released.
    /// Only the replica that makes the orders changes them; the others forget what expired.
    pub(crate) fn sweep(&self, registry: &Registry, now: u64) -> usize {
        let mut pop = self.state.lock();
        if !self.makes_orders() {
            pop.forget(self.rules, now);
            return 0;
        }
        let candidates = self.candidates(registry, &pop, now);
        pop.sweep(self.rules, &candidates, now)
    }

    /// Songs node `peer_id` is ordered to hold whole.
    pub(crate) fn orders_of(&self, peer_id: &str) -> Vec<SongId> {
        self.state.lock().orders_of(peer_id)
    }

    /// Records the songs a node reports holding whole.
    /// With replicas, shares them when they changed or were not shared lately.
    pub(crate) fn set_held(&self, peer_id: &str, songs: Vec<SongId>, now: u64) {
        let songs: std::collections::BTreeSet<SongId> = songs.into_iter().collect();
        let mut pop = self.state.lock();
        if let Some(sharing) = &self.sharing {
            let changed = pop
                .held_by(peer_id)
                .map_or(!songs.is_empty(), |h| *h != songs);
            let mut shared = sharing.held_shared.lock();
            let stale = shared
                .get(peer_id)
                .is_none_or(|at| now.saturating_sub(*at) >= HELD_REFRESH_MS);
            if changed || stale {
                shared.insert(peer_id.to_string(), now);
                drop(shared);
                self.tell(|| Heard::Held {
                    node: peer_id.to_string(),
                    songs: songs.iter().copied().collect(),
                });
            }
        }
        pop.set_held(peer_id, songs);
    }

    /// The songs hot in some region, hottest first.
    pub(crate) fn hot(&self, now: u64) -> Vec<HotSong> {
        self.state.lock().hot(self.rules, now)
    }

    /// Records a listener's announcement of the songs it holds whole and serves. It is
    /// listed as a source once another client confirmed it (see [`Demand::whole_sources`]).
    pub(crate) fn announce(&self, a: PeerAnnouncement, now: u64) -> Result<(), StateError> {
        check_peer(&a.peer_id, &a.region, &a.addrs)?;
        if a.songs.len() > MAX_ANNOUNCED_SONGS {
            return Err(StateError::BadRegistration(
                "a peer announces at most 10000 songs",
            ));
        }
        if a.partial.len() > medley_api::MAX_PARTIAL_SONGS {
            return Err(StateError::BadRegistration(
                "a peer announces at most 64 songs held in part",
            ));
        }
        if a.partial.iter().any(|p| p.have.count() == 0) {
            return Err(StateError::BadRegistration(
                "a song held in part has at least one segment in its have-map",
            ));
        }
        let mut pop = self.state.lock();
        pop.heard_from(&a.peer_id, now);
        let shared = self.sharing.is_some().then(|| a.clone());
        if pop.announce(a, self.rules, now) {
            if let Some(a) = shared {
                self.tell(|| Heard::Announced(a));
            }
            Ok(())
        } else {
            Err(StateError::Busy(
                "the tracker holds as many announcements as it can",
            ))
        }
    }

    /// Entries of every map keyed by what strangers send (see
    /// [`crate::popularity::Popularity::sizes`]).
    pub(crate) fn sizes(&self) -> [usize; 5] {
        self.state.lock().sizes()
    }

    /// Records a client's report about `source`, a node or peer the tracker knows (reports
    /// about anything else are dropped: nothing a stranger names takes room). `Served`
    /// confirms a peer (by a signed reporter other than it). A failure (`Failed`,
    /// `Timeout`, `BadHash`) ranks the source last for a while. A report of wrong bytes
    /// signed by `reporter` also counts towards a ban, weighed by the reporter's history
    /// (see `report_trust_secs`): reports weighing `ban_reporters` within `ban_secs` ban the
    /// source. Returns whether the source is banned.
    pub(crate) fn report(
        &self,
        registry: &Registry,
        source: &str,
        reporter: Option<&str>,
        reason: ReportReason,
        now: u64,
    ) -> Result<bool, StateError> {
        if source.is_empty() || source.len() > 128 {
            return Err(StateError::BadRegistration(
                "peer_id must be 1 to 128 characters",
            ));
        }
        let rules = self.rules;
        let mut pop = self.state.lock();
        if let Some(r) = reporter {
            pop.heard_from(r, now);
        }
        if !(registry.contains(source) || pop.is_peer(source)) {
            return Ok(false);
        }
        match reason {
            ReportReason::Served => {
                if reporter.is_some_and(|r| r != source) {
                    pop.confirm(source);
                    self.tell(|| Heard::Confirmed(source.to_string()));
                }
            }
            ReportReason::Failed | ReportReason::Timeout | ReportReason::Unknown => {
                pop.failed(source, rules, now);
                self.tell(|| Heard::Failed(source.to_string()));
            }
            ReportReason::BadHash => {
                pop.failed(source, rules, now);
                self.tell(|| Heard::Failed(source.to_string()));
                if let Some(r) = reporter.filter(|r| *r != source) {
                    if let Some(sharing) = &self.sharing {
                        let u = &mut sharing.unsent.lock().lies;
                        if u.len() < MAX_UNSHARED_LIES {
                            u.push((
                                source.to_string(),
                                r.to_string(),
                                now,
                                pop.weight(r, rules, now),
                            ));
                        }
                    }
                    let was = pop.banned(source, rules, now);
                    let is = pop.lied(source, r, rules, now);
                    if is && !was {
                        tracing::warn!(
                            source,
                            "banned: listeners with a history report it sends wrong bytes"
                        );
                    }
                }
            }
        }
        Ok(pop.banned(source, rules, now))
    }

    /// Whole copies of `song`, best first for a client in `region`: listener peers, then hot
    /// nodes, each ranked by region (same first), recent failures and load.
    pub(crate) fn whole_sources(
        &self,
        registry: &Registry,
        song: SongId,
        region: Option<&str>,
        now: u64,
    ) -> Vec<WholeSource> {
        let rules = self.rules;
        let pop = self.state.lock();
        // Rank: same region, no recent failure, confirmed peer before hot node before a peer
        // nobody confirmed yet, fewer failures, less load.
        let mut out: Vec<(WholeSource, Rank)> = Vec::new();
        let mut add = |source: WholeSource, class: u8, load: u64| {
            let failures = pop.failures_of(&source.peer_id, rules, now);
            let rank = (
                region.is_some_and(|r| r != source.region),
                failures >= 0.5,
                class,
                (failures * 1000.0) as u64,
                load,
            );
            out.push((source, rank));
        };
        for a in pop.peers_with(song, rules, now) {
            let p = &a.announcement;
            if pop.banned(&p.peer_id, rules, now) {
                continue;
            }
            let Some(have) = p.holding(song) else {
                continue;
            };
            let source = WholeSource {
                peer_id: p.peer_id.clone(),
                addrs: p.addrs.clone(),
                region: p.region.clone(),
                kind: SourceKind::Peer,
                have: have.cloned(),
            };
            // Of equal peers, one with fewer segments comes later.
            let missing = have.map_or(0, |h| u64::MAX - h.count() as u64);
            add(source, if a.confirmed { 0 } else { 2 }, missing);
        }
        for id in pop.holders(song) {
            let Some(rec) = registry.alive(id, now) else {
                continue;
            };
            if pop.banned(id, rules, now) {
                continue;
            }
            let source = WholeSource {
                peer_id: id.to_string(),
                addrs: rec.addrs,
                region: rec.region,
                kind: SourceKind::Hot,
                have: None,
            };
            add(source, 1, rec.load.bytes_per_sec);
        }
        // Equal sources in a fresh order for every request: a crowd asking at once spreads
        // over every holder (instead of all asking the same few), and each unconfirmed
        // peer gets its turn to be confirmed.
        let salt = getrandom::u64().unwrap_or(now);
        out.sort_by_cached_key(|(s, rank)| {
            let mut h = medley_core::Hasher::new();
            h.update(s.peer_id.as_bytes());
            h.update(&salt.to_le_bytes());
            (*rank, *h.finalize().as_bytes())
        });
        // A handful of listeners per region, one of them at most a peer nobody confirmed: a
        // crowd of announcers cannot push the real copies off the list. Hot nodes (a few
        // per region, by order) are always listed.
        let mut per_region: HashMap<String, usize> = HashMap::new();
        let mut unconfirmed = 0;
        out.into_iter()
            .filter(|(s, rank)| {
                if s.kind == SourceKind::Hot {
                    return true;
                }
                let n = per_region.entry(s.region.clone()).or_default();
                if *n >= MAX_WHOLE_PER_REGION {
                    return false;
                }
                if rank.2 == 2 {
                    if unconfirmed >= 1 {
                        return false;
                    }
                    unconfirmed += 1;
                }
                *n += 1;
                true
            })
            .map(|(s, _)| s)
            .collect()
    }
}
