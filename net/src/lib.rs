//! Medley's data plane: a libp2p peer over QUIC that speaks `/medley/data/3`
//! ([`medley_core::protocol`]). Storage nodes serve their store through it; clients fetch
//! and upload through it. Every blob received through the typed helpers
//! ([`PeerHandle::get_shard`], [`PeerHandle::get_segment`]) has been checked against its id.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use medley_net::{NoService, Peer, PeerConfig};
//! let key = libp2p::identity::Keypair::generate_ed25519();
//! let me = Peer::spawn(key, PeerConfig::default(), Arc::new(NoService), Default::default()).await?;
//! # let (node, addr, id): (libp2p::PeerId, libp2p::Multiaddr, medley_core::ShardId) = todo!();
//! let shard = me.get_shard(node, vec![addr], id).await?;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod codec;
mod peer;
pub mod retrieve;
mod serve;
mod streams;

pub use libp2p::{Multiaddr, PeerId, identity::Keypair};
pub use peer::{Peer, PeerConfig, PeerHandle, RequestError, StartError};
pub use serve::{Handler, NoService};
pub use tokio_util::sync::CancellationToken;
