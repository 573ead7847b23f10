//! Fetching a song's segments: the listener's schedule, cache and bookkeeping around the
//! data plane's retrieval engine ([`medley_net::retrieve`]).
//!
//! For each segment: the local cache; else whole copies (fastest measured first, those that
//! failed this session last, liars never), hedged; else `k + extra` shard holders at once
//! (rotated per segment so every slot serves its share, stopped or failed holders last), the first `k` verified shards
//! decoded and the segment checked against its [`SegmentId`](medley_core::SegmentId).
//! Segments are fetched in playback order with a window of `read_ahead` segments in flight.
//! What each source did is kept in the session's [`Report`]; a source that lies is
//! reported to the tracker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::StreamExt;
use futures::{Stream, stream};
use medley_core::{Codec, Manifest, SegmentEntry};
use medley_net::retrieve::{self, Origin, Piece, RetrieveError};
use medley_net::{PeerHandle, PeerId, RequestError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::cache::SegmentStore;
use crate::error::ClientError;
use crate::tracker::{Holder, WholeCopy};
use bytes::Bytes;
use medley_api::{ReportReason, SourceKind, SourceReport, TrackerClient};
use medley_core::SongId;

/// How the fetcher behaves.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// Sources asked at once beyond `k`.
    pub extra_sources: usize,
    /// After this long without `k` shards, one more source is asked.
    pub hedge_after: Duration,
    /// Segments in flight ahead of the consumer.
    pub read_ahead: usize,
}

/// What one source did during a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Shards it delivered that checked out.
    pub shards: u64,
    /// Bytes of those shards.
    pub bytes: u64,
    /// Requests that failed (network, refusal, timeout).
    pub failures: u64,
    /// Shards or segments whose bytes did not match their hash.
    pub bad_hashes: u64,
    /// Requests it did not answer in time (counted in `failures` too).
    #[serde(default)]
    pub timeouts: u64,
    /// Whole segments it delivered that checked out.
    #[serde(default)]
    pub segments: u64,
    /// Round-trip time of its recent successful requests (moving average), in ms.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

impl SourceStats {
    fn measured(&mut self, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        self.rtt_ms = Some(self.rtt_ms.map_or(ms, |old| 0.7 * old + 0.3 * ms));
    }
}

/// Where a session's segments came from, in bytes of segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Segments found in the local cache.
    pub cache_segments: u64,
    /// Their bytes.
    pub cache_bytes: u64,
    /// Segments rebuilt from shards of the durable tier.
    pub rebuilt_segments: u64,
    /// Their bytes.
    pub rebuilt_bytes: u64,
    /// Segments fetched whole from other listeners.
    #[serde(default)]
    pub peer_segments: u64,
    /// Their bytes.
    #[serde(default)]
    pub peer_bytes: u64,
    /// Segments fetched whole from storage nodes' hot tiers.
    #[serde(default)]
    pub hot_segments: u64,
    /// Their bytes.
    #[serde(default)]
    pub hot_bytes: u64,
}

impl Delivery {
    /// The bytes by source, as a play report carries them.
    pub fn report(&self) -> medley_api::DeliveryReport {
        medley_api::DeliveryReport {
            cache_bytes: self.cache_bytes,
            peer_bytes: self.peer_bytes,
            hot_bytes: self.hot_bytes,
            rebuilt_bytes: self.rebuilt_bytes,
        }
    }

    /// All bytes delivered.
    pub fn total_bytes(&self) -> u64 {
        self.cache_bytes + self.rebuilt_bytes + self.peer_bytes + self.hot_bytes
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Delivery) {
        self.cache_segments += other.cache_segments;
        self.cache_bytes += other.cache_bytes;
        self.rebuilt_segments += other.rebuilt_segments;
        self.rebuilt_bytes += other.rebuilt_bytes;
        self.peer_segments += other.peer_segments;
        self.peer_bytes += other.peer_bytes;
        self.hot_segments += other.hot_segments;
        self.hot_bytes += other.hot_bytes;
    }
}

