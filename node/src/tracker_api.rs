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
            Self::Transport { .. } => None,
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
        })
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
            Some(v) => self.get(&format!("/v1/layout?version={v}")).await,
            None => self.get("/v1/layout").await,
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
            let page: SegmentsPage = self.get(&path).await?;
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
        let o: Orders = self.get(&format!("/v1/nodes/{peer_id}/hot")).await?;
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
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(TrackerCallError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
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
