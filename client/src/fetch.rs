//! Fetching a song's segments from its shard holders.
//!
//! For each segment the fetcher asks `k + extra` slot holders at once, takes the first `k`
//! shards whose hashes check out, rebuilds the segment and checks it against its
//! [`SegmentId`](medley_core::SegmentId). A source that fails is replaced by the next untried
//! slot; when a segment is still short after the hedge delay, one more source is asked.
//! Sources that failed earlier in the session are asked last. Segments are fetched in
//! playback order with a window of `read_ahead` segments in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::{Stream, stream};
use medley_core::{Codec, Manifest, SegmentEntry};
use medley_net::{PeerHandle, PeerId, RequestError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::cache::SegmentStore;
use crate::error::ClientError;
use crate::tracker::{Holder, SourceKind, TrackerClient, WholeCopy};
use bytes::Bytes;
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

    fn lied(&self, peer: &PeerId) -> bool {
        self.sources
            .lock()
            .get(peer)
            .is_some_and(|s| s.bad_hashes > 0)
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

    /// Keeps the requests of `in_flight` running after their segment is complete.
    fn keep_stragglers<T: Send + 'static>(
        &self,
        in_flight: FuturesUnordered<tokio::task::JoinHandle<T>>,
    ) {
        if in_flight.is_empty() {
            return;
        }
        let rest = tokio::spawn(async move {
            in_flight.for_each(|_| async {}).await;
        });
        self.stragglers.lock().push(rest);
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
                        let r = me.segment(i).await;
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
        let cached = self
            .segments
            .get(index)
            .and_then(|e| self.cache.as_ref().and_then(|c| c.get(&e.id)));
        if let Some(data) = cached {
            let mut d = self.report.delivery.lock();
            d.cache_segments += 1;
            d.cache_bytes += data.len() as u64;
            return Ok(data);
        }
        let data = match self.from_whole(index).await {
            Some((data, kind)) => {
                let data = Bytes::from(data);
                let mut d = self.report.delivery.lock();
                match kind {
                    SourceKind::Peer => {
                        d.peer_segments += 1;
                        d.peer_bytes += data.len() as u64;
                    }
                    SourceKind::Hot => {
                        d.hot_segments += 1;
                        d.hot_bytes += data.len() as u64;
                    }
                }
                data
            }
            None => {
                let data = Bytes::from(self.rebuild(index).await?);
                let mut d = self.report.delivery.lock();
                d.rebuilt_segments += 1;
                d.rebuilt_bytes += data.len() as u64;
                data
            }
        };
        if let (Some(cache), Some(entry)) = (&self.cache, self.segments.get(index)) {
            cache.insert(entry.id, data.clone());
        }
        Ok(data)
    }

    /// Segment `index` whole from the holders of whole copies: the best first (fastest
    /// measured, those that failed this session last, liars never), the next one too when
    /// no answer came within the hedge delay. `None` when none delivered.
    async fn from_whole(&self, index: usize) -> Option<(Vec<u8>, SourceKind)> {
        let entry = self.segments.get(index)?;
        let order: Vec<&WholeCopy> = self
            .whole
            .iter()
            .filter(|w| !self.report.lied(&w.peer))
            .collect();
        if order.is_empty() {
            return None;
        }
        // Stable: untried sources keep the tracker's order and come before measured ones
        // only when those are slower. The keys are read once: other fetches update the
        // report while this one sorts, and a key that changes mid-sort is no order at all.
        let mut keyed: Vec<((bool, f64), &WholeCopy)> = order
            .into_iter()
            .map(|w| {
                let key = (
                    self.report.failed_before(&w.peer),
                    self.report.rtt_ms(&w.peer).unwrap_or(0.0),
                );
                (key, w)
            })
            .collect();
        keyed.sort_by(|(a, _), (b, _)| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let order: Vec<&WholeCopy> = keyed.into_iter().map(|(_, w)| w).collect();
        let mut untried = order.into_iter();
        let mut in_flight = FuturesUnordered::new();
        let launch = |w: &WholeCopy, in_flight: &mut FuturesUnordered<_>| {
            let (peer, w) = (self.peer.clone(), w.clone());
            let (report, id) = (self.report.clone(), entry.id);
            let reporter = self.reporter.clone();
            in_flight.push(tokio::spawn(async move {
                let started = std::time::Instant::now();
                let r = peer.get_segment(w.peer, w.addrs.clone(), id).await;
                match &r {
                    Ok(data) => report.record(w.peer, |s| {
                        s.segments += 1;
                        s.bytes += data.len() as u64;
                        s.measured(started.elapsed());
                    }),
                    Err(e) => {
                        let bad_hash = matches!(e, RequestError::BadHash { .. });
                        tracing::debug!(peer = %w.peer, segment = index, error = %e, "whole copy failed");
                        report.record(w.peer, |s| {
                            if bad_hash {
                                s.bad_hashes += 1;
                            } else {
                                s.failures += 1;
                            }
                            s.last_error = Some(e.to_string());
                        });
                        if bad_hash {
                            tracing::warn!(peer = %w.peer, segment = index, "a source sent bytes that do not match their hash: dropped for this song");
                            if let Some((tracker, song)) = reporter {
                                if let Err(e) = tracker.report_source(&w.peer, song, "bad_hash").await {
                                    tracing::debug!(error = %e, "cannot report the source");
                                }
                            }
                        }
                    }
                }
                (w.kind, r.ok())
            }));
        };
        launch(untried.next()?, &mut in_flight);
        let hedge = tokio::time::sleep(self.opts.hedge_after);
        tokio::pin!(hedge);
        loop {
            tokio::select! {
                next = in_flight.next() => {
                    match next {
                        Some(Ok((kind, Some(data)))) => {
                            self.keep_stragglers(in_flight);
                            return Some((data, kind));
                        }
                        Some(_) => match untried.next() {
                            Some(w) => launch(w, &mut in_flight),
                            None if in_flight.is_empty() => return None,
                            None => {}
                        },
                        None => return None,
                    }
                }
                () = &mut hedge => {
                    if let Some(w) = untried.next() {
                        launch(w, &mut in_flight);
                    }
                    hedge.as_mut().reset(tokio::time::Instant::now() + self.opts.hedge_after);
                }
            }
        }
    }

    /// Fetches, rebuilds and verifies segment `index`.
    async fn rebuild(&self, index: usize) -> Result<Vec<u8>, ClientError> {
        let entry = self
            .segments
            .get(index)
            .ok_or_else(|| ClientError::Rebuild {
                index,
                reason: "no such segment".into(),
            })?;
        let k = usize::from(self.codec.k());
        let total = self.codec.total();
        let row = self.holders.get(index);
        // Slots with a holder, data slots first (no decoding needed when they all arrive),
        // sources that failed earlier this session or that the tracker knows are stopped
        // last.
        let mut order: Vec<usize> = (0..total)
            .filter(|&s| row.and_then(|r| r.get(s)).is_some_and(Option::is_some))
            .collect();
        // Each key read once (sort_by_cached_key): the report changes under concurrent fetches.
        order.sort_by_cached_key(|&s| {
            let h = row.and_then(|r| r[s].as_ref());
            (
                h.is_some_and(|h| !h.alive || self.report.failed_before(&h.peer)),
                s >= k,
                s,
            )
        });
        let mut untried = order.into_iter();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
        let mut have = 0;
        let mut reasons = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        // Each request runs in its own task, so that one still in flight when the segment is
        // complete finishes and is recorded in the report (a slow or lying source is still
        // found out) instead of being dropped.
        let launch = |slot: usize, in_flight: &mut FuturesUnordered<_>| {
            let Some(h) = row.and_then(|r| r[slot].clone()) else {
                return;
            };
            let id = entry.shards[slot];
            let peer = self.peer.clone();
            let report = self.report.clone();
            let reporter = self.reporter.clone();
            in_flight.push(tokio::spawn(async move {
                let r = peer.get_shard(h.peer, h.addrs, id).await;
                if let (Err(RequestError::BadHash { .. }), Some((tracker, song))) = (&r, &reporter) {
                    tracing::warn!(peer = %h.peer, slot, segment = index, "a node sent a shard that does not match its hash");
                    if let Err(e) = tracker.report_source(&h.peer, *song, "bad_hash").await {
                        tracing::debug!(error = %e, "cannot report the source");
                    }
                }
                match &r {
                    Ok(data) => report.record(h.peer, |s| {
                        s.shards += 1;
                        s.bytes += data.len() as u64;
                    }),
                    Err(e) => {
                        tracing::debug!(peer = %h.peer, slot, segment = index, error = %e, "shard source failed");
                        let bad_hash = matches!(e, RequestError::BadHash { .. });
                        report.record(h.peer, |s| {
                            if bad_hash {
                                s.bad_hashes += 1;
                            } else {
                                s.failures += 1;
                            }
                            s.last_error = Some(e.to_string());
                        });
                    }
                }
                (slot, h.peer, r)
            }));
        };
        for slot in untried.by_ref().take(k + self.opts.extra_sources) {
            launch(slot, &mut in_flight);
        }
        let hedge = tokio::time::sleep(self.opts.hedge_after);
        tokio::pin!(hedge);
        let mut can_hedge = true;
        // Sources that failed on the network (a dropped connection, a dial that did not
        // go through) are asked once more when nothing else is left: a connection lost
        // under load is not a dead node.
        let mut lost: Vec<usize> = Vec::new();
        let mut retried = false;
        while have < k {
            tokio::select! {
                next = in_flight.next() => {
                    let Some(joined) = next else { break };
                    let (slot, peer, result) = match joined {
                        Ok(t) => t,
                        Err(e) => {
                            reasons.push(format!("a request task failed: {e}"));
                            if let Some(next) = untried.next() {
                                launch(next, &mut in_flight);
                            }
                            continue;
                        }
                    };
                    match result {
                        Ok(data) => {
                            shards[slot] = Some(data);
                            have += 1;
                        }
                        Err(e) => {
                            if matches!(e, RequestError::Network { .. }) {
                                lost.push(slot);
                            }
                            reasons.push(format!("slot {slot} on {peer}: {e}"));
                            if let Some(next) = untried.next() {
                                launch(next, &mut in_flight);
                            } else if in_flight.is_empty() && !retried {
                                retried = true;
                                for slot in lost.drain(..) {
                                    launch(slot, &mut in_flight);
                                }
                            }
                        }
                    }
                }
                () = &mut hedge, if can_hedge => {
                    match untried.next() {
                        Some(next) => {
                            launch(next, &mut in_flight);
                            hedge.as_mut().reset(tokio::time::Instant::now() + self.opts.hedge_after);
                        }
                        None => can_hedge = false,
                    }
                }
            }
        }
        if have < k {
            let missing = total - order_len(row);
            if missing > 0 {
                reasons.push(format!("{missing} slots have no node"));
            }
            return Err(ClientError::Unavailable {
                index,
                have,
                needed: k,
                reasons: reasons.join("; "),
            });
        }
        self.keep_stragglers(in_flight);
        self.codec
            .reconstruct_verified(&shards, entry.len as usize, entry.id)
            .map_err(|e| ClientError::Rebuild {
                index,
                reason: e.to_string(),
            })
    }
}

fn order_len(row: Option<&Vec<Option<Holder>>>) -> usize {
    row.map_or(0, |r| r.iter().filter(|h| h.is_some()).count())
}