/// Per-source record of a session: who delivered, who failed, who lied.
#[derive(Debug, Default)]
pub struct Report {
    sources: Mutex<HashMap<PeerId, SourceStats>>,
    delivery: Mutex<Delivery>,
    /// What was reported to the tracker about which source.
    reported: Mutex<std::collections::HashSet<(PeerId, ReportReason)>>,
    /// Whole-copy sources that have not delivered yet this session and have a request
    /// pending: each gets one at a time, so that a liar or a stall is found out by one
    /// request, not by every segment in flight.
    probing: Mutex<std::collections::HashSet<PeerId>>,
    /// Woken when a probe ends: fetches that waited on it look again.
    probe_ended: tokio::sync::Notify,
}

impl Report {
    fn record(&self, peer: PeerId, f: impl FnOnce(&mut SourceStats)) {
        f(self.sources.lock().entry(peer).or_default());
    }

    fn failed_before(&self, peer: &PeerId) -> bool {
        self.sources
            .lock()
            .get(peer)
            .is_some_and(|s| s.failures + s.bad_hashes > 0)
    }

    /// Whether `peer` lied or let a request time out this session: not asked for whole
    /// copies again.
    fn unfit_for_whole(&self, peer: &PeerId) -> bool {
        self.sources
            .lock()
            .get(peer)
            .is_some_and(|s| s.bad_hashes + s.timeouts > 0)
    }

    /// Whether `peer` delivered a whole segment this session.
    fn proven(&self, peer: &PeerId) -> bool {
        self.sources
            .lock()
            .get(peer)
            .is_some_and(|s| s.segments > 0)
    }

    /// Takes `peer`'s one pending probe; false when it has one already.
    fn start_probe(&self, peer: PeerId) -> bool {
        self.probing.lock().insert(peer)
    }

    fn end_probe(&self, peer: &PeerId) {
        self.probing.lock().remove(peer);
        self.probe_ended.notify_waiters();
    }

    /// Whether this is the first time `reason` is to be reported about `peer` this
    /// session (each is reported once).
    fn first_report(&self, peer: PeerId, reason: ReportReason) -> bool {
        self.reported.lock().insert((peer, reason))
    }

    fn rtt_ms(&self, peer: &PeerId) -> Option<f64> {
        self.sources.lock().get(peer).and_then(|s| s.rtt_ms)
    }

    /// Where the segments came from.
    pub fn delivery(&self) -> Delivery {
        *self.delivery.lock()
    }

    /// A copy of every source's stats.
    pub fn snapshot(&self) -> HashMap<PeerId, SourceStats> {
        self.sources.lock().clone()
    }

    /// Sources that delivered at least one shard or segment.
    pub fn sources_used(&self) -> usize {
        self.sources
            .lock()
            .values()
            .filter(|s| s.shards + s.segments > 0)
            .count()
    }

    /// Sources that sent bytes not matching their hash.
    pub fn liars(&self) -> Vec<PeerId> {
        let mut v: Vec<_> = self
            .sources
            .lock()
            .iter()
            .filter(|(_, s)| s.bad_hashes > 0)
            .map(|(p, _)| *p)
            .collect();
        v.sort();
        v
    }
}

