//! The `medley-tracker` binary: state survives kill -9.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medley_tracker::{TRACKER_INFO_FILE, TrackerInfo};
use serde_json::Value;

use crate::support::{get_bytes, get_json, manifest, post_body, publisher};

pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Proc, String) {
    start_with(dir, &[])
}

/// Starts `medley-tracker run` on `dir` (its config file there, if any) with `extra` flags;
/// its URL once it runs.
pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> (Proc, String) {
    start_with_env(dir, extra, &[])
}

/// [`start_with`] with `env` set for the process.
pub(crate) fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let _ = std::fs::remove_file(dir.join(TRACKER_INFO_FILE));
    // The suite's store, unless the caller names one; a restart keeps its database.
    let store = crate::support::store(dir);
    let store_args: Vec<&str> = match &store {
        Some(url) if !extra.contains(&"--store") => vec!["--store", url.as_str()],
        _ => Vec::new(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_medley-tracker"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--publisher",
            &publisher().id().to_string(),
        ])
        .args(extra)
        .args(&store_args)
        .arg("--data-dir")
        .arg(dir)
        .env("MEDLEY_LOG", "warn")
        .envs(env.iter().copied())
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
    for _ in 0..6 {
        let key = libp2p_identity::Keypair::generate_ed25519();
        let reg = medley_api::Registration {
            peer_id: key.public().to_peer_id().to_string(),
            addrs: vec!["/ip4/127.0.0.1/udp/1/quic-v1".into()],
            region: "r".into(),
            capacity: 1 << 40,
            join: None,
        };
        let node = medley_api::TrackerClient::builder(&url)
            .signer(key)
            .build()
            .unwrap();
        node.register(&reg).await.unwrap();
    }
    let layout: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    // SIGKILL right after the acknowledgements: no shutdown, no flush.
    drop(first);

    let (_second, url) = start(dir.path());
    let bytes = get_bytes(&http, &format!("{url}/v1/songs/{}/manifest", m.id())).await;
    assert_eq!(&bytes[..], m.encoded());
    let again: Value = get_json(&http, &format!("{url}/v1/layout")).await;
    assert_eq!(again, layout);
    let found: Value = get_json(&http, &format!("{url}/v1/search?q=kestrel")).await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["results"][0]["id"], m.id().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_bulk_loads_a_manifest_stream_and_refuses_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let key = publisher();
    let good: Vec<_> = (0..5)
        .map(|i| manifest(&format!("Imported Tune {i}"), 3000 + i, 4, 2, &key))
        .collect();
    let stranger = manifest(
        "Stranger Tune",
        3000,
        4,
        2,
        &medley_core::PublisherKey::from_seed([9; 32]),
    );
    let stream = dir.path().join("manifests.bin");
    let mut out = Vec::new();
    for m in good.iter().chain([&good[0], &stranger]) {
        medley_tracker::cli::write_stream_record(&mut out, m.encoded()).unwrap();
    }
    std::fs::write(&stream, &out).unwrap();
    let data = dir.path().join("data");
    let store = crate::support::store(&data);
    let import = |file: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_medley-tracker"));
        cmd.args(["import", "--batch", "3", "--publisher"])
            .arg(publisher().id().to_string())
            .arg("--data-dir")
            .arg(&data)
            .arg(file)
            .env("MEDLEY_LOG", "warn");
        if let Some(url) = &store {
            cmd.args(["--store", url]);
        }
        cmd.output().unwrap()
    };
    let run = import(&stream);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "a refused manifest fails the import");
    assert!(
        stderr.contains("manifest 6") && stderr.contains("not authorised"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("imported 5 new songs (1 already there, 1 refused)"),
        "{stdout}"
    );

    // A truncated stream is an error naming the record; what came before it is kept.
    let cut = dir.path().join("cut.bin");
    let mut one = Vec::new();
    medley_tracker::cli::write_stream_record(&mut one, good[1].encoded()).unwrap();
    std::fs::write(&cut, &one[..one.len() - 10]).unwrap();
    let run = import(&cut);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("ends inside a manifest"));

    let (_proc, url) = start(&data);
    let http = reqwest::Client::new();
    let stats = get_json(&http, &format!("{url}/v1/stats")).await;
    assert_eq!(stats["songs"], 5);
    let found = get_json(&http, &format!("{url}/v1/search?q=imported+tune&limit=100")).await;
    assert_eq!(found["total"], 5);
    let id = good[3].id().to_string();
    let m = get_bytes(&http, &format!("{url}/v1/songs/{id}/manifest")).await;
    assert_eq!(&m[..], good[3].encoded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_config_that_run_uses_and_the_environment_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tracker");
    let d = dir.to_str().unwrap().to_string();
    let tracker = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_medley-tracker"));
        cmd.args(args).env("MEDLEY_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run medley-tracker")
    };
    let key = publisher().id().to_string();
    let init = [
        "init",
        "--data-dir",
        &d,
        "--listen",
        "127.0.0.1:0",
        "--publisher",
        &key,
        "--k",
        "10",
        "--m",
        "4",
    ];
    let out = tracker(&init, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("medley-tracker.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("# Environment: MEDLEY_NODE_GRACE_SECS\nnode_grace_secs = 30"),
        "{text}"
    );
    let again = tracker(&init, &[]);
    assert!(!again.status.success(), "a second init refuses");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    let shown = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["config", "--data-dir", &d];
        args.extend_from_slice(extra);
        let out = tracker(&args, env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        toml::from_str::<toml::Table>(&String::from_utf8_lossy(&out.stdout)).unwrap()
    };
    assert_eq!(shown(&[], &[])["node_grace_secs"].as_integer(), Some(30));
    let env = [
        ("MEDLEY_NODE_GRACE_SECS", "7"),
        ("MEDLEY_LISTEN", "127.0.0.1:4999"),
    ];
    let c = shown(&env, &[]);
    assert_eq!(c["node_grace_secs"].as_integer(), Some(7));
    assert_eq!(c["listen"].as_str(), Some("127.0.0.1:4999"));
    let c = shown(&env, &["--listen", "127.0.0.1:4998"]);
    assert_eq!(
        c["listen"].as_str(),
        Some("127.0.0.1:4998"),
        "a flag wins over the environment"
    );
    let bad = tracker(&["config", "--data-dir", &d], &[("MEDLEY_K", "ten")]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("MEDLEY_K"));

    // run reads what init wrote: the coding and the publisher.
    let _ = std::fs::remove_file(dir.join(TRACKER_INFO_FILE));
    let child = Command::new(env!("CARGO_BIN_EXE_medley-tracker"))
        .args(["run", "--data-dir", &d])
        .env("MEDLEY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _proc = Proc(child);
    let info: TrackerInfo =
        medley_daemon::wait_for_json_file(&dir.join(TRACKER_INFO_FILE), Duration::from_secs(60))
            .expect("tracker started from the init'd folder");
    let http = reqwest::Client::new();
    let stats = get_json(&http, &format!("{}/v1/stats", info.url)).await;
    assert_eq!(
        (stats["k"].as_u64(), stats["m"].as_u64()),
        (Some(10), Some(4))
    );
    let m = manifest("From Init", 70_000, 10, 4, &publisher());
    let r = post_body(
        &http,
        &format!("{}/v1/publish", info.url),
        m.encoded().to_vec(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 201, "the init'd publisher may publish");

    // status reads the running tracker.
    let out = tracker(&["status", "--data-dir", &d, "--json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((s["songs"].as_u64(), s["k"].as_u64()), (Some(1), Some(10)));
    let out = tracker(&["status", "--data-dir", &d], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("songs     1") && text.contains("layout    none yet"),
        "{text}"
    );
}
