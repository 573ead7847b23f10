//! A tracker on the internet, on a real testnet: served over HTTPS with a private CA; bans
//! by identities made to lie; a fake whole copy that never answers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fails, ok, play_as, published_library, reference_wav};
use futures::future::BoxFuture;
use medley_api::{PeerAnnouncement, ReportReason, SourceReport};
use medley_core::protocol::{Request, Response};
use medley_net::{CancellationToken, Handler, Keypair, Peer, PeerConfig, PeerId};
use medley_testnet::Testnet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_listeners_use_an_https_tracker_whose_ca_they_are_given() {
    // Every node registers over HTTPS with the testnet's CA: the layout exists.
    let net = Testnet::builder()
        .tls(true)
        .log("info,libp2p=warn")
        .spawn()
        .await
        .unwrap();
    assert!(net.tracker_url().starts_with("https://127.0.0.1:"));
    let ca = net.tracker_ca().unwrap().to_path_buf();

    let (dir, songs) = published_library(&net, 2, 31, (8.0, 10.0));
    let (song, src) = &songs[0];
    let out = dir.path().join("copy");
    ok(net
        .medley("eu-west", false)
        .args(["get", &song.to_string(), "-o"])
        .arg(&out));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(src).unwrap());
    let title = medley_client::probe(src).unwrap().title;
    let found = ok(net
        .medley("us-east", false)
        .args(["search", "--json", &title]));
    assert!(
        String::from_utf8_lossy(&found.stdout).contains(&song.to_string()),
        "{title}"
    );

    // Without the CA, a listener is refused by TLS, and told how to fix it.
    let e = fails(
        net.medley("eu-west", false)
            .env_remove("MEDLEY_TRACKER_CA")
            .args(["search", "a"]),
    );
    assert!(
        e.contains("certificate") && e.contains("--tracker-ca"),
        "{e}"
    );
    // So is a node: its status says why.
    let node_dir = dir.path().join("node");
    let mut node = std::process::Command::new(medley_testnet::bin_dir().join("medley-node"))
        .arg("run")
        .arg("--data-dir")
        .arg(&node_dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--tracker",
            net.tracker_url(),
        ])
        .env("MEDLEY_LOG", "warn")
        .env_remove("MEDLEY_TRACKER_CA")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let info: medley_node::NodeInfo = medley_daemon::wait_for_json_file(
        &node_dir.join(medley_node::NODE_INFO_FILE),
        Duration::from_secs(30),
    )
    .unwrap();
    let admin = info.admin.unwrap();
    let status = common::eventually(20, "the node's TLS failure", || async {
        let s: medley_node::NodeStatus = reqwest::get(format!("{admin}/status"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        s.tracker_error.filter(|e| e.contains("certificate"))
    })
    .await;
    assert!(status.contains("--tracker-ca"), "{status}");
    let _ = node.kill();
    let _ = node.wait();
    let _ = ca;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fresh_keys_reporting_three_holders_leave_every_song_playable() {
    // Their reports weigh fully here (as aged identities would): the bans happen, and must
    // not make any song unplayable.
    let net = Testnet::builder()
        .log("info,libp2p=warn")
        .tracker_config("report_trust_secs = 0\nhot_copies = 0")
        .spawn()
        .await
        .unwrap();
    let (dir, songs) = published_library(&net, 3, 47, (8.0, 12.0));
    let tracker = net.tracker().unwrap();
    let victims: Vec<String> = net.nodes()[..3].iter().map(|n| n.peer_id.clone()).collect();
    for _ in 0..2 {
        let attacker = tracker.with_signer(Keypair::generate_ed25519());
        for (song, _) in &songs {
            for v in &victims {
                attacker
                    .report_source(&SourceReport {
                        peer_id: v.clone(),
                        song: song.to_string(),
                        reason: ReportReason::BadHash,
                    })
                    .await
                    .unwrap();
            }
        }
    }
    let nodes = tracker.nodes().await.unwrap();
    let banned = nodes.iter().filter(|n| n.banned).count();
    assert_eq!(banned, 3, "the reports did ban the three holders");
    // At most m holders of a segment are listed as banned.
    for (song, _) in &songs {
        let s = tracker.sources(*song, None).await.unwrap();
        for seg in &s.segments {
            let n = seg.shards.iter().filter(|x| x.banned).count();
            assert!(n <= 2, "segment {}: {n} holders listed banned", seg.index);
        }
    }
    // Every song still plays, byte for byte.
    for (i, (song, src)) in songs.iter().enumerate() {
        let out = dir.path().join(format!("copy-{i}"));
        ok(net
            .medley("us-east", false)
            .args(["get", &song.to_string(), "-o"])
            .arg(&out));
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(src).unwrap());
    }
}

/// A listener that claims to hold songs whole and never answers a segment request.
struct Slow;

impl Handler for Slow {
    fn handle(&self, _from: PeerId, _request: Request) -> BoxFuture<'static, Response> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            Response::error(medley_core::protocol::ErrorCode::NOT_FOUND, "no")
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_slow_whole_copy_costs_no_time_to_first_audio() {
    let net = Testnet::builder()
        .log("info,libp2p=warn")
        .tracker_config("hot_copies = 0")
        .spawn()
        .await
        .unwrap();
    let (dir, songs) = published_library(&net, 4, 53, (12.0, 14.0));
    // Baseline: each song played by a new listener, no whole copy anywhere.
    let mut baseline = Vec::new();
    for (i, (song, _)) in songs.iter().enumerate() {
        let wav = dir.path().join(format!("base-{i}.wav"));
        baseline.push(
            play_as(&net, &format!("base-{i}"), &song.to_string(), &wav).time_to_first_audio_ms,
        );
    }

    // A fake listener in the same region announces every song and answers nothing.
    let key = Keypair::generate_ed25519();
    let fake = Peer::spawn(
        key.clone(),
        PeerConfig {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
            request_timeout: Duration::from_secs(120),
            ..PeerConfig::default()
        },
        Arc::new(Slow),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let addrs = fake
        .listen_addrs()
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    net.tracker()
        .unwrap()
        .with_signer(key)
        .announce(&PeerAnnouncement {
            peer_id: fake.peer_id().to_string(),
            addrs,
            region: "eu-west".into(),
            songs: songs.iter().map(|(s, _)| *s).collect(),
            partial: Vec::new(),
        })
        .await
        .unwrap();

    let tracker = net.tracker().unwrap();
    let mut with_fake = Vec::new();
    for (i, (song, src)) in songs.iter().enumerate() {
        // The fake is listed first for the region: every listener asks it.
        let whole = tracker.sources(*song, Some("eu-west")).await.unwrap().whole;
        assert_eq!(whole[0].peer_id, fake.peer_id().to_string(), "{whole:?}");
        let wav = dir.path().join(format!("fake-{i}.wav"));
        let o = play_as(&net, &format!("fake-{i}"), &song.to_string(), &wav);
        assert_eq!(std::fs::read(&wav).unwrap(), reference_wav(src, dir.path()));
        assert_eq!(o.delivery.peer_bytes, 0, "the fake delivered nothing");
        with_fake.push(o.time_to_first_audio_ms);
    }
    let (base, fake_ms) = (median(baseline), median(with_fake));
    eprintln!("time to first audio: {base:.0} ms without the fake copy, {fake_ms:.0} ms with it");
    // A whole copy first in line is given a head start of a quarter of the hedge delay
    // before the shards are asked too (so that a copy nearby can spare the durable tier):
    // that much a fake copy may cost, and no more (not the hedge delay, not its timeout).
    let head_start = medley_client::ClientConfig::default().hedge_after_ms as f64 / 4.0;
    assert!(
        fake_ms < 2.0 * base + head_start,
        "time to first audio {fake_ms:.0} ms with a slow fake copy, {base:.0} ms without \
         (head start {head_start:.0} ms)"
    );
    fake.shutdown(Duration::from_secs(1)).await;
}
