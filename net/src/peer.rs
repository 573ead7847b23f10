//! The data-plane peer: one libp2p swarm over QUIC, streams kept for request after request.
//!
//! Data flow: a request takes a stream on the connection to its peer, one kept from an
//! earlier request or a new one opened through that connection's handler
//! ([`crate::streams`]), then writes the request and reads the answer in the requester's own
//! task, and keeps the stream for the next. Inbound streams are served each in its own task
//! ([`crate::serve`]). An actor owns the [`Swarm`] and only dials, answers queries about it
//! and drives connections; no request or answer passes through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, Stream, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use medley_core::protocol::{ErrorCode, Request, Response};
use medley_core::{Challenge, SegmentId, ShardId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::codec::{self, Reply};
use crate::serve::{Handler, Limits, NoService, Server};
use crate::streams::{self, Connections, Opening};

/// Settings of a data-plane peer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/udp/0/quic-v1`. Empty: dial only.
    pub listen: Vec<Multiaddr>,
    /// Inbound requests handled at once; more get `BUSY`. 64 keeps a node with a 2-core
    /// machine and one disk busy without queueing unboundedly.
    pub max_concurrent_inbound: usize,
    /// Inbound requests of any one peer handled at once; more from it are answered `BUSY`
    /// after a quarter of a second, so one peer flooding cannot take every slot from the
    /// others, nor spin on the refusals.
    pub max_inbound_per_peer: usize,
    /// Requests sent to any one peer at once; more wait here for their turn. As many as a
    /// node serves of one peer by default (`max_inbound_per_peer`), so that a wide fetch
    /// window queues here instead of being answered `BUSY`.
    pub max_outbound_per_peer: usize,
    /// Incoming connections kept at once; more are refused while the handshake completes.
    pub max_connections: u32,
    /// Connections kept with any one peer (QUIC needs one; a few cover redials). Past it the
    /// oldest is closed: a peer that restarted, or lost its connection without a word, is
    /// served on its new connection at once instead of refused until the old one times out.
    pub max_connections_per_peer: u32,
    /// How long a request may take end to end, including dialing. 30 s covers a 4 MiB
    /// blob at ~1 Mbit/s.
    pub request_timeout: Duration,
    /// How long an idle connection is kept open. Clients fetch in bursts; 60 s keeps the
    /// connection across a song.
    pub idle_timeout: Duration,
    /// How long an inbound stream is kept open without a request on it. Requesters keep a
    /// stream for their next request for 10 s; longer here, so the stream they take is
    /// seldom one being closed.
    pub stream_idle_timeout: Duration,
    /// The agent string sent by identify, e.g. `medley-node/0.1.0`.
    pub agent: String,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            max_concurrent_inbound: 64,
            max_inbound_per_peer: 16,
            max_outbound_per_peer: 16,
            max_connections: 1024,
            max_connections_per_peer: 4,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(20),
            agent: format!("medley/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Why a request to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Dialing, the connection or the stream failed, or the request timed out.
    #[error("network error talking to {peer}: {reason}")]
    Network {
        /// The peer asked.
        peer: PeerId,
        /// What libp2p reported.
        reason: String,
    },
    /// The peer did not answer in time.
    #[error("{peer} did not answer within {after:?}")]
    Timeout {
        /// The peer asked.
        peer: PeerId,
        /// How long it was given.
        after: Duration,
    },
    /// The peer answered with an error code.
    #[error("{peer} answered {code}: {message}")]
    Remote {
        /// The peer asked.
        peer: PeerId,
        /// Its error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The peer sent bytes that do not hash to the id asked for.
    #[error("{peer} sent bytes that do not match {id}")]
    BadHash {
        /// The peer asked.
        peer: PeerId,
        /// The id asked for, as hex.
        id: String,
    },
    /// The peer answered with the wrong kind of response.
    #[error("{peer} sent an unexpected {got} response")]
    Unexpected {
        /// The peer asked.
        peer: PeerId,
        /// What it sent.
        got: &'static str,
    },
    /// This peer has shut down.
    #[error("the local peer has shut down")]
    Closed,
}

impl RequestError {
    /// Whether the request failed on the way (a dial, the connection, a timeout) rather
    /// than with an answer: asking again may work.
    pub fn on_the_way(&self) -> bool {
        matches!(self, Self::Network { .. } | Self::Timeout { .. })
    }

    /// The remote error code, if the peer answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Why a peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Building the QUIC transport failed.
    #[error("cannot build the QUIC transport: {0}")]
    Transport(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    data: streams::Behaviour,
}

enum Command {
    /// Connect to a peer, unless connected already; `fresh`: even if the swarm still counts
    /// a connection, which was found closed.
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        fresh: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<usize>,
    },
    /// Close every connection to a peer.
    Disconnect {
        peer: PeerId,
    },
    /// Refuse new inbound requests, answer those in flight, then stop.
    Stop,
}

/// A running data-plane peer. Cheap to clone; the peer stops when [`PeerHandle::shutdown`]
/// is called or its cancellation token fires.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    connections: Arc<Mutex<Connections>>,
    request_timeout: Duration,
    cancel: CancellationToken,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Streams opened to other peers so far.
    opened: Arc<AtomicU64>,
    /// Turns of the requests to each peer (`PeerConfig::max_outbound_per_peer`).
    outbound: Arc<Mutex<HashMap<PeerId, Arc<tokio::sync::Semaphore>>>>,
    max_outbound: usize,
}

/// Peers whose request turns are remembered before idle ones are forgotten.
const MAX_OUTBOUND_PEERS: usize = 1024;

/// Starts data-plane peers.
#[derive(Debug)]
pub struct Peer;

impl Peer {
    /// Starts a peer that only asks: a fresh identity, no listen address, and every inbound
    /// request answered `UNSUPPORTED`. For clients that fetch or upload and for tools.
    pub async fn dial_only() -> Result<PeerHandle, StartError> {
        Self::dial_only_with(PeerConfig::default()).await
    }

    /// [`Peer::dial_only`] with `config` (its listen addresses are ignored): e.g. a peer that
    /// does not queue its requests (`max_outbound_per_peer`), as a flooding program would not.
    pub async fn dial_only_with(config: PeerConfig) -> Result<PeerHandle, StartError> {
        Self::spawn(
            Keypair::generate_ed25519(),
            PeerConfig {
                listen: Vec::new(),
                ..config
            },
            Arc::new(NoService),
            CancellationToken::new(),
        )
        .await
    }

    /// Starts a peer with identity `keypair` that answers inbound requests with `handler`.
    /// Returns once every listen address is bound.
    pub async fn spawn(
        keypair: Keypair,
        config: PeerConfig,
        handler: Arc<dyn Handler>,
        cancel: CancellationToken,
    ) -> Result<PeerHandle, StartError> {
        let peer_id = keypair.public().to_peer_id();
        // Streams a peer may open on one connection: its own in-flight limit twice over
        // (requests waiting for a slot), at least the 32 a requester keeps, and a few more.
        let max_streams = (config.max_inbound_per_peer * 2).max(32) + 8;
        let request_timeout = config.request_timeout;
        let agent = config.agent.clone();
        let connections = Arc::new(Mutex::new(Connections::default()));
        let server = Server::new(
            handler,
            Limits {
                in_flight: config.max_concurrent_inbound,
                per_peer: config.max_inbound_per_peer.max(1),
                timeout: request_timeout,
                stream_idle: config.stream_idle_timeout,
            },
        );
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_quic_config(|mut q| {
                q.max_concurrent_stream_limit = max_streams as u32;
                q
            })
            .with_behaviour(|key| Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(
                    libp2p::connection_limits::ConnectionLimits::default()
                        .with_max_established_incoming(Some(config.max_connections))
                        // Handshakes under way: a crowd of fresh identities cannot hold more.
                        .with_max_pending_incoming(Some(config.max_connections.min(256))),
                ),
                identify: identify::Behaviour::new(
                    identify::Config::new("/medley/id/1".into(), key.public())
                        .with_agent_version(agent),
                ),
                data: streams::Behaviour::new(
                    connections.clone(),
                    Arc::new(server.clone()),
                    config.max_connections_per_peer.max(1) as usize,
                ),
            })
            .map_err(|e| StartError::Transport(e.to_string()))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(config.idle_timeout)
                    // Every stream proposes exactly one protocol, so the request follows the
                    // proposal at once instead of a round trip later, after the listener's
                    // confirmation: one round trip per request, not two. Same bytes on the
                    // wire as V1, so stock libp2p peers still understand it.
                    .with_substream_upgrade_protocol_override(
                        libp2p::core::upgrade::Version::V1Lazy,
                    )
            })
            .build();

        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| StartError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        // Wait until each listener has reported an address.
        let mut listen_addrs = Vec::new();
        while listen_addrs.len() < config.listen.len() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => listen_addrs.push(address),
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                } => {
                    return Err(StartError::Listen {
                        addr: config
                            .listen
                            .first()
                            .cloned()
                            .unwrap_or_else(Multiaddr::empty),
                        reason: error.to_string(),
                    });
                }
                _ => {}
            }
        }
        info!(%peer_id, addrs = ?listen_addrs, "data plane listening");

        let (tx, rx) = mpsc::channel(256);
        let actor = Actor {
            swarm,
            server,
            commands: rx,
            dialing: HashMap::new(),
            listen_addrs,
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(actor.run());
        Ok(PeerHandle {
            peer_id,
            commands: tx,
            connections,
            request_timeout,
            cancel,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
            opened: Arc::default(),
            outbound: Arc::default(),
            max_outbound: config.max_outbound_per_peer.max(1),
        })
    }
}

