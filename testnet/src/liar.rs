//! A lying peer: as a storage node it keeps what it is sent and serves every shard with a
//! byte flipped; as a listener peer it answers every segment request with other bytes.
//! Scenarios use it to study how fast listeners drop liars; tests use it to prove they do.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use medley_core::ShardId;
use medley_core::protocol::{ErrorCode, Request, Response};
use medley_net::{CancellationToken, Handler, Keypair, Peer, PeerConfig, PeerHandle, PeerId};

/// The lying handler.
#[derive(Debug, Default)]
pub struct Liar {
    shards: parking_lot::Mutex<HashMap<ShardId, Vec<u8>>>,
    asked: AtomicU64,
}

impl Liar {
    /// Requests for shards or segments it answered (with wrong bytes or not at all).
    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// Shards it was sent and keeps.
    pub fn held(&self) -> usize {
        self.shards.lock().len()
    }
}

impl Handler for Liar {
    fn handle(&self, _from: PeerId, request: Request) -> BoxFuture<'static, Response> {
        let response = match request {
            Request::PutShard { id, data, .. } => {
                self.shards.lock().insert(id, data);
                Response::Stored
            }
            Request::GetShard { id } => {
                self.asked.fetch_add(1, Ordering::Relaxed);
                match self.shards.lock().get(&id) {
                    Some(d) if !d.is_empty() => {
                        let mut data = d.clone();
                        data[0] ^= 0x01;
                        Response::Shard { data }
                    }
                    _ => Response::error(ErrorCode::NOT_FOUND, "no such shard"),
                }
            }
            Request::GetSegment { .. } => {
                self.asked.fetch_add(1, Ordering::Relaxed);
                Response::Segment {
                    data: vec![0x55; 4096],
                }
            }
            Request::Has { ids } => {
                let held = self.shards.lock();
                Response::Has {
                    present: ids.iter().map(|i| held.contains_key(i)).collect(),
                }
            }
            // Proves from the same altered copy it serves: no proof at all.
            Request::Audit { id, start, len } => match self.shards.lock().get(&id) {
                Some(d) if !d.is_empty() => {
                    let mut data = d.clone();
                    data[start as usize % d.len()] ^= 0x01;
                    match medley_core::audit::prove(&data, start, len) {
                        Ok(slice) => Response::Proof { slice },
                        Err(e) => Response::error(ErrorCode::MALFORMED, e.to_string()),
                    }
                }
                _ => Response::error(ErrorCode::NOT_FOUND, "no such shard"),
            },
        };
        Box::pin(async move { response })
    }
}

/// A running liar: its key, its data-plane peer, the handler and its addresses.
#[derive(Debug)]
pub struct LyingPeer {
    /// Its identity.
    pub key: Keypair,
    /// Its data-plane endpoint.
    pub peer: PeerHandle,
    /// What it was asked.
    pub liar: Arc<Liar>,
    /// Where it listens.
    pub addrs: Vec<String>,
}

/// Starts a liar with a new identity, listening on `listen` (a QUIC multiaddr).
pub async fn spawn(listen: &str) -> Result<LyingPeer, crate::TestnetError> {
    let key = Keypair::generate_ed25519();
    let liar = Arc::new(Liar::default());
    let (peer, addrs) = serve_as(&key, listen, liar.clone(), "a lying peer").await?;
    Ok(LyingPeer {
        key,
        peer,
        liar,
        addrs,
    })
}

/// A data-plane peer of `key` listening on `listen` (a QUIC multiaddr) and answering with
/// `handler`, with the addresses it listens on; `what` names it in errors.
pub(crate) async fn serve_as(
    key: &Keypair,
    listen: &str,
    handler: Arc<dyn medley_net::Handler>,
    what: &str,
) -> Result<(PeerHandle, Vec<String>), crate::TestnetError> {
    let addr = listen
        .parse()
        .map_err(|e| crate::TestnetError::Invalid(format!("listen address {listen:?}: {e}")))?;
    let peer = Peer::spawn(
        key.clone(),
        PeerConfig {
            listen: vec![addr],
            ..PeerConfig::default()
        },
        handler,
        CancellationToken::new(),
    )
    .await
    .map_err(|e| crate::TestnetError::Invalid(format!("cannot start {what}: {e}")))?;
    let addrs = peer
        .listen_addrs()
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok((peer, addrs))
}