/// Fetches and rebuilds segments of one song.
#[derive(Debug)]
pub struct Fetcher {
    peer: PeerHandle,
    codec: Codec,
    segments: Vec<SegmentEntry>,
    holders: Vec<Vec<Option<Holder>>>,
    whole: Vec<WholeCopy>,
    opts: FetchOptions,
    report: Arc<Report>,
    cache: Option<Arc<dyn SegmentStore>>,
    /// Where to report sources that lie, and about which song.
    reporter: Option<(TrackerClient, SongId)>,
    /// Requests still in flight when their segment was already complete: they finish on
    /// their own and record what their source did (see [`Fetcher::settle`]).
    stragglers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Fetcher {
    /// A fetcher for `manifest`'s segments from `holders` (per segment, per slot).
    pub fn new(
        peer: PeerHandle,
        manifest: &Manifest,
        holders: Vec<Vec<Option<Holder>>>,
        opts: FetchOptions,
        report: Arc<Report>,
    ) -> Self {
        Self {
            peer,
            codec: manifest.codec().clone(),
            segments: manifest.body().segments.clone(),
            holders,
            whole: Vec::new(),
            opts,
            report,
            cache: None,
            reporter: None,
            stragglers: Mutex::new(Vec::new()),
        }
    }

    /// Looks segments up in `cache` before fetching them, and keeps what it fetches there.
    #[must_use]
    pub fn with_cache(mut self, cache: Arc<dyn SegmentStore>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Asks these holders of whole copies (best first) for each segment before falling back
    /// to the shards.
    #[must_use]
    pub fn with_whole(mut self, whole: Vec<WholeCopy>) -> Self {
        self.whole = whole;
        self
    }

    /// Reports sources that send bytes not matching their hash to `tracker` (about `song`).
    #[must_use]
    pub fn with_reporter(mut self, tracker: TrackerClient, song: SongId) -> Self {
        self.reporter = Some((tracker, song));
        self
    }

    /// The song's segment ids, in order.
    pub fn segment_ids(&self) -> Vec<medley_core::SegmentId> {
        self.segments.iter().map(|s| s.id).collect()
    }

    /// Waits up to `timeout` for requests still in flight when their segment was complete,
    /// so that the report says what every asked source did (a slow liar is found out too).
    pub async fn settle(&self, timeout: Duration) {
        let pending: Vec<_> = std::mem::take(&mut *self.stragglers.lock());
        let _ = tokio::time::timeout(timeout, futures::future::join_all(pending)).await;
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether the song has no segments.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The session's per-source report.
    pub fn report(&self) -> &Arc<Report> {
        &self.report
    }

    /// Segments `from..` in order, each verified, with `read_ahead` in flight. The first
    /// segment is fetched alone, so that it gets all the bandwidth: it decides the time to
    /// first audio. The window opens once it is in.
    pub fn stream(
        self: &Arc<Self>,
        from: usize,
    ) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
        self.stream_with(from, self.opts.read_ahead)
    }

    /// Like [`Fetcher::stream`] with a window of `ahead` segments.
    pub fn stream_with(
        self: &Arc<Self>,
        from: usize,
        ahead: usize,
    ) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
        self.stream_range(from..self.segments.len(), ahead)
    }

    /// Segments `range` in order, each verified, with a window of `ahead` segments; the
    /// first is fetched alone (see [`Fetcher::stream`]).
    pub fn stream_range(
        self: &Arc<Self>,
        range: std::ops::Range<usize>,
        ahead: usize,
    ) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
        let me = self.clone();
        let from = range.start;
        let (first_done, first) = tokio::sync::watch::channel(false);
        let first_done = Arc::new(first_done);
        stream::iter(range.start..range.end.min(self.segments.len()))
            .map(move |i| {
                let me = me.clone();
                let mut first = first.clone();
                let first_done = first_done.clone();
                async move {
                    if i == from {
                        let r = me.segment_now(i).await;
                        let _ = first_done.send(true);
                        r
                    } else {
                        // A closed channel means the first fetch is gone: go ahead.
                        let _ = first.wait_for(|done| *done).await;
                        me.segment(i).await
                    }
                }
            })
            .buffered(ahead.max(1))
    }

    /// Segment `index`, verified: from the cache when it holds it, else whole from the best
    /// copy that answers, else rebuilt from shards (and then cached).
    pub async fn segment(&self, index: usize) -> Result<Bytes, ClientError> {
        self.fetch_segment(index, false).await
    }

    /// Segment `index` for a listener waiting on it now (the first of a play or a seek): a
    /// whole copy is given a quarter of the hedge delay, then the shards are asked too and
    /// the first verified wins, so that a slow copy costs little time to first audio and a
    /// fast one spares the durable tier.
    pub async fn segment_now(&self, index: usize) -> Result<Bytes, ClientError> {
        self.fetch_segment(index, true).await
    }

