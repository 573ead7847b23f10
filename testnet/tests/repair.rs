//! Durability on a testnet of real processes: 8 nodes in 4 regions, 4+2 coding. Two nodes die
//! at once; every song still plays and downloads intact; the tracker replaces them and the
//! other nodes rebuild their shards, even when a repairing node is killed halfway; a shard
//! that rots inside a node's store is found by the scrubber, never served, and rebuilt.

mod common;

use std::time::Duration;

use common::{
    assert_get_identical, eight_nodes_and_library, eventually, play, publish, published,
    reference_wav,
};
use medley_node::{Store, StoreConfig, Tier};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_nodes_are_replaced_and_rebuilt_and_rot_is_scrubbed() {
    // Repair slow enough that it is still running when a node is killed below.
    let (mut net, dir, _) = eight_nodes_and_library(
        4,
        "repair_bytes_per_sec = \"256 KiB\"\nrepair_interval_secs = 5\n\
         scrub_bytes_per_sec = \"64 MiB\"\nscrub_interval_secs = 1",
        6,
        2024,
        (20.0, 30.0),
    )
    .await;
    let tracker = net.tracker().unwrap();
    let lib = dir.path().join("lib");
    let songs = published(&publish(&net, &lib));
    assert_eq!(songs.len(), 6);
    let ids: Vec<_> = songs.iter().map(|(id, _)| *id).collect();
    let audit = net.audit(&ids, &[]).await.unwrap();
    assert!(audit.complete(), "{audit:?}");
    let v0 = tracker.stats().await.unwrap().layout_version.unwrap();

    // Two nodes in two regions die at once, without warning.
    let dead: Vec<String> = [0, 1]
        .iter()
        .map(|&i| net.nodes()[i].peer_id.clone())
        .collect();
    net.kill_node(0).unwrap();
    net.kill_node(1).unwrap();
    // Before any repair: every song downloads byte-identical and plays.
    for (id, path) in &songs {
        assert_get_identical(&net, &id.to_string(), &dir.path().join("got"), path);
    }
    let (id, path) = &songs[0];
    let wav = dir.path().join("p.wav");
    play(&net, "us-east", &id.to_string(), &wav);
    assert_eq!(
        std::fs::read(&wav).unwrap(),
        reference_wav(path, dir.path())
    );

    // The tracker notices after the grace period and gives their slots to live nodes.
    eventually(30, "a layout without the dead nodes", || async {
        let l = tracker.layout().await.ok()?;
        (l.version > v0 && l.partitions.iter().flatten().all(|p| !dead.contains(p))).then_some(())
    })
    .await;

    // Kill a node in the middle of its repair, and start it again within the grace period.
    let repairing = eventually(30, "a node with repair work", || async {
        let nodes = tracker.nodes().await.ok()?;
        nodes
            .iter()
            .find(|n| n.alive && n.node.load.repair.backlog > 0)
            .map(|n| n.node.peer_id.clone())
    })
    .await;
    let i = net
        .nodes()
        .iter()
        .position(|n| n.peer_id == repairing)
        .unwrap();
    net.kill_node(i).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    net.start_node(i).unwrap();

    // Repair completes: every segment has all k+m shards intact on distinct live nodes.
    eventually(180, "full redundancy", || async {
        net.audit(&ids, &[]).await.ok()?.complete().then_some(())
    })
    .await;
    let stats = tracker.nodes().await.unwrap();
    let restored: u64 = stats.iter().map(|n| n.node.load.repair.done).sum();
    assert!(restored > 0, "{stats:?}");
    for (id, path) in &songs {
        assert_get_identical(&net, &id.to_string(), &dir.path().join("got"), path);
    }

    // Rot: overwrite a shard inside a stopped node's store, then start it again.
    let j = 3;
    net.stop_node(j).unwrap();
    let db = net.nodes()[j].data_dir.join("db");
    let rotten = {
        let store = Store::open(&db, &StoreConfig::default()).unwrap();
        let key = store.keys_after(Tier::Durable, None, 1).unwrap()[0];
        store
            .corrupt_for_test(Tier::Durable, key, b"these bytes are not the shard")
            .unwrap();
        key
    };
    net.start_node(j).unwrap();
    let peer_id = net.nodes()[j].peer_id.clone();
    eventually(60, "the scrubber to find the rotten shard", || async {
        let nodes = tracker.nodes().await.ok()?;
        nodes
            .iter()
            .find(|n| n.node.peer_id == peer_id && n.node.load.repair.scrub_bad > 0)
            .map(|_| ())
    })
    .await;
    // Asked for it, the node answers an error until it is rebuilt, then the right bytes;
    // never the rotten ones (get_shard would report BadHash).
    let client = medley_net::Peer::dial_only().await.unwrap();
    let peer: medley_net::PeerId = peer_id.parse().unwrap();
    let addr: medley_net::Multiaddr = format!("/ip4/127.0.0.1/udp/{}/quic-v1", net.nodes()[j].port)
        .parse()
        .unwrap();
    let shard = medley_core::ShardId(rotten);
    eventually(60, "the rotten shard to be rebuilt", || async {
        match client.get_shard(peer, vec![addr.clone()], shard).await {
            Ok(bytes) => {
                assert!(shard.matches(&bytes));
                Some(())
            }
            Err(e) => {
                assert!(
                    !matches!(e, medley_net::RequestError::BadHash { .. }),
                    "served rotten bytes: {e}"
                );
                None
            }
        }
    })
    .await;
    let audit = net.audit(&ids, &[]).await.unwrap();
    assert!(audit.complete(), "{audit:?}");
}
