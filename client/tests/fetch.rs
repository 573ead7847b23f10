//! The fetcher against real data-plane peers on loopback that serve a song's shards from
//! memory: honest ones, one that lies (wrong bytes), slow ones and absent ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use medley_client::{ClientError, FetchOptions, Fetcher, Holder, Report};
use medley_core::protocol::{ErrorCode, Request, Response};
use medley_core::{Codec, Manifest, PublisherKey, SegmentId, ShardId, SongMeta};
use medley_net::retrieve::balanced_rank;
use medley_net::{CancellationToken, Handler, Keypair, Peer, PeerConfig, PeerHandle, PeerId};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Honest,
    Liar,
    Slow(Duration),
    Refuse,
}

struct Memory {
    shards: HashMap<ShardId, Vec<u8>>,
    mode: Mode,
    /// Shard requests it answered.
    served: Arc<AtomicU64>,
}

impl Handler for Memory {
    fn handle(&self, _: PeerId, request: Request) -> BoxFuture<'static, Response> {
        let Request::GetShard { id } = request else {
            return Box::pin(async { Response::error(ErrorCode::UNSUPPORTED, "only shards") });
        };
        let data = self.shards.get(&id).cloned();
        if data.is_some() {
            self.served.fetch_add(1, Ordering::Relaxed);
        }
        let mode = self.mode;
        Box::pin(async move {
            let Some(mut data) = data else {
                return Response::error(ErrorCode::NOT_FOUND, "no such shard");
            };
            match mode {
                Mode::Honest => {}
                Mode::Liar => data[0] ^= 0xff,
                Mode::Slow(d) => tokio::time::sleep(d).await,
                Mode::Refuse => return Response::error(ErrorCode::INTERNAL, "disk on fire"),
            }
            Response::Shard { data }
        })
    }
}

struct Net {
    manifest: Manifest,
    song: Vec<u8>,
    holders: Vec<Vec<Option<Holder>>>,
    peers: Vec<PeerHandle>,
    /// Per peer, the shard requests it answered.
    served: Vec<Arc<AtomicU64>>,
    client: PeerHandle,
}

const SEGMENT: usize = 256 * 1024;

fn song_bytes(len: u32) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A 3-segment song coded 4+2; the holder of slot `i` of every segment is peer `i`.
async fn network(modes: [Mode; 6]) -> Net {
    network_of(modes, song_bytes(600_000), SEGMENT).await
}

/// `song` cut in segments of `segment` bytes, coded 4+2; peer `i` holds slot `i` of each.
async fn network_of(modes: [Mode; 6], song: Vec<u8>, segment: usize) -> Net {
    let key = PublisherKey::from_seed([5; 32]);
    let meta = SongMeta {
        title: "t".into(),
        codec: "flac".into(),
        mime: "audio/flac".into(),
        ..SongMeta::default()
    };
    let body = medley_core::test_utils::body_for(meta, &song, segment as u32, 4, 2, key.id());
    let manifest = Manifest::sign(body, &key).unwrap();
    let codec = Codec::new(4, 2).unwrap();
    let mut per_slot: Vec<HashMap<ShardId, Vec<u8>>> = vec![HashMap::new(); 6];
    for chunk in song.chunks(segment) {
        for (slot, (id, data)) in codec
            .encode_with_ids(chunk)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            per_slot[slot].insert(id, data);
        }
    }
    let mut peers = Vec::new();
    let mut served = Vec::new();
    let mut row = Vec::new();
    for (slot, shards) in per_slot.into_iter().enumerate() {
        let count = Arc::new(AtomicU64::new(0));
        served.push(count.clone());
        let config = PeerConfig {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
            ..PeerConfig::default()
        };
        let handler = Arc::new(Memory {
            shards,
            mode: modes[slot],
            served: count,
        });
        let p = Peer::spawn(
            Keypair::generate_ed25519(),
            config,
            handler,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        row.push(Some(Holder {
            peer: p.peer_id(),
            addrs: p.listen_addrs().await,
            alive: true,
        }));
        peers.push(p);
    }
    let holders = vec![row; manifest.body().segments.len()];
    Net {
        manifest,
        song,
        holders,
        peers,
        served,
        client: Peer::dial_only().await.unwrap(),
    }
}

fn fetcher(net: &Net, hedge_ms: u64) -> Arc<Fetcher> {
    Arc::new(Fetcher::new(
        net.client.clone(),
        &net.manifest,
        net.holders.clone(),
        FetchOptions {
            extra_sources: 1,
            hedge_after: Duration::from_millis(hedge_ms),
            read_ahead: 3,
        },
        Arc::new(Report::default()),
    ))
}

