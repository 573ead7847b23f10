//! One libp2p stream per data-plane request, opened and served outside the swarm's task.
//!
//! Request-response moves every request and every answer through the swarm's task: a stream
//! is read in the connection's task, handed to the swarm, then to whoever asked or serves,
//! and the answer back the same way. Here a requester asks the connection's own handler for
//! a new stream over a channel that handler polls, gets the stream back, and writes and
//! reads it in its own task; an inbound stream is handed by the connection's handler
//! straight to [`Inbound::accept`], which spawns the task that serves it. The swarm's task
//! only dials. The bytes on the wire are those of request-response with our codec, so stock
//! request-response peers still talk to us.
//!
//! `libp2p-stream` (0.5.0-alpha) does the same hand-off but drops inbound streams whenever
//! more than one arrives before its accept loop runs (its channel holds one), which several
//! requests in flight on one connection do all the time, and it dials without addresses.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
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
use medley_core::protocol::PROTOCOL_NAME;
use tokio::sync::{mpsc, oneshot};

/// Receives every inbound data-plane stream, in the connection's task: must not block.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// Takes a new stream from `peer`.
    fn accept(&self, peer: PeerId, stream: Stream);
}

/// Where a newly opened outbound stream, or why it could not be opened, goes.
type Opened = oneshot::Sender<Result<Stream, String>>;

/// The open connections, each with the channel its handler takes stream requests from; a
/// peer's oldest first.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    by_peer: HashMap<PeerId, Vec<(ConnectionId, mpsc::UnboundedSender<Opened>)>>,
}

impl Connections {
    fn lock(this: &Mutex<Self>) -> MutexGuard<'_, Self> {
        this.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks a connection to `peer` for a new stream. `None`: no open connection to it.
    pub(crate) fn open(
        this: &Mutex<Self>,
        peer: PeerId,
    ) -> Option<oneshot::Receiver<Result<Stream, String>>> {
        let mut me = Self::lock(this);
        let conns = me.by_peer.get_mut(&peer)?;
        // The newest connection first: an older one may be on its way out.
        while let Some((_, tx)) = conns.last() {
            let (opened, rx) = oneshot::channel();
            if tx.send(opened).is_ok() {
                return Some(rx);
            }
            conns.pop();
        }
        me.by_peer.remove(&peer);
        None
    }
}

/// The data-plane behaviour: adds a [`Handler`] to every connection, and keeps at most
/// `max_per_peer` connections with any one peer by closing the oldest. A peer that restarted,
/// or lost its connection without a word, is so served on its new connection at once instead
/// of refused until the old one times out.
pub(crate) struct Behaviour {
    connections: Arc<Mutex<Connections>>,
    inbound: Arc<dyn Inbound>,
    protocol: StreamProtocol,
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
            protocol: StreamProtocol::new(PROTOCOL_NAME),
            max_per_peer,
            to_close: VecDeque::new(),
            waker: None,
        }
    }

    fn handler(&mut self, connection: ConnectionId, peer: PeerId) -> Handler {
        let (tx, requests) = mpsc::unbounded_channel();
        let mut conns = Connections::lock(&self.connections);
        let list = conns.by_peer.entry(peer).or_default();
        list.push((connection, tx));
        // No requester picks these any more; they are closed at the next poll.
        while list.len() > self.max_per_peer {
            let (oldest, _) = list.remove(0);
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
            protocol: self.protocol.clone(),
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
            ..
        }) = event
        {
            let mut conns = Connections::lock(&self.connections);
            if let Some(list) = conns.by_peer.get_mut(&peer_id) {
                list.retain(|(c, _)| *c != connection_id);
                if list.is_empty() {
                    conns.by_peer.remove(&peer_id);
                }
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
    protocol: StreamProtocol,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Opened;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Opened, Infallible>> {
        match self.requests.poll_recv(cx) {
            Poll::Ready(Some(opened)) => {
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(
                        ReadyUpgrade::new(self.protocol.clone()),
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
            }) => self.inbound.accept(self.peer, stream),
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
                        format!("the peer does not speak {}", self.protocol)
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
