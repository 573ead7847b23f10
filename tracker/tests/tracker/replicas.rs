//! Three tracker replicas on one PostgreSQL (a private cluster the harness starts on
//! loopback), each with its own search index and HTTP listener.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use medley_tracker::{Tracker, TrackerConfig};
use serde_json::Value;

use crate::support::{get_json, manifest, post_body, post_json, publisher};

/// A replica as [`crate::support::start`] makes a tracker, on the shared store at `store`.
async fn replica(dir: &Path, store: &str) -> Tracker {
    Tracker::bind(TrackerConfig {
        store: Some(store.to_string()),
        ..crate::support::config(dir)
    })
    .await
    .unwrap()
}

async fn three(dirs: &[tempfile::TempDir; 3], store: &str) -> Vec<Tracker> {
    let mut out = Vec::new();
    for d in dirs {
        out.push(replica(d.path(), store).await);
    }
    out
}

fn dirs() -> [tempfile::TempDir; 3] {
    std::array::from_fn(|_| tempfile::tempdir().unwrap())
}

async fn hits(http: &reqwest::Client, url: &str, q: &str) -> u64 {
    get_json(http, &format!("{url}/v1/search?q={q}")).await["total"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_song_published_through_one_replica_is_found_on_the_others_within_a_second() {
    let store = medley_daemon::pgcluster::test_database().unwrap();
    let dirs = dirs();
    let replicas = three(&dirs, &store).await;
    let http = reqwest::Client::new();
    for (i, title) in ["Northern Quay", "Southern Pier", "Eastern Dock"]
        .iter()
        .enumerate()
    {
        let m = manifest(title, 300_000, 4, 2, &publisher());
        let through = &replicas[i % 3];
        let r = post_body(
            &http,
            &format!("{}/v1/publish", through.url()),
            m.encoded().to_vec(),
        )
        .await;
        assert_eq!(r.status(), 201);
        let word = title.split(' ').next().unwrap();
        let published = Instant::now();
        for other in replicas.iter().filter(|r| r.url() != through.url()) {
            while hits(&http, &other.url(), word).await == 0 {
                assert!(
                    published.elapsed() < Duration::from_secs(1),
                    "{title} not found on {} within 1 s",
                    other.url()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Published again through another replica: the same song, not a second one.
        let again = &replicas[(i + 1) % 3];
        let r = post_body(
            &http,
            &format!("{}/v1/publish", again.url()),
            m.encoded().to_vec(),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    for r in &replicas {
        let stats = get_json(&http, &format!("{}/v1/stats", r.url())).await;
        assert_eq!(stats["songs"], 3, "{stats}");
        assert_eq!(hits(&http, &r.url(), "Pier").await, 1);
    }
}

#[tokio::test]
async fn concurrent_registrations_through_three_replicas_make_one_layout_sequence() {
    let store = medley_daemon::pgcluster::test_database().unwrap();
    let dirs = dirs();
    let replicas = three(&dirs, &store).await;
    let urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
    let http = reqwest::Client::new();
    let reg = crate::support::registration;
    // Twelve nodes register at once, spread over the replicas.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (http, url, body) = (http.clone(), urls[i % 3].clone(), reg(i));
            tokio::spawn(async move {
                post_json(&http, &format!("{url}/v1/nodes/register"), &body).await
            })
        })
        .collect();
    for t in tasks {
        let r: Value = t.await.unwrap();
        assert!(r.get("error").is_none(), "{r}");
    }
    // Every replica settles on the same version, which places every node.
    let deadline = Instant::now() + Duration::from_secs(20);
    let version = loop {
        let mut versions = Vec::new();
        let mut placed = Vec::new();
        for url in &urls {
            let l = get_json(&http, &format!("{url}/v1/layout")).await;
            versions.push(l["version"].as_u64());
            let nodes: std::collections::HashSet<String> = l["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|p| p.as_array().cloned().unwrap_or_default())
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect();
            placed.push(nodes.len());
        }
        if versions.iter().all(|v| v.is_some() && *v == versions[0])
            && placed.iter().all(|n| *n == 12)
        {
            break versions[0].unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not agree: {versions:?} placing {placed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One sequence: every version from the first on, the same on every replica (no fork),
    // none missing (no gap).
    let mut seen: BTreeMap<u64, Value> = BTreeMap::new();
    for v in 1..=version {
        for url in &urls {
            let r = http
                .get(format!("{url}/v1/layout?version={v}"))
                .send()
                .await
                .unwrap();
            if r.status() == 404 {
                // Pruned once settled, on every replica alike.
                continue;
            }
            let l: Value = r.json().await.unwrap();
            assert_eq!(l["version"], v);
            match seen.get(&v) {
                Some(first) => assert_eq!(first, &l, "version {v} differs between replicas"),
                None => {
                    seen.insert(v, l);
                }
            }
        }
    }
    assert!(seen.contains_key(&version));
    let kept: Vec<u64> = seen.keys().copied().collect();
    let oldest = kept[0];
    assert_eq!(
        kept,
        (oldest..=version).collect::<Vec<_>>(),
        "a gap in the versions kept"
    );
}

/// The three replicas' processes, as deployed (signed requests, one signing key), on the
/// database at `store`.
fn three_processes(
    dirs: &[tempfile::TempDir; 3],
    key: &Path,
    store: &str,
) -> Vec<(crate::process::Proc, String)> {
    dirs.iter()
        .map(|d| {
            crate::process::start_with_env(
                d.path(),
                &["--store", store],
                &[
                    ("MEDLEY_SIGNING_KEY", key.to_str().unwrap()),
                    ("MEDLEY_ADMISSION", "open"),
                ],
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_loses_no_play_and_no_publish() {
    use medley_api::{PlayReport, SearchQuery, TrackerClient};
    let store = medley_daemon::pgcluster::test_database().unwrap();
    let (dirs, keys) = (dirs(), tempfile::tempdir().unwrap());
    let key = keys.path().join("tracker.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let mut procs = three_processes(&dirs, &key, &store);
    let urls: Vec<String> = procs.iter().map(|(_, u)| u.clone()).collect();
    let listener = TrackerClient::builder(&urls.join(","))
        .signer(libp2p_identity::Keypair::generate_ed25519())
        .build()
        .unwrap();
    assert_eq!(listener.url(), urls[0]);
    let mut published = Vec::new();
    let mut plays = 0u64;
    for i in 0..40 {
        if i == 15 {
            // kill -9 the replica the client talks to, between two requests of a run.
            procs.remove(0);
        }
        let m = manifest(&format!("Ferry Song {i}"), 70_000, 4, 2, &publisher());
        let committed = listener
            .publish(&m)
            .await
            .unwrap_or_else(|e| panic!("publish {i}: {e}"));
        assert!(committed.created);
        published.push(m);
        let song = published[i % published.len()].id();
        listener
            .report_play(&PlayReport::new(song, "eu", None))
            .await
            .unwrap_or_else(|e| panic!("play {i}: {e}"));
        plays += 1;
    }
    assert_ne!(
        listener.url(),
        urls[0],
        "the client moved to another replica"
    );
    // Every acknowledged publish is whole on both survivors: manifest, index and count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for url in &urls[1..] {
        let c = TrackerClient::new(url).unwrap();
        let stats = c.stats().await.unwrap();
        assert_eq!(stats.songs, 40, "{url}");
        for m in &published {
            assert_eq!(c.manifest(m.id()).await.unwrap().encoded(), m.encoded());
        }
        let q = SearchQuery {
            q: "ferry".into(),
            limit: Some(100),
            ..SearchQuery::default()
        };
        assert_eq!(c.search(&q).await.unwrap().total, 40);
    }
    // Plays counted through every replica add up (those of the killed one were flushed
    // within its second, or are the at most one second of plays it held).
    let c = TrackerClient::new(&urls[1]).unwrap();
    let mut counted = 0;
    for m in published.iter().take(40) {
        counted += c.song(m.id()).await.unwrap().plays;
    }
    assert!(
        counted <= plays && counted + 15 >= plays,
        "{counted} of {plays} plays counted"
    );
    // The killed replica comes back and catches up.
    let (_back, url) = crate::process::start_with_env(
        dirs[0].path(),
        &["--store", &store],
        &[
            ("MEDLEY_SIGNING_KEY", key.to_str().unwrap()),
            ("MEDLEY_ADMISSION", "open"),
        ],
    );
    let c = TrackerClient::new(&url).unwrap();
    assert_eq!(c.stats().await.unwrap().songs, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_ride_out_a_database_restart_and_lose_nothing_committed() {
    let cluster = medley_daemon::pgcluster::Cluster::start_temporary().unwrap();
    cluster.create_database("medley").unwrap();
    let store = cluster.url("medley");
    let dirs = dirs();
    let replicas = three(&dirs, &store).await;
    let http = reqwest::Client::new();
    let publish = |i: usize, url: String| {
        let http = http.clone();
        async move {
            let m = manifest(&format!("Breakwater {i}"), 70_000, 4, 2, &publisher());
            post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await
        }
    };
    for i in 0..5 {
        assert_eq!(publish(i, replicas[i % 3].url()).await.status(), 201);
    }
    cluster.stop().unwrap();
    // Down: a publish is refused with a clear error; search answers from the index.
    let r = publish(5, replicas[0].url()).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{body}"
    );
    assert_eq!(hits(&http, &replicas[1].url(), "breakwater").await, 5);
    cluster.restart().unwrap();
    // Back: every replica writes again, and finds what every other committed.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (n, r) in replicas.iter().enumerate() {
        loop {
            let s = publish(5 + n, r.url()).await.status();
            if s == 201 {
                break;
            }
            assert!(Instant::now() < deadline, "{} still refuses: {s}", r.url());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for r in &replicas {
        while hits(&http, &r.url(), "breakwater").await != 8 {
            assert!(Instant::now() < deadline, "{} did not catch up", r.url());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            get_json(&http, &format!("{}/v1/stats", r.url())).await["songs"],
            8
        );
    }
}

/// A source banned on the reports one replica got is banned on the others too: a liar
/// cannot go on serving the clients of another replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_on_one_replica_holds_on_the_others() {
    use medley_api::{ReportReason, SourceReport, TrackerClient};
    let store = medley_daemon::pgcluster::test_database().unwrap();
    let dirs = dirs();
    let mut replicas = Vec::new();
    for d in &dirs {
        replicas.push(
            Tracker::bind(TrackerConfig {
                store: Some(store.clone()),
                // Every signed reporter weighs a whole report at once.
                report_trust_secs: 0,
                ..crate::support::config(d.path())
            })
            .await
            .unwrap(),
        );
    }
    let http = reqwest::Client::new();
    let a = replicas[0].url();
    let node: Value = post_json(
        &http,
        &format!("{a}/v1/nodes/register"),
        &crate::support::registration(0),
    )
    .await;
    assert!(node.get("error").is_none(), "{node}");
    let song = manifest("Harbour Bell", 70_000, 4, 2, &publisher()).id();
    // Two signed listeners report wrong bytes from node-0, both to the first replica.
    for _ in 0..2 {
        let c = TrackerClient::builder(&a)
            .signer(libp2p_identity::Keypair::generate_ed25519())
            .build()
            .unwrap();
        c.report_source(&SourceReport {
            peer_id: "node-0".into(),
            song: song.to_string(),
            reason: ReportReason::BadHash,
        })
        .await
        .unwrap();
    }
    let banned_on = |url: String| async move {
        let c = TrackerClient::new(&url).unwrap();
        c.nodes()
            .await
            .ok()?
            .into_iter()
            .find(|n| n.node.peer_id == "node-0")
            .map(|n| n.banned)
    };
    assert_eq!(
        banned_on(a.clone()).await,
        Some(true),
        "banned where it was reported"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in &replicas[1..] {
        while banned_on(r.url()).await != Some(true) {
            assert!(Instant::now() < deadline, "not banned on {}", r.url());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls `check` every 100 ms until it holds, failing with `what` after `secs` seconds.
async fn within<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Demand heard by one replica counts on every other: plays spread over the replicas make a
/// song hot (none of them alone heard enough), one set of orders for hot copies is served
/// by all of them, and a whole copy a node reports, a listener's announcement and a report
/// that a source failed, each heard by one replica, change the sources every other lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_heard_through_one_replica_counts_on_every_other() {
    let store = medley_daemon::pgcluster::test_database().unwrap();
    let dirs = dirs();
    let replicas = three(&dirs, &store).await;
    let urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
    let http = reqwest::Client::new();
    for i in 0..6 {
        let r = post_json(
            &http,
            &format!("{}/v1/nodes/register", urls[0]),
            &crate::support::registration(i),
        )
        .await;
        assert!(r.get("error").is_none(), "{r}");
    }
    let m = manifest("Lighthouse Reel", 70_000, 4, 2, &publisher());
    let r = post_body(
        &http,
        &format!("{}/v1/publish", urls[0]),
        m.encoded().to_vec(),
    )
    .await;
    assert_eq!(r.status(), 201);
    for url in &urls {
        within(5, &format!("{url} knows the nodes"), || async {
            get_json(&http, &format!("{url}/v1/nodes")).await["nodes"]
                .as_array()
                .map_or(0, Vec::len)
                == 6
        })
        .await;
    }
    // Six plays in region-0, two through each replica; a song is hot from four
    // (`hot_plays`).
    for i in 0..6 {
        let r = http
            .post(format!("{}/v1/plays", urls[i % 3]))
            .json(&serde_json::json!({"song": m.id().to_string(), "region": "region-0"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let song = m.id().to_string();
    let mut orders = Vec::new();
    for url in &urls {
        within(10, &format!("the song hot on {url}"), || async {
            ordered_on(&http, url, &song)
                .await
                .is_some_and(|o| o.as_array().is_some_and(|a| a.len() == 2))
        })
        .await;
        orders.push(ordered_on(&http, url, &song).await.unwrap());
    }
    assert!(
        orders.iter().all(|o| *o == orders[0]),
        "one set of orders: {orders:?}"
    );
    let ordered: Vec<String> = orders[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    for n in &ordered {
        let i: usize = n.trim_start_matches("node-").parse().unwrap();
        assert_eq!(i % 3, 0, "{n} is in region-0");
        for url in &urls {
            let o = get_json(&http, &format!("{url}/v1/nodes/{n}/hot")).await;
            assert_eq!(o["songs"], serde_json::json!([m.id().to_string()]), "{url}");
        }
    }
    // The first ordered node reports the copy to replica 1, a listener announces the song
    // to replica 2: replica 0 lists both.
    let holder = &ordered[0];
    let hb = http
        .post(format!("{}/v1/nodes/heartbeat", urls[1]))
        .json(
            &serde_json::json!({"peer_id": holder, "free": 1u64 << 30, "bytes_per_sec": 0,
            "transfers": 0, "hot": [m.id().to_string()]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), 204);
    let a = http
        .post(format!("{}/v1/peers/announce", urls[2]))
        .json(&serde_json::json!({"peer_id": "listener-1",
            "addrs": ["/ip4/127.0.0.1/udp/9/quic-v1"], "region": "region-1",
            "songs": [m.id().to_string()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 204);
    // Neither is in region-2: the hot node ranks before a listener nobody confirmed.
    let both = vec![format!("{holder}:hot"), "listener-1:peer".to_string()];
    within(
        5,
        "replica 0 lists the copies heard by the others",
        || async { whole(&http, &urls[0], &song).await == both },
    )
    .await;
    // Replica 0 hears that the hot node failed a client: replica 1 ranks it last.
    let r = http
        .post(format!("{}/v1/reports", urls[0]))
        .json(
            &serde_json::json!({"peer_id": holder, "song": m.id().to_string(),
            "reason": "failed"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let reversed = vec!["listener-1:peer".to_string(), format!("{holder}:hot")];
    within(5, "replica 1 ranks the failed source last", || async {
        whole(&http, &urls[1], &song).await == reversed
    })
    .await;
    // A replica started now learns all of it from the last minutes of the log.
    let late_dir = tempfile::tempdir().unwrap();
    let late = replica(late_dir.path(), &store).await;
    let url = late.url();
    within(5, "a new replica lists what the others heard", || async {
        whole(&http, &url, &song).await == reversed
    })
    .await;
    within(5, "a new replica serves the orders", || async {
        ordered_on(&http, &url, &song).await.as_ref() == Some(&orders[0])
    })
    .await;
}

/// The nodes `url` says are ordered to hold `song` in region-0, if it is hot there.
async fn ordered_on(http: &reqwest::Client, url: &str, song: &str) -> Option<Value> {
    let hot = get_json(http, &format!("{url}/v1/popularity")).await;
    hot["hot"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["song"] == song && e["region"] == "region-0")
        .map(|e| e["ordered"].clone())
}

/// The whole copies of `song` `url` lists for a client in region-2, as `peer:kind`.
async fn whole(http: &reqwest::Client, url: &str, song: &str) -> Vec<String> {
    let v = get_json(
        http,
        &format!("{url}/v1/songs/{song}/sources?region=region-2"),
    )
    .await;
    v["whole"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            format!(
                "{}:{}",
                w["peer_id"].as_str().unwrap_or(""),
                w["kind"].as_str().unwrap_or("")
            )
        })
        .collect()
}
