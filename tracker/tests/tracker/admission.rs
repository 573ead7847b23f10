//! Who may hold data: join tokens, approvals, revocations, the regions list, what a node's
//! claimed capacity counts for, and how fast the layout may move slots that hold data.

use std::time::Duration;

use medley_api::{Admission, InviteRequest, TrackerClient};
use medley_tracker::{AdmissionMode, Tracker, TrackerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{get_json, manifest, post_body, publisher};

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

async fn tracker(dir: &std::path::Path, admission: AdmissionMode, grace: u64) -> Tracker {
    Tracker::bind(TrackerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        publishers: vec![publisher().id().to_string()],
        require_signatures: false,
        rate_limit_per_sec: 0,
        regions: REGIONS.map(String::from).to_vec(),
        admission,
        node_grace_secs: grace,
        // No data plane to audit here: a node's word settles its slots.
        audit_interval_secs: 0,
        store: crate::support::store(dir),
        ..TrackerConfig::default()
    })
    .await
    .unwrap()
}

fn registration(i: usize, region: &str, capacity: u64, join: Option<&str>) -> Value {
    json!({
        "peer_id": format!("node-{i}"),
        "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 6000 + i)],
        "region": region,
        "capacity": capacity,
        "join": join,
    })
}

async fn register(http: &reqwest::Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let r = http
        .post(format!("{url}/v1/nodes/register"))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// Every node id on some slot of the current layout.
async fn placed(http: &reqwest::Client, url: &str) -> std::collections::HashSet<String> {
    let l = get_json(http, &format!("{url}/v1/layout")).await;
    l["partitions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .flat_map(|p| p.as_array().unwrap().iter())
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn strangers_wait_pending_and_a_token_admits_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), AdmissionMode::Invite, 30).await;
    let (http, url) = (reqwest::Client::new(), t.url());
    let admin = TrackerClient::new(&t.admin_url()).unwrap();

    // Six strangers claiming an exabyte each: registered, pending, never placed.
    for i in 0..6 {
        let (s, r) = register(&http, &url, &registration(i, REGIONS[i % 3], 1 << 60, None)).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["admission"], "pending", "{r}");
        assert_eq!(r["layout_version"], Value::Null);
    }
    let r = http.get(format!("{url}/v1/layout")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no layout of strangers"
    );
    let nodes = admin.nodes().await.unwrap();
    assert_eq!(nodes.len(), 6);
    assert!(
        nodes
            .iter()
            .all(|n| n.node.admission == Admission::Pending && n.weight == 0)
    );
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("medley_tracker_nodes_pending 6")
    );

    // A region the tracker does not list is refused outright.
    let (s, r) = register(&http, &url, &registration(9, "mars", 1 << 40, None)).await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_region"))
    );

    // Tokens admit: one per node, each in its region.
    let mut tokens = Vec::new();
    for i in 0..6 {
        let req = InviteRequest {
            region: Some(REGIONS[i % 3].into()),
            capacity: None,
            expires_secs: None,
        };
        tokens.push(admin.invite(&req, None).await.unwrap().token);
    }
    for (i, token) in tokens.iter().enumerate() {
        let (s, r) = register(
            &http,
            &url,
            &registration(i, REGIONS[i % 3], 1 << 40, Some(token)),
        )
        .await;
        assert_eq!(
            (s, r["admission"].as_str()),
            (StatusCode::OK, Some("admitted")),
            "{r}"
        );
    }
    let on_slots = placed(&http, &url).await;
    assert_eq!(on_slots.len(), 6, "the six admitted nodes hold the slots");
    // Showing the same token again changes nothing for its node.
    let (s, r) = register(
        &http,
        &url,
        &registration(0, "eu", 1 << 40, Some(&tokens[0])),
    )
    .await;
    assert_eq!(
        (s, r["admission"].as_str()),
        (StatusCode::OK, Some("admitted"))
    );

    // What a token does not admit, each with a clear refusal and nothing registered.
    let other = tempfile::tempdir().unwrap();
    let t2 = tracker(other.path(), AdmissionMode::Invite, 30).await;
    let foreign = TrackerClient::new(&t2.admin_url())
        .unwrap()
        .invite(&InviteRequest::default(), None)
        .await
        .unwrap()
        .token;
    let short = admin
        .invite(
            &InviteRequest {
                expires_secs: Some(1),
                ..InviteRequest::default()
            },
            None,
        )
        .await
        .unwrap()
        .token;
    let eu_only = admin
        .invite(
            &InviteRequest {
                region: Some("eu".into()),
                ..InviteRequest::default()
            },
            None,
        )
        .await
        .unwrap()
        .token;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (i, region, token, why) in [
        (10, "eu", tokens[1].as_str(), "used by node-1"),
        (11, "eu", foreign.as_str(), "not signed by this tracker"),
        (12, "eu", short.as_str(), "expired"),
        (13, "us", eu_only.as_str(), "not region us"),
        (14, "eu", "medley-join-0123", "malformed"),
    ] {
        let (s, r) = register(&http, &url, &registration(i, region, 1 << 40, Some(token))).await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("bad_invite")),
            "{why}: {r}"
        );
    }
    let listed: Vec<String> = admin
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node.peer_id)
        .collect();
    for i in 10..15 {
        let id = format!("node-{i}");
        assert!(!listed.contains(&id), "refused {id} left nothing behind");
    }
    // A token that fixes no region admits a node of any configured region, once.
    let any = admin
        .invite(&InviteRequest::default(), None)
        .await
        .unwrap()
        .token;
    let (_, r) = register(&http, &url, &registration(20, "ap", 1 << 40, Some(&any))).await;
    assert_eq!(r["admission"], "admitted");
    let (_, r) = register(&http, &url, &registration(21, "ap", 1 << 40, Some(&any))).await;
    assert_eq!(r["error"]["code"], "bad_invite");

    // Approval admits a pending node (with a cap); revocation takes one out.
    let (_, r) = register(&http, &url, &registration(30, "us", 1 << 60, None)).await;
    assert_eq!(r["admission"], "pending");
    admin.approve("node-30", Some(1 << 30), None).await.unwrap();
    let n30 = admin
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.node.peer_id == "node-30")
        .unwrap();
    assert_eq!(n30.node.admission, Admission::Admitted);
    assert_eq!(n30.weight, 1 << 30, "capped by the approval");
    assert!(placed(&http, &url).await.contains("node-30"));
    admin.revoke("node-30", None).await.unwrap();
    assert!(!placed(&http, &url).await.contains("node-30"));
    let (_, r) = register(&http, &url, &registration(30, "us", 1 << 60, None)).await;
    assert_eq!(
        r["admission"], "revoked",
        "a revoked node stays out when it comes back"
    );
    // Tokens and approvals are admin requests: not over HTTP without the token.
    let r = http
        .post(format!("{url}/v1/nodes/invites"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    t2.shutdown(Duration::from_secs(5)).await;
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pending_registrations_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), AdmissionMode::Invite, 30).await;
    let (http, url) = (reqwest::Client::new(), t.url());
    let cap = medley_tracker::MAX_PENDING;
    let regs = futures::stream::iter(0..cap).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            register(&http, &url, &registration(i, "eu", 1, None))
                .await
                .0
        }
    });
    use futures::StreamExt as _;
    let statuses: Vec<StatusCode> = regs.buffer_unordered(16).collect().await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let (s, r) = register(&http, &url, &registration(cap, "eu", 1, None)).await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("busy"))
    );
    // A known pending node may still register again.
    let (s, _) = register(&http, &url, &registration(0, "eu", 1, None)).await;
    assert_eq!(s, StatusCode::OK);
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_exabyte_claim_counts_as_a_median_node() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), AdmissionMode::Open, 30).await;
    let (http, url) = (reqwest::Client::new(), t.url());
    // Six honest nodes of 1 TiB, six that claim an exabyte, in the same regions.
    for i in 0..12 {
        let capacity: u64 = if i < 6 { 1 << 40 } else { 1 << 60 };
        let (s, r) = register(
            &http,
            &url,
            &registration(i, REGIONS[i % 3], capacity, None),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{r}");
    }
    let nodes = TrackerClient::new(&url).unwrap().nodes().await.unwrap();
    for n in &nodes {
        assert_eq!(
            n.weight,
            1 << 40,
            "{} weighs like a median node",
            n.node.peer_id
        );
    }
    let l = get_json(&http, &format!("{url}/v1/layout")).await;
    let (mut theirs, mut all) = (0usize, 0usize);
    for p in l["partitions"].as_array().unwrap() {
        for n in p.as_array().unwrap() {
            let i: usize = n.as_str().unwrap()["node-".len()..].parse().unwrap();
            all += 1;
            theirs += usize::from(i >= 6);
        }
    }
    let share = theirs as f64 / all as f64;
    assert!(
        (0.35..0.65).contains(&share),
        "the exabyte claims hold {share:.2} of the slots, as many nodes as they are"
    );
    t.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn slots_holding_data_move_one_per_partition_as_they_settle() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path(), AdmissionMode::Open, 2).await;
    let (http, url) = (reqwest::Client::new(), t.url());
    for i in 0..6 {
        register(&http, &url, &registration(i, REGIONS[i % 3], 1 << 40, None)).await;
    }
    // A song whose segments lie in a few partitions.
    let m = manifest("Settled", 2_000_000, 4, 2, &publisher());
    post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    let data: std::collections::HashSet<usize> = m
        .body()
        .segments
        .iter()
        .map(|s| usize::from(medley_core::partition_of(&s.id, 256)))
        .collect();
    // Each node says which version it holds every shard of; `reported` is shared with the
    // heartbeat task.
    let reported = std::sync::Arc::new(parking_lot::Mutex::new(vec![Some(1u64); 8]));
    let live = std::sync::Arc::new(parking_lot::Mutex::new(vec![true; 8]));
    let beats = {
        let (http, url, reported, live) =
            (http.clone(), url.clone(), reported.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                for i in 0..8 {
                    if !live.lock()[i] {
                        continue;
                    }
                    let v = reported.lock()[i];
                    let _ = http
                        .post(format!("{url}/v1/nodes/heartbeat"))
                        .json(&json!({"peer_id": format!("node-{i}"), "free": 1,
                            "bytes_per_sec": 0, "transfers": 0, "repaired_version": v}))
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let layout = |v: u64| {
        let (http, url) = (http.clone(), url.clone());
        async move { get_json(&http, &format!("{url}/v1/layout?version={v}")).await }
    };
    let stats = || {
        let (http, url) = (http.clone(), url.clone());
        async move { get_json(&http, &format!("{url}/v1/stats")).await }
    };
    let moved_in_data = |a: &Value, b: &Value| -> usize {
        data.iter()
            .map(|&p| {
                let (x, y) = (&a["partitions"][p], &b["partitions"][p]);
                (0..6).filter(|&s| x[s] != y[s]).count()
            })
            .max()
            .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stats().await["layout_version"], 1);

    // Two newcomers: slots of empty partitions move at once, those holding data one per
    // partition, and no further while the moved one is not settled.
    for i in 6..8 {
        let (_, r) = register(&http, &url, &registration(i, REGIONS[i % 3], 1 << 40, None)).await;
        assert!(r["layout_version"].as_u64().is_some());
        reported.lock()[i] = None;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = stats().await;
    let v = s["layout_version"].as_u64().unwrap();
    assert_eq!(
        s["layout_oldest"], 1,
        "version 1 is kept while slots moved from it settle"
    );
    for w in 2..=v {
        let moved = moved_in_data(&layout(w - 1).await, &layout(w).await);
        assert!(
            moved <= 1,
            "version {w} moved {moved} slots of a partition holding data"
        );
    }
    let stuck = v;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        stats().await["layout_version"],
        stuck,
        "nothing moves until slots settle"
    );

    // As nodes report their slots repaired, the change goes on, version by version, and
    // versions nobody needs any more are pruned.
    let settle = |to: u64| {
        for r in reported.lock().iter_mut() {
            *r = Some(to);
        }
    };
    let start = std::time::Instant::now();
    let mut seen = stuck;
    loop {
        let s = stats().await;
        let v = s["layout_version"].as_u64().unwrap();
        for w in seen + 1..=v {
            let (a, b) = (layout(w - 1).await, layout(w).await);
            if a["version"].is_u64() && b["version"].is_u64() {
                assert!(moved_in_data(&a, &b) <= 1, "version {w}");
            }
        }
        seen = v;
        settle(v);
        if s["layout_oldest"] == s["layout_version"] && v > stuck {
            // Settled: every version before is gone.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let s = stats().await;
            if s["layout_version"].as_u64() == Some(v) {
                let r = http
                    .get(format!("{url}/v1/layout?version=1"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::NOT_FOUND, "version 1 was pruned");
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never settled: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let final_layout = get_json(&http, &format!("{url}/v1/layout")).await;
    assert!(placed(&http, &url).await.contains("node-7"));

    // A node that goes down leaves every slot at once, data or not.
    live.lock()[0] = false;
    let start = std::time::Instant::now();
    loop {
        if !placed(&http, &url).await.contains("node-0") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "node-0 still placed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = get_json(&http, &format!("{url}/v1/layout")).await;
    assert_eq!(
        after["version"].as_u64().unwrap(),
        final_layout["version"].as_u64().unwrap() + 1,
        "in one version"
    );
    beats.abort();
    t.shutdown(Duration::from_secs(5)).await;
}
