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

use medley_api::{
    Heartbeat, HotSong, LayoutPreview, NodeRecord, NodeSlots, PeerAnnouncement, PublishGrants,
    Registration, SegmentSources, SlotSource, SongSources,
};
use medley_core::{Layout, LayoutError, PublisherId, SongId, TrackerId, TrackerKey};
use tracing::info;

use crate::catalog::Catalog;
use crate::config::TrackerConfig;
use crate::db::Db;
use crate::demand::Demand;
use crate::error::{StateError, corrupt};
use crate::layouts::Layouts;
use crate::registry::{NodeTotals, Registry};

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
}

fn now_ms() -> u64 {
    medley_core::unix_now_ms()
}

impl State {
    /// Opens the state in `config.data_dir/db` and adds the configured publisher keys.
    pub fn open(config: TrackerConfig, publishers: &[PublisherId]) -> Result<Self, StateError> {
        let key = TrackerKey::from_seed(medley_daemon::keyfile::load_or_create_seed(
            &config.data_dir.join(TRACKER_KEY_FILE),
        )?);
        let db = Arc::new(Db::open(&config.data_dir.join("db"))?);
        let now = now_ms();
        let layouts = Layouts::open(db.clone(), config.partitions, config.k + config.m)?;
        let current = layouts.current();
        let in_layout: HashSet<&str> = current
            .iter()
            .flat_map(|l| l.partitions.iter().flatten())
            .map(String::as_str)
            .collect();
        let registry = Registry::open(db.clone(), config.node_grace_secs * 1000, &in_layout, now)?;
        layouts.set_members(registry.eligible(now));
        let catalog = Catalog::open(
            db,
            &config.data_dir.join("index"),
            publishers,
            config.partitions,
            (config.k, config.m),
        )?;
        Ok(Self {
            key,
            demand: Demand::new(&config),
            config,
            catalog,
            registry,
            layouts,
        })
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
    /// Returns the layout version in force after it.
    pub fn register(&self, reg: Registration) -> Result<Option<u64>, StateError> {
        self.registry.register(reg, now_ms())?;
        self.refresh_layout()?;
        Ok(self.layouts.version())
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

    /// Records a heartbeat. A node back from the dead rejoins the layout.
    pub fn heartbeat(&self, hb: Heartbeat) -> Result<(), StateError> {
        let was_down = self.registry.heartbeat(&hb, now_ms())?;
        if let Some(hot) = hb.hot {
            self.demand.set_held(&hb.peer_id, hot);
        }
        if was_down {
            info!(node = %hb.peer_id, "node is back");
            self.refresh_layout()?;
        }
        Ok(())
    }

    /// Records that a node is stopping: it is no longer offered as a source from now on.
    /// Its slots stay until the grace period ends, so a restart moves nothing.
    pub fn leave(&self, peer_id: &str) -> Result<(), StateError> {
        self.registry.leave(peer_id)
    }

    /// Recomputes the layout if the eligible nodes changed since the last computation: a
    /// node went down (no heartbeat for the grace period), came back, registered, or started
    /// or stopped draining. Called on every registration and drain, and periodically.
    /// Returns the new layout version when the layout changed.
    pub fn refresh_layout(&self) -> Result<Option<u64>, StateError> {
        self.layouts.refresh(self.registry.eligible(now_ms()))
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
            let codec = medley_core::Codec::new(self.config.k, self.config.m)
                .map_err(|e| corrupt("coding", e))?;
            for (p, (a, b)) in current.partitions.iter().zip(&next.partitions).enumerate() {
                let moved = a.iter().zip(b).filter(|(x, y)| x != y).count();
                if moved == 0 {
                    continue;
                }
                moved_slots += moved;
                let (segments, shard_bytes) = self.catalog.partition_size(p as u16, &codec)?;
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
        let manifest = self.catalog.manifest(id)?;
        let region = if self.registry.has_region(region) {
            region
        } else {
            OTHER_REGION
        };
        let plays = self.catalog.count_play(id, region)?;
        self.demand.play(
            &self.registry,
            id,
            manifest.body().total_size,
            region,
            now_ms(),
        );
        Ok(plays)
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
