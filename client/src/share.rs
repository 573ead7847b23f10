//! The listener as a peer: it serves the segments of its disk cache to other listeners over
//! the data plane, and tells the tracker which songs it holds whole and which segments it
//! holds of songs it is still fetching.
//!
//! Only `get segment` is served, only from the cache, and every segment is re-hashed as it
//! is read (the cache does that), so a listener never passes on bytes that are not what was
//! asked for. Uploads are capped in bytes per second, and the data plane answers requests
//! beyond `serve_max_peers` at once with `busy`, so a listener's own playback keeps its
//! bandwidth.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use medley_core::protocol::{ErrorCode, Request, Response};
use medley_daemon::RateLimiter;
use medley_net::{CancellationToken, Handler, PeerHandle, PeerId};

use crate::cache::SegmentStore;
use crate::disk_cache::DiskCache;
use medley_api::{PeerAnnouncement, TrackerClient};

/// Counters of what a listener served.
#[derive(Debug, Default)]
pub struct ShareStats {
    /// Segments sent to other listeners.
    pub segments: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Requests for segments it did not hold.
    pub missing: AtomicU64,
}

/// Serves the disk cache.
#[derive(Debug)]
pub(crate) struct CacheService {
    pub(crate) cache: Arc<DiskCache>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) stats: Arc<ShareStats>,
}

impl Handler for CacheService {
    fn handle(&self, from: PeerId, request: Request) -> BoxFuture<'static, Response> {
        let (cache, limiter, stats) =
            (self.cache.clone(), self.limiter.clone(), self.stats.clone());
        Box::pin(async move {
            let Request::GetSegment { id } = request else {
                return Response::error(
                    ErrorCode::UNSUPPORTED,
                    "a listener serves only whole segments of its cache",
                );
            };
            let found = tokio::task::spawn_blocking(move || cache.get(&id))
                .await
                .ok()
                .flatten();
            match found {
                Some(data) => {
                    limiter.acquire(data.len() as u64).await;
                    stats.segments.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    tracing::debug!(%from, segment = %id, "served a segment to a listener");
                    Response::Segment {
                        data: data.to_vec(),
                    }
                }
                None => {
                    stats.missing.fetch_add(1, Ordering::Relaxed);
                    Response::error(ErrorCode::NOT_FOUND, format!("no segment {id}"))
                }
            }
        })
    }
}

/// Least time between two announcements: segments arriving one after another are told in
/// one announcement a second at most.
const MIN_GAP: Duration = Duration::from_secs(1);
/// How long a change waits for the ones right behind it: a fetch window's segments arrive
/// within milliseconds of each other, and one announcement should carry them all (a
/// have-map of the first segment alone would send the crowd behind to the shards for the
/// rest until the next announcement).
const SETTLE: Duration = Duration::from_millis(200);

/// Announces what the cache holds to serve: the songs held whole, and the segments held of
/// songs being fetched (have-maps). Every `every` (to renew it), and within [`MIN_GAP`] of a
/// change: a segment arriving (so a flash crowd's later members find the earlier ones'
/// first segments while they still play) or `played` firing; until `cancel`, then
/// withdraws it.
pub(crate) async fn announce(
    tracker: TrackerClient,
    peer: PeerHandle,
    cache: Arc<DiskCache>,
    region: String,
    every: Duration,
    played: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    type Said = (Vec<medley_core::SongId>, Vec<medley_api::PartialCopy>);
    let mut last: Option<Said> = None;
    let mut renew_at = tokio::time::Instant::now();
    let mut last_sent: Option<tokio::time::Instant> = None;
    loop {
        let (songs, partial) = cache.holdings();
        let nothing = songs.is_empty() && partial.is_empty();
        let said_nothing = last
            .as_ref()
            .is_none_or(|(s, p)| s.is_empty() && p.is_empty());
        let changed = last
            .as_ref()
            .is_none_or(|(s, p)| *s != songs || *p != partial);
        let due = tokio::time::Instant::now() >= renew_at;
        // Nothing to say until there is something; then when it changes or is due again.
        if !(nothing && said_nothing) && (changed || due) {
            let addrs = addresses(&peer).await;
            if addrs.is_empty() {
                tracing::debug!("no listen address yet: not announcing");
            } else {
                let a = PeerAnnouncement {
                    peer_id: peer.peer_id().to_string(),
                    addrs,
                    region: region.clone(),
                    songs: songs.clone(),
                    partial: partial.clone(),
                };
                last_sent = Some(tokio::time::Instant::now());
                match tracker.announce(&a).await {
                    Ok(()) => {
                        last = Some((songs, partial));
                        renew_at = tokio::time::Instant::now() + every;
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot announce the cache"),
                }
            }
        }
        let woken_by_change = tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(renew_at.max(tokio::time::Instant::now() + MIN_GAP)) => false,
            () = played.notified() => true,
            () = cache.added().notified() => true,
        };
        // A change waits for those right behind it, and there is at most one announcement
        // per MIN_GAP, however fast segments arrive.
        let mut not_before = tokio::time::Instant::now();
        if woken_by_change {
            not_before += SETTLE;
        }
        if let Some(at) = last_sent {
            not_before = not_before.max(at + MIN_GAP);
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(not_before) => {}
        }
    }
    if last
        .as_ref()
        .is_some_and(|(s, p)| !s.is_empty() || !p.is_empty())
    {
        let addrs = addresses(&peer).await;
        if !addrs.is_empty() {
            let a = PeerAnnouncement {
                peer_id: peer.peer_id().to_string(),
                addrs,
                region,
                songs: Vec::new(),
                partial: Vec::new(),
            };
            let _ = tracker.announce(&a).await;
        }
    }
}

async fn addresses(peer: &PeerHandle) -> Vec<String> {
    peer.listen_addrs()
        .await
        .iter()
        .map(ToString::to_string)
        .collect()
}
