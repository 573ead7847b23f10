//! What the tracker's store sustains: publish commits and heartbeats per second through one
//! tracker on its embedded RocksDB (the baseline) and through one replica on PostgreSQL, in
//! the same run, each a release `medley-tracker` process on loopback taking requests from
//! `--concurrency` clients at once.
//!
//! - publish: signed manifests of distinct songs (a few segments each) committed through
//!   `POST /v1/publish`; every commit is durable before it is acknowledged (a synced RocksDB
//!   batch; a PostgreSQL transaction that takes the journal's head row);
//! - heartbeat: `POST /v1/nodes/heartbeat` of registered nodes, round robin (kept in memory
//!   on both; replicas share them through the database once a second);
//! - play: `POST /v1/plays` of the published songs (counted in memory, added to the store
//!   once a second; replicas also log them for the others' popularity);
//! - announce: `POST /v1/peers/announce` of listeners holding 10 songs each (in memory;
//!   replicas log them for the others);
//! - and with a second replica on the same database, how long an announcement through the
//!   first takes to be listed as a source by the second (`--spread`, p50/p99).
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
    /// Announcements timed from one replica to another.
    #[arg(long, default_value_t = 50)]
    spread: usize,
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

/// Signed manifests: (song id, encoded).
fn manifests(n: usize, salt: u8, key: &PublisherKey) -> Vec<(String, Vec<u8>)> {
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
            Manifest::sign(body, key).map(|m| (m.id().to_string(), m.encoded().to_vec()))
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

/// Requests per second of each kind.
#[derive(Debug, Clone, Copy)]
struct Rates {
    publishes: f64,
    beats: f64,
    plays: f64,
    announces: f64,
}

/// A listener announcing 10 of the songs.
fn announcement(i: usize, ids: &[String]) -> serde_json::Value {
    let songs: Vec<&String> = (0..10).map(|j| &ids[(i * 7 + j) % ids.len()]).collect();
    serde_json::json!({
        "peer_id": format!("bench-listener-{}", i % 50_000),
        "addrs": [format!("/ip4/127.0.0.1/udp/{}/quic-v1", 30_000 + i % 20_000)],
        "region": format!("r{}", i % 3),
        "songs": songs,
    })
}

async fn measure(url: &str, songs: Vec<(String, Vec<u8>)>, args: &Args) -> anyhow::Result<Rates> {
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
                .body(s[i].1.clone())
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
    let nodes = args.nodes;
    let (_, beats) = json_rate(&http, url, "nodes/heartbeat", args, move |i| {
        serde_json::json!({
            "peer_id": format!("bench-node-{}", i % nodes),
            "free": 1u64 << 39, "bytes_per_sec": 0, "transfers": 0,
        })
    })
    .await?;
    let ids: Arc<Vec<String>> = Arc::new(songs.iter().map(|(id, _)| id.clone()).collect());
    let s = ids.clone();
    let (_, plays) = json_rate(
        &http,
        url,
        "plays",
        args,
        move |i| serde_json::json!({"song": s[i % s.len()], "region": format!("r{}", i % 3)}),
    )
    .await?;
    let (_, announces) = json_rate(&http, url, "peers/announce", args, move |i| {
        announcement(i, &ids)
    })
    .await?;
    Ok(Rates {
        publishes,
        beats,
        plays,
        announces,
    })
}

/// POSTs the JSON `body(i)` to `/v1/<path>` for `--secs` seconds, `--concurrency` at once.
async fn json_rate<B>(
    http: &reqwest::Client,
    url: &str,
    path: &'static str,
    args: &Args,
    body: B,
) -> anyhow::Result<(usize, f64)>
where
    B: Fn(usize) -> serde_json::Value + Send + Sync + 'static,
{
    let (h, u) = (http.clone(), url.to_string());
    let body = Arc::new(body);
    let secs = Some(Duration::from_secs(args.secs));
    rate(usize::MAX, args.concurrency, secs, move |i| {
        let (h, u, body) = (h.clone(), u.clone(), body.clone());
        async move {
            h.post(format!("{u}/v1/{path}"))
                .json(&body(i))
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        }
    })
    .await
}

/// How long announcements through `first` take to be listed by `second` as sources, ms,
/// sorted.
async fn spread(first: &str, second: &str, ids: &[String], n: usize) -> anyhow::Result<Vec<f64>> {
    let http = reqwest::Client::new();
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        // A region of its own: no other listener is ranked before it.
        let (peer, song, region) = (
            format!("spread-listener-{i}"),
            ids[i % ids.len()].clone(),
            format!("spread-{i}"),
        );
        let body = serde_json::json!({
            "peer_id": peer,
            "addrs": ["/ip4/127.0.0.1/udp/9/quic-v1"],
            "region": region,
            "songs": [song],
        });
        let started = Instant::now();
        http.post(format!("{first}/v1/peers/announce"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        loop {
            let v: serde_json::Value = http
                .get(format!("{second}/v1/songs/{song}/sources?region={region}"))
                .send()
                .await?
                .json()
                .await?;
            let listed = v["whole"]
                .as_array()
                .is_some_and(|w| w.iter().any(|s| s["peer_id"] == peer.as_str()));
            if listed {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "announcement {i} not listed by the second replica within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        // Announcements land at every phase of the replicas' one-second ticks.
        tokio::time::sleep(Duration::from_millis(137)).await;
    }
    took.sort_by(f64::total_cmp);
    Ok(took)
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
    let ids: Vec<String> = pg_songs.iter().map(|(id, _)| id.clone()).collect();
    let (rocks, pg, took) = {
        let (_p, url) = start(&bins, &dir.path().join("rocksdb"), "rocksdb", &key)?;
        let rocks = measure(&url, rocks_songs, &args).await?;
        drop(_p);
        let (_p, url) = start(&bins, &dir.path().join("replica"), &args.store, &key)?;
        let pg = measure(&url, pg_songs, &args).await?;
        let (_q, second) = start(&bins, &dir.path().join("second"), &args.store, &key)?;
        (rocks, pg, spread(&url, &second, &ids, args.spread).await?)
    };
    println!(
        "{:<22} {:>12} {:>14} {:>10} {:>12}",
        "store", "publishes/s", "heartbeats/s", "plays/s", "announces/s"
    );
    for (name, r) in [
        ("rocksdb (one tracker)", rocks),
        ("postgresql (replica)", pg),
    ] {
        println!(
            "{:<22} {:>12.0} {:>14.0} {:>10.0} {:>12.0}",
            name, r.publishes, r.beats, r.plays, r.announces
        );
    }
    println!(
        "ratio postgresql/rocksdb: publishes {:.2}x, heartbeats {:.2}x, plays {:.2}x, announces {:.2}x ({} songs, {} nodes, {} in flight)",
        pg.publishes / rocks.publishes,
        pg.beats / rocks.beats,
        pg.plays / rocks.plays,
        pg.announces / rocks.announces,
        args.songs,
        args.nodes,
        args.concurrency
    );
    let q = |p: f64| took[((took.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "announcement through one replica listed by another: n {} p50 {:.0} ms p99 {:.0} ms max {:.0} ms",
        took.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    Ok(())
}