    async fn fetch_segment(&self, index: usize, urgent: bool) -> Result<Bytes, ClientError> {
        let entry = self
            .segments
            .get(index)
            .ok_or_else(|| ClientError::Rebuild {
                index,
                reason: "no such segment".into(),
            })?;
        if let Some(data) = self.cache.as_ref().and_then(|c| c.get(&entry.id)) {
            let mut d = self.report.delivery.lock();
            d.cache_segments += 1;
            d.cache_bytes += data.len() as u64;
            return Ok(data);
        }
        let whole = if urgent {
            self.whole_order(index).0
        } else {
            self.whole_order_after_probe(index).await
        };
        let seg = retrieve::Segment {
            entry: entry.clone(),
            whole: whole.iter().map(|w| (w.peer, w.addrs.clone())).collect(),
            slots: self.slot_order(index),
        };
        let policy = retrieve::Policy {
            extra: self.opts.extra_sources,
            hedge_after: Some(self.opts.hedge_after),
            // A listener waiting: the shards are asked too after a quarter of the hedge
            // delay (62 ms by default), long enough for a copy nearby to answer alone and
            // spare the durable tier, short enough that a slow one costs little.
            whole_patience: urgent.then_some(self.opts.hedge_after / 4),
            retry_lost: true,
            pace: None,
        };
        let events: Arc<dyn retrieve::Events> = Arc::new(Sink {
            report: self.report.clone(),
            reporter: self.reporter.clone(),
            index,
            listeners: whole
                .iter()
                .filter(|w| w.kind == SourceKind::Peer)
                .map(|w| w.peer)
                .collect(),
        });
        let got = retrieve::retrieve(&self.peer, &self.codec, &seg, &policy, &events)
            .await
            .map_err(|e| match e {
                RetrieveError::Unavailable {
                    have,
                    need,
                    reasons,
                } => ClientError::Unavailable {
                    index,
                    have,
                    needed: need,
                    reasons,
                },
                RetrieveError::Rebuild(reason) => ClientError::Rebuild { index, reason },
            })?;
        self.stragglers.lock().extend(got.stragglers);
        let data = Bytes::from(got.data);
        {
            let mut d = self.report.delivery.lock();
            let len = data.len() as u64;
            match got.origin {
                Origin::Whole(i) if whole.get(i).is_some_and(|w| w.kind == SourceKind::Hot) => {
                    d.hot_segments += 1;
                    d.hot_bytes += len;
                }
                Origin::Whole(_) => {
                    d.peer_segments += 1;
                    d.peer_bytes += len;
                }
                Origin::Rebuilt => {
                    d.rebuilt_segments += 1;
                    d.rebuilt_bytes += len;
                }
            }
        }
        if let Some(cache) = &self.cache {
            cache.insert(entry.id, data.clone());
        }
        Ok(data)
    }

    /// [`Fetcher::whole_order`], once the pending probe of the source first in line has
    /// ended: a segment that would go to shards only because a whole copy's first answer
    /// is still on its way waits for it instead (for at most four hedge delays a probe;
    /// such a segment is ahead of playback), so a copy that answers is used for the rest
    /// of the song.
    async fn whole_order_after_probe(&self, index: usize) -> Vec<WholeCopy> {
        // Each wake-up is a probe that ended, and each source is probed once at a time.
        for _ in 0..=self.whole.len() {
            // Registered before looking, so that a probe ending in between is not missed.
            let ended = self.report.probe_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let (order, waiting) = self.whole_order(index);
            if !order.is_empty() || !waiting {
                return order;
            }
            if tokio::time::timeout(self.opts.hedge_after * 4, ended)
                .await
                .is_err()
            {
                break;
            }
        }
        self.whole_order(index).0
    }

