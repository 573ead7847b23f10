//! Repair and handover: the node keeps every shard its layout slots call for, and lets go
//! of shards of slots it lost only once their new holder has them.
//!
//! A pass:
//! 1. Reads the current layout and the earlier versions the tracker still keeps (those a
//!    slot not yet settled may need), the network's `k`/`m` and the live nodes.
//! 2. Remembers every (partition, slot) this node holds or held (persisted in the store's
//!    node state), so shards of lost slots are found again after a restart.
//! 3. **Repair**: for each slot it holds, lists the partition's segments (the tracker's
//!    placement index) and, for each shard it lacks, first asks the slot's earlier holders
//!    for it (a handover or drain: one read), else fetches shards of the other slots from
//!    their holders, current or earlier, until it has `k`, rebuilds the segment, checks it
//!    against its id, re-encodes, checks the shard against its id and stores it. Bounded by
//!    `repair_concurrency` and a byte-rate limit on reads.
//! 4. **Handover**: for each slot it lost, audits the slot's new holder for each of the
//!    slot's shards held here (a random range, proved against the shard's id) and deletes
//!    those it proved, unless a slot this node holds now calls for the same shard id. The
//!    slot is forgotten once none are left.
//! 5. **Garbage collection** ([`crate::gc`]): shards no slot held (or still to hand over)
//!    calls for are deleted once they have been so for the grace period.
//!
//! A pass runs when the layout version changes, when the scrubber or the data plane found a
//! corrupt shard, every `repair_interval_secs`, and again after a failure (with backoff).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use medley_core::{Challenge, Codec, Layout, SegmentEntry, ShardId};
use medley_daemon::RateLimiter;
use medley_net::{CancellationToken, PeerHandle, retrieve};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::stats::MaintenanceStats;
use crate::store::{Store, StoreError, Tier};
use crate::tracker::{TrackerLink, live_addresses};
use medley_api::TrackerError;

/// Node-state key of the (partition, slot) pairs this node holds or held.
const HELD_KEY: &str = "held_slots";
/// Earlier layout versions consulted at most for a slot's previous holders: those the
/// tracker still keeps (back to the oldest a slot not yet settled may need), the newest
/// first.
const MAX_HISTORY: u64 = 64;
/// Audits of a new holder in flight at once during a handover.
const HANDOVER_AUDITS: usize = 8;
/// Longest wait between retries after a failed pass.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a repair pass or a shard's repair failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RepairError {
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the tracker's k/m ({k}+{m}) do not fit its layout of {slots} slots")]
    Coding { k: u8, m: u8, slots: u8 },
    #[error("segment {segment}: only {have} of the {need} shards needed could be fetched")]
    TooFewShards {
        segment: String,
        have: usize,
        need: usize,
    },
    #[error("segment {segment}: {reason}")]
    Rebuild { segment: String, reason: String },
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A peer to ask, with its addresses.
type Source = (PeerId, Vec<Multiaddr>);

/// One shard to restore.
struct Job {
    entry: SegmentEntry,
    slot: usize,
    /// For each slot, the live nodes (not this one) that hold or held it, current first.
    sources: Vec<Vec<Source>>,
}

/// What a pass did.
#[derive(Debug, Default)]
struct PassOutcome {
    repaired: u64,
    failed: u64,
    /// Lost slots whose shards are not all handed over yet.
    pending_handover: usize,
}

