//! Two data-plane peers on 127.0.0.1 over real QUIC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use medley_core::ShardId;
use medley_core::protocol::{ErrorCode, Request, Response};
use medley_core::test_utils::test_grant;
use medley_net::{
    CancellationToken, Handler, Keypair, Peer, PeerConfig, PeerHandle, PeerId, RequestError,
};
use tokio::sync::Semaphore;

/// An in-memory shard map; `lie` makes it flip a byte of everything it serves.
#[derive(Default)]
struct MemService {
    shards: Mutex<HashMap<ShardId, Vec<u8>>>,
    lie: bool,
}

impl Handler for MemService {
    fn handle(&self, _: PeerId, request: Request) -> BoxFuture<'static, Response> {
        let response = match request {
            Request::PutShard { id, data, .. } => {
                if id.matches(&data) {
                    self.shards.lock().unwrap().insert(id, data);
                    Response::Stored
                } else {
                    Response::error(ErrorCode::BAD_HASH, "mismatch")
                }
            }
            Request::GetShard { id } => match self.shards.lock().unwrap().get(&id) {
                Some(d) => {
                    let mut data = d.clone();
                    if self.lie {
                        data[0] ^= 1;
                    }
                    Response::Shard { data }
                }
                None => Response::error(ErrorCode::NOT_FOUND, "no"),
            },
            _ => Response::error(ErrorCode::UNSUPPORTED, "no"),
        };
        Box::pin(async move { response })
    }
}

fn listen() -> PeerConfig {
    PeerConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        ..PeerConfig::default()
    }
}

async fn server(
    handler: Arc<dyn Handler>,
    config: PeerConfig,
) -> (PeerHandle, PeerId, Vec<medley_net::Multiaddr>) {
    let p = Peer::spawn(
        Keypair::generate_ed25519(),
        config,
        handler,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let addrs = p.listen_addrs().await;
    assert!(!addrs.is_empty());
    let id = p.peer_id();
    (p, id, addrs)
}

async fn client() -> PeerHandle {
    Peer::dial_only().await.unwrap()
}

/// A peer that only asks, with identity `key`.
async fn client_with(key: Keypair) -> PeerHandle {
    Peer::spawn(
        key,
        PeerConfig::default(),
        Arc::new(medley_net::NoService),
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn put_get_and_not_found() {
    let (_s, id, addrs) = server(Arc::new(MemService::default()), listen()).await;
    let c = client().await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let grant = test_grant(&id.to_string(), vec![ShardId::of(&data)]);
    let sid = c
        .put_shard(id, addrs.clone(), data.clone(), grant.clone())
        .await
        .unwrap();
    assert_eq!(c.get_shard(id, addrs.clone(), sid).await.unwrap(), data);
    let missing = ShardId::of(b"nothing");
    let err = c.get_shard(id, addrs.clone(), missing).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NOT_FOUND), "{err}");
    // A put under the wrong id is refused by the server.
    let err = c
        .request(
            id,
            addrs,
            Request::PutShard {
                id: missing,
                grant: Box::new(grant),
                data,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        err,
        Response::Error {
            code: ErrorCode::BAD_HASH,
            ..
        }
    ));
}

/// Requests one after another share one stream; requests in flight together take one each
/// and leave them for the next. A stream the server closed for want of requests is replaced
/// without the requester seeing a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_kept_for_later_requests_and_replaced_when_closed() {
    let service = Arc::new(MemService::default());
    let data = vec![7u8; 10_000];
    let sid = ShardId::of(&data);
    service.shards.lock().unwrap().insert(sid, data.clone());
    let idle = Duration::from_millis(300);
    let (_s, id, addrs) = server(
        service,
        PeerConfig {
            stream_idle_timeout: idle,
            ..listen()
        },
    )
    .await;
    let c = client().await;
    for _ in 0..20 {
        assert_eq!(c.get_shard(id, addrs.clone(), sid).await.unwrap(), data);
    }
    assert_eq!(c.streams_opened(), 1, "20 requests one after another");

    let eight_at_once =
        || futures::future::join_all((0..8).map(|_| c.get_shard(id, addrs.clone(), sid)));
    for r in eight_at_once().await {
        assert_eq!(r.unwrap(), data);
    }
    let opened = c.streams_opened();
    assert!((2..=8).contains(&opened), "{opened} streams for 8 at once");
    for r in eight_at_once().await {
        assert_eq!(r.unwrap(), data);
    }
    assert_eq!(c.streams_opened(), opened, "8 more at once reuse them");

    // The server has closed every stream by now; the request finds its kept one closed and
    // asks again on a new one.
    tokio::time::sleep(idle * 3).await;
    assert_eq!(c.get_shard(id, addrs.clone(), sid).await.unwrap(), data);
    assert_eq!(c.streams_opened(), opened + 1);
}

