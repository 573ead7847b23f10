//! The tracker's composition root: it owns the parts and their database, reads the clock
//! once per operation, and does what spans parts. The HTTP layer ([`crate::api`]) only
//! translates requests into these calls.
//!
//! - [`Catalog`]: manifests, publishers, search, placement index, plays, grants.
//! - [`Registry`]: nodes, their load and liveness, drains.
//! - [`Layouts`]: the layout versions.
//! - [`Demand`]: popularity, hot-copy orders, whole copies, reports and bans.

use std::collections::HashSet;
use std::sync::Arc;

use std::collections::HashMap;

use medley_api::{
    Heartbeat, HotSong, InviteRequest, InviteToken, LayoutPreview, NodeRecord, NodeSlots,
    PeerAnnouncement, PublishGrants, Registration, SegmentSources, SlotSource, SongSources,
};
use medley_core::{
    Challenge, Layout, LayoutError, PublisherId, SegmentId, SongId, TrackerId, TrackerKey,
};
use tracing::{info, warn};

use crate::admission::Invites;
use crate::catalog::Catalog;
use crate::config::{AdmissionMode, TrackerConfig};
use crate::db::Db;
use crate::demand::Demand;
use crate::error::{StateError, corrupt};
use crate::layouts::{Layouts, Settling};
use crate::registry::{AuditOutcome, Consent, NodeTotals, Registry};

/// The region plays from a region without nodes are counted in.
pub const OTHER_REGION: &str = "other";

/// File name of the tracker's signing key inside its data directory.
pub const TRACKER_KEY_FILE: &str = "tracker.key";

/// The tracker's state.
#[derive(Debug)]
pub struct State {
    /// Signs publish grants and the answers nodes act on (`tracker.key` in the data dir).
    key: TrackerKey,
    config: TrackerConfig,
    catalog: Catalog,
    registry: Registry,
    layouts: Layouts,
    demand: Demand,
    invites: Invites,
    db: Arc<Db>,
    /// This replica's name in leases of a shared store.
    replica: String,
}

/// One audit to make: a node, its addresses, and what to ask it to prove.
#[derive(Debug, Clone)]
pub struct AuditTarget {
    /// The node's peer id.
    pub node: String,
    /// Its data-plane addresses.
    pub addrs: Vec<String>,
    /// The range of a shard of one of its settled slots.
    pub challenge: Challenge,
}

fn now_ms() -> u64 {
    medley_core::unix_now_ms()
}

/// The registry and the catalogue at one instant, as the layout sees them.
struct NodesNow<'a> {
    registry: &'a Registry,
    catalog: &'a Catalog,
    now: u64,
    /// Which partitions hold a segment, read at the first question.
    holding: std::sync::OnceLock<Vec<bool>>,
}

impl Settling for NodesNow<'_> {
    fn must_move(&self, node: &str) -> bool {
        self.registry.must_move(node, self.now)
    }

    fn settled_version(&self, node: &str) -> Option<u64> {
        self.registry.settled_version(node)
    }

    fn holds_data(&self, p: usize) -> bool {
        let holding = self.holding.get_or_init(|| {
            // A partition that cannot be read counts as holding data: its moves stay
            // bounded.
            self.catalog
                .partitions_holding_data()
                .unwrap_or_else(|_| vec![true; usize::from(self.catalog.partition_count())])
        });
        holding.get(p).copied().unwrap_or(true)
    }
}

/// `bytes` rounded down to a power of two (0 stays 0): what a node proved moves its weight
/// in steps, not with every audit.
fn power_of_two_floor(bytes: u64) -> u64 {
    if bytes == 0 {
        0
    } else {
        1 << (63 - bytes.leading_zeros())
    }
}

