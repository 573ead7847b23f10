//! An open network that strangers cannot empty: nodes join only with the operator's
//! consent, a node that keeps nothing is found out by audits and loses its slots without
//! the network losing a byte, joins settle without stranding a shard, a shard two slots
//! share survives the handover of one, and what no committed song references is collected.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytesize::ByteSize;
use common::{eventually, ok, publish, published, published_library};
use medley_core::{DEFAULT_SEGMENT_SIZE, ShardId, SongId};
use medley_testnet::Testnet;
use medley_testnet::rogue::RogueNode;

/// Waits until every slot of the layout is settled (its node holds its shards), no node has
/// repair work left, and the layout stayed so for three seconds (a change under way moves on
/// within a second of its slots settling).
async fn settled(net: &Testnet, secs: u64) -> u64 {
    let tracker = net.tracker().unwrap();
    let start = std::time::Instant::now();
    let mut since: Option<(u64, std::time::Instant)> = None;
    loop {
        let now = match tracker.stats().await {
            Ok(s) => s
                .layout_version
                .filter(|v| s.layout_oldest == Some(*v) && s.repair.backlog == 0),
            Err(_) => None,
        };
        since = match (now, since) {
            (Some(v), Some((w, at))) if v == w => {
                if at.elapsed() >= Duration::from_secs(3) {
                    return v;
                }
                Some((w, at))
            }
            (Some(v), _) => Some((v, std::time::Instant::now())),
            (None, _) => None,
        };
        assert!(
            start.elapsed().as_secs() < secs,
            "the layout did not settle within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until node `i` holds slots.
async fn placed_node(net: &Testnet, i: usize) {
    let id = net.nodes()[i].peer_id.clone();
    eventually(60, "the new node to get slots", || async {
        placed(net).await.contains(&id).then_some(())
    })
    .await;
}

/// `medley get` of every song gives its source's bytes.
fn all_identical(net: &Testnet, songs: &[(SongId, std::path::PathBuf)], dir: &std::path::Path) {
    for (i, (song, src)) in songs.iter().enumerate() {
        let out = dir.join(format!("copy-{i}"));
        ok(net
            .medley("eu-west", false)
            .args(["get", &song.to_string(), "-o"])
            .arg(&out));
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(src).unwrap(),
            "{song}"
        );
    }
}

/// A new command with `c`'s program, arguments, environment and folder.
fn like(c: &std::process::Command) -> std::process::Command {
    let mut n = std::process::Command::new(c.get_program());
    n.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => n.env(k, v),
            None => n.env_remove(k),
        };
    }
    if let Some(d) = c.get_current_dir() {
        n.current_dir(d);
    }
    n
}

