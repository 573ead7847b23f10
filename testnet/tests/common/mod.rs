//! Helpers shared by the testnet's end-to-end tests: run the real `medley` binary and check
//! what it did.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output as ProcOutput};

use medley_client::{Output, PlayOutcome, decode_to_wav};
use medley_testnet::Testnet;
use serde::Deserialize;

pub(crate) fn ok(cmd: &mut Command) -> ProcOutput {
    let out = cmd.output().expect("run medley");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Plays `id` as a listener `name` of eu-west with no cache, into `wav`.
pub(crate) fn play_as(net: &Testnet, name: &str, id: &str, wav: &Path) -> PlayOutcome {
    let out = ok(net
        .listener("eu-west", name, bytesize::ByteSize::b(0))
        .args(["play", id, "--json", "--out"])
        .arg(wav));
    serde_json::from_slice(&out.stdout).expect("play --json")
}

pub(crate) fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run medley");
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[derive(Debug, Deserialize)]
pub(crate) struct Line {
    pub(crate) outcome: String,
    pub(crate) path: PathBuf,
    pub(crate) id: Option<String>,
    pub(crate) meta: Option<serde_json::Value>,
}

pub(crate) fn publish(net: &Testnet, path: &Path) -> Vec<Line> {
    let out = ok(net
        .medley("eu-west", true)
        .arg("publish")
        .arg(path)
        .arg("--json"));
    serde_json::from_slice(&out.stdout).expect("publish --json")
}

pub(crate) fn play(net: &Testnet, region: &str, id: &str, wav: &Path) -> PlayOutcome {
    let out = ok(net
        .medley(region, false)
        .args(["play", id, "--json", "--out"])
        .arg(wav));
    serde_json::from_slice(&out.stdout).expect("play --json")
}

/// `medley get` of `id` into `out` gives exactly the bytes of `src`.
pub(crate) fn assert_get_identical(net: &Testnet, id: &str, out: &Path, src: &Path) {
    ok(net
        .medley("eu-west", false)
        .args(["get", id, "-o"])
        .arg(out));
    assert_eq!(std::fs::read(out).unwrap(), std::fs::read(src).unwrap());
}

pub(crate) fn reference_wav(src: &Path, dir: &Path) -> Vec<u8> {
    let p = dir.join("reference.wav");
    decode_to_wav(src, &Output::File(p.clone())).expect("decode the source");
    std::fs::read(p).unwrap()
}

/// The songs a publish committed, with their source files.
pub(crate) fn published(lines: &[Line]) -> Vec<(medley_core::SongId, PathBuf)> {
    lines
        .iter()
        .filter(|l| l.outcome == "published")
        .map(|l| {
            let id = l.id.as_deref().expect("a published line has an id");
            (id.parse().expect("song id"), l.path.clone())
        })
        .collect()
}

/// A generated library of `n` songs of `min_s` to `max_s` seconds (seed `seed`) in a new
/// temporary folder's `lib`, published on `net`: the folder and the songs committed.
pub(crate) fn published_library(
    net: &Testnet,
    n: usize,
    seed: u64,
    (min_s, max_s): (f64, f64),
) -> (tempfile::TempDir, Vec<(medley_core::SongId, PathBuf)>) {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    medley_testnet::library::generate(&lib, n, seed, min_s, max_s).unwrap();
    let songs = published(&publish(net, &lib));
    assert_eq!(songs.len(), n, "every song of the library published");
    (dir, songs)
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `secs` with `what`.
pub(crate) async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed().as_secs() < secs,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A testnet of 8 nodes in 4 regions (4+2 coding) with `grace_secs` and extra node settings,
/// a temporary folder, and a generated library of `songs` songs of `min_s` to `max_s`
/// seconds in `<folder>/lib`.
pub(crate) async fn eight_nodes_and_library(
    grace_secs: u64,
    node_config: &str,
    songs: usize,
    seed: u64,
    (min_s, max_s): (f64, f64),
) -> (
    Testnet,
    tempfile::TempDir,
    Vec<medley_testnet::library::LibrarySong>,
) {
    let net = Testnet::builder()
        .nodes(8)
        .regions(4)
        .grace_secs(grace_secs)
        .log("info,libp2p=warn")
        .node_config(node_config)
        .spawn()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let library =
        medley_testnet::library::generate(&dir.path().join("lib"), songs, seed, min_s, max_s)
            .unwrap();
    (net, dir, library)
}
