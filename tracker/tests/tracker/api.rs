use std::time::Duration;

use medley_core::PublisherKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use medley_tracker::{Tracker, TrackerConfig};

use crate::support::{get_json, manifest, post_body, post_json, publisher, start};

async fn error_code(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn publish_fetch_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    let http = reqwest::Client::new();
    let m = manifest("Lantern Song", 150_000, 4, 2, &publisher());

    let r = post_body(
        &http,
        &format!("{}/v1/publish", t.url()),
        m.encoded().to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], m.id().to_string());
    // Idempotent.
    let r = post_body(
        &http,
        &format!("{}/v1/publish", t.url()),
        m.encoded().to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["created"], false);

    let song: Value = get_json(&http, &format!("{}/v1/songs/{}", t.url(), m.id())).await;
    assert_eq!(song["title"], "Lantern Song");
    assert_eq!(song["artist"], "The Velvet Foxes");
    assert_eq!(song["segments"], 3);
    assert_eq!(song["size"], 150_000);

    // Restart on the same data dir: everything is still there, byte for byte.
    t.shutdown(Duration::from_secs(5)).await;
    let t = start(dir.path()).await;
    let bytes = http
        .get(format!("{}/v1/songs/{}/manifest", t.url(), m.id()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], m.encoded());
    let stats: Value = get_json(&http, &format!("{}/v1/stats", t.url())).await;
    assert_eq!(stats["songs"], 1);
    t.shutdown(Duration::from_secs(5)).await;
}

