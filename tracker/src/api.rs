//! The HTTP/JSON API, versioned under `/v1`. Every error is a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a 4xx or 5xx status; a refused request
//! changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medley_core::{ManifestError, SongId};
use serde::Serialize;
use serde_json::json;

use crate::state::{Heartbeat, Registration, State, StateError};

/// Shared by all handlers.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) state: State,
    requests_ok: AtomicU64,
    requests_client_error: AtomicU64,
    requests_server_error: AtomicU64,
}

impl App {
    pub(crate) fn new(state: State) -> Self {
        Self {
            state,
            requests_ok: AtomicU64::new(0),
            requests_client_error: AtomicU64::new(0),
            requests_server_error: AtomicU64::new(0),
        }
    }
}

type Shared = Arc<App>;

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response()
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            StateError::Manifest(ManifestError::TooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            StateError::Manifest(
                ManifestError::BadSignature(_) | ManifestError::BadPublisherKey(_),
            ) => (StatusCode::BAD_REQUEST, "bad_signature"),
            StateError::Manifest(_) => (StatusCode::BAD_REQUEST, "invalid_manifest"),
            StateError::UnknownPublisher(_) => (StatusCode::FORBIDDEN, "unknown_publisher"),
            StateError::Coding { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_coding"),
            StateError::UnknownSong(_) => (StatusCode::NOT_FOUND, "unknown_song"),
            StateError::UnknownNode(_) => (StatusCode::NOT_FOUND, "unknown_node"),
            StateError::BadRegistration(_) => (StatusCode::BAD_REQUEST, "bad_registration"),
            StateError::NoLayout(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_layout"),
            StateError::Search(crate::search::SearchError::BadQuery(_)) => {
                (StatusCode::BAD_REQUEST, "bad_query")
            }
            StateError::Db(_) | StateError::Search(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Self::new(status, code, message)
    }
}

/// A request body that could not be read: 413 `too_large` past the body limit, else
/// `other` with the extractor's status.
fn body_rejection(status: StatusCode, text: String, other: &'static str) -> ApiError {
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        other
    };
    ApiError::new(status, code, text)
}

fn json_rejection(r: JsonRejection) -> ApiError {
    body_rejection(r.status(), r.body_text(), "malformed_json")
}

fn bytes_rejection(r: BytesRejection) -> ApiError {
    body_rejection(r.status(), r.body_text(), "bad_body")
}

fn song_id(text: &str) -> Result<SongId, ApiError> {
    text.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_id",
            format!("song id {text:?}: {e}"),
        )
    })
}

async fn blocking<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&State) -> Result<T, StateError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app.state))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

/// The router.
pub(crate) fn router(app: Shared) -> Router {
    let limit = app.state.config().max_body_bytes;
    Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/search", get(search))
        .route("/v1/songs/{id}", get(song))
        .route("/v1/songs/{id}/manifest", get(manifest))
        .route("/v1/songs/{id}/sources", get(sources))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/register", post(register))
        .route("/v1/nodes/heartbeat", post(heartbeat))
        .route("/v1/layout", get(layout))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), count))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn count(
    AxState(app): AxState<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let res = next.run(req).await;
    let counter = match res.status().as_u16() {
        500.. => &app.requests_server_error,
        400.. => &app.requests_client_error,
        _ => &app.requests_ok,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    res
}

async fn publish(
    AxState(app): AxState<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(bytes_rejection)?;
    let committed = blocking(&app, move |s| s.publish(&body)).await?;
    let status = if committed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(committed)).into_response())
}

/// A song as the API shows it.
#[derive(Debug, Serialize)]
pub struct SongView {
    id: String,
    #[serde(flatten)]
    meta: medley_core::SongMeta,
    size: u64,
    segments: usize,
    segment_size: u32,
    k: u8,
    m: u8,
    publisher: String,
}

impl SongView {
    pub(crate) fn of(m: &medley_core::Manifest) -> Self {
        let b = m.body();
        Self {
            id: m.id().to_string(),
            meta: b.meta.clone(),
            size: b.total_size,
            segments: b.segments.len(),
            segment_size: b.segment_size,
            k: b.k,
            m: b.m,
            publisher: b.publisher.to_string(),
        }
    }
}

async fn search(
    AxState(app): AxState<Shared>,
    query: Result<Query<crate::search::SearchQuery>, QueryRejection>,
) -> Result<Json<crate::search::SearchResults>, ApiError> {
    let Query(q) =
        query.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text()))?;
    Ok(Json(blocking(&app, move |s| s.search(&q)).await?))
}