#[tokio::test]
async fn lying_peer_is_caught() {
    let honest = Arc::new(MemService::default());
    let data = vec![5u8; 4096];
    let sid = ShardId::of(&data);
    honest.shards.lock().unwrap().insert(sid, data.clone());
    let liar = Arc::new(MemService {
        shards: Mutex::new(honest.shards.lock().unwrap().clone()),
        lie: true,
    });
    let (_l, lid, laddrs) = server(liar, listen()).await;
    let c = client().await;
    let err = c.get_shard(lid, laddrs, sid).await.unwrap_err();
    assert!(matches!(err, RequestError::BadHash { .. }), "{err}");
}

/// Blocks every request until released, to fill the in-flight limit deterministically.
struct Gate {
    open: Arc<Semaphore>,
    entered: Arc<Semaphore>,
}

impl Handler for Gate {
    fn handle(&self, _: PeerId, _: Request) -> BoxFuture<'static, Response> {
        let open = self.open.clone();
        let entered = self.entered.clone();
        Box::pin(async move {
            entered.add_permits(1);
            let _permit = open.acquire().await;
            Response::Has { present: vec![] }
        })
    }
}

#[tokio::test]
async fn over_the_limit_requests_are_answered_busy() {
    let open = Arc::new(Semaphore::new(0));
    let entered = Arc::new(Semaphore::new(0));
    let gate = Arc::new(Gate {
        open: open.clone(),
        entered: entered.clone(),
    });
    let config = PeerConfig {
        max_concurrent_inbound: 2,
        ..listen()
    };
    let (_s, id, addrs) = server(gate, config).await;
    let c = client().await;
    let has = |c: PeerHandle, addrs: Vec<_>| async move { c.has(id, addrs, vec![]).await };
    let first = tokio::spawn(has(c.clone(), addrs.clone()));
    let second = tokio::spawn(has(c.clone(), addrs.clone()));
    // Wait until both are inside the handler.
    let _both = tokio::time::timeout(Duration::from_secs(10), entered.acquire_many(2))
        .await
        .unwrap();
    let third = c.has(id, addrs.clone(), vec![]).await.unwrap_err();
    assert_eq!(third.code(), Some(ErrorCode::BUSY), "{third}");
    open.add_permits(10);
    assert!(first.await.unwrap().is_ok());
    assert!(second.await.unwrap().is_ok());
    // Below the limit again: served.
    assert!(c.has(id, addrs, vec![]).await.is_ok());
}

/// Holds every request 50 ms, counting how many it holds at once.
#[derive(Default)]
struct Counts {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Counting(Arc<Counts>);

impl Handler for Counting {
    fn handle(&self, _: PeerId, _: Request) -> BoxFuture<'static, Response> {
        use std::sync::atomic::Ordering;
        let me = self.0.clone();
        Box::pin(async move {
            let n = me.now.fetch_add(1, Ordering::SeqCst) + 1;
            me.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            me.now.fetch_sub(1, Ordering::SeqCst);
            Response::Has { present: vec![] }
        })
    }
}

/// A requester with more requests for one peer than that peer serves of one peer at once
/// (16 by default) queues them itself: every one is answered, none `BUSY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_what_a_peer_serves_at_once_wait_their_turn() {
    let counts = Arc::new(Counts::default());
    let (_s, id, addrs) = server(Arc::new(Counting(counts.clone())), listen()).await;
    let c = client().await;
    let asks = (0..48).map(|_| {
        let (c, addrs) = (c.clone(), addrs.clone());
        tokio::spawn(async move { c.has(id, addrs, vec![]).await })
    });
    for r in futures::future::join_all(asks).await {
        r.unwrap().unwrap();
    }
    let most = counts.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most <= 16, "{most} requests held at once");
    assert!(
        most >= 8,
        "only {most} at once: the turns serialise too much"
    );
}

