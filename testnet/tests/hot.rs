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
            let hot = tracker.popularity().await.ok()?;
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

    // Warm: the next play in the region gets its segments whole from the hot node; only
    // the first, which races the shards for time to first audio, may come rebuilt.
    let wav = dir.path().join("warm.wav");
    let o = play(&net, region, &id, &wav);
    assert_eq!(std::fs::read(&wav).unwrap(), reference);
    let segments = tracker.manifest(song).await.unwrap().body().segments.len() as u64;
    assert_served_whole(&o, &holder, o.delivery.hot_segments, segments);
    // Network-wide, the tracker sums what the plays reported.
    let stats: serde_json::Value = reqwest::get(format!("{}/v1/stats", net.tracker_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivered = &stats["delivered"];
    assert!(
        delivered["hot"].as_u64().unwrap() >= o.delivery.hot_bytes,
        "{stats}"
    );
    assert!(delivered["rebuilt"].as_u64().unwrap() > 0, "{stats}");

    // A listener peer that lies about the song: it is ranked first (same region, a peer),
    // sends wrong bytes, is dropped and reported, and the audio is still right.
    let liar_key = Keypair::generate_ed25519();
    let liar = Peer::spawn(
        liar_key.clone(),
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
        .with_signer(liar_key)
        .announce(&medley_api::PeerAnnouncement {
            peer_id: liar.peer_id().to_string(),
            addrs: liar_addrs,
            region: region.into(),
            songs: vec![song],
            partial: Vec::new(),
        })
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
    // The hot node still served.
    assert_served_whole(&o, &holder, o.delivery.hot_segments, segments);
    liar.shutdown(Duration::from_secs(1)).await;

    // Cooling: without plays the counter halves every 10 s; below 1 the copy is released
    // and the node drops its segments.
    eventually(90, "the song to cool and its copy to go", || async {
        let hot = tracker.popularity().await.ok()?;
        let still = hot.iter().any(|h| h.song == song);
        (!still && node_hot_segments(&net, held_at).await == 0).then_some(())
    })
    .await;
}

/// A child process, stopped with SIGTERM (so it can withdraw what it announced) and reaped.
struct Proc(std::process::Child);

impl Proc {
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = self.0.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A testnet with the hot tier off (every whole copy comes from a listener) and one song of
/// `secs` to `secs + 2` s (from `seed`) published: the song and its file.
async fn one_song_without_hot_tier(
    seed: u64,
    secs: f64,
) -> (
    Testnet,
    tempfile::TempDir,
    medley_core::SongId,
    std::path::PathBuf,
) {
    let net = Testnet::builder()
        .log("info,libp2p=warn")
        .tracker_config("hot_copies = 0")
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    medley_testnet::library::generate(&lib, 1, seed, secs, secs + 2.0).unwrap();
    let songs = published(&publish(&net, &lib));
    let (song, src) = songs[0].clone();
    (net, dir, song, src)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_serve_what_they_played_and_keep_it_across_restarts() {
    use std::io::BufRead;
    let (net, dir, song, src) = one_song_without_hot_tier(5, 20.0).await;
    let id = song.to_string();
    let reference = reference_wav(&src, dir.path());
    let region = "us-east";
    let cache = bytesize::ByteSize::mib(256);

    // Alice listens through her gateway: the song lands in her cache, she announces it.
    let mut child = net
        .listener(region, "alice", cache)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let alice = Proc(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let http = reqwest::Client::new();
    let streamed = http
        .get(format!("{base}/stream/{id}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(streamed.as_ref(), std::fs::read(&src).unwrap().as_slice());
    let r = http
        .post(format!("{base}/api/songs/{id}/played"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let tracker = net.tracker().unwrap();
    let manifest = tracker.manifest(song).await.unwrap();
    let (segments, slots) = (manifest.body().segments.len(), manifest.codec().total());
    let alice_id = eventually(30, "alice's announcement", || async {
        let s = medley_client::song_sources(&tracker, song, segments, slots, Some(region))
            .await
            .ok()?;
        let w = s.whole.first()?;
        (w.kind == medley_client::SourceKind::Peer).then(|| w.peer.to_string())
    })
    .await;

    // Bob, in the same region, gets every segment whole from Alice.
    let bob = |name: &str| {
        let wav = dir.path().join(format!("bob-{name}.wav"));
        let out = common::ok(
            net.listener(region, "bob", cache)
                .args(["play", &id, "--json", "--out"])
                .arg(&wav),
        );
        let o: medley_client::PlayOutcome = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            std::fs::read(&wav).unwrap(),
            reference,
            "bob {name}: right audio"
        );
        o
    };
    let first = bob("first");
    let d = first.delivery;
    assert_eq!(d.cache_bytes + d.hot_bytes, 0, "{d:?}");
    assert_served_whole(&first, &alice_id, d.peer_segments, segments as u64);

    // Bob's second play, in a new process: all from his own cache on disk.
    let second = bob("second");
    assert_eq!(
        second.delivery.cache_segments, segments as u64,
        "{:?}",
        second.delivery
    );
    assert_eq!(second.delivery.cache_bytes, d.peer_bytes + d.rebuilt_bytes);

    // A rotten file in Bob's cache is found, deleted and fetched again; the rest comes
    // from the cache.
    let cache_dir = net
        .listener_config(region, "bob", cache)
        .data_dir
        .join("cache");
    let victim = cache_dir.join(manifest.body().segments[0].id.to_string());
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let third = bob("third");
    assert_eq!(
        third.delivery.cache_segments,
        segments as u64 - 1,
        "{:?}",
        third.delivery
    );
    assert_eq!(
        third.delivery.peer_segments + third.delivery.rebuilt_segments,
        1,
        "{:?}",
        third.delivery
    );

    // Alice stops: she withdraws her announcement.
    assert!(alice.terminate().success());
    let s = medley_client::song_sources(&tracker, song, segments, slots, Some(region))
        .await
        .unwrap();
    assert!(
        s.whole.iter().all(|w| w.peer.to_string() != alice_id),
        "{:?}",
        s.whole
    );
}

/// `source` was asked for every segment of the play but perhaps the first (which goes to
/// the first whole copy listed, and races the shards for time to first audio) and answered
/// each one, and `whole` of the segments played came whole from it (at least one; a whole
/// copy slower than the hedge delay races the shards, so not always all).
fn assert_served_whole(o: &medley_client::PlayOutcome, source: &str, whole: u64, segments: u64) {
    let d = &o.delivery;
    let answered = o.sources.get(source).map_or(0, |s| s.segments);
    assert!(
        answered + 1 >= segments,
        "{source} answered {answered}: {:?}",
        o.sources
    );
    assert!(whole >= 1, "{d:?}");
    assert_eq!(whole + d.rebuilt_segments, segments, "{d:?}");
}

/// BitTorrent's have messages, here: a listener that has fetched only the first half of a
/// song announces which segments it holds while it holds them, and serves exactly those
/// to another listener; every segment is checked against its id, and the second listener
/// ends up with the song byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_holding_half_a_song_serves_that_half() {
    let (net, _dir, song, src) = one_song_without_hot_tier(13, 40.0).await;
    let region = net.nodes()[0].region.clone();
    let cache = bytesize::ByteSize::mib(64);

    // Alice fetches the first half of the song into her cache, and no more.
    let alice = medley_client::Client::new(net.listener_config(&region, "alice", cache)).unwrap();
    let (fetcher, manifest) = alice.fetcher(song).await.unwrap();
    let segments = manifest.body().segments.len();
    assert!(segments >= 4, "a song of {segments} segments");
    let half = segments / 2;
    for i in 0..half {
        fetcher.segment(i).await.unwrap();
    }
    let alice_id = alice.peer().await.unwrap().peer_id().to_string();
    let tracker = net.tracker().unwrap();
    let have = eventually(30, "alice's have-map at the tracker", || async {
        let s = tracker.sources(song, Some(&region)).await.ok()?;
        s.whole
            .into_iter()
            .find(|w| w.peer_id == alice_id)
            .and_then(|w| w.have)
            .filter(|h| h.count() == half)
    })
    .await;
    let held: Vec<usize> = (0..segments).filter(|&i| have.has(i)).collect();
    assert_eq!(
        held,
        (0..half).collect::<Vec<_>>(),
        "exactly the first half"
    );

    // Bob fetches it all: the first half whole from Alice, the rest rebuilt from shards.
    let bob = medley_client::Client::new(net.listener_config(&region, "bob", cache)).unwrap();
    let (fetcher, _) = bob.fetcher(song).await.unwrap();
    let mut got = Vec::new();
    for i in 0..segments {
        got.extend_from_slice(&fetcher.segment(i).await.unwrap());
    }
    assert_eq!(got, std::fs::read(&src).unwrap(), "the song, byte for byte");
    fetcher.settle(Duration::from_secs(5)).await;
    let d = fetcher.report().delivery();
    assert_eq!(
        (d.peer_segments, d.rebuilt_segments),
        (half as u64, (segments - half) as u64),
        "{d:?}"
    );
    let from_alice = &fetcher.report().snapshot()[&alice.peer().await.unwrap().peer_id()];
    assert_eq!(from_alice.segments, half as u64, "{from_alice:?}");
    assert_eq!((from_alice.bad_hashes, from_alice.failures), (0, 0));
    let first_half: u64 = manifest.body().segments[..half]
        .iter()
        .map(|s| u64::from(s.len))
        .sum();
    assert_eq!(d.peer_bytes, first_half);
    assert_eq!(
        alice
            .share_stats()
            .segments
            .load(std::sync::atomic::Ordering::Relaxed),
        half as u64,
        "alice served her half and was never asked for the rest"
    );
    bob.shutdown().await;
    alice.shutdown().await;
}
