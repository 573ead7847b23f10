//! The tracker as an attacker meets it: admin calls through a proxy, from a web page, by
//! DNS rebinding; slow sockets; a crowd of fresh identities; regions and offsets chosen to
//! grow its state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p_identity::Keypair;
use medley_api::{PeerAnnouncement, ReportReason, SourceReport, TrackerClient};
use medley_tracker::{Tracker, TrackerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{manifest, post_body, publisher, start};

/// Forwards every connection made to 127.0.0.2 (a port of its own) to `to`, as a reverse
/// proxy on the tracker's host does: to the tracker, every request comes from loopback.
async fn proxy(to: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn admin_calls_need_the_token_over_http_even_from_loopback_and_the_socket_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    // As OPERATING.md has it: on loopback, behind a proxy, no admin_token.
    let t = Tracker::bind(TrackerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        publishers: vec![publisher().id().to_string()],
        store: crate::support::store(dir.path()),
        ..TrackerConfig::default()
    })
    .await
    .unwrap();
    let via = proxy(t.addr()).await;
    let http = reqwest::Client::new();
    let other = medley_core::PublisherKey::from_seed([7; 32]);
    for base in [format!("http://{via}"), t.url()] {
        let r = http
            .post(format!("{base}/v1/publishers"))
            .json(&json!({ "key": other.id().to_string() }))
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await, (403, "admin_disabled".into()), "{base}");
        let r = http
            .get(format!("{base}/v1/publishers"))
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await.0, 403, "{base}");
    }
    // Nothing changed: the other key still may not publish.
    let m = manifest("Through The Proxy", 70_000, 4, 2, &other);
    let r = post_body(
        &http,
        &format!("{}/v1/publish", t.url()),
        m.encoded().to_vec(),
    )
    .await;
    assert_eq!(code(r).await, (403, "unknown_publisher".into()));

    // The admin socket in the data directory (mode 0600) takes admin calls without a token.
    let socket = dir.path().join(medley_tracker::ADMIN_SOCKET_FILE);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let admin = TrackerClient::new(&t.admin_url()).unwrap();
    admin
        .add_publisher(&other.id().to_string(), None)
        .await
        .unwrap();
    assert!(
        admin
            .publishers(None)
            .await
            .unwrap()
            .contains(&other.id().to_string())
    );
    let r = post_body(
        &http,
        &format!("{}/v1/publish", t.url()),
        m.encoded().to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    t.shutdown(Duration::from_secs(5)).await;

    // Beyond loopback without a token, the tracker does not start.
    let open = TrackerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "0.0.0.0:0".parse().unwrap(),
        store: crate::support::store(dir.path()),
        ..TrackerConfig::default()
    };
    let e = Tracker::bind(open).await.unwrap_err().to_string();
    assert!(e.contains("admin_token"), "{e}");
}

