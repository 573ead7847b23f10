//! The node's local admin endpoint (HTTP, loopback by default): `GET /status` for
//! `medley-node status` and `GET /metrics` for Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::stats::{MaintenanceStats, ServeStats, TrackerHealth};
use crate::store::Store;

/// What `GET /status` answers and `medley-node status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's peer id.
    pub peer_id: String,
    /// Data-plane addresses.
    pub listen: Vec<String>,
    /// Region.
    pub region: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Bytes the node may keep.
    pub capacity: u64,
    /// Bytes stored.
    pub used: u64,
    /// Durable shards held.
    pub shards: u64,
    /// Whole segments in the hot tier.
    #[serde(default)]
    pub hot_segments: u64,
    /// Peers connected over the data plane.
    #[serde(default)]
    pub peers: u64,
    /// Songs held whole in the hot tier.
    #[serde(default)]
    pub hot_songs: u64,
    /// Bytes of shards and segments served since start.
    pub bytes_served: u64,
    /// Data-plane requests being handled now.
    pub requests_in_flight: u64,
    /// Data-plane requests handled since start.
    pub requests: u64,
    /// Shards its slots call for that it lacks, as of the last repair pass.
    pub repair_backlog: u64,
    /// Shards rebuilt or copied since start.
    pub repaired: u64,
    /// Failed repairs since start.
    pub repair_failed: u64,
    /// Corrupt shards found and deleted since start.
    pub scrub_bad: u64,
    /// Bytes of durable shards held, as of the last repair pass.
    #[serde(default)]
    pub held_bytes: u64,
    /// Bytes of those a slot of this node calls for (a committed song's shards).
    #[serde(default)]
    pub referenced_bytes: u64,
    /// Bytes of shards no slot calls for, deleted when their grace period ends.
    #[serde(default)]
    pub gc_pending_bytes: u64,
    /// The tracker it reports to, if any.
    pub tracker: Option<String>,
    /// Seconds since the tracker last accepted a heartbeat; `None`: never.
    pub tracker_last_ok_secs: Option<u64>,
    /// Failed registrations and heartbeats since start.
    pub tracker_failures: u64,
    /// Why the last registration or heartbeat failed, until one succeeds.
    #[serde(default)]
    pub tracker_error: Option<String>,
    /// What the tracker says of this node's admission: admitted, pending (it holds no data
    /// until the operator approves it) or revoked; `None`: not registered yet.
    #[serde(default)]
    pub admission: Option<medley_api::Admission>,
    /// Why the tracker put this node out of the layout after failed audits, if it did.
    #[serde(default)]
    pub evicted: Option<String>,
    /// Background workers that panicked (`worker: message`); the node runs on without them
    /// and should be restarted.
    #[serde(default)]
    pub worker_panics: Vec<String>,
}

/// What the admin endpoint reads.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) peer_id: String,
    pub(crate) listen: Vec<String>,
    pub(crate) region: String,
    pub(crate) tracker: Option<String>,
    pub(crate) store: Arc<Store>,
    pub(crate) serve: Arc<ServeStats>,
    pub(crate) maintenance: Arc<MaintenanceStats>,
    pub(crate) health: Arc<TrackerHealth>,
    pub(crate) peer: medley_net::PeerHandle,
    pub(crate) hot: Option<Arc<crate::hot::HotTier>>,
    pub(crate) workers: Arc<crate::workers::WorkerHealth>,
    pub(crate) started: Instant,
}

impl Admin {
    async fn status(&self) -> NodeStatus {
        let m = &self.maintenance;
        let last_ok = self.health.last_ok_ms.load(Ordering::Relaxed);
        let now_ms = medley_core::unix_now_ms();
        NodeStatus {
            peer_id: self.peer_id.clone(),
            listen: self.listen.clone(),
            region: self.region.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            capacity: self.store.capacity(),
            used: self.store.used(),
            shards: self.store.shard_count(),
            hot_segments: self.store.hot_count(),
            peers: self.peer.connected_peers().await as u64,
            hot_songs: self.hot.as_ref().map_or(0, |h| h.songs().len() as u64),
            bytes_served: self.serve.bytes_served.load(Ordering::Relaxed),
            requests_in_flight: self.serve.in_flight.load(Ordering::Relaxed) as u64,
            requests: self.serve.requests.lock().values().sum(),
            repair_backlog: m.backlog.load(Ordering::Relaxed),
            repaired: m.done(),
            repair_failed: m.failed.load(Ordering::Relaxed),
            scrub_bad: m.scrub_bad.load(Ordering::Relaxed),
            held_bytes: m.gc_held_bytes.load(Ordering::Relaxed),
            referenced_bytes: m.gc_referenced_bytes.load(Ordering::Relaxed),
            gc_pending_bytes: m.gc_pending_bytes.load(Ordering::Relaxed),
            tracker: self.tracker.clone(),
            tracker_last_ok_secs: (last_ok > 0).then(|| now_ms.saturating_sub(last_ok) / 1000),
            tracker_failures: self.health.failures.load(Ordering::Relaxed),
            tracker_error: self.health.last_error(),
            admission: self.health.admission().map(|(a, _)| a),
            evicted: self.health.admission().and_then(|(_, e)| e),
            worker_panics: self
                .workers
                .panics()
                .into_iter()
                .map(|(worker, message)| format!("{worker}: {message}"))
                .collect(),
        }
    }

