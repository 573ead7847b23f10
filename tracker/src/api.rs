//! The HTTP/JSON API, versioned under `/v1`. Every error is a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a 4xx or 5xx status; a refused request
//! changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use medley_core::{ManifestError, SongId};
use serde::Serialize;
use serde_json::json;

use medley_core::api::RepairLoad;
use medley_net::signed::{
    PEER_HEADER, ReplayGuard, RequestSignature, SIGNATURE_HEADER, SignatureError, TIME_HEADER,
    verify_request,
};

use crate::state::{Heartbeat, Registration, State, StateError};

/// Shared by all handlers.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) state: State,
    requests_ok: AtomicU64,
    requests_client_error: AtomicU64,
    requests_server_error: AtomicU64,
    /// Time to answer, by route (the pattern, e.g. `/v1/songs/{id}`).
    latency: medley_daemon::metrics::Latencies<[(&'static str, String); 1]>,
    /// Bytes clients reported per source class: own cache, peers, hot nodes, rebuilt.
    delivered: [AtomicU64; 4],
    /// Signatures of recent signed requests, to refuse replays.
    replays: parking_lot::Mutex<ReplayGuard>,
    /// Requests per second per client address (`rate_limit_per_sec`); None: no limit.
    pub(crate) limiter: Option<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
}

/// Source classes of [`App::delivered`], in order.
const DELIVERY_CLASSES: [&str; 4] = ["cache", "peer", "hot", "rebuilt"];

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
            requests_ok: AtomicU64::new(0),
            requests_client_error: AtomicU64::new(0),
            requests_server_error: AtomicU64::new(0),
            latency: medley_daemon::metrics::latencies(),
            delivered: Default::default(),
            replays: parking_lot::Mutex::new(ReplayGuard::new(1 << 20)),
        }
    }
}

/// A JSON body and, when the request was signed ([`medley_net::signed`]), the peer that
/// signed it. Unsigned requests are refused when `require_signatures` is on; a signature
/// that is present is always checked.
pub(crate) struct Signed<T> {
    signer: Option<String>,
    body: T,
}

