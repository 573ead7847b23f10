//! The node's composition root: owns the store and the data-plane peer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use medley_net::{
    CancellationToken, IdentityError, Peer, PeerHandle, StartError, load_or_create_identity,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use medley_daemon::RateLimiter;
use tokio::sync::Notify;

use crate::admin::{self, Admin};
use crate::announce::{self, Announcement, ServeStats, TrackerHealth};
use crate::config::{ConfigError, NodeConfig};
use crate::hot::HotTier;
use crate::repair::{MaintenanceStats, Repairer};
use crate::scrub::Scrubber;
use crate::service::{GrantKey, PeerRates, StoreService};
use crate::store::{Store, StoreError};
use crate::tracker_api::TrackerApi;

/// File in the data directory where a running node writes its id and addresses, for local
/// tools and the testnet.
pub const NODE_INFO_FILE: &str = "node.json";

/// What a running node tells local tools about itself (`node.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's libp2p peer id.
    pub peer_id: String,
    /// Data-plane addresses, each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Region.
    pub region: String,
    /// Process id.
    pub pid: u32,
    /// The admin endpoint (`/status`, `/metrics`), e.g. `http://127.0.0.1:4711`.
    #[serde(default)]
    pub admin: Option<String>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The data plane could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Writing a file in the data directory failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running storage node.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    store: Arc<Store>,
    peer: PeerHandle,
    cancel: CancellationToken,
    maintenance: Arc<MaintenanceStats>,
    admin: Option<std::net::SocketAddr>,
    /// The identity, which signs what the node tells the tracker.
    key: medley_net::Keypair,
}

impl Node {
    /// Opens the store, loads the identity and starts serving the data plane.
    pub async fn bind(config: NodeConfig) -> Result<Self, NodeError> {
        let peer_config = config.peer_config()?;
        let dir = config.data_dir.clone();
        let info_path = dir.join(NODE_INFO_FILE);
        std::fs::create_dir_all(&dir).map_err(|source| NodeError::Io {
            path: dir.clone(),
            source,
        })?;
        // A stale file from an earlier run must not be read as this run's addresses.
        let _ = std::fs::remove_file(&info_path);
        let keypair = load_or_create_identity(&dir)?;
        let store_config = config.store_config();
        let db_path = dir.join("db");
        let store = tokio::task::spawn_blocking(move || Store::open(db_path, &store_config))
            .await
            .map_err(|e| NodeError::Io {
                path: dir.join("db"),
                source: std::io::Error::other(e),
            })??;
        let store = Arc::new(store);
        let cancel = CancellationToken::new();
        let stats = Arc::new(ServeStats::default());
        let maintenance = Arc::new(MaintenanceStats::default());
        let wake_repair = Arc::new(Notify::new());
        let grant_key = Arc::new(GrantKey::new(config.tracker_key));
        let me = keypair.public().to_peer_id();
        let peer = Peer::spawn(
            keypair.clone(),
            peer_config,
            Arc::new(StoreService::new(
                &me,
                grant_key.clone(),
                Arc::new(PeerRates::new(config.peer_bytes_per_sec.as_u64())),
                store.clone(),
                stats.clone(),
                maintenance.clone(),
                wake_repair.clone(),
            )),
            // Its own token: shutdown stops it gracefully after the rest.
            CancellationToken::new(),
        )
        .await?;
        let mut node = Self {
            config,
            store,
            peer,
            cancel,
            maintenance: maintenance.clone(),
            admin: None,
            key: keypair,
        };
        let health = Arc::new(TrackerHealth::default());
        let api = match &node.config.tracker {
            Some(t) => Some(
                TrackerApi::new(t)
                    .map(|a| a.with_key(grant_key.clone()))
                    .map_err(|e| NodeError::Io {
                        path: dir.clone(),
                        source: std::io::Error::other(e),
                    })?,
            ),
            None => None,
        };
        let hot = api.as_ref().map(|api| {
            Arc::new(HotTier::new(
                node.peer_id().to_string(),
                node.store.clone(),
                node.peer.clone(),
                api.clone(),
                RateLimiter::new(node.config.repair_bytes_per_sec.as_u64()),
                Duration::from_secs(node.config.heartbeat_secs),
                node.config.hot_capacity.as_u64(),
            ))
        });
        let listen: Vec<String> = node
            .listen_addrs()
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        let admin = Arc::new(Admin {
            peer_id: node.peer_id().to_string(),
            listen,
            region: node.config.region.clone(),
            tracker: node.config.tracker.clone(),
            store: node.store.clone(),
            serve: stats.clone(),
            maintenance: maintenance.clone(),
            health: health.clone(),
            peer: node.peer.clone(),
            hot: hot.clone(),
            started: std::time::Instant::now(),
        });
        let admin_listen = node.config.admin_listen;
        node.admin = Some(
            admin::serve(admin, admin_listen, node.cancel.child_token())
                .await
                .map_err(|source| NodeError::Io {
                    path: PathBuf::from(format!("admin endpoint {admin_listen}")),
                    source,
                })?,
        );
        let info = node.info().await;
        medley_daemon::write_json_file(&info_path, &info).map_err(|source| NodeError::Io {
            path: info_path,
            source,
        })?;
        info!(
            peer_id = %info.peer_id,
            region = %node.config.region,
            capacity = node.store.capacity(),
            used = node.store.used(),
            listen = ?info.listen,
            "node running"
        );
        if let (Some(tracker), Some(api), Some(hot)) = (node.config.tracker.clone(), api, hot) {
            tokio::spawn(hot.clone().run(node.cancel.child_token()));
            let announcement = Announcement {
                tracker: tracker.clone(),
                peer_id: info.peer_id.clone(),
                addrs: info.listen.clone(),
                region: node.config.region.clone(),
                interval: Duration::from_secs(node.config.heartbeat_secs),
                grant_key: grant_key.clone(),
                key: node.key.clone(),
            };
            tokio::spawn(announce::run(
                announcement,
                node.store.clone(),
                stats,
                maintenance.clone(),
                health,
                Some(hot),
                node.cancel.child_token(),
            ));
            let repairer = Arc::new(Repairer {
                me: info.peer_id.clone(),
                store: node.store.clone(),
                peer: node.peer.clone(),
                api,
                stats: maintenance.clone(),
                limiter: RateLimiter::new(node.config.repair_bytes_per_sec.as_u64()),
                concurrency: node.config.repair_concurrency,
                interval: Duration::from_secs(node.config.repair_interval_secs),
                poll: Duration::from_secs(node.config.heartbeat_secs),
                wake: wake_repair.clone(),
                past_layouts: parking_lot::Mutex::default(),
            });
            tokio::spawn(repairer.run(node.cancel.child_token()));
        }
        if node.config.scrub_bytes_per_sec.as_u64() > 0 {
            let scrubber = Scrubber {
                store: node.store.clone(),
                stats: maintenance,
                limiter: RateLimiter::new(node.config.scrub_bytes_per_sec.as_u64()),
                interval: Duration::from_secs(node.config.scrub_interval_secs),
                repair: wake_repair,
            };
            tokio::spawn(scrubber.run(node.cancel.child_token()));
        }
        Ok(node)
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer.peer_id()
    }

