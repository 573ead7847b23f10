//! The node's local admin endpoint (HTTP, loopback by default): `GET /status` for
//! `medley-node status` and `GET /metrics` for Prometheus.

use std::fmt::Write as _;
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

use crate::announce::{ServeStats, TrackerHealth};
use crate::repair::MaintenanceStats;
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
    /// The tracker it reports to, if any.
    pub tracker: Option<String>,
    /// Seconds since the tracker last accepted a heartbeat; `None`: never.
    pub tracker_last_ok_secs: Option<u64>,
    /// Failed registrations and heartbeats since start.
    pub tracker_failures: u64,
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
    pub(crate) started: Instant,
}

impl Admin {
    fn status(&self) -> NodeStatus {
        let m = &self.maintenance;
        let last_ok = self.health.last_ok_ms.load(Ordering::Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        NodeStatus {
            peer_id: self.peer_id.clone(),
            listen: self.listen.clone(),
            region: self.region.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            capacity: self.store.capacity(),
            used: self.store.used(),
            shards: self.store.shard_count(),
            bytes_served: self.serve.bytes_served.load(Ordering::Relaxed),
            requests_in_flight: self.serve.in_flight.load(Ordering::Relaxed) as u64,
            requests: self.serve.requests.lock().values().sum(),
            repair_backlog: m.backlog.load(Ordering::Relaxed),
            repaired: m.done(),
            repair_failed: m.failed.load(Ordering::Relaxed),
            scrub_bad: m.scrub_bad.load(Ordering::Relaxed),
            tracker: self.tracker.clone(),
            tracker_last_ok_secs: (last_ok > 0).then(|| now_ms.saturating_sub(last_ok) / 1000),
            tracker_failures: self.health.failures.load(Ordering::Relaxed),
        }
    }

    /// Prometheus text exposition of the node's counters.
    fn metrics(&self) -> String {
        let s = self.status();
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "medley_node_capacity_bytes",
            "gauge",
            "Bytes the node may keep.",
            s.capacity,
        );
        one(
            "medley_node_store_used_bytes",
            "gauge",
            "Bytes stored.",
            s.used,
        );
        one(
            "medley_node_store_nearly_full",
            "gauge",
            "1 when at least 90 % of the capacity is used: writes will soon be refused.",
            u64::from(self.store.nearly_full()),
        );
        one(
            "medley_node_store_shards",
            "gauge",
            "Durable shards held.",
            s.shards,
        );
        one(
            "medley_node_served_bytes_total",
            "counter",
            "Bytes of shards and segments sent.",
            s.bytes_served,
        );
        one(
            "medley_node_requests_in_flight",
            "gauge",
            "Data-plane requests being handled.",
            s.requests_in_flight,
        );
        one(
            "medley_node_repair_backlog_shards",
            "gauge",
            "Shards the node's slots call for that it lacks.",
            s.repair_backlog,
        );
        one(
            "medley_node_repaired_shards_total",
            "counter",
            "Shards rebuilt or copied by repair.",
            s.repaired,
        );
        one(
            "medley_node_repair_failures_total",
            "counter",
            "Failed repairs.",
            s.repair_failed,
        );
        one(
            "medley_node_repair_read_bytes_total",
            "counter",
            "Bytes read from other nodes by repair and handover.",
            self.maintenance.bytes_read.load(Ordering::Relaxed),
        );
        one(
            "medley_node_scrub_corrupt_shards_total",
            "counter",
            "Corrupt shards found and deleted.",
            s.scrub_bad,
        );
        one(
            "medley_node_tracker_failures_total",
            "counter",
            "Failed registrations and heartbeats.",
            s.tracker_failures,
        );
        let _ = writeln!(
            out,
            "# HELP medley_node_requests_total Data-plane requests handled, by kind and outcome.\n\
             # TYPE medley_node_requests_total counter"
        );
        for ((kind, outcome), n) in self.serve.requests.lock().iter() {
            let _ = writeln!(
                out,
                "medley_node_requests_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out
    }
}

/// Serves the admin endpoint on `listen` until `cancel`; returns the bound address.
pub(crate) async fn serve(
    admin: Arc<Admin>,
    listen: SocketAddr,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/status",
            get(|State(a): State<Arc<Admin>>| async move { axum::Json(a.status()) }),
        )
        .route(
            "/metrics",
            get(|State(a): State<Arc<Admin>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    a.metrics(),
                )
                    .into_response()
            }),
        )
        .with_state(admin);
    tokio::spawn(async move {
        let stop = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, "admin endpoint failed");
        }
    });
    Ok(addr)
}
