//! Time to first audio of an honest listener while one peer floods the node it streams from,
//! against the same without the flood, interleaved song by song in one run, on a loopback
//! testnet (tracker and 6 nodes in 3 regions, real processes).
//!
//! For each song and round: the node holding the first shard of the song's first segment is
//! the target. Without flood: a cold start (new fetcher, no cache) timed to its first
//! segment. With flood: the same while a dial-only peer (on its own runtime thread, as a
//! separate program would be) keeps `--flood` requests in flight against the target (gets
//! of one of its shards, again and again). Target: ≤ 1.5×. All of it shares the machine's
//! two cores, so the flood also takes CPU from the listener and the other nodes.
//!
//! With `--identities N` the flood comes from N peers of their own (fresh keys), sharing
//! the requests in flight: what a node's limits per peer do not bound alone.
//!
//! bash scripts/bench-flood.sh [--songs 12 --rounds 3 --flood 256 --identities 1]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use medley_bench::{latency_row, published_testnet};
use medley_client::Client;
use medley_testnet::Testnet;

#[derive(Debug, Parser)]
struct Args {
    /// Songs in the library.
    #[arg(long, default_value_t = 12)]
    songs: usize,
    /// Rounds over every song.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests the flood keeps in flight, in all.
    #[arg(long, default_value_t = 256)]
    flood: usize,
    /// Fresh identities the flood comes from (each a peer of its own, sharing the flood).
    #[arg(long, default_value_t = 1)]
    identities: usize,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Milliseconds from asking for song `id` to holding its first segment, cold.
async fn first_segment_ms(client: &Client, id: medley_core::SongId) -> anyhow::Result<f64> {
    let t = Instant::now();
    let (fetcher, _) = client.fetcher_with(id, None).await?;
    fetcher.segment(0).await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::Builder::new()
        .prefix("medley-bench-flood-")
        .tempdir()?;
    let (net, songs) = published_testnet(
        Testnet::builder(),
        dir.path(),
        args.bin_dir.as_deref(),
        args.songs,
        11,
        (20.0, 30.0),
    )
    .await?;
    let tracker = net.tracker()?;
    let honest = Client::new(net.client_config("us-east", false))?;
    // The flooder runs on its own runtime thread, as a separate program would: its tasks do
    // not queue in front of the honest listener's on the same scheduler.
    let flood_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut flooders = Vec::new();
    for _ in 0..args.identities.max(1) {
        // It sends every request at once, as a flooding program would: Medley's own peers
        // queue theirs past what a node serves of one peer.
        let impolite = medley_net::PeerConfig {
            max_outbound_per_peer: 1 << 16,
            ..medley_net::PeerConfig::default()
        };
        flooders.push(
            flood_rt
                .spawn(medley_net::Peer::dial_only_with(impolite))
                .await??,
        );
    }
    let (mut calm, mut flooded) = (Vec::new(), Vec::new());
    let (served, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    for round in 0..args.rounds {
        for (id, _) in &songs {
            let manifest = tracker.manifest(*id).await?;
            let body = manifest.body();
            let holders = medley_client::song_sources(
                &tracker,
                *id,
                body.segments.len(),
                manifest.codec().total(),
                None,
            )
            .await?
            .holders;
            let Some(Some(target)) = holders.first().and_then(|r| r.first()).cloned() else {
                anyhow::bail!("no holder of the first shard of {id}");
            };
            let shard = body.segments[0].shards[0];
            calm.push(first_segment_ms(&honest, *id).await?);
            // The flood: `--flood` requests in flight against the target, renewed as they end.
            let stop = Arc::new(AtomicBool::new(false));
            let mut floods = Vec::new();
            for i in 0..args.flood {
                let f = flooders[i % flooders.len()].clone();
                let (t, stop) = (target.clone(), stop.clone());
                let (served, busy) = (served.clone(), busy.clone());
                floods.push(flood_rt.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match f.get_shard(t.peer, t.addrs.clone(), shard).await {
                            Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                            Err(_) => busy.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            flooded.push(first_segment_ms(&honest, *id).await?);
            stop.store(true, Ordering::Relaxed);
            for f in floods {
                let _ = f.await;
            }
        }
        eprintln!("round {} done", round + 1);
    }
    println!(
        "time to first segment, cold, {} songs × {} rounds; flood of {} requests in flight from {} peers",
        songs.len(),
        args.rounds,
        args.flood,
        flooders.len()
    );
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let (c50, c90, _) = latency_row("without flood (baseline)", 28, &mut calm);
    let (f50, f90, _) = latency_row("with flood", 28, &mut flooded);
    println!(
        "flood / baseline: p50 {:.2}×, p90 {:.2}× (target ≤ 1.5×); the flooder got {} answers and {} refusals",
        f50 / c50,
        f90 / c90,
        served.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed)
    );
    honest.shutdown().await;
    flood_rt.shutdown_background();
    drop(net);
    Ok(())
}
