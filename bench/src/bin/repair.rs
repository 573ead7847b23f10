//! Time to restore full redundancy after a storage node dies, and the rate at which repair
//! reads shards from the other nodes, against the data plane's fetch throughput measured in
//! the same run.
//!
//! A loopback testnet (tracker and 8 nodes in 4 regions, 4+2, real processes) is filled with
//! pseudo-random "songs" until each node holds about `--gib` GiB of shards (uploaded to their
//! slots and committed as signed manifests, as `medley publish` does, without audio probing).
//! Then:
//! 1. Baseline: one client fetches a sample of shards from the nodes, 16 requests in flight.
//! 2. Node 0 is killed (SIGKILL). The tracker replaces it after the grace period; the other
//!    nodes rebuild its shards, each from `k` shards of the other slots. The run ends when the
//!    live nodes report as many shards restored as the dead node held and no backlog.
//! 3. A sample of songs is audited: every shard intact on its holder.
//!
//! bash scripts/bench-repair.sh [--gib 1]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use medley_bench::{mib_per_s, pseudo_random};
use medley_core::{Codec, Manifest, ManifestBody, SegmentEntry, SongMeta, partition_of};
use medley_net::{Multiaddr, Peer, PeerId};
use medley_testnet::Testnet;

#[derive(Debug, Parser)]
struct Args {
    /// Shard bytes each node should hold before one dies, in GiB.
    #[arg(long, default_value_t = 1.0)]
    gib: f64,
    /// Size of each song in MiB.
    #[arg(long, default_value_t = 8)]
    song_mib: usize,
    /// Shards fetched for the baseline.
    #[arg(long, default_value_t = 4096)]
    baseline_shards: usize,
    /// Seconds without a heartbeat before the tracker replaces a node.
    #[arg(long, default_value_t = 2)]
    grace_secs: u64,
    /// Shards each node repairs at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
}