#[tokio::test]
async fn shutdown_fails_pending_and_later_requests() {
    let c = client().await;
    c.shutdown(Duration::from_secs(5)).await;
    let err = c
        .get_shard(PeerId::random(), vec![], ShardId::of(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err, RequestError::Closed);
}

/// A UDP relay on 127.0.0.1 that holds every datagram for `delay` before passing it on, in
/// both directions: a link with a round trip of twice `delay`. Returns the port to dial.
async fn delaying_relay(server: std::net::SocketAddr, delay: Duration) -> u16 {
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let port = front.local_addr().unwrap().port();
    let client = Arc::new(Mutex::new(None::<std::net::SocketAddr>));
    // Each datagram is sent at its arrival time plus `delay`, in arrival order.
    let (to_server, mut to_server_rx) = tokio::sync::mpsc::unbounded_channel();
    let (to_client, mut to_client_rx) = tokio::sync::mpsc::unbounded_channel();
    {
        let (front, client) = (front.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let _ = to_server.send((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
            }
        });
    }
    {
        let back = back.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = back.recv(&mut buf).await {
                let _ = to_client.send((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
            }
        });
    }
    tokio::spawn(async move {
        while let Some((at, datagram)) = to_server_rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = back.send(&datagram).await;
        }
    });
    tokio::spawn(async move {
        while let Some((at, datagram)) = to_client_rx.recv().await {
            tokio::time::sleep_until(at).await;
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&datagram, to).await;
            }
        }
    });
    port
}

/// On an open connection a request costs one round trip, not two: the protocol proposal and
/// the request leave together instead of the request waiting for the listener to confirm
/// the protocol. Over a 200 ms round trip that is the difference between ~200 and ~400 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_an_open_connection_takes_one_round_trip() {
    let service = Arc::new(MemService::default());
    let data = vec![9u8; 1000];
    let sid = ShardId::of(&data);
    service.shards.lock().unwrap().insert(sid, data.clone());
    let (_s, id, addrs) = server(service, listen()).await;
    let server_addr = addrs
        .iter()
        .find_map(|a| {
            a.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::Udp(port) => {
                    Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                }
                _ => None,
            })
        })
        .unwrap();
    let rtt = Duration::from_millis(200);
    let port = delaying_relay(server_addr, rtt / 2).await;
    let via_relay: medley_net::Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{id}")
        .parse()
        .unwrap();
    let c = client().await;
    // The first request also connects: handshake and identify take round trips of their own.
    assert_eq!(
        c.get_shard(id, vec![via_relay.clone()], sid).await.unwrap(),
        data
    );
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        assert_eq!(
            c.get_shard(id, vec![via_relay.clone()], sid).await.unwrap(),
            data
        );
        fastest = fastest.min(started.elapsed());
    }
    eprintln!("fastest request on a {rtt:?} round trip: {fastest:?}");
    assert!(fastest >= rtt, "faster than the link allows: {fastest:?}");
    assert!(
        fastest < rtt * 3 / 2,
        "a request took {fastest:?} on a {rtt:?} round trip: more than one round trip"
    );
}

