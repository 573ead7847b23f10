//! Peer-assisted delivery on a loopback testnet (tracker and 6 nodes in 3 regions, real
//! processes; listeners in this process, each a full client with its own identity, disk
//! cache and data-plane endpoint serving that cache on loopback).
//!
//! Workload, reproducible from `--seed`: `--listeners` spread over the regions, each playing
//! `--plays` songs drawn from a Zipf(`--zipf`) popularity over `--songs` songs. Playback is
//! compressed by `--speed` (a 10 s song plays in 10/speed s) and every deadline with it.
//! The listeners' upload cap is multiplied by the speed (they need that much more).
//! A play: the first segment decides the time to first audio; after it, segment `i` is due
//! `i` segment-durations later; one that arrives late is a stall (the clock then waits for
//! it). With one segment left the next song's first segment is fetched ahead. Plays are
//! reported to the tracker (which makes songs hot and orders whole copies onto nodes) and
//! listeners announce what they hold whole.
//!
//! Reported: bytes by source class (own cache, other listeners, hot nodes, rebuilt from
//! shards of the durable tier), the share not rebuilt beside the compulsory floor (the
//! bytes of each song's first play anywhere), the share of plays that stalled, time to
//! first audio percentiles; then a flash crowd: every listener starts the same new song
//! within 5 s (arrivals in real time, playback at the speed), with the bytes rebuilt from
//! shards and the stalls.
//!
//! bash scripts/bench-peer-assist.sh [--listeners 60 --songs 300 --plays 100 --speed 10]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use medley_bench::{latency_row, published_testnet};
use medley_client::{Client, Delivery};
use medley_core::SongId;
use medley_testnet::Testnet;
use medley_testnet::listener::{self, PlayPlan, Prefetch};
use medley_testnet::scenario::Zipf;
use parking_lot::Mutex;
use rand::{RngExt, SeedableRng};

