//! Data-plane streams, opened, kept and served outside the swarm's task.
//!
//! Request-response moves every request and every answer through the swarm's task: a stream
//! is read in the connection's task, handed to the swarm, then to whoever asked or serves,
//! and the answer back the same way. Here a requester takes a stream of the connection
//! itself: one it kept from an earlier exchange ([`Connections::give_back`]), or a new one
//! it asks the connection's handler for over a channel that handler polls. It writes and
//! reads the stream in its own task. An inbound stream is handed by the connection's handler
//! straight to [`Inbound::accept`], which spawns the task that serves it.
//!
//! Keeping streams matters: opening one costs a wait for the handler, a protocol negotiation
//! and two timers (libp2p's upgrade timeout and its idle-connection timer, each a wake-up of
//! a timer thread), more than the rest of a small request's round trip together.
//!
//! `libp2p-stream` (0.5.0-alpha) does the same hand-off but drops inbound streams whenever
//! more than one arrives before its accept loop runs (its channel holds one), which several
//! requests in flight on one connection do all the time, and it dials without addresses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::future::Either;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{ReadyUpgrade, SelectUpgrade};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent,
    ConnectionId, FromSwarm, NetworkBehaviour, Stream, StreamUpgradeError, SubstreamProtocol,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, StreamProtocol};
use medley_core::protocol::{ONE_SHOT_PROTOCOL_NAME, PROTOCOL_NAME};
use tokio::sync::{mpsc, oneshot};

/// Receives every inbound data-plane stream, in the connection's task: must not block.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// Takes a new stream from `peer`, which carries one exchange if `one_shot`, else any
    /// number one after another.
    fn accept(&self, peer: PeerId, stream: Stream, one_shot: bool);
}

/// Where a newly opened outbound stream, or why it could not be opened, goes.
type Opened = oneshot::Sender<Result<Stream, String>>;

/// How long a requester keeps a stream it is not using. Shorter than a node keeps a stream
/// without requests (`PeerConfig::stream_idle_timeout`, 20 s by default), so a kept stream
/// is seldom found closed when taken.
const KEEP_IDLE: Duration = Duration::from_secs(10);
/// Most streams kept unused on one connection; more are closed. Sixteen requests in flight
/// leave sixteen.
const MAX_KEPT: usize = 32;

/// An open connection: the channel its handler takes stream requests from, and the streams
/// kept for reuse, least recently used first.
#[derive(Debug)]
struct Connection {
    id: ConnectionId,
    requests: mpsc::UnboundedSender<Opened>,
    kept: VecDeque<(Stream, Instant)>,
}

/// A stream to a peer, from a connection's [`Connections::open`].
pub(crate) enum Opening {
    /// A stream kept from an earlier exchange: it may have been closed by the other side.
    Kept(Stream, ConnectionId),
    /// A new stream, once the connection's handler has opened it.
    New(ConnectionId, oneshot::Receiver<Result<Stream, String>>),
    /// Every connection to the peer turned out closed, though the swarm may not know yet.
    Closed,
}

/// The open connections, a peer's oldest first.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    by_peer: HashMap<PeerId, Vec<Connection>>,
    /// Peers whose connections were given up: the next stream to one dials afresh, even if
    /// the swarm still counts a connection while it closes.
    forgotten: HashSet<PeerId>,
}

impl Connections {
    fn lock(this: &Mutex<Self>) -> MutexGuard<'_, Self> {
        this.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream to `peer` on its newest connection: a kept one unless `new`, else a new one.
    /// `None`: no connection to it was known.
    pub(crate) fn open(this: &Mutex<Self>, peer: PeerId, new: bool) -> Option<Opening> {
        let mut me = Self::lock(this);
        if me.forgotten.remove(&peer) {
            return Some(Opening::Closed);
        }
        let conns = me.by_peer.get_mut(&peer)?;
        // The newest connection first: an older one may be on its way out.
        while let Some(conn) = conns.last_mut() {
            if !new {
                let now = Instant::now();
                while conn
                    .kept
                    .front()
                    .is_some_and(|(_, since)| now.duration_since(*since) > KEEP_IDLE)
                {
                    conn.kept.pop_front();
                }
                if let Some((stream, _)) = conn.kept.pop_back() {
                    return Some(Opening::Kept(stream, conn.id));
                }
            }
            let (opened, rx) = oneshot::channel();
            if conn.requests.send(opened).is_ok() {
                return Some(Opening::New(conn.id, rx));
            }
            conns.pop();
        }
        me.by_peer.remove(&peer);
        Some(Opening::Closed)
    }

