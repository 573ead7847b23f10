//! The few tracker calls a node makes besides its heartbeat: the layout (current and past
//! versions), the segments of a partition, the nodes and their addresses, and drains.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use medley_core::{Layout, Manifest, SegmentEntry, SegmentId, SongId};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why a tracker call failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackerCallError {
    /// No answer, or an unreadable one.
    #[error("tracker at {url}: {source}")]
    Transport {
        /// The URL asked.
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// An answer the node acts on is not signed by the tracker's key, or too old.
    #[error("tracker answer from {url} refused: {reason}")]
    Unsigned {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The tracker answered with an error status.
    #[error("tracker answered {status} to {url}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// The error body.
        body: String,
    },
}

impl TrackerCallError {
    /// The HTTP status, if the tracker answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Transport { .. } | Self::Unsigned { .. } => None,
        }
    }
}

/// A node as `GET /v1/nodes` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeEntry {
    /// Peer id.
    pub peer_id: String,
    /// Data-plane multiaddrs.
    pub addrs: Vec<String>,
    /// Whether it has sent a heartbeat within the grace period.
    pub alive: bool,
    /// Whether it is draining.
    pub draining: bool,
    /// Durable shards it reported holding.
    pub shards: u64,
}

#[derive(Debug, Deserialize)]
struct NodesJson {
    nodes: Vec<NodeItem>,
}

#[derive(Debug, Deserialize)]
struct NodeItem {
    node: NodeJson,
    alive: bool,
}

#[derive(Debug, Deserialize)]
struct NodeJson {
    peer_id: String,
    addrs: Vec<String>,
    #[serde(default)]
    draining: bool,
    #[serde(default)]
    load: LoadJson,
}

#[derive(Debug, Default, Deserialize)]
struct LoadJson {
    #[serde(default)]
    shards: u64,
}

#[derive(Debug, Deserialize)]
struct SegmentsPage {
    segments: Vec<SegmentEntry>,
    next: Option<SegmentId>,
}

/// What a node needs of `GET /v1/stats`.
#[derive(Debug, Clone, Deserialize)]
pub struct TrackerStats {
    /// Current layout version (`None`: no layout yet).
    pub layout_version: Option<u64>,
    /// Data shards per segment.
    pub k: u8,
    /// Parity shards per segment.
    pub m: u8,
}

/// A tracker HTTP client.
#[derive(Debug, Clone)]
pub struct TrackerApi {
    http: reqwest::Client,
    base: String,
    /// The tracker's key, which signs layouts, partition listings and hot orders.
    key: Option<std::sync::Arc<crate::service::GrantKey>>,
}

