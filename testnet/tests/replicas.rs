//! Three tracker replicas on a private PostgreSQL of the testnet: the network keeps
//! publishing, searching and playing when the replica everyone asks first is killed, and the
//! replica comes back caught up.

mod common;

use common::{assert_get_identical, eventually, publish, published, published_library};
use medley_testnet::Testnet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_plays_and_publishes_through_a_killed_tracker_replica() {
    let mut net = Testnet::builder()
        .nodes(6)
        .regions(2)
        .trackers(3)
        .log("warn")
        .spawn()
        .await
        .unwrap();
    assert_eq!(net.tracker_count(), 3);
    let urls: Vec<String> = net.tracker_url().split(',').map(str::to_string).collect();
    assert_eq!(urls.len(), 3, "{}", net.tracker_url());
    let (dir, songs) = published_library(&net, 3, 31, (3.0, 5.0));
    // Every replica serves the same catalogue and layout.
    for url in &urls {
        let t = medley_api::TrackerClient::new(url).unwrap();
        let s = eventually(10, "every replica to know the songs and nodes", || async {
            let s = t.stats().await.ok()?;
            (s.songs == 3 && s.nodes_alive == 6).then_some(s)
        })
        .await;
        assert!(s.layout_version.is_some(), "{url}: {s:?}");
    }

    net.kill_replica(0).unwrap();
    // Nodes move to another replica: their heartbeats keep arriving there.
    let other = medley_api::TrackerClient::new(&urls[1]).unwrap();
    let seen = |nodes: Vec<medley_api::NodeEntry>| {
        nodes
            .into_iter()
            .map(|n| (n.node.peer_id, n.node.last_seen_ms))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let before = seen(other.nodes().await.unwrap());
    eventually(15, "every node heard from again after the kill", || async {
        let now = seen(other.nodes().await.ok()?);
        before
            .iter()
            .all(|(id, t)| now.get(id).is_some_and(|n| n > t))
            .then_some(())
    })
    .await;
    // Plays and downloads go on through the other replicas, byte for byte.
    let out = dir.path().join("out.flac");
    for (id, src) in &songs {
        assert_get_identical(&net, &id.to_string(), &out, src);
    }
    // So does publishing, and the new song is found.
    let more = dir.path().join("more");
    medley_testnet::library::generate(&more, 1, 32, 3.0, 4.0).unwrap();
    let added = published(&publish(&net, &more));
    assert_eq!(added.len(), 1);
    let tracker = net.tracker().unwrap();
    let stats = tracker.stats().await.unwrap();
    assert_eq!(stats.songs, 4);

    // The killed replica comes back on its port, caught up from the database.
    net.start_tracker(0).unwrap();
    let back = medley_api::TrackerClient::new(&urls[0]).unwrap();
    let s = eventually(30, "the restarted replica to answer", || async {
        back.stats().await.ok()
    })
    .await;
    assert_eq!(s.songs, 4);
    assert_eq!(s.layout_version, stats.layout_version);
    net.shutdown();
}
