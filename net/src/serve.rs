//! Serving inbound data-plane streams: admission, the handler, the answer.
//!
//! Each inbound stream runs in its own task, spawned by the connection's handler the moment
//! the stream is negotiated. The task reads a request, decides whether it may run, runs
//! the [`Handler`] and writes the answer on the same stream, then waits for the stream's
//! next request: until the requester closes it, or [`Limits::stream_idle`] passes without
//! one. Requests past
//! [`PeerConfig::max_concurrent_inbound`](crate::PeerConfig) are answered `BUSY` at once;
//! those of a peer past its own limit after [`BUSY_DELAY`], so a flooding peer cannot spin;
//! and once three quarters of the places are taken, those of a peer holding its fair share
//! of them (those places over the peers asking) or more, also after the delay: the last quarter is
//! for peers that ask little, so many flooding keys cannot crowd out a listener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::PeerId;
use libp2p::swarm::Stream;
use medley_core::protocol::{ErrorCode, Request, Response};
use tokio::sync::Notify;
use tracing::debug;

use crate::codec;
use crate::streams::Inbound;

/// Serves inbound data-plane requests.
pub trait Handler: Send + Sync + 'static {
    /// Answers `request` from `from`. Runs in its own task; may take its time.
    fn handle(&self, from: PeerId, request: Request) -> BoxFuture<'static, Response>;
}

/// A handler that serves nothing: every request gets `UNSUPPORTED`. For peers that only ask.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoService;

impl Handler for NoService {
    fn handle(&self, _: PeerId, _: Request) -> BoxFuture<'static, Response> {
        Box::pin(async { Response::error(ErrorCode::UNSUPPORTED, "this peer serves nothing") })
    }
}

/// How long a peer over its own in-flight limit waits for its `BUSY` answer.
const BUSY_DELAY: Duration = Duration::from_millis(250);
/// Most delayed `BUSY` answers held at once, over all peers; past it they go at once.
const MAX_DELAYED_BUSY: usize = 4096;
/// Requests longer than this are admitted before their body is read (every request but a
/// `PutShard` is far shorter).
const ADMIT_BEFORE_READING: usize = 64 * 1024;

/// Limits of the inbound side.
pub(crate) struct Limits {
    /// Requests handled at once.
    pub(crate) in_flight: usize,
    /// Requests of one peer handled at once.
    pub(crate) per_peer: usize,
    /// How long an exchange may take from its request's first byte to its answer's last.
    pub(crate) timeout: Duration,
    /// How long a stream is kept waiting for its next request.
    pub(crate) stream_idle: Duration,
}

/// The inbound side of a peer. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Server(Arc<Inner>);

struct Inner {
    handler: Arc<dyn Handler>,
    runtime: tokio::runtime::Handle,
    limits: Limits,
    state: Mutex<State>,
    /// Signalled whenever the count of streams being answered drops to zero.
    idle: Notify,
    delayed: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Requests admitted and not yet answered, in all and by peer.
    in_flight: usize,
    per_peer: HashMap<PeerId, usize>,
    /// Exchanges whose request has been read and whose answer is not yet written.
    answering: usize,
    /// A graceful stop was asked for: new requests are answered `BUSY`.
    stopping: bool,
}

/// What a request read off a stream may do.
enum Admission {
    Run(Slot),
    Busy(String),
    /// `BUSY`, after [`BUSY_DELAY`].
    BusyLater(String),
}

/// A request's place among those in flight; given back when dropped.
struct Slot {
    server: Server,
    peer: PeerId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.server.state();
        state.in_flight -= 1;
        if let Some(n) = state.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                state.per_peer.remove(&self.peer);
            }
        }
    }
}

/// An exchange being answered; counted so a graceful stop waits for it.
struct Answering(Server);

impl Drop for Answering {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.answering -= 1;
        if state.answering == 0 {
            self.0.0.idle.notify_waiters();
        }
    }
}