#[tokio::test]
async fn a_web_page_can_reach_admin_neither_by_a_form_nor_by_dns_rebinding() {
    let dir = tempfile::tempdir().unwrap();
    // The tracker of a developer who runs without a token: the page's best chance.
    let t = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = t.url();
    // What a cross-site form can send: a urlencoded (or text/plain) body, no headers.
    for ct in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data",
    ] {
        let r = http
            .post(format!("{url}/v1/nodes/node-0/drain"))
            .header("content-type", ct)
            .body("x=1")
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await, (415, "malformed_json".into()), "{ct}");
    }
    let r = http
        .post(format!("{url}/v1/publishers"))
        .header("content-type", "text/plain")
        .body(format!("{{\"key\":\"{}\"}}", publisher().id()))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await.0, 415);
    // DNS rebinding: the page's own name in Host, resolved to 127.0.0.1.
    for path in ["/v1/publishers", "/v1/layout/preview"] {
        let r = http
            .get(format!("{url}{path}"))
            .header("host", "evil.example.com:4700")
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await, (403, "bad_host".into()), "{path}");
    }
    // The same requests as a tool sends them are taken (no node-0 yet: 404).
    let r = http
        .post(format!("{url}/v1/nodes/node-0/drain"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (404, "unknown_node".into()));
    let r = http
        .get(format!("{url}/v1/publishers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    t.shutdown(Duration::from_secs(5)).await;
}

/// The value of the unlabelled series `name` in a Prometheus text.
fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_fresh_identities_leave_bounded_state_and_ban_nobody() {
    // The tracker as a process of its own, so that its memory is its own.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("medley-tracker.toml"),
        format!(
            "publishers = [\"{}\"]\nrate_limit_per_sec = 0\nadmission = \"open\"\n",
            publisher().id()
        ),
    )
    .unwrap();
    let (tracker, url) = crate::process::start_with(dir.path(), &[]);
    let pid = tracker.0.id();
    let m = manifest("Crowded", 70_000, 4, 2, &publisher());
    let http = reqwest::Client::new();
    post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    let song = m.id();
    // Honest nodes, registered; the crowd accuses the first.
    let mut node_id = String::new();
    for i in 0..6 {
        let node = Keypair::generate_ed25519();
        let id = node.public().to_peer_id().to_string();
        TrackerClient::builder(&url)
            .signer(node)
            .build()
            .unwrap()
            .register(&medley_api::Registration {
                peer_id: id.clone(),
                addrs: vec![format!("/ip4/127.0.0.1/udp/{}/quic-v1", 9000 + i)],
                region: "eu".into(),
                capacity: 1 << 40,
                join: None,
            })
            .await
            .unwrap();
        if i == 0 {
            node_id = id;
        }
    }

    let before = medley_daemon::resident_bytes(Some(pid)).unwrap();
    let started = Instant::now();
    let identities = 10_000;
    let base = TrackerClient::new(&url).unwrap();
    let crowd = futures::stream::iter(0..identities).map(|i| {
        let base = base.clone();
        let node_id = node_id.clone();
        async move {
            let key = Keypair::generate_ed25519();
            let me = key.public().to_peer_id().to_string();
            let c = base.with_signer(key);
            // Each announces the song (from a made-up address and region)...
            c.announce(&PeerAnnouncement {
                peer_id: me,
                addrs: vec![format!("/ip4/10.{}.{}.1/udp/1/quic-v1", i / 250, i % 250)],
                region: format!("region-{i}"),
                songs: vec![song],
                partial: Vec::new(),
            })
            .await
            .unwrap();
            // ...accuses the honest node of lying, and a source nobody knows...
            for source in [node_id, format!("made-up-{i}")] {
                c.report_source(&SourceReport {
                    peer_id: source,
                    song: song.to_string(),
                    reason: ReportReason::BadHash,
                })
                .await
                .unwrap();
            }
            // ...and plays it in a region of its own.
            c.report_play(&medley_api::PlayReport::new(song, &format!("r{i}"), None))
                .await
                .unwrap();
        }
    });
    crowd.buffer_unordered(16).collect::<Vec<()>>().await;
    let took = started.elapsed();
    let grown = medley_daemon::resident_bytes(Some(pid))
        .unwrap()
        .saturating_sub(before);

    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Stated bounds: one announcement each (at most 100 000 in all), the one song indexed,
    // reports kept only about the one source the tracker knows, one history per identity
    // (at most 200 000). Nothing is kept for the made-up sources.
    assert_eq!(
        gauge(&metrics, "medley_tracker_announcing_peers"),
        identities
    );
    assert_eq!(gauge(&metrics, "medley_tracker_announced_songs"), 1);
    assert_eq!(gauge(&metrics, "medley_tracker_reported_sources"), 1);
    assert_eq!(gauge(&metrics, "medley_tracker_accused_sources"), 1);
    assert!(gauge(&metrics, "medley_tracker_known_identities") <= identities);
    // The fresh identities ban nobody, and the song lists a handful of its claimed copies.
    let nodes = base.nodes().await.unwrap();
    assert!(nodes.iter().all(|n| !n.banned), "nobody banned");
    let sources = base.sources(song, Some("region-0")).await.unwrap();
    assert!(
        sources.whole.len() <= 4,
        "{} whole copies listed",
        sources.whole.len()
    );
    // Plays from 10 000 made-up regions are counted in one (written within a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = base.song(song).await.unwrap();
        if s.plays == identities || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s.plays, identities);
    assert_eq!(s.plays_by_region.keys().collect::<Vec<_>>(), ["other"]);
    // Memory: the tracker grew by less than 48 MiB for 40 000 hostile requests (about
    // 5 KiB an identity at most; the maps above are what holds it).
    assert!(grown < 48 << 20, "the tracker's RSS grew by {grown} bytes");
    eprintln!(
        "{identities} identities: {} requests in {took:?}, tracker RSS +{} KiB",
        identities * 4,
        grown >> 10
    );
}

#[tokio::test]
async fn a_deep_browse_offset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    let r = reqwest::get(format!(
        "{}/v1/browse/songs?offset={}",
        t.url(),
        medley_tracker::MAX_BROWSE_OFFSET + 1
    ))
    .await
    .unwrap();
    assert_eq!(code(r).await, (400, "bad_query".into()));
    t.shutdown(Duration::from_secs(5)).await;
}

/// Opens `n` connections to `to` from 127.0.0.2, each sending half a request's headers and
/// then nothing.
async fn slow_sockets(to: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        match socket.connect(to).await {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n").await;
                out.push(s);
            }
            Err(_) => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_header_sockets_do_not_keep_others_out_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::bind(TrackerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        header_read_timeout_secs: 3,
        rate_limit_per_sec: 0,
        store: crate::support::store(dir.path()),
        ..TrackerConfig::default()
    })
    .await
    .unwrap();
    let slow = slow_sockets(t.addr(), 2000).await;
    assert!(slow.len() > 1000, "only {} sockets opened", slow.len());
    // Another client is answered at once.
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("{}/v1/stats", t.url())).send(),
        )
        .await
        .expect("no answer within 5 s")
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    // Past the header-read timeout every slow socket was closed by the tracker: at most
    // `max_connections_per_ip` of them were ever let in, the rest were closed at once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut closed = 0;
    for mut s in slow {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            // Closed (maybe after a 408 or a reset).
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => {
                if matches!(
                    tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                ) {
                    closed += 1;
                }
            }
            Err(_) => {}
        }
    }
    assert!(closed >= 1900, "only {closed} slow sockets were closed");
    t.shutdown(Duration::from_secs(5)).await;
}
