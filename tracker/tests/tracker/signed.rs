//! Node and listener requests signed with their peer keys; liars banned by distinct
//! reporters.

use libp2p_identity::Keypair;
use medley_api::signed::{PEER_HEADER, SIGNATURE_HEADER, TIME_HEADER, sign_request};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{get_json, manifest, post_body, publisher, start_signed};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A JSON POST of `body` to `base` + `path`, signed by `key` at `time_ms`.
fn signed(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    key: &Keypair,
    body: &Value,
    time_ms: u64,
) -> reqwest::RequestBuilder {
    signed_as(http, base, path, path, key, None, body, time_ms)
}

/// As [`signed`], but the signature covers `signed_path`, and `peer` (if given) is sent as
/// the signer instead of `key`'s peer id.
#[allow(clippy::too_many_arguments)]
fn signed_as(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    signed_path: &str,
    key: &Keypair,
    peer: Option<&str>,
    body: &Value,
    time_ms: u64,
) -> reqwest::RequestBuilder {
    let bytes = serde_json::to_vec(body).unwrap();
    let sig = sign_request(key, "POST", signed_path, &bytes, time_ms);
    http.post(format!("{base}{path}"))
        .header(PEER_HEADER, peer.map_or(sig.peer, str::to_string))
        .header(TIME_HEADER, sig.time_ms.to_string())
        .header(SIGNATURE_HEADER, sig.signature)
        .header("content-type", "application/json")
        .body(bytes)
}

async fn outcome(r: reqwest::RequestBuilder) -> (StatusCode, String) {
    let r = r.send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

fn id(key: &Keypair) -> String {
    key.public().to_peer_id().to_string()
}

fn registration(key: &Keypair, i: usize) -> Value {
    json!({
        "peer_id": id(key),
        "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 6000 + i)],
        "region": "r",
        "capacity": 1u64 << 40,
    })
}

#[tokio::test]
async fn unsigned_forged_stale_and_replayed_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_signed(dir.path()).await;
    let (http, url) = (reqwest::Client::new(), t.url());
    let (node, other) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let reg = registration(&node, 0);
    let path = "/v1/nodes/register";

    let refused = [
        (
            "unsigned",
            http.post(format!("{url}{path}")).json(&reg),
            StatusCode::UNAUTHORIZED,
            "unsigned",
        ),
        (
            "signed by another peer",
            signed(&http, &url, path, &other, &reg, now_ms()),
            StatusCode::FORBIDDEN,
            "wrong_signer",
        ),
        (
            "ten minutes old",
            signed(&http, &url, path, &node, &reg, now_ms() - 600_000),
            StatusCode::UNAUTHORIZED,
            "stale_request",
        ),
        (
            "signed for another path",
            signed_as(
                &http,
                &url,
                path,
                "/v1/nodes/leave",
                &node,
                None,
                &reg,
                now_ms(),
            ),
            StatusCode::UNAUTHORIZED,
            "bad_request_signature",
        ),
        (
            "a peer id that embeds no key",
            signed_as(
                &http,
                &url,
                path,
                path,
                &node,
                Some("node-0"),
                &reg,
                now_ms(),
            ),
            StatusCode::UNAUTHORIZED,
            "bad_request_signature",
        ),
    ];
    for (what, req, status, code) in refused {
        assert_eq!(outcome(req).await, (status, code.to_string()), "{what}");
    }
    let nodes: Value = get_json(&http, &format!("{url}/v1/nodes")).await;
    assert_eq!(nodes["nodes"], json!([]), "nothing registered");

    // The signed registration is taken, and answered with the tracker's grant key.
    let time = now_ms();
    let r = signed(&http, &url, path, &node, &reg, time)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.unwrap();
    let stats: Value = get_json(&http, &format!("{url}/v1/stats")).await;
    assert_eq!(answer["tracker_key"], stats["tracker_key"]);
    // The same signed request again is a replay.
    assert_eq!(
        outcome(signed(&http, &url, path, &node, &reg, time)).await,
        (StatusCode::CONFLICT, "replayed".to_string())
    );
    // So is the same signature written in upper-case hex (it verifies all the same).
    let bytes = serde_json::to_vec(&reg).unwrap();
    let sig = sign_request(&node, "POST", path, &bytes, time);
    let upper = http
        .post(format!("{url}{path}"))
        .header(PEER_HEADER, sig.peer)
        .header(TIME_HEADER, sig.time_ms.to_string())
        .header(SIGNATURE_HEADER, sig.signature.to_uppercase())
        .header("content-type", "application/json")
        .body(bytes);
    assert_eq!(
        outcome(upper).await,
        (StatusCode::CONFLICT, "replayed".to_string())
    );
    // Nobody else can mark the node stopped.
    let leave = json!({ "peer_id": id(&node) });
    assert_eq!(
        outcome(signed(
            &http,
            &url,
            "/v1/nodes/leave",
            &other,
            &leave,
            now_ms()
        ))
        .await,
        (StatusCode::FORBIDDEN, "wrong_signer".to_string())
    );
    let nodes: Value = get_json(&http, &format!("{url}/v1/nodes")).await;
    assert_eq!(nodes["nodes"][0]["alive"], true);
    assert_eq!(nodes["nodes"][0]["node"]["stopped"], false);
    assert_eq!(
        outcome(signed(
            &http,
            &url,
            "/v1/nodes/leave",
            &node,
            &leave,
            now_ms()
        ))
        .await,
        (StatusCode::NO_CONTENT, String::new())
    );
    let nodes: Value = get_json(&http, &format!("{url}/v1/nodes")).await;
    assert_eq!(nodes["nodes"][0]["node"]["stopped"], true);
}