impl Server {
    pub(crate) fn new(handler: Arc<dyn Handler>, limits: Limits) -> Self {
        Self(Arc::new(Inner {
            handler,
            runtime: tokio::runtime::Handle::current(),
            limits,
            state: Mutex::default(),
            idle: Notify::new(),
            delayed: AtomicUsize::new(0),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses new requests from now on; those already admitted still run.
    pub(crate) fn stop(&self) {
        self.state().stopping = true;
    }

    /// Whether a graceful stop was asked for.
    pub(crate) fn stopping(&self) -> bool {
        self.state().stopping
    }

    /// Requests admitted and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// Waits until no exchange is being answered.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            if self.state().answering == 0 {
                return;
            }
            notified.await;
        }
    }

    fn admit(&self, peer: PeerId) -> Admission {
        let mut state = self.state();
        if state.stopping {
            return Admission::Busy("the node is stopping".into());
        }
        if state.in_flight >= self.0.limits.in_flight {
            return Admission::Busy(format!("{} requests in flight", state.in_flight));
        }
        let mine = state.per_peer.get(&peer).copied().unwrap_or(0);
        if mine >= self.0.limits.per_peer {
            return Admission::BusyLater(format!(
                "{mine} of your requests in flight, the most one peer may have"
            ));
        }
        // The last quarter of the places is kept for peers below their fair share of the
        // other three (those places over the peers asking): many peers flooding at once,
        // one key each, cannot take every place from a listener that asks for a few shards.
        let limit = self.0.limits.in_flight;
        let shared = limit - limit / 4;
        let peers = state.per_peer.len() + usize::from(mine == 0);
        let fair = (shared / peers.max(1)).max(1);
        if state.in_flight >= shared && mine >= fair {
            return Admission::BusyLater(format!(
                "{mine} of your requests in flight, your share while the node is busy"
            ));
        }
        state.in_flight += 1;
        *state.per_peer.entry(peer).or_default() += 1;
        Admission::Run(Slot {
            server: self.clone(),
            peer,
        })
    }

    /// Serves `stream`'s exchanges one after another, then closes it.
    async fn serve(self, peer: PeerId, mut stream: Stream, one_shot: bool) {
        loop {
            // The next request's first byte, or the requester's end of the stream.
            let mut first = [0u8; 1];
            match tokio::time::timeout(self.0.limits.stream_idle, stream.read(&mut first)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    debug!(%peer, %error, "inbound stream failed between requests");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "closing a stream without requests");
                    break;
                }
            }
            let exchange = self.exchange(peer, &mut stream, first[0]);
            match tokio::time::timeout(self.0.limits.timeout, exchange).await {
                Ok(true) if !one_shot => {}
                Ok(_) => break,
                Err(_) => {
                    debug!(%peer, "inbound request timed out");
                    return;
                }
            }
        }
        if let Err(error) = stream.close().await {
            debug!(%peer, %error, "closing an inbound stream failed");
        }
    }

    /// Reads the request that starts with `first`, runs it and answers it. Whether the stream
    /// may carry another: not after a request that could not be decoded, which may have left
    /// the stream inside a frame, nor after a failed answer, nor after a large request that
    /// was refused unread.
    ///
    /// A large request (a shard to store) takes its place among those in flight before its
    /// body is read: a node buffers at most its in-flight limit of large bodies, however
    /// many streams peers open. A small one is read first, so that a malformed request is
    /// told so even when the node is busy.
    async fn exchange(&self, peer: PeerId, stream: &mut Stream, first: u8) -> bool {
        let first = [first];
        let len = match codec::read_len(&mut (&first[..]).chain(&mut *stream)).await {
            Ok(len) => len,
            Err(error) => {
                debug!(%peer, %error, "inbound stream failed before its request was read");
                return false;
            }
        };
        self.state().answering += 1;
        let _answering = Answering(self.clone());
        let len = match len {
            Ok(len) => len,
            Err(error) => {
                debug!(%peer, %error, "request too large");
                let response = Response::error(error.code(), error.to_string());
                self.answer(peer, stream, &response).await;
                return false;
            }
        };
        let early = if len > ADMIT_BEFORE_READING {
            match self.admit(peer) {
                Admission::Run(slot) => Some(slot),
                refused => {
                    let response = self.refusal(refused).await;
                    self.answer(peer, stream, &response).await;
                    return false;
                }
            }
        } else {
            None
        };
        let request = match codec::read_request_body(stream, len).await {
            Ok(Ok(request)) => request,
            Ok(Err(error)) => {
                debug!(%peer, %error, "malformed request");
                let response = Response::error(error.code(), error.to_string());
                self.answer(peer, stream, &response).await;
                return false;
            }
            Err(error) => {
                debug!(%peer, %error, "inbound stream failed while its request was read");
                return false;
            }
        };
        let admitted = match early {
            Some(slot) => Admission::Run(slot),
            None => self.admit(peer),
        };
        let (_slot, response) = match admitted {
            Admission::Run(slot) => (Some(slot), self.0.handler.handle(peer, request).await),
            refused => (None, self.refusal(refused).await),
        };
        self.answer(peer, stream, &response).await
    }

    /// The `BUSY` answer to a refused request. A peer past its own limit waits for it:
    /// asking again at once would only spin. Held answers are bounded; past the bound they
    /// go at once.
    async fn refusal(&self, refused: Admission) -> Response {
        match refused {
            Admission::BusyLater(message) => {
                if self.0.delayed.fetch_add(1, Ordering::Relaxed) < MAX_DELAYED_BUSY {
                    tokio::time::sleep(BUSY_DELAY).await;
                }
                self.0.delayed.fetch_sub(1, Ordering::Relaxed);
                Response::error(ErrorCode::BUSY, message)
            }
            Admission::Busy(message) => Response::error(ErrorCode::BUSY, message),
            Admission::Run(_) => Response::error(ErrorCode::INTERNAL, "admitted"),
        }
    }

    /// Writes `response`; whether it went.
    async fn answer(&self, peer: PeerId, stream: &mut Stream, response: &Response) -> bool {
        match codec::write_response(stream, response).await {
            Ok(()) => true,
            Err(error) => {
                debug!(%peer, %error, "the answer could not be sent");
                false
            }
        }
    }
}

