//! Publishing through a crash, restarts that move nothing, and draining a node: 8 nodes in 4
//! regions, 4+2 coding, a grace period long enough that no node is replaced unless asked.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{eight_nodes_and_library, eventually, publish, published};
use medley_client::SearchQuery;
use medley_core::{SongId, partition_of};
use medley_node::{Store, StoreConfig, Tier};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_publish_restart_and_drain_lose_nothing() {
    let (mut net, dir, library) = eight_nodes_and_library(
        60,
        "repair_interval_secs = 5\nscrub_bytes_per_sec = 0",
        10,
        99,
        (30.0, 40.0),
    )
    .await;
    let tracker = net.tracker().unwrap();
    let lib = dir.path().join("lib");

    // kill -9 a node while a publish is uploading.
    let mut child = net
        .medley("eu-west", true)
        .arg("publish")
        .arg(&lib)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at_kill = eventually(60, "the first song to be committed", || async {
        let s = tracker.stats().await.ok()?;
        (s.songs >= 1).then_some(s.songs)
    })
    .await;
    let victim = 2;
    let victim_id = net.nodes()[victim].peer_id.clone();
    net.kill_node(victim).unwrap();
    assert!(
        at_kill < library.len() as u64,
        "the publish finished before the kill"
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "publish hangs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let failed: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["outcome"] == "failed").collect();
    assert_eq!(status.success(), failed.is_empty(), "{stderr}");
    for f in &failed {
        let e = f["error"].as_str().unwrap();
        assert!(
            e.contains("uploading shard") && e.contains(&victim_id),
            "the failure names the shard and the node: {e}"
        );
    }
    eprintln!(
        "publish ended after the kill in {:.1} s, {} of {} files failed",
        start.elapsed().as_secs_f64(),
        failed.len(),
        library.len()
    );
    // Every committed song has every shard on its slot: the dead node's are on its disk.
    let mut committed: Vec<SongId> = Vec::new();
    for s in &library {
        let page = tracker
            .search(&SearchQuery {
                q: s.song.title.clone(),
                artist: Some(s.song.artist.clone()),
                limit: Some(100),
                ..SearchQuery::default()
            })
            .await
            .unwrap();
        committed.extend(
            page.results
                .iter()
                .filter(|h| h.title == s.song.title)
                .map(|h| h.id.parse::<SongId>().unwrap()),
        );
    }
    // Two songs of the library may share a title and artist: each search finds both.
    committed.sort();
    committed.dedup();
    assert_eq!(
        committed.len() as u64,
        tracker.stats().await.unwrap().songs,
        "{committed:?}"
    );
    let layout = tracker.layout().await.unwrap();
    let partitions = layout.partitions.len() as u16;
    let dialer = medley_net::Peer::dial_only().await.unwrap();
    let store = Store::open(
        net.nodes()[victim].data_dir.join("db"),
        &StoreConfig::default(),
    )
    .unwrap();
    let mut checked = 0;
    for id in &committed {
        let manifest = tracker.manifest(*id).await.unwrap();
        for seg in &manifest.body().segments {
            let holders = &layout.partitions[usize::from(partition_of(&seg.id, partitions))];
            for (slot, shard) in seg.shards.iter().enumerate() {
                let holder = &holders[slot];
                if *holder == victim_id {
                    let bytes = store.get(Tier::Durable, shard.0).unwrap();
                    assert!(
                        bytes.is_some(),
                        "{id}: shard {slot} missing on the dead node"
                    );
                } else {
                    let n = net.nodes().iter().find(|n| n.peer_id == *holder).unwrap();
                    let addr = format!("/ip4/127.0.0.1/udp/{}/quic-v1", n.port)
                        .parse()
                        .unwrap();
                    dialer
                        .get_shard(holder.parse().unwrap(), vec![addr], *shard)
                        .await
                        .unwrap_or_else(|e| panic!("{id}: shard {slot}: {e}"));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0 || committed.is_empty());
    drop(store);
    net.start_node(victim).unwrap();
    // Publishing again completes the library; songs already committed are not re-sent.
    let songs = published(&publish(&net, &lib));
    let ids: Vec<SongId> = songs.iter().map(|(id, _)| *id).collect();
    assert_eq!(tracker.stats().await.unwrap().songs, library.len() as u64);
    let all: Vec<SongId> = {
        let mut v = committed.clone();
        v.extend(&ids);
        v.sort();
        v.dedup();
        v
    };
    let audit = net.audit(&all, &[]).await.unwrap();
    assert!(audit.complete(), "{audit:?}");

    // A node that restarts within the grace period moves nothing.
    // It tells the tracker it is stopping, so that listeners are sent elsewhere at once.
    let version = tracker.stats().await.unwrap().layout_version;
    let restarted = net.nodes()[4].peer_id.clone();
    let node_entry = |nodes: &[medley_client::NodeEntry]| {
        let n = nodes.iter().find(|n| n.node.peer_id == restarted).unwrap();
        (n.alive, n.node.stopped)
    };
    net.stop_node(4).unwrap();
    assert_eq!(
        node_entry(&tracker.nodes().await.unwrap()),
        (false, true),
        "a stopped node is not listed alive"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.start_node(4).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(tracker.stats().await.unwrap().layout_version, version);
    let nodes = tracker.nodes().await.unwrap();
    assert_eq!(node_entry(&nodes), (true, false), "back after the restart");
    assert!(
        nodes
            .iter()
            .all(|n| n.node.load.repair.done == 0 && n.node.load.repair.handed_over == 0),
        "{nodes:?}"
    );

    // Drain a node: first the preview of what would move, then the drain: its shards move
    // to their new holders, no segment is ever short of a shard, and it ends empty.
    let d = 5;
    let drained_id = net.nodes()[d].peer_id.clone();
    let before = tracker.layout().await.unwrap();
    let out = std::process::Command::new(medley_testnet::bin_dir().join("medley-tracker"))
        .args(["layout", "--json", "--drain", &drained_id, "--data-dir"])
        .arg(net.dir().join("tracker"))
        .env("MEDLEY_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let preview: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&preview["current_version"]), before.version);
    let row = preview["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["peer_id"] == drained_id.as_str())
        .unwrap();
    assert!(n(&row["before"]) > 0 && n(&row["after"]) == 0, "{row}");
    let (preview_slots, preview_shards) = (n(&preview["moved_slots"]), n(&preview["moved_shards"]));
    assert!(
        preview_slots >= n(&row["before"]) && preview_shards > 0,
        "{preview}"
    );
    assert_eq!(
        tracker.layout().await.unwrap().version,
        before.version,
        "a preview changes nothing"
    );
    let mut drain = net
        .drain_node(d)
        .unwrap()
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        let a = net.audit(&all, &[d]).await.unwrap();
        assert!(a.short == 0 && a.lost == 0, "during the drain: {a:?}");
        if let Some(s) = drain.try_wait().unwrap() {
            break s;
        }
    };
    let mut out = String::new();
    drain
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success() && out.contains("holds no shards"), "{out}");
    let layout = tracker.layout().await.unwrap();
    assert!(layout.partitions.iter().flatten().all(|p| *p != drained_id));
    // The drain made exactly the change the preview showed.
    let moved_slots: usize = before
        .partitions
        .iter()
        .zip(&layout.partitions)
        .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| x != y).count())
        .sum();
    assert_eq!(moved_slots as u64, preview_slots);
    let audit = net.audit(&all, &[]).await.unwrap();
    assert!(audit.complete(), "{audit:?}");
    let nodes = tracker.nodes().await.unwrap();
    let moved: u64 = nodes.iter().map(|n| n.node.load.repair.done).sum();
    eprintln!("drain: preview {preview}; {moved} shards moved");
    assert_eq!(
        moved, preview_shards,
        "the preview counted the shards to move: {nodes:?}"
    );
    net.stop_node(d).unwrap();
    let store = Store::open(net.nodes()[d].data_dir.join("db"), &StoreConfig::default()).unwrap();
    assert_eq!(store.shard_count(), 0);
    assert_eq!(store.keys_after(Tier::Durable, None, 10).unwrap(), vec![]);
}