const NODES: usize = 8;
const SEGMENT: usize = 256 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = Testnet::builder()
        .nodes(NODES)
        .regions(4)
        .grace_secs(args.grace_secs)
        .capacity(bytesize::ByteSize::gib(64))
        .log("warn")
        .node_config(&format!(
            "repair_bytes_per_sec = 0\nscrub_bytes_per_sec = 0\npeer_bytes_per_sec = 0\nrepair_concurrency = {}",
            args.concurrency
        ));
    if let Some(d) = &args.bin_dir {
        builder = builder.bin_dir(d);
    }
    let mut net = builder.spawn().await.context("cannot start the testnet")?;
    let tracker = net.tracker()?;
    let stats = tracker.stats().await?;
    let (k, m) = (stats.k, stats.m);
    let codec = Codec::new(k, m)?;
    let layout = tracker.layout().await?;
    let partitions = layout.partitions.len() as u16;
    let key = medley_client::load_or_create_publisher_key(net.client_dir())?;
    let addrs: std::collections::HashMap<String, (PeerId, Vec<Multiaddr>)> = net
        .nodes()
        .iter()
        .map(|n| -> anyhow::Result<_> {
            Ok((
                n.peer_id.clone(),
                (
                    n.peer_id.parse()?,
                    vec![format!("/ip4/127.0.0.1/udp/{}/quic-v1", n.port).parse()?],
                ),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let peer = Peer::dial_only().await?;

    // Fill: total shard bytes are (k+m)/k of the audio, spread over the nodes.
    let song_bytes = args.song_mib * 1024 * 1024;
    let per_node = args.gib * (1u64 << 30) as f64;
    let audio = per_node * NODES as f64 * f64::from(k) / f64::from(k + m);
    let songs = (audio / song_bytes as f64).ceil() as usize;
    eprintln!(
        "filling: {songs} songs of {} MiB ({:.2} GiB of audio, ~{:.2} GiB of shards per node)",
        args.song_mib,
        (songs * song_bytes) as f64 / (1u64 << 30) as f64,
        args.gib
    );
    let bar = medley_daemon::progress_bar(
        Some((songs * song_bytes) as u64),
        "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    let fill_start = Instant::now();
    let mut sample: Vec<(String, medley_core::ShardId)> = Vec::new();
    let mut ids = Vec::new();
    let mut uploaded = 0usize;
    for s in 0..songs {
        let data = pseudo_random(1000 + s as u64, song_bytes);
        let mut segments = Vec::new();
        let mut uploads = Vec::new();
        for chunk in data.chunks(SEGMENT) {
            let id = medley_core::SegmentId::of(chunk);
            let shards = codec.encode_with_ids(chunk)?;
            let holders = &layout.partitions[usize::from(partition_of(&id, partitions))];
            segments.push(SegmentEntry {
                id,
                len: chunk.len() as u32,
                shards: shards.iter().map(|(i, _)| *i).collect(),
            });
            for ((sid, bytes), holder) in shards.into_iter().zip(holders) {
                uploaded += 1;
                if sample.len() < args.baseline_shards && uploaded.is_multiple_of(3) {
                    sample.push((holder.clone(), sid));
                }
                let (p, a) = addrs
                    .get(holder)
                    .context("holder not in the testnet")?
                    .clone();
                uploads.push((p, a, bytes));
            }
        }
        let body = ManifestBody {
            meta: SongMeta {
                title: format!("Repair bench song {s}"),
                codec: "flac".into(),
                mime: "audio/flac".into(),
                ..SongMeta::default()
            },
            total_size: song_bytes as u64,
            segment_size: SEGMENT as u32,
            k,
            m,
            segments,
            publisher: key.id(),
        };
        let manifest = Manifest::sign(body, &key)?;
        let grants = tracker.publish_grants(&manifest).await?;
        let grant_of = |node: &PeerId, shard: &medley_core::ShardId| {
            grants
                .grants
                .iter()
                .find(|g| g.node == node.to_string() && g.shards.contains(shard))
                .cloned()
                .context("the tracker granted a shard to another node")
        };
        let mut puts = futures::stream::iter(uploads)
            .map(|(p, a, bytes)| {
                let peer = &peer;
                let grant = grant_of(&p, &medley_core::ShardId::of(&bytes));
                async move { Ok::<_, anyhow::Error>(peer.put_shard(p, a, bytes, grant?).await?) }
            })
            .buffer_unordered(48);
        while let Some(r) = puts.next().await {
            r.context("uploading a shard")?;
        }
        tracker.publish(&manifest).await?;
        ids.push(manifest.id());
        bar.inc(song_bytes as u64);
    }
    bar.finish_and_clear();
    let fill = fill_start.elapsed();
    eprintln!(
        "filled in {:.1} s ({:.1} MiB/s of audio)",
        fill.as_secs_f64(),
        mib_per_s((songs * song_bytes) as u64, fill)
    );

    // Baseline: fetch throughput from the same nodes, 16 in flight.
    let started = Instant::now();
    let mut fetched = 0u64;
    let mut gets = futures::stream::iter(sample.iter().cloned())
        .map(|(holder, sid)| {
            let (peer, addrs) = (&peer, &addrs);
            async move {
                let (p, a) = addrs.get(&holder).context("holder")?.clone();
                Ok::<_, anyhow::Error>(peer.get_shard(p, a, sid).await?.len() as u64)
            }
        })
        .buffer_unordered(16);
    while let Some(r) = gets.next().await {
        fetched += r?;
    }
    drop(gets);
    let baseline = mib_per_s(fetched, started.elapsed());
    eprintln!(
        "baseline: {} shards, {:.1} MiB in {:.2} s: {baseline:.1} MiB/s",
        sample.len(),
        fetched as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    // Wait for the heartbeats to report every node's final shard count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let victim = net.nodes()[0].peer_id.clone();
    let nodes = tracker.nodes().await?;
    let lost = nodes
        .iter()
        .find(|n| n.node.peer_id == victim)
        .map(|n| (n.node.load.shards, n.node.load.used))
        .context("victim not listed")?;
    let v0 = tracker.stats().await?.layout_version;
    eprintln!(
        "killing node 0: {} shards, {:.2} GiB",
        lost.0,
        lost.1 as f64 / (1u64 << 30) as f64
    );
    net.kill_node(0)?;
    let killed = Instant::now();
    let mut detected = None;
    let bar = medley_daemon::progress_bar(
        Some(lost.0),
        "[{bar:30}] {pos}/{len} shards restored {per_sec}",
    );
    let (restored, bytes_read) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if detected.is_none() && tracker.stats().await?.layout_version != v0 {
            detected = Some(killed.elapsed());
        }
        let nodes = tracker.nodes().await?;
        let live = nodes.iter().filter(|n| n.alive);
        let (done, backlog, read) = live.fold((0, 0, 0), |(d, b, r), n| {
            let l = &n.node.load.repair;
            (d + l.done, b + l.backlog, r + l.bytes_read)
        });
        bar.set_position(done);
        if detected.is_some() && done >= lost.0 && backlog == 0 {
            break (done, read);
        }
        if killed.elapsed() > Duration::from_secs(3600) {
            bail!(
                "repair did not finish within an hour ({done} of {} shards)",
                lost.0
            );
        }
    };
    bar.finish_and_clear();
    let total = killed.elapsed();
    let detect = detected.unwrap_or_default();
    let repair = total.saturating_sub(detect);
    let rate = mib_per_s(bytes_read, repair);
    let restored_rate = mib_per_s(lost.1, repair);

    let check: Vec<_> = ids
        .iter()
        .step_by((ids.len() / 16).max(1))
        .copied()
        .collect();
    let audit = net.audit(&check, &[]).await?;
    if !audit.complete() {
        bail!("audit after repair: {audit:?}");
    }
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| node lost | {} shards, {:.2} GiB |",
        lost.0,
        lost.1 as f64 / (1u64 << 30) as f64
    );
    println!(
        "| failure detected (grace {} s) | {:.1} s |",
        args.grace_secs,
        detect.as_secs_f64()
    );
    println!(
        "| repair, detection to full redundancy | {:.1} s |",
        repair.as_secs_f64()
    );
    println!(
        "| total, kill to full redundancy | {:.1} s |",
        total.as_secs_f64()
    );
    println!("| shards restored | {restored} |");
    println!(
        "| bytes read by repair | {:.2} GiB |",
        bytes_read as f64 / (1u64 << 30) as f64
    );
    println!("| repair read rate | {rate:.1} MiB/s |");
    println!("| restored shard bytes per second | {restored_rate:.1} MiB/s |");
    println!("| data-plane fetch baseline (16 in flight) | {baseline:.1} MiB/s |");
    println!(
        "| **repair read rate / baseline** | **{:.2}x** |",
        rate / baseline
    );
    println!(
        "| audit of {} songs after repair | {} segments, all {} shards intact |",
        check.len(),
        audit.segments,
        audit.shards_ok
    );
    net.shutdown();
    Ok(())
}
