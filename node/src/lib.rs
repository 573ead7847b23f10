//! Medley storage node: a RocksDB store of erasure-coded shards and hot segments, served
//! over the libp2p QUIC data plane ([`medley_net`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use medley_node::{Node, NodeConfig};
//! let config = NodeConfig {
//!     data_dir: "/tmp/node-a".into(),
//!     listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
//!     ..NodeConfig::default()
//! };
//! let node = Node::bind(config).await?;
//! println!("{} at {:?}", node.peer_id(), node.listen_addrs().await);
//! node.shutdown(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! Invariants: the node stores a shard only under the hash of its bytes, never returns
//! bytes that fail that check, acknowledges a put only once it is on disk, and never
//! stores past its capacity.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod admin;
mod announce;
mod cache;
pub mod cli;
mod config;
mod gc;
mod hot;
mod repair;
mod scrub;
mod server;
mod service;
mod stats;
mod store;
mod tracker;
mod workers;

pub use admin::NodeStatus;
pub use config::{CONFIG_FILE, ConfigError, ENV_PREFIX, FIELDS, NodeConfig};
pub use hot::HotTier;
pub use server::{NODE_INFO_FILE, Node, NodeError, NodeInfo};
pub use stats::{HotStats, MaintenanceStats, ServeStats, TrackerHealth};
pub use store::{PutOutcome, STORE_FORMAT_VERSION, Store, StoreConfig, StoreError, Tier};
pub use tracker::{PinError, TRACKER_PIN_FILE};
pub use workers::WorkerHealth;
