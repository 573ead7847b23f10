//! The time a client of several tracker replicas loses when the one it asks fails. Three
//! release `medley-tracker` processes on loopback, sharing one signing key (each with its own
//! store, so the figure is the client's failover, not a shared database's; with `--store
//! postgres://…`, on one shared database as deployed replicas are); one
//! `TrackerClient` given the three URLs, with the node's timeout (10 s), asks `/v1/stats`:
//!
//! - baseline: calls with every replica up;
//! - killed: the replica it asks is killed (SIGKILL; the kernel refuses the next connection)
//!   and the next call is timed; the replica is started again on its port;
//! - frozen: the replica it asks is stopped (SIGSTOP: connections are accepted, nothing
//!   answers, as a hung process or a lost machine) and the next call is timed, then it is
//!   thawed.
//!
//! cargo run --release -p medley-bench --bin failover -- [--calls 200] [--kills 20] [--freezes 3]
//!   [--store postgres://…]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use medley_api::TrackerClient;

#[derive(Debug, Parser)]
struct Args {
    /// Baseline calls.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Replicas killed, one at a time.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Replicas frozen, one at a time (each costs the client's timeout).
    #[arg(long, default_value_t = 3)]
    freezes: usize,
    /// The client's timeout for a call, in seconds (a node's is 10).
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Run the replicas on this shared PostgreSQL store instead of a RocksDB each.
    #[arg(long)]
    store: Option<String>,
}

/// One replica: its process, data directory and URL.
struct Replica {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Replica {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a replica in `dir` on `port` and waits until it answers.
async fn start(
    bins: &Path,
    dir: &Path,
    port: u16,
    key: &Path,
    store: Option<&str>,
) -> anyhow::Result<Replica> {
    std::fs::create_dir_all(dir)?;
    let info = dir.join(medley_tracker::TRACKER_INFO_FILE);
    let _ = std::fs::remove_file(&info);
    let child = Command::new(bins.join("medley-tracker"))
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env("MEDLEY_LOG", "warn")
        .env("MEDLEY_SIGNING_KEY", key)
        .env("MEDLEY_RATE_LIMIT_PER_SEC", "0")
        .env("MEDLEY_STORE", store.unwrap_or("rocksdb"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    medley_daemon::wait_for_json_file::<medley_tracker::TrackerInfo>(
        &info,
        Duration::from_secs(60),
    )
    .ok_or_else(|| anyhow::anyhow!("the replica on port {port} did not start"))?;
    Ok(Replica {
        child,
        dir: dir.to_path_buf(),
        port,
    })
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} {pid} failed");
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name:<28} {:>5} {:>10.2} {:>10.2} {:>10.2}",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = args.bin_dir.clone().unwrap_or_else(medley_testnet::bin_dir);
    let dir = tempfile::Builder::new()
        .prefix("medley-bench-failover-")
        .tempdir()?;
    let key = dir.path().join("tracker.key");
    medley_daemon::keyfile::create_private_file(&key, &rand::random::<[u8; 32]>())?;
    let mut replicas = Vec::new();
    for i in 0..3 {
        let d = dir.path().join(format!("replica-{i}"));
        replicas.push(start(&bins, &d, free_port()?, &key, args.store.as_deref()).await?);
    }
    let urls: Vec<String> = replicas.iter().map(Replica::url).collect();
    let client = TrackerClient::builder(&urls.join(","))
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()?;
    let timed = || async {
        let started = Instant::now();
        client.stats().await?;
        anyhow::Ok(started.elapsed().as_secs_f64() * 1000.0)
    };
    let current = |client: &TrackerClient| -> anyhow::Result<usize> {
        urls.iter()
            .position(|u| u == client.url())
            .ok_or_else(|| anyhow::anyhow!("asking an unknown URL"))
    };

    // Warm up every replica's connection, then the baseline.
    for _ in 0..20 {
        timed().await?;
    }
    let mut baseline = Vec::new();
    for _ in 0..args.calls {
        baseline.push(timed().await?);
    }

    let mut killed = Vec::new();
    for _ in 0..args.kills {
        let i = current(&client)?;
        let r = &mut replicas[i];
        r.child.kill()?;
        r.child.wait()?;
        killed.push(timed().await?);
        anyhow::ensure!(current(&client)? != i, "still asking the killed replica");
        let (d, port) = (r.dir.clone(), r.port);
        replicas[i] = start(&bins, &d, port, &key, args.store.as_deref()).await?;
    }

    let mut frozen = Vec::new();
    for _ in 0..args.freezes {
        let i = current(&client)?;
        signal(replicas[i].child.id(), "-STOP")?;
        let t = timed().await;
        signal(replicas[i].child.id(), "-CONT")?;
        frozen.push(t?);
        anyhow::ensure!(current(&client)? != i, "still asking the frozen replica");
    }

    println!(
        "a client of 3 tracker replicas, /v1/stats, timeout {} s",
        args.timeout_secs
    );
    println!(
        "{:<28} {:>5} {:>10} {:>10} {:>10}",
        "call", "n", "p50 ms", "p99 ms", "max ms"
    );
    row("all replicas up (baseline)", baseline.clone());
    row("its replica killed", killed.clone());
    row("its replica frozen", frozen);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    println!(
        "killed / baseline at p50: {:.2}x",
        median(killed) / median(baseline)
    );
    for mut r in replicas {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
    Ok(())
}
