//! The retrieval engine against real peers on 127.0.0.1: whole copies first, then shards,
//! a lying source never getting through, several holders per slot tried in turn, and every
//! source's outcome reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use medley_core::protocol::{ErrorCode, Request, Response};
use medley_core::{Codec, Hash, SegmentEntry, SegmentId, ShardId};
use medley_net::RequestError;
use medley_net::retrieve::{self, Events, Origin, Piece, Policy, RetrieveError, Segment, Source};
use medley_net::{CancellationToken, Handler, Keypair, Peer, PeerConfig, PeerHandle, PeerId};

/// Serves blobs (shards and segments alike) from memory; `lie` flips a byte of each.
struct Blobs {
    blobs: HashMap<Hash, Vec<u8>>,
    lie: bool,
}

impl Handler for Blobs {
    fn handle(&self, _: PeerId, request: Request) -> BoxFuture<'static, Response> {
        let get = |h: Hash| {
            self.blobs.get(&h).cloned().map(|mut d| {
                if self.lie {
                    d[0] ^= 1;
                }
                d
            })
        };
        let response = match request {
            Request::GetShard { id } => match get(id.0) {
                Some(data) => Response::Shard { data },
                None => Response::error(ErrorCode::NOT_FOUND, "no"),
            },
            Request::GetSegment { id } => match get(id.0) {
                Some(data) => Response::Segment { data },
                None => Response::error(ErrorCode::NOT_FOUND, "no"),
            },
            _ => Response::error(ErrorCode::UNSUPPORTED, "no"),
        };
        Box::pin(async move { response })
    }
}

async fn serve(blobs: Vec<Vec<u8>>, lie: bool) -> (PeerHandle, Source) {
    let blobs = blobs.into_iter().map(|b| (Hash::of(&b), b)).collect();
    let p = Peer::spawn(
        Keypair::generate_ed25519(),
        PeerConfig {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
            ..PeerConfig::default()
        },
        Arc::new(Blobs { blobs, lie }),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let source = (p.peer_id(), p.listen_addrs().await);
    (p, source)
}

/// What each source did, as the engine reported it.
#[derive(Default)]
struct Log(Mutex<Vec<(PeerId, Piece, bool)>>);

impl Events for Log {
    fn delivered(&self, peer: PeerId, piece: Piece, _: usize, _: Duration) {
        self.0.lock().unwrap().push((peer, piece, true));
    }
    fn failed(&self, peer: PeerId, piece: Piece, _: &RequestError) {
        self.0.lock().unwrap().push((peer, piece, false));
    }
}

fn segment_and_shards(codec: &Codec) -> (Vec<u8>, SegmentEntry, Vec<Vec<u8>>) {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
    let shards = codec.encode(&data).unwrap();
    let entry = SegmentEntry {
        id: SegmentId::of(&data),
        len: data.len() as u32,
        shards: shards.iter().map(|s| ShardId::of(s)).collect(),
    };
    (data, entry, shards)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_whole_copy_falls_back_to_an_honest_one_then_to_shards() {
    let codec = Codec::new(4, 2).unwrap();
    let (data, entry, shards) = segment_and_shards(&codec);
    let (_liar, liar) = serve(vec![data.clone()], true).await;
    let (_honest, honest) = serve(vec![data.clone()], false).await;
    let me = Peer::dial_only().await.unwrap();
    let log = Arc::new(Log::default());
    let events: Arc<dyn Events> = log.clone();
    let seg = Segment {
        entry: entry.clone(),
        whole: vec![liar.clone(), honest.clone()],
        slots: Vec::new(),
    };
    let got = retrieve::retrieve(&me, &codec, &seg, &Policy::default(), &events)
        .await
        .unwrap();
    assert_eq!(got.data, data);
    assert_eq!(
        got.origin,
        Origin::Whole(1),
        "the liar's copy never gets through"
    );
    assert!(
        log.0
            .lock()
            .unwrap()
            .contains(&(liar.0, Piece::Whole, false))
    );

    // No whole copy left: the segment is rebuilt from shards, each slot's first holder
    // failing (it has nothing) and its second delivering.
    let (_empty, empty) = serve(Vec::new(), false).await;
    let (_holders, holder) = serve(shards.clone(), false).await;
    let seg = Segment {
        entry,
        whole: vec![liar],
        slots: (0..6)
            .map(|s| (s, vec![empty.clone(), holder.clone()]))
            .collect(),
    };
    let got = retrieve::retrieve(&me, &codec, &seg, &Policy::default(), &events)
        .await
        .unwrap();
    assert_eq!(got.data, data);
    assert_eq!(got.origin, Origin::Rebuilt);
    let log = log.0.lock().unwrap();
    let delivered = log
        .iter()
        .filter(|(p, piece, ok)| *p == holder.0 && matches!(piece, Piece::Shard(_)) && *ok)
        .count();
    // Exactly k asked with no extra: a rebuild reads k shards when every slot delivers.
    assert_eq!(delivered, 4, "{:?}", log.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_shards_is_unavailable_and_says_why() {
    let codec = Codec::new(4, 2).unwrap();
    let (_data, entry, shards) = segment_and_shards(&codec);
    // Three honest shards and one lying holder of the rest: fewer than k good ones.
    let (_a, good) = serve(shards[..3].to_vec(), false).await;
    let (_b, liar) = serve(shards[3..].to_vec(), true).await;
    let me = Peer::dial_only().await.unwrap();
    let seg = Segment {
        entry,
        whole: Vec::new(),
        slots: (0..6)
            .map(|s| (s, vec![if s < 3 { good.clone() } else { liar.clone() }]))
            .collect(),
    };
    let events: Arc<dyn Events> = Arc::new(retrieve::NoEvents);
    let policy = Policy {
        extra: 1,
        hedge_after: Some(Duration::from_millis(50)),
        ..Policy::default()
    };
    match retrieve::retrieve(&me, &codec, &seg, &policy, &events).await {
        Err(RetrieveError::Unavailable {
            have,
            need,
            reasons,
        }) => {
            assert_eq!((have, need), (3, 4));
            assert!(reasons.contains("do not match"), "{reasons}");
        }
        other => panic!("{other:?}"),
    }
}
