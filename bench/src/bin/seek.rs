//! Seek latency through the local gateway (`medley serve`'s engine) on a loopback testnet
//! (tracker and 6 nodes in 3 regions, real processes): the time from a Range request at 90 %
//! of a song to its first byte, cold (a new gateway and client: nothing cached, no
//! connection open) and warm (the same request again), beside the baseline measured in the
//! same run, interleaved song by song: the time to the first byte of a request at the start
//! of the song on a new gateway, which is what decides the time to first audio (the first
//! segment holds the stream header and the first frames). Target: seek ≤ 2× start.
//!
//! bash scripts/bench-seek.sh [--songs 12 --rounds 3]

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use medley_bench::{http_get, latency_row, published_testnet};
use medley_client::Client;
use medley_client::gateway::{GatewayOptions, serve};
use medley_testnet::Testnet;

#[derive(Debug, Parser)]
struct Args {
    /// Songs in the library.
    #[arg(long, default_value_t = 12)]
    songs: usize,
    /// Rounds over every song.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// A gateway on a free loopback port with a new client (own peer, empty cache).
struct Gw {
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    client: Arc<Client>,
}

async fn gateway(net: &Testnet) -> anyhow::Result<Gw> {
    let client = Arc::new(Client::new(net.client_config("us-east", false))?);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let running = serve(
        client.clone(),
        "127.0.0.1:0".parse()?,
        GatewayOptions {
            cache_bytes: 256 << 20,
            subsonic: None,
            hosts: Vec::new(),
        },
        async move {
            let _ = rx.await;
        },
    )
    .await?;
    Ok(Gw {
        port: running.addr.port(),
        stop,
        client,
    })
}

impl Gw {
    async fn close(self) {
        let _ = self.stop.send(());
        self.client.shutdown().await;
    }
}

/// Milliseconds from sending a GET of `path` (with `range`) to its first body byte.
async fn first_byte(port: u16, path: String, range: Option<String>) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let (status, mut body) = http_get(port, &path, range.as_deref())?;
        if status != 200 && status != 206 {
            bail!("GET {path} {range:?}: HTTP {status}");
        }
        let mut b = [0u8; 1];
        body.read_exact(&mut b).context("no body")?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    })
    .await?
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (net, published) = published_testnet(
        medley_testnet::Testnet::builder(),
        dir.path(),
        args.bin_dir.as_deref(),
        args.songs,
        31,
        (60.0, 90.0),
    )
    .await?;
    let mut songs = Vec::new();
    for (id, path) in published {
        songs.push((id, std::fs::metadata(&path)?.len()));
    }
    let (mut start, mut cold, mut warm) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        eprintln!("round {} of {}…", round + 1, args.rounds);
        for (id, len) in &songs {
            let path = format!("/stream/{id}");
            let seek = Some(format!("bytes={}-", len * 9 / 10));
            let gw = gateway(&net).await?;
            start.push(first_byte(gw.port, path.clone(), None).await?);
            gw.close().await;
            let gw = gateway(&net).await?;
            cold.push(first_byte(gw.port, path.clone(), seek.clone()).await?);
            warm.push(first_byte(gw.port, path.clone(), seek).await?);
            gw.close().await;
        }
    }
    println!(
        "{:<22} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "first byte (ms)", "n", "p50", "p90", "p99", "max"
    );
    let (s, _, _) = latency_row("start, cold (baseline)", 22, &mut start);
    let (c, _, _) = latency_row("seek 90 %, cold", 22, &mut cold);
    let (w, _, _) = latency_row("seek 90 %, warm", 22, &mut warm);
    println!(
        "seek/start at p50: cold {:.2}x, warm {:.2}x (target ≤ 2x)",
        c / s,
        w / s
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(main_async(args))
}
