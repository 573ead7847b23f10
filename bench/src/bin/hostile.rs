//! The tracker's memory under a crowd of fresh identities: each announces a song from a
//! made-up address and region, accuses an honest node and a made-up source of sending wrong
//! bytes, and reports a play in a region of its own. Against the same tracker before the
//! crowd (the baseline of the same run): its resident memory, and how many requests per
//! second it took. The tracker is the release binary, a process of its own.
//!
//! cargo run --release -p medley-bench --bin hostile -- [--identities 100000]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use libp2p::identity::Keypair;
use medley_api::{
    PeerAnnouncement, PlayReport, Registration, ReportReason, SourceReport, TrackerClient,
};

#[derive(Debug, Parser)]
struct Args {
    /// Fresh identities in the crowd (four requests each).
    #[arg(long, default_value_t = 100_000)]
    identities: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn rss_of(pid: u32) -> anyhow::Result<u64> {
    medley_daemon::resident_bytes(Some(pid)).ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = args.bin_dir.clone().unwrap_or_else(medley_testnet::bin_dir);
    let dir = tempfile::Builder::new()
        .prefix("medley-bench-hostile-")
        .tempdir()?;
    let publisher = medley_core::PublisherKey::from_seed([42; 32]);
    std::fs::write(
        dir.path().join("medley-tracker.toml"),
        format!(
            "publishers = [\"{}\"]\nrate_limit_per_sec = 0\n",
            publisher.id()
        ),
    )?;
    let mut tracker = Command::new(bins.join("medley-tracker"))
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("MEDLEY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let info: medley_tracker::TrackerInfo = medley_daemon::wait_for_json_file(
        &dir.path().join(medley_tracker::TRACKER_INFO_FILE),
        Duration::from_secs(60),
    )
    .ok_or_else(|| anyhow::anyhow!("the tracker did not start"))?;
    let pid = tracker.id();
    let base = TrackerClient::new(&info.url)?;

    // A song and six honest nodes.
    let meta = medley_core::test_utils::flac_meta("Crowded");
    let audio = vec![7u8; 300_000];
    let body = medley_core::test_utils::body_for(meta, &audio, 256 * 1024, 4, 2, publisher.id());
    let manifest = medley_core::Manifest::sign(body, &publisher)?;
    base.publish(&manifest).await?;
    let song = manifest.id();
    let mut accused = String::new();
    for i in 0..6 {
        let key = Keypair::generate_ed25519();
        let id = key.public().to_peer_id().to_string();
        base.with_signer(key)
            .register(&Registration {
                peer_id: id.clone(),
                addrs: vec![format!("/ip4/127.0.0.1/udp/{}/quic-v1", 9000 + i)],
                region: "eu".into(),
                capacity: 1 << 40,
                join: None,
            })
            .await?;
        if i == 0 {
            accused = id;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_of(pid)?;

    let started = Instant::now();
    let crowd = futures::stream::iter(0..args.identities).map(|i| {
        let (base, accused) = (base.clone(), accused.clone());
        async move {
            let key = Keypair::generate_ed25519();
            let me = key.public().to_peer_id().to_string();
            let c = base.with_signer(key);
            c.announce(&PeerAnnouncement {
                peer_id: me,
                addrs: vec![format!(
                    "/ip4/10.{}.{}.1/udp/1/quic-v1",
                    (i / 250) % 250,
                    i % 250
                )],
                region: format!("region-{i}"),
                songs: vec![song],
                partial: Vec::new(),
            })
            .await?;
            for source in [accused, format!("made-up-{i}")] {
                c.report_source(&SourceReport {
                    peer_id: source,
                    song: song.to_string(),
                    reason: ReportReason::BadHash,
                })
                .await?;
            }
            c.report_play(&PlayReport::new(song, &format!("r{i}"), None))
                .await?;
            anyhow::Ok(())
        }
    });
    let mut failed = 0usize;
    let mut results = crowd.buffer_unordered(args.concurrency.max(1));
    while let Some(r) = results.next().await {
        if r.is_err() {
            failed += 1;
        }
    }
    let took = started.elapsed();
    let after = rss_of(pid)?;
    let requests = args.identities * 4;
    println!(
        "{} fresh identities, {requests} hostile requests in {:.1} s ({:.0}/s), {failed} identities refused somewhere",
        args.identities,
        took.as_secs_f64(),
        requests as f64 / took.as_secs_f64()
    );
    println!(
        "tracker RSS: idle (baseline) {:.1} MiB, after the crowd {:.1} MiB: {:.2}x, +{:.0} B per identity",
        idle as f64 / 1048576.0,
        after as f64 / 1048576.0,
        after as f64 / idle as f64,
        (after.saturating_sub(idle)) as f64 / args.identities as f64
    );
    let metrics = reqwest::get(format!("{}/metrics", info.url))
        .await?
        .text()
        .await?;
    for name in [
        "medley_tracker_announcing_peers",
        "medley_tracker_reported_sources",
        "medley_tracker_accused_sources",
        "medley_tracker_known_identities",
    ] {
        if let Some(line) = metrics.lines().find(|l| l.starts_with(&format!("{name} "))) {
            println!("{line}");
        }
    }
    let banned = base.nodes().await?.iter().filter(|n| n.banned).count();
    println!("nodes banned by the crowd: {banned}");
    let _ = tracker.kill();
    let _ = tracker.wait();
    Ok(())
}