impl<T> Signed<T> {
    /// The body, once the signer is the peer it names (when signed or required).
    fn from_peer(self, peer_id: &str) -> Result<T, ApiError> {
        match &self.signer {
            Some(s) if s != peer_id => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_signer",
                format!("signed by {s}, but the request is about {peer_id}"),
            )),
            _ => Ok(self.body),
        }
    }
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> Self {
        let (status, code) = match &e {
            SignatureError::Missing(_) => (StatusCode::UNAUTHORIZED, "unsigned"),
            SignatureError::Replayed => (StatusCode::CONFLICT, "replayed"),
            SignatureError::Stale { .. } => (StatusCode::UNAUTHORIZED, "stale_request"),
            SignatureError::BadPeer(_) | SignatureError::BadSignature(_) => {
                (StatusCode::UNAUTHORIZED, "bad_request_signature")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<Shared> for Signed<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, app: &Shared) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "malformed_json",
                "expected a body with content type application/json",
            ));
        }
        let bytes =
            Bytes::from_request(axum::extract::Request::from_parts(parts.clone(), body), app)
                .await
                .map_err(bytes_rejection)?;
        let header = |name: &'static str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let signer = match (
            header(PEER_HEADER),
            header(TIME_HEADER),
            header(SIGNATURE_HEADER),
        ) {
            (None, None, None) if !app.state.config().require_signatures => None,
            (peer, time, signature) => {
                let sig = RequestSignature {
                    peer: peer.ok_or(SignatureError::Missing(PEER_HEADER))?,
                    time_ms: time
                        .ok_or(SignatureError::Missing(TIME_HEADER))?
                        .parse()
                        .map_err(|_| {
                            ApiError::new(
                                StatusCode::UNAUTHORIZED,
                                "stale_request",
                                format!("{TIME_HEADER} is not a number of milliseconds"),
                            )
                        })?,
                    signature: signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?,
                };
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let now = crate::state::now_ms();
                let peer = verify_request(&sig, parts.method.as_str(), path, &bytes, now)?;
                app.replays.lock().check(&sig, now)?;
                Some(peer.to_string())
            }
        };
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the JSON body is invalid: {e}"),
            )
        })?;
        Ok(Self { signer, body })
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
            StateError::BadPlay(_) => (StatusCode::BAD_REQUEST, "bad_play"),
            StateError::NoLayout(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_layout"),
            StateError::UnknownLayout(_) => (StatusCode::NOT_FOUND, "unknown_layout"),
            StateError::UnknownPartition { .. } => (StatusCode::NOT_FOUND, "unknown_partition"),
            StateError::CannotDrain { .. } => (StatusCode::CONFLICT, "cannot_drain"),
            StateError::Search(crate::search::SearchError::BadQuery(_)) => {
                (StatusCode::BAD_REQUEST, "bad_query")
            }
            StateError::Db(_) | StateError::Search(_) | StateError::Key(_) => {
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
        .route("/v1/publish/grants", post(publish_grants))
        .route("/v1/search", get(search))
        .route("/v1/songs/{id}", get(song))
        .route("/v1/songs/{id}/manifest", get(manifest))
        .route("/v1/songs/{id}/sources", get(sources))
        .route("/v1/browse/artists", get(artists))
        .route("/v1/browse/random", get(random_songs))
        .route("/v1/browse/songs", get(browse_songs))
        .route("/v1/plays", post(play))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/register", post(register))
        .route("/v1/nodes/heartbeat", post(heartbeat))
        .route("/v1/nodes/leave", post(leave))
        .route("/v1/peers/announce", post(announce_peer))
        .route("/v1/reports", post(report_source))
        .route("/v1/popularity", get(popularity))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/nodes/{id}/undrain", post(undrain))
        .route("/v1/publishers", get(publishers).post(add_publisher))
        .route("/v1/publishers/{key}", delete(remove_publisher))
        .route("/v1/layout/preview", get(layout_preview))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .merge(
            // What nodes act on (repair, handover, hot copies) comes signed by the tracker.
            Router::new()
                .route("/v1/nodes/{id}/hot", get(hot_orders))
                .route("/v1/layout", get(layout))
                .route("/v1/partitions/{p}/segments", get(partition_segments))
                .route_layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    sign_response,
                )),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            time_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(app.clone(), count))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn count(
    AxState(app): AxState<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The route pattern, not the path: ids would make a series per song.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    app.latency
        .get_or_create(&[("route", route)])
        .observe(started.elapsed().as_secs_f64());
    let counter = match res.status().as_u16() {
        500.. => &app.requests_server_error,
        400.. => &app.requests_client_error,
        _ => &app.requests_ok,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    res
}

/// Signs a successful answer with the tracker's key, over its path, time and body (see
/// [`medley_core::TrackerId::verify_statement`]), in `x-medley-tracker-time` and
/// `x-medley-tracker-signature`.
async fn sign_response(
    AxState(app): AxState<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let res = next.run(req).await;
    if !res.status().is_success() {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                .into_response();
        }
    };
    let time = crate::state::now_ms();
    let signature = app
        .state
        .sign_statement(&medley_core::api::signed_answer(&path, time, &bytes));
    for (name, value) in [
        (medley_core::api::ANSWER_TIME_HEADER, time.to_string()),
        (
            medley_core::api::ANSWER_SIGNATURE_HEADER,
            hex::encode(signature),
        ),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            parts.headers.insert(name, v);
        }
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Ends a request that takes longer than `request_timeout_secs`, reading its body included,
/// with `408 timeout`: a client that sends slowly cannot hold a connection and a task.
async fn time_limit(
    AxState(app): AxState<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = std::time::Duration::from_secs(app.state.config().request_timeout_secs);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Refuses a request with `429 rate_limited` and `Retry-After` when its client address is
/// over `rate_limit_per_sec` (bursts up to `rate_limit_burst`); other clients are unaffected.
async fn rate_limit(
    AxState(app): AxState<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let (Some(limiter), Some(ip)) = (&app.limiter, client)
        && let Err(not_until) = limiter.check_key(&ip)
    {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut res = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from {ip}; retry in {secs} s"),
        )
        .into_response();
        if let Ok(v) = header::HeaderValue::from_str(&secs.max(1).to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
    }
    next.run(req).await
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

/// Grants to upload a song's shards: the body is the signed manifest, as for a publish.
async fn publish_grants(
    AxState(app): AxState<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<medley_core::api::PublishGrants>, ApiError> {
    let body = body.map_err(bytes_rejection)?;
    Ok(Json(blocking(&app, move |s| s.grants(&body)).await?))
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
    /// Plays reported, in all.
    plays: u64,
    /// Plays reported, per region.
    plays_by_region: std::collections::BTreeMap<String, u64>,
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
            plays: 0,
            plays_by_region: std::collections::BTreeMap::new(),
        }
    }
}

async fn search(
    AxState(app): AxState<Shared>,
    query: Result<Query<crate::search::SearchQuery>, QueryRejection>,
) -> Result<Json<crate::search::SearchResults>, ApiError> {
    let Query(q) = query.map_err(|r| bad_query(&r))?;
    Ok(Json(blocking(&app, move |s| s.search(&q)).await?))
}

async fn song(
    AxState(app): AxState<Shared>,
    Path(id): Path<String>,
) -> Result<Json<SongView>, ApiError> {
    let id = song_id(&id)?;
    let (m, plays) = blocking(&app, move |s| Ok((s.manifest(id)?, s.plays(id)?))).await?;
    let mut view = SongView::of(&m);
    view.plays = plays.values().sum();
    view.plays_by_region = plays;
    Ok(Json(view))
}

fn bad_query(r: &QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtistsQuery {
    #[serde(default)]
    after: String,
    limit: Option<usize>,
}

async fn artists(
    AxState(app): AxState<Shared>,
    query: Result<Query<ArtistsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|r| bad_query(&r))?;
    let limit = q.limit.unwrap_or(100);
    let after = q.after.to_lowercase();
    let artists = blocking(&app, move |s| s.artists(&after, limit)).await?;
    // A full page may have more after it; the cursor is the last key.
    let next = (artists.len() == limit)
        .then(|| artists.last().map(|a| a.key.clone()))
        .flatten();
    Ok(Json(json!({ "artists": artists, "next": next })))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomQuery {
    size: Option<usize>,
    genre: Option<String>,
}

async fn random_songs(
    AxState(app): AxState<Shared>,
    query: Result<Query<RandomQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|r| bad_query(&r))?;
    let size = q.size.unwrap_or(10);
    let songs = blocking(&app, move |s| s.random_songs(size, q.genre.as_deref())).await?;
    Ok(Json(json!({ "songs": songs })))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SongsQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn browse_songs(
    AxState(app): AxState<Shared>,
    query: Result<Query<SongsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|r| bad_query(&r))?;
    let limit = q.limit.unwrap_or(100);
    let (songs, total) = blocking(&app, move |s| {
        Ok((s.songs_page(q.offset, limit)?, s.song_count()))
    })
    .await?;
    Ok(Json(
        json!({ "total": total, "offset": q.offset, "songs": songs }),
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayReport {
    song: String,
    region: String,
    /// Where the play's bytes came from, as the client saw it.
    #[serde(default)]
    delivery: Option<DeliveryReport>,
}

/// Bytes of one play by source class.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryReport {
    #[serde(default)]
    cache_bytes: u64,
    #[serde(default)]
    peer_bytes: u64,
    #[serde(default)]
    hot_bytes: u64,
    #[serde(default)]
    rebuilt_bytes: u64,
}

/// Largest byte count one play may report per class: 16 GiB, far above any song.
const MAX_PLAY_BYTES: u64 = 16 << 30;

async fn play(
    AxState(app): AxState<Shared>,
    body: Result<Json<PlayReport>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(report) = body.map_err(json_rejection)?;
    let id = song_id(&report.song)?;
    let d = report.delivery.unwrap_or_default();
    let classes = [d.cache_bytes, d.peer_bytes, d.hot_bytes, d.rebuilt_bytes];
    if classes.iter().any(|&b| b > MAX_PLAY_BYTES) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_play",
            "a play reports at most 16 GiB per source class",
        ));
    }
    let plays = blocking(&app, move |s| s.record_play(id, &report.region)).await?;
    for (counter, bytes) in app.delivered.iter().zip(classes) {
        counter.fetch_add(bytes, Ordering::Relaxed);
    }
    Ok(Json(
        json!({ "song": id.to_string(), "plays_in_region": plays }),
    ))
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

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesQuery {
    /// The asking client's region: whole copies there are ranked first.
    region: Option<String>,
}

async fn sources(
    AxState(app): AxState<Shared>,
    Path(id): Path<String>,
    query: Result<Query<SourcesQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = song_id(&id)?;
    let Query(q) = query.map_err(|r| bad_query(&r))?;
    let (m, layout, addrs, whole, banned) = blocking(&app, move |s| {
        let addrs = s.addresses();
        let banned: std::collections::HashSet<String> =
            addrs.keys().filter(|n| s.banned(n)).cloned().collect();
        Ok((
            s.manifest(id)?,
            s.layout()?,
            addrs,
            s.whole_sources(id, q.region.as_deref()),
            banned,
        ))
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
                    let (addrs, alive) =
                        peer.and_then(|p| addrs.get(p)).cloned().unwrap_or_default();
                    let banned = peer.is_some_and(|p| banned.contains(p));
                    json!({
                        "slot": slot,
                        "shard": shard.to_string(),
                        "peer_id": peer,
                        "addrs": addrs,
                        "alive": alive && !banned,
                        "banned": banned,
                    })
                })
                .collect();
            json!({ "index": index, "id": seg.id.to_string(), "len": seg.len, "shards": shards })
        })
        .collect();
    Ok(Json(json!({
        "song": id.to_string(),
        "layout_version": layout.version,
        "whole": whole,
        "segments": segments,
    })))
}

