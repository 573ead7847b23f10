//! One segment from the network, verified: the single retrieval engine that listeners
//! (playing), storage nodes' hot tiers (filling whole copies) and repair (rebuilding a lost
//! shard's segment) share.
//!
//! Data flow, for one [`Segment`]:
//! 1. **Whole copies**, in the caller's order: the first is asked, the next one when it
//!    fails. The first verified segment wins. When the hedge delay passes without an answer,
//!    the shards are asked as well (the slow copy may still win the race): one slow copy
//!    costs at most the hedge delay, however many slow copies are listed.
//! 2. **Shards**, when no whole copy delivered: `k + extra` slots are asked at once, in the
//!    caller's order of preference; a slot whose request fails is replaced by the next
//!    untried one, and after each hedge delay without `k` shards one more is asked. A slot
//!    may list several holders (its current node, then earlier ones): they are tried in turn
//!    within that slot's request. With `retry_lost`, slots that failed on the network (not
//!    with an answer) are asked once more when nothing else is left. The first `k` shards are
//!    decoded and the segment is checked against its id.
//!
//! Every blob is checked against its hash by the data plane as it arrives
//! ([`PeerHandle::get_shard`], [`PeerHandle::get_segment`]), so a lying source only costs
//! the time of its answer. Each request runs in a task of its own: one still in flight when
//! the segment is complete finishes on its own and reports to the [`Events`] sink, so the
//! caller learns what every source it asked did (a slow liar is found out too); its handle
//! comes back in [`Retrieved::stragglers`].
//!
//! Non-goals: choosing and ranking sources (the caller's, from the tracker and what it
//! measured), caching, reporting to the tracker (the caller's sink does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::{Multiaddr, PeerId};
use medley_core::{Codec, SegmentEntry};

use crate::peer::{PeerHandle, RequestError};

/// A peer to ask, with its addresses.
pub type Source = (PeerId, Vec<Multiaddr>);

/// Waits before a request of this many bytes (a byte-rate limit); `None`: no limit.
pub type Pace = Arc<dyn Fn(u64) -> BoxFuture<'static, ()> + Send + Sync>;

/// How a retrieval behaves.
#[derive(Clone, Default)]
pub struct Policy {
    /// Shard sources asked at once beyond `k` (0: exactly `k`, another only on a failure).
    pub extra: usize,
    /// Ask one more source after this long without a result; `None`: only on failures.
    pub hedge_after: Option<Duration>,
    /// How long a whole copy may take before the shards are asked too; `None`: as long
    /// as `hedge_after`. Zero races them from the start (a segment someone waits for now).
    pub whole_patience: Option<Duration>,
    /// Ask the slots that failed on the network once more when nothing else is left: a
    /// connection lost under load is not a dead node.
    pub retry_lost: bool,
    /// Paces every request by its expected bytes.
    pub pace: Option<Pace>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("extra", &self.extra)
            .field("hedge_after", &self.hedge_after)
            .field("whole_patience", &self.whole_patience)
            .field("retry_lost", &self.retry_lost)
            .field("pace", &self.pace.is_some())
            .finish()
    }
}

/// What is asked of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The whole segment.
    Whole,
    /// The shard of this slot.
    Shard(usize),
}

/// What a retrieval tells its caller as sources answer (from the request tasks, also after
/// the retrieval returned).
pub trait Events: Send + Sync + 'static {
    /// `peer` delivered `piece` (`bytes` long, checked) in `took`.
    fn delivered(&self, peer: PeerId, piece: Piece, bytes: usize, took: Duration) {
        let _ = (peer, piece, bytes, took);
    }

    /// `peer` failed to deliver `piece`; [`RequestError::BadHash`] means it lied.
    fn failed(&self, peer: PeerId, piece: Piece, error: &RequestError) {
        let _ = (peer, piece, error);
    }
}

/// An [`Events`] sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl Events for NoEvents {}

/// One segment and where it can come from.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The segment: its id, length and shard ids.
    pub entry: SegmentEntry,
    /// Whole copies, in the order to ask.
    pub whole: Vec<Source>,
    /// Shard slots in the order to ask, each with its holders in the order to try.
    pub slots: Vec<(usize, Vec<Source>)>,
}

/// Where a retrieved segment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The whole copy at this position of [`Segment::whole`].
    Whole(usize),
    /// Rebuilt from shards.
    Rebuilt,
}

/// A verified segment.
#[derive(Debug)]
pub struct Retrieved {
    /// Its bytes, checked against its id.
    pub data: Vec<u8>,
    /// Where they came from.
    pub origin: Origin,
    /// Requests still running when the segment was complete; they report to the sink when
    /// they end.
    pub stragglers: Vec<tokio::task::JoinHandle<()>>,
}

/// Why no verified segment could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RetrieveError {
    /// No whole copy delivered and fewer than `k` shards could be fetched.
    #[error("{have} of the {need} shards needed ({reasons})")]
    Unavailable {
        /// Shards fetched.
        have: usize,
        /// Shards needed.
        need: usize,
        /// Why each source failed, `; `-separated.
        reasons: String,
    },
    /// `k` shards arrived but decoding or the segment's check failed.
    #[error("{0}")]
    Rebuild(String),
}

