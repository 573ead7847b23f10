//! The `medley-tracker` binary: state survives kill -9.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medley_tracker::{TRACKER_INFO_FILE, TrackerInfo};
use serde_json::{Value, json};

use crate::support::{get_json, manifest, post_body, publisher};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Proc, String) {
    let _ = std::fs::remove_file(dir.join(TRACKER_INFO_FILE));
    let child = Command::new(env!("CARGO_BIN_EXE_medley-tracker"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--publisher",
            &publisher().id().to_string(),
            "--data-dir",
        ])
        .arg(dir)
        .env("MEDLEY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start medley-tracker");
    let info: TrackerInfo =
        medley_daemon::wait_for_json_file(&dir.join(TRACKER_INFO_FILE), Duration::from_secs(60))
            .expect("tracker did not start");
    (Proc(child), info.url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (first, url) = start(dir.path());
    let m = manifest("Kestrel Litany", 90_000, 4, 2, &publisher());
    let r = post_body(&http, &format!("{url}/v1/publish"), m.encoded().to_vec()).await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    for i in 0..6 {
        let reg = json!({"peer_id": format!("node-{i}"), "addrs": ["/ip4/127.0.0.1/udp/1/quic-v1"], "region": "r", "capacity": 1u64 << 40});
        assert!(
            http.post(format!("{url}/v1/nodes/register"))
                .json(&reg)
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }
    let layout: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    // SIGKILL right after the acknowledgements: no shutdown, no flush.
    drop(first);

    let (_second, url) = start(dir.path());
    let bytes = http
        .get(format!("{url}/v1/songs/{}/manifest", m.id()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], m.encoded());
    let again: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    assert_eq!(again, layout);
    let found: Value = get_json(&http, &format!("{url}/v1/search?q=kestrel")).await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["results"][0]["id"], m.id().to_string());
}
