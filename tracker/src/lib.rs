//! Medley's tracker: the control plane. It keeps the catalogue (signed manifests), the
//! authorised publisher keys, the registry of storage nodes and the layout of partitions to
//! nodes, all in RocksDB, and serves them over HTTP/JSON under `/v1`. It is never on the
//! audio data path.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use medley_tracker::{Tracker, TrackerConfig};
//! let tracker = Tracker::bind(TrackerConfig { data_dir: "/tmp/tracker".into(), ..Default::default() }).await?;
//! println!("API at {}", tracker.url());
//! tracker.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! Laws: a manifest is stored only if it decodes canonically, is self-consistent, is signed
//! by an authorised publisher and uses the network's code; a refused request changes
//! nothing; everything acknowledged is on disk.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod admission;
mod api;
mod audit;
mod catalog;
pub mod cli;
mod config;
mod db;
mod demand;
mod error;
mod layouts;
mod popularity;
mod registry;
mod search;
mod server;
mod state;

pub use api::ApiError;
pub use catalog::{Imported, MAX_BROWSE_OFFSET};
pub use config::{AdmissionMode, CONFIG_FILE, ConfigError, ENV_PREFIX, FIELDS, TrackerConfig};
pub use db::DbError;
pub use demand::MAX_ANNOUNCED_SONGS;
pub use error::StateError;
pub use registry::{AuditOutcome, MAX_PENDING, NodeTotals};
pub use search::{MAX_LIMIT, MAX_QUERY, SearchError};
pub use server::{ADMIN_SOCKET_FILE, TRACKER_INFO_FILE, Tracker, TrackerError, TrackerInfo};
pub use state::{AuditTarget, OTHER_REGION, State, TRACKER_KEY_FILE};
