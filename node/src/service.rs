//! Answers data-plane requests from the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use medley_daemon::RateLimiter;

use futures::future::BoxFuture;
use libp2p::PeerId;
use medley_core::protocol::{ErrorCode, MAX_BLOB_SIZE, Request, Response};
use medley_core::{GrantError, unix_now};
use medley_net::Handler;
use tracing::{debug, warn};

use tokio::sync::Notify;

use crate::stats::{MaintenanceStats, ServeStats};
use crate::store::{Store, StoreError, Tier};
use crate::tracker::TrackerKeyCell;

/// A byte rate per peer for what the node sends (`peer_bytes_per_sec`), so one peer that
/// asks without pause cannot take the node's bandwidth and CPU from the others; and one
/// rate that all heavy peers share (`heavy_peers_bytes_per_sec`), so many keys flooding at
/// once cannot either. A peer is light while it asks within a sixteenth of its rate (1 MiB/s
/// by default: several streams' worth) after a burst: a listener is never slowed by the
/// heavy ones. Peers idle for a while are forgotten.
///
/// The rates hold only while the node is shared: a peer that no other peer has asked
/// alongside for [`SHARED_WINDOW`] is sent what it asks at once (a download from an idle
/// node runs at line rate, as with any work-conserving scheduler), and held to its rate
/// from the moment another peer asks.
#[derive(Debug)]
pub(crate) struct PeerRates {
    rate: u64,
    peers: parking_lot::Mutex<std::collections::HashMap<PeerId, (Arc<PeerRate>, Instant)>>,
    heavy: RateLimiter,
    /// The two peers that asked last (distinct), newest first, and when.
    recent: parking_lot::Mutex<[Option<(PeerId, Instant)>; 2]>,
}

/// How long a peer's request keeps the node shared for the others: a listener asks for a
/// window of segments every few seconds, and while it does, a peer downloading without
/// pause is held to its rate.
const SHARED_WINDOW: Duration = Duration::from_secs(1);

/// One peer's rate, and its allowance as a light peer.
#[derive(Debug)]
struct PeerRate {
    own: RateLimiter,
    light: RateLimiter,
}

/// Peers remembered before idle ones are forgotten.
const MAX_RATED_PEERS: usize = 4096;

impl PeerRates {
    /// `bytes_per_sec` for each peer, `heavy_bytes_per_sec` for all heavy peers together
    /// (0: no limit).
    pub(crate) fn new(bytes_per_sec: u64, heavy_bytes_per_sec: u64) -> Self {
        let burst = Self::burst_of(bytes_per_sec);
        Self {
            rate: bytes_per_sec,
            peers: parking_lot::Mutex::default(),
            heavy: RateLimiter::with_burst(heavy_bytes_per_sec, burst),
            recent: parking_lot::Mutex::default(),
        }
    }

    /// Notes a request of `peer` (when it arrives, before it is served).
    pub(crate) fn seen(&self, peer: PeerId) {
        let now = Instant::now();
        let mut recent = self.recent.lock();
        match recent[0] {
            Some((p, _)) if p == peer => recent[0] = Some((peer, now)),
            _ => {
                recent[1] = recent[0];
                recent[0] = Some((peer, now));
            }
        }
    }

    /// Whether no peer but `peer` asked within [`SHARED_WINDOW`].
    fn alone(&self, peer: PeerId) -> bool {
        let now = Instant::now();
        self.recent
            .lock()
            .iter()
            .flatten()
            .all(|(p, at)| *p == peer || now.duration_since(*at) >= SHARED_WINDOW)
    }

    /// What a peer may take at once: an eighth of a second's worth, at least one segment
    /// (a cold start's first shards pass unslowed; a flood gets little ahead of the rate).
    fn burst_of(rate: u64) -> u64 {
        (rate / 8).max(u64::from(medley_core::DEFAULT_SEGMENT_SIZE))
    }