impl State {
    /// Opens the state in `config.data_dir/db` and adds the configured publisher keys.
    pub fn open(config: TrackerConfig, publishers: &[PublisherId]) -> Result<Self, StateError> {
        let seed = match &config.signing_key {
            // A key shared by replicas is never made here: each would make its own.
            Some(path) => medley_daemon::keyfile::load_seed(path)?,
            None => medley_daemon::keyfile::load_or_create_seed(
                &config.data_dir.join(TRACKER_KEY_FILE),
            )?,
        };
        let key = TrackerKey::from_seed(seed);
        let db = Arc::new(match config.postgres_url() {
            Some(url) => Db::open_postgres(url)?,
            None => Db::open(&config.data_dir.join("db"))?,
        });
        let now = now_ms();
        let layouts = Layouts::open(db.clone(), config.partitions, config.k + config.m, config.m)?;
        let current = layouts.current();
        let in_layout: HashSet<&str> = current
            .iter()
            .flat_map(|l| l.partitions.iter().flatten())
            .map(String::as_str)
            .collect();
        let registry = Registry::open(
            db.clone(),
            config.node_grace_secs * 1000,
            config.max_node_capacity.as_u64(),
            config.audit_interval_secs > 0,
            &in_layout,
            now,
        )?;
        layouts.set_members(registry.eligible(now));
        let invites = Invites::new(db.clone());
        let catalog = Catalog::open(
            db.clone(),
            &config.data_dir.join("index"),
            publishers,
            config.partitions,
            (config.k, config.m),
        )?;
        let replica = format!("{}/{:016x}", config.listen, getrandom::u64().unwrap_or(0));
        let demand = Demand::new(&config);
        // The first replica up makes the orders for hot copies from its first play on.
        demand.claim_orders(&db, &replica, now)?;
        Ok(Self {
            key,
            db,
            replica,
            demand,
            config,
            catalog,
            registry,
            layouts,
            invites,
        })
    }

    /// Whether other replicas share this tracker's store.
    pub fn is_replicated(&self) -> bool {
        self.db.is_shared()
    }

    /// Takes up what other replicas wrote to a shared store since this one last looked:
    /// layout versions, publisher keys, the journal, reports of wrong bytes and the demand
    /// log (plays, announcements, reports, whole copies, hot orders), and shares what this
    /// one heard (node records and heartbeats: [`State::refresh_layout`], which the same
    /// tick calls). Nothing to do on the embedded store.
    pub fn follow_replicas(&self) -> Result<(), StateError> {
        if !self.db.is_shared() {
            return Ok(());
        }
        // Node records are read back by the layout refresh of the same tick (and of every
        // registration), which must see them fresh anyway.
        self.layouts.follow()?;
        self.catalog.reload_publishers()?;
        self.catalog.follow_journal()?;
        self.share_lies()?;
        self.demand
            .share(&self.db, &self.registry, &self.replica, now_ms())
    }