async fn hot_orders(
    AxState(app): AxState<Shared>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let songs = app.state.hot_orders(&id)?;
    Ok(Json(json!({ "node": id, "songs": songs })))
}

async fn popularity(AxState(app): AxState<Shared>) -> Json<serde_json::Value> {
    Json(json!({ "hot": app.state.hot_songs() }))
}

async fn announce_peer(
    AxState(app): AxState<Shared>,
    body: Signed<crate::PeerAnnouncement>,
) -> Result<StatusCode, ApiError> {
    let peer_id = body.body.peer_id.clone();
    let a = body.from_peer(&peer_id)?;
    app.state.announce_peer(a)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceReport {
    peer_id: String,
    song: String,
    reason: String,
}

async fn report_source(
    AxState(app): AxState<Shared>,
    body: Signed<SourceReport>,
) -> Result<StatusCode, ApiError> {
    let Signed { signer, body: r } = body;
    song_id(&r.song)?;
    if !matches!(r.reason.as_str(), "bad_hash" | "failed") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_report",
            format!("reason {:?}: expected bad_hash or failed", r.reason),
        ));
    }
    tracing::info!(source = %r.peer_id, song = %r.song, reason = %r.reason, reporter = ?signer, "a client reports a source");
    app.state
        .report_source(&r.peer_id, signer.as_deref(), r.reason == "bad_hash")?;
    Ok(StatusCode::NO_CONTENT)
}