    /// Waits until `bytes` to `peer` fit in its rate.
    async fn send(&self, peer: PeerId, bytes: u64) {
        let wait = self.take(peer, bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `bytes` to `peer` from its rate and returns how long they must wait.
    fn take(&self, peer: PeerId, bytes: u64) -> Duration {
        // Alone, nothing is taken from its rate either: a peer that had the node to itself
        // does not start owing when another comes (it has a burst's worth, as anyone).
        if self.rate == 0 || self.alone(peer) {
            return Duration::ZERO;
        }
        let limiter = {
            let mut peers = self.peers.lock();
            let now = Instant::now();
            if peers.len() >= MAX_RATED_PEERS && !peers.contains_key(&peer) {
                peers.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(10));
            }
            let entry = peers.entry(peer).or_insert_with(|| {
                let burst = Self::burst_of(self.rate);
                let rate = PeerRate {
                    own: RateLimiter::with_burst(self.rate, burst),
                    light: RateLimiter::with_burst((self.rate / 16).max(1), burst),
                };
                (Arc::new(rate), now)
            });
            entry.1 = now;
            entry.0.clone()
        };
        // A light peer waits for its own rate only; a heavy one also takes its part of what
        // the heavy peers share, and waits for the later of the two.
        let own = limiter.own.take(bytes);
        if limiter.light.try_take(bytes) {
            own
        } else {
            own.max(self.heavy.take(bytes))
        }
    }
}

/// Serves shards and hot segments from a [`Store`]. Store calls block (RocksDB, fsync), so
/// each request runs on tokio's blocking pool.
#[derive(Debug, Clone)]
pub(crate) struct StoreService {
    /// This node's peer id, as grants name it.
    node: Arc<str>,
    grant_key: Arc<TrackerKeyCell>,
    rates: Arc<PeerRates>,
    store: Arc<Store>,
    stats: Arc<ServeStats>,
    maintenance: Arc<MaintenanceStats>,
    /// Woken when a corrupt shard was found and deleted, so repair rebuilds it.
    repair: Arc<Notify>,
}

impl StoreService {
    pub(crate) fn new(
        node: &PeerId,
        grant_key: Arc<TrackerKeyCell>,
        rates: Arc<PeerRates>,
        store: Arc<Store>,
        stats: Arc<ServeStats>,
        maintenance: Arc<MaintenanceStats>,
        repair: Arc<Notify>,
    ) -> Self {
        Self {
            node: node.to_string().into(),
            grant_key,
            rates,
            store,
            stats,
            maintenance,
            repair,
        }
    }
}

impl Handler for StoreService {
    fn handle(&self, from: PeerId, request: Request) -> BoxFuture<'static, Response> {
        let store = self.store.clone();
        let stats = self.stats.clone();
        let maintenance = self.maintenance.clone();
        let repair = self.repair.clone();
        let (node, grant_key) = (self.node.clone(), self.grant_key.get());
        let rates = self.rates.clone();
        Box::pin(async move {
            let kind = request.kind();
            rates.seen(from);
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            // A hot segment in memory (checked when it was read from disk) is served right
            // here: the hop to the blocking pool and back (≈ 50 µs on loopback) is saved.
            let in_memory = match &request {
                Request::GetSegment { id } => store.get_in_memory(Tier::Hot, id.0),
                _ => None,
            };
            let result = match in_memory {
                Some(data) => Ok((Response::Segment { data }, false)),
                None => {
                    tokio::task::spawn_blocking(move || {
                        if let Request::PutShard { id, grant, .. } = &request
                            && let Err(e) = grant_key
                                .ok_or(GrantError::NoKey)
                                .and_then(|key| grant.allows(&key, &node, id, unix_now()))
                        {
                            return (
                                Response::error(ErrorCode::FORBIDDEN, format!("shard {id}: {e}")),
                                false,
                            );
                        }
                        serve(&store, request)
                    })
                    .await
                }
            };
            stats
                .latency
                .get_or_create(&[("kind", kind)])
                .observe(started.elapsed().as_secs_f64());
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            match result {
                Ok((response, corrupt_deleted)) => {
                    if corrupt_deleted {
                        maintenance.scrub_bad.fetch_add(1, Ordering::Relaxed);
                        repair.notify_one();
                    }
                    if let Response::Shard { data } | Response::Segment { data } = &response {
                        rates.send(from, data.len() as u64).await;
                        stats
                            .bytes_served
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    if let Response::Error { code, message } = &response {
                        debug!(%from, kind, %code, message, "request refused");
                        stats.count(kind, "refused");
                    } else {
                        stats.count(kind, "ok");
                    }
                    response
                }
                Err(e) => {
                    stats.count(kind, "failed");
                    Response::error(ErrorCode::INTERNAL, format!("handler failed: {e}"))
                }
            }
        })
    }
}

/// Answers a request; the flag tells whether a corrupt shard was found and deleted.
fn serve(store: &Store, request: Request) -> (Response, bool) {
    // A shard read from the durable tier: sent whole, or (an audit) a range of it proved.
    let (id, audit) = match request {
        Request::GetShard { id } => (id, None),
        Request::Audit { id, start, len } => (id, Some((start, len))),
        other => return (serve_other(store, other), false),
    };
    match store.get(Tier::Durable, id.0) {
        Ok(Some(data)) => match audit {
            None => (Response::Shard { data }, false),
            // Proved from the copy just read back and checked against its id: proof of a
            // verified copy, not of an index entry.
            Some((start, len)) => match medley_core::audit::prove(&data, start, len) {
                Ok(slice) => (Response::Proof { slice }, false),
                Err(e) => (Response::error(ErrorCode::MALFORMED, e.to_string()), false),
            },
        },
        Ok(None) => (
            Response::error(ErrorCode::NOT_FOUND, format!("no shard {id}")),
            false,
        ),
        Err(e @ StoreError::Corrupt { .. }) => {
            // Never served; deleted so that repair rebuilds it from the other slots.
            let deleted = store
                .remove_if_corrupt(Tier::Durable, id.0)
                .unwrap_or(false);
            (store_error(e), deleted)
        }
        Err(e) => (store_error(e), false),
    }
}

fn serve_other(store: &Store, request: Request) -> Response {
    match request {
        Request::GetSegment { id } => match store.get(Tier::Hot, id.0) {
            Ok(Some(data)) => Response::Segment { data },
            Ok(None) => Response::error(ErrorCode::NOT_FOUND, format!("no segment {id}")),
            Err(e) => store_error(e),
        },
        Request::PutShard { id, data, .. } => {
            if data.len() > MAX_BLOB_SIZE {
                return Response::error(ErrorCode::TOO_LARGE, format!("{} byte shard", data.len()));
            }
            match store.put(Tier::Durable, id.0, &data) {
                Ok(_) => Response::Stored,
                Err(e) => store_error(e),
            }
        }
        Request::Has { ids } => {
            let mut present = Vec::with_capacity(ids.len());
            for id in ids {
                match store.contains(Tier::Durable, id.0) {
                    Ok(p) => present.push(p),
                    Err(e) => return store_error(e),
                }
            }
            Response::Has { present }
        }
        Request::GetShard { .. } | Request::Audit { .. } => {
            Response::error(ErrorCode::INTERNAL, "misrouted request")
        }
    }
}

fn store_error(e: StoreError) -> Response {
    let code = match &e {
        StoreError::HashMismatch { .. } => ErrorCode::BAD_HASH,
        StoreError::Full { .. } => ErrorCode::FULL,
        StoreError::TooLarge { .. } => ErrorCode::TOO_LARGE,
        StoreError::Corrupt { .. } => {
            // Never serve damaged bytes; the scrubber rebuilds them.
            warn!(error = %e, "corrupt value in store");
            ErrorCode::INTERNAL
        }
        StoreError::Open { .. } | StoreError::Format { .. } | StoreError::Db { .. } => {
            warn!(error = %e, "store failure");
            ErrorCode::INTERNAL
        }
    };
    Response::error(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_heavy_peers_share_one_rate_and_a_light_one_passes_at_once() {
        const MIB: u64 = 1 << 20;
        let rates = PeerRates::new(MIB, MIB);
        let heavy: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for p in &heavy {
            rates.seen(*p);
        }
        // Each takes its burst (a segment, 256 KiB) at once, as a light peer.
        for p in &heavy {
            assert_eq!(rates.take(*p, 256 * 1024), Duration::ZERO);
        }
        assert_eq!(
            rates.heavy.take(0),
            Duration::ZERO,
            "nothing taken from the shared rate"
        );
        // Then half a MiB more each: alone, each would wait half a second; together they
        // share 1 MiB/s, so the last waits about 2 MiB less the shared burst: 1.75 s.
        let waits: Vec<Duration> = heavy.iter().map(|p| rates.take(*p, MIB / 2)).collect();
        let last = waits.iter().max().copied().unwrap_or_default();
        assert!(last >= Duration::from_millis(1700), "{waits:?}");
        assert!(waits[0] >= Duration::from_millis(450), "{waits:?}");
        // A peer asking one shard passes at once, whatever the crowd.
        assert_eq!(rates.take(PeerId::random(), 64 * 1024), Duration::ZERO);

        // With no shared limit, each waits its own half second only.
        let rates = PeerRates::new(MIB, 0);
        for p in &heavy {
            rates.seen(*p);
        }
        for p in &heavy {
            rates.take(*p, 256 * 1024);
        }
        for p in &heavy {
            let w = rates.take(*p, MIB / 2);
            assert!(w < Duration::from_millis(550), "{w:?}");
        }
    }

    #[test]
    fn a_peer_alone_takes_the_node_and_is_held_to_its_rate_while_another_asks() {
        const MIB: u64 = 1 << 20;
        let rates = PeerRates::new(MIB, MIB);
        let (greedy, other) = (PeerId::random(), PeerId::random());
        rates.seen(greedy);
        // Alone: 8 MiB at once, nothing owed afterwards.
        for _ in 0..32 {
            assert_eq!(rates.take(greedy, 256 * 1024), Duration::ZERO);
        }
        // Another peer asks: past its burst, the greedy one waits for its rate...
        rates.seen(other);
        rates.seen(greedy);
        let waits: Vec<Duration> = (0..8).map(|_| rates.take(greedy, 256 * 1024)).collect();
        assert_eq!(waits[0], Duration::ZERO, "a burst's worth first: {waits:?}");
        assert!(waits[7] >= Duration::from_millis(1500), "{waits:?}");
        // ...and the other is not slowed.
        assert_eq!(rates.take(other, 64 * 1024), Duration::ZERO);
        // Once the other has been quiet for the window, the node is the greedy one's again.
        std::thread::sleep(SHARED_WINDOW + Duration::from_millis(50));
        rates.seen(greedy);
        assert_eq!(rates.take(greedy, 4 * MIB), Duration::ZERO);
    }
}