    /// Shares the reports of wrong bytes this replica got, takes up the others', and drops
    /// those older than the ban window.
    fn share_lies(&self) -> Result<(), StateError> {
        use crate::db::CF_LIES;
        let key = |source: &str, reporter: &str| {
            let mut k = source.as_bytes().to_vec();
            k.push(0);
            k.extend_from_slice(reporter.as_bytes());
            k
        };
        let mine = self.demand.take_lies();
        let records: Vec<(Vec<u8>, Vec<u8>)> = mine
            .iter()
            .map(|(s, r, at, w)| {
                let mut v = at.to_le_bytes().to_vec();
                v.extend_from_slice(&w.to_le_bytes());
                (key(s, r), v)
            })
            .collect();
        if !records.is_empty() {
            let rows: Vec<(&'static str, &[u8], &[u8])> = records
                .iter()
                .map(|(k, v)| (CF_LIES, k.as_slice(), v.as_slice()))
                .collect();
            self.db.put_all(&rows)?;
        }
        let now = now_ms();
        let mut lies = Vec::new();
        for (k, v) in self.db.scan(CF_LIES)? {
            let parsed = k.iter().position(|b| *b == 0).and_then(|i| {
                let at = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
                let weight = f64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
                let source = std::str::from_utf8(&k[..i]).ok()?;
                let reporter = std::str::from_utf8(&k[i + 1..]).ok()?;
                Some((source.to_string(), reporter.to_string(), at, weight))
            });
            match parsed {
                Some(lie) if now.saturating_sub(lie.2) <= self.demand.ban_ms() => lies.push(lie),
                // Expired or unreadable: nothing counts it any more.
                _ => self.db.delete(CF_LIES, &k)?,
            }
        }
        self.demand.learn_lies(&lies, now);
        Ok(())
    }

    /// Waits up to `timeout` for a commit through any replica, then brings the search index
    /// up to the journal. Returns how many songs it indexed.
    pub fn follow_journal(&self, timeout: std::time::Duration) -> Result<usize, StateError> {
        self.db.wait_for_journal(timeout);
        self.catalog.follow_journal()
    }

    /// The configuration.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// The catalogue.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The public key nodes check grants and orders against.
    pub fn tracker_id(&self) -> TrackerId {
        self.key.id()
    }

    /// Signs a statement to nodes (see [`TrackerKey::sign_statement`]).
    pub fn sign_statement(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign_statement(message)
    }

    // Nodes and the layout.

    /// Registers (or re-registers) a node and recomputes the layout if membership changed.
    /// A node joins with the operator's consent: its join token, or a tracker that admits
    /// every node; without it it is listed pending. Returns the layout version in force
    /// after it and the node's record.
    pub fn register(&self, reg: Registration) -> Result<(Option<u64>, NodeRecord), StateError> {
        let now = now_ms();
        let regions = &self.config.regions;
        if !regions.is_empty() && !regions.contains(&reg.region) {
            return Err(StateError::BadRegion {
                region: reg.region.clone(),
                known: regions.join(", "),
            });
        }
        let pending = self
            .registry
            .admission(&reg.peer_id)
            .is_none_or(|a| a == medley_api::Admission::Pending);
        let consent = match (&reg.join, self.config.admission) {
            (_, AdmissionMode::Open) => Consent::Admit {
                capacity: None,
                invite: None,
            },
            (Some(token), AdmissionMode::Invite) if pending => {
                let grant =
                    self.invites
                        .redeem(token, &self.key, &reg.peer_id, &reg.region, now / 1000)?;
                Consent::Admit {
                    capacity: grant.capacity,
                    invite: Some(grant.id),
                }
            }
            _ => Consent::None,
        };
        let rec = self.registry.register(reg, consent, now)?;
        self.refresh_layout()?;
        Ok((self.layouts.version(), rec))
    }

    /// A join token for one node, signed by this tracker.
    pub fn invite(&self, req: &InviteRequest) -> Result<InviteToken, StateError> {
        self.invites.make(
            req,
            &self.key,
            &self.config.regions,
            medley_core::unix_now(),
        )
    }

    /// Admits node `peer_id` (clearing an eviction), `capacity` capping it; returns the
    /// layout version that follows.
    pub fn approve(&self, peer_id: &str, capacity: Option<u64>) -> Result<Option<u64>, StateError> {
        self.registry.approve(peer_id, capacity)?;
        self.refresh_layout()?;
        Ok(self.layouts.version())
    }

    /// Revokes node `peer_id`'s admission; returns the layout version that follows.
    pub fn revoke(&self, peer_id: &str) -> Result<Option<u64>, StateError> {
        self.registry.revoke(peer_id)?;
        self.refresh_layout()?;
        Ok(self.layouts.version())
    }

    /// The layout weight of every node the layout places (bytes).
    pub fn weights(&self) -> HashMap<String, u64> {
        self.registry
            .eligible(now_ms())
            .into_iter()
            .map(|m| (m.id, m.capacity))
            .collect()
    }

    // Audits.

    /// One audit for each live admitted node that has settled slots holding data: a random
    /// range of the shard of a random segment of one of them.
    /// With replicas, one audits for all: the one holding the audit lease.
    pub fn audit_targets(&self, rng: &mut impl rand::Rng) -> Result<Vec<AuditTarget>, StateError> {
        use rand::RngExt as _;
        let Some(layout) = self.layouts.current() else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        let ttl = (self.config.audit_interval_secs * 3000).max(10_000);
        if !self.db.take_lease("auditor", &self.replica, now, ttl)? {
            return Ok(Vec::new());
        }
        let codec = medley_core::Codec::new(self.config.k, self.config.m)
            .map_err(|e| corrupt("coding", e))?;
        let holding = self.catalog.partitions_holding_data()?;
        let mut slots: HashMap<&str, Vec<(u16, usize)>> = HashMap::new();
        for (p, row) in layout.partitions.iter().enumerate() {
            if !holding.get(p).copied().unwrap_or(false) {
                continue;
            }
            for (slot, node) in row.iter().enumerate() {
                if layout.holds_slot_as_of(p, slot, self.registry.repaired_version(node)) {
                    slots.entry(node).or_default().push((p as u16, slot));
                }
            }
        }
        let mut targets = Vec::new();
        for (node, mine) in slots {
            let Some(rec) = self.registry.alive(node, now) else {
                continue;
            };
            if self.registry.must_move(node, now) {
                continue;
            }
            // A few slots tried: a partition's segments may have gone since it was read.
            for _ in 0..8 {
                let (p, slot) = mine[rng.random_range(0..mine.len())];
                let after = SegmentId::from_bytes(rng.random());
                let seg = match self.catalog.partition_segments(p, Some(after), 1)?.pop() {
                    Some(s) => Some(s),
                    None => self.catalog.partition_segments(p, None, 1)?.pop(),
                };
                let Some(seg) = seg else { continue };
                let Some(&shard) = seg.shards.get(slot) else {
                    continue;
                };
                let len = codec.shard_len(seg.len as usize);
                targets.push(AuditTarget {
                    node: node.to_string(),
                    addrs: rec.addrs.clone(),
                    challenge: Challenge::pick(shard, len, rng.random()),
                });
                break;
            }
        }
        Ok(targets)
    }

    /// Records what an audit of `node` found; a node that failed too many in a row leaves
    /// the layout.
    pub fn record_audit(&self, node: &str, outcome: AuditOutcome) -> Result<(), StateError> {
        let version = self.layouts.current().map(|l| l.version);
        let evicted = self.registry.record_audit(
            node,
            &outcome,
            self.config.audit_failures,
            now_ms(),
            version,
        )?;
        if let Some(why) = evicted {
            warn!(node, reason = %why, "node evicted: its slots go to other nodes");
            self.refresh_layout()?;
        }
        Ok(())
    }

    /// Sets what each node proved it holds: the bytes of its settled slots, when its audits
    /// pass (in powers of two). The layout follows.
    pub fn update_proven(&self) -> Result<(), StateError> {
        let Some(layout) = self.layouts.current() else {
            return Ok(());
        };
        let mut held: HashMap<String, u64> = HashMap::new();
        for (p, row) in layout.partitions.iter().enumerate() {
            for (slot, node) in row.iter().enumerate() {
                if !layout.holds_slot_as_of(p, slot, self.registry.settled_version(node)) {
                    continue;
                }
                let bytes = self.catalog.partition_size(p as u16)?.1;
                *held.entry(node.clone()).or_default() += bytes;
            }
        }
        let mut changed = false;
        for (rec, _) in self.registry.nodes(now_ms()) {
            let clean = rec.audits.passed > 0 && rec.audits.consecutive_failures == 0;
            let proven = if clean {
                power_of_two_floor(held.get(&rec.peer_id).copied().unwrap_or(0))
            } else {
                0
            };
            changed |= self.registry.set_proven(&rec.peer_id, proven)?;
        }
        if changed {
            self.refresh_layout()?;
        }
        Ok(())
    }

    /// Starts (`true`) or cancels (`false`) the drain of a node: a draining node gets no
    /// slots in the next layout; it keeps serving until the new holders have its shards.
    pub fn set_draining(&self, peer_id: &str, draining: bool) -> Result<u64, StateError> {
        let need = usize::from(self.config.k + self.config.m);
        if self
            .registry
            .set_draining(peer_id, draining, need, now_ms())?
        {
            self.refresh_layout()?;
        }
        self.layout().map(|l| l.version)
    }

    /// Records a heartbeat, in memory. Returns whether the node was down before it: then it
    /// rejoins the layout at the caller's [`State::refresh_layout`] (which writes to the
    /// store, so the caller runs it where blocking is allowed).
    pub fn heartbeat(&self, hb: Heartbeat) -> Result<bool, StateError> {
        let was_down = self.registry.heartbeat(&hb, now_ms())?;
        if let Some(hot) = hb.hot {
            self.demand.set_held(&hb.peer_id, hot, now_ms());
        }
        if was_down {
            info!(node = %hb.peer_id, "node is back");
        }
        Ok(was_down)
    }

    /// Records that a node is stopping: it is no longer offered as a source from now on.
    /// Its slots stay until the grace period ends, so a restart moves nothing.
    pub fn leave(&self, peer_id: &str) -> Result<(), StateError> {
        self.registry.leave(peer_id, now_ms())
    }

    /// Recomputes the layout if the eligible nodes changed since the last computation: a
    /// node went down (no heartbeat for the grace period), came back, registered, or started
    /// or stopped draining. Called on every registration and drain, and periodically.
    /// Returns the new layout version when the layout changed.
    pub fn refresh_layout(&self) -> Result<Option<u64>, StateError> {
        // With replicas, nodes registered through another one are known before slots move:
        // a node this one has not heard of would count as gone.
        self.registry.follow()?;
        let now = now_ms();
        let nodes = NodesNow {
            registry: &self.registry,
            catalog: &self.catalog,
            now,
            holding: std::sync::OnceLock::new(),
        };
        self.layouts.refresh(self.registry.eligible(now), &nodes)
    }

    /// The oldest layout version kept (slots moved since may not be settled yet).
    pub fn layout_oldest(&self) -> Option<u64> {
        self.layouts.oldest()
    }

    /// All nodes with whether each is alive (heard from within the grace period and not
    /// stopped).
    pub fn nodes(&self) -> Vec<(NodeRecord, bool)> {
        self.registry.nodes(now_ms())
    }

    /// Node counts and the repair work of live nodes.
    pub fn node_totals(&self) -> NodeTotals {
        self.registry.totals(now_ms())
    }

    /// The current layout.
    pub fn layout(&self) -> Result<Arc<Layout>, StateError> {
        self.layouts.current().ok_or_else(|| {
            StateError::NoLayout(LayoutError::TooFewNodes {
                have: self.registry.with_capacity(),
                need: usize::from(self.config.k + self.config.m),
            })
        })
    }

    /// Layout `version`, current or past. Nodes compare it with the current one to find who
    /// held their new slots before.
    pub fn layout_at(&self, version: u64) -> Result<Layout, StateError> {
        self.layouts.at(version)
    }

    /// The current layout's version, if there is a layout.
    pub fn layout_version(&self) -> Option<u64> {
        self.layouts.version()
    }

    /// What the layout would become if the nodes in `drain` started draining and those in
    /// `undrain` stopped, with every other node as it is now; nothing is applied.
    pub fn preview_layout(
        &self,
        drain: &[String],
        undrain: &[String],
    ) -> Result<LayoutPreview, StateError> {
        let (members, regions) = self.registry.eligible_with(drain, undrain, now_ms())?;
        let current = self.layouts.current();
        let next = self.layouts.compute(&members)?;
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
            for (p, (a, b)) in current.partitions.iter().zip(&next.partitions).enumerate() {
                let moved = a.iter().zip(b).filter(|(x, y)| x != y).count();
                if moved == 0 {
                    continue;
                }
                moved_slots += moved;
                let (segments, shard_bytes) = self.catalog.partition_size(p as u16)?;
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

    // Publishing and sources.

    /// Publish grants for a signed manifest of an authorised publisher, by the current
    /// layout, valid for `grant_ttl_secs`.
    pub fn grants(&self, bytes: &[u8]) -> Result<PublishGrants, StateError> {
        let layout = self.layout()?;
        let addrs = self.registry.addresses(now_ms());
        let expires = medley_core::unix_now() + self.config.grant_ttl_secs;
        self.catalog
            .grants(bytes, &layout, &addrs, &self.key, expires)
    }

    /// Song `id`'s sources for a client in `region`: who holds it whole, best first, and for
    /// each segment the holder of each slot (banned holders marked, and not alive).
    pub fn song_sources(
        &self,
        id: SongId,
        region: Option<&str>,
    ) -> Result<SongSources, StateError> {
        let now = now_ms();
        let manifest = self.catalog.manifest(id)?;
        let layout = self.layout()?;
        let addrs = self.registry.addresses(now);
        let banned: HashSet<&String> = addrs
            .keys()
            .filter(|n| self.demand.banned(n, now))
            .collect();
        let segments = manifest
            .body()
            .segments
            .iter()
            .enumerate()
            .map(|(index, seg)| {
                let holders = layout.holders(&seg.id);
                // A ban never takes more than m holders of a segment off the list: more
                // banned holders than the code can lose is an attack on the bans, not m+1
                // liars. The rest are listed as not alive: asked last, but asked.
                let mut may_ban = usize::from(self.config.m);
                let mut banned_slots = vec![false; seg.shards.len()];
                for slot in (0..seg.shards.len()).rev() {
                    if may_ban > 0 && holders.get(slot).is_some_and(|p| banned.contains(p)) {
                        banned_slots[slot] = true;
                        may_ban -= 1;
                    }
                }
                let shards = seg
                    .shards
                    .iter()
                    .enumerate()
                    .map(|(slot, shard)| {
                        let peer = holders.get(slot);
                        let (addrs, alive) =
                            peer.and_then(|p| addrs.get(p)).cloned().unwrap_or_default();
                        let reported = peer.is_some_and(|p| banned.contains(p));
                        SlotSource {
                            slot,
                            shard: *shard,
                            peer_id: peer.cloned(),
                            addrs,
                            alive: alive && !reported,
                            banned: banned_slots[slot],
                        }
                    })
                    .collect();
                SegmentSources {
                    index,
                    id: seg.id,
                    len: seg.len,
                    shards,
                }
            })
            .collect();
        if let Some(region) = region.filter(|r| !r.is_empty() && r.len() <= 64) {
            let size = manifest.body().total_size;
            self.demand
                .request(&self.registry, id, size, self.demand_region(region), now);
        }
        Ok(SongSources {
            song: id,
            layout_version: layout.version,
            whole: self.demand.whole_sources(&self.registry, id, region, now),
            segments,
        })
    }

    // Demand.

    /// Records one play of song `id` in `region`; returns the song's plays there so far.
    /// Only songs of the catalogue are counted.
    /// A region no node is in counts as `other`: the regions a stranger can name do not
    /// make the tracker keep more.
    pub fn record_play(&self, id: SongId, region: &str) -> Result<u64, StateError> {
        if region.is_empty() || region.len() > 64 {
            return Err(StateError::BadPlay("region must be 1 to 64 bytes"));
        }
        let size = self.catalog.song_size(id)?;
        let region = self.demand_region(region);
        let plays = self.catalog.count_play(id, region)?;
        self.demand
            .plays(&self.registry, id, size, region, 1, now_ms());
        Ok(plays)
    }

    /// The region demand from `region` counts in: itself when a node is in it, else
    /// `other`, so that the regions a stranger can name do not make the tracker keep more.
    fn demand_region<'a>(&self, region: &'a str) -> &'a str {
        if self.registry.has_region(region) {
            region
        } else {
            OTHER_REGION
        }
    }

    /// Writes the plays counted since the last flush (called every second, and at
    /// shutdown).
    pub fn flush_plays(&self) -> Result<(), StateError> {
        self.catalog.flush_plays()
    }

    /// Whether `source` is banned for sending wrong bytes.
    pub fn banned(&self, source: &str) -> bool {
        self.demand.banned(source, now_ms())
    }

    /// Releases hot copies of songs that cooled and replaces ordered nodes that went away;
    /// called periodically. Returns the number of songs released.
    pub fn sweep_hot(&self) -> usize {
        self.demand.sweep(&self.registry, now_ms())
    }

    /// Songs node `peer_id` is ordered to hold whole.
    pub fn hot_orders(&self, peer_id: &str) -> Result<Vec<SongId>, StateError> {
        if !self.registry.contains(peer_id) {
            return Err(StateError::UnknownNode(peer_id.to_string()));
        }
        Ok(self.demand.orders_of(peer_id))
    }

    /// The songs hot in some region, hottest first.
    pub fn hot_songs(&self) -> Vec<HotSong> {
        self.demand.hot(now_ms())
    }

    /// Records a listener's announcement of the songs it holds whole and serves.
    pub fn announce_peer(&self, a: PeerAnnouncement) -> Result<(), StateError> {
        self.demand.announce(a, now_ms())
    }

    /// Records a client's report about `source` (see [`Demand::report`]). Returns whether
    /// the source is banned.
    pub fn report_source(
        &self,
        source: &str,
        reporter: Option<&str>,
        reason: medley_api::ReportReason,
    ) -> Result<bool, StateError> {
        self.demand
            .report(&self.registry, source, reporter, reason, now_ms())
    }

    /// Entries of every map keyed by what strangers send: announcing peers, songs
    /// announced, sources with failures, sources reported for lies, identities with a
    /// history. Each is bounded.
    pub fn soft_state_sizes(&self) -> [usize; 5] {
        self.demand.sizes()
    }
}
