//! The tracker's HTTP API, as the client uses it. Everything the tracker sends is checked:
//! a manifest against the id it was asked for, ids and addresses by parsing.

use std::sync::Arc;
use std::time::Duration;

use medley_core::{Manifest, SongId, SongMeta};
use medley_net::{Multiaddr, PeerId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;

/// A search request (see the tracker's `GET /v1/search`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchParams {
    /// Free text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub q: String,
    /// Only this artist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// Only this album.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// Only this genre.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// From this year.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year_from: Option<u16>,
    /// Up to this year.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year_to: Option<u16>,
    /// Results to skip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// Results to return.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

pub use medley_core::api::{Artist, Hit, SearchResults as SearchPage};

/// A node that holds a shard slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its peer id.
    pub peer: PeerId,
    /// Its data-plane addresses.
    pub addrs: Vec<Multiaddr>,
    /// `false` when the tracker knows the node stopped or went quiet: tried last.
    pub alive: bool,
}

/// The current layout: for each partition, its nodes in slot order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LayoutView {
    /// Layout version.
    pub version: u64,
    /// Slots per partition (`k + m`).
    pub slots: usize,
    /// Peer ids per partition.
    pub partitions: Vec<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct NodesView {
    nodes: Vec<NodeEntry>,
}

/// A node in the registry.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeEntry {
    /// What it registered and reported.
    pub node: NodeView,
    /// Heard from recently.
    pub alive: bool,
}

/// A registered node.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeView {
    /// Peer id.
    pub peer_id: String,
    /// Addresses.
    pub addrs: Vec<String>,
    /// Region.
    pub region: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Last reported load.
    pub load: LoadView,
    /// Handing its shards over before leaving.
    #[serde(default)]
    pub draining: bool,
    /// Said it is stopping (cleared when it is heard from again).
    #[serde(default)]
    pub stopped: bool,
}

/// A node's reported load.
#[derive(Debug, Clone, Deserialize)]
pub struct LoadView {
    /// Free bytes.
    pub free: u64,
    /// Bytes stored.
    #[serde(default)]
    pub used: u64,
    /// Durable shards held.
    #[serde(default)]
    pub shards: u64,
    /// Its repair and scrub work.
    #[serde(default)]
    pub repair: medley_core::api::RepairLoad,
}

#[derive(Debug, Deserialize)]
struct SourcesView {
    #[serde(default)]
    whole: Vec<WholeView>,
    segments: Vec<SegmentSources>,
}

#[derive(Debug, Deserialize)]
struct WholeView {
    peer_id: String,
    addrs: Vec<String>,
    kind: SourceKind,
}

/// What kind of whole copy a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A listener serving its cache.
    Peer,
    /// A storage node's hot tier.
    Hot,
}

/// A source of whole segments of a song.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeCopy {
    /// Its peer id.
    pub peer: PeerId,
    /// Its data-plane addresses.
    pub addrs: Vec<Multiaddr>,
    /// Peer or hot node.
    pub kind: SourceKind,
}

/// A song hot in a region.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HotView {
    /// The song.
    pub song: SongId,
    /// The region.
    pub region: String,
    /// Decayed plays there now.
    pub heat: f64,
    /// Nodes ordered to hold it whole.
    pub ordered: Vec<String>,
    /// Nodes that report holding it whole.
    pub held_by: Vec<String>,
}

/// A song's sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SongSources {
    /// Per segment, per slot, the shard holder.
    pub holders: Vec<Vec<Option<Holder>>>,
    /// Whole copies, best first.
    pub whole: Vec<WholeCopy>,
}

#[derive(Debug, Deserialize)]
struct SegmentSources {
    index: usize,
    shards: Vec<SlotSource>,
}

