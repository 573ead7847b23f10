//! `medley serve`: a local HTTP gateway over the client's streaming engine.
//!
//! - `/stream/{song-id}`: the song's file, byte-identical to what was published, with
//!   `Accept-Ranges: bytes` and `206 Partial Content` for a range (see [`range`]). A range
//!   fetches only the segments it covers, so a seek starts where it lands.
//! - `/`: a web player (plain files, no build step): search as you type, a queue, play,
//!   pause, seek, the next track prefetched, and where each song's bytes came from.
//! - `/api/...`: the JSON the web player uses.
//! - `/rest/...`: a subset of the Subsonic API for music apps (see [`subsonic`]).
//! - `/metrics`: Prometheus text.
//!
//! Segments are verified before they are sent and kept in the listener's disk cache (or,
//! with that off, a bounded in-memory one) shared by every song, so a replay or a seek back
//! costs no network.

pub mod range;
mod subsonic;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::StreamExt;
use medley_core::{Manifest, SongId};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use crate::cache::{SegmentCache, SegmentStore};
use crate::error::ClientError;
use crate::fetch::Fetcher;
use crate::{Client, SourceStats};

pub use subsonic::SubsonicUser;

/// How long a song's sources are reused before they are asked for again (the layout may
/// have changed).
const SESSION_TTL: Duration = Duration::from_secs(120);

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Bytes of verified segments kept in memory.
    pub cache_bytes: u64,
    /// The Subsonic API's account; `None` turns the API's answers into "not authorized".
    pub subsonic: Option<SubsonicUser>,
    /// Names the gateway is reached by, besides IP addresses and localhost: requests with
    /// another `Host` are refused, so that no web page reaches it through DNS rebinding.
    pub hosts: Vec<String>,
}

/// A song being streamed: its manifest and a fetcher with its sources.
#[derive(Debug)]
struct Session {
    manifest: Manifest,
    fetcher: Arc<Fetcher>,
    made: Instant,
}

#[derive(Debug)]
struct Metrics {
    stream_requests: AtomicU64,
    stream_partial: AtomicU64,
    stream_errors: AtomicU64,
    stream_bytes: AtomicU64,
    api_requests: AtomicU64,
    subsonic_requests: AtomicU64,
    subsonic_errors: AtomicU64,
    /// From a stream request to its first bytes, by where it starts (`start`, `seek`).
    first_byte: medley_daemon::metrics::Latencies<medley_daemon::metrics::Label>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            stream_requests: AtomicU64::new(0),
            stream_partial: AtomicU64::new(0),
            stream_errors: AtomicU64::new(0),
            stream_bytes: AtomicU64::new(0),
            api_requests: AtomicU64::new(0),
            subsonic_requests: AtomicU64::new(0),
            subsonic_errors: AtomicU64::new(0),
            first_byte: medley_daemon::metrics::latencies(),
        }
    }
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    client: Arc<Client>,
    cache: Arc<dyn SegmentStore>,
    sessions: Mutex<HashMap<SongId, Arc<Session>>>,
    /// Where the bytes of sessions already closed came from.
    retired: Mutex<crate::fetch::Delivery>,
    subsonic: Option<SubsonicUser>,
    /// See [`GatewayOptions::hosts`].
    hosts: Vec<String>,
    metrics: Metrics,
}

