//! Popularity and the hot tier on a real testnet: a song played in a region turns hot there,
//! a node of that region pulls it whole, later plays there get whole segments from it
//! instead of rebuilding from shards, and when the plays stop the copy goes. A listener peer
//! that serves wrong bytes is found out and the listener still hears the right audio.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, play, publish, published, reference_wav};
use futures::future::BoxFuture;
use medley_core::protocol::{Request, Response};
use medley_net::{CancellationToken, Handler, Keypair, Peer, PeerConfig, PeerId};
use medley_testnet::Testnet;

/// A listener that claims to hold songs and answers every segment request with bytes that
/// are not the segment.
struct Liar;

impl Handler for Liar {
    fn handle(&self, _from: PeerId, request: Request) -> BoxFuture<'static, Response> {
        Box::pin(async move {
            match request {
                Request::GetSegment { .. } => Response::Segment {
                    data: vec![0x55; 4096],
                },
                _ => Response::error(medley_core::protocol::ErrorCode::NOT_FOUND, "no"),
            }
        })
    }
}

async fn node_hot_segments(net: &Testnet, i: usize) -> u64 {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.nodes()[i].data_dir.join("node.json")).unwrap())
            .unwrap();
    let admin = info["admin"].as_str().unwrap().to_string();
    let status: serde_json::Value = reqwest::get(format!("{admin}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["hot_segments"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_song_played_in_a_region_is_held_whole_there_until_it_cools() {
    let net = Testnet::builder()
        .nodes(8)
        .regions(4)
        .grace_secs(60)
        .log("info,libp2p=warn")
        .tracker_config(
            "hot_plays = 2.0\nhot_half_life_secs = 10\nhot_copies = 1\npeer_ttl_secs = 60",
        )
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    medley_testnet::library::generate(&lib, 2, 71, 20.0, 25.0).unwrap();
    let songs = published(&publish(&net, &lib));
    assert_eq!(songs.len(), 2);
    let (song, src) = songs[0].clone();
    let id = song.to_string();
    let reference = reference_wav(&src, dir.path());
    let tracker = net.tracker().unwrap();
    let region = "eu-west";
    let in_region: Vec<usize> = (0..8)
        .filter(|&i| net.nodes()[i].region == region)
        .collect();

    // Cold: three listeners of the region play it at once; every byte is rebuilt from
    // shards, and their plays make it hot there.
    std::thread::scope(|s| {
        for n in 0..3 {
            let (net, id, dir, reference) = (&net, &id, dir.path(), &reference);
            s.spawn(move || {
                let wav = dir.join(format!("cold-{n}.wav"));
                let o = play(net, region, id, &wav);
                assert_eq!(&std::fs::read(&wav).unwrap(), reference);
                assert_eq!(
                    o.delivery.hot_bytes + o.delivery.peer_bytes,
                    0,
                    "{:?}",
                    o.delivery
                );
                assert!(o.delivery.rebuilt_bytes > 0);
            });
        }
    });
    let holder = eventually(
        60,
        "a node of the region to hold the song whole",
        || async {
            let hot = tracker.hot().await.ok()?;
            let h = hot.iter().find(|h| h.song == song && h.region == region)?;
            h.held_by.first().cloned()
        },
    )
    .await;
    let held_at = in_region
        .iter()
        .copied()
        .find(|&i| net.nodes()[i].peer_id == holder)
        .unwrap_or_else(|| panic!("{holder} is not in {region}"));
    assert!(node_hot_segments(&net, held_at).await > 0);

    // Warm: the next play in the region gets every segment whole from the hot node.
    let wav = dir.path().join("warm.wav");
    let o = play(&net, region, &id, &wav);
    assert_eq!(std::fs::read(&wav).unwrap(), reference);
    assert_eq!(o.delivery.rebuilt_bytes, 0, "{:?}", o.delivery);
    assert!(o.delivery.hot_bytes > 0, "{:?}", o.delivery);
    assert!(o.sources.contains_key(&holder), "{:?}", o.sources.keys());

    // A listener peer that lies about the song: it is ranked first (same region, a peer),
    // sends wrong bytes, is dropped and reported, and the audio is still right.
    let liar = Peer::spawn(
        Keypair::generate_ed25519(),
        PeerConfig {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
            ..PeerConfig::default()
        },
        Arc::new(Liar),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let liar_addrs: Vec<String> = liar
        .listen_addrs()
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    tracker
        .announce(&liar.peer_id(), &liar_addrs, region, &[song])
        .await
        .unwrap();
    let wav = dir.path().join("lied-to.wav");
    let o = play(&net, region, &id, &wav);
    assert_eq!(
        std::fs::read(&wav).unwrap(),
        reference,
        "the audio is right"
    );
    assert_eq!(o.bad_sources, vec![liar.peer_id().to_string()]);
    assert_eq!(
        o.sources[&liar.peer_id().to_string()].bad_hashes,
        1,
        "dropped after its first lie"
    );
    assert_eq!(
        o.delivery.rebuilt_bytes, 0,
        "the hot node still served: {:?}",
        o.delivery
    );
    liar.shutdown(Duration::from_secs(1)).await;

    // Cooling: without plays the counter halves every 10 s; below 1 the copy is released
    // and the node drops its segments.
    eventually(90, "the song to cool and its copy to go", || async {
        let hot = tracker.hot().await.ok()?;
        let still = hot.iter().any(|h| h.song == song);
        (!still && node_hot_segments(&net, held_at).await == 0).then_some(())
    })
    .await;
}