#[derive(Debug, Parser)]
struct Args {
    /// Listeners, spread round-robin over the testnet's 3 regions.
    #[arg(long, default_value_t = 60)]
    listeners: usize,
    /// Songs in the catalogue.
    #[arg(long, default_value_t = 300)]
    songs: usize,
    /// Plays per listener.
    #[arg(long, default_value_t = 100)]
    plays: usize,
    /// Zipf exponent of song popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Playback speed-up: deadlines are divided by it.
    #[arg(long, default_value_t = 10.0)]
    speed: f64,
    /// Shortest and longest song, in seconds.
    #[arg(long, default_value_t = 8.0)]
    min_secs: f64,
    #[arg(long, default_value_t = 14.0)]
    max_secs: f64,
    /// Disk cache of each listener, in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
    /// Seed of the catalogue and the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Plays per listener of the baseline run first: the same schedule's first plays by
    /// listeners without a cache, not reported to the tracker (so nothing turns hot):
    /// every byte rebuilt from the durable tier.
    #[arg(long, default_value_t = 10)]
    baseline_plays: usize,
    /// Skip the flash crowd.
    #[arg(long)]
    no_flash: bool,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// What one play did.
#[derive(Debug, Clone, Copy, Default)]
struct PlayStats {
    ttfa_ms: f64,
    stalled: bool,
    delivery: Delivery,
    first_anywhere: bool,
}

/// Totals of a workload.
#[derive(Debug, Default)]
struct Totals {
    plays: Vec<PlayStats>,
    failures: usize,
}

impl Totals {
    fn print(&self, title: &str) {
        let mut d = Delivery::default();
        let mut floor = 0u64;
        for p in &self.plays {
            d.add(&p.delivery);
            if p.first_anywhere {
                floor += p.delivery.total_bytes();
            }
        }
        let total = d.total_bytes().max(1) as f64;
        let pct = |b: u64| 100.0 * b as f64 / total;
        let stalled = self.plays.iter().filter(|p| p.stalled).count();
        println!(
            "\n{title}: {} plays ({} failed)",
            self.plays.len(),
            self.failures
        );
        println!(
            "bytes: {:.1} MiB; own cache {:.1} %, other listeners {:.1} %, hot nodes {:.1} %, rebuilt from shards {:.1} %",
            total / 1048576.0,
            pct(d.cache_bytes),
            pct(d.peer_bytes),
            pct(d.hot_bytes),
            pct(d.rebuilt_bytes)
        );
        println!(
            "not rebuilt from the durable tier: {:.1} % (compulsory floor: first plays anywhere, {:.1} % of bytes)",
            100.0 - pct(d.rebuilt_bytes),
            pct(floor)
        );
        println!(
            "stalled plays: {stalled} of {} ({:.2} %)",
            self.plays.len(),
            100.0 * stalled as f64 / self.plays.len().max(1) as f64
        );
        println!(
            "{:<22} {:>6} {:>9} {:>9} {:>9} {:>9}",
            "time to first audio", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let mut ttfa: Vec<f64> = self.plays.iter().map(|p| p.ttfa_ms).collect();
        latency_row("", 22, &mut ttfa);
    }
}

/// Plays `song` on `client` as a light listener (see `medley_testnet::listener`).
async fn play(
    client: &Arc<Client>,
    song: SongId,
    next: Option<SongId>,
    speed: f64,
    prefetched: Option<Prefetch>,
    report: bool,
) -> anyhow::Result<(PlayStats, Option<Prefetch>)> {
    let plan = PlayPlan {
        song,
        next,
        speed,
        skip_at: None,
        seek_to: None,
        report,
    };
    let (r, prefetch) = listener::play(client, plan, prefetched)
        .await
        .with_context(|| format!("play of {song}"))?;
    let stats = PlayStats {
        ttfa_ms: r.ttfa_ms,
        stalled: r.stalled(),
        delivery: r.delivery,
        first_anywhere: false,
    };
    Ok((stats, prefetch))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::Builder::new()
        .prefix("medley-bench-peer-")
        .tempdir()?;
    let builder = Testnet::builder()
        .capacity(bytesize::ByteSize::gib(4))
        .tracker_config(
            "hot_plays = 4.0\nhot_half_life_secs = 120\nhot_copies = 1\npeer_ttl_secs = 60",
        );
    let songs_total = args.songs + usize::from(!args.no_flash);
    let (net, songs) = published_testnet(
        builder,
        dir.path(),
        args.bin_dir.as_deref(),
        songs_total,
        args.seed,
        (args.min_secs, args.max_secs),
    )
    .await?;
    let regions = net.regions();
    let (catalogue, flash_song) = if args.no_flash {
        (songs.clone(), None)
    } else {
        (songs[..args.songs].to_vec(), songs.last().map(|s| s.0))
    };
    eprintln!(
        "{} listeners in {} regions, {} songs, {} plays each, Zipf({}), speed {}×",
        args.listeners,
        regions.len(),
        catalogue.len(),
        args.plays,
        args.zipf,
        args.speed
    );
    // Playback runs `speed` times faster, so listeners need `speed` times the bandwidth:
    // the upload cap scales with it. The hedge delay does not: it stands for network and
    // processing latency, which the speed-up does not shorten (dividing it made every slow
    // answer a second request, and the 2-core machine drowned in them).
    let scaled = |mut c: medley_client::ClientConfig| {
        let d = medley_client::ClientConfig::default();
        c.serve_bytes_per_sec =
            bytesize::ByteSize::b((d.serve_bytes_per_sec.as_u64() as f64 * args.speed) as u64);
        c
    };
    let mut listeners = Vec::new();
    for l in 0..args.listeners {
        let region = &regions[l % regions.len()];
        let c = net.listener_config(
            region,
            &format!("l{l}"),
            bytesize::ByteSize::mib(args.cache_mib),
        );
        listeners.push(Arc::new(Client::new(scaled(c))?));
    }
    // Each listener's schedule, from the seed alone.
    let zipf = Zipf::new(catalogue.len(), args.zipf);
    let schedules: Vec<Vec<SongId>> = (0..args.listeners)
        .map(|l| {
            let mut rng = rand_pcg::Pcg64::seed_from_u64(args.seed ^ (l as u64 + 1) * 0x9e37);
            (0..args.plays)
                .map(|_| catalogue[zipf.sample(rng.random::<f64>())].0)
                .collect()
        })
        .collect();
    if args.baseline_plays > 0 {
        let base = Arc::new(Mutex::new(Totals::default()));
        let mut tasks = Vec::new();
        for (l, schedule) in schedules.iter().enumerate() {
            let region = &regions[l % regions.len()];
            let mut c = net.listener_config(region, &format!("b{l}"), bytesize::ByteSize::b(0));
            // A region no node is in: the baseline's requests for sources count where no
            // hot copy can be ordered, so it neither uses the hot tier nor warms it for the
            // run that follows.
            c.region = format!("baseline-{region}");
            let client = Arc::new(Client::new(scaled(c))?);
            let schedule: Vec<SongId> =
                schedule.iter().take(args.baseline_plays).copied().collect();
            let (base, speed) = (base.clone(), args.speed);
            tasks.push(tokio::spawn(async move {
                for song in schedule {
                    let r = play(&client, song, None, speed, None, false).await;
                    let mut t = base.lock();
                    match r {
                        Ok((s, _)) => t.plays.push(s),
                        Err(e) => {
                            eprintln!("baseline play failed: {e:#}");
                            t.failures += 1;
                        }
                    }
                }
                client.shutdown().await;
            }));
        }
        for t in tasks {
            t.await?;
        }
        base.lock()
            .print("baseline: durable tier only (no cache, no peers, nothing hot)");
    }
    let played_anywhere: Arc<Mutex<HashSet<SongId>>> = Arc::default();
    let totals = Arc::new(Mutex::new(Totals::default()));
    let bar = medley_daemon::progress_bar(
        Some((args.listeners * args.plays) as u64),
        "{bar:30} {pos}/{len} plays {per_sec} {elapsed}",
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, schedule) in listeners.iter().cloned().zip(schedules) {
        let (totals, anywhere, bar) = (totals.clone(), played_anywhere.clone(), bar.clone());
        let speed = args.speed;
        tasks.push(tokio::spawn(async move {
            let mut prefetched = None;
            for (k, &song) in schedule.iter().enumerate() {
                let first = anywhere.lock().insert(song);
                let r = play(
                    &client,
                    song,
                    schedule.get(k + 1).copied(),
                    speed,
                    prefetched.take(),
                    true,
                )
                .await;
                let mut t = totals.lock();
                match r {
                    Ok((mut s, p)) => {
                        prefetched = p;
                        s.first_anywhere = first;
                        t.plays.push(s);
                    }
                    Err(e) => {
                        eprintln!("play failed: {e:#}");
                        t.failures += 1;
                    }
                }
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    println!(
        "peer-assisted delivery: {} listeners, {} songs, Zipf({}), {} plays each, speed {}×, seed {}, {:.0} s",
        args.listeners,
        catalogue.len(),
        args.zipf,
        args.plays,
        args.speed,
        args.seed,
        elapsed.as_secs_f64()
    );
    totals.lock().print("steady workload");
    let hot = net.tracker()?.popularity().await?;
    println!("songs hot somewhere at the end: {}", hot.len());

    if let Some(song) = flash_song {
        // Flash crowd: every listener starts the same new song within 5 s. Arrivals are not
        // scaled by the speed: they are when people press play, not playback deadlines.
        let crowd = Arc::new(Mutex::new(Totals::default()));
        let window = 5.0;
        let mut rng = rand_pcg::Pcg64::seed_from_u64(args.seed ^ 0xf1a5);
        let mut tasks = Vec::new();
        for client in listeners.iter().cloned() {
            let delay = Duration::from_secs_f64(rng.random::<f64>() * window);
            let (crowd, speed) = (crowd.clone(), args.speed);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let r = play(&client, song, None, speed, None, true).await;
                let mut t = crowd.lock();
                match r {
                    Ok((s, _)) => t.plays.push(s),
                    Err(e) => {
                        eprintln!("flash play failed: {e:#}");
                        t.failures += 1;
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let crowd = crowd.lock();
        crowd.print("flash crowd: a new song, every listener within 5 s");
        let rebuilt: u64 = crowd.plays.iter().map(|p| p.delivery.rebuilt_bytes).sum();
        let size: u64 = crowd.plays.first().map_or(0, |p| p.delivery.total_bytes());
        println!(
            "flash crowd: {:.2} MiB rebuilt from shards for a {:.2} MiB song ({:.1} copies)",
            rebuilt as f64 / 1048576.0,
            size as f64 / 1048576.0,
            rebuilt as f64 / size.max(1) as f64
        );
    }
    for l in &listeners {
        l.shutdown().await;
    }
    drop(net);
    Ok(())
}