async fn song(
    AxState(app): AxState<Shared>,
    Path(id): Path<String>,
) -> Result<Json<SongView>, ApiError> {
    let id = song_id(&id)?;
    let m = blocking(&app, move |s| s.manifest(id)).await?;
    Ok(Json(SongView::of(&m)))
}

async fn manifest(
    AxState(app): AxState<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = song_id(&id)?;
    let m = blocking(&app, move |s| s.manifest(id)).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        m.encoded().to_vec(),
    )
        .into_response())
}

async fn sources(
    AxState(app): AxState<Shared>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = song_id(&id)?;
    let (m, layout, addrs) = blocking(&app, move |s| {
        Ok((s.manifest(id)?, s.layout()?, s.addresses()))
    })
    .await?;
    let segments: Vec<_> = m
        .body()
        .segments
        .iter()
        .enumerate()
        .map(|(index, seg)| {
            let holders = layout.holders(&seg.id);
            let shards: Vec<_> = seg
                .shards
                .iter()
                .enumerate()
                .map(|(slot, shard)| {
                    let peer = holders.get(slot);
                    json!({
                        "slot": slot,
                        "shard": shard.to_string(),
                        "peer_id": peer,
                        "addrs": peer.and_then(|p| addrs.get(p)).cloned().unwrap_or_default(),
                    })
                })
                .collect();
            json!({ "index": index, "id": seg.id.to_string(), "len": seg.len, "shards": shards })
        })
        .collect();
    Ok(Json(
        json!({ "song": id.to_string(), "layout_version": layout.version, "segments": segments }),
    ))
}

async fn nodes(AxState(app): AxState<Shared>) -> Json<serde_json::Value> {
    let nodes: Vec<_> = app
        .state
        .nodes()
        .into_iter()
        .map(|(rec, alive)| json!({ "node": rec, "alive": alive }))
        .collect();
    Json(json!({ "nodes": nodes }))
}

async fn register(
    AxState(app): AxState<Shared>,
    body: Result<Json<Registration>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(reg) = body.map_err(json_rejection)?;
    let version = blocking(&app, move |s| s.register(reg)).await?;
    Ok(Json(json!({ "layout_version": version })))
}

async fn heartbeat(
    AxState(app): AxState<Shared>,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(hb) = body.map_err(json_rejection)?;
    app.state.heartbeat(hb)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn layout(AxState(app): AxState<Shared>) -> Result<Json<medley_core::Layout>, ApiError> {
    // The one endpoint that sends the whole layout; everything else shares the Arc.
    Ok(Json(app.state.layout()?.as_ref().clone()))
}

async fn stats(AxState(app): AxState<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let songs = app.state.song_count();
    let nodes = app.state.nodes();
    let alive = nodes.iter().filter(|(_, a)| *a).count();
    Ok(Json(json!({
        "songs": songs,
        "nodes": nodes.len(),
        "nodes_alive": alive,
        "layout_version": app.state.layout_version(),
        "partitions": app.state.config().partitions,
        "k": app.state.config().k,
        "m": app.state.config().m,
    })))
}

async fn metrics(AxState(app): AxState<Shared>) -> Result<Response, ApiError> {
    let songs = app.state.song_count();
    let nodes = app.state.nodes();
    let alive = nodes.iter().filter(|(_, a)| *a).count();
    let version = app.state.layout_version().unwrap_or(0);
    let body = format!(
        "# HELP medley_tracker_songs Songs in the catalogue.\n\
         # TYPE medley_tracker_songs gauge\nmedley_tracker_songs {songs}\n\
         # HELP medley_tracker_nodes Registered storage nodes.\n\
         # TYPE medley_tracker_nodes gauge\nmedley_tracker_nodes {}\n\
         # HELP medley_tracker_nodes_alive Nodes heard from within the grace period.\n\
         # TYPE medley_tracker_nodes_alive gauge\nmedley_tracker_nodes_alive {alive}\n\
         # HELP medley_tracker_layout_version Current layout version (0: none yet).\n\
         # TYPE medley_tracker_layout_version gauge\nmedley_tracker_layout_version {version}\n\
         # HELP medley_tracker_http_requests_total HTTP requests answered, by outcome.\n\
         # TYPE medley_tracker_http_requests_total counter\n\
         medley_tracker_http_requests_total{{outcome=\"ok\"}} {}\n\
         medley_tracker_http_requests_total{{outcome=\"client_error\"}} {}\n\
         medley_tracker_http_requests_total{{outcome=\"server_error\"}} {}\n",
        nodes.len(),
        app.requests_ok.load(Ordering::Relaxed),
        app.requests_client_error.load(Ordering::Relaxed),
        app.requests_server_error.load(Ordering::Relaxed),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