    /// Gives up every connection to `peer`: no stream is taken from them again.
    pub(crate) fn forget(this: &Mutex<Self>, peer: PeerId) {
        let mut me = Self::lock(this);
        me.by_peer.remove(&peer);
        me.forgotten.insert(peer);
    }

    /// Keeps `stream`, just done with an exchange, for the next request to `peer`: if its
    /// connection is still the peer's newest and does not keep too many already. Otherwise
    /// the stream is dropped, which closes it.
    pub(crate) fn give_back(this: &Mutex<Self>, peer: PeerId, id: ConnectionId, stream: Stream) {
        let mut me = Self::lock(this);
        if let Some(conn) = me.by_peer.get_mut(&peer).and_then(|c| c.last_mut())
            && conn.id == id
            && conn.kept.len() < MAX_KEPT
        {
            conn.kept.push_back((stream, Instant::now()));
        }
    }
}

/// The data-plane behaviour: adds a [`Handler`] to every connection, and keeps at most
/// `max_per_peer` connections with any one peer by closing the oldest. A peer that restarted,
/// or lost its connection without a word, is so served on its new connection at once instead
/// of refused until the old one times out.
pub(crate) struct Behaviour {
    connections: Arc<Mutex<Connections>>,
    inbound: Arc<dyn Inbound>,
    max_per_peer: usize,
    /// Connections past a peer's limit, to close.
    to_close: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl Behaviour {
    pub(crate) fn new(
        connections: Arc<Mutex<Connections>>,
        inbound: Arc<dyn Inbound>,
        max_per_peer: usize,
    ) -> Self {
        Self {
            connections,
            inbound,
            max_per_peer,
            to_close: VecDeque::new(),
            waker: None,
        }
    }

    fn handler(&mut self, connection: ConnectionId, peer: PeerId) -> Handler {
        let (tx, requests) = mpsc::unbounded_channel();
        let mut conns = Connections::lock(&self.connections);
        let list = conns.by_peer.entry(peer).or_default();
        list.push(Connection {
            id: connection,
            requests: tx,
            kept: VecDeque::new(),
        });
        // No requester picks these any more; they are closed at the next poll.
        while list.len() > self.max_per_peer {
            let oldest = list.remove(0).id;
            tracing::debug!(%peer, "closing the oldest connection of a peer past its limit");
            self.to_close.push_back((peer, oldest));
        }
        drop(conns);
        if !self.to_close.is_empty()
            && let Some(waker) = self.waker.take()
        {
            waker.wake();
        }
        Handler {
            peer,
            requests,
            inbound: self.inbound.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection, peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(connection, peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id,
            connection_id,
            remaining_established,
            ..
        }) = event
        {
            let mut conns = Connections::lock(&self.connections);
            if let Some(list) = conns.by_peer.get_mut(&peer_id) {
                list.retain(|c| c.id != connection_id);
                if list.is_empty() {
                    conns.by_peer.remove(&peer_id);
                }
            }
            if remaining_established == 0 {
                // Nothing left to give up: the next request dials anyway.
                conns.forgotten.remove(&peer_id);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection)) = self.to_close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(connection),
            });
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A connection's data-plane handler: opens the streams requesters ask for and hands
/// inbound ones to [`Inbound::accept`].
pub(crate) struct Handler {
    peer: PeerId,
    requests: mpsc::UnboundedReceiver<Opened>,
    inbound: Arc<dyn Inbound>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol =
        SelectUpgrade<ReadyUpgrade<StreamProtocol>, ReadyUpgrade<StreamProtocol>>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Opened;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(
            SelectUpgrade::new(
                ReadyUpgrade::new(StreamProtocol::new(PROTOCOL_NAME)),
                ReadyUpgrade::new(StreamProtocol::new(ONE_SHOT_PROTOCOL_NAME)),
            ),
            (),
        )
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Opened, Infallible>> {
        match self.requests.poll_recv(cx) {
            Poll::Ready(Some(opened)) => {
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(
                        ReadyUpgrade::new(StreamProtocol::new(PROTOCOL_NAME)),
                        opened,
                    ),
                })
            }
            _ => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), Opened>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => match stream {
                Either::Left(stream) => self.inbound.accept(self.peer, stream, false),
                Either::Right(stream) => self.inbound.accept(self.peer, stream, true),
            },
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: opened,
            }) => {
                // The requester may have given up; the stream then just closes.
                let _ = opened.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => {
                let reason = match error {
                    StreamUpgradeError::Timeout => "opening a stream timed out".to_string(),
                    StreamUpgradeError::NegotiationFailed => {
                        format!("the peer does not speak {PROTOCOL_NAME}")
                    }
                    StreamUpgradeError::Io(e) => format!("opening a stream failed: {e}"),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = info.send(Err(reason));
            }
            _ => {}
        }
    }
}
