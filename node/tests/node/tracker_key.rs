//! A node trusts the tracker key it first learnt (or was given), pinned in its data
//! directory: a tracker that answers with another key later is refused, loudly, and its
//! grants with it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use medley_core::protocol::ErrorCode;
use medley_core::{ShardId, TrackerKey};
use medley_node::TRACKER_PIN_FILE;

use crate::support::{NodeProcess, bytes, client};

/// A stand-in tracker that takes registrations and heartbeats, answering with the key in
/// `key`; it answers nothing else (the node's other calls fail, as against a tracker that is
/// starting).
async fn fake_tracker(key: Arc<Mutex<TrackerKey>>) -> String {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/v1/nodes/register",
            post(move || {
                let id = key.lock().unwrap().id();
                async move {
                    axum::Json(medley_api::Registered {
                        layout_version: None,
                        tracker_key: id,
                        admission: medley_api::Admission::Admitted,
                        evicted: None,
                    })
                }
            }),
        )
        .route(
            "/v1/nodes/heartbeat",
            post(|| async { axum::http::StatusCode::NO_CONTENT }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_tracker_key_other_than_the_one_it_pinned() {
    let (a, b) = (
        TrackerKey::from_seed([1; 32]),
        TrackerKey::from_seed([2; 32]),
    );
    let key = Arc::new(Mutex::new(a.clone()));
    let tracker = fake_tracker(key.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--tracker", tracker.as_str()];
    let c = client().await;
    let put = |node: &NodeProcess, signer: &TrackerKey, data: Vec<u8>| {
        let grant = signer
            .grant(
                &node.peer_id.to_string(),
                vec![ShardId::of(&data)],
                medley_core::unix_now() + 600,
            )
            .unwrap();
        c.put_shard(node.peer_id, node.addrs.clone(), data, grant)
    };

    // First start: the node learns key A from its tracker and pins it.
    let node = NodeProcess::spawn(dir.path(), &args, false);
    let pin = dir.path().join(TRACKER_PIN_FILE);
    eventually("the node pins the tracker's key", async || {
        std::fs::read_to_string(&pin).ok()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&pin).unwrap().trim(),
        a.id().to_string()
    );
    put(&node, &a, bytes(1, 4096)).await.unwrap();
    drop(node);

    // Someone else answers in the tracker's place with key B.
    *key.lock().unwrap() = b.clone();
    let node = NodeProcess::spawn(dir.path(), &args, false);
    let status = eventually("the node reports the refused key", async || {
        let s = node.status().await;
        let pinned = s
            .tracker_error
            .as_ref()
            .is_some_and(|e| e.contains("pinned"));
        pinned.then_some(s)
    })
    .await;
    let error = status.tracker_error.unwrap();
    assert!(
        error.contains(&b.id().to_string()) && error.contains(&a.id().to_string()),
        "the error names both keys: {error}"
    );
    assert_eq!(status.tracker_last_ok_secs, None, "never registered with B");
    // Grants signed by B are refused; A's are still taken.
    let refused = put(&node, &b, bytes(2, 4096)).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::FORBIDDEN), "{refused}");
    put(&node, &a, bytes(3, 4096)).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&pin).unwrap().trim(),
        a.id().to_string()
    );
    drop(node);

    // A configured key that is not the pinned one stops the node at start, saying why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medley-node"))
        .arg("run")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--tracker-key"])
        .arg(b.id().to_string())
        .env("MEDLEY_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(TRACKER_PIN_FILE), "{stderr}");
}