impl Inbound for Server {
    fn accept(&self, peer: PeerId, stream: Stream, one_shot: bool) {
        self.0
            .runtime
            .spawn(self.clone().serve(peer, stream, one_shot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(in_flight: usize, per_peer: usize) -> Server {
        Server::new(
            Arc::new(NoService),
            Limits {
                in_flight,
                per_peer,
                timeout: Duration::from_secs(1),
                stream_idle: Duration::from_secs(1),
            },
        )
    }

    #[tokio::test]
    async fn many_flooding_peers_leave_room_for_one_that_asks_little() {
        let s = server(64, 16);
        let flooders: Vec<PeerId> = (0..16).map(|_| PeerId::random()).collect();
        let mut held = Vec::new();
        // Each flooder asks for all it may, in turns, as many keys flooding at once do.
        for _ in 0..16 {
            for f in &flooders {
                if let Admission::Run(slot) = s.admit(*f) {
                    held.push(slot);
                }
            }
        }
        let taken = s.in_flight();
        assert!(taken < 64, "the flooders took {taken} of 64 places");
        assert!(
            taken >= 48,
            "below three quarters every peer is served: {taken}"
        );
        // A listener asking for a few shards gets them at once.
        let listener = PeerId::random();
        for i in 0..3 {
            assert!(
                matches!(s.admit(listener), Admission::Run(_)),
                "request {i} of the listener refused with {} in flight",
                s.in_flight()
            );
        }
        // With room to spare, one peer alone may take its whole limit.
        drop(held);
        let alone = PeerId::random();
        let mine: Vec<_> = (0..16).map(|_| s.admit(alone)).collect();
        assert!(mine.iter().all(|a| matches!(a, Admission::Run(_))));
        assert!(matches!(s.admit(alone), Admission::BusyLater(_)));
    }
}