/// A client process that exits, after [`PeerHandle::shutdown`] or without it as in a crash,
/// and comes back at once with the same identity is served at once, even by a server that
/// keeps one connection per peer: its new connection replaces the one left behind, which
/// would otherwise count against the limit until it timed out.
#[test]
fn the_same_identity_is_served_again_right_after_it_restarts() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let (_s, id, addrs) = server_rt.block_on(server(
        Arc::new(MemService::default()),
        PeerConfig {
            max_connections_per_peer: 1,
            ..listen()
        },
    ));
    let key = Keypair::generate_ed25519();
    for round in 0..4 {
        let started = std::time::Instant::now();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = client_with(key.clone()).await;
            // An answer (not found) means the server took the connection.
            loop {
                match c.get_shard(id, addrs.clone(), ShardId::of(b"none")).await {
                    Err(e) if e.code() == Some(ErrorCode::NOT_FOUND) => break,
                    Ok(_) => panic!("an unknown shard was served"),
                    // Far less than the QUIC idle timeout (10 s) that would close a
                    // connection left behind.
                    Err(_) if started.elapsed() < Duration::from_secs(3) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("round {round}: refused for {:?}: {e}", started.elapsed()),
                }
            }
            // Odd rounds end as a crash would: no shutdown, nothing said to the server.
            if round % 2 == 0 {
                c.shutdown(Duration::from_secs(2)).await;
            }
        });
        // As at a process's exit: nothing of the client runs after this.
        rt.shutdown_background();
    }
    // The limit holds: two live peers with that identity, and the older loses its connection
    // to the newer.
    server_rt.block_on(async {
        // A peer with that identity, once the server has answered it.
        let served = |key: Keypair| {
            let addrs = addrs.clone();
            async move {
                let p = client_with(key).await;
                let err = p
                    .get_shard(id, addrs, ShardId::of(b"none"))
                    .await
                    .unwrap_err();
                assert_eq!(err.code(), Some(ErrorCode::NOT_FOUND), "{err}");
                p
            }
        };
        let older = served(key.clone()).await;
        assert_eq!(older.connected_peers().await, 1);
        let _newer = served(key).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while older.connected_peers().await != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the server kept both connections of one peer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// A server that dies without a word (a crash) and comes back on the same address with the
/// same identity: the connection to its old process answers nothing until it times out,
/// so a request on it fails; once the client gives that connection up, the next request
/// dials the new process and is answered at once.
#[test]
fn a_server_that_crashed_and_came_back_is_reached_once_its_old_connection_is_given_up() {
    let key = Keypair::generate_ed25519();
    let start_server = |port: u16| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let key = key.clone();
        let (p, addrs) = rt.block_on(async move {
            // The old process's socket closes in the background: try again for a while.
            let mut tries = 0;
            let listen: medley_net::Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
                .parse()
                .unwrap();
            let p = loop {
                let config = PeerConfig {
                    listen: vec![listen.clone()],
                    ..PeerConfig::default()
                };
                let service = Arc::new(MemService::default());
                match Peer::spawn(key.clone(), config, service, CancellationToken::new()).await {
                    Ok(p) => break p,
                    Err(e) if tries < 40 => {
                        tries += 1;
                        eprintln!("listening again: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            let addrs = p.listen_addrs().await;
            (p, addrs)
        });
        (rt, p, addrs)
    };
    let (rt, p, addrs) = start_server(0);
    let id = p.peer_id();
    let port: u16 = addrs[0]
        .to_string()
        .split("/udp/")
        .nth(1)
        .and_then(|rest| rest.split('/').next()?.parse().ok())
        .unwrap();

    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let c = client_rt.block_on(async {
        Peer::spawn(
            Keypair::generate_ed25519(),
            PeerConfig {
                request_timeout: Duration::from_secs(1),
                ..PeerConfig::default()
            },
            Arc::new(medley_net::NoService),
            CancellationToken::new(),
        )
        .await
        .unwrap()
    });
    let ask = || {
        let (c, addrs) = (c.clone(), addrs.clone());
        async move { c.get_shard(id, addrs, ShardId::of(b"none")).await }
    };
    let answered = |r: &Result<_, medley_net::RequestError>| matches!(r, Err(e) if e.code() == Some(ErrorCode::NOT_FOUND));
    assert!(answered(&client_rt.block_on(ask())));

    // The crash: nothing of the old process runs any more.
    drop(p);
    rt.shutdown_background();
    let (_rt, _p, _) = start_server(port);

    client_rt.block_on(async {
        let started = std::time::Instant::now();
        let first = ask().await;
        // The new process cannot reset a connection it never had: the request on it
        // goes unanswered.
        let e = first.expect_err("the old connection answered");
        assert!(e.on_the_way(), "{e}");
        c.disconnect(id).await;
        let second = ask().await;
        assert!(
            answered(&second),
            "after giving the old connection up: {:?}",
            second.err()
        );
        // Far sooner than the QUIC idle timeout (10 s) that would close it otherwise.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    });
}
