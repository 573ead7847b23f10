//! The HTTP/JSON API, versioned under `/v1`, with the shapes of [`medley_api`]. Handlers only
//! translate: they read a request, call the state, and answer with its result or an
//! [`ApiError`] (`{"error": {"code": "...", "message": "..."}}`); a refused request changes
//! nothing.
//!
//! - `extract`: request bodies (signed or not), queries and ids.
//! - `middleware`: counting, rate and time limits, signing answers nodes act on.
//! - `catalog`, `nodes`, `admin`: the handlers.
//! - `metrics`: the HTTP layer's counters and `GET /metrics`.

mod admin;
mod catalog;
mod error;
mod extract;
mod metrics;
mod middleware;
mod nodes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use medley_api::ErrorCode;
use medley_api::signed::ReplayGuard;

pub use error::ApiError;

use crate::error::StateError;
use crate::state::State;

/// Shared by all handlers.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) state: State,
    metrics: metrics::HttpMetrics,
    /// Signatures of recent signed requests, to refuse replays.
    replays: parking_lot::Mutex<ReplayGuard>,
    /// Requests per second per client address (`rate_limit_per_sec`); None: no limit.
    pub(crate) limiter: Option<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// What the storage audits found.
    pub(crate) audits: crate::audit::AuditStats,
}

impl App {
    pub(crate) fn new(state: State) -> Self {
        let c = state.config();
        let limiter = std::num::NonZeroU32::new(c.rate_limit_per_sec).map(|rate| {
            let burst = std::num::NonZeroU32::new(c.rate_limit_burst).unwrap_or(rate);
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            state,
            metrics: metrics::HttpMetrics::default(),
            replays: parking_lot::Mutex::new(ReplayGuard::new(1 << 20)),
            audits: crate::audit::AuditStats::default(),
        }
    }
}

type Shared = Arc<App>;

/// Runs `f` on the blocking pool: the state's storage calls block.
async fn blocking<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&State) -> Result<T, StateError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app.state))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// Runs `f` on the blocking pool with a flag that is set when the request is given up (its
/// time limit passed, or its client left), so that a long walk stops with it.
async fn cancellable<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&State, &std::sync::atomic::AtomicBool) -> Result<T, StateError> + Send + 'static,
) -> Result<T, ApiError> {
    /// Sets the flag when dropped: when the handler's future is.
    struct Cancel(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Cancel {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _cancel = Cancel(flag.clone());
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app.state, &flag))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// The router.
pub(crate) fn router(app: Shared) -> Router {
    let limit = app.state.config().max_body_bytes;
    Router::new()
        .route("/v1/publish", post(catalog::publish))
        .route("/v1/publish/grants", post(catalog::publish_grants))
        .route("/v1/search", get(catalog::search))
        .route("/v1/songs/{id}", get(catalog::song))
        .route("/v1/songs/{id}/manifest", get(catalog::manifest))
        .route("/v1/songs/{id}/sources", get(catalog::sources))
        .route("/v1/browse/artists", get(catalog::artists))
        .route("/v1/browse/random", get(catalog::random_songs))
        .route("/v1/browse/songs", get(catalog::browse_songs))
        .route("/v1/plays", post(catalog::play))
        .route("/v1/peers/announce", post(catalog::announce_peer))
        .route("/v1/reports", post(catalog::report_source))
        .route("/v1/popularity", get(catalog::popularity))
        .route("/v1/nodes", get(nodes::nodes))
        .route("/v1/nodes/register", post(nodes::register))
        .route("/v1/nodes/heartbeat", post(nodes::heartbeat))
        .route("/v1/nodes/leave", post(nodes::leave))
        .route("/v1/stats", get(nodes::stats))
        .route("/v1/nodes/{id}/drain", post(admin::drain))
        .route("/v1/nodes/{id}/undrain", post(admin::undrain))
        .route("/v1/nodes/invites", post(admin::invite))
        .route("/v1/nodes/{id}/approve", post(admin::approve))
        .route("/v1/nodes/{id}/revoke", post(admin::revoke))
        .route(
            "/v1/publishers",
            get(admin::publishers).post(admin::add_publisher),
        )
        .route("/v1/publishers/{key}", delete(admin::remove_publisher))
        .route("/v1/layout/preview", get(admin::layout_preview))
        .route("/metrics", get(metrics::metrics))
        .merge(
            // What nodes act on (repair, handover, hot copies) comes signed by the tracker.
            Router::new()
                .route("/v1/nodes/{id}/hot", get(nodes::hot_orders))
                .route("/v1/layout", get(nodes::layout))
                .route(
                    "/v1/partitions/{p}/segments",
                    get(nodes::partition_segments),
                )
                .route_layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    middleware::sign_response,
                )),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NoRoute,
                "no such endpoint",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::time_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::count,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}