impl PeerHandle {
    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Streams this peer has opened to others so far. A request takes a stream kept from an
    /// earlier one when it can, so this grows with the requests in flight at once, not with
    /// the requests made.
    pub fn streams_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The addresses this peer listens on, each ending in `/p2p/<peer id>`.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::ListenAddrs { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Number of peers with an open connection.
    pub async fn connected_peers(&self) -> usize {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::ConnectedPeers { reply })
            .await
            .is_err()
        {
            return 0;
        }
        rx.await.unwrap_or_default()
    }

    /// Sends `request` to `peer`, dialing `addrs` if not connected.
    pub async fn request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: Request,
    ) -> Result<Response, RequestError> {
        Ok(self.request_reply(peer, addrs, request).await?.response)
    }

    /// [`PeerHandle::request`], with the hash of a blob response taken as it arrived.
    async fn request_reply(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: Request,
    ) -> Result<Reply, RequestError> {
        if self.cancel.is_cancelled() {
            return Err(RequestError::Closed);
        }
        let network = |reason: String| RequestError::Network { peer, reason };
        let turns = self.turns(peer);
        let exchange = async {
            let _turn = turns.acquire().await.map_err(|_| RequestError::Closed)?;
            let (mut stream, mut connection, kept) = self.stream_to(peer, &addrs, false).await?;
            let mut reply = exchange(&mut stream, &request).await;
            if let Err(error) = &reply
                && kept
            {
                // The peer may have closed the kept stream just as it was taken: every
                // request is safe to repeat, so ask again on a new one.
                debug!(%peer, %error, "a kept stream failed; asking again on a new one");
                (stream, connection, _) = self.stream_to(peer, &addrs, true).await?;
                reply = exchange(&mut stream, &request).await;
            }
            let reply = reply.map_err(network)?;
            Connections::give_back(&self.connections, peer, connection, stream);
            Ok(reply)
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or(Err(RequestError::Timeout {
                peer,
                after: self.request_timeout,
            }))
    }

    /// The turns of the requests to `peer`: at most `max_outbound` of them at once.
    fn turns(&self, peer: PeerId) -> Arc<tokio::sync::Semaphore> {
        let mut outbound = self
            .outbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if outbound.len() >= MAX_OUTBOUND_PEERS && !outbound.contains_key(&peer) {
            // Forget the peers with no request in flight or waiting.
            outbound.retain(|_, turns| Arc::strong_count(turns) > 1);
        }
        outbound
            .entry(peer)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.max_outbound)))
            .clone()
    }

    /// A stream to `peer`, dialing `addrs` first if not connected: a kept one unless `new`.
    /// With it, its connection and whether it was kept.
    async fn stream_to(
        &self,
        peer: PeerId,
        addrs: &[Multiaddr],
        new: bool,
    ) -> Result<(Stream, ConnectionId, bool), RequestError> {
        let network = |reason: String| RequestError::Network { peer, reason };
        let mut dialed = false;
        // A connection can close between the dial and the stream, or be found closed before
        // the swarm knows (the peer restarted): one fresh dial covers both.
        for _ in 0..3 {
            let fresh = match Connections::open(&self.connections, peer, new) {
                Some(Opening::Kept(stream, connection)) => return Ok((stream, connection, true)),
                Some(Opening::New(connection, opened)) => match opened.await {
                    Ok(Ok(stream)) => {
                        self.opened.fetch_add(1, Ordering::Relaxed);
                        return Ok((stream, connection, false));
                    }
                    Ok(Err(reason)) => return Err(network(reason)),
                    // The connection closed before it could open the stream.
                    Err(_) => true,
                },
                Some(Opening::Closed) => true,
                None => false,
            };
            if dialed {
                break;
            }
            let (reply, rx) = oneshot::channel();
            self.commands
                .send(Command::Dial {
                    peer,
                    addrs: addrs.to_vec(),
                    fresh,
                    reply,
                })
                .await
                .map_err(|_| RequestError::Closed)?;
            rx.await
                .map_err(|_| RequestError::Closed)?
                .map_err(network)?;
            dialed = true;
        }
        Err(network(
            "the connection closed before a stream could be opened".into(),
        ))
    }

    /// Fetches a durable shard and checks it against `id`.
    pub async fn get_shard(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        id: ShardId,
    ) -> Result<Vec<u8>, RequestError> {
        match self
            .request_reply(peer, addrs, Request::GetShard { id })
            .await?
        {
            Reply {
                response: Response::Shard { data },
                blob_hash,
            } => checked(peer, id.0, data, blob_hash),
            other => Err(unexpected(peer, other.response)),
        }
    }

    /// Fetches a whole segment from a peer's hot tier and checks it against `id`.
    pub async fn get_segment(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        id: SegmentId,
    ) -> Result<Vec<u8>, RequestError> {
        match self
            .request_reply(peer, addrs, Request::GetSegment { id })
            .await?
        {
            Reply {
                response: Response::Segment { data },
                blob_hash,
            } => checked(peer, id.0, data, blob_hash),
            other => Err(unexpected(peer, other.response)),
        }
    }

    /// Stores a shard on `peer` under the tracker's `grant` for it. The shard's id is
    /// computed here from `data`.
    pub async fn put_shard(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        data: Vec<u8>,
        grant: medley_core::Grant,
    ) -> Result<ShardId, RequestError> {
        let id = ShardId::of(&data);
        let grant = Box::new(grant);
        match self
            .request(peer, addrs, Request::PutShard { id, grant, data })
            .await?
        {
            Response::Stored => Ok(id),
            other => Err(unexpected(peer, other)),
        }
    }

    /// Asks which of `ids` `peer` holds.
    pub async fn has(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        ids: Vec<ShardId>,
    ) -> Result<Vec<bool>, RequestError> {
        let n = ids.len();
        match self.request(peer, addrs, Request::Has { ids }).await? {
            Response::Has { present } if present.len() == n => Ok(present),
            Response::Has { .. } => Err(RequestError::Unexpected {
                peer,
                got: "has (wrong length)",
            }),
            other => Err(unexpected(peer, other)),
        }
    }

    /// Closes every connection to `peer`: the next request dials it afresh. For a peer whose
    /// connection went quiet (it may have restarted, and a connection to its old process
    /// answers nothing until it times out).
    pub async fn disconnect(&self, peer: PeerId) {
        Connections::forget(&self.connections, peer);
        let _ = self.commands.send(Command::Disconnect { peer }).await;
    }

    /// Audits `peer`: asks it to prove `challenge` and checks the answer against the
    /// shard's id. Returns the bytes of the proof. `Err(BadHash)`: it answered with
    /// something that is no proof.
    pub async fn audit(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        challenge: Challenge,
    ) -> Result<usize, RequestError> {
        let request = Request::Audit {
            id: challenge.id,
            start: challenge.start,
            len: challenge.len,
        };
        match self.request(peer, addrs, request).await? {
            Response::Proof { slice } => {
                challenge
                    .verify(&slice)
                    .map(|()| slice.len())
                    .map_err(|_| RequestError::BadHash {
                        peer,
                        id: challenge.id.to_string(),
                    })
            }
            other => Err(unexpected(peer, other)),
        }
    }

    /// Stops the peer gracefully: new inbound requests are refused as busy, those in
    /// flight are answered and their responses sent, then connections close. Whatever is
    /// still running after `timeout` is dropped.
    pub async fn shutdown(&self, timeout: Duration) {
        let Some(mut task) = self.task.lock().await.take() else {
            self.cancel.cancel();
            return;
        };
        if self.commands.send(Command::Stop).await.is_ok()
            && tokio::time::timeout(timeout, &mut task).await.is_ok()
        {
            self.cancel.cancel();
            return;
        }
        self.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .is_err()
        {
            warn!(peer_id = %self.peer_id, "data plane did not stop in time");
        } else {
            warn!(peer_id = %self.peer_id, "in-flight requests dropped at shutdown");
        }
    }
}

