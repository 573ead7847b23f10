//! Tells the tracker this node exists and how loaded it is: a registration at start (retried
//! until the tracker answers), then a heartbeat every interval. A heartbeat the tracker does
//! not recognise (it lost its registry, or this node is new to it) triggers a new
//! registration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use medley_core::api::RepairLoad;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::repair::MaintenanceStats;
use crate::store::Store;

/// Counters of what the data plane served, shared with the request handler.
#[derive(Debug)]
pub struct ServeStats {
    /// Bytes of shards and segments sent.
    pub bytes_served: AtomicU64,
    /// Requests being handled now.
    pub in_flight: AtomicUsize,
    /// Requests handled, by kind (`get_shard`, ...) and outcome (`ok`, `refused`, `failed`).
    pub requests: parking_lot::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Time to answer a request, by kind.
    pub latency: medley_daemon::metrics::Latencies<medley_daemon::metrics::Label>,
}

impl Default for ServeStats {
    fn default() -> Self {
        Self {
            bytes_served: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: parking_lot::Mutex::default(),
            latency: medley_daemon::metrics::latencies(),
        }
    }
}

impl ServeStats {
    /// Counts one request of `kind` with `outcome`.
    pub fn count(&self, kind: &'static str, outcome: &'static str) {
        *self.requests.lock().entry((kind, outcome)).or_default() += 1;
    }
}

/// What the node knows of its tracker: when it last answered, and the last failure.
#[derive(Debug, Default)]
pub struct TrackerHealth {
    /// Unix time in milliseconds of the last accepted registration or heartbeat; 0: never.
    pub last_ok_ms: AtomicU64,
    /// Failed registrations and heartbeats since start.
    pub failures: AtomicU64,
}

impl TrackerHealth {
    fn ok(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_ok_ms.store(now, Ordering::Relaxed);
    }

    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the node announces about itself.
#[derive(Debug, Clone)]
pub(crate) struct Announcement {
    pub(crate) tracker: String,
    pub(crate) peer_id: String,
    pub(crate) addrs: Vec<String>,
    pub(crate) region: String,
    pub(crate) interval: Duration,
    /// Set from the key the tracker gives at registration.
    pub(crate) grant_key: Arc<crate::service::GrantKey>,
    /// The node's identity, which signs what it tells the tracker.
    pub(crate) key: medley_net::Keypair,
}

/// Registers, then heartbeats until `cancel` fires.
pub(crate) async fn run(
    a: Announcement,
    store: Arc<Store>,
    stats: Arc<ServeStats>,
    maintenance: Arc<MaintenanceStats>,
    health: Arc<TrackerHealth>,
    hot: Option<Arc<crate::hot::HotTier>>,
    cancel: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build an HTTP client; not announcing to the tracker");
            return;
        }
    };
    let base = a.tracker.trim_end_matches('/').to_string();
    let mut registered = false;
    let mut backoff = Duration::from_millis(100);
    let mut last = (Instant::now(), stats.bytes_served.load(Ordering::Relaxed));
    loop {
        if !registered {
            let body = json!({
                "peer_id": a.peer_id,
                "addrs": a.addrs,
                "region": a.region,
                "capacity": store.capacity(),
            });
            match post(&http, &format!("{base}/v1/nodes/register"), &a.key, &body).await {
                Ok(resp) => {
                    learn_key(&a.grant_key, resp).await;
                    info!(tracker = %base, "registered with the tracker");
                    health.ok();
                    registered = true;
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    health.failed();
                    warn!(tracker = %base, error = %e, "registration failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(a.interval.max(Duration::from_secs(1)));
                    continue;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(a.interval) => {}
        }
        let now = (Instant::now(), stats.bytes_served.load(Ordering::Relaxed));
        let secs = now.0.duration_since(last.0).as_secs_f64().max(0.001);
        let bytes_per_sec = ((now.1.saturating_sub(last.1)) as f64 / secs) as u64;
        last = now;
        let body = json!({
            "peer_id": a.peer_id,
            "hot": hot.as_ref().map(|h| h.songs()),
            "hot_free": hot.as_ref().map(|h| h.free()),
            "free": store.capacity().saturating_sub(store.used()),
            "bytes_per_sec": bytes_per_sec,
            "transfers": stats.in_flight.load(Ordering::Relaxed) as u32,
            "used": store.used(),
            "shards": store.shard_count(),
            "repair": RepairLoad {
                backlog: maintenance.backlog.load(Ordering::Relaxed),
                done: maintenance.done(),
                failed: maintenance.failed.load(Ordering::Relaxed),
                scrub_bad: maintenance.scrub_bad.load(Ordering::Relaxed),
                handed_over: maintenance.handed_over.load(Ordering::Relaxed),
                bytes_read: maintenance.bytes_read.load(Ordering::Relaxed),
            },
        });
        match post(&http, &format!("{base}/v1/nodes/heartbeat"), &a.key, &body).await {
            Ok(_) => {
                health.ok();
                debug!("heartbeat sent");
            }
            Err(HttpError::Status(404)) => {
                info!("the tracker does not know this node; registering again");
                registered = false;
            }
            Err(e) => {
                health.failed();
                warn!(tracker = %base, error = %e, "heartbeat failed");
            }
        }
    }
}

/// Takes the tracker's grant key from its answer to a registration.
async fn learn_key(known: &crate::service::GrantKey, resp: reqwest::Response) {
    #[derive(serde::Deserialize)]
    struct Registered {
        tracker_key: Option<medley_core::TrackerId>,
    }
    match resp.json::<Registered>().await {
        Ok(Registered {
            tracker_key: Some(key),
        }) => {
            if let Err(configured) = known.learn(key) {
                warn!(
                    %configured, given = %key,
                    "the tracker's key is not the configured tracker_key; \
                     uploads are accepted only under grants signed by the configured key"
                );
            }
        }
        Ok(Registered { tracker_key: None }) => {
            warn!("the tracker gave no grant key; uploads are refused until one is known");
        }
        Err(e) => warn!(error = %e, "unreadable registration answer"),
    }
}

/// Tells the tracker this node is stopping, so it stops offering it as a source before the
/// heartbeats run out. Best effort within `timeout`: a tracker that does not answer learns
/// it from the missing heartbeats.
pub(crate) async fn leave(tracker: &str, key: &medley_net::Keypair, timeout: Duration) {
    let peer_id = key.public().to_peer_id().to_string();
    let http = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build an HTTP client; not telling the tracker");
            return;
        }
    };
    let url = format!("{}/v1/nodes/leave", tracker.trim_end_matches('/'));
    match post(&http, &url, key, &json!({ "peer_id": peer_id })).await {
        Ok(_) => info!(tracker, "told the tracker this node is stopping"),
        Err(e) => warn!(tracker, error = %e, "could not tell the tracker this node is stopping"),
    }
}

#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("the tracker answered {0}")]
    Status(u16),
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    key: &medley_net::Keypair,
    body: &serde_json::Value,
) -> Result<reqwest::Response, HttpError> {
    let resp = medley_net::signed::post_json(http, url, key, body)
        .send()
        .await?;
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(HttpError::Status(resp.status().as_u16()))
    }
}
