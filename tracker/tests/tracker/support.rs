use std::path::Path;

use medley_core::{Manifest, PublisherKey, SongMeta};
use medley_tracker::{AdmissionMode, Tracker, TrackerConfig};

pub(crate) fn publisher() -> PublisherKey {
    PublisherKey::from_seed([42u8; 32])
}

/// The store a tracker on `dir` uses in this suite: the embedded RocksDB, or with
/// `MEDLEY_TEST_STORE=postgres` a database of its own on the suite's private PostgreSQL
/// cluster, the same each time the tracker on `dir` starts (`scripts/test.sh` runs the
/// suite both ways).
pub(crate) fn store(dir: &Path) -> Option<String> {
    if std::env::var("MEDLEY_TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    let marker = dir.join("test-store");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return Some(url);
    }
    let url = medley_daemon::pgcluster::test_database().expect("a PostgreSQL test database");
    std::fs::create_dir_all(dir).expect("the tracker's folder");
    std::fs::write(&marker, &url).expect("note the test database");
    Some(url)
}

/// A tracker for tests that name their nodes `node-0`, `node-1`, ... and post unsigned, and
/// make admin requests over HTTP without a token (`insecure_dev_admin`); signed requests
/// are tested with `start_signed`, admin tokens with a tracker of their own.
pub(crate) async fn start(dir: &Path) -> Tracker {
    Tracker::bind(config(dir)).await.unwrap()
}

/// [`start`]'s configuration.
pub(crate) fn config(dir: &Path) -> TrackerConfig {
    TrackerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        publishers: vec![publisher().id().to_string()],
        max_body_bytes: 64 * 1024,
        require_signatures: false,
        rate_limit_per_sec: 0,
        insecure_dev_admin: true,
        // Every node that registers is placed; admission has tests of its own.
        admission: AdmissionMode::Open,
        // No data plane to audit here: a node's word settles its slots.
        audit_interval_secs: 0,
        store: store(dir),
        ..TrackerConfig::default()
    }
}

/// A tracker as deployed, but for admission: node and listener requests must be signed.
pub(crate) async fn start_signed(dir: &Path) -> Tracker {
    Tracker::bind(TrackerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        publishers: vec![publisher().id().to_string()],
        admission: AdmissionMode::Open,
        // No data plane to audit here: a node's word settles its slots.
        audit_interval_secs: 0,
        store: store(dir),
        ..TrackerConfig::default()
    })
    .await
    .unwrap()
}

/// A consistent manifest for `len` bytes of synthetic audio, signed by `key`.
pub(crate) fn manifest(title: &str, len: usize, k: u8, m: u8, key: &PublisherKey) -> Manifest {
    let meta = SongMeta {
        title: title.into(),
        artist: Some("The Velvet Foxes".into()),
        album: Some("Paper Harbor".into()),
        genre: Some("Indie".into()),
        year: Some(2019),
        track: Some(3),
        duration_ms: Some(200_000),
        codec: "flac".into(),
        mime: "audio/flac".into(),
        bitrate: Some(800_000),
    };
    manifest_for(meta, len, k, m, key)
}

/// A consistent manifest with the given metadata.
pub(crate) fn manifest_for(
    meta: SongMeta,
    len: usize,
    k: u8,
    m: u8,
    key: &PublisherKey,
) -> Manifest {
    let salt = meta.title.len() + meta.artist.as_ref().map_or(0, String::len) * 31;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + salt) as u8).collect();
    let body = medley_core::test_utils::body_for(meta, &data, 64 * 1024, k, m, key.id());
    Manifest::sign(body, key).unwrap()
}

/// GET `url` and return the body's bytes, whatever the status.
pub(crate) async fn get_bytes(http: &reqwest::Client, url: &str) -> Vec<u8> {
    http.get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// GET `url` and parse the JSON body, whatever the status.
pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// POST `body` as JSON to `url` and parse the JSON answer, whatever the status.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    http.post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POST raw bytes to `url`.
pub(crate) async fn post_body(
    http: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    http.post(url).body(body).send().await.unwrap()
}

/// The registration of test node `node-{i}`: in `region-{i % 3}`, 1 TiB.
pub(crate) fn registration(i: usize) -> serde_json::Value {
    serde_json::json!({
        "peer_id": format!("node-{i}"),
        "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 5000 + i)],
        "region": format!("region-{}", i % 3),
        "capacity": 1u64 << 40,
    })
}