async fn nodes(AxState(app): AxState<Shared>) -> Json<serde_json::Value> {
    let nodes: Vec<_> = app
        .state
        .nodes()
        .into_iter()
        .map(|(rec, alive)| {
            let banned = app.state.banned(&rec.registration.peer_id);
            json!({ "node": rec, "alive": alive, "banned": banned })
        })
        .collect();
    Json(json!({ "nodes": nodes }))
}

async fn register(
    AxState(app): AxState<Shared>,
    body: Signed<Registration>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let peer_id = body.body.peer_id.clone();
    let reg = body.from_peer(&peer_id)?;
    let version = blocking(&app, move |s| s.register(reg)).await?;
    Ok(Json(json!({
        "layout_version": version,
        "tracker_key": app.state.tracker_id(),
    })))
}

async fn heartbeat(
    AxState(app): AxState<Shared>,
    body: Signed<Heartbeat>,
) -> Result<StatusCode, ApiError> {
    let peer_id = body.body.peer_id.clone();
    let hb = body.from_peer(&peer_id)?;
    app.state.heartbeat(hb)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Leaving {
    peer_id: String,
}

async fn leave(
    AxState(app): AxState<Shared>,
    body: Signed<Leaving>,
) -> Result<StatusCode, ApiError> {
    let peer_id = body.body.peer_id.clone();
    let l = body.from_peer(&peer_id)?;
    blocking(&app, move |s| s.leave(&l.peer_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Admin requests carry the configured token as `Authorization: Bearer <token>`; without
/// a configured token they are accepted only while the API listens on loopback.
fn admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize(
        app.state.config(),
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Whether an `Authorization` header value admits an admin request under `config`.
fn authorize(config: &crate::TrackerConfig, authorization: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = &config.admin_token else {
        if config.listen.ip().is_loopback() {
            return Ok(());
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin requests need admin_token in the tracker's config when it listens beyond loopback",
        ));
    };
    let given = authorization.and_then(|v| v.strip_prefix("Bearer "));
    // Compared in time independent of where the strings differ.
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this admin request needs the header Authorization: Bearer <admin_token>",
        ))
    }
}

async fn drain(
    AxState(app): AxState<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&app, &headers)?;
    set_draining(app, id, true).await
}