/// The node ids on some slot of the current layout.
async fn placed(net: &Testnet) -> HashSet<String> {
    let l = net.tracker().unwrap().layout().await.unwrap();
    l.partitions.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_claiming_an_exabyte_get_no_slot() {
    let mut net = Testnet::builder()
        .log("info,libp2p=warn")
        .spawn()
        .await
        .unwrap();
    let (dir, songs) = published_library(&net, 3, 91, (6.0, 9.0));
    let version = settled(&net, 60).await;

    // Six nodes nobody admitted, each claiming an exabyte: three in regions the tracker
    // does not list (refused), three in its regions without a token (pending).
    let regions = net.regions();
    let mut strangers = Vec::new();
    for i in 0..6 {
        let region = if i < 3 {
            format!("nowhere-{i}")
        } else {
            regions[i % regions.len()].clone()
        };
        strangers.push(
            net.add_node(&region, "127.0.0.1", ByteSize::eb(1), false)
                .unwrap(),
        );
    }
    let tracker = net.tracker().unwrap();
    let pending: Vec<String> = strangers[3..]
        .iter()
        .map(|&i| net.nodes()[i].peer_id.clone())
        .collect();
    eventually(
        30,
        "the three strangers of known regions to be listed pending",
        || async {
            let nodes = tracker.nodes().await.ok()?;
            let listed: Vec<_> = nodes
                .iter()
                .filter(|n| pending.contains(&n.node.peer_id))
                .collect();
            (listed.len() == 3
                && listed
                    .iter()
                    .all(|n| n.node.admission == medley_api::Admission::Pending && n.weight == 0))
            .then_some(())
        },
    )
    .await;
    // A stranger of an unknown region says why in its status; such strangers are not
    // listed at all.
    let admin = net.nodes()[strangers[0]].admin.clone().unwrap();
    let e = eventually(20, "the refusal of an unknown region", || {
        let admin = admin.clone();
        async move {
            let s: serde_json::Value = reqwest::get(format!("{admin}/status"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            s["tracker_error"].as_str().map(str::to_string)
        }
    })
    .await;
    assert!(e.contains("bad_region"), "{e}");
    let nodes = tracker.nodes().await.unwrap();
    for &i in &strangers[..3] {
        let id = &net.nodes()[i].peer_id;
        assert!(
            nodes.iter().all(|n| &n.node.peer_id != id),
            "{id} is not registered"
        );
    }
    let on_slots = placed(&net).await;
    for &i in &strangers {
        assert!(
            !on_slots.contains(&net.nodes()[i].peer_id),
            "no slot for a stranger"
        );
    }
    assert_eq!(
        tracker.stats().await.unwrap().layout_version,
        Some(version),
        "the layout did not move"
    );

    // Gone with their data: every song is still whole.
    for &i in &strangers {
        net.kill_node(i).unwrap();
        std::fs::remove_dir_all(&net.nodes()[i].data_dir).unwrap();
    }
    all_identical(&net, &songs, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_keeps_nothing_is_audited_out_and_nothing_is_lost() {
    let net = Testnet::builder()
        .log("info,libp2p=warn")
        .tracker_config("audit_interval_secs = 2\naudit_failures = 5\nhot_copies = 0")
        .node_config("repair_interval_secs = 5")
        .spawn()
        .await
        .unwrap();
    let (dir, mut songs) = published_library(&net, 3, 17, (6.0, 9.0));
    settled(&net, 60).await;
    let tracker = net.tracker().unwrap();

    // Two nodes a careless operator admitted: they claim an exabyte, say they hold every
    // shard of their slots, answer `Has` with yes and keep nothing.
    let regions = net.regions();
    let rogues = [
        RogueNode::join(&net, &regions[0], "127.0.0.1", 1 << 60, true)
            .await
            .unwrap(),
        RogueNode::join(&net, &regions[1], "127.0.0.1", 1 << 60, true)
            .await
            .unwrap(),
    ];
    let rogue_ids: Vec<String> = rogues.iter().map(|r| r.peer_id.clone()).collect();
    eventually(30, "the rogues to get slots", || async {
        let on = placed(&net).await;
        rogue_ids.iter().all(|r| on.contains(r)).then_some(())
    })
    .await;
    // They settle no slot (they pass no audit): in a partition that held data when they
    // came, at most max(1, m - 1) = 1 slot is theirs at any time, so the honest holders keep
    // k + 1 of every segment's slots, and every earlier holder stays known. (Partitions
    // empty until now take them as any node of their weight, which proven bytes cap at
    // an honest node's: two of m = 2 slots there are what any two failing nodes cost.)
    let mut data = HashSet::new();
    for (song, _) in &songs {
        for seg in &tracker.manifest(*song).await.unwrap().body().segments {
            data.insert(usize::from(medley_core::partition_of(&seg.id, 256)));
        }
    }
    // A song published now sends them shards, which they drop.
    let late = dir.path().join("late");
    medley_testnet::library::generate(&late, 1, 18, 11.0, 12.0).unwrap();
    songs.extend(published(&publish(&net, &late)));
    let most_on_rogues = |l: &medley_core::Layout| {
        data.iter()
            .map(|&p| {
                l.partitions[p]
                    .iter()
                    .filter(|n| rogue_ids.contains(n))
                    .count()
            })
            .max()
            .unwrap_or(0)
    };

    // Audits find them out: out of the layout, with the reason. Until then, every layout
    // keeps them to one slot of a partition holding data.
    let mut worst = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let layout = tracker.layout().await.unwrap();
        worst = worst.max(most_on_rogues(&layout));
        let nodes = tracker.nodes().await.unwrap();
        let evicted = nodes
            .iter()
            .filter(|n| rogue_ids.contains(&n.node.peer_id) && n.node.evicted.is_some())
            .count();
        let on: HashSet<&String> = layout.partitions.iter().flatten().collect();
        if evicted == 2 && rogue_ids.iter().all(|r| !on.contains(r)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rogues were not evicted in 60 s: {evicted} evicted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        worst <= 1,
        "{worst} slots of a partition holding data on rogues"
    );
    let metrics = reqwest::get(format!("{}/metrics", net.tracker_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed: u64 = metrics
        .lines()
        .find(|l| l.starts_with("medley_tracker_audits_total{outcome=\"failed\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap();
    assert!(failed >= 10, "{failed} failed audits");
    assert!(
        rogues
            .iter()
            .any(|r| r.dropper.dropped.load(Ordering::Relaxed) > 0)
    );

    // Repair restores every shard on its holder; no honest node let go of a copy the
    // rogues claimed.
    settled(&net, 120).await;
    let ids: Vec<SongId> = songs.iter().map(|(s, _)| *s).collect();
    let audit = net.audit(&ids, &[]).await.unwrap();
    assert!(audit.complete(), "{audit:?}");
    all_identical(&net, &songs, dir.path());
    for r in rogues {
        r.vanish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_joining_seconds_apart_settle_without_stranding_a_shard() {
    let mut net = Testnet::builder()
        .log("info,libp2p=warn")
        .tracker_config("hot_copies = 0")
        // A tiny repair rate: the moves take a while, and plays go on meanwhile.
        .node_config("repair_bytes_per_sec = \"192 KiB\"")
        .spawn()
        .await
        .unwrap();
    let (dir, songs) = published_library(&net, 4, 23, (8.0, 11.0));
    settled(&net, 60).await;
    let tracker = net.tracker().unwrap();
    let k_m = {
        let s = tracker.stats().await.unwrap();
        (s.k, s.m)
    };
    let mut data = HashSet::new();
    for (song, _) in &songs {
        for seg in &tracker.manifest(*song).await.unwrap().body().segments {
            data.insert(usize::from(medley_core::partition_of(&seg.id, 256)));
        }
    }

    // Plays go on, every one checked byte for byte, while the layout is watched: between two
    // versions a partition holding data moves at most m - 1 slots.
    let stop = Arc::new(AtomicBool::new(false));
    let plays = Arc::new(AtomicUsize::new(0));
    let player = {
        let (stop, plays) = (stop.clone(), plays.clone());
        let songs = songs.clone();
        let out = dir.path().join("during");
        let template = net.medley("eu-west", false);
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (song, src) = &songs[i % songs.len()];
                let o = like(&template)
                    .args(["get", &song.to_string(), "-o"])
                    .arg(&out)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(src).unwrap());
                plays.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let watcher = {
        let (stop, tracker) = (stop.clone(), tracker.clone());
        let data = data.clone();
        let bound = usize::from(k_m.1.saturating_sub(1)).max(1);
        tokio::spawn(async move {
            let mut seen: HashMap<u64, medley_core::Layout> = HashMap::new();
            let mut worst = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(l) = tracker.layout().await {
                    if let Some(prev) = seen.get(&(l.version - 1)) {
                        for &p in &data {
                            let moved = prev.partitions[p]
                                .iter()
                                .zip(&l.partitions[p])
                                .filter(|(a, b)| a != b)
                                .count();
                            worst = worst.max(moved);
                        }
                    }
                    seen.insert(l.version, l);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(worst <= bound, "{worst} slots of a partition moved at once");
            seen.len()
        })
    };

    let regions = net.regions();
    let mut joined = Vec::new();
    for i in 0..3 {
        let region = regions[i % regions.len()].clone();
        joined.push(
            net.add_node(&region, "127.0.0.1", ByteSize::gib(2), true)
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for &i in &joined {
        placed_node(&net, i).await;
    }
    settled(&net, 300).await;
    stop.store(true, Ordering::Relaxed);
    player.join().unwrap();
    let versions = watcher.await.unwrap();
    assert!(plays.load(Ordering::Relaxed) >= 2, "plays went on");
    assert!(versions >= 2, "the layout changed");
    let on = placed(&net).await;
    for &i in &joined {
        assert!(on.contains(&net.nodes()[i].peer_id), "node {i} got slots");
    }
    let ids: Vec<SongId> = songs.iter().map(|(s, _)| *s).collect();
    let audit = net.audit(&ids, &[]).await.unwrap();
    assert!(audit.complete(), "{audit:?}");
}

/// A WAV whose segments after the first are 3/4 digital silence and 1/4 noise: with 4+2
/// coding, data shards 0 to 2 of every such segment are the same bytes, one shard id that
/// many slots of many partitions hold.
fn mostly_silent_wav(path: &std::path::Path, segments: usize, seed: u64) {
    let seg = DEFAULT_SEGMENT_SIZE as usize;
    let total = segments * seg;
    let mut bytes = Vec::with_capacity(total);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&((total - 8) as u32).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&2u16.to_le_bytes()); // stereo
    bytes.extend_from_slice(&44_100u32.to_le_bytes());
    bytes.extend_from_slice(&(44_100u32 * 4).to_le_bytes());
    bytes.extend_from_slice(&4u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&((total - 44) as u32).to_le_bytes());
    let mut x = seed | 1;
    while bytes.len() < total {
        let in_seg = bytes.len() % seg;
        if in_seg < seg / 4 * 3 {
            bytes.push(0);
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push((x >> 24) as u8);
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_two_slots_share_survives_the_handover_of_one() {
    // Each node a region of its own: a newcomer of one region takes the slots of that
    // region's node where it ranks higher, at any slot position.
    let mut net = Testnet::builder()
        .regions(6)
        .log("info,libp2p=warn")
        .tracker_config("hot_copies = 0")
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    mostly_silent_wav(&lib.join("silence.wav"), 24, 7);
    let songs = published(&publish(&net, &lib));
    assert_eq!(songs.len(), 1);
    settled(&net, 60).await;
    let tracker = net.tracker().unwrap();
    let manifest = tracker.manifest(songs[0].0).await.unwrap();
    let quiet = ShardId::of(&vec![0u8; DEFAULT_SEGMENT_SIZE as usize / 4]);
    // Where the silent shard lies: (partition, slot) pairs.
    let mut places = HashSet::new();
    for seg in &manifest.body().segments {
        let p = usize::from(medley_core::partition_of(&seg.id, 256));
        for (slot, id) in seg.shards.iter().enumerate() {
            if *id == quiet {
                places.insert((p, slot));
            }
        }
    }
    assert!(
        places.len() >= 30,
        "{} slots hold the silent shard",
        places.len()
    );
    let before = tracker.layout().await.unwrap();

    // A seventh node joins the first node's region and takes about half of its slots: some
    // of them slots of the silent shard, while others the first node keeps need the very
    // same shard.
    let region = net.regions()[0].clone();
    let new = net
        .add_node(&region, "127.0.0.1", ByteSize::gib(2), true)
        .unwrap();
    placed_node(&net, new).await;
    settled(&net, 120).await;
    let after = tracker.layout().await.unwrap();
    let holders = |l: &medley_core::Layout| -> HashMap<String, usize> {
        let mut h = HashMap::new();
        for &(p, slot) in &places {
            *h.entry(l.partitions[p][slot].clone()).or_default() += 1;
        }
        h
    };
    let (had, has) = (holders(&before), holders(&after));
    let shared = had.iter().any(|(node, &n)| {
        let lost = places
            .iter()
            .any(|&(p, s)| before.partitions[p][s] == *node && after.partitions[p][s] != *node);
        lost && n > 1 && has.get(node).copied().unwrap_or(0) > 0
    });
    assert!(
        shared,
        "some node lost a slot of the silent shard and kept another: {} places, before {had:?}, after {has:?}, versions {} -> {}",
        places.len(),
        before.version,
        after.version
    );
    // Every slot still holds its shard on its node, the silent one included.
    let audit = net.audit(&[songs[0].0], &[]).await.unwrap();
    assert!(audit.complete(), "{audit:?}");
    all_identical(&net, &songs, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_killed_halfway_leaves_nothing_after_the_grace_period() {
    let net = Testnet::builder()
        .log("info,libp2p=warn")
        .tracker_config("hot_copies = 0")
        .node_config("gc_grace_secs = 4\nrepair_interval_secs = 1")
        .spawn()
        .await
        .unwrap();
    let (dir, songs) = published_library(&net, 2, 31, (6.0, 8.0));
    settled(&net, 60).await;
    let status = |i: usize| {
        let admin = net.nodes()[i].admin.clone().unwrap();
        async move {
            reqwest::get(format!("{admin}/status"))
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let shards = || async {
        let mut n = 0;
        for i in 0..net.nodes().len() {
            n += status(i).await["shards"].as_u64().unwrap();
        }
        n
    };
    let committed = shards().await;

    // A publish that stops after uploading half its shards, under real grants: the
    // manifest is never committed.
    let key = medley_client::load_or_create_publisher_key(net.client_dir()).unwrap();
    let meta = medley_core::SongMeta {
        title: "Never Committed".into(),
        artist: Some("The Half Loads".into()),
        album: None,
        genre: None,
        year: None,
        track: None,
        duration_ms: Some(60_000),
        codec: "flac".into(),
        mime: "audio/flac".into(),
        bitrate: Some(300_000),
    };
    let data: Vec<u8> = (0..3 * DEFAULT_SEGMENT_SIZE as usize + 1000)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect();
    let body = medley_core::test_utils::body_for(meta, &data, DEFAULT_SEGMENT_SIZE, 4, 2, key.id());
    let manifest = medley_core::Manifest::sign(body, &key).unwrap();
    let tracker = net.tracker().unwrap();
    let grants = tracker.publish_grants(&manifest).await.unwrap();
    let codec = medley_core::Codec::new(4, 2).unwrap();
    let peer = medley_net::Peer::dial_only().await.unwrap();
    let mut sent = 0;
    for (s, segment) in data.chunks(DEFAULT_SEGMENT_SIZE as usize).enumerate() {
        for (slot, shard) in codec.encode(segment).unwrap().into_iter().enumerate() {
            if (s * 6 + slot) % 2 == 1 {
                continue;
            }
            let id = ShardId::of(&shard);
            let node = grants.placement[s][slot].clone().unwrap();
            let addrs = grants.addrs[&node]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
            let grant = grants
                .grants
                .iter()
                .find(|g| g.node == node && g.shards.contains(&id))
                .unwrap()
                .clone();
            peer.put_shard(node.parse().unwrap(), addrs, shard, grant)
                .await
                .unwrap();
            sent += 1;
        }
    }
    peer.shutdown(Duration::from_secs(1)).await;
    let uploaded = shards().await;
    assert_eq!(
        uploaded,
        committed + sent,
        "{sent} shards of the half publish stored"
    );
    let stats = tracker.stats().await.unwrap();
    assert_eq!(
        stats.songs,
        songs.len() as u64,
        "the half publish was never committed"
    );
    eventually(
        20,
        "the orphan shards to be counted as unreferenced",
        || async {
            let mut pending = 0;
            for i in 0..net.nodes().len() {
                pending += status(i).await["gc_pending_bytes"].as_u64().unwrap();
            }
            (pending > 0).then_some(())
        },
    )
    .await;
    // After the grace period they are gone; every committed shard stays.
    eventually(60, "the orphan shards collected", || async {
        (shards().await == committed).then_some(())
    })
    .await;
    for i in 0..net.nodes().len() {
        let s = status(i).await;
        assert_eq!(s["gc_pending_bytes"], 0);
        assert_eq!(s["held_bytes"], s["referenced_bytes"], "{s}");
    }
    let ids: Vec<SongId> = songs.iter().map(|(s, _)| *s).collect();
    let audit = net.audit(&ids, &[]).await.unwrap();
    assert!(audit.complete(), "{audit:?}");
    all_identical(&net, &songs, dir.path());
}
