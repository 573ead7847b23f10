//! A storage node that lies about what it holds, as an attacker admitted by a careless
//! operator would run one: it takes every shard it is sent and keeps none, says it has
//! whatever it is asked about (`Has`), serves nothing, answers no audit, and tells the
//! tracker in every heartbeat that it holds every shard of its slots. The network must not
//! lose a byte to it: old holders keep their shards until it proves it holds them (it
//! never can), and the tracker's audits put it out of the layout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use medley_api::{Heartbeat, Load, Registration};
use medley_core::protocol::{ErrorCode, Request, Response};
use medley_net::{Handler, Keypair, PeerHandle, PeerId};

use crate::{Testnet, TestnetError};

/// What a rogue node was sent and asked.
#[derive(Debug, Default)]
pub struct Dropper {
    /// Shards it was sent (and dropped).
    pub dropped: AtomicU64,
    /// Audits it could not answer.
    pub audits: AtomicU64,
}

impl Handler for Dropper {
    fn handle(&self, _from: PeerId, request: Request) -> BoxFuture<'static, Response> {
        let response = match request {
            Request::PutShard { .. } => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Response::Stored
            }
            Request::Has { ids } => Response::Has {
                present: vec![true; ids.len()],
            },
            Request::Audit { .. } => {
                self.audits.fetch_add(1, Ordering::Relaxed);
                Response::error(ErrorCode::NOT_FOUND, "no such shard")
            }
            Request::GetShard { .. } | Request::GetSegment { .. } => {
                Response::error(ErrorCode::NOT_FOUND, "no such shard")
            }
        };
        Box::pin(async move { response })
    }
}

/// A running rogue node: registered with the testnet's tracker, heartbeating.
#[derive(Debug)]
pub struct RogueNode {
    /// Its peer id.
    pub peer_id: String,
    /// What it was sent and asked.
    pub dropper: Arc<Dropper>,
    peer: PeerHandle,
    beat: tokio::task::JoinHandle<()>,
}

impl RogueNode {
    /// Starts a rogue node of `region` on `ip`, declaring `capacity` bytes; `admitted`: with
    /// a join token of the testnet's tracker (a careless operator's), else without one.
    pub async fn join(
        net: &Testnet,
        region: &str,
        ip: &str,
        capacity: u64,
        admitted: bool,
    ) -> Result<Self, TestnetError> {
        let key = Keypair::generate_ed25519();
        let dropper = Arc::new(Dropper::default());
        let listen = format!("/ip4/{ip}/udp/0/quic-v1");
        let (peer, addrs) =
            crate::liar::serve_as(&key, &listen, dropper.clone(), "a rogue node").await?;
        let peer_id = key.public().to_peer_id().to_string();
        let join = if admitted {
            Some(tokio::task::block_in_place(|| {
                net.invite(Some(region), None)
            })?)
        } else {
            None
        };
        let tracker = net.tracker()?.with_signer(key);
        let registration = Registration {
            peer_id: peer_id.clone(),
            addrs,
            region: region.to_string(),
            capacity,
            join,
        };
        tracker.register(&registration).await?;
        let id = peer_id.clone();
        let beat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let hb = Heartbeat {
                    peer_id: id.clone(),
                    load: Load {
                        free: capacity,
                        ..Load::default()
                    },
                    hot: None,
                    // "Every shard of every slot, of any layout, is here."
                    repaired_version: Some(u64::MAX),
                };
                if tracker.heartbeat(&hb).await.is_err() {
                    let _ = tracker.register(&registration).await;
                }
            }
        });
        Ok(Self {
            peer_id,
            dropper,
            peer,
            beat,
        })
    }

    /// Stops it at once, without a word to the tracker (it vanishes).
    pub async fn vanish(self) {
        self.beat.abort();
        self.peer.shutdown(Duration::from_millis(200)).await;
    }
}
