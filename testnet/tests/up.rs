//! `medley-testnet up`: prints the tracker URL and working `export` lines, keeps the network
//! running, and on Ctrl-C stops every process and removes its temporary data.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn up_prints_exports_that_work_and_cleans_up_on_ctrl_c() {
    let bins = medley_testnet::bin_dir();
    let mut child = Command::new(bins.join("medley-testnet"))
        .args(["up", "--nodes", "6", "--regions", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start medley-testnet up");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut tracker, mut client_dir, mut data_dir) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("export MEDLEY_TRACKER=") {
            tracker = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("export MEDLEY_CLIENT_DIR=") {
            client_dir = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data and logs under ") {
            data_dir = Some(std::path::PathBuf::from(v));
        } else if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let (tracker, client_dir, data_dir) =
        (tracker.unwrap(), client_dir.unwrap(), data_dir.unwrap());
    assert!(tracker.starts_with("http://127.0.0.1:"), "{tracker}");
    assert!(data_dir.exists());

    // The printed environment lets `medley` publish (the key is authorised) and search.
    let lib = tempfile::tempdir().unwrap();
    let song = lib.path().join("Quiet Lantern.flac");
    medley_synth::write_flac(&song, &medley_synth::Tune::new(3, 2.0), None).unwrap();
    let medley = |args: &[&str]| {
        Command::new(bins.join("medley"))
            .args(args)
            .env("MEDLEY_TRACKER", &tracker)
            .env("MEDLEY_CLIENT_DIR", &client_dir)
            .output()
            .unwrap()
    };
    let out = medley(&["publish", song.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = medley(&["search", "quiet", "lant", "--json"]);
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["title"], "Quiet Lantern");

    // Ctrl-C: everything stops, the temporary folder goes.
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "up did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(
        !data_dir.exists(),
        "temporary data was left at {}",
        data_dir.display()
    );
    let out = medley(&["search", "quiet"]);
    assert!(!out.status.success(), "the tracker is gone");
}