#[tokio::test]
async fn sources_reported_lying_by_two_listeners_are_banned() {
    let dir = tempfile::tempdir().unwrap();
    // Every signed report weighs fully here: how reports of fresh keys weigh nothing is the
    // test of hostile.rs.
    let t = medley_tracker::Tracker::bind(medley_tracker::TrackerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        publishers: vec![publisher().id().to_string()],
        report_trust_secs: 0,
        admission: medley_tracker::AdmissionMode::Open,
        // No data plane to audit here: a node's word settles its slots.
        audit_interval_secs: 0,
        store: crate::support::store(dir.path()),
        ..medley_tracker::TrackerConfig::default()
    })
    .await
    .unwrap();
    let (http, url) = (reqwest::Client::new(), t.url());
    let nodes: Vec<Keypair> = (0..6).map(|_| Keypair::generate_ed25519()).collect();
    for (i, n) in nodes.iter().enumerate() {
        let r = signed(
            &http,
            &url,
            "/v1/nodes/register",
            n,
            &registration(n, i),
            now_ms(),
        );
        assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
    }
    // What nodes act on comes signed by the tracker's key.
    let stats: Value = get_json(&http, &format!("{url}/v1/stats")).await;
    let key: medley_core::TrackerId = stats["tracker_key"].as_str().unwrap().parse().unwrap();
    for path in [
        "/v1/layout".to_string(),
        "/v1/layout?version=1".to_string(),
        "/v1/partitions/3/segments?limit=5".to_string(),
        format!("/v1/nodes/{}/hot", id(&nodes[2])),
    ] {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let time: u64 = r.headers()[medley_api::signed::ANSWER_TIME_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(time.abs_diff(now_ms()) < 60_000);
        let sig = hex::decode(r.headers()[medley_api::signed::ANSWER_SIGNATURE_HEADER].as_bytes())
            .unwrap();
        let body = r.bytes().await.unwrap();
        let signed = medley_api::signed::signed_answer(&path, time, &body);
        assert_eq!(key.verify_statement(&signed, &sig), Ok(()), "{path}");
        let elsewhere = medley_api::signed::signed_answer("/v1/layout?version=2", time, &body);
        assert!(
            key.verify_statement(&elsewhere, &sig).is_err(),
            "{path}: bound to its path"
        );
    }

    let m = manifest("Reported", 100_000, 4, 2, &publisher());
    post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    let liar_node = id(&nodes[0]);
    let peer = Keypair::generate_ed25519();
    let announce = json!({
        "peer_id": id(&peer),
        "addrs": ["/ip4/127.0.0.1/udp/7000/quic-v1"],
        "region": "r",
        "songs": [m.id().to_string()],
    });
    let r = signed(
        &http,
        &url,
        "/v1/peers/announce",
        &peer,
        &announce,
        now_ms(),
    );
    assert_eq!(r.send().await.unwrap().status(), StatusCode::NO_CONTENT);

    let sources = || async { get_json(&http, &format!("{url}/v1/songs/{}/sources", m.id())).await };
    let node_slots = |src: &Value| -> Vec<(bool, bool)> {
        src["segments"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["shards"].as_array().unwrap().clone())
            .filter(|s| s["peer_id"] == liar_node.as_str())
            .map(|s| {
                (
                    s["alive"].as_bool().unwrap(),
                    s["banned"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let before = sources().await;
    assert_eq!(before["whole"][0]["peer_id"], id(&peer).as_str());
    assert!(
        !node_slots(&before).is_empty(),
        "the node holds slots of the song"
    );
    assert!(node_slots(&before).iter().all(|s| *s == (true, false)));

    let (alice, bob) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let report = |source: &str| json!({ "peer_id": source, "song": m.id().to_string(), "reason": "bad_hash" });
    // Unsigned reports are refused; the source itself and one listener twice do not ban.
    assert_eq!(
        outcome(
            http.post(format!("{url}/v1/reports"))
                .json(&report(&liar_node))
        )
        .await
        .1,
        "unsigned"
    );
    for (who, source) in [
        (&nodes[0], &liar_node),
        (&alice, &liar_node),
        (&alice, &liar_node),
    ] {
        // Signatures are deterministic: the same report in the same millisecond is a replay.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        let r = signed(&http, &url, "/v1/reports", who, &report(source), now_ms());
        assert_eq!(r.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    }
    let r = signed(
        &http,
        &url,
        "/v1/reports",
        &alice,
        &report(&id(&peer)),
        now_ms(),
    );
    assert_eq!(r.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let mid = sources().await;
    assert!(
        node_slots(&mid).iter().all(|s| *s == (true, false)),
        "not banned yet"
    );
    assert_eq!(
        mid["whole"].as_array().unwrap().len(),
        1,
        "ranked last, still listed"
    );

    // A second listener: both are banned.
    for source in [&liar_node, &id(&peer)] {
        let r = signed(&http, &url, "/v1/reports", &bob, &report(source), now_ms());
        assert_eq!(r.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    }
    let after = sources().await;
    assert!(
        node_slots(&after).iter().all(|s| *s == (false, true)),
        "{after}"
    );
    assert_eq!(
        after["whole"],
        json!([]),
        "the lying peer is no longer offered"
    );
    let listed: Value = get_json(&http, &format!("{url}/v1/nodes")).await;
    for n in listed["nodes"].as_array().unwrap() {
        assert_eq!(
            n["banned"],
            n["node"]["peer_id"] == liar_node.as_str(),
            "{n}"
        );
    }
}