type Shared = Arc<Gateway>;

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The server; ends when the shutdown future given to [`serve`] completes.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `listen` and serves the gateway until `shutdown` completes.
pub async fn serve(
    client: Arc<Client>,
    listen: SocketAddr,
    opts: GatewayOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningGateway, ClientError> {
    let cache: Arc<dyn SegmentStore> = match client.disk_cache() {
        Some(d) => d.clone(),
        None => Arc::new(SegmentCache::new(opts.cache_bytes)),
    };
    let gw = Arc::new(Gateway {
        client,
        cache,
        sessions: Mutex::new(HashMap::new()),
        retired: Mutex::new(crate::fetch::Delivery::default()),
        subsonic: opts.subsonic,
        hosts: opts.hosts,
        metrics: Metrics::default(),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ClientError::Io {
            path: listen.to_string().into(),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ClientError::Io {
        path: listen.to_string().into(),
        source: e,
    })?;
    let app = router(gw);
    let task = tokio::spawn(medley_daemon::http::serve(
        listener,
        app,
        medley_daemon::http::ServeOptions::default(),
        shutdown,
    ));
    Ok(RunningGateway { addr, task })
}

fn router(gw: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/app.js", get(|| async { asset("app.js") }))
        .route("/style.css", get(|| async { asset("style.css") }))
        .route("/stream/{id}", get(stream).head(stream))
        .route("/api/search", get(api_search))
        .route("/api/songs/{id}", get(api_song))
        .route("/api/songs/{id}/played", post(api_played))
        .route("/metrics", get(metrics))
        .route("/rest/{method}", any(subsonic::handle))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "no_route", "no such page") })
        .layer(axum::middleware::from_fn_with_state(gw.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(gw)
}

/// What every response carries: no content sniffing (a song's type comes from its
/// publisher), and a policy that lets the web player load only its own files.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     media-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// Refuses a request whose `Host` is not a name of the gateway (DNS rebinding), and a POST
/// to the web player's API without a JSON body (a cross-site form cannot send one); adds the
/// security headers to every answer.
async fn guard(
    State(gw): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Read before the await: a borrow of the request held across it would not be `Send`.
    let (host_ok, form_post) = {
        let header =
            |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
        let json = header(header::CONTENT_TYPE).is_some_and(|t| t.starts_with("application/json"));
        (
            known_host(header(header::HOST), &gw.hosts),
            req.method() == Method::POST && req.uri().path().starts_with("/api/") && !json,
        )
    };
    let mut res = if !host_ok {
        api_error(
            StatusCode::FORBIDDEN,
            "bad_host",
            "this Host is not a name of the gateway (an IP address, localhost, or one of \
             gateway_hosts in medley.toml)",
        )
    } else if form_post {
        api_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_only",
            "this request takes a JSON body (content type application/json)",
        )
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    res
}

/// Whether a `Host` value names this gateway: an IP address, localhost, or one of `hosts`,
/// with any port.
fn known_host(host: Option<&str>, hosts: &[String]) -> bool {
    let Some(host) = host else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The content type a song is served with: its manifest's, when that is an audio type made
/// of plain token characters; `application/octet-stream` otherwise (a publisher could name
/// `text/html`).
fn audio_type(mime: &str) -> &str {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match mime.split_once('/') {
        Some(("audio", sub)) if token(sub) => mime,
        _ => "application/octet-stream",
    }
}

/// The web player's files, built into the binary.
fn asset(name: &str) -> Response {
    let (body, mime) = match name {
        "index.html" => (include_str!("web/index.html"), "text/html; charset=utf-8"),
        "app.js" => (include_str!("web/app.js"), "text/javascript; charset=utf-8"),
        _ => (include_str!("web/style.css"), "text/css; charset=utf-8"),
    };
    ([(header::CONTENT_TYPE, mime)], body).into_response()
}

fn api_error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message.to_string() } })),
    )
        .into_response()
}

/// The status and code a client failure maps to.
fn failure(e: &ClientError) -> (StatusCode, &'static str) {
    match e {
        ClientError::UnknownSong(_) => (StatusCode::NOT_FOUND, "unknown_song"),
        ClientError::Tracker(e) if e.status() == Some(400) => {
            (StatusCode::BAD_REQUEST, "bad_query")
        }
        ClientError::Tracker(medley_api::TrackerError::Unreachable { .. }) => {
            (StatusCode::BAD_GATEWAY, "tracker_down")
        }
        _ => (StatusCode::BAD_GATEWAY, "upstream"),
    }
}

fn client_error(e: &ClientError) -> Response {
    let (status, code) = failure(e);
    api_error(status, code, e)
}