#[derive(Debug, Deserialize)]
struct SlotSource {
    slot: usize,
    peer_id: Option<String>,
    #[serde(default)]
    addrs: Vec<String>,
    #[serde(default = "yes")]
    alive: bool,
    /// Reported by several listeners for sending wrong bytes: never asked.
    #[serde(default)]
    banned: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct ApiErrorBody {
    error: ApiErrorInner,
}

#[derive(Debug, Deserialize)]
struct ApiErrorInner {
    code: String,
    message: String,
}

/// What a publish returned.
#[derive(Debug, Clone, Deserialize)]
pub struct Committed {
    /// The song's id.
    pub id: String,
    /// False when the song was already in the catalogue.
    pub created: bool,
}

/// Song metadata and shape, as `GET /v1/songs/{id}` shows them.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SongInfo {
    /// Song id.
    pub id: String,
    /// Metadata.
    #[serde(flatten)]
    pub meta: SongMeta,
    /// File size.
    pub size: u64,
}

/// The tracker's counters and coding parameters (`GET /v1/stats`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TrackerStats {
    /// Songs in the catalogue.
    pub songs: u64,
    /// Registered nodes.
    pub nodes: usize,
    /// Nodes heard from recently.
    pub nodes_alive: usize,
    /// Current layout version, if any.
    pub layout_version: Option<u64>,
    /// Partitions of the layout.
    pub partitions: u16,
    /// Data shards per segment.
    pub k: u8,
    /// Parity shards per segment.
    pub m: u8,
}

/// A client of one tracker.
#[derive(Debug, Clone)]
pub struct TrackerClient {
    base: String,
    http: reqwest::Client,
    /// The listener's identity, which signs its announcements and reports once known.
    signer: Arc<std::sync::OnceLock<medley_net::Keypair>>,
}