/// Where `slot` comes in the order segment `id`'s `total` slots are asked, 0 first.
///
/// The order starts at a slot taken from the segment's id and wraps around, so across a
/// song's segments (and across songs) every slot is first, second, … equally often: each
/// holder of a partition serves about the same share of reads, parity slots included (a
/// parity read costs a rebuild, which the codec does at GB/s), instead of the data slots
/// serving every read and the last parity slot none.
pub fn balanced_rank(id: &medley_core::SegmentId, slot: usize, total: usize) -> usize {
    if total == 0 {
        return slot;
    }
    let b = id.as_bytes();
    let start = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    // A slot beyond `total` keeps its place after every slot that exists.
    let start = usize::try_from(start % total as u64).unwrap_or(0);
    if slot >= total {
        slot
    } else {
        (slot + total - start) % total
    }
}

/// A request task's answer: which piece, from whom (the last source asked), and the result.
type Answer = (usize, Option<PeerId>, Result<Vec<u8>, RequestError>);

/// Fetches `seg`, verified, through `peer`, as `policy` says; reports every source's outcome
/// to `events`.
pub async fn retrieve(
    peer: &PeerHandle,
    codec: &Codec,
    seg: &Segment,
    policy: &Policy,
    events: &Arc<dyn Events>,
) -> Result<Retrieved, RetrieveError> {
    let mut slow = match whole(peer, seg, policy, events).await {
        Whole::Got(r) => return Ok(r),
        Whole::None => return shards(peer, codec, seg, policy, events).await,
        Whole::Slow(in_flight) => in_flight,
    };
    // A whole copy is slow: the shards race it.
    let rebuild = shards(peer, codec, seg, policy, events);
    tokio::pin!(rebuild);
    let failed = loop {
        tokio::select! {
            r = &mut rebuild => match r {
                Ok(mut r) => {
                    r.stragglers.extend(stragglers(slow));
                    return Ok(r);
                }
                Err(e) => break e,
            },
            next = slow.next(), if !slow.is_empty() => {
                if let Some(Ok((i, _, Ok(data)))) = next {
                    return Ok(Retrieved {
                        data,
                        origin: Origin::Whole(i),
                        stragglers: stragglers(slow),
                    });
                }
            }
        }
    };
    // The shards could not make it: the slow copy is the last hope.
    while let Some(next) = slow.next().await {
        if let Ok((i, _, Ok(data))) = next {
            return Ok(Retrieved {
                data,
                origin: Origin::Whole(i),
                stragglers: stragglers(slow),
            });
        }
    }
    Err(failed)
}

/// What the whole copies did.
enum Whole {
    /// One delivered.
    Got(Retrieved),
    /// None did (or none is listed).
    None,
    /// The one asked has not answered within the hedge delay; it is still in flight.
    Slow(FuturesUnordered<tokio::task::JoinHandle<Answer>>),
}

/// A piece to ask for: which, its position, its expected bytes, and whom to ask in turn.
struct Ask {
    key: usize,
    piece: Piece,
    bytes: u64,
    sources: Vec<Source>,
}

/// Spawns the requests of one piece: each of its sources in turn until one delivers.
fn launch(
    peer: &PeerHandle,
    seg: &Segment,
    ask: Ask,
    policy: &Policy,
    events: &Arc<dyn Events>,
) -> tokio::task::JoinHandle<Answer> {
    let (peer, events, pace) = (peer.clone(), events.clone(), policy.pace.clone());
    let entry = seg.entry.clone();
    let Ask {
        key,
        piece,
        bytes,
        sources,
    } = ask;
    tokio::spawn(async move {
        let mut last = None;
        for (who, addrs) in sources {
            if let Some(p) = &pace {
                p(bytes).await;
            }
            let started = Instant::now();
            let r = match piece {
                Piece::Whole => peer.get_segment(who, addrs, entry.id).await,
                Piece::Shard(slot) => match entry.shards.get(slot) {
                    Some(id) => peer.get_shard(who, addrs, *id).await,
                    None => Err(RequestError::Closed),
                },
            };
            match r {
                Ok(data) => {
                    events.delivered(who, piece, data.len(), started.elapsed());
                    return (key, Some(who), Ok(data));
                }
                Err(e) => {
                    events.failed(who, piece, &e);
                    last = Some((who, e));
                }
            }
        }
        match last {
            Some((who, e)) => (key, Some(who), Err(e)),
            None => (key, None, Err(RequestError::Closed)),
        }
    })
}

/// Keeps the requests of `in_flight` running to their end.
fn stragglers(
    in_flight: FuturesUnordered<tokio::task::JoinHandle<Answer>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    if in_flight.is_empty() {
        return Vec::new();
    }
    vec![tokio::spawn(async move {
        in_flight.for_each(|_| async {}).await;
    })]
}