impl TrackerApi {
    /// A client of the tracker at `base` (e.g. `http://127.0.0.1:4700`).
    pub fn new(base: &str) -> Result<Self, TrackerCallError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| TrackerCallError::Transport {
                url: base.to_string(),
                source,
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: None,
        })
    }

    /// Checks the answers the node acts on against `key` (learnt at registration).
    pub(crate) fn with_key(mut self, key: std::sync::Arc<crate::service::GrantKey>) -> Self {
        self.key = Some(key);
        self
    }

    /// A GET whose answer must be signed by the tracker's key and recent.
    async fn get_signed<T: DeserializeOwned>(&self, path: &str) -> Result<T, TrackerCallError> {
        let url = format!("{}{path}", self.base);
        let refuse = |reason: String| TrackerCallError::Unsigned {
            url: url.clone(),
            reason,
        };
        let key = self
            .key
            .as_ref()
            .and_then(|k| k.get())
            .ok_or_else(|| refuse("the tracker's key is not known yet".into()))?;
        let resp =
            self.http
                .get(&url)
                .send()
                .await
                .map_err(|source| TrackerCallError::Transport {
                    url: url.clone(),
                    source,
                })?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (time, signature) = (
            header(medley_core::api::ANSWER_TIME_HEADER),
            header(medley_core::api::ANSWER_SIGNATURE_HEADER),
        );
        let bytes = answer_bytes(resp, &url).await?;
        let (Some(time), Some(signature)) = (time, signature) else {
            return Err(refuse("the answer is not signed".into()));
        };
        let time: u64 = time
            .parse()
            .map_err(|_| refuse("the signing time is not a number".into()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if time.abs_diff(now) > medley_core::api::MAX_ANSWER_AGE_MS {
            return Err(refuse(format!("signed at {time}, now is {now}")));
        }
        let signature =
            hex::decode(signature).map_err(|_| refuse("the signature is not hex".into()))?;
        key.verify_statement(
            &medley_core::api::signed_answer(path, time, &bytes),
            &signature,
        )
        .map_err(|e| refuse(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| refuse(format!("unreadable answer: {e}")))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: String,
    ) -> Result<T, TrackerCallError> {
        let transport = |source| TrackerCallError::Transport {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(TrackerCallError::Status {
                url,
                status: status.as_u16(),
                body,
            });
        }
        resp.json().await.map_err(transport)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, TrackerCallError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), url).await
    }

    /// The network's coding and current layout version.
    pub async fn stats(&self) -> Result<TrackerStats, TrackerCallError> {
        self.get("/v1/stats").await
    }

    /// The current layout's version (`None`: no layout yet).
    pub async fn layout_version(&self) -> Result<Option<u64>, TrackerCallError> {
        Ok(self.stats().await?.layout_version)
    }

    /// Layout `version`, or the current one.
    pub async fn layout(&self, version: Option<u64>) -> Result<Layout, TrackerCallError> {
        match version {
            Some(v) => self.get_signed(&format!("/v1/layout?version={v}")).await,
            None => self.get_signed("/v1/layout").await,
        }
    }

    /// Every segment of `partition`, paging through the placement index.
    pub async fn partition_segments(
        &self,
        partition: u16,
    ) -> Result<Vec<SegmentEntry>, TrackerCallError> {
        let mut out = Vec::new();
        let mut after: Option<SegmentId> = None;
        loop {
            let path = match after {
                Some(a) => format!("/v1/partitions/{partition}/segments?limit=2000&after={a}"),
                None => format!("/v1/partitions/{partition}/segments?limit=2000"),
            };
            let page: SegmentsPage = self.get_signed(&path).await?;
            out.extend(page.segments);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// The registered nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeEntry>, TrackerCallError> {
        let j: NodesJson = self.get("/v1/nodes").await?;
        Ok(j.nodes
            .into_iter()
            .map(|n| NodeEntry {
                peer_id: n.node.peer_id,
                addrs: n.node.addrs,
                alive: n.alive,
                draining: n.node.draining,
                shards: n.node.load.shards,
            })
            .collect())
    }

    /// The songs node `peer_id` is ordered to hold whole.
    pub(crate) async fn hot_orders(&self, peer_id: &str) -> Result<Vec<SongId>, TrackerCallError> {
        #[derive(Deserialize)]
        struct Orders {
            songs: Vec<SongId>,
        }
        let o: Orders = self.get_signed(&format!("/v1/nodes/{peer_id}/hot")).await?;
        Ok(o.songs)
    }

    /// The signed manifest of song `id`, checked against its id.
    pub(crate) async fn manifest(&self, id: SongId) -> Result<Manifest, TrackerCallError> {
        let url = format!("{}/v1/songs/{id}/manifest", self.base);
        let transport = |source| TrackerCallError::Transport {
            url: url.clone(),
            source,
        };
        let resp = self.http.get(&url).send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = answer_bytes(resp, &url).await?;
        Manifest::decode_expecting(&bytes, id).map_err(|e| TrackerCallError::Status {
            url,
            status: status.as_u16(),
            body: format!("the manifest does not verify: {e}"),
        })
    }

    /// Who holds song `id` whole and who holds each shard.
    pub(crate) async fn sources(&self, id: SongId) -> Result<SongSources, TrackerCallError> {
        self.get(&format!("/v1/songs/{id}/sources")).await
    }

    /// Starts (`true`) or cancels (`false`) the drain of node `peer_id`; returns the layout
    /// version that follows.
    pub async fn set_draining(
        &self,
        peer_id: &str,
        draining: bool,
        admin_token: Option<&str>,
    ) -> Result<Option<u64>, TrackerCallError> {
        #[derive(Deserialize)]
        struct Answer {
            layout_version: Option<u64>,
        }
        let verb = if draining { "drain" } else { "undrain" };
        let url = format!("{}/v1/nodes/{peer_id}/{verb}", self.base);
        let mut req = self.http.post(&url);
        if let Some(t) = admin_token {
            req = req.bearer_auth(t);
        }
        let a: Answer = self.send(req, url).await?;
        Ok(a.layout_version)
    }
}

/// The body of a successful answer, or the error status with its body.
async fn answer_bytes(
    resp: reqwest::Response,
    url: &str,
) -> Result<axum::body::Bytes, TrackerCallError> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| TrackerCallError::Transport {
            url: url.to_string(),
            source,
        })?;
    if status.is_success() {
        Ok(bytes)
    } else {
        Err(TrackerCallError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

/// A song's sources as `GET /v1/songs/{id}/sources` lists them.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SongSources {
    /// Who holds it whole, best first.
    #[serde(default)]
    pub(crate) whole: Vec<WholeJson>,
    /// Per segment, the holder of each slot.
    pub(crate) segments: Vec<SegmentSourcesJson>,
}

/// A whole copy.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WholeJson {
    pub(crate) peer_id: String,
    pub(crate) addrs: Vec<String>,
}