async fn whole(f: &Arc<Fetcher>) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    let mut s = std::pin::pin!(f.stream(0));
    while let Some(seg) = s.next().await {
        out.extend(seg?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lying_source_is_outvoted_and_reported() {
    use Mode::*;
    // The liar holds the slot asked first for the first segment.
    let first = SegmentId::of(&song_bytes(600_000)[..SEGMENT]);
    let liar = (0..6)
        .find(|&slot| balanced_rank(&first, slot, 6) == 0)
        .unwrap();
    let mut modes = [Honest; 6];
    modes[liar] = Liar;
    let net = network(modes).await;
    let f = fetcher(&net, 250);
    assert_eq!(whole(&f).await.unwrap(), net.song);
    assert_eq!(f.report().liars(), vec![net.peers[liar].peer_id()]);
    let stats = &f.report().snapshot()[&net.peers[liar].peer_id()];
    assert_eq!(stats.shards, 0, "nothing it sent was used");
    assert!(stats.bad_hashes >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_slot_of_a_partition_serves_its_share_of_reads() {
    // 48 segments of 16 KiB: k + 1 = 5 of the 6 slots are asked per segment.
    let net = network_of([Mode::Honest; 6], song_bytes(48 * 16 * 1024), 16 * 1024).await;
    let f = fetcher(&net, 5_000);
    assert_eq!(whole(&f).await.unwrap(), net.song);
    f.settle(Duration::from_secs(5)).await;
    let served: Vec<u64> = net
        .served
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let total: u64 = served.iter().sum();
    assert!(total >= 48 * 4, "{served:?}");
    let mean = total as f64 / 6.0;
    let max = *served.iter().max().unwrap() as f64;
    // Each slot is left out of about one segment in six: every holder, the parity slots'
    // included, answers about the same number of reads.
    assert!(
        served.iter().all(|&n| n > 0),
        "a holder never read: {served:?}"
    );
    assert!(max / mean <= 1.5, "reads per slot {served:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_sources_are_hedged() {
    use Mode::*;
    let slow = Slow(Duration::from_secs(20));
    // k + 1 = 5 are asked at once; two of them stall, so a sixth must be asked.
    let net = network([slow, slow, Honest, Honest, Honest, Honest]).await;
    let f = fetcher(&net, 100);
    let started = Instant::now();
    assert_eq!(whole(&f).await.unwrap(), net.song);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the stalled sources: {:?}",
        started.elapsed()
    );
    assert!(f.report().snapshot()[&net.peers[5].peer_id()].shards >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_few_sources_is_a_clear_error() {
    use Mode::*;
    let net = network([Refuse, Liar, Refuse, Honest, Honest, Honest]).await;
    let f = fetcher(&net, 50);
    let e = whole(&f).await.unwrap_err();
    let ClientError::Unavailable {
        index,
        have,
        needed,
        reasons,
    } = &e
    else {
        panic!("{e}");
    };
    assert_eq!((*index, *have, *needed), (0, 3, 4));
    assert!(reasons.contains("disk on fire"), "{reasons}");
    assert!(reasons.contains("do not match"), "{reasons}");
    // One missing slot in the layout counts as a missing source, not a crash.
    let mut holders = net.holders.clone();
    holders[0][3] = None;
    let f = Arc::new(Fetcher::new(
        net.client.clone(),
        &net.manifest,
        holders,
        FetchOptions {
            extra_sources: 1,
            hedge_after: Duration::from_millis(50),
            read_ahead: 1,
        },
        Arc::new(Report::default()),
    ));
    let e = f.segment(0).await.unwrap_err();
    assert!(e.to_string().contains("no node"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_segment_costs_no_request_and_a_range_fetches_only_its_segments() {
    let net = network([Mode::Honest; 6]).await;
    let cache = Arc::new(medley_client::SegmentCache::new(16 << 20));
    let make = || {
        Arc::new(
            Fetcher::new(
                net.client.clone(),
                &net.manifest,
                net.holders.clone(),
                FetchOptions {
                    extra_sources: 0,
                    hedge_after: Duration::from_secs(5),
                    read_ahead: 3,
                },
                Arc::new(Report::default()),
            )
            .with_cache(cache.clone()),
        )
    };
    // Only the last segment of three.
    let first = make();
    let mut s = std::pin::pin!(first.stream_range(2..3, 3));
    let last = s.next().await.unwrap().unwrap();
    assert!(s.next().await.is_none());
    assert_eq!(&last[..], &net.song[2 * 256 * 1024..]);
    let d = first.report().delivery();
    assert_eq!((d.rebuilt_segments, d.cache_segments), (1, 0));
    assert_eq!(
        first
            .report()
            .snapshot()
            .values()
            .map(|s| s.shards)
            .sum::<u64>(),
        4
    );

    // The whole song: two segments rebuilt, the cached one from the cache, same bytes.
    let second = make();
    assert_eq!(whole(&second).await.unwrap(), net.song);
    let d = second.report().delivery();
    assert_eq!((d.rebuilt_segments, d.cache_segments), (2, 1));
    assert_eq!(d.cache_bytes, last.len() as u64);
    // Again: every segment from the cache, not one request.
    let third = make();
    assert_eq!(whole(&third).await.unwrap(), net.song);
    assert_eq!(third.report().delivery().cache_segments, 3);
    assert!(third.report().snapshot().is_empty(), "no source was asked");
    assert_eq!(cache.stats().segments, 3);
}