    /// The node's metrics (OpenMetrics text).
    async fn metrics(&self) -> String {
        let s = self.status().await;
        let mut m = medley_daemon::metrics::Scrape::default();
        m.gauge(
            "medley_node_capacity_bytes",
            "Bytes the node may keep.",
            s.capacity,
        );
        m.gauge("medley_node_store_used_bytes", "Bytes stored.", s.used);
        m.gauge(
            "medley_node_store_nearly_full",
            "1 when at least 90 % of the capacity is used: writes will soon be refused.",
            u64::from(self.store.nearly_full()),
        );
        m.gauge("medley_node_store_shards", "Durable shards held.", s.shards);
        m.gauge(
            "medley_node_hot_segments",
            "Whole segments held in the hot tier.",
            s.hot_segments,
        );
        m.gauge(
            "medley_node_hot_songs",
            "Songs held whole in the hot tier.",
            s.hot_songs,
        );
        if let Some(h) = &self.hot {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            m.counter(
                "medley_node_hot_fills_total",
                "Songs filled into the hot tier.",
                get(&h.stats.filled),
            );
            m.counter(
                "medley_node_hot_drops_total",
                "Songs dropped from the hot tier once they cooled.",
                get(&h.stats.dropped),
            );
            m.counter(
                "medley_node_hot_fill_failures_total",
                "Hot-tier fills that failed.",
                get(&h.stats.failures),
            );
            m.counters(
                "medley_node_hot_segments_filled_total",
                "Segments filled into the hot tier, by how: copied whole or rebuilt from shards.",
                [
                    ([("how", "copied")], get(&h.stats.copied_segments)),
                    ([("how", "rebuilt")], get(&h.stats.rebuilt_segments)),
                ],
            );
        }
        m.gauge(
            "medley_node_peers",
            "Peers connected over the data plane.",
            s.peers,
        );
        m.counter(
            "medley_node_served_bytes_total",
            "Bytes of shards and segments sent.",
            s.bytes_served,
        );
        m.gauge(
            "medley_node_requests_in_flight",
            "Data-plane requests being handled.",
            s.requests_in_flight,
        );
        m.gauge(
            "medley_node_repair_backlog_shards",
            "Shards the node's slots call for that it lacks.",
            s.repair_backlog,
        );
        m.counter(
            "medley_node_repaired_shards_total",
            "Shards rebuilt or copied by repair.",
            s.repaired,
        );
        m.counter(
            "medley_node_repair_failures_total",
            "Failed repairs.",
            s.repair_failed,
        );
        m.counter(
            "medley_node_repair_read_bytes_total",
            "Bytes read from other nodes by repair and handover.",
            self.maintenance.bytes_read.load(Ordering::Relaxed),
        );
        m.counters(
            "medley_node_handover_audits_total",
            "Audits of a new slot holder before a shard handed over to it is deleted here, by outcome.",
            [
                (
                    [("outcome", "passed")],
                    self.maintenance.handover_audits_passed.load(Ordering::Relaxed),
                ),
                (
                    [("outcome", "failed")],
                    self.maintenance.handover_audits_failed.load(Ordering::Relaxed),
                ),
            ],
        );
        m.gauge(
            "medley_node_referenced_bytes",
            "Bytes of durable shards a slot of this node calls for, as of the last repair pass.",
            s.referenced_bytes,
        );
        m.gauge(
            "medley_node_gc_pending_bytes",
            "Bytes of durable shards no slot calls for, deleted when their grace period ends.",
            s.gc_pending_bytes,
        );
        m.counter(
            "medley_node_gc_collected_bytes_total",
            "Bytes of unreferenced shards deleted.",
            self.maintenance.gc_collected_bytes.load(Ordering::Relaxed),
        );
        m.counter(
            "medley_node_scrub_corrupt_shards_total",
            "Corrupt shards found and deleted.",
            s.scrub_bad,
        );
        m.counter(
            "medley_node_worker_panics_total",
            "Background workers (repair, hot tier, heartbeats, scrubber) that panicked; the node should be restarted.",
            s.worker_panics.len() as u64,
        );
        m.counter(
            "medley_node_tracker_failures_total",
            "Failed registrations and heartbeats.",
            s.tracker_failures,
        );
        m.counters(
            "medley_node_requests_total",
            "Data-plane requests handled, by kind and outcome.",
            self.serve
                .requests
                .lock()
                .iter()
                .map(|(&(kind, outcome), &n)| ([("kind", kind), ("outcome", outcome)], n)),
        );
        m.histograms(
            "medley_node_request_duration_seconds",
            "Time to answer a data-plane request, by kind.",
            &self.serve.latency,
        );
        m.render()
    }
}

/// Binds the admin endpoint on `listen`; returns the bound address and the server, which
/// runs until `cancel`.
pub(crate) async fn bind(
    admin: Arc<Admin>,
    listen: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/status",
            get(|State(a): State<Arc<Admin>>| async move { axum::Json(a.status().await) }),
        )
        .route(
            "/metrics",
            get(|State(a): State<Arc<Admin>>| async move {
                (
                    [(header::CONTENT_TYPE, medley_daemon::metrics::CONTENT_TYPE)],
                    a.metrics().await,
                )
                    .into_response()
            }),
        )
        .with_state(admin);
    let server = async move {
        let stop = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, "admin endpoint failed");
        }
    };
    Ok((addr, server))
}