/// Sends `request` on `stream` and reads its answer; a failure as text.
async fn exchange(stream: &mut Stream, request: &Request) -> Result<Reply, String> {
    codec::write_request(stream, request)
        .await
        .map_err(|e| format!("sending the request: {}", medley_core::error_chain(&e)))?;
    codec::read_response(stream)
        .await
        .map_err(|e| format!("reading the response: {}", medley_core::error_chain(&e)))
}

/// `data` if it hashes to `id`. `blob_hash` is its hash if the codec took it on arrival.
fn checked(
    peer: PeerId,
    id: medley_core::Hash,
    data: Vec<u8>,
    blob_hash: Option<medley_core::Hash>,
) -> Result<Vec<u8>, RequestError> {
    if blob_hash.unwrap_or_else(|| medley_core::Hash::of(&data)) == id {
        Ok(data)
    } else {
        Err(RequestError::BadHash {
            peer,
            id: id.to_string(),
        })
    }
}

fn unexpected(peer: PeerId, response: Response) -> RequestError {
    match response {
        Response::Error { code, message } => RequestError::Remote {
            peer,
            code,
            message,
        },
        Response::Shard { .. } => RequestError::Unexpected { peer, got: "shard" },
        Response::Segment { .. } => RequestError::Unexpected {
            peer,
            got: "segment",
        },
        Response::Stored => RequestError::Unexpected {
            peer,
            got: "stored",
        },
        Response::Has { .. } => RequestError::Unexpected { peer, got: "has" },
        Response::Proof { .. } => RequestError::Unexpected { peer, got: "proof" },
    }
}