/// The repair worker of one node.
pub(crate) struct Repairer {
    pub(crate) me: String,
    pub(crate) store: Arc<Store>,
    pub(crate) peer: PeerHandle,
    pub(crate) tracker: TrackerLink,
    pub(crate) stats: Arc<MaintenanceStats>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) concurrency: usize,
    pub(crate) interval: Duration,
    /// Seconds an unreferenced shard is kept before it is collected.
    pub(crate) gc_grace_secs: u64,
    pub(crate) poll: Duration,
    pub(crate) wake: Arc<Notify>,
    /// Earlier layout versions already fetched.
    pub(crate) past_layouts: parking_lot::Mutex<HashMap<u64, Arc<Layout>>>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RepairError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl Repairer {
    /// Runs passes until `cancel` fires.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut done_version: Option<u64> = None;
        let mut next_full = Instant::now();
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Duration::from_secs(1);
        let mut woken = false;
        loop {
            let version = match self.tracker.client.stats().await {
                Ok(s) => s.layout_version,
                Err(e) => {
                    debug!(error = %e, "cannot read the layout version");
                    None
                }
            };
            let now = Instant::now();
            let due = version.is_some()
                && (version != done_version
                    || woken
                    || now >= next_full
                    || retry_at.is_some_and(|t| now >= t));
            if due {
                woken = false;
                match self.pass().await {
                    Ok(o) => {
                        if o.repaired > 0 || o.failed > 0 {
                            info!(
                                repaired = o.repaired,
                                failed = o.failed,
                                pending_handover = o.pending_handover,
                                "repair pass done"
                            );
                        }
                        if o.failed > 0 {
                            retry_at = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        } else {
                            backoff = Duration::from_secs(1);
                            // Waiting for new holders to catch up is not a failure: look
                            // again at the next poll.
                            retry_at = (o.pending_handover > 0).then(|| Instant::now() + self.poll);
                            done_version = version;
                            next_full = Instant::now() + self.interval;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in = ?backoff, "repair pass failed");
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => woken = true,
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// The current layout and the earlier versions from `oldest` on, newest first.
    async fn layouts(
        &self,
        oldest: Option<u64>,
    ) -> Result<(Arc<Layout>, Vec<Arc<Layout>>), RepairError> {
        let current = Arc::new(self.tracker.layout(None).await?);
        let from = oldest
            .unwrap_or(current.version)
            .max(current.version.saturating_sub(MAX_HISTORY))
            .max(1);
        let mut history = Vec::new();
        for v in (from..current.version).rev() {
            // A version never changes: fetch each past one once.
            let cached = self.past_layouts.lock().get(&v).cloned();
            let layout = match cached {
                Some(l) => l,
                None => match self.tracker.layout(Some(v)).await {
                    Ok(l) => {
                        let l = Arc::new(l);
                        self.past_layouts.lock().insert(v, l.clone());
                        l
                    }
                    // Pruned meanwhile: the slots it mattered for have settled.
                    Err(e) if e.status() == Some(404) => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            history.push(layout);
        }
        self.past_layouts.lock().retain(|&k, _| k >= from);
        Ok((current, history))
    }

    async fn pass(&self) -> Result<PassOutcome, RepairError> {
        let coding = self.tracker.client.stats().await?;
        let (layout, history) = self.layouts(coding.layout_oldest).await?;
        let codec = Codec::new(coding.k, coding.m)
            .ok()
            .filter(|c| c.total() == usize::from(layout.slots))
            .ok_or(RepairError::Coding {
                k: coding.k,
                m: coding.m,
                slots: layout.slots,
            })?;
        let live = live_addresses(&self.tracker.client.nodes().await?);

        let mine = |l: &Layout| -> BTreeSet<(u16, u8)> {
            let mut s = BTreeSet::new();
            for (p, holders) in l.partitions.iter().enumerate() {
                for (i, h) in holders.iter().enumerate() {
                    if *h == self.me {
                        s.insert((p as u16, i as u8));
                    }
                }
            }
            s
        };
        let current = mine(&layout);
        let mut held = {
            let store = self.store.clone();
            blocking(move || load_held_from(&store)).await?
        };
        let before = held.clone();
        held.extend(current.iter().copied());
        for l in &history {
            held.extend(mine(l));
        }
        if held != before {
            let (s, h) = (self.store.clone(), held.clone());
            blocking(move || save_held_to(&s, &h)).await?;
        }

        let sources_for = |p: usize| -> Vec<Vec<Source>> {
            (0..usize::from(layout.slots))
                .map(|slot| {
                    let mut v: Vec<Source> = Vec::new();
                    let mut seen = BTreeSet::new();
                    for l in std::iter::once(&layout).chain(history.iter()) {
                        let Some(id) = l.partitions.get(p).and_then(|h| h.get(slot)) else {
                            continue;
                        };
                        if *id == self.me || !seen.insert(id.clone()) {
                            continue;
                        }
                        if let Some(s) = live.get(id) {
                            v.push(s.clone());
                        }
                    }
                    v
                })
                .collect()
        };

        // The committed segments of every partition this node holds or held a slot of, read
        // once a pass; and the shard ids its current slots call for (a shard id can serve
        // several slots: identical shards, such as silence, share one).
        let mut entries: HashMap<u16, Arc<Vec<SegmentEntry>>> = HashMap::new();
        let partitions: BTreeSet<u16> = held.iter().map(|&(p, _)| p).collect();
        for p in partitions {
            let e = self.tracker.partition_segments(p).await?;
            entries.insert(p, Arc::new(e));
        }
        let needed: Arc<HashSet<ShardId>> = Arc::new(
            current
                .iter()
                .flat_map(|&(p, slot)| {
                    entries[&p]
                        .iter()
                        .filter_map(move |e| e.shards.get(usize::from(slot)).copied())
                })
                .collect(),
        );

        // Repair what the current slots lack.
        let mut jobs = Vec::new();
        for &(p, slot) in &current {
            let slot_u = usize::from(slot);
            let missing = self.segments_where(&entries[&p], slot, false).await?;
            if missing.is_empty() {
                continue;
            }
            let sources = sources_for(usize::from(p));
            jobs.extend(missing.into_iter().map(|entry| Job {
                entry,
                slot: slot_u,
                sources: sources.clone(),
            }));
        }
        let mut outcome = PassOutcome::default();
        self.stats
            .backlog
            .store(jobs.len() as u64, Ordering::Relaxed);
        if !jobs.is_empty() {
            info!(shards = jobs.len(), "repairing missing shards");
        }
        let mut results = futures::stream::iter(jobs)
            .map(|job| self.repair_one(job, &codec))
            .buffer_unordered(self.concurrency);
        while let Some(r) = results.next().await {
            match r {
                Ok(copied) => {
                    outcome.repaired += 1;
                    let counter = if copied {
                        &self.stats.copied
                    } else {
                        &self.stats.rebuilt
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    outcome.failed += 1;
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "shard repair failed; will retry");
                }
            }
            let _ = self
                .stats
                .backlog
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(1))
                });
        }
        drop(results);
        self.stats.backlog.store(outcome.failed, Ordering::Relaxed);
        if outcome.failed == 0 {
            // Every shard of every slot of this version is here: its slots are settled.
            self.stats
                .repaired_version
                .fetch_max(layout.version, Ordering::Relaxed);
        }

        // Hand over the slots this node lost.
        let lost: Vec<(u16, u8)> = held.difference(&current).copied().collect();
        let mut forget = Vec::new();
        for (p, slot) in lost {
            match self
                .hand_over(&layout, &live, p, slot, &entries[&p], &needed)
                .await
            {
                Ok(true) => forget.push((p, slot)),
                Ok(false) => outcome.pending_handover += 1,
                Err(e) => {
                    debug!(partition = p, slot, error = %e, "handover not done yet");
                    outcome.pending_handover += 1;
                }
            }
        }
        if !forget.is_empty() {
            for f in &forget {
                held.remove(f);
            }
            let (s, h) = (self.store.clone(), held.clone());
            blocking(move || save_held_to(&s, &h)).await?;
        }

        // Collect what no slot held (or still to hand over) calls for.
        let referenced: HashSet<ShardId> = held
            .iter()
            .flat_map(|&(p, slot)| {
                entries[&p]
                    .iter()
                    .filter_map(move |e| e.shards.get(usize::from(slot)).copied())
            })
            .collect();
        let (store, grace) = (self.store.clone(), self.gc_grace_secs);
        let gc = blocking(move || {
            crate::gc::collect(&store, &referenced, grace, medley_core::unix_now())
        })
        .await?;
        let s = &self.stats;
        s.gc_held_bytes.store(gc.held, Ordering::Relaxed);
        s.gc_referenced_bytes
            .store(gc.referenced, Ordering::Relaxed);
        s.gc_pending_bytes.store(gc.pending, Ordering::Relaxed);
        s.gc_collected.fetch_add(gc.collected, Ordering::Relaxed);
        s.gc_collected_bytes
            .fetch_add(gc.collected_bytes, Ordering::Relaxed);
        Ok(outcome)
    }

    /// The segments of `entries` whose shard for `slot` this node holds (`held`) or lacks.
    async fn segments_where(
        &self,
        entries: &Arc<Vec<SegmentEntry>>,
        slot: u8,
        held: bool,
    ) -> Result<Vec<SegmentEntry>, RepairError> {
        let (store, entries) = (self.store.clone(), entries.clone());
        let slot = usize::from(slot);
        blocking(move || {
            let mut out = Vec::new();
            for e in entries.iter() {
                let Some(id) = e.shards.get(slot) else {
                    continue;
                };
                if store.contains(Tier::Durable, id.0)? == held {
                    out.push(e.clone());
                }
            }
            Ok(out)
        })
        .await
    }

    /// Deletes this node's shards of `(partition, slot)` once the slot's new holder has
    /// proved it holds each (an audit of a random range, checked against the shard's id),
    /// and only those no slot this node holds now calls for (`needed`). Returns whether
    /// none are left to hand over.
    async fn hand_over(
        &self,
        layout: &Layout,
        live: &HashMap<String, Source>,
        partition: u16,
        slot: u8,
        entries: &Arc<Vec<SegmentEntry>>,
        needed: &Arc<HashSet<ShardId>>,
    ) -> Result<bool, RepairError> {
        let slot_u = usize::from(slot);
        let mine: Vec<(ShardId, u32)> = {
            let (store, entries, needed) = (self.store.clone(), entries.clone(), needed.clone());
            blocking(move || {
                let mut out = Vec::new();
                for e in entries.iter() {
                    let Some(id) = e.shards.get(slot_u) else {
                        continue;
                    };
                    if needed.contains(id) {
                        continue;
                    }
                    if let Some(len) = store.size_of(Tier::Durable, id.0)? {
                        out.push((*id, len));
                    }
                }
                out.sort_unstable();
                out.dedup();
                Ok(out)
            })
            .await?
        };
        if mine.is_empty() {
            return Ok(true);
        }
        let Some((peer, addrs)) = layout
            .partitions
            .get(usize::from(partition))
            .and_then(|h| h.get(slot_u))
            .and_then(|id| live.get(id))
            .cloned()
        else {
            // The new holder is down (or the layout has no holder): keep the shards.
            return Ok(false);
        };
        let total = mine.len();
        let mut audits = futures::stream::iter(mine)
            .map(|(id, len)| {
                let (peer_handle, addrs) = (self.peer.clone(), addrs.clone());
                async move {
                    let challenge =
                        Challenge::pick(id, len as usize, getrandom::u64().unwrap_or(0));
                    (id, peer_handle.audit(peer, addrs, challenge).await)
                }
            })
            .buffer_unordered(HANDOVER_AUDITS);
        let mut proved = Vec::new();
        while let Some((id, result)) = audits.next().await {
            match result {
                Ok(_) => proved.push(id),
                Err(e @ medley_net::RequestError::BadHash { .. }) => {
                    self.stats
                        .handover_audits_failed
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, shard = %id, error = %e, "the new holder failed an audit for a shard handed over to it; keeping the shard");
                }
                Err(e) => {
                    debug!(%peer, shard = %id, error = %e, "the new holder cannot prove it holds the shard yet")
                }
            }
        }
        drop(audits);
        let n = proved.len();
        self.stats
            .handover_audits_passed
            .fetch_add(n as u64, Ordering::Relaxed);
        let store = self.store.clone();
        blocking(move || {
            for id in proved {
                store.delete(Tier::Durable, id.0)?;
            }
            Ok(())
        })
        .await?;
        self.stats
            .handed_over
            .fetch_add(n as u64, Ordering::Relaxed);
        let left = total - n;
        if left == 0 {
            info!(partition, slot, "slot handed over");
        }
        Ok(left == 0)
    }

    /// Fetches one shard from the first source that has it (checked against `id`).
    async fn fetch(&self, sources: &[Source], id: ShardId, len: usize) -> Option<Vec<u8>> {
        for (peer, addrs) in sources {
            self.limiter.acquire(len as u64).await;
            match self.peer.get_shard(*peer, addrs.clone(), id).await {
                Ok(data) => {
                    self.stats
                        .bytes_read
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    return Some(data);
                }
                Err(e) => debug!(%peer, shard = %id, error = %e, "source failed"),
            }
        }
        None
    }

    /// Restores one shard. Returns whether it was copied whole (else rebuilt).
    async fn repair_one(&self, job: Job, codec: &Codec) -> Result<bool, RepairError> {
        let Job {
            entry,
            slot,
            sources,
        } = job;
        let id = entry.shards[slot];
        let shard_len = codec.shard_len(entry.len as usize);
        // An earlier holder of this very slot: one read.
        let earlier: Vec<Source> = sources[slot].clone();
        if let Some(data) = self.fetch(&earlier, id, shard_len).await {
            let store = self.store.clone();
            blocking(move || store.put(Tier::Durable, id.0, &data)).await?;
            return Ok(true);
        }
        // Rebuild from k other slots, data slots first (then the rebuild is a copy), each
        // slot's current holder before its earlier ones; another slot only when one fails.
        let seg = retrieve::Segment {
            entry: entry.clone(),
            whole: Vec::new(),
            slots: (0..entry.shards.len())
                .filter(|&j| j != slot)
                .map(|j| (j, sources[j].clone()))
                .collect(),
        };
        let policy = retrieve::Policy {
            pace: Some(pace(&self.limiter)),
            ..retrieve::Policy::default()
        };
        let events: Arc<dyn retrieve::Events> = Arc::new(BytesRead(self.stats.clone()));
        let segment = entry.id.to_string();
        let data = retrieve::retrieve(&self.peer, codec, &seg, &policy, &events)
            .await
            .map_err(|e| match e {
                retrieve::RetrieveError::Unavailable { have, need, .. } => {
                    RepairError::TooFewShards {
                        segment: segment.clone(),
                        have,
                        need,
                    }
                }
                retrieve::RetrieveError::Rebuild(reason) => RepairError::Rebuild {
                    segment: segment.clone(),
                    reason,
                },
            })?
            .data;
        let codec = codec.clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let mut all = codec.encode(&data).map_err(|e| e.to_string())?;
            if slot >= all.len() {
                return Err("slot out of range".to_string());
            }
            Ok(all.swap_remove(slot))
        })
        .await?
        .map_err(|reason| RepairError::Rebuild {
            segment: segment.clone(),
            reason,
        })?;
        if !id.matches(&rebuilt) {
            return Err(RepairError::Rebuild {
                segment,
                reason: format!("re-encoded shard {slot} does not match {id}"),
            });
        }
        let store = self.store.clone();
        blocking(move || store.put(Tier::Durable, id.0, &rebuilt)).await?;
        Ok(false)
    }
}

/// Counts the bytes repair reads from other nodes.
struct BytesRead(Arc<MaintenanceStats>);

impl retrieve::Events for BytesRead {
    fn delivered(&self, _: PeerId, _: retrieve::Piece, bytes: usize, _: Duration) {
        self.0.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Paces requests by `limiter`.
pub(crate) fn pace(limiter: &Arc<RateLimiter>) -> retrieve::Pace {
    let limiter = limiter.clone();
    Arc::new(move |bytes| {
        let limiter = limiter.clone();
        Box::pin(async move { limiter.acquire(bytes).await })
    })
}

fn load_held_from(store: &Store) -> Result<BTreeSet<(u16, u8)>, StoreError> {
    Ok(store
        .get_meta(HELD_KEY)?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default())
}

fn save_held_to(store: &Store, held: &BTreeSet<(u16, u8)>) -> Result<(), StoreError> {
    let json = serde_json::to_vec(held).unwrap_or_default();
    store.put_meta(HELD_KEY, &json)
}