    /// Data-plane addresses.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.peer.listen_addrs().await
    }

    /// What `node.json` holds.
    pub async fn info(&self) -> NodeInfo {
        NodeInfo {
            peer_id: self.peer_id().to_string(),
            listen: self
                .listen_addrs()
                .await
                .iter()
                .map(ToString::to_string)
                .collect(),
            region: self.config.region.clone(),
            pid: std::process::id(),
            admin: self.admin.map(|a| format!("http://{a}")),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The data-plane peer (also usable to make requests as this node).
    pub fn peer(&self) -> &PeerHandle {
        &self.peer
    }

    /// Counters of repair, handover and scrubbing.
    pub fn maintenance(&self) -> &Arc<MaintenanceStats> {
        &self.maintenance
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Tells the tracker the node is stopping (so listeners are sent elsewhere at once),
    /// stops serving, waits up to `timeout` for in-flight requests, and flushes the store.
    /// Acknowledged writes were already durable; the flush shortens the next start.
    pub async fn shutdown(self, timeout: Duration) -> Result<(), NodeError> {
        // Stop the heartbeats first: one sent after the notice would undo it.
        self.cancel.cancel();
        if let Some(tracker) = &self.config.tracker {
            announce::leave(tracker, &self.key, timeout.min(Duration::from_secs(2))).await;
        }
        self.peer.shutdown(timeout).await;
        let _ = std::fs::remove_file(self.config.data_dir.join(NODE_INFO_FILE));
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| NodeError::Io {
                path: self.config.data_dir.clone(),
                source: std::io::Error::other(e),
            })??;
        info!("node stopped");
        Ok(())
    }
}