impl TrackerClient {
    /// A client of the tracker at `base` (e.g. `http://127.0.0.1:4700`).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            signer: Arc::default(),
        })
    }

    /// Signs announcements and reports with `key` from now on (the first key set stays).
    pub fn set_signer(&self, key: medley_net::Keypair) {
        let _ = self.signer.set(key);
    }

    /// A client of the same tracker that signs with `key`.
    pub fn with_signer(&self, key: medley_net::Keypair) -> Self {
        Self {
            signer: Arc::new(std::sync::OnceLock::from(key)),
            ..self.clone()
        }
    }

    /// A JSON `POST` to `path`, signed when a key is set.
    fn post_signed(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        match self.signer.get() {
            Some(key) => medley_net::signed::post_json(&self.http, &url, key, body),
            None => self.http.post(url).json(body),
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::TrackerDown {
            url: self.base.clone(),
            reason: medley_daemon::error_chain(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<ApiErrorBody>(&body) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            ),
        };
        Err(ClientError::Tracker {
            what: what.to_string(),
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// Sends `req` and parses the JSON answer.
    async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(what, req).await?;
        resp.json().await.map_err(|e| ClientError::BadTrackerData {
            what: "response",
            reason: format!("{what}: {e}"),
        })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        self.json(what, self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// Searches the catalogue.
    pub async fn search(&self, params: &SearchParams) -> Result<SearchPage, ClientError> {
        let req = self
            .http
            .get(format!("{}/v1/search", self.base))
            .query(params);
        self.json("the search", req).await
    }

    /// A song's metadata.
    pub async fn song(&self, id: SongId) -> Result<SongInfo, ClientError> {
        self.get_json(&format!("song {id}"), &format!("/v1/songs/{id}"))
            .await
            .map_err(unknown_song(id))
    }

    /// A song's signed manifest, checked against `id` (hash, encoding, signature).
    pub async fn manifest(&self, id: SongId) -> Result<Manifest, ClientError> {
        let resp = self
            .send(
                &format!("the manifest of song {id}"),
                self.http
                    .get(format!("{}/v1/songs/{id}/manifest", self.base)),
            )
            .await
            .map_err(unknown_song(id))?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::TrackerDown {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        Manifest::decode_expecting(&bytes, id).map_err(|e| ClientError::BadTrackerData {
            what: "manifest",
            reason: e.to_string(),
        })
    }

    /// For each segment of a song, the holder of each shard slot (`None` where the layout
    /// has no node or the address is unusable).
    pub async fn sources(
        &self,
        id: SongId,
        segments: usize,
        slots: usize,
    ) -> Result<Vec<Vec<Option<Holder>>>, ClientError> {
        Ok(self.song_sources(id, segments, slots, None).await?.holders)
    }

    /// A song's sources for a client in `region`: who holds it whole (best first), and for
    /// each segment the holder of each shard slot.
    pub async fn song_sources(
        &self,
        id: SongId,
        segments: usize,
        slots: usize,
        region: Option<&str>,
    ) -> Result<SongSources, ClientError> {
        let path = match region {
            Some(r) => format!(
                "/v1/songs/{id}/sources?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("region", r)
                    .finish()
            ),
            None => format!("/v1/songs/{id}/sources"),
        };
        let view: SourcesView = self
            .get_json(&format!("sources of song {id}"), &path)
            .await
            .map_err(unknown_song(id))?;
        let bad = |reason: String| ClientError::BadTrackerData {
            what: "source list",
            reason,
        };
        if view.segments.len() != segments {
            return Err(bad(format!(
                "{} segments listed, the manifest has {segments}",
                view.segments.len()
            )));
        }
        let mut out = vec![vec![None; slots]; segments];
        for seg in view.segments {
            let row = out
                .get_mut(seg.index)
                .ok_or_else(|| bad(format!("segment index {} out of range", seg.index)))?;
            for s in seg.shards {
                let Some(cell) = row.get_mut(s.slot) else {
                    return Err(bad(format!("slot {} out of range", s.slot)));
                };
                *cell = s
                    .peer_id
                    .filter(|_| !s.banned)
                    .and_then(|p| holder(&p, &s.addrs))
                    .map(|h| Holder {
                        alive: s.alive,
                        ..h
                    });
            }
        }
        let whole = view
            .whole
            .into_iter()
            .filter_map(|w| {
                let h = holder(&w.peer_id, &w.addrs)?;
                Some(WholeCopy {
                    peer: h.peer,
                    addrs: h.addrs,
                    kind: w.kind,
                })
            })
            .collect();
        Ok(SongSources {
            holders: out,
            whole,
        })
    }

    /// Tells the tracker that `source` failed this client on `song` (`bad_hash`: it sent
    /// bytes that do not match their hash; `failed`: it did not deliver).
    pub async fn report_source(
        &self,
        source: &PeerId,
        song: SongId,
        reason: &str,
    ) -> Result<(), ClientError> {
        let req = self.post_signed(
            "/v1/reports",
            &serde_json::json!({ "peer_id": source.to_string(), "song": song.to_string(), "reason": reason }),
        );
        self.send("the source report", req).await?;
        Ok(())
    }

    /// Tells the tracker which songs this listener holds whole and serves from `addrs`.
    pub async fn announce(
        &self,
        peer_id: &PeerId,
        addrs: &[String],
        region: &str,
        songs: &[SongId],
    ) -> Result<(), ClientError> {
        let req = self.post_signed(
            "/v1/peers/announce",
            &serde_json::json!({
                "peer_id": peer_id.to_string(),
                "addrs": addrs,
                "region": region,
                "songs": songs,
            }),
        );
        self.send("the peer announcement", req).await?;
        Ok(())
    }

    /// Counters and coding parameters.
    pub async fn stats(&self) -> Result<TrackerStats, ClientError> {
        self.get_json("the stats", "/v1/stats").await
    }

    /// The current layout.
    pub async fn layout(&self) -> Result<LayoutView, ClientError> {
        self.get_json("the layout", "/v1/layout").await
    }

    /// The node registry.
    pub async fn nodes(&self) -> Result<Vec<NodeEntry>, ClientError> {
        let v: NodesView = self.get_json("the node list", "/v1/nodes").await?;
        Ok(v.nodes)
    }

    /// The songs hot in some region, hottest first.
    pub async fn hot(&self) -> Result<Vec<HotView>, ClientError> {
        #[derive(Deserialize)]
        struct Hot {
            hot: Vec<HotView>,
        }
        let h: Hot = self.get_json("the popular songs", "/v1/popularity").await?;
        Ok(h.hot)
    }

    /// Grants to upload `manifest`'s shards to the nodes the layout places them on.
    pub async fn publish_grants(
        &self,
        manifest: &Manifest,
    ) -> Result<medley_core::api::PublishGrants, ClientError> {
        self.post_manifest("/v1/publish/grants", manifest, "publish grants")
            .await
    }

    /// Commits a signed manifest.
    pub async fn publish(&self, manifest: &Manifest) -> Result<Committed, ClientError> {
        self.post_manifest("/v1/publish", manifest, "publish answer")
            .await
    }

    /// POSTs `manifest`'s encoding to `path` and reads the JSON answer (`what`, for errors).
    async fn post_manifest<T: DeserializeOwned>(
        &self,
        path: &str,
        manifest: &Manifest,
        what: &'static str,
    ) -> Result<T, ClientError> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .body(manifest.encoded().to_vec());
        let resp = self.send("the manifest", req).await?;
        resp.json().await.map_err(|e| ClientError::BadTrackerData {
            what,
            reason: e.to_string(),
        })
    }

    /// A page of the catalogue's artists, after `after` (a name, case-insensitive); the
    /// cursor of the next page, if any.
    pub async fn artists(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<Artist>, Option<String>), ClientError> {
        #[derive(Deserialize)]
        struct Page {
            artists: Vec<Artist>,
            next: Option<String>,
        }
        let req = self
            .http
            .get(format!("{}/v1/browse/artists", self.base))
            .query(&[("after", after), ("limit", &limit.to_string())]);
        let page: Page = self.json("the artist list", req).await?;
        Ok((page.artists, page.next))
    }

    /// Every song in id order: `limit` (1 to 500) after the first `offset`, and how many
    /// songs there are.
    pub async fn songs_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Hit>, u64), ClientError> {
        #[derive(Deserialize)]
        struct Page {
            songs: Vec<Hit>,
            total: u64,
        }
        let req = self
            .http
            .get(format!("{}/v1/browse/songs", self.base))
            .query(&[("offset", offset), ("limit", limit)]);
        let page: Page = self.json("the song list", req).await?;
        Ok((page.songs, page.total))
    }

    /// Up to `size` songs at random, optionally of one genre.
    pub async fn random_songs(
        &self,
        size: usize,
        genre: Option<&str>,
    ) -> Result<Vec<Hit>, ClientError> {
        #[derive(Deserialize)]
        struct Songs {
            songs: Vec<Hit>,
        }
        let mut q = vec![("size", size.to_string())];
        if let Some(g) = genre {
            q.push(("genre", g.to_string()));
        }
        let req = self
            .http
            .get(format!("{}/v1/browse/random", self.base))
            .query(&q);
        let s: Songs = self.json("random songs", req).await?;
        Ok(s.songs)
    }

    /// Reports that song `id` was played in `region`.
    pub async fn report_play(
        &self,
        id: SongId,
        region: &str,
        delivery: Option<&crate::fetch::Delivery>,
    ) -> Result<(), ClientError> {
        let mut body = serde_json::json!({ "song": id.to_string(), "region": region });
        if let Some(d) = delivery {
            body["delivery"] = serde_json::json!({
                "cache_bytes": d.cache_bytes,
                "peer_bytes": d.peer_bytes,
                "hot_bytes": d.hot_bytes,
                "rebuilt_bytes": d.rebuilt_bytes,
            });
        }
        let req = self
            .http
            .post(format!("{}/v1/plays", self.base))
            .json(&body);
        self.send("the play report", req)
            .await
            .map_err(unknown_song(id))?;
        Ok(())
    }

    /// Whether the catalogue has song `id`.
    pub async fn has_song(&self, id: SongId) -> Result<bool, ClientError> {
        match self.song(id).await {
            Ok(_) => Ok(true),
            Err(ClientError::UnknownSong(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Turns the tracker's `unknown_song` refusal into [`ClientError::UnknownSong`] for `id`.
fn unknown_song(id: SongId) -> impl FnOnce(ClientError) -> ClientError {
    move |e| match e {
        ClientError::Tracker { code, .. } if code == "unknown_song" => {
            ClientError::UnknownSong(id.to_string())
        }
        other => other,
    }
}

/// A holder from a peer id and address strings; `None` if the id or every address is bad.
pub(crate) fn holder(peer_id: &str, addrs: &[String]) -> Option<Holder> {
    let peer: PeerId = peer_id.parse().ok()?;
    let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
    (!addrs.is_empty()).then_some(Holder {
        peer,
        addrs,
        alive: true,
    })
}