/// Step 1: the whole copies, one after another.
async fn whole(
    peer: &PeerHandle,
    seg: &Segment,
    policy: &Policy,
    events: &Arc<dyn Events>,
) -> Whole {
    let mut untried = seg.whole.iter().cloned().enumerate();
    let ask = |(key, source): (usize, Source)| Ask {
        key,
        piece: Piece::Whole,
        bytes: u64::from(seg.entry.len),
        sources: vec![source],
    };
    let Some(first) = untried.next() else {
        return Whole::None;
    };
    let mut in_flight = FuturesUnordered::new();
    in_flight.push(launch(peer, seg, ask(first), policy, events));
    let patience = policy.whole_patience.or(policy.hedge_after);
    // Without patience the timer is off; a day stands in for "never" in its arithmetic.
    let hedge = patience.unwrap_or(Duration::from_secs(86_400));
    let timer = tokio::time::sleep(hedge);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            next = in_flight.next() => match next {
                Some(Ok((i, _, Ok(data)))) => {
                    return Whole::Got(Retrieved {
                        data,
                        origin: Origin::Whole(i),
                        stragglers: stragglers(in_flight),
                    });
                }
                Some(_) => match untried.next() {
                    Some(next) => {
                        in_flight.push(launch(peer, seg, ask(next), policy, events));
                        timer.as_mut().reset(tokio::time::Instant::now() + hedge);
                    }
                    None if in_flight.is_empty() => return Whole::None,
                    None => {}
                },
                None => return Whole::None,
            },
            () = &mut timer, if patience.is_some() => return Whole::Slow(in_flight),
        }
    }
}

/// Step 2: `k` shards, decoded and checked.
async fn shards(
    peer: &PeerHandle,
    codec: &Codec,
    seg: &Segment,
    policy: &Policy,
    events: &Arc<dyn Events>,
) -> Result<Retrieved, RetrieveError> {
    let k = usize::from(codec.k());
    let total = codec.total();
    let holders = |slot: usize| -> Vec<Source> {
        seg.slots
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    };
    let mut untried = seg
        .slots
        .iter()
        .filter(|(slot, h)| *slot < total && !h.is_empty())
        .map(|(slot, _)| *slot)
        .collect::<Vec<_>>()
        .into_iter();
    let asked = untried.len();
    let shard_bytes = codec.shard_len(seg.entry.len as usize) as u64;
    let start = |slot: usize, in_flight: &mut FuturesUnordered<_>| {
        let ask = Ask {
            key: slot,
            piece: Piece::Shard(slot),
            bytes: shard_bytes,
            sources: holders(slot),
        };
        in_flight.push(launch(peer, seg, ask, policy, events));
    };
    let mut in_flight = FuturesUnordered::new();
    for slot in untried.by_ref().take(k + policy.extra) {
        start(slot, &mut in_flight);
    }
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
    let mut have = 0;
    let mut reasons = Vec::new();
    // Without a hedge the timer is off; a day stands in for "never" in its arithmetic.
    let hedge = policy.hedge_after.unwrap_or(Duration::from_secs(86_400));
    let timer = tokio::time::sleep(hedge);
    tokio::pin!(timer);
    let mut can_hedge = policy.hedge_after.is_some();
    let mut lost: Vec<usize> = Vec::new();
    let mut retried = !policy.retry_lost;
    while have < k {
        tokio::select! {
            next = in_flight.next() => {
                let Some(joined) = next else { break };
                let (slot, who, result) = match joined {
                    Ok(t) => t,
                    Err(e) => {
                        reasons.push(format!("a request task failed: {e}"));
                        if let Some(next) = untried.next() {
                            start(next, &mut in_flight);
                        }
                        continue;
                    }
                };
                match result {
                    Ok(data) => {
                        if let Some(cell) = shards.get_mut(slot) {
                            *cell = Some(data);
                            have += 1;
                        }
                    }
                    Err(e) => {
                        if e.on_the_way() {
                            lost.push(slot);
                        }
                        match who {
                            Some(who) => reasons.push(format!("slot {slot} on {who}: {e}")),
                            None => reasons.push(format!("slot {slot}: {e}")),
                        }
                        if let Some(next) = untried.next() {
                            start(next, &mut in_flight);
                        } else if in_flight.is_empty() && !retried {
                            retried = true;
                            for slot in lost.drain(..) {
                                start(slot, &mut in_flight);
                            }
                        }
                    }
                }
            }
            () = &mut timer, if can_hedge => {
                match untried.next() {
                    Some(next) => {
                        start(next, &mut in_flight);
                        timer.as_mut().reset(tokio::time::Instant::now() + hedge);
                    }
                    None => can_hedge = false,
                }
            }
        }
    }
    if have < k {
        let missing = total.saturating_sub(asked);
        if missing > 0 {
            reasons.push(format!("{missing} slots have no node"));
        }
        return Err(RetrieveError::Unavailable {
            have,
            need: k,
            reasons: reasons.join("; "),
        });
    }
    let stragglers = stragglers(in_flight);
    let data = codec
        .reconstruct_verified(&shards, seg.entry.len as usize, seg.entry.id)
        .map_err(|e| RetrieveError::Rebuild(e.to_string()))?;
    Ok(Retrieved {
        data,
        origin: Origin::Rebuilt,
        stragglers,
    })
}
