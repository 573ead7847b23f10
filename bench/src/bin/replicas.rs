//! What the tracker's store sustains: publish commits and heartbeats per second through one
//! tracker on its embedded RocksDB (the baseline) and through one replica on PostgreSQL, in
//! the same run, each a release `medley-tracker` process on loopback taking requests from
//! `--concurrency` clients at once.
//!
//! - publish: signed manifests of distinct songs (a few segments each) committed through
//!   `POST /v1/publish`; every commit is durable before it is acknowledged (a synced RocksDB
//!   batch; a PostgreSQL transaction that takes the journal's head row);
//! - heartbeat: `POST /v1/nodes/heartbeat` of registered nodes, round robin (kept in memory
//!   on both; replicas share them through the database once a second).
//!
//! cargo run --release -p medley-bench --bin replicas -- --store postgres://…/empty_db
//!   [--songs 3000] [--nodes 200] [--secs 5] [--concurrency 8]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use medley_core::{Manifest, PublisherKey, SongMeta};

#[derive(Debug, Parser)]
struct Args {
    /// The PostgreSQL database the replica uses (empty).
    #[arg(long)]
    store: String,
    /// Songs published through each.
    #[arg(long, default_value_t = 3000)]
    songs: usize,
    /// Nodes registered on each, then heartbeating.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Seconds of heartbeats on each.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(
    bins: &Path,
    dir: &Path,
    store: &str,
    key: &PublisherKey,
) -> anyhow::Result<(Proc, String)> {
    let child = Command::new(bins.join("medley-tracker"))
        .args(["run", "--listen", "127.0.0.1:0", "--store", store])
        .args(["--publisher", &key.id().to_string(), "--data-dir"])
        .arg(dir)
        .env("MEDLEY_LOG", "warn")
        .env("MEDLEY_RATE_LIMIT_PER_SEC", "0")
        .env("MEDLEY_REQUIRE_SIGNATURES", "false")
        .env("MEDLEY_ADMISSION", "open")
        .env("MEDLEY_AUDIT_INTERVAL_SECS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start medley-tracker")?;
    let proc = Proc(child);
    let info: medley_tracker::TrackerInfo = medley_daemon::wait_for_json_file(
        &dir.join(medley_tracker::TRACKER_INFO_FILE),
        Duration::from_secs(60),
    )
    .context("the tracker did not start")?;
    Ok((proc, info.url))
}

fn manifests(n: usize, salt: u8, key: &PublisherKey) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let meta = SongMeta {
                artist: Some(format!("Artist {}", i % 97)),
                genre: Some("Bench".into()),
                duration_ms: Some(180_000),
                ..medley_core::test_utils::flac_meta(&format!("Bench Song {salt}-{i}"))
            };
            let mut data = (i as u64).to_le_bytes().repeat(8);
            data.push(salt);
            let body = medley_core::test_utils::body_for(meta, &data, 16, 4, 2, key.id());
            Manifest::sign(body, key).map(|m| m.encoded().to_vec())
        })
        .collect::<Result<_, _>>()
        .expect("sign")
}

/// Runs `jobs` requests with `concurrency` in flight; requests per second.
async fn rate<F, Fut>(
    jobs: usize,
    concurrency: usize,
    deadline: Option<Duration>,
    f: F,
) -> anyhow::Result<(usize, f64)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs || deadline.is_some_and(|d| started.elapsed() >= d) {
                    return anyhow::Ok(done);
                }
                f(i).await?;
                done += 1;
            }
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    Ok((done, done as f64 / started.elapsed().as_secs_f64()))
}

async fn measure(url: &str, songs: Vec<Vec<u8>>, args: &Args) -> anyhow::Result<(f64, f64)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let songs = Arc::new(songs);
    let (h, u, s) = (http.clone(), url.to_string(), songs.clone());
    let (n, publishes) = rate(songs.len(), args.concurrency, None, move |i| {
        let (h, u, s) = (h.clone(), u.clone(), s.clone());
        async move {
            let r = h
                .post(format!("{u}/v1/publish"))
                .body(s[i].clone())
                .send()
                .await?;
            anyhow::ensure!(r.status() == 201, "publish {i}: {}", r.status());
            Ok(())
        }
    })
    .await?;
    anyhow::ensure!(n == songs.len());
    for i in 0..args.nodes {
        let body = serde_json::json!({
            "peer_id": format!("bench-node-{i}"),
            "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 20_000 + i)],
            "region": format!("r{}", i % 3),
            "capacity": 1u64 << 40,
        });
        http.post(format!("{url}/v1/nodes/register"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
    }
    let (h, u, nodes) = (http, url.to_string(), args.nodes);
    let (_, beats) = rate(
        usize::MAX,
        args.concurrency,
        Some(Duration::from_secs(args.secs)),
        move |i| {
            let (h, u) = (h.clone(), u.clone());
            async move {
                let body = serde_json::json!({
                    "peer_id": format!("bench-node-{}", i % nodes),
                    "free": 1u64 << 39, "bytes_per_sec": 0, "transfers": 0,
                });
                h.post(format!("{u}/v1/nodes/heartbeat"))
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(())
            }
        },
    )
    .await?;
    Ok((publishes, beats))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = args.bin_dir.clone().unwrap_or_else(medley_testnet::bin_dir);
    let dir = tempfile::Builder::new()
        .prefix("medley-bench-replicas-")
        .tempdir()?;
    let key = PublisherKey::from_seed([11; 32]);
    let (rocks_songs, pg_songs) = (
        manifests(args.songs, 1, &key),
        manifests(args.songs, 2, &key),
    );
    let (rocks, pg) = {
        let (_p, url) = start(&bins, &dir.path().join("rocksdb"), "rocksdb", &key)?;
        let rocks = measure(&url, rocks_songs, &args).await?;
        drop(_p);
        let (_p, url) = start(&bins, &dir.path().join("replica"), &args.store, &key)?;
        (rocks, measure(&url, pg_songs, &args).await?)
    };
    println!(
        "{:<22} {:>14} {:>16}",
        "store", "publishes/s", "heartbeats/s"
    );
    println!(
        "{:<22} {:>14.0} {:>16.0}",
        "rocksdb (one tracker)", rocks.0, rocks.1
    );
    println!(
        "{:<22} {:>14.0} {:>16.0}",
        "postgresql (replica)", pg.0, pg.1
    );
    println!(
        "ratio postgresql/rocksdb: publishes {:.2}x, heartbeats {:.2}x ({} songs, {} nodes, {} in flight)",
        pg.0 / rocks.0,
        pg.1 / rocks.1,
        args.songs,
        args.nodes,
        args.concurrency
    );
    Ok(())
}