    /// The copies holding segment `index` to ask, best first: the fastest measured, those
    /// that failed this session last, those that lied or timed out never, one not yet
    /// proven only first and one request at a time. With it, whether the list is empty only
    /// because the source first in line has a probe pending.
    fn whole_order(&self, index: usize) -> (Vec<WholeCopy>, bool) {
        // Stable: untried sources keep the tracker's order and come before measured ones
        // only when those are slower. The keys are read once: other fetches update the
        // report while this one sorts, and a key that changes mid-sort is no order at all.
        let mut keyed: Vec<((bool, f64), &WholeCopy)> = self
            .whole
            .iter()
            .filter(|w| w.holds(index) && !self.report.unfit_for_whole(&w.peer))
            .map(|w| {
                let key = (
                    self.report.failed_before(&w.peer),
                    self.report.rtt_ms(&w.peer).unwrap_or(0.0),
                );
                (key, w)
            })
            .collect();
        keyed.sort_by(|(a, _), (b, _)| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        // A source not yet proven this session is asked only first in line (so the request
        // surely goes) and only when no other request to it is pending.
        let mut out = Vec::new();
        let mut waiting = false;
        for (_, w) in keyed {
            if self.report.proven(&w.peer) {
                out.push(w.clone());
            } else if out.is_empty() {
                if self.report.start_probe(w.peer) {
                    out.push(w.clone());
                } else {
                    waiting = true;
                }
            }
        }
        let waiting = waiting && out.is_empty();
        (out, waiting)
    }

    /// Segment `index`'s slots with a holder, in the order to ask: rotated by the segment
    /// ([`retrieve::balanced_rank`]), so every holder of a partition serves its share;
    /// sources that failed earlier this session or that the tracker knows are stopped last.
    fn slot_order(&self, index: usize) -> Vec<(usize, Vec<retrieve::Source>)> {
        let total = self.codec.total();
        let (Some(row), Some(entry)) = (self.holders.get(index), self.segments.get(index)) else {
            return Vec::new();
        };
        let mut slots: Vec<(usize, &Holder)> = row
            .iter()
            .enumerate()
            .filter_map(|(slot, h)| Some((slot, h.as_ref()?)))
            .collect();
        // Each key read once (sort_by_cached_key): the report changes under concurrent
        // fetches.
        slots.sort_by_cached_key(|&(slot, h)| {
            (
                !h.alive || self.report.failed_before(&h.peer),
                retrieve::balanced_rank(&entry.id, slot, total),
            )
        });
        slots
            .into_iter()
            .map(|(slot, h)| (slot, vec![(h.peer, h.addrs.clone())]))
            .collect()
    }
}

/// Records what each source of a segment did in the session's [`Report`], and tells the
/// tracker (once per source and reason): sources that lie or time out, and listeners that
/// served a verified segment (which confirms their announcement).
struct Sink {
    report: Arc<Report>,
    reporter: Option<(TrackerClient, SongId)>,
    index: usize,
    /// The whole-copy sources that are listeners, not nodes.
    listeners: Vec<PeerId>,
}

impl Sink {
    fn tell(&self, peer: PeerId, reason: ReportReason) {
        let Some((tracker, song)) = self.reporter.clone() else {
            return;
        };
        if !self.report.first_report(peer, reason) {
            return;
        }
        tokio::spawn(async move {
            let r = SourceReport {
                peer_id: peer.to_string(),
                song: song.to_string(),
                reason,
            };
            if let Err(e) = tracker.report_source(&r).await {
                tracing::debug!(error = %e, "cannot report the source");
            }
        });
    }
}

impl retrieve::Events for Sink {
    fn delivered(&self, peer: PeerId, piece: Piece, bytes: usize, took: Duration) {
        self.report.record(peer, |s| {
            s.bytes += bytes as u64;
            match piece {
                Piece::Whole => {
                    s.segments += 1;
                    s.measured(took);
                }
                Piece::Shard(_) => s.shards += 1,
            }
        });
        // Proven now: the probe ends after the record says so.
        if piece == Piece::Whole {
            self.report.end_probe(&peer);
        }
        if piece == Piece::Whole && self.listeners.contains(&peer) {
            self.tell(peer, ReportReason::Served);
        }
    }

    fn failed(&self, peer: PeerId, piece: Piece, e: &RequestError) {
        let index = self.index;
        tracing::debug!(%peer, ?piece, segment = index, error = %e, "source failed");
        let lied = matches!(e, RequestError::BadHash { .. });
        let late = matches!(e, RequestError::Timeout { .. });
        self.report.record(peer, |s| {
            if lied {
                s.bad_hashes += 1;
            } else {
                s.failures += 1;
            }
            if late {
                s.timeouts += 1;
            }
            s.last_error = Some(e.to_string());
        });
        if piece == Piece::Whole {
            self.report.end_probe(&peer);
        }
        if lied {
            tracing::warn!(%peer, ?piece, segment = index, "a source sent bytes that do not match their hash: dropped for this song");
            self.tell(peer, ReportReason::BadHash);
        } else if late {
            self.tell(peer, ReportReason::Timeout);
        }
    }
}
