//! Three tracker replicas on one PostgreSQL (a private cluster the harness starts on
//! loopback), each with its own search index and HTTP listener.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use medley_tracker::{AdmissionMode, Tracker, TrackerConfig};
use serde_json::{Value, json};

use crate::support::{get_json, manifest, post_body, post_json, publisher};

/// A replica as [`crate::support::start`] makes a tracker, on the shared store at `store`.
async fn replica(dir: &Path, store: &str) -> Tracker {
    Tracker::bind(TrackerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        publishers: vec![publisher().id().to_string()],
        require_signatures: false,
        rate_limit_per_sec: 0,
        insecure_dev_admin: true,
        admission: AdmissionMode::Open,
        audit_interval_secs: 0,
        store: Some(store.to_string()),
        ..TrackerConfig::default()
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
    let reg = |i: usize| {
        json!({
            "peer_id": format!("node-{i}"),
            "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 5000 + i)],
            "region": format!("region-{}", i % 3),
            "capacity": 1u64 << 40,
        })
    };
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
