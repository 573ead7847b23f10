//! The hot tier: whole segments of songs the tracker ordered this node to hold because they
//! run hot in its region.
//!
//! Every poll it asks the tracker for its orders. A song it lacks is filled segment by
//! segment: from another whole copy when the tracker lists one, else rebuilt from `k` shards
//! of the durable tier; every segment is checked against its id before it is stored. A song
//! no longer ordered is dropped (its segments go, unless another held song shares them). What
//! it holds is persisted in the node state and reported with every heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use medley_core::{Codec, SegmentEntry, SegmentId, SongId};
use medley_daemon::RateLimiter;
use medley_net::{CancellationToken, PeerHandle, retrieve};
use tracing::{debug, info, warn};

use crate::stats::HotStats;
use crate::store::{Store, StoreError, Tier};
use crate::tracker::{TrackerLink, parse_source};
use medley_api::TrackerError;

/// A peer to ask, with its addresses.
type Source = (PeerId, Vec<Multiaddr>);

/// Node-state key of the songs held whole, with their segments.
const HOT_KEY: &str = "hot_songs";

/// Why a fill failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HotError {
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("segment {0}: no whole copy and too few shards answered")]
    Unavailable(SegmentId),
    #[error("segment {segment}: {reason}")]
    Rebuild { segment: SegmentId, reason: String },
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the song needs {need} bytes, the hot tier has {free} free")]
    Full { need: u64, free: u64 },
}

