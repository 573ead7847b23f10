//! The node's composition root: owns the store and the data-plane peer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use medley_daemon::identity::{IdentityError, load_or_create_identity};
use medley_net::{CancellationToken, Peer, PeerHandle, StartError};
use serde::{Deserialize, Serialize};
use tracing::info;

use medley_daemon::RateLimiter;
use tokio::sync::Notify;

use crate::admin::{self, Admin};
use crate::announce::{self, Announcer};
use crate::config::{ConfigError, NodeConfig};
use crate::hot::HotTier;
use crate::repair::Repairer;
use crate::scrub::Scrubber;
use crate::service::{PeerRates, StoreService};
use crate::stats::{MaintenanceStats, ServeStats, TrackerHealth};
use crate::store::{Store, StoreError};
use crate::tracker::{TrackerKeyCell, TrackerLink};
use crate::workers::{Supervisor, WorkerHealth, Workers};
use medley_api::TrackerClient;

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
    /// The tracker key pinned in the data directory conflicts with the configured one, or
    /// cannot be read.
    #[error(transparent)]
    Pin(#[from] crate::tracker::PinError),
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
    /// The tracker, when the node reports to one.
    tracker: Option<TrackerLink>,
    /// The background workers, stopped by `shutdown`.
    workers: Option<Supervisor>,
    worker_health: Arc<WorkerHealth>,
}

impl Node {
    /// Opens the store, loads the identity, starts serving the data plane, and starts the
    /// background workers (with a tracker: registration and heartbeats, repair, the hot
    /// tier; with a scrub rate: the scrubber).
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
        let worker_health = Arc::new(WorkerHealth::default());
        let mut workers = Workers::new(cancel.clone(), worker_health.clone());
        let serve = Arc::new(ServeStats::default());
        let maintenance = Arc::new(MaintenanceStats::default());
        let wake_repair = Arc::new(Notify::new());
        let tracker_key = Arc::new(TrackerKeyCell::open(&dir, config.tracker_key)?);
        let me = keypair.public().to_peer_id();
        let peer = Peer::spawn(
            keypair.clone(),
            peer_config,
            Arc::new(StoreService::new(
                &me,
                tracker_key.clone(),
                Arc::new(PeerRates::new(
                    config.peer_bytes_per_sec.as_u64(),
                    config.heavy_peers_bytes_per_sec.as_u64(),
                )),
                store.clone(),
                serve.clone(),
                maintenance.clone(),
                wake_repair.clone(),
            )),
            // Its own token: shutdown stops it gracefully after the rest.
            CancellationToken::new(),
        )
        .await?;
        let tracker = match &config.tracker {
            Some(url) => Some(TrackerLink {
                client: TrackerClient::builder(url)
                    .timeout(Duration::from_secs(10))
                    .ca_file(config.tracker_ca.clone())
                    .local_address(config.tracker_source)
                    .signer(keypair.clone())
                    .build()
                    .map_err(|e| NodeError::Io {
                        path: dir.clone(),
                        source: std::io::Error::other(e),
                    })?,
                key: tracker_key,
            }),
            None => None,
        };
        let heartbeat = Duration::from_secs(config.heartbeat_secs);
        let hot = tracker.as_ref().map(|tracker| {
            Arc::new(HotTier::new(
                me.to_string(),
                store.clone(),
                peer.clone(),
                tracker.clone(),
                RateLimiter::new(config.repair_bytes_per_sec.as_u64()),
                Duration::from_secs(config.hot_poll_secs),
                config.hot_capacity.as_u64(),
            ))
        });
        let listen: Vec<String> = peer
            .listen_addrs()
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        let health = Arc::new(TrackerHealth::default());
        let admin = Arc::new(Admin {
            peer_id: me.to_string(),
            listen: listen.clone(),
            region: config.region.clone(),
            tracker: config.tracker.clone(),
            store: store.clone(),
            serve: serve.clone(),
            maintenance: maintenance.clone(),
            health: health.clone(),
            peer: peer.clone(),
            hot: hot.clone(),
            workers: worker_health.clone(),
            started: std::time::Instant::now(),
        });
        let (admin_addr, admin_server) = admin::bind(admin, config.admin_listen, workers.token())
            .await
            .map_err(|source| NodeError::Io {
                path: PathBuf::from(format!("admin endpoint {}", config.admin_listen)),
                source,
            })?;
        workers.spawn("admin endpoint", admin_server);
        if let (Some(tracker), Some(hot)) = (&tracker, hot) {
            workers.spawn("hot tier", hot.clone().run(workers.token()));
            let announcer = Announcer {
                tracker: tracker.clone(),
                peer_id: me.to_string(),
                addrs: listen,
                region: config.region.clone(),
                join: config.join_token.clone(),
                interval: heartbeat,
                store: store.clone(),
                serve,
                maintenance: maintenance.clone(),
                health,
                hot: Some(hot),
            };
            workers.spawn("heartbeats", announcer.run(workers.token()));
            let repairer = Arc::new(Repairer {
                me: me.to_string(),
                store: store.clone(),
                peer: peer.clone(),
                tracker: tracker.clone(),
                stats: maintenance.clone(),
                limiter: Arc::new(RateLimiter::new(config.repair_bytes_per_sec.as_u64())),
                concurrency: config.repair_concurrency,
                interval: Duration::from_secs(config.repair_interval_secs),
                gc_grace_secs: config.gc_grace_secs,
                poll: heartbeat,
                wake: wake_repair.clone(),
                past_layouts: parking_lot::Mutex::default(),
            });
            workers.spawn("repair", repairer.run(workers.token()));
        }
        if config.scrub_bytes_per_sec.as_u64() > 0 {
            let scrubber = Scrubber {
                store: store.clone(),
                stats: maintenance.clone(),
                limiter: RateLimiter::new(config.scrub_bytes_per_sec.as_u64()),
                interval: Duration::from_secs(config.scrub_interval_secs),
                repair: wake_repair,
            };
            workers.spawn("scrubber", scrubber.run(workers.token()));
        }
        let node = Self {
            config,
            store,
            peer,
            cancel,
            maintenance,
            admin: Some(admin_addr),
            tracker,
            workers: Some(workers.supervise()),
            worker_health,
        };
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

    /// Workers that panicked, with their messages.
    pub fn worker_panics(&self) -> Vec<(&'static str, String)> {
        self.worker_health.panics()
    }

    /// Tells the tracker the node is stopping (so listeners are sent elsewhere at once),
    /// stops the workers and serving, waits up to `timeout` for in-flight requests, and
    /// flushes the store. Acknowledged writes were already durable; the flush shortens the
    /// next start.
    pub async fn shutdown(mut self, timeout: Duration) -> Result<(), NodeError> {
        // Stop the heartbeats first: one sent after the notice would undo it.
        self.cancel.cancel();
        if let Some(workers) = self.workers.take() {
            workers.shutdown(timeout).await;
        }
        if let Some(tracker) = &self.tracker {
            let me = self.peer_id().to_string();
            announce::leave(tracker, &me, timeout.min(Duration::from_secs(2))).await;
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