/// A flash crowd: listeners of one region ask for a new song's sources within moments.
/// Hot copies are ordered there at once, before a single play is reported (plays come at
/// the end of each listen); a song asked for as often but slowly is not.
#[tokio::test]
async fn a_surge_of_listeners_orders_hot_copies_before_any_play_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::bind(TrackerConfig {
        hot_surge_secs: 1,
        ..crate::support::config(dir.path())
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = t.url();
    for i in 0..6 {
        post_json(
            &http,
            &format!("{url}/v1/nodes/register"),
            &crate::support::registration(i),
        )
        .await;
    }
    let crowd = manifest("Crowd Song", 100_000, 4, 2, &publisher());
    let slow = manifest("Slow Song", 100_000, 4, 2, &publisher());
    for m in [&crowd, &slow] {
        post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    }
    let ask = |song: medley_core::SongId, region: Option<&'static str>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let q = region.map(|r| format!("?region={r}")).unwrap_or_default();
            get_json(&http, &format!("{url}/v1/songs/{song}/sources{q}")).await
        }
    };
    let hot_in = |hot: &Value, song: medley_core::SongId| -> Vec<(String, Vec<String>)> {
        hot["hot"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["song"] == song.to_string())
            .map(|h| {
                let nodes = h["ordered"].as_array().unwrap().iter();
                let nodes = nodes.map(|n| n.as_str().unwrap().to_string());
                (h["region"].as_str().unwrap().to_string(), nodes.collect())
            })
            .collect()
    };
    // As many requests as a surge takes, but one every 400 ms: with a half-life of one
    // second they never add up to eight.
    for _ in 0..8 {
        ask(slow.id(), Some("region-0")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Requests without a region say nothing about where a crowd is.
    for _ in 0..12 {
        ask(crowd.id(), None).await;
    }
    let hot: Value = get_json(&http, &format!("{url}/v1/popularity")).await;
    assert!(hot_in(&hot, slow.id()).is_empty(), "{hot}");
    assert!(hot_in(&hot, crowd.id()).is_empty(), "{hot}");
    // Eight listeners of region-0 at once.
    for _ in 0..8 {
        ask(crowd.id(), Some("region-0")).await;
    }
    let hot: Value = get_json(&http, &format!("{url}/v1/popularity")).await;
    let orders = hot_in(&hot, crowd.id());
    assert_eq!(orders.len(), 1, "{hot}");
    let (region, nodes) = &orders[0];
    assert_eq!(region, "region-0");
    // Nodes 0 and 3 are region-0's (registration puts node i in region i % 3).
    let mut nodes = nodes.clone();
    nodes.sort();
    assert_eq!(nodes, vec!["node-0".to_string(), "node-3".to_string()]);
    for n in &nodes {
        let o: Value = get_json(&http, &format!("{url}/v1/nodes/{n}/hot")).await;
        assert_eq!(o["songs"], json!([crowd.id().to_string()]), "{n}");
    }
    let stats: Value = get_json(&http, &format!("{url}/v1/songs/{}", crowd.id())).await;
    assert_eq!(
        stats["plays"].as_u64().unwrap_or(0),
        0,
        "no play was reported"
    );
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = t.url();
    let good = manifest("Good", 70_000, 4, 2, &publisher());
    let post = |body: Vec<u8>| http.post(format!("{url}/v1/publish")).body(body).send();

    assert_eq!(
        error_code(post(b"not a manifest".to_vec()).await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "invalid_manifest".into())
    );
    let mut bad_sig = good.encoded().to_vec();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert_eq!(
        error_code(post(bad_sig).await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "bad_signature".into())
    );
    let stranger = manifest(
        "Stranger",
        70_000,
        4,
        2,
        &PublisherKey::from_seed([1u8; 32]),
    );
    assert_eq!(
        error_code(post(stranger.encoded().to_vec()).await.unwrap()).await,
        (StatusCode::FORBIDDEN, "unknown_publisher".into())
    );
    let other_code = manifest("Wide", 70_000, 10, 4, &publisher());
    assert_eq!(
        error_code(post(other_code.encoded().to_vec()).await.unwrap()).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "wrong_coding".into())
    );
    let r = post(vec![0u8; 200 * 1024]).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(
        error_code(
            http.get(format!("{url}/v1/songs/{}", good.id()))
                .send()
                .await
                .unwrap()
        )
        .await,
        (StatusCode::NOT_FOUND, "unknown_song".into())
    );
    assert_eq!(
        error_code(
            http.get(format!("{url}/v1/songs/not-hex"))
                .send()
                .await
                .unwrap()
        )
        .await,
        (StatusCode::BAD_REQUEST, "bad_id".into())
    );
    let r = http
        .post(format!("{url}/v1/nodes/register"))
        .header("content-type", "application/json")
        .body("{\"peer_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.1, "malformed_json");
    let r = http
        .post(format!("{url}/v1/nodes/heartbeat"))
        .json(&json!({"peer_id": "nobody", "free": 1, "bytes_per_sec": 0, "transfers": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "unknown_node".into())
    );
    assert_eq!(
        error_code(http.get(format!("{url}/v2/nothing")).send().await.unwrap())
            .await
            .1,
        "no_route"
    );

    // Nothing was stored by any of that.
    let stats: Value = get_json(&http, &format!("{url}/v1/stats")).await;
    assert_eq!(stats["songs"], 0);
    assert_eq!(stats["nodes"], 0);
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("medley_tracker_http_requests_total{outcome=\"client_error\"}"),
        "{metrics}"
    );
    // Latency is recorded per route pattern, never per id; unknown paths share one series.
    let count = |route: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "medley_tracker_http_request_duration_seconds_count{{route=\"{route}\"}} "
                ))
            })
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert!(count("/v1/stats").is_some_and(|n| n >= 1), "{metrics}");
    assert!(count("/v1/songs/{id}").is_some_and(|n| n >= 1), "{metrics}");
    assert!(count("unmatched").is_some_and(|n| n >= 1), "{metrics}");
    assert!(
        !metrics.contains(&good.id().to_string()),
        "no series per id: {metrics}"
    );
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn nodes_register_and_layout_follows() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = t.url();
    let reg = crate::support::registration;
    // Five nodes: too few for 4+2, no layout yet.
    for i in 0..5 {
        let r: Value = post_json(&http, &format!("{url}/v1/nodes/register"), &reg(i)).await;
        assert_eq!(r["layout_version"], Value::Null);
    }
    assert_eq!(
        error_code(http.get(format!("{url}/v1/layout")).send().await.unwrap())
            .await
            .1,
        "no_layout"
    );
    let r: Value = post_json(&http, &format!("{url}/v1/nodes/register"), &reg(5)).await;
    assert_eq!(r["layout_version"], 1);
    let r: Value = post_json(&http, &format!("{url}/v1/nodes/register"), &reg(6)).await;
    assert_eq!(r["layout_version"], 2);
    // Re-registering unchanged does not make a new layout.
    let r: Value = post_json(&http, &format!("{url}/v1/nodes/register"), &reg(6)).await;
    assert_eq!(r["layout_version"], 2);

    let layout: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    let parts = layout["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 256);
    for p in parts {
        let ids: std::collections::HashSet<_> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 6, "distinct nodes per partition");
    }

    let hb = http
        .post(format!("{url}/v1/nodes/heartbeat"))
        .json(&json!({"peer_id": "node-3", "free": 123, "bytes_per_sec": 456, "transfers": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), StatusCode::NO_CONTENT);
    let nodes: Value = get_json(&http, &format!("{url}/v1/nodes")).await;
    let nodes = nodes["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 7);
    assert!(nodes.iter().all(|n| n["alive"] == true));
    let n3 = nodes
        .iter()
        .find(|n| n["node"]["peer_id"] == "node-3")
        .unwrap();
    assert_eq!(n3["node"]["load"]["bytes_per_sec"], 456);

    // Sources: every shard of a published song maps to a node with its addresses.
    let m = manifest("Sourced", 100_000, 4, 2, &publisher());
    post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    let src: Value = get_json(&http, &format!("{url}/v1/songs/{}/sources", m.id())).await;
    assert_eq!(src["layout_version"], 2);
    for seg in src["segments"].as_array().unwrap() {
        let shards = seg["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 6);
        for s in shards {
            assert!(s["peer_id"].as_str().unwrap().starts_with("node-"));
            assert_eq!(s["addrs"].as_array().unwrap().len(), 1);
        }
    }

    // Publish grants: exactly the shards each node's slots take, signed by the tracker's key.
    let stats: Value = get_json(&http, &format!("{url}/v1/stats")).await;
    let key: medley_core::TrackerId = stats["tracker_key"].as_str().unwrap().parse().unwrap();
    let r = http
        .post(format!("{url}/v1/publish/grants"))
        .body(m.encoded().to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let grants: medley_api::PublishGrants = r.json().await.unwrap();
    assert_eq!((grants.song, grants.layout_version), (m.id(), 2));
    let now = medley_core::unix_now();
    assert!(grants.expires > now + 60 && grants.expires <= now + 1800 + 5);
    let mut granted = std::collections::HashSet::new();
    for g in &grants.grants {
        for shard in &g.shards {
            g.allows(&key, &g.node, shard, now).unwrap();
            granted.insert((g.node.clone(), shard.to_string()));
        }
    }
    let mut placed = std::collections::HashSet::new();
    for seg in src["segments"].as_array().unwrap() {
        for s in seg["shards"].as_array().unwrap() {
            placed.insert((
                s["peer_id"].as_str().unwrap().to_string(),
                s["shard"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(granted, placed, "grants cover exactly the placed shards");
    // No grants for a key that may not publish, nor for garbage.
    let stranger = medley_core::PublisherKey::from_seed([99; 32]);
    let foreign = manifest("Foreign", 10_000, 4, 2, &stranger);
    for (body, code) in [
        (foreign.encoded().to_vec(), "unknown_publisher"),
        (b"not a manifest".to_vec(), "invalid_manifest"),
    ] {
        let r = http
            .post(format!("{url}/v1/publish/grants"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await.1, code);
    }

    // A node that says it is stopping is no longer alive, nor offered as a live source, but
    // keeps its slots: a restart moves nothing. Its next heartbeat brings it back.
    let node_3 = |nodes: &Value| {
        let n = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"]["peer_id"] == "node-3")
            .unwrap()
            .clone();
        (n["alive"].clone(), n["node"]["stopped"].clone())
    };
    let r = http
        .post(format!("{url}/v1/nodes/leave"))
        .json(&json!({"peer_id": "node-3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let nodes: Value = get_json(&http, &format!("{url}/v1/nodes")).await;
    assert_eq!(node_3(&nodes), (json!(false), json!(true)));
    let src: Value = get_json(&http, &format!("{url}/v1/songs/{}/sources", m.id())).await;
    assert_eq!(
        src["layout_version"], 2,
        "a stop does not change the layout"
    );
    let mut seen = 0;
    for s in src["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|seg| seg["shards"].as_array().unwrap())
    {
        assert_eq!(s["alive"], json!(s["peer_id"] != "node-3"), "{s}");
        seen += usize::from(s["peer_id"] == "node-3");
    }
    assert!(seen > 0, "node-3 holds a shard of the song");
    let (s, c) = error_code(
        http.post(format!("{url}/v1/nodes/leave"))
            .json(&json!({"peer_id": "nobody"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s.as_u16(), c.as_str()), (404, "unknown_node"));
    let hb = http
        .post(format!("{url}/v1/nodes/heartbeat"))
        .json(&json!({"peer_id": "node-3", "free": 123, "bytes_per_sec": 0, "transfers": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), StatusCode::NO_CONTENT);
    let nodes: Value = get_json(&http, &format!("{url}/v1/nodes")).await;
    assert_eq!(node_3(&nodes), (json!(true), json!(false)));

    // Popularity: plays in a region make the song hot there; a node of that region is
    // ordered to hold it, reports holding it, and is then listed as a whole copy, first for
    // clients of its region. Bad reports and announcements are refused.
    let region_of_3 = "region-0";
    for _ in 0..4 {
        let r = http
            .post(format!("{url}/v1/plays"))
            .json(&json!({"song": m.id().to_string(), "region": region_of_3}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let hot: Value = get_json(&http, &format!("{url}/v1/popularity")).await;
    let entry = &hot["hot"][0];
    assert_eq!(entry["song"], m.id().to_string());
    assert_eq!(entry["region"], region_of_3);
    let ordered: Vec<String> = entry["ordered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ordered.len(), 2, "hot_copies nodes: {hot}");
    for n in &ordered {
        let i: usize = n.trim_start_matches("node-").parse().unwrap();
        assert_eq!(i % 3, 0, "{n} is in {region_of_3}");
        let o: Value = get_json(&http, &format!("{url}/v1/nodes/{n}/hot")).await;
        assert_eq!(o["songs"], json!([m.id().to_string()]));
    }
    let src: Value = get_json(&http, &format!("{url}/v1/songs/{}/sources", m.id())).await;
    assert_eq!(src["whole"], json!([]), "ordered is not held");
    let holder = &ordered[0];
    let hb = http
        .post(format!("{url}/v1/nodes/heartbeat"))
        .json(
            &json!({"peer_id": holder, "free": 1 << 30, "bytes_per_sec": 0, "transfers": 0,
            "hot": [m.id().to_string()]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), StatusCode::NO_CONTENT);
    let r = http
        .post(format!("{url}/v1/peers/announce"))
        .json(
            &json!({"peer_id": "listener-1", "addrs": ["/ip4/127.0.0.1/udp/9/quic-v1"],
            "region": "region-1", "songs": [m.id().to_string()]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let kinds = |v: &Value| -> Vec<(String, String)> {
        v["whole"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["peer_id"].as_str().unwrap().to_string(),
                    w["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let near_holder: Value = get_json(
        &http,
        &format!("{url}/v1/songs/{}/sources?region={region_of_3}", m.id()),
    )
    .await;
    assert_eq!(
        kinds(&near_holder),
        vec![
            (holder.clone(), "hot".to_string()),
            ("listener-1".to_string(), "peer".to_string())
        ],
        "same region first"
    );
    let near_peer: Value = get_json(
        &http,
        &format!("{url}/v1/songs/{}/sources?region=region-1", m.id()),
    )
    .await;
    assert_eq!(kinds(&near_peer)[0].0, "listener-1");
    // A reported liar goes last among equals.
    let report = |body: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}/v1/reports"))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let r =
        report(json!({"peer_id": "listener-1", "song": m.id().to_string(), "reason": "bad_hash"}))
            .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let after: Value = get_json(
        &http,
        &format!("{url}/v1/songs/{}/sources?region=region-2", m.id()),
    )
    .await;
    assert_eq!(kinds(&after)[0].0, *holder, "{after}");
    for (body, code) in [
        (
            json!({"peer_id": "x", "song": m.id().to_string(), "reason": "meh"}),
            "bad_report",
        ),
        (
            json!({"peer_id": "x", "song": "nope", "reason": "bad_hash"}),
            "bad_id",
        ),
    ] {
        let (s, c) = error_code(report(body).await).await;
        assert_eq!((s.as_u16(), c.as_str()), (400, code));
    }
    let (s, c) = error_code(
        http.post(format!("{url}/v1/peers/announce"))
            .json(&json!({"peer_id": "p", "addrs": [], "region": "r", "songs": []}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s.as_u16(), c.as_str()), (400, "bad_registration"));
    // Have-maps: at most 64 songs held in part, each with a segment held, in hex, at most
    // 512 bytes. Nothing of a refused announcement is kept.
    let song = m.id().to_string();
    let partial = |have: &str, n: usize| {
        json!({"peer_id": "listener-9", "addrs": ["/ip4/127.0.0.1/udp/9/quic-v1"],
            "region": "region-1", "songs": [],
            "partial": vec![json!({"song": song, "have": have}); n]})
    };
    for (body, code) in [
        (partial("01", 65), "bad_registration"),
        (partial("0000", 1), "bad_registration"),
        (partial("zz", 1), "malformed_json"),
        (partial(&"ff".repeat(513), 1), "malformed_json"),
    ] {
        let r = http
            .post(format!("{url}/v1/peers/announce"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, code.into()));
    }
    let src: Value = get_json(&http, &format!("{url}/v1/songs/{song}/sources")).await;
    assert!(!src.to_string().contains("listener-9"), "{src}");
    let (s, c) = error_code(
        http.get(format!("{url}/v1/nodes/nobody/hot"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s.as_u16(), c.as_str()), (404, "unknown_node"));

    // The layout and registry survive a restart.
    t.shutdown(Duration::from_secs(5)).await;
    let t = start(dir.path()).await;
    let again: Value = get_json(&http, &format!("{}/v1/layout", t.url())).await;
    assert_eq!(again, layout);
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn layout_follows_liveness_and_drains_and_lists_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::bind(TrackerConfig {
        admission: medley_tracker::AdmissionMode::Open,
        // No data plane to audit here: a node's word settles its slots.
        audit_interval_secs: 0,
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        publishers: vec![publisher().id().to_string()],
        node_grace_secs: 1,
        require_signatures: false,
        rate_limit_per_sec: 0,
        // Drains and previews over HTTP without a token.
        insecure_dev_admin: true,
        store: crate::support::store(dir.path()),
        ..TrackerConfig::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = t.url();
    for i in 0..8 {
        let reg = json!({
            "peer_id": format!("node-{i}"),
            "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 5000 + i)],
            "region": format!("region-{}", i % 4),
            "capacity": 1u64 << 40,
        });
        let _: Value = post_json(&http, &format!("{url}/v1/nodes/register"), &reg).await;
    }
    let layout = |v: Value| -> Vec<String> {
        v["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p.as_array().unwrap().iter())
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let first: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    let v1 = first["version"].as_u64().unwrap();
    assert!(layout(first.clone()).contains(&"node-7".to_string()));

    // Placement index: a published song's segments are listed under their partitions.
    let m = manifest("Placed", 300_000, 4, 2, &publisher());
    post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    for seg in &m.body().segments {
        let p = medley_core::partition_of(&seg.id, 256);
        let page: Value = get_json(&http, &format!("{url}/v1/partitions/{p}/segments")).await;
        let listed = page["segments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == seg.id.to_string())
            .unwrap_or_else(|| panic!("segment {} not in partition {p}: {page}", seg.id));
        assert_eq!(listed["len"], seg.len);
        let shards: Vec<String> = seg.shards.iter().map(ToString::to_string).collect();
        assert_eq!(listed["shards"], json!(shards));
    }
    // Paging: limit 1 hands out a `next` cursor when the page is full.
    let p = medley_core::partition_of(&m.body().segments[0].id, 256);
    let page: Value = get_json(&http, &format!("{url}/v1/partitions/{p}/segments?limit=1")).await;
    assert_eq!(page["segments"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap().to_string();
    let rest: Value = get_json(
        &http,
        &format!("{url}/v1/partitions/{p}/segments?after={next}"),
    )
    .await;
    assert!(
        rest["segments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"] != page["segments"][0]["id"])
    );
    for (path, status, code) in [
        ("/v1/partitions/256/segments", 404, "unknown_partition"),
        ("/v1/partitions/x/segments", 400, "bad_query"),
        ("/v1/partitions/1/segments?after=zz", 400, "bad_query"),
        ("/v1/partitions/1/segments?limit=0", 400, "bad_query"),
        ("/v1/layout?version=999", 404, "unknown_layout"),
    ] {
        let (s, c) = error_code(http.get(format!("{url}{path}")).send().await.unwrap()).await;
        assert_eq!((s.as_u16(), c.as_str()), (status, code), "{path}");
    }
    let old: Value = get_json(&http, &format!("{url}/v1/layout?version={v1}")).await;
    assert_eq!(old, first);

    // Seven nodes keep sending heartbeats, node-7 falls silent: after the grace period it is
    // out of the layout; when it beats again, it is back.
    let seven = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beats = {
        let (http, url, seven) = (http.clone(), url.clone(), seven.clone());
        tokio::spawn(async move {
            loop {
                for i in 0..8 {
                    if i < 7 || seven.load(std::sync::atomic::Ordering::SeqCst) {
                        let r = http
                            .post(format!("{url}/v1/nodes/heartbeat"))
                            // Each says it holds every shard of its slots, of any
                            // layout: their slots settle at once, and moves are not held
                            // back.
                            .json(&json!({"peer_id": format!("node-{i}"), "free": 1,
                                "bytes_per_sec": 0, "transfers": 0,
                                "repaired_version": u64::MAX}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), StatusCode::NO_CONTENT);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let wait_for = |present: bool| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let start = std::time::Instant::now();
            loop {
                let l: Value = get_json(&http, &format!("{url}/v1/layout")).await;
                if layout(l.clone()).contains(&"node-7".to_string()) == present {
                    return l;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "node-7 present: {present}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let without = wait_for(false).await;
    assert!(without["version"].as_u64().unwrap() > v1);
    seven.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(true).await;

    // A preview shows what a drain would move and changes nothing; the drain then makes
    // exactly that change.
    let current: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    let preview: Value = get_json(&http, &format!("{url}/v1/layout/preview?drain=node-0")).await;
    assert_eq!(preview["current_version"], current["version"]);
    let node_0 = preview["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["peer_id"] == "node-0")
        .unwrap();
    assert_eq!(node_0["after"], 0);
    assert!(node_0["before"].as_u64().unwrap() > 0);
    assert_eq!(
        preview["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["after"].as_u64().unwrap())
            .sum::<u64>(),
        256 * 6,
        "every slot has a node after"
    );
    // The published song's segments lie in partitions that may move: shards are counted
    // only for those.
    assert!(preview["moved_shards"].as_u64().unwrap() <= 6 * m.body().segments.len() as u64);
    let same: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    assert_eq!(same, current, "a preview changes nothing");
    let nothing: Value = get_json(&http, &format!("{url}/v1/layout/preview")).await;
    assert_eq!(nothing["changes"], false);
    assert_eq!(nothing["moved_slots"], 0);
    for (path, status, code) in [
        ("/v1/layout/preview?drain=nobody", 404, "unknown_node"),
        (
            "/v1/layout/preview?drain=node-0,node-1,node-2",
            503,
            "no_layout",
        ),
        ("/v1/layout/preview?other=1", 400, "bad_query"),
    ] {
        let (s, c) = error_code(http.get(format!("{url}{path}")).send().await.unwrap()).await;
        assert_eq!((s.as_u16(), c.as_str()), (status, code), "{path}");
    }

    // Drains: a draining node leaves the layout; one too many is refused; undrain restores.
    let r: Value = post_json(&http, &format!("{url}/v1/nodes/node-0/drain"), &json!({})).await;
    assert_eq!(r["draining"], true);
    let l: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    let moved: usize = current["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(l["partitions"].as_array().unwrap())
        .map(|(a, b)| {
            a.as_array()
                .unwrap()
                .iter()
                .zip(b.as_array().unwrap())
                .filter(|(x, y)| x != y)
                .count()
        })
        .sum();
    assert_eq!(moved as u64, preview["moved_slots"].as_u64().unwrap());
    assert!(!layout(l).contains(&"node-0".to_string()));
    let _: Value = post_json(&http, &format!("{url}/v1/nodes/node-1/drain"), &json!({})).await;
    let before: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    let (s, c) = error_code(
        http.post(format!("{url}/v1/nodes/node-2/drain"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s.as_u16(), c.as_str()), (409, "cannot_drain"));
    let after: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    assert_eq!(before, after, "a refused drain changes nothing");
    let (s, c) = error_code(
        http.post(format!("{url}/v1/nodes/nobody/drain"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s.as_u16(), c.as_str()), (404, "unknown_node"));
    let r: Value = post_json(&http, &format!("{url}/v1/nodes/node-0/undrain"), &json!({})).await;
    assert_eq!(r["draining"], false);
    let l: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    assert!(layout(l).contains(&"node-0".to_string()));
    let stats: Value = get_json(&http, &format!("{url}/v1/stats")).await;
    assert_eq!(stats["nodes_draining"], 1);
    beats.abort();
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn publisher_keys_are_managed_by_admin_requests_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "an-admin-token-of-some-length";
    let config = TrackerConfig {
        admission: medley_tracker::AdmissionMode::Open,
        // No data plane to audit here: a node's word settles its slots.
        audit_interval_secs: 0,
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        publishers: vec![publisher().id().to_string()],
        admin_token: Some(token.into()),
        store: crate::support::store(dir.path()),
        ..TrackerConfig::default()
    };
    let t = Tracker::bind(config.clone()).await.unwrap();
    let http = reqwest::Client::new();
    let url = t.url();
    let other = PublisherKey::from_seed([9u8; 32]);
    let add = |auth: Option<&str>, key: String| {
        let mut r = http
            .post(format!("{url}/v1/publishers"))
            .json(&json!({ "key": key }));
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        r.send()
    };
    // Without the token, or with another: refused, nothing changes.
    for auth in [None, Some("not-the-token")] {
        let (status, code) = error_code(add(auth, other.id().to_string()).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    let r = http
        .post(format!("{url}/v1/nodes/{}/drain", "x".repeat(10)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await.0,
        StatusCode::UNAUTHORIZED,
        "drain is an admin request"
    );
    let r = http
        .get(format!("{url}/v1/layout/preview"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await.0,
        StatusCode::UNAUTHORIZED,
        "a layout preview is an admin request"
    );
    let r = http
        .get(format!("{url}/v1/publishers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed["publishers"], json!([publisher().id().to_string()]));
    let m = manifest("By Other", 70_000, 4, 2, &other);
    let r = post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    assert_eq!(error_code(r).await.1, "unknown_publisher");

    // With it: authorise, publish, revoke, refused again; a bad key is a 400.
    let r = add(Some(token), other.id().to_string()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (status, code) = error_code(add(Some(token), "zz".into()).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "bad_key")
    );
    let r = http
        .delete(format!("{url}/v1/publishers/{}", other.id()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["was_authorised"], true);
    let m2 = manifest("By Other Again", 70_000, 4, 2, &other);
    let r = post_body(&http, &format!("{url}/v1/publish"), m2.encoded().to_vec()).await;
    assert_eq!(error_code(r).await.1, "unknown_publisher");
    // The song it published stays; the revocation survives a restart.
    t.shutdown(Duration::from_secs(5)).await;
    let t = Tracker::bind(config).await.unwrap();
    let r = post_body(
        &http,
        &format!("{}/v1/publish", t.url()),
        m2.encoded().to_vec(),
    )
    .await;
    assert_eq!(error_code(r).await.1, "unknown_publisher");
    let song: Value = get_json(&http, &format!("{}/v1/songs/{}", t.url(), m.id())).await;
    assert_eq!(song["title"], "By Other");
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_client_over_the_rate_limit_is_told_to_wait_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::bind(TrackerConfig {
        admission: medley_tracker::AdmissionMode::Open,
        // No data plane to audit here: a node's word settles its slots.
        audit_interval_secs: 0,
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        rate_limit_per_sec: 5,
        rate_limit_burst: 5,
        store: crate::support::store(dir.path()),
        ..TrackerConfig::default()
    })
    .await
    .unwrap();
    let url = t.url();
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (flooder, other) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    let mut limited = 0;
    let mut retry_after = 0;
    for i in 0..30 {
        let r = flooder.get(format!("{url}/v1/stats")).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(error_code(r).await.1, "rate_limited");
            limited += 1;
        }
        // Meanwhile another client, within its own rate, is served.
        if i % 6 == 0 {
            let r = other.get(format!("{url}/v1/stats")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limited >= 15, "{limited} of 30 limited");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let r = flooder.get(format!("{url}/v1/stats")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "served again after waiting");
}

#[tokio::test]
async fn a_client_that_sends_its_body_too_slowly_is_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::bind(TrackerConfig {
        admission: medley_tracker::AdmissionMode::Open,
        // No data plane to audit here: a node's word settles its slots.
        audit_interval_secs: 0,
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        request_timeout_secs: 1,
        store: crate::support::store(dir.path()),
        ..TrackerConfig::default()
    })
    .await
    .unwrap();
    let url = t.url();
    let addr = url.trim_start_matches("http://");
    // Headers promise 100 bytes of body; none come.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        b"POST /v1/publish HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    // Meanwhile others are served.
    let r = reqwest::get(format!("{url}/v1/stats")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let stats: Value = get_json(&reqwest::Client::new(), &format!("{url}/v1/stats")).await;
    assert_eq!(stats["songs"], 0, "nothing was published");
}