/// The hot-tier worker of one node.
#[derive(Debug)]
pub struct HotTier {
    pub(crate) me: String,
    pub(crate) store: Arc<Store>,
    pub(crate) peer: PeerHandle,
    pub(crate) tracker: TrackerLink,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) poll: Duration,
    pub(crate) stats: HotStats,
    /// Most bytes of hot segments kept.
    capacity: u64,
    /// Bytes of hot segments held.
    bytes: AtomicU64,
    /// Songs held whole, with their segment ids.
    held: parking_lot::Mutex<BTreeMap<SongId, Vec<SegmentId>>>,
    /// Woken when what it holds changed, so that the tracker hears it at once rather than
    /// at the next heartbeat.
    changed: tokio::sync::Notify,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HotError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl HotTier {
    /// A worker; what it held before a restart is read back from the store.
    pub(crate) fn new(
        me: String,
        store: Arc<Store>,
        peer: PeerHandle,
        tracker: TrackerLink,
        limiter: RateLimiter,
        poll: Duration,
        capacity: u64,
    ) -> Self {
        let held = match store.get_meta(HOT_KEY) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(error = %e, "unreadable hot-tier index: starting empty");
                BTreeMap::new()
            }),
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                warn!(error = %e, "cannot read the hot-tier index: starting empty");
                BTreeMap::new()
            }
        };
        let segments: BTreeSet<SegmentId> = held.values().flatten().copied().collect();
        let bytes = segments
            .iter()
            .filter_map(|s| store.size_of(Tier::Hot, s.0).ok().flatten())
            .map(u64::from)
            .sum();
        Self {
            me,
            store,
            peer,
            tracker,
            limiter: Arc::new(limiter),
            poll,
            stats: HotStats::default(),
            capacity,
            bytes: AtomicU64::new(bytes),
            held: parking_lot::Mutex::new(held),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Woken when the songs held whole changed.
    pub(crate) fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// Bytes the hot tier may still take.
    pub fn free(&self) -> u64 {
        self.capacity
            .saturating_sub(self.bytes.load(Ordering::Relaxed))
    }

    /// Songs held whole now.
    pub fn songs(&self) -> Vec<SongId> {
        self.held.lock().keys().copied().collect()
    }

    /// Follows the tracker's orders until `cancel` fires.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.follow_orders() => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// One round: drop what is no longer ordered, fill what is missing.
    async fn follow_orders(&self) {
        let orders: BTreeSet<SongId> = match self.tracker.hot_orders(&self.me).await {
            Ok(o) => o.into_iter().collect(),
            Err(e) => {
                debug!(error = %e, "cannot read hot orders");
                return;
            }
        };
        let gone: Vec<SongId> = self
            .held
            .lock()
            .keys()
            .filter(|s| !orders.contains(s))
            .copied()
            .collect();
        for song in gone {
            if let Err(e) = self.drop_song(song).await {
                warn!(%song, error = %e, "cannot drop a hot song");
            }
        }
        let missing: Vec<SongId> = {
            let held = self.held.lock();
            orders
                .iter()
                .filter(|s| !held.contains_key(s))
                .copied()
                .collect()
        };
        for song in missing {
            match self.fill(song).await {
                Ok(segments) => {
                    self.stats.filled.fetch_add(1, Ordering::Relaxed);
                    info!(%song, segments, "holding a hot song whole");
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(%song, error = %e, "cannot fill a hot song");
                }
            }
        }
    }

    async fn save(&self) -> Result<(), HotError> {
        let bytes = serde_json::to_vec(&*self.held.lock()).unwrap_or_default();
        let store = self.store.clone();
        blocking(move || store.put_meta(HOT_KEY, &bytes)).await
    }

    /// Fetches every segment of `song` it lacks, checked, into the hot tier. On failure the
    /// segments stored by this attempt are removed again.
    async fn fill(&self, song: SongId) -> Result<usize, HotError> {
        let manifest = self.tracker.client.manifest(song).await?;
        let sources = self.tracker.client.sources(song, None).await?;
        let whole: Vec<Source> = sources
            .whole
            .iter()
            .filter(|w| w.peer_id != self.me)
            .filter_map(|w| parse_source(&w.peer_id, &w.addrs))
            .collect();
        let body = manifest.body();
        if body.total_size > self.free() {
            return Err(HotError::Full {
                need: body.total_size,
                free: self.free(),
            });
        }
        let mut stored = Vec::new();
        for (index, entry) in body.segments.iter().enumerate() {
            let (store, id) = (self.store.clone(), entry.id);
            let result = async {
                if blocking(move || store.contains(Tier::Hot, id.0)).await? {
                    return Ok(false);
                }
                let holders: Vec<Option<Source>> = sources
                    .segments
                    .get(index)
                    .map(|s| {
                        s.shards
                            .iter()
                            .map(|slot| {
                                slot.peer_id
                                    .as_deref()
                                    .and_then(|p| parse_source(p, &slot.addrs))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let data = self
                    .segment(entry, manifest.codec(), &whole, &holders)
                    .await?;
                // The store checks the bytes against the id again.
                let (store, len) = (self.store.clone(), data.len() as u64);
                blocking(move || store.put(Tier::Hot, id.0, &data).map(|_| ())).await?;
                self.bytes.fetch_add(len, Ordering::Relaxed);
                Ok(true)
            }
            .await;
            match result {
                Ok(true) => stored.push(id),
                Ok(false) => {}
                Err(e) => {
                    self.delete_segments(stored).await;
                    return Err(e);
                }
            }
        }
        let ids: Vec<SegmentId> = body.segments.iter().map(|s| s.id).collect();
        let n = ids.len();
        self.held.lock().insert(song, ids);
        self.changed.notify_one();
        self.save().await?;
        Ok(n)
    }

    /// One segment, verified: from the first whole copy that has it (tried in turn), else
    /// rebuilt from `k` shards of `holders` (per slot); every request paced by the fill rate.
    async fn segment(
        &self,
        entry: &SegmentEntry,
        codec: &Codec,
        whole: &[Source],
        holders: &[Option<Source>],
    ) -> Result<Vec<u8>, HotError> {
        let mut slots: Vec<(usize, Vec<Source>)> = holders
            .iter()
            .enumerate()
            .filter_map(|(slot, h)| Some((slot, vec![h.clone()?])))
            .collect();
        slots.sort_by_key(|(slot, _)| retrieve::balanced_rank(&entry.id, *slot, codec.total()));
        let seg = retrieve::Segment {
            entry: entry.clone(),
            whole: whole.to_vec(),
            slots,
        };
        let policy = retrieve::Policy {
            pace: Some(crate::repair::pace(&self.limiter)),
            ..retrieve::Policy::default()
        };
        let events: Arc<dyn retrieve::Events> = Arc::new(retrieve::NoEvents);
        match retrieve::retrieve(&self.peer, codec, &seg, &policy, &events).await {
            Ok(got) => {
                let counter = match got.origin {
                    retrieve::Origin::Whole(_) => &self.stats.copied_segments,
                    retrieve::Origin::Rebuilt => &self.stats.rebuilt_segments,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(got.data)
            }
            Err(retrieve::RetrieveError::Unavailable { reasons, .. }) => {
                debug!(segment = %entry.id, reasons, "no source delivered");
                Err(HotError::Unavailable(entry.id))
            }
            Err(retrieve::RetrieveError::Rebuild(reason)) => Err(HotError::Rebuild {
                segment: entry.id,
                reason,
            }),
        }
    }

    /// Deletes hot segments, counting the bytes freed.
    async fn delete_segments(&self, ids: Vec<SegmentId>) {
        let store = self.store.clone();
        let freed = blocking(move || {
            let mut freed = 0u64;
            for id in ids {
                if let Some(size) = store.size_of(Tier::Hot, id.0)? {
                    store.delete(Tier::Hot, id.0)?;
                    freed += u64::from(size);
                }
            }
            Ok(freed)
        })
        .await;
        match freed {
            Ok(b) => {
                let _ = self
                    .bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                        Some(v.saturating_sub(b))
                    });
            }
            Err(e) => warn!(error = %e, "cannot delete hot segments"),
        }
    }

    /// Drops `song`'s segments that no other held song uses.
    async fn drop_song(&self, song: SongId) -> Result<(), HotError> {
        let doomed: Vec<SegmentId> = {
            let mut held = self.held.lock();
            let Some(ids) = held.remove(&song) else {
                return Ok(());
            };
            let kept: BTreeSet<SegmentId> = held.values().flatten().copied().collect();
            ids.into_iter().filter(|id| !kept.contains(id)).collect()
        };
        self.changed.notify_one();
        self.save().await?;
        let n = doomed.len();
        self.delete_segments(doomed).await;
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        info!(%song, segments = n, "song no longer hot here: dropped");
        Ok(())
    }
}
