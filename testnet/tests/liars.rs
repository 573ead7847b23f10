//! A lying storage node and a lying listener peer on a real testnet: every play still gets
//! the right audio, each listener drops a liar at its first wrong byte and reports it
//! (signed), and once two listeners have, the tracker stops offering both.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, play_as, publish, published, reference_wav};
use medley_net::Keypair;
use medley_testnet::Testnet;
use medley_testnet::liar::Liar;
use serde_json::{Value, json};

async fn spawn_liar() -> (Keypair, medley_net::PeerHandle, Arc<Liar>, Vec<String>) {
    let l = medley_testnet::liar::spawn("/ip4/127.0.0.1/udp/0/quic-v1")
        .await
        .unwrap();
    (l.key, l.peer, l.liar, l.addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_node_and_a_lying_peer_are_dropped_and_no_longer_listed() {
    let net = Testnet::builder()
        .nodes(6)
        .regions(2)
        .grace_secs(60)
        .log("info,libp2p=warn")
        // Listeners that just started report the liars: their reports weigh fully here.
        .tracker_config(
            "hot_copies = 0\nban_reporters = 2\npeer_ttl_secs = 300\nreport_trust_secs = 0",
        )
        .spawn()
        .await
        .unwrap();
    let (http, url) = (reqwest::Client::new(), net.tracker_url().to_string());

    // A lying storage node joins (signed, as any node) and keeps sending heartbeats.
    let (node_key, _node_peer, node, node_addrs) = spawn_liar().await;
    let node_id = node_key.public().to_peer_id().to_string();
    let as_node = net.tracker().unwrap().with_signer(node_key.clone());
    as_node
        .register(&medley_api::Registration {
            peer_id: node_id.clone(),
            addrs: node_addrs,
            region: "eu-west".into(),
            capacity: 1 << 34,
            join: Some(net.invite(Some("eu-west"), None).unwrap()),
        })
        .await
        .unwrap();
    let beat_id = node_id.clone();
    let beat = tokio::spawn(async move {
        loop {
            let hb = medley_api::Heartbeat {
                peer_id: beat_id.clone(),
                load: medley_api::Load {
                    free: 1 << 34,
                    ..medley_api::Load::default()
                },
                hot: None,
                repaired_version: None,
            };
            let _ = as_node.heartbeat(&hb).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    // Long enough (20 segments or so) that the lying node holds data shards the plays ask for.
    medley_testnet::library::generate(&lib, 1, 23, 60.0, 65.0).unwrap();
    let songs = published(&publish(&net, &lib));
    let (song, src) = songs[0].clone();
    let id = song.to_string();
    let reference = reference_wav(&src, dir.path());
    assert!(
        node.held() > 0,
        "the layout placed shards of the song on the lying node"
    );

    // A lying listener peer announces the song (signed with its own key).
    let (peer_key, _liar_peer, peer, peer_addrs) = spawn_liar().await;
    let tracker = net.tracker().unwrap().with_signer(peer_key.clone());
    tracker
        .announce(&medley_api::PeerAnnouncement {
            peer_id: peer_key.public().to_peer_id().to_string(),
            addrs: peer_addrs,
            region: "eu-west".into(),
            songs: vec![song],
            partial: Vec::new(),
        })
        .await
        .unwrap();

    // Two listeners play: right audio, both liars dropped after their first lie.
    for name in ["alice", "bob"] {
        let wav = dir.path().join(format!("{name}.wav"));
        let o = play_as(&net, name, &id, &wav);
        assert_eq!(
            std::fs::read(&wav).unwrap(),
            reference,
            "{name} hears the song"
        );
        let mut bad = o.bad_sources.clone();
        bad.sort();
        let mut liars = vec![node_id.clone(), peer_key.public().to_peer_id().to_string()];
        liars.sort();
        assert_eq!(
            bad,
            liars,
            "{name} caught both liars (node {node_id} asked {} times, holds {}): {:?}",
            node.asked(),
            node.held(),
            o.sources
        );
    }

    // Two distinct signed reports each: the tracker no longer offers either.
    let sources: Value = eventually(10, "both liars banned", || {
        let (http, url, id, node_id) = (http.clone(), url.clone(), id.clone(), node_id.clone());
        async move {
            let s: Value = http
                .get(format!("{url}/v1/songs/{id}/sources"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let node_slots: Vec<&Value> = s["segments"]
                .as_array()?
                .iter()
                .flat_map(|seg| seg["shards"].as_array().into_iter().flatten())
                .filter(|sh| sh["peer_id"] == node_id.as_str())
                .collect();
            let banned = !node_slots.is_empty()
                && node_slots
                    .iter()
                    .all(|sh| sh["banned"] == true && sh["alive"] == false);
            (banned && s["whole"] == json!([])).then_some(s)
        }
    })
    .await;
    assert_eq!(sources["whole"], json!([]));
    let nodes: Value = http
        .get(format!("{url}/v1/nodes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"]["peer_id"] == node_id.as_str())
        .unwrap();
    assert_eq!(listed["banned"], true);

    // A third listener never asks either of them, and hears the song.
    let (node_asked, peer_asked) = (node.asked(), peer.asked());
    let wav = dir.path().join("carol.wav");
    let o = play_as(&net, "carol", &id, &wav);
    assert_eq!(std::fs::read(&wav).unwrap(), reference);
    assert!(o.bad_sources.is_empty(), "{:?}", o.bad_sources);
    assert_eq!(node.asked(), node_asked, "the lying node is not asked");
    assert_eq!(peer.asked(), peer_asked, "the lying peer is not asked");
    beat.abort();
}
