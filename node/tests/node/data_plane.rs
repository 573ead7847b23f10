use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, Swarm};
use medley_core::ShardId;
use medley_core::protocol::{
    ErrorCode, MAX_MESSAGE_SIZE, ONE_SHOT_PROTOCOL_NAME, PROTOCOL_NAME, Request, Response,
};

use crate::support::{NodeProcess, bytes, client, grant, put};
use medley_core::test_utils::{test_grant, test_tracker_key};
use medley_net::RequestError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_processes_exchange_100_shards() {
    let a = NodeProcess::start(&[]);
    let b = NodeProcess::start(&[]);
    let c = client().await;

    // 100 shards of varied sizes (up to 64 KiB, the shard size at 256 KiB / 4+2), half
    // uploaded to each node.
    let shards: Vec<Vec<u8>> = (0..100)
        .map(|i| bytes(i, 1 + (i as usize * 997) % (64 * 1024)))
        .collect();
    let mut ids = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        let (peer, addrs) = if i % 2 == 0 {
            (a.peer_id, &a.addrs)
        } else {
            (b.peer_id, &b.addrs)
        };
        ids.push(
            c.put_shard(peer, addrs.clone(), s.clone(), grant(&peer, s))
                .await
                .unwrap(),
        );
    }

    // Each node holds exactly its half.
    let has_a = c
        .has(a.peer_id, a.addrs.clone(), ids.clone())
        .await
        .unwrap();
    let has_b = c
        .has(b.peer_id, b.addrs.clone(), ids.clone())
        .await
        .unwrap();
    for i in 0..100 {
        assert_eq!(has_a[i], i % 2 == 0, "node a, shard {i}");
        assert_eq!(has_b[i], i % 2 == 1, "node b, shard {i}");
    }

    // Exchange: every shard moves to the node that lacks it, fetched and re-uploaded with
    // 16 requests in flight; `get_shard` checks every byte against the id.
    let moves = futures::stream::iter(0..100usize)
        .map(|i| {
            let c = c.clone();
            let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let (fp, fa, tp, ta) = (
                from.peer_id,
                from.addrs.clone(),
                to.peer_id,
                to.addrs.clone(),
            );
            let id = ids[i];
            async move {
                let data = c.get_shard(fp, fa, id).await.unwrap();
                let g = grant(&tp, &data);
                assert_eq!(c.put_shard(tp, ta, data, g).await.unwrap(), id);
            }
        })
        .buffer_unordered(16);
    moves.collect::<Vec<()>>().await;

    // Now both nodes serve all 100, byte for byte.
    for node in [&a, &b] {
        for (i, s) in shards.iter().enumerate() {
            let got = c
                .get_shard(node.peer_id, node.addrs.clone(), ids[i])
                .await
                .unwrap();
            assert_eq!(&got, s, "shard {i}");
        }
    }
}

#[tokio::test]
async fn unknown_shard_is_not_found() {
    let a = NodeProcess::start(&[]);
    let c = client().await;
    let err = c
        .get_shard(a.peer_id, a.addrs.clone(), ShardId::of(b"never stored"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NOT_FOUND), "{err}");
}

#[tokio::test]
async fn puts_without_a_valid_grant_are_refused_and_store_nothing() {
    let a = NodeProcess::start(&[]);
    let other = NodeProcess::start(&[]);
    let c = client().await;
    let me = a.peer_id.to_string();
    let data = bytes(11, 20_000);
    let id = ShardId::of(&data);
    let tracker = test_tracker_key();
    let later = medley_core::unix_now() + 600;
    let forged = medley_core::TrackerKey::from_seed([1; 32])
        .grant(&me, vec![id], later)
        .unwrap();
    let mut widened = tracker.grant(&me, vec![ShardId::of(b"x")], later).unwrap();
    widened.shards.push(id);
    let refused = [
        ("expired", tracker.grant(&me, vec![id], 1_000).unwrap()),
        (
            "other shards",
            tracker
                .grant(&me, vec![ShardId::of(b"x"), ShardId::of(b"y")], later)
                .unwrap(),
        ),
        (
            "another node",
            tracker
                .grant(&other.peer_id.to_string(), vec![id], later)
                .unwrap(),
        ),
        ("another key", forged),
        ("altered after signing", widened),
        ("no shards", tracker.grant(&me, vec![], later).unwrap()),
    ];
    for (what, g) in refused {
        let err = c
            .put_shard(a.peer_id, a.addrs.clone(), data.clone(), g)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN), "{what}: {err}");
        assert_eq!(
            c.has(a.peer_id, a.addrs.clone(), vec![id]).await.unwrap(),
            vec![false],
            "{what}: nothing stored"
        );
    }
    // A node with no tracker key at all refuses every put, even one with a grant.
    let dir = tempfile::tempdir().unwrap();
    let keyless = NodeProcess::start_keyless(dir.path());
    let err = put(&c, &keyless, &data).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN), "{err}");
    assert!(err.to_string().contains("key"), "{err}");
    // The node keeps serving: the valid grant stores the shard.
    put(&c, &a, &data).await.unwrap();
    assert_eq!(
        c.get_shard(a.peer_id, a.addrs.clone(), id).await.unwrap(),
        data
    );
}