/// One segment's slot holders.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SegmentSourcesJson {
    pub(crate) shards: Vec<SlotJson>,
}

/// One slot's holder.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SlotJson {
    pub(crate) peer_id: Option<String>,
    #[serde(default)]
    pub(crate) addrs: Vec<String>,
}

/// A peer id and addresses from the tracker, parsed; `None` if unusable.
pub(crate) fn parse_source(peer_id: &str, addrs: &[String]) -> Option<(PeerId, Vec<Multiaddr>)> {
    let peer: PeerId = peer_id.parse().ok()?;
    let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
    (!addrs.is_empty()).then_some((peer, addrs))
}

/// Live nodes' peer ids and addresses, parsed; nodes with unusable entries are left out.
pub(crate) fn live_addresses(nodes: &[NodeEntry]) -> HashMap<String, (PeerId, Vec<Multiaddr>)> {
    nodes
        .iter()
        .filter(|n| n.alive)
        .filter_map(|n| {
            let peer: PeerId = n.peer_id.parse().ok()?;
            let addrs = n.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            Some((n.peer_id.clone(), (peer, addrs)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::HeaderMap;
    use medley_core::TrackerKey;
    use medley_core::api::{ANSWER_SIGNATURE_HEADER, ANSWER_TIME_HEADER, signed_answer};

    use super::*;
    use crate::service::GrantKey;

    /// A stand-in tracker answering `/v1/layout` as `answer` says: the signature and time
    /// headers it sends are computed by `sign` from the body and the time.
    async fn tracker(
        sign: impl Fn(&[u8], u64) -> Option<(u64, String)> + Clone + Send + Sync + 'static,
    ) -> String {
        let body = serde_json::to_vec(&serde_json::json!({
            "version": 3, "slots": 2, "partitions": [["a", "b"]]
        }))
        .unwrap();
        let app = axum::Router::new().route(
            "/v1/layout",
            axum::routing::get(move || {
                let (sign, body) = (sign.clone(), body.clone());
                async move {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as u64;
                    let mut headers = HeaderMap::new();
                    if let Some((time, sig)) = sign(&body, now) {
                        headers.insert(ANSWER_TIME_HEADER, time.to_string().parse().unwrap());
                        headers.insert(ANSWER_SIGNATURE_HEADER, sig.parse().unwrap());
                    }
                    (headers, body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn signer(
        key: TrackerKey,
        shift_ms: i64,
    ) -> impl Fn(&[u8], u64) -> Option<(u64, String)> + Clone + Send + Sync + 'static {
        move |body, now| {
            let time = now.saturating_add_signed(shift_ms);
            let sig = key.sign_statement(&signed_answer("/v1/layout", time, body));
            Some((time, hex::encode(sig)))
        }
    }

    #[tokio::test]
    async fn layouts_are_taken_only_signed_by_the_known_tracker_key_and_recent() {
        let tracker_key = TrackerKey::from_seed([5; 32]);
        let known = Arc::new(GrantKey::new(Some(tracker_key.id())));
        let api = |url: &str| TrackerApi::new(url).unwrap().with_key(known.clone());

        let good = api(&tracker(signer(tracker_key.clone(), 0)).await);
        assert_eq!(good.layout(None).await.unwrap().version, 3);

        let refused = [
            ("unsigned", tracker(|_: &[u8], _| None).await),
            (
                "another key",
                tracker(signer(TrackerKey::from_seed([6; 32]), 0)).await,
            ),
            (
                "ten minutes old",
                tracker(signer(tracker_key.clone(), -600_000)).await,
            ),
            (
                "garbage signature",
                tracker(|_: &[u8], now| Some((now, "zz".into()))).await,
            ),
        ];
        for (what, url) in refused {
            let e = api(&url).layout(None).await.unwrap_err();
            assert!(
                matches!(e, TrackerCallError::Unsigned { .. }),
                "{what}: {e}"
            );
        }
        // Without a known key nothing is taken.
        let keyless = TrackerApi::new(&tracker(signer(tracker_key, 0)).await)
            .unwrap()
            .with_key(Arc::new(GrantKey::new(None)));
        assert!(keyless.layout(None).await.is_err());
    }
}
