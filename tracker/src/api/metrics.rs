//! The HTTP layer's counters and `GET /metrics`, in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use medley_api::Delivered;
use medley_daemon::metrics::{Latencies, Scrape};

use super::Shared;

/// Counters of the HTTP layer.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    /// Requests answered with 1xx to 3xx.
    pub(crate) ok: AtomicU64,
    /// Requests answered with 4xx.
    pub(crate) client_error: AtomicU64,
    /// Requests answered with 5xx.
    pub(crate) server_error: AtomicU64,
    /// Time to answer, by route (the pattern, e.g. `/v1/songs/{id}`).
    pub(crate) latency: Latencies<[(&'static str, String); 1]>,
    /// Bytes clients reported per source class: own cache, peers, hot nodes, rebuilt.
    delivered: [AtomicU64; 4],
}

/// Source classes of [`HttpMetrics::delivered`], in order.
const DELIVERY_CLASSES: [&str; 4] = ["cache", "peer", "hot", "rebuilt"];

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            ok: AtomicU64::new(0),
            client_error: AtomicU64::new(0),
            server_error: AtomicU64::new(0),
            latency: medley_daemon::metrics::latencies(),
            delivered: Default::default(),
        }
    }
}

impl HttpMetrics {
    /// Adds one play's bytes per class.
    pub(crate) fn delivered(&self, d: &medley_api::DeliveryReport) {
        let classes = [d.cache_bytes, d.peer_bytes, d.hot_bytes, d.rebuilt_bytes];
        for (counter, bytes) in self.delivered.iter().zip(classes) {
            counter.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The bytes reported so far.
    pub(crate) fn delivered_totals(&self) -> Delivered {
        let [cache, peer, hot, rebuilt] =
            self.delivered.each_ref().map(|n| n.load(Ordering::Relaxed));
        Delivered {
            cache,
            peer,
            hot,
            rebuilt,
        }
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(app): State<Shared>) -> Response {
    let songs = app.state.catalog().song_count();
    let t = app.state.node_totals();
    let version = app.state.layout_version().unwrap_or(0);
    let mut m = Scrape::default();
    m.gauge("medley_tracker_songs", "Songs in the catalogue.", songs);
    m.gauge(
        "medley_tracker_nodes",
        "Registered storage nodes.",
        t.nodes as u64,
    );
    m.gauge(
        "medley_tracker_nodes_alive",
        "Nodes heard from within the grace period and not stopped.",
        t.alive as u64,
    );
    m.gauge(
        "medley_tracker_nodes_draining",
        "Nodes handing their shards over before leaving.",
        t.draining as u64,
    );
    m.gauge(
        "medley_tracker_nodes_pending",
        "Nodes registered without the operator's consent: never placed.",
        t.pending as u64,
    );
    m.gauge(
        "medley_tracker_nodes_evicted",
        "Nodes put out of the layout after failing audits.",
        t.evicted as u64,
    );
    m.gauge(
        "medley_tracker_layout_oldest_version",
        "Oldest layout version kept: slots moved since may not be settled (0: none).",
        app.state.layout_oldest().unwrap_or(0),
    );
    let a = &app.audits;
    m.counters(
        "medley_tracker_audits_total",
        "Storage audits of nodes, by outcome: passed, failed (no proof or a refusal), timeout (no answer in time).",
        [
            ("passed", &a.passed),
            ("failed", &a.failed),
            ("timeout", &a.timeouts),
        ]
        .map(|(outcome, n)| ([("outcome", outcome)], n.load(Ordering::Relaxed))),
    );
    m.counter(
        "medley_tracker_audit_bytes_total",
        "Bytes of audit answers received.",
        a.bytes.load(Ordering::Relaxed),
    );
    m.gauge(
        "medley_tracker_repair_backlog",
        "Shards live nodes lack on their slots, as of their last pass.",
        t.repair.backlog,
    );
    m.gauge(
        "medley_tracker_repair_done",
        "Shards rebuilt or copied by live nodes since they started.",
        t.repair.done,
    );
    m.gauge(
        "medley_tracker_repair_failed",
        "Failed repair attempts of live nodes since they started.",
        t.repair.failed,
    );
    m.gauge(
        "medley_tracker_scrub_bad_shards",
        "Corrupt shards live nodes' scrubbers deleted since they started.",
        t.repair.scrub_bad,
    );
    m.gauge(
        "medley_tracker_layout_version",
        "Current layout version (0: none yet).",
        version,
    );
    let [peers, songs, failures, liars, ids] = app.state.soft_state_sizes();
    for (name, help, n) in [
        (
            "medley_tracker_announcing_peers",
            "Listeners with a live announcement (at most 100000).",
            peers,
        ),
        (
            "medley_tracker_announced_songs",
            "Songs some listener announces.",
            songs,
        ),
        (
            "medley_tracker_reported_sources",
            "Known sources with recent failures reported.",
            failures,
        ),
        (
            "medley_tracker_accused_sources",
            "Known sources with recent reports of wrong bytes.",
            liars,
        ),
        (
            "medley_tracker_known_identities",
            "Signing keys whose history is kept, for weighing their reports (at most 200000).",
            ids,
        ),
    ] {
        m.gauge(name, help, n as u64);
    }
    let h = &app.metrics;
    m.counters(
        "medley_tracker_http_requests_total",
        "HTTP requests answered, by outcome.",
        [
            ("ok", &h.ok),
            ("client_error", &h.client_error),
            ("server_error", &h.server_error),
        ]
        .map(|(outcome, n)| ([("outcome", outcome)], n.load(Ordering::Relaxed))),
    );
    m.counters(
        "medley_tracker_delivered_bytes_total",
        "Bytes of plays clients reported, by where they came from: own cache, other listeners (peer), hot nodes, rebuilt from shards.",
        DELIVERY_CLASSES
            .iter()
            .zip(&h.delivered)
            .map(|(class, n)| ([("source", *class)], n.load(Ordering::Relaxed))),
    );
    m.histograms(
        "medley_tracker_http_request_duration_seconds",
        "Time to answer an HTTP request, by route.",
        &h.latency,
    );
    (
        [(header::CONTENT_TYPE, medley_daemon::metrics::CONTENT_TYPE)],
        m.render(),
    )
        .into_response()
}