#[tokio::test]
async fn wrong_hash_and_full_store_are_refused() {
    let a = NodeProcess::start(&["--capacity", "100 KiB"]);
    let c = client().await;
    let data = bytes(1, 60 * 1024);
    let wrong = ShardId::of(b"other");
    let r = c
        .request(
            a.peer_id,
            a.addrs.clone(),
            Request::PutShard {
                id: wrong,
                grant: Box::new(test_grant(&a.peer_id.to_string(), vec![wrong])),
                data: data.clone(),
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            Response::Error {
                code: ErrorCode::BAD_HASH,
                ..
            }
        ),
        "{r:?}"
    );
    let err = c
        .get_shard(a.peer_id, a.addrs.clone(), wrong)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::NOT_FOUND),
        "nothing was stored under the wrong id"
    );

    let id = put(&c, &a, &data).await.unwrap();
    let err = c
        .put_shard(
            a.peer_id,
            a.addrs.clone(),
            bytes(2, 60 * 1024),
            grant(&a.peer_id, &bytes(2, 60 * 1024)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FULL), "{err}");
    assert_eq!(
        c.get_shard(a.peer_id, a.addrs.clone(), id).await.unwrap(),
        data,
        "earlier data intact"
    );
}

/// Sends raw frames under the data protocol, bypassing the typed codec, through libp2p's
/// stock request-response behaviour: a node must answer it as it answers Medley's own peers.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::other("raw client serves nothing"))
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        io.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn raw_swarm() -> Swarm<request_response::Behaviour<RawCodec>> {
    raw_swarm_speaking(PROTOCOL_NAME)
}

/// A raw client that speaks only protocol `name`.
fn raw_swarm_speaking(name: &'static str) -> Swarm<request_response::Behaviour<RawCodec>> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| {
            request_response::Behaviour::new(
                [(StreamProtocol::new(name), ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
            )
        })
        .unwrap()
        .build()
}