fn parse_id(text: &str) -> Result<SongId, Response> {
    text.parse().map_err(|e| {
        api_error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            format!("song id {text:?}: {e}"),
        )
    })
}

impl Gateway {
    /// The song's session: reused while fresh, else made anew from the tracker.
    async fn session(&self, id: SongId) -> Result<Arc<Session>, ClientError> {
        if let Some(s) = self.sessions.lock().get(&id)
            && s.made.elapsed() < SESSION_TTL
        {
            return Ok(s.clone());
        }
        let (fetcher, manifest) = self
            .client
            .fetcher_with(id, Some(self.cache.clone()))
            .await?;
        let s = Arc::new(Session {
            manifest,
            fetcher,
            made: Instant::now(),
        });
        let mut sessions = self.sessions.lock();
        let mut closed: Vec<Arc<Session>> = Vec::new();
        sessions.retain(|_, s| {
            let keep = s.made.elapsed() < SESSION_TTL;
            if !keep {
                closed.push(s.clone());
            }
            keep
        });
        closed.extend(sessions.insert(id, s.clone()));
        drop(sessions);
        self.retire(&closed);
        Ok(s)
    }

    /// Forgets a song's session (after a failure: its sources may be stale).
    fn forget(&self, id: SongId) {
        let gone = self.sessions.lock().remove(&id);
        self.retire(gone.as_slice());
    }

    fn retire(&self, closed: &[Arc<Session>]) {
        let mut r = self.retired.lock();
        for s in closed {
            r.add(&s.fetcher.report().delivery());
        }
    }

    /// Where every byte this gateway sent came from, so far.
    fn delivered(&self) -> crate::fetch::Delivery {
        let mut d = *self.retired.lock();
        for s in self.sessions.lock().values() {
            d.add(&s.fetcher.report().delivery());
        }
        d
    }

    /// The bytes `start..=end` of song `id` as a response body: only the segments covering
    /// them are fetched, the first alone and then a window of `read_ahead`. The time from
    /// `asked` to the first bytes goes into the first-byte histogram.
    fn body(
        self: &Arc<Self>,
        id: SongId,
        s: &Session,
        (start, end): (u64, u64),
        asked: Instant,
    ) -> Body {
        let seg = u64::from(s.manifest.body().segment_size.max(1));
        let (first, last) = (start / seg, end / seg);
        let ahead = self.client.config().read_ahead;
        let range = usize::try_from(first).unwrap_or(usize::MAX)
            ..usize::try_from(last).map_or(usize::MAX, |l| l.saturating_add(1));
        let me = self.clone();
        let stream = s
            .fetcher
            .stream_range(range, ahead)
            .zip(futures::stream::iter(first..=last))
            .map(move |(item, i)| match item {
                Ok(data) => {
                    if i == first {
                        let from = if start == 0 { "start" } else { "seek" };
                        me.metrics
                            .first_byte
                            .get_or_create(&[("from", from)])
                            .observe(asked.elapsed().as_secs_f64());
                    }
                    let from = if i == first { start - first * seg } else { 0 };
                    let to = if i == last {
                        end - last * seg + 1
                    } else {
                        data.len() as u64
                    };
                    let (from, to) = (from as usize, (to as usize).min(data.len()));
                    let part = data.slice(from.min(to)..to);
                    me.metrics
                        .stream_bytes
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                    Ok(part)
                }
                Err(e) => {
                    tracing::warn!(song = %id, segment = i, error = %e, "stream failed");
                    me.metrics.stream_errors.fetch_add(1, Ordering::Relaxed);
                    me.forget(id);
                    Err(std::io::Error::other(e.to_string()))
                }
            });
        Body::from_stream(stream)
    }