struct Actor {
    swarm: Swarm<Behaviour>,
    server: Server,
    commands: mpsc::Receiver<Command>,
    /// Requesters waiting for a connection to a peer being dialed.
    dialing: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
    listen_addrs: Vec<Multiaddr>,
    cancel: CancellationToken,
}

impl Actor {
    async fn run(mut self) {
        let server = self.server.clone();
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                () = server.idle(), if server.stopping() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        for (_, waiters) in self.dialing.drain() {
            for reply in waiters {
                let _ = reply.send(Err("the local peer has shut down".into()));
            }
        }
        debug!("data plane stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial {
                peer,
                addrs,
                fresh,
                reply,
            } => self.dial(peer, addrs, fresh, reply),
            Command::ListenAddrs { reply } => {
                let me = self.swarm.local_peer_id();
                let addrs = self
                    .listen_addrs
                    .iter()
                    .map(|a| a.clone().with_p2p(*me).unwrap_or_else(|a| a))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().count());
            }
            Command::Disconnect { peer } => {
                // Not connected: nothing to close.
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Stop => {
                debug!(
                    in_flight = self.server.in_flight(),
                    "stopping: answering requests in flight"
                );
                self.server.stop();
            }
        }
    }

    fn dial(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        fresh: bool,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        if !fresh && self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let waiters = self.dialing.entry(peer).or_default();
        waiters.retain(|w| !w.is_closed());
        waiters.push(reply);
        if waiters.len() > 1 {
            return; // A dial is under way; its outcome answers this one too.
        }
        let condition = if fresh {
            PeerCondition::NotDialing
        } else {
            PeerCondition::DisconnectedAndNotDialing
        };
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(condition)
            .build();
        match self.swarm.dial(opts) {
            // Dialing already, for another reason: that dial's outcome answers.
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => self.dialed(peer, Err(e.to_string())),
        }
    }

    /// Answers the requesters waiting for a connection to `peer`.
    fn dialed(&mut self, peer: PeerId, outcome: Result<(), String>) {
        for reply in self.dialing.remove(&peer).unwrap_or_default() {
            let _ = reply.send(outcome.clone());
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => self.dialed(peer_id, Ok(())),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => self.dialed(peer, Err(error.to_string())),
            SwarmEvent::NewListenAddr { address, .. } if !self.listen_addrs.contains(&address) => {
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address)
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                debug!(%send_back_addr, %error, "incoming connection failed");
            }
            _ => {}
        }
    }
}
