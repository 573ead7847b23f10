//! One typed client of the tracker's API, shared by nodes, listeners, the testnet and tools.
//!
//! What it checks: every answer parses as the type the endpoint promises; a manifest matches
//! the id it was asked for (hash, encoding, signature); answers a node acts on verify under
//! the tracker key it passes in ([`crate::signed::verify_answer`]). What it signs: with a
//! signer set, registrations, heartbeats, leave notices, announcements and reports carry the
//! signer's identity ([`crate::signed`]).
//!
//! Several trackers: a base of `URL,URL,…` names replicas that serve the same network. The
//! client asks the one that answered last; on a connection error or a 5xx answer it asks the
//! next, each once, and keeps the first that answers. A read (GET) the first has not
//! answered within a second is sent to the others too.

use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::Keypair;
use medley_core::{Layout, Manifest, SegmentEntry, SegmentId, SongId, TrackerId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::signed::{
    ANSWER_SIGNATURE_HEADER, ANSWER_TIME_HEADER, AnswerError, PEER_HEADER, SIGNATURE_HEADER,
    TIME_HEADER, sign_request, verify_answer,
};
use crate::{
    AdmissionChange, ApproveRequest, ArtistPage, ArtistsQuery, Committed, DrainState, ErrorBody,
    ErrorCode, Heartbeat, Hit, HotOrders, HotSong, InviteRequest, InviteToken, LayoutPreview,
    Leaving, NewPublisher, NodeEntry, NodeList, PartitionSegments, PeerAnnouncement, PlayRecorded,
    PlayReport, Popularity, PreviewQuery, PublishGrants, PublisherChange, PublisherList,
    RandomQuery, RandomSongs, Registered, Registration, SearchQuery, SearchResults, Song, SongPage,
    SongSources, SongsQuery, SourceReport, SourcesQuery, Stats,
};

/// Why a tracker call failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// No answer: the tracker is down, unreachable, or the connection broke.
    #[error("cannot reach the tracker at {url}: {reason}")]
    Unreachable {
        /// The tracker's base URL.
        url: String,
        /// Why, with its causes.
        reason: String,
    },
    /// The tracker answered with an error.
    #[error("the tracker refused {what}: {message} ({code}, HTTP {status})")]
    Refused {
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// The API's error code.
        code: ErrorCode,
        /// The API's message.
        message: String,
    },
    /// The answer does not parse or does not check out.
    #[error("the tracker at {url} sent an invalid {what}: {reason}")]
    BadAnswer {
        /// The tracker's base URL.
        url: String,
        /// What was asked.
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// An answer the caller acts on is not signed by the tracker key it trusts.
    #[error("the tracker at {url} sent {what} that does not verify: {source}")]
    Unsigned {
        /// The tracker's base URL.
        url: String,
        /// What was asked.
        what: String,
        /// Why.
        source: AnswerError,
    },
    /// The client could not be set up.
    #[error("tracker client: {0}")]
    Config(String),
}

impl TrackerError {
    /// The HTTP status, if the tracker answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code, if the tracker answered with an error.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Settings of a [`TrackerClient`].
#[derive(Debug, Clone)]
pub struct TrackerClientBuilder {
    base: String,
    timeout: Duration,
    connect_timeout: Duration,
    signer: Option<Keypair>,
    ca: Option<std::path::PathBuf>,
    local: Option<std::net::IpAddr>,
}

impl TrackerClientBuilder {
    /// Longest a whole call may take (30 s by default: a large page or a slow tracker).
    #[must_use]
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Longest a connection may take to open (5 s by default).
    #[must_use]
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Signs registrations, heartbeats, announcements and reports with `key`.
    #[must_use]
    pub fn signer(mut self, key: Keypair) -> Self {
        self.signer = Some(key);
        self
    }

    /// Trusts the certificate authorities in this PEM file for an `https://` tracker, besides
    /// the system's (a private CA, or a self-signed tracker certificate).
    #[must_use]
    pub fn ca_file(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.ca = path;
        self
    }

    /// Opens connections to the tracker from this local address (on a host with several);
    /// `None`: the system chooses.
    #[must_use]
    pub fn local_address(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.local = ip;
        self
    }

    /// The client. A base of `unix:<path>` talks to the tracker's local admin socket.
    pub fn build(self) -> Result<TrackerClient, TrackerError> {
        let transport = match self.base.strip_prefix("unix:") {
            Some(path) => Transport::Unix {
                path: path.into(),
                timeout: self.timeout,
            },
            None => Transport::Http(
                reqwest::Client::builder()
                    .timeout(self.timeout)
                    .connect_timeout(self.connect_timeout)
                    .pool_idle_timeout(POOL_IDLE)
                    .local_address(self.local)
                    .use_preconfigured_tls(tls_config(self.ca.as_deref())?)
                    .build()
                    .map_err(|e| TrackerError::Config(medley_core::error_chain(&e)))?,
            ),
        };
        let bases: Vec<Arc<str>> = match transport {
            Transport::Unix { .. } => vec![self.base.as_str().into()],
            Transport::Http(_) => self
                .base
                .split(',')
                .map(|b| b.trim().trim_end_matches('/'))
                .filter(|b| !b.is_empty())
                .map(Arc::from)
                .collect(),
        };
        if bases.is_empty() {
            return Err(TrackerError::Config("no tracker URL given".into()));
        }
        Ok(TrackerClient {
            bases: bases.into(),
            current: Arc::default(),
            transport,
            signer: self.signer.map(Arc::new),
        })
    }
}

/// A client of one tracker, or of replicas tried in turn. Cheap to clone; clones share
/// which replica they ask.
#[derive(Debug, Clone)]
pub struct TrackerClient {
    bases: Arc<[Arc<str>]>,
    /// The replica asked first: the last that answered.
    current: Arc<std::sync::atomic::AtomicUsize>,
    transport: Transport,
    signer: Option<Arc<Keypair>>,
}

/// How requests reach the tracker.
#[derive(Debug, Clone)]
enum Transport {
    /// HTTP or HTTPS.
    Http(reqwest::Client),
    /// The tracker's local admin socket (`unix:/path/admin.sock`): HTTP/1.1 over a Unix
    /// socket, one connection per request, within `timeout`.
    Unix {
        path: std::path::PathBuf,
        timeout: Duration,
    },
}

/// How long a GET waits for the replica asked first before the others are asked too.
pub const HEDGE_AFTER: Duration = Duration::from_secs(1);

/// How long an idle connection to a tracker is kept for the next call: under the tracker's
/// own idle close (its `header_read_timeout`, 10 s by default), so that a call is rarely
/// sent on a connection the tracker is closing at that moment (see [`stale_connection`]).
const POOL_IDLE: Duration = Duration::from_secs(5);

/// Whether `e` is a request sent on a kept-alive connection that the server closed before
/// answering (it closed the idle connection as the request crossed the network): nothing
/// was processed, and an idempotent request may be sent again on a new connection.
fn stale_connection(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether `answer` is one to keep: neither a connection error nor a 5xx.
fn good(answer: &Result<Answer, TrackerError>) -> bool {
    answer.as_ref().is_ok_and(|a| a.status < 500)
}

/// One HTTP request, to send to a replica.
struct Call<'a> {
    http: &'a reqwest::Client,
    method: &'a reqwest::Method,
    path: &'a str,
    headers: &'a hyper::HeaderMap,
    bytes: &'a [u8],
}

/// A whole answer.
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A request body.
enum Body<'a> {
    None,
    Json(Vec<u8>),
    Manifest(&'a [u8]),
}

/// Whether `urls` is one tracker URL, or several separated by commas, each `http://` or
/// `https://`.
pub fn valid_tracker_urls(urls: &str) -> bool {
    let mut any = false;
    for u in urls.split(',').map(str::trim) {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return false;
        }
        any = true;
    }
    any
}

impl TrackerClient {
    /// Settings for a client of the tracker at `base` (e.g. `http://127.0.0.1:4700`).
    pub fn builder(base: &str) -> TrackerClientBuilder {
        TrackerClientBuilder {
            base: base.to_string(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            signer: None,
            ca: None,
            local: None,
        }
    }

    /// A client of the tracker at `base` with the default settings and no signer.
    pub fn new(base: &str) -> Result<Self, TrackerError> {
        Self::builder(base).build()
    }

    /// The same client, signing with `key`.
    #[must_use]
    pub fn with_signer(&self, key: Keypair) -> Self {
        Self {
            signer: Some(Arc::new(key)),
            ..self.clone()
        }
    }

    /// The base URL of the tracker asked first (the last that answered).
    pub fn url(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    /// Every tracker URL this client may ask.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.bases.iter().map(|b| &**b)
    }

    fn unreachable(&self, e: &dyn std::error::Error) -> TrackerError {
        Self::unreachable_at(self.url(), e)
    }

    fn unreachable_at(url: &str, e: &dyn std::error::Error) -> TrackerError {
        let mut reason = medley_core::error_chain(e);
        if reason.contains("certificate") {
            reason.push_str(
                " (for a tracker with a private or self-signed certificate, pass its CA with \
                 --tracker-ca FILE or tracker_ca in the config)",
            );
        }
        TrackerError::Unreachable {
            url: url.to_string(),
            reason,
        }
    }

    fn bad(&self, what: &str, reason: impl std::fmt::Display) -> TrackerError {
        TrackerError::BadAnswer {
            url: self.url().to_string(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Sends a request to `path` (with its query) and returns the successful answer.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Body<'_>,
        signed: bool,
        admin: Option<&str>,
    ) -> Result<Answer, TrackerError> {
        let mut headers = hyper::HeaderMap::new();
        let mut header = |name: &'static str, value: String| {
            if let Ok(v) = hyper::header::HeaderValue::try_from(value) {
                headers.insert(name, v);
            }
        };
        if let Some(token) = admin {
            header("authorization", format!("Bearer {token}"));
        }
        let (bytes, content_type): (Vec<u8>, Option<&str>) = match body {
            Body::None => (Vec::new(), None),
            Body::Json(b) => (b, Some("application/json")),
            Body::Manifest(b) => (b.to_vec(), Some("application/octet-stream")),
        };
        if let Some(t) = content_type {
            header("content-type", t.to_string());
        }
        if let (true, Some(key)) = (signed, &self.signer) {
            let now = medley_core::unix_now_ms();
            let sig = sign_request(key, method.as_str(), path, &bytes, now);
            header(PEER_HEADER, sig.peer);
            header(TIME_HEADER, sig.time_ms.to_string());
            header(SIGNATURE_HEADER, sig.signature);
        }
        let answer = match &self.transport {
            Transport::Http(http) => self.http_call(http, method, path, headers, bytes).await?,
            Transport::Unix {
                path: sock,
                timeout,
            } => tokio::time::timeout(*timeout, unix_call(sock, method, path, headers, bytes))
                .await
                .map_err(|_| TrackerError::Unreachable {
                    url: self.url().to_string(),
                    reason: format!("no answer within {} s", timeout.as_secs()),
                })?
                .map_err(|e| self.unreachable(e.as_ref()))?,
        };
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        let body = &answer.body;
        let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (
                ErrorCode::Other("unknown".into()),
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            ),
        };
        Err(TrackerError::Refused {
            what: what.to_string(),
            status: answer.status,
            code,
            message,
        })
    }

    /// Sends one HTTP request: to the replica that answered last, then, on a connection
    /// error or a 5xx answer, to each other once. The first answer that is neither is kept,
    /// and its replica is asked first from then on; failing that, the last failure. A GET
    /// the first replica has not answered within [`HEDGE_AFTER`] is also sent to the others
    /// in turn, and the first good answer wins: a replica that hangs costs a read that
    /// delay, not the whole timeout.
    async fn http_call(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        headers: hyper::HeaderMap,
        bytes: Vec<u8>,
    ) -> Result<Answer, TrackerError> {
        use std::sync::atomic::Ordering;
        let n = self.bases.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let order: Vec<usize> = (0..n).map(|k| (first + k) % n).collect();
        let call = Call {
            http,
            method: &method,
            path,
            headers: &headers,
            bytes: &bytes,
        };
        let (i, answer) = if n > 1 && method == reqwest::Method::GET {
            let mut primary = std::pin::pin!(self.attempt(&call, order[0]));
            match tokio::time::timeout(HEDGE_AFTER, &mut primary).await {
                Ok(a) if good(&a) => (order[0], a),
                // Failed at once: the others in turn.
                Ok(_) => self.in_turn(&call, &order[1..]).await,
                // Slow: the others in turn, racing it.
                Err(_) => {
                    let mut rest = std::pin::pin!(self.in_turn(&call, &order[1..]));
                    tokio::select! {
                        a = &mut primary => if good(&a) { (order[0], a) } else { rest.await },
                        (i, a) = &mut rest => if good(&a) { (i, a) } else { (order[0], primary.await) },
                    }
                }
            }
        } else {
            self.in_turn(&call, &order).await
        };
        if good(&answer) {
            self.current.store(i, Ordering::Relaxed);
        }
        answer
    }

    /// Asks the replicas `order` names one after another until one answers neither with a
    /// connection error nor a 5xx: that one and its answer, or the last and its failure.
    async fn in_turn(
        &self,
        call: &Call<'_>,
        order: &[usize],
    ) -> (usize, Result<Answer, TrackerError>) {
        let mut last = (0, Err(TrackerError::Config("no tracker URL given".into())));
        for &i in order {
            let answer = self.attempt(call, i).await;
            if good(&answer) {
                return (i, answer);
            }
            last = (i, answer);
        }
        last
    }

    /// Sends `call` to replica `i`.
    async fn attempt(&self, call: &Call<'_>, i: usize) -> Result<Answer, TrackerError> {
        let base = &self.bases[i];
        let send = || {
            call.http
                .request(call.method.clone(), format!("{base}{}", call.path))
                .headers(call.headers.clone())
                .body(call.bytes.to_vec())
                .send()
        };
        let resp = match send().await {
            // A read met a connection the tracker was closing: once more, on a new one.
            Err(e) if stale_connection(&e) && *call.method == reqwest::Method::GET => send().await,
            r => r,
        }
        .map_err(|e| Self::unreachable_at(base, &e))?;
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp
            .bytes()
            .await
            .map_err(|e| Self::unreachable_at(base, &e))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn parse<T: DeserializeOwned>(&self, what: &str, answer: Answer) -> Result<T, TrackerError> {
        serde_json::from_slice(&answer.body).map_err(|e| self.bad(what, e))
    }

    async fn get<T: DeserializeOwned>(&self, what: &str, path: &str) -> Result<T, TrackerError> {
        let resp = self
            .call(what, reqwest::Method::GET, path, Body::None, false, None)
            .await?;
        self.parse(what, resp)
    }

    /// A GET whose answer must be signed by `key` and recent.
    async fn get_signed<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        key: &TrackerId,
    ) -> Result<T, TrackerError> {
        let resp = self
            .call(what, reqwest::Method::GET, path, Body::None, false, None)
            .await?;
        let (time, signature) = (
            resp.header(ANSWER_TIME_HEADER),
            resp.header(ANSWER_SIGNATURE_HEADER),
        );
        let bytes = resp.body;
        verify_answer(
            key,
            path,
            time.as_deref(),
            signature.as_deref(),
            &bytes,
            medley_core::unix_now_ms(),
        )
        .map_err(|source| TrackerError::Unsigned {
            url: self.url().to_string(),
            what: what.to_string(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| self.bad(what, e))
    }

    /// A JSON POST, signed when `signed` and a signer is set, with the admin token if given.
    async fn post<B: Serialize + ?Sized>(
        &self,
        what: &str,
        path: &str,
        body: &B,
        signed: bool,
        admin: Option<&str>,
    ) -> Result<Answer, TrackerError> {
        let bytes = serde_json::to_vec(body).map_err(|e| TrackerError::Config(e.to_string()))?;
        self.call(
            what,
            reqwest::Method::POST,
            path,
            Body::Json(bytes),
            signed,
            admin,
        )
        .await
    }

    // The catalogue.

    /// Searches the catalogue.
    pub async fn search(&self, q: &SearchQuery) -> Result<SearchResults, TrackerError> {
        self.get("the search", &with_query("/v1/search", q)).await
    }

    /// A song's metadata and plays.
    pub async fn song(&self, id: SongId) -> Result<Song, TrackerError> {
        self.get(&format!("song {id}"), &format!("/v1/songs/{id}"))
            .await
    }

    /// A song's signed manifest, checked against `id` (hash, encoding, signature).
    pub async fn manifest(&self, id: SongId) -> Result<Manifest, TrackerError> {
        let what = format!("the manifest of song {id}");
        let path = format!("/v1/songs/{id}/manifest");
        let resp = self
            .call(&what, reqwest::Method::GET, &path, Body::None, false, None)
            .await?;
        Manifest::decode_expecting(&resp.body, id).map_err(|e| self.bad(&what, e))
    }

    /// Who holds song `id` whole (best first for `region`) and who holds each shard slot.
    pub async fn sources(
        &self,
        id: SongId,
        region: Option<&str>,
    ) -> Result<SongSources, TrackerError> {
        let q = SourcesQuery {
            region: region.map(str::to_string),
        };
        let path = with_query(&format!("/v1/songs/{id}/sources"), &q);
        let s: SongSources = self.get(&format!("sources of song {id}"), &path).await?;
        if s.song != id {
            return Err(self.bad("source list", format!("it lists song {}", s.song)));
        }
        Ok(s)
    }

    /// A page of the catalogue's artists, after `after` (a name, case-insensitive).
    pub async fn artists(&self, after: &str, limit: usize) -> Result<ArtistPage, TrackerError> {
        let q = ArtistsQuery {
            after: after.to_string(),
            limit: Some(limit),
        };
        self.get("the artist list", &with_query("/v1/browse/artists", &q))
            .await
    }

    /// Every song in id order: `limit` (1 to 500) after the first `offset`.
    pub async fn songs_page(&self, offset: usize, limit: usize) -> Result<SongPage, TrackerError> {
        let q = SongsQuery {
            offset,
            limit: Some(limit),
        };
        self.get("the song list", &with_query("/v1/browse/songs", &q))
            .await
    }

    /// Up to `size` songs at random, optionally of one genre.
    pub async fn random_songs(
        &self,
        size: usize,
        genre: Option<&str>,
    ) -> Result<Vec<Hit>, TrackerError> {
        let q = RandomQuery {
            size: Some(size),
            genre: genre.map(str::to_string),
        };
        let r: RandomSongs = self
            .get("random songs", &with_query("/v1/browse/random", &q))
            .await?;
        Ok(r.songs)
    }

    /// Grants to upload `manifest`'s shards, with where each shard goes.
    pub async fn publish_grants(&self, manifest: &Manifest) -> Result<PublishGrants, TrackerError> {
        let what = "publish grants";
        let g: PublishGrants = self
            .post_manifest(what, "/v1/publish/grants", manifest)
            .await?;
        if g.song != manifest.id() {
            return Err(self.bad(what, format!("they are for song {}", g.song)));
        }
        Ok(g)
    }

    /// Commits a signed manifest.
    pub async fn publish(&self, manifest: &Manifest) -> Result<Committed, TrackerError> {
        self.post_manifest("the publish", "/v1/publish", manifest)
            .await
    }

    /// POSTs `manifest`'s encoding to `path` and reads the answer.
    async fn post_manifest<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        manifest: &Manifest,
    ) -> Result<T, TrackerError> {
        let body = Body::Manifest(manifest.encoded());
        let resp = self
            .call(what, reqwest::Method::POST, path, body, false, None)
            .await?;
        self.parse(what, resp)
    }

    /// Reports a play.
    pub async fn report_play(&self, report: &PlayReport) -> Result<PlayRecorded, TrackerError> {
        let what = "the play report";
        let resp = self.post(what, "/v1/plays", report, false, None).await?;
        self.parse(what, resp)
    }

    /// Tells the tracker which songs this listener holds whole and serves (signed).
    pub async fn announce(&self, a: &PeerAnnouncement) -> Result<(), TrackerError> {
        self.post("the peer announcement", "/v1/peers/announce", a, true, None)
            .await
            .map(drop)
    }

    /// Reports a source that failed this client (signed when a signer is set).
    pub async fn report_source(&self, r: &SourceReport) -> Result<(), TrackerError> {
        self.post("the source report", "/v1/reports", r, true, None)
            .await
            .map(drop)
    }

    /// The songs hot in some region, hottest first.
    pub async fn popularity(&self) -> Result<Vec<HotSong>, TrackerError> {
        let p: Popularity = self.get("the popular songs", "/v1/popularity").await?;
        Ok(p.hot)
    }

    // Nodes and the layout.

    /// Counters, coding parameters and the tracker key.
    pub async fn stats(&self) -> Result<Stats, TrackerError> {
        self.get("the stats", "/v1/stats").await
    }

    /// The node registry.
    pub async fn nodes(&self) -> Result<Vec<NodeEntry>, TrackerError> {
        let l: NodeList = self.get("the node list", "/v1/nodes").await?;
        Ok(l.nodes)
    }

    /// Registers a node (signed).
    pub async fn register(&self, r: &Registration) -> Result<Registered, TrackerError> {
        let what = "the registration";
        let resp = self.post(what, "/v1/nodes/register", r, true, None).await?;
        self.parse(what, resp)
    }

    /// Sends a heartbeat (signed).
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), TrackerError> {
        self.post("the heartbeat", "/v1/nodes/heartbeat", hb, true, None)
            .await
            .map(drop)
    }

    /// Tells the tracker that node `peer_id` is stopping (signed).
    pub async fn leave(&self, peer_id: &str) -> Result<(), TrackerError> {
        let l = Leaving {
            peer_id: peer_id.to_string(),
        };
        self.post("the leave notice", "/v1/nodes/leave", &l, true, None)
            .await
            .map(drop)
    }

    /// The current layout, unsigned: for display and tools, not for acting on.
    pub async fn layout(&self) -> Result<Layout, TrackerError> {
        self.get("the layout", "/v1/layout").await
    }

    /// Layout `version` (or the current one), signed by `key`.
    pub async fn layout_signed(
        &self,
        version: Option<u64>,
        key: &TrackerId,
    ) -> Result<Layout, TrackerError> {
        let path = match version {
            Some(v) => format!("/v1/layout?version={v}"),
            None => "/v1/layout".to_string(),
        };
        self.get_signed("the layout", &path, key).await
    }

    /// Every segment placed in `partition`, paging through the placement index; each page
    /// signed by `key`.
    pub async fn partition_segments(
        &self,
        partition: u16,
        key: &TrackerId,
    ) -> Result<Vec<SegmentEntry>, TrackerError> {
        let mut out = Vec::new();
        let mut after: Option<SegmentId> = None;
        loop {
            let path = match after {
                Some(a) => format!("/v1/partitions/{partition}/segments?limit=2000&after={a}"),
                None => format!("/v1/partitions/{partition}/segments?limit=2000"),
            };
            let page: PartitionSegments = self
                .get_signed("a partition's segments", &path, key)
                .await?;
            if page.partition != partition {
                return Err(self.bad(
                    "partition listing",
                    format!("asked for {partition}, got {}", page.partition),
                ));
            }
            out.extend(page.segments);
            match page.next {
                Some(n) if Some(n) != after => after = Some(n),
                _ => return Ok(out),
            }
        }
    }

    /// The songs node `peer_id` is ordered to hold whole, signed by `key`.
    pub async fn hot_orders(
        &self,
        peer_id: &str,
        key: &TrackerId,
    ) -> Result<Vec<SongId>, TrackerError> {
        let o: HotOrders = self
            .get_signed("hot orders", &format!("/v1/nodes/{peer_id}/hot"), key)
            .await?;
        Ok(o.songs)
    }

    // Admin.

    /// Starts (`true`) or cancels (`false`) the drain of node `peer_id`.
    pub async fn set_draining(
        &self,
        peer_id: &str,
        draining: bool,
        admin_token: Option<&str>,
    ) -> Result<DrainState, TrackerError> {
        let verb = if draining { "drain" } else { "undrain" };
        let path = format!("/v1/nodes/{peer_id}/{verb}");
        self.admin(
            &format!("the {verb} of {peer_id}"),
            reqwest::Method::POST,
            &path,
            admin_token,
        )
        .await
    }

    /// A join token for one node (`medley-tracker nodes invite`).
    pub async fn invite(
        &self,
        request: &InviteRequest,
        admin_token: Option<&str>,
    ) -> Result<InviteToken, TrackerError> {
        let what = "the join token";
        let resp = self
            .post(what, "/v1/nodes/invites", request, false, admin_token)
            .await?;
        self.parse(what, resp)
    }

    /// Admits node `peer_id` (`medley-tracker nodes approve`), clearing an eviction;
    /// `capacity` caps what it may count with.
    pub async fn approve(
        &self,
        peer_id: &str,
        capacity: Option<u64>,
        admin_token: Option<&str>,
    ) -> Result<AdmissionChange, TrackerError> {
        let what = format!("the approval of {peer_id}");
        let path = format!("/v1/nodes/{peer_id}/approve");
        let resp = self
            .post(
                &what,
                &path,
                &ApproveRequest { capacity },
                false,
                admin_token,
            )
            .await?;
        self.parse(&what, resp)
    }

    /// Revokes node `peer_id`'s admission (`medley-tracker nodes revoke`): it leaves the
    /// layout, and its slots move to other nodes.
    pub async fn revoke(
        &self,
        peer_id: &str,
        admin_token: Option<&str>,
    ) -> Result<AdmissionChange, TrackerError> {
        let path = format!("/v1/nodes/{peer_id}/revoke");
        self.admin(
            &format!("the revocation of {peer_id}"),
            reqwest::Method::POST,
            &path,
            admin_token,
        )
        .await
    }

    /// What draining `drain` and undraining `undrain` would move.
    pub async fn layout_preview(
        &self,
        drain: &[String],
        undrain: &[String],
        admin_token: Option<&str>,
    ) -> Result<LayoutPreview, TrackerError> {
        let q = PreviewQuery {
            drain: drain.join(","),
            undrain: undrain.join(","),
        };
        let path = with_query("/v1/layout/preview", &q);
        self.admin(
            "the layout preview",
            reqwest::Method::GET,
            &path,
            admin_token,
        )
        .await
    }

    /// The authorised publisher keys.
    pub async fn publishers(&self, admin_token: Option<&str>) -> Result<Vec<String>, TrackerError> {
        let l: PublisherList = self
            .admin(
                "the publisher list",
                reqwest::Method::GET,
                "/v1/publishers",
                admin_token,
            )
            .await?;
        Ok(l.publishers)
    }

    /// Authorises a publisher key (hex).
    pub async fn add_publisher(
        &self,
        key: &str,
        admin_token: Option<&str>,
    ) -> Result<PublisherChange, TrackerError> {
        let what = "the new publisher";
        let body = NewPublisher {
            key: key.to_string(),
        };
        let resp = self
            .post(what, "/v1/publishers", &body, false, admin_token)
            .await?;
        self.parse(what, resp)
    }

    /// Revokes a publisher key (hex).
    pub async fn remove_publisher(
        &self,
        key: &str,
        admin_token: Option<&str>,
    ) -> Result<PublisherChange, TrackerError> {
        let path = format!("/v1/publishers/{key}");
        self.admin(
            "the publisher revocation",
            reqwest::Method::DELETE,
            &path,
            admin_token,
        )
        .await
    }

    /// An admin request and its answer. A POST carries an empty JSON object: the tracker
    /// takes state-changing requests only with a JSON body, which a cross-site form cannot
    /// send.
    async fn admin<T: DeserializeOwned>(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        admin_token: Option<&str>,
    ) -> Result<T, TrackerError> {
        let body = if method == reqwest::Method::POST {
            Body::Json(b"{}".to_vec())
        } else {
            Body::None
        };
        let resp = self
            .call(what, method, path, body, false, admin_token)
            .await?;
        self.parse(what, resp)
    }
}

/// One request over the Unix socket at `sock`.
async fn unix_call(
    sock: &std::path::Path,
    method: reqwest::Method,
    path: &str,
    mut headers: hyper::HeaderMap,
    body: Vec<u8>,
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(sock).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    headers.insert("host", hyper::header::HeaderValue::from_static("localhost"));
    let mut req = hyper::Request::builder()
        .method(method.as_str())
        .uri(path)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    *req.headers_mut() = headers;
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

/// The TLS settings of every tracker client: rustls with aws-lc-rs (the provider the data
/// plane's QUIC uses), trusting the system's certificate authorities and those of `ca`.
fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, TrackerError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // A machine without a CA bundle can still reach a tracker under a private CA.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca {
        let bad = |reason: String| {
            TrackerError::Config(format!("tracker CA file {}: {reason}", path.display()))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrackerError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `path` with `q` as its query string (nothing when `q` has no fields set).
fn with_query<Q: Serialize>(path: &str, q: &Q) -> String {
    // Our query types are flat structs of strings and numbers: they always encode.
    let query = serde_urlencoded::to_string(q).unwrap_or_default();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_carry_only_the_fields_set() {
        assert_eq!(
            with_query("/v1/search", &SearchQuery::default()),
            "/v1/search"
        );
        let q = SearchQuery {
            q: "velvet fox & co".into(),
            year_from: Some(1990),
            offset: 20,
            ..SearchQuery::default()
        };
        assert_eq!(
            with_query("/v1/search", &q),
            "/v1/search?q=velvet+fox+%26+co&year_from=1990&offset=20"
        );
    }
}