    /// Serves song `id`'s file for `GET`/`HEAD` with `headers` (Range, If-Range).
    async fn stream_song(
        self: &Arc<Self>,
        id: SongId,
        method: &Method,
        headers: &HeaderMap,
    ) -> Response {
        self.metrics.stream_requests.fetch_add(1, Ordering::Relaxed);
        let asked = Instant::now();
        let s = match self.session(id).await {
            Ok(s) => s,
            Err(e) => return client_error(&e),
        };
        let body = s.manifest.body();
        let total = body.total_size;
        let etag = format!("\"{id}\"");
        // A Range is honoured only if If-Range (when sent) names this representation; the
        // bytes of an id never change, so only the ETag can fail to match.
        let if_range_ok = headers
            .get(header::IF_RANGE)
            .is_none_or(|v| v.to_str().is_ok_and(|v| v == etag));
        let range_header = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .filter(|_| if_range_ok);
        let mut out = Response::builder()
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::ETAG, &etag)
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
            .header(header::CONTENT_TYPE, audio_type(&body.meta.mime));
        let (status, start, end) = match range::parse(range_header, total) {
            range::RangeRequest::Unsatisfiable => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{total}"))
                    .header(header::ACCEPT_RANGES, "bytes")
                    .body(Body::empty())
                    .unwrap_or_else(|_| StatusCode::RANGE_NOT_SATISFIABLE.into_response());
            }
            range::RangeRequest::Full => (StatusCode::OK, 0, total.saturating_sub(1)),
            range::RangeRequest::Partial { start, end } => {
                self.metrics.stream_partial.fetch_add(1, Ordering::Relaxed);
                out = out.header(
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{total}"),
                );
                (StatusCode::PARTIAL_CONTENT, start, end)
            }
        };
        let len = if total == 0 { 0 } else { end - start + 1 };
        out = out.status(status).header(header::CONTENT_LENGTH, len);
        let body = if *method == Method::HEAD || len == 0 {
            Body::empty()
        } else {
            self.body(id, &s, (start, end), asked)
        };
        out.body(body)
            .unwrap_or_else(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
    }
}