async fn undrain(
    AxState(app): AxState<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&app, &headers)?;
    set_draining(app, id, false).await
}

fn publisher_key(text: &str) -> Result<medley_core::PublisherId, ApiError> {
    text.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!("publisher key {text:?}: {e}"),
        )
    })
}

async fn publishers(
    AxState(app): AxState<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&app, &headers)?;
    let keys: Vec<String> = app
        .state
        .publishers()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(Json(json!({ "publishers": keys })))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPublisher {
    key: String,
}

async fn add_publisher(
    AxState(app): AxState<Shared>,
    headers: HeaderMap,
    body: Result<Json<NewPublisher>, JsonRejection>,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let Json(p) = body.map_err(json_rejection)?;
    let key = publisher_key(&p.key)?;
    blocking(&app, move |s| s.add_publisher(key)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key": key.to_string(), "authorised": true })),
    )
        .into_response())
}

async fn remove_publisher(
    AxState(app): AxState<Shared>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&app, &headers)?;
    let key = publisher_key(&key)?;
    let was = blocking(&app, move |s| s.remove_publisher(key)).await?;
    Ok(Json(
        json!({ "key": key.to_string(), "authorised": false, "was_authorised": was }),
    ))
}

async fn set_draining(
    app: Shared,
    id: String,
    draining: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let node = id.clone();
    let version = blocking(&app, move |s| s.set_draining(&node, draining)).await?;
    Ok(Json(
        json!({ "node": id, "draining": draining, "layout_version": version }),
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutQuery {
    version: Option<u64>,
}

async fn layout(
    AxState(app): AxState<Shared>,
    query: Result<Query<LayoutQuery>, QueryRejection>,
) -> Result<Json<medley_core::Layout>, ApiError> {
    let Query(q) = query.map_err(|r| bad_query(&r))?;
    match q.version {
        Some(v) => Ok(Json(blocking(&app, move |s| s.layout_at(v)).await?)),
        // The one endpoint that sends the whole layout; everything else shares the Arc.
        None => Ok(Json(app.state.layout()?.as_ref().clone())),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewQuery {
    /// Comma-separated peer ids to drain.
    #[serde(default)]
    drain: String,
    /// Comma-separated peer ids whose drain to cancel.
    #[serde(default)]
    undrain: String,
}

async fn layout_preview(
    AxState(app): AxState<Shared>,
    headers: HeaderMap,
    query: Result<Query<PreviewQuery>, QueryRejection>,
) -> Result<Json<crate::LayoutPreview>, ApiError> {
    admin(&app, &headers)?;
    let Query(q) = query.map_err(|r| bad_query(&r))?;
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    };
    let (drain, undrain) = (list(&q.drain), list(&q.undrain));
    if drain.len() + undrain.len() > 1024 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "at most 1024 nodes per preview",
        ));
    }
    Ok(Json(
        blocking(&app, move |s| s.preview_layout(&drain, &undrain)).await?,
    ))
}

/// Largest page of `GET /v1/partitions/{p}/segments`.
const MAX_SEGMENT_PAGE: usize = 10_000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn partition_segments(
    AxState(app): AxState<Shared>,
    Path(p): Path<String>,
    query: Result<Query<SegmentsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", m);
    let Query(q) = query.map_err(|r| bad(r.body_text()))?;
    let partition: u16 = p
        .parse()
        .map_err(|e| bad(format!("partition {p:?}: {e}")))?;
    let after = q
        .after
        .map(|a| a.parse::<medley_core::SegmentId>())
        .transpose()
        .map_err(|e| bad(format!("after: {e}")))?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_SEGMENT_PAGE {
        return Err(bad(format!("limit must be 1 to {MAX_SEGMENT_PAGE}")));
    }
    let segments = blocking(&app, move |s| s.partition_segments(partition, after, limit)).await?;
    let next = (segments.len() == limit)
        .then(|| segments.last().map(|s| s.id.to_string()))
        .flatten();
    Ok(Json(
        json!({ "partition": partition, "segments": segments, "next": next }),
    ))
}

/// Repair work summed over live nodes, and how many nodes are draining.
fn repair_totals(nodes: &[(crate::state::NodeRecord, bool)]) -> (RepairLoad, usize) {
    let mut t = RepairLoad::default();
    for (r, alive) in nodes {
        if *alive {
            let l = &r.load.repair;
            t.backlog += l.backlog;
            t.done += l.done;
            t.failed += l.failed;
            t.scrub_bad += l.scrub_bad;
            t.handed_over += l.handed_over;
            t.bytes_read += l.bytes_read;
        }
    }
    (t, nodes.iter().filter(|(r, _)| r.draining).count())
}

async fn stats(AxState(app): AxState<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let songs = app.state.song_count();
    let nodes = app.state.nodes();
    let alive = nodes.iter().filter(|(_, a)| *a).count();
    let (repair, draining) = repair_totals(&nodes);
    Ok(Json(json!({
        "songs": songs,
        "nodes": nodes.len(),
        "nodes_alive": alive,
        "nodes_draining": draining,
        "repair": repair,
        "layout_version": app.state.layout_version(),
        "partitions": app.state.config().partitions,
        "k": app.state.config().k,
        "m": app.state.config().m,
        "tracker_key": app.state.tracker_id(),
        "delivered": DELIVERY_CLASSES
            .iter()
            .zip(&app.delivered)
            .map(|(class, n)| (class.to_string(), json!(n.load(Ordering::Relaxed))))
            .collect::<serde_json::Map<_, _>>(),
    })))
}

async fn metrics(AxState(app): AxState<Shared>) -> Result<Response, ApiError> {
    let songs = app.state.song_count();
    let nodes = app.state.nodes();
    let alive = nodes.iter().filter(|(_, a)| *a).count();
    let version = app.state.layout_version().unwrap_or(0);
    let (repair, draining) = repair_totals(&nodes);
    let mut m = medley_daemon::metrics::Scrape::default();
    m.gauge("medley_tracker_songs", "Songs in the catalogue.", songs);
    m.gauge(
        "medley_tracker_nodes",
        "Registered storage nodes.",
        nodes.len() as u64,
    );
    m.gauge(
        "medley_tracker_nodes_alive",
        "Nodes heard from within the grace period and not stopped.",
        alive as u64,
    );
    m.gauge(
        "medley_tracker_nodes_draining",
        "Nodes handing their shards over before leaving.",
        draining as u64,
    );
    m.gauge(
        "medley_tracker_repair_backlog",
        "Shards live nodes lack on their slots, as of their last pass.",
        repair.backlog,
    );
    m.gauge(
        "medley_tracker_repair_done",
        "Shards rebuilt or copied by live nodes since they started.",
        repair.done,
    );
    m.gauge(
        "medley_tracker_repair_failed",
        "Failed repair attempts of live nodes since they started.",
        repair.failed,
    );
    m.gauge(
        "medley_tracker_scrub_bad_shards",
        "Corrupt shards live nodes' scrubbers deleted since they started.",
        repair.scrub_bad,
    );
    m.gauge(
        "medley_tracker_layout_version",
        "Current layout version (0: none yet).",
        version,
    );
    m.counters(
        "medley_tracker_http_requests_total",
        "HTTP requests answered, by outcome.",
        [
            ("ok", &app.requests_ok),
            ("client_error", &app.requests_client_error),
            ("server_error", &app.requests_server_error),
        ]
        .map(|(outcome, n)| ([("outcome", outcome)], n.load(Ordering::Relaxed))),
    );
    m.counters(
        "medley_tracker_delivered_bytes_total",
        "Bytes of plays clients reported, by where they came from: own cache, other listeners (peer), hot nodes, rebuilt from shards.",
        DELIVERY_CLASSES
            .iter()
            .zip(&app.delivered)
            .map(|(class, n)| ([("source", *class)], n.load(Ordering::Relaxed))),
    );
    m.histograms(
        "medley_tracker_http_request_duration_seconds",
        "Time to answer an HTTP request, by route.",
        &app.latency,
    );
    let body = m.render();
    Ok((
        [(header::CONTENT_TYPE, medley_daemon::metrics::CONTENT_TYPE)],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_requests_need_the_token_or_a_loopback_tracker() {
        let code = |c: &crate::TrackerConfig, h: Option<&str>| {
            authorize(c, h).err().map(|e| (e.status.as_u16(), e.code))
        };
        let loopback = crate::TrackerConfig::default();
        assert_eq!(code(&loopback, None), None, "no token, loopback: allowed");
        let open = crate::TrackerConfig {
            listen: "192.0.2.1:4700".parse().unwrap(),
            ..crate::TrackerConfig::default()
        };
        assert_eq!(code(&open, None), Some((403, "admin_disabled")));
        assert_eq!(
            code(&open, Some("Bearer anything")),
            Some((403, "admin_disabled"))
        );
        let guarded = crate::TrackerConfig {
            admin_token: Some("0123456789abcdef".into()),
            ..open
        };
        assert_eq!(code(&guarded, Some("Bearer 0123456789abcdef")), None);
        for bad in [
            None,
            Some("0123456789abcdef"),
            Some("Bearer 0123456789abcdeF"),
            Some("Bearer 0123456789abcde"),
            Some("Basic 0123456789abcdef"),
        ] {
            assert_eq!(code(&guarded, bad), Some((401, "unauthorized")), "{bad:?}");
        }
    }
}
