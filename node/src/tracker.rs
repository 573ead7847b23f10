//! The node's link to its tracker: the typed client ([`medley_api::TrackerClient`], signing
//! with the node's identity) and the tracker key the node trusts, which must sign every
//! answer the node acts on (layouts, partition listings, hot orders) and every grant it
//! accepts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use medley_api::{NodeEntry, TrackerClient, TrackerError};
use medley_core::{Layout, SegmentEntry, SongId, TrackerId};

/// File in the data directory holding the tracker key the node trusts (hex): pinned when
/// first learnt, so that whoever answers in the tracker's place later cannot swap it.
pub const TRACKER_PIN_FILE: &str = "tracker-key.pin";

/// The key that signs what this node acts on (grants, layouts, orders): the configured
/// `tracker_key`, else the one pinned in the data directory, else the one its tracker gives
/// at its first registration, which is then pinned. A different key is refused.
#[derive(Debug, Default)]
pub(crate) struct TrackerKeyCell {
    key: parking_lot::RwLock<Option<TrackerId>>,
    /// Where the key is pinned; `None`: kept in memory only.
    pin: Option<PathBuf>,
}

/// Why the node cannot trust a tracker key.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The pin file cannot be read or written.
    #[error("tracker key pin {path}: {reason}")]
    File {
        /// The pin file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configured `tracker_key` is not the one pinned.
    #[error(
        "tracker_key in the config is {configured}, but this node trusts {pinned} (pinned in \
         {path}); if the tracker's key was changed on purpose, remove that file"
    )]
    Conflict {
        /// The configured key.
        configured: TrackerId,
        /// The pinned key.
        pinned: TrackerId,
        /// The pin file.
        path: PathBuf,
    },
}

impl TrackerKeyCell {
    /// A key known from the start (configured), or none yet, kept in memory only.
    #[cfg(test)]
    pub(crate) fn new(key: Option<TrackerId>) -> Self {
        Self {
            key: parking_lot::RwLock::new(key),
            pin: None,
        }
    }

    /// The key the node in `dir` trusts: `configured`, or the one pinned there. A configured
    /// key is pinned when none is; one that differs from the pin is refused.
    pub(crate) fn open(dir: &Path, configured: Option<TrackerId>) -> Result<Self, PinError> {
        let path = dir.join(TRACKER_PIN_FILE);
        let file = |reason: String| PinError::File {
            path: path.clone(),
            reason,
        };
        let pinned = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                text.trim()
                    .parse::<TrackerId>()
                    .map_err(|e| file(format!("not a tracker key: {e}")))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(file(e.to_string())),
        };
        let cell = Self {
            key: parking_lot::RwLock::new(pinned),
            pin: Some(path.clone()),
        };
        match (configured, pinned) {
            (Some(c), Some(p)) if c != p => Err(PinError::Conflict {
                configured: c,
                pinned: p,
                path,
            }),
            (Some(c), None) => {
                cell.write_pin(c).map_err(file)?;
                *cell.key.write() = Some(c);
                Ok(cell)
            }
            _ => Ok(cell),
        }
    }

    fn write_pin(&self, key: TrackerId) -> Result<(), String> {
        let Some(path) = &self.pin else {
            return Ok(());
        };
        match medley_daemon::keyfile::create_private_file(path, format!("{key}\n").as_bytes()) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The key, if known.
    pub(crate) fn get(&self) -> Option<TrackerId> {
        *self.key.read()
    }

    /// Takes the key the tracker gave, pinning it, when none is known yet. A key already
    /// known (configured, pinned, or from an earlier registration) is never replaced: a
    /// different one is refused with the trusted key and the pin file.
    pub(crate) fn learn(&self, key: TrackerId) -> Result<(), KeyRefused> {
        let mut known = self.key.write();
        match *known {
            Some(k) if k == key => Ok(()),
            Some(k) => Err(KeyRefused {
                given: key,
                trusted: k,
                pin: self.pin.clone(),
            }),
            None => {
                if let Err(reason) = self.write_pin(key) {
                    // Trust it for this run all the same: the key came from the configured
                    // tracker, and refusing would stop a node on a read-only disk.
                    tracing::warn!(reason, "cannot pin the tracker key");
                }
                *known = Some(key);
                Ok(())
            }
        }
    }
}

/// A tracker key that is not the one the node trusts.
#[derive(Debug, thiserror::Error)]
#[error(
    "the tracker presents key {given}, but this node trusts {trusted}{}; it will not act on \
     this tracker's answers nor store under its grants. If the tracker's key was changed on \
     purpose, stop the node, remove that file (or set tracker_key) and start it again",
    pin.as_ref().map(|p| format!(" (pinned in {})", p.display())).unwrap_or_default()
)]
pub(crate) struct KeyRefused {
    given: TrackerId,
    trusted: TrackerId,
    pin: Option<PathBuf>,
}

/// The tracker as this node uses it.
#[derive(Debug, Clone)]
pub(crate) struct TrackerLink {
    /// The client, signing with the node's identity.
    pub(crate) client: TrackerClient,
    /// The key answers must be signed by.
    pub(crate) key: Arc<TrackerKeyCell>,
}

impl TrackerLink {
    /// The trusted key, or a refusal while none is known.
    fn key(&self) -> Result<TrackerId, TrackerError> {
        self.key.get().ok_or_else(|| TrackerError::Unsigned {
            url: self.client.url().to_string(),
            what: "an answer".into(),
            source: medley_api::signed::AnswerError::Unsigned,
        })
    }

    /// Layout `version`, or the current one, signed.
    pub(crate) async fn layout(&self, version: Option<u64>) -> Result<Layout, TrackerError> {
        self.client.layout_signed(version, &self.key()?).await
    }

    /// Every segment of `partition`, signed.
    pub(crate) async fn partition_segments(
        &self,
        partition: u16,
    ) -> Result<Vec<SegmentEntry>, TrackerError> {
        self.client
            .partition_segments(partition, &self.key()?)
            .await
    }

    /// The songs node `peer_id` is ordered to hold whole, signed.
    pub(crate) async fn hot_orders(&self, peer_id: &str) -> Result<Vec<SongId>, TrackerError> {
        self.client.hot_orders(peer_id, &self.key()?).await
    }
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
            let id = &n.node.peer_id;
            parse_source(id, &n.node.addrs).map(|s| (id.clone(), s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::HeaderMap;
    use medley_api::signed::{ANSWER_SIGNATURE_HEADER, ANSWER_TIME_HEADER, signed_answer};
    use medley_core::TrackerKey;

    use super::*;

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
        let known = Arc::new(TrackerKeyCell::new(Some(tracker_key.id())));
        let api = |url: &str| TrackerLink {
            client: TrackerClient::new(url).unwrap(),
            key: known.clone(),
        };

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
            assert!(matches!(e, TrackerError::Unsigned { .. }), "{what}: {e}");
        }
        // Without a known key nothing is taken.
        let keyless = TrackerLink {
            client: TrackerClient::new(&tracker(signer(tracker_key, 0)).await).unwrap(),
            key: Arc::new(TrackerKeyCell::new(None)),
        };
        assert!(keyless.layout(None).await.is_err());
    }
}