async fn stream(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match parse_id(&id) {
        Ok(id) => gw.stream_song(id, &method, &headers).await,
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn api_search(State(gw): State<Shared>, Query(q): Query<SearchQuery>) -> Response {
    gw.metrics.api_requests.fetch_add(1, Ordering::Relaxed);
    if q.q.trim().is_empty() {
        return axum::Json(json!({ "total": 0, "offset": 0, "results": [] })).into_response();
    }
    let params = medley_api::SearchQuery {
        q: q.q,
        limit: Some(q.limit.unwrap_or(25).clamp(1, 100)),
        offset: q.offset.unwrap_or(0),
        ..medley_api::SearchQuery::default()
    };
    match gw.client.tracker().search(&params).await {
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => client_error(&e.into()),
    }
}

/// A song's metadata and, if it is being streamed, where its bytes came from.
async fn api_song(State(gw): State<Shared>, Path(id): Path<String>) -> Response {
    gw.metrics.api_requests.fetch_add(1, Ordering::Relaxed);
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let s = match gw.session(id).await {
        Ok(s) => s,
        Err(e) => return client_error(&e),
    };
    let body = s.manifest.body();
    let report = s.fetcher.report();
    let sources: std::collections::BTreeMap<String, SourceStats> = report
        .snapshot()
        .into_iter()
        .map(|(p, st)| (p.to_string(), st))
        .collect();
    axum::Json(json!({
        "id": id.to_string(),
        "meta": body.meta,
        "size": body.total_size,
        "segments": body.segments.len(),
        "delivery": report.delivery(),
        "sources": sources,
        "bad_sources": report.liars().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "cache": gw.cache.stats(),
    }))
    .into_response()
}

async fn api_played(State(gw): State<Shared>, Path(id): Path<String>) -> Response {
    gw.metrics.api_requests.fetch_add(1, Ordering::Relaxed);
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let session = gw.sessions.lock().get(&id).cloned();
    let delivery = session.as_ref().map(|s| s.fetcher.report().delivery());
    if let Some(s) = &session {
        gw.client.note_played(id, &s.fetcher.segment_ids());
    }
    let region = gw.client.config().region.clone();
    let report = medley_api::PlayReport::new(id, &region, delivery.map(|d| d.report()));
    match gw
        .client
        .tracker()
        .report_play(&report)
        .await
        .map_err(crate::tracker::unknown_song(id))
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => client_error(&e),
    }
}

async fn metrics(State(gw): State<Shared>) -> Response {
    let g = &gw.metrics;
    let c = gw.cache.stats();
    let mut m = medley_daemon::metrics::Scrape::default();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, help, value) in [
        (
            "medley_gateway_stream_requests_total",
            "Stream requests (/stream and Subsonic stream).",
            load(&g.stream_requests),
        ),
        (
            "medley_gateway_stream_partial_total",
            "Stream requests answered with 206 Partial Content.",
            load(&g.stream_partial),
        ),
        (
            "medley_gateway_stream_errors_total",
            "Streams cut short because a segment could not be fetched.",
            load(&g.stream_errors),
        ),
        (
            "medley_gateway_stream_bytes_total",
            "Bytes of audio files sent.",
            load(&g.stream_bytes),
        ),
        (
            "medley_gateway_api_requests_total",
            "Web player API requests.",
            load(&g.api_requests),
        ),
        (
            "medley_gateway_subsonic_requests_total",
            "Subsonic API requests.",
            load(&g.subsonic_requests),
        ),
        (
            "medley_gateway_subsonic_errors_total",
            "Subsonic API requests answered with an error.",
            load(&g.subsonic_errors),
        ),
        (
            "medley_gateway_cache_hits_total",
            "Segments served from the cache.",
            c.hits,
        ),
        (
            "medley_gateway_cache_misses_total",
            "Segments fetched from the network.",
            c.misses,
        ),
    ] {
        m.counter(name, help, value);
    }
    for (name, help, value) in [
        (
            "medley_gateway_cache_bytes",
            "Bytes of segments in the cache.",
            c.bytes,
        ),
        (
            "medley_gateway_cache_capacity_bytes",
            "Most bytes of segments the cache keeps.",
            c.capacity,
        ),
    ] {
        m.gauge(name, help, value);
    }
    let d = gw.delivered();
    m.counters(
        "medley_gateway_delivered_bytes_total",
        "Bytes of segments fetched for streams, by where they came from: own cache, other listeners (peer), hot nodes, rebuilt from shards.",
        [
            ([("source", "cache")], d.cache_bytes),
            ([("source", "peer")], d.peer_bytes),
            ([("source", "hot")], d.hot_bytes),
            ([("source", "rebuilt")], d.rebuilt_bytes),
        ],
    );
    m.histograms(
        "medley_gateway_stream_first_byte_seconds",
        "From a stream request to its first bytes, by where it starts (start, seek).",
        &g.first_byte,
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(medley_daemon::metrics::CONTENT_TYPE),
        )],
        m.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn songs_are_served_as_audio_or_as_opaque_bytes() {
        for (mime, served) in [
            ("audio/flac", "audio/flac"),
            ("audio/ogg", "audio/ogg"),
            ("audio/x-wav", "audio/x-wav"),
            ("text/html", "application/octet-stream"),
            ("audio/flac; charset=utf-8", "application/octet-stream"),
            ("audio/", "application/octet-stream"),
            ("image/svg+xml", "application/octet-stream"),
            ("audio/mpeg\r\nset-cookie: x", "application/octet-stream"),
        ] {
            assert_eq!(audio_type(mime), served, "{mime:?}");
        }
    }

    #[test]
    fn the_gateway_answers_to_ip_addresses_localhost_and_its_names() {
        let names = vec!["music.home.arpa".to_string()];
        for ok in [
            "127.0.0.1:4800",
            "[::1]:4800",
            "localhost:4800",
            "192.168.1.20",
            "music.home.arpa:4800",
        ] {
            assert!(known_host(Some(ok), &names), "{ok}");
        }
        for bad in [
            None,
            Some("evil.example.com"),
            Some("music.home.arpa.evil.example.com"),
        ] {
            assert!(!known_host(bad, &names), "{bad:?}");
        }
    }
}