/// Sends one raw frame and returns the decoded response, or the failure as text.
async fn send_raw(
    swarm: &mut Swarm<request_response::Behaviour<RawCodec>>,
    node: &NodeProcess,
    frame: Vec<u8>,
) -> Result<Response, String> {
    let id =
        swarm
            .behaviour_mut()
            .send_request_with_addresses(&node.peer_id, frame, node.addrs.clone());
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) if request_id == id => {
                return Response::decode(&response).map_err(|e| e.to_string());
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) if request_id == id => {
                return Err(error.to_string());
            }
            _ => {}
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_errors_and_the_node_keeps_serving() {
    let mut a = NodeProcess::start(&[]);
    let c = client().await;
    let good = bytes(7, 10_000);
    let id = put(&c, &a, &good).await.unwrap();
    let mut raw = raw_swarm();

    // Garbage that is not a request.
    let r = send_raw(&mut raw, &a, frame(&[0xff, 0x00, 0x13])).await;
    assert!(
        matches!(
            r,
            Ok(Response::Error {
                code: ErrorCode::MALFORMED,
                ..
            })
        ),
        "{r:?}"
    );

    // A truncated request: a GetShard cut in the middle of its id.
    let mut cut = Request::GetShard { id }.encode();
    cut.truncate(10);
    let r = send_raw(&mut raw, &a, frame(&cut)).await;
    assert!(
        matches!(
            r,
            Ok(Response::Error {
                code: ErrorCode::MALFORMED,
                ..
            })
        ),
        "{r:?}"
    );

    // A frame that claims more than the maximum message size is refused unread.
    let mut huge = ((MAX_MESSAGE_SIZE + 1) as u32).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 64]);
    let r = send_raw(&mut raw, &a, huge).await;
    assert!(
        matches!(
            r,
            Ok(Response::Error {
                code: ErrorCode::TOO_LARGE,
                ..
            })
        ),
        "{r:?}"
    );

    // An oversized shard sent in full: an error (a TOO_LARGE answer or a reset stream).
    let big = vec![1u8; MAX_MESSAGE_SIZE + 4096];
    let body = Request::PutShard {
        id: ShardId::of(&big),
        grant: Box::new(grant(&a.peer_id, &big)),
        data: big,
    }
    .encode();
    let r = send_raw(&mut raw, &a, frame(&body)).await;
    assert!(!matches!(r, Ok(Response::Stored)), "{r:?}");

    // An older protocol version is not spoken: the stream is refused.
    let mut old = raw_swarm_speaking("/medley/data/1");
    let r = send_raw(&mut old, &a, frame(&Request::GetShard { id }.encode())).await;
    assert!(r.as_ref().is_err_and(|e| e.contains("protocol")), "{r:?}");

    // A replayed put (same grant, same bytes) changes nothing: the shard is there once.
    let used = c.has(a.peer_id, a.addrs.clone(), vec![id]).await.unwrap();
    let again = Request::PutShard {
        id,
        grant: Box::new(grant(&a.peer_id, &good)),
        data: good.clone(),
    }
    .encode();
    assert_eq!(
        send_raw(&mut raw, &a, frame(&again)).await,
        Ok(Response::Stored)
    );
    assert_eq!(
        c.has(a.peer_id, a.addrs.clone(), vec![id]).await.unwrap(),
        used
    );

    // The node still serves, both to the raw client and to a well-behaved one.
    assert!(a.alive());
    let r = send_raw(&mut raw, &a, frame(&Request::GetShard { id }.encode())).await;
    assert_eq!(r, Ok(Response::Shard { data: good.clone() }));
    // Also under the one-exchange-per-stream name, which it serves but never asks for.
    let mut one_shot = raw_swarm_speaking(ONE_SHOT_PROTOCOL_NAME);
    let r = send_raw(&mut one_shot, &a, frame(&Request::GetShard { id }.encode())).await;
    assert_eq!(r, Ok(Response::Shard { data: good.clone() }));
    assert_eq!(
        c.get_shard(a.peer_id, a.addrs.clone(), id).await.unwrap(),
        good
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_survives_kill_9_with_its_shards_and_identity() {
    // Same data dir across two runs: start, put, SIGKILL, start again.
    let dir = tempfile::tempdir().unwrap();
    let first = NodeProcess::start_in(dir.path(), &[]);
    let c = client().await;
    let data = bytes(3, 30_000);
    let id = put(&c, &first, &data).await.unwrap();
    // kill -9 right after the acknowledgement: the shard must already be on disk.
    let peer = first.peer_id;
    drop(first);

    let second = NodeProcess::start_in(dir.path(), &[]);
    assert_eq!(second.peer_id, peer, "identity persists");
    // A new client: the old one's connection to the killed process is dead.
    let c = client().await;
    let got = c
        .get_shard(second.peer_id, second.addrs.clone(), id)
        .await
        .unwrap();
    assert_eq!(got, data);
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let mut node = NodeProcess::start(&[]);
    node.sigterm();
    let exit = node.wait_exit(Duration::from_secs(20));
    assert!(exit.success(), "exit status {exit}");
    assert!(
        !node.info_file().exists(),
        "node.json is removed on a clean stop"
    );
}

/// What one upload of the stream below came to.
struct Upload {
    id: ShardId,
    data: Vec<u8>,
    acked: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_uploads_keeps_every_acknowledged_shard_and_serves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start_in(dir.path(), &[]);
    let c = client().await;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Eight uploaders, each putting 64 KiB shards one after another until the node stops
    // answering.
    let mut uploaders = Vec::new();
    for u in 0..8u64 {
        let (c, peer, addrs, acked) = (c.clone(), node.peer_id, node.addrs.clone(), acked.clone());
        uploaders.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..10_000u64 {
                let data = bytes(u * 1_000_000 + i, 64 * 1024);
                let id = ShardId::of(&data);
                let ok = tokio::time::timeout(
                    Duration::from_secs(10),
                    c.put_shard(peer, addrs.clone(), data.clone(), grant(&peer, &data)),
                )
                .await;
                let acked_now = matches!(ok, Ok(Ok(_)));
                done.push(Upload {
                    id,
                    data,
                    acked: acked_now,
                });
                if !acked_now {
                    break;
                }
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            done
        }));
    }
    // Let the stream get going, then stop the node in the middle of it.
    let started = std::time::Instant::now();
    while acked.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "uploads did not get going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.sigterm();
    let exit = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(20)));
    assert!(exit.success(), "exit status {exit}");
    let mut uploads = Vec::new();
    for u in uploaders {
        uploads.extend(u.await.unwrap());
    }
    let acked: Vec<&Upload> = uploads.iter().filter(|u| u.acked).collect();
    let cut: Vec<&Upload> = uploads.iter().filter(|u| !u.acked).collect();
    assert!(acked.len() >= 100, "{} acknowledged", acked.len());
    assert_eq!(cut.len(), 8, "each uploader ends on one unacknowledged put");
    drop(node);

    let node = NodeProcess::start_in(dir.path(), &[]);
    let c = client().await;
    for u in &acked {
        let got = c
            .get_shard(node.peer_id, node.addrs.clone(), u.id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged shard {} lost: {e}", u.id));
        assert_eq!(got, u.data);
    }
    // A put cut short is either wholly there or absent: never an error, never other bytes
    // (`get_shard` checks the hash).
    let mut kept = 0;
    for u in &cut {
        match c.get_shard(node.peer_id, node.addrs.clone(), u.id).await {
            Ok(got) => {
                assert_eq!(got, u.data);
                kept += 1;
            }
            Err(RequestError::Remote { code, .. }) if code == ErrorCode::NOT_FOUND => {}
            Err(e) => panic!("shard {} cut by the stop: {e}", u.id),
        }
    }
    eprintln!(
        "{} acknowledged before the stop, all kept; {kept} of {} unacknowledged puts stored",
        acked.len(),
        cut.len()
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    // A tracker that accepts connections and never answers: the stopping node's notice to
    // it waits out its timeout, so the first SIGTERM alone takes seconds.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tracker = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(8) {
            conns.push(c);
        }
    });
    let mut node = NodeProcess::start(&["--tracker", &tracker]);
    node.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert!(node.alive(), "still telling the silent tracker");
    node.sigterm();
    let exit = node.wait_exit(Duration::from_secs(10));
    // 130, not the 0 of a finished graceful stop: the second signal cut it short.
    assert_eq!(exit.code(), Some(130), "exit status {exit}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_told_busy_and_another_peer_is_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ids) = node_holding(
        dir.path(),
        "max_concurrent_requests = 8\nmax_requests_per_peer = 4\n",
        900..908,
        1 << 20,
    )
    .await;
    // A flooder sends all its requests at once (Medley's own peers queue theirs).
    let flooder = medley_net::Peer::dial_only_with(medley_net::PeerConfig {
        max_outbound_per_peer: 1 << 16,
        ..medley_net::PeerConfig::default()
    })
    .await
    .unwrap();
    let honest = client().await;
    // 200 requests at once from one peer.
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let (c, peer, addrs, id) = (
                flooder.clone(),
                node.peer_id,
                node.addrs.clone(),
                ids[i % 8],
            );
            tokio::spawn(async move { c.get_shard(peer, addrs, id).await })
        })
        .collect();
    // Meanwhile another peer plays: it never finds the node busy, since the flooder holds at
    // most 4 of the 8 slots.
    for round in 0..20 {
        let id = ids[round % 8];
        let got = honest
            .get_shard(node.peer_id, node.addrs.clone(), id)
            .await
            .unwrap_or_else(|e| panic!("the honest peer was refused in round {round}: {e}"));
        assert!(id.matches(&got));
    }
    let (mut ok, mut busy) = (0, 0);
    for f in flood {
        match f.await.unwrap() {
            Ok(_) => ok += 1,
            Err(RequestError::Remote { code, message, .. }) if code == ErrorCode::BUSY => {
                assert!(message.contains("one peer"), "{message}");
                busy += 1;
            }
            Err(e) => panic!("flood request: {e}"),
        }
    }
    eprintln!("flood: {ok} served, {busy} told busy");
    assert!(busy > 0 && ok > 0, "{ok} served, {busy} busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_and_the_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("medley-node.toml"), "max_connections = 2\n").unwrap();
    let node = NodeProcess::start_in(dir.path(), &[]);
    let first = client().await;
    let id = first
        .put_shard(
            node.peer_id,
            node.addrs.clone(),
            bytes(77, 10_000),
            grant(&node.peer_id, &bytes(77, 10_000)),
        )
        .await
        .unwrap();
    let second = client().await;
    assert!(
        second
            .get_shard(node.peer_id, node.addrs.clone(), id)
            .await
            .is_ok()
    );
    // A third peer while two are connected: refused.
    let third = client().await;
    let refused = third.get_shard(node.peer_id, node.addrs.clone(), id).await;
    assert!(
        refused.as_ref().is_err_and(RequestError::on_the_way),
        "{refused:?}"
    );
    // The two connected peers are still served.
    for c in [&first, &second] {
        assert!(
            c.get_shard(node.peer_id, node.addrs.clone(), id)
                .await
                .is_ok()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_held_to_its_byte_rate_while_another_asks_and_takes_an_idle_node() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ids) = node_holding(
        dir.path(),
        "peer_bytes_per_sec = \"1 MiB\"\n",
        700..706,
        512 * 1024,
    )
    .await;
    let (greedy, other) = (client().await, client().await);
    let take_all = |greedy: medley_net::PeerHandle| {
        let (node_id, addrs, ids) = (node.peer_id, node.addrs.clone(), ids.clone());
        async move {
            let started = std::time::Instant::now();
            for id in ids {
                greedy.get_shard(node_id, addrs.clone(), id).await.unwrap();
            }
            started.elapsed()
        }
    };
    // Another peer asks for a shard every 300 ms, as a listener does.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = {
        let (other, node_id, addrs, id, stop) = (
            other.clone(),
            node.peer_id,
            node.addrs.clone(),
            ids[0],
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = std::time::Instant::now();
                other.get_shard(node_id, addrs.clone(), id).await.unwrap();
                slowest = slowest.max(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            slowest
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 3 MiB to one peer at 1 MiB/s (after a burst of a segment): about 2.75 s.
    let greedy_took = take_all(greedy.clone()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let other_slowest = listener.await.unwrap();
    assert!(
        greedy_took >= Duration::from_millis(2000),
        "3 MiB at 1 MiB/s took only {greedy_took:?}"
    );
    assert!(
        other_slowest < greedy_took / 4,
        "the other peer waited up to {other_slowest:?} (greedy {greedy_took:?})"
    );
    // Nobody else asking: the node is the greedy peer's, at the speed of the link.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let alone_took = take_all(greedy).await;
    assert!(
        alone_took < Duration::from_millis(1000),
        "3 MiB to a peer alone on the node took {alone_took:?}"
    );
}

/// A node started in `dir` with `config` as its file, holding shards of `len` bytes made from
/// `seeds`; their ids in order.
async fn node_holding(
    dir: &std::path::Path,
    config: &str,
    seeds: std::ops::Range<u64>,
    len: usize,
) -> (NodeProcess, Vec<ShardId>) {
    std::fs::write(dir.join("medley-node.toml"), config).unwrap();
    let node = NodeProcess::start_in(dir, &[]);
    let setup = client().await;
    let mut ids = Vec::new();
    for seed in seeds {
        let data = bytes(seed, len);
        let g = grant(&node.peer_id, &data);
        ids.push(
            setup
                .put_shard(node.peer_id, node.addrs.clone(), data, g)
                .await
                .unwrap(),
        );
    }
    (node, ids)
}
