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
