//! What a storage audit costs a node, against serving the shard it proves.
//!
//! One in-process `medley-node` holds `--shards` durable 64 KiB shards in RocksDB (read back
//! and checked against their ids on every read, as always). A client on loopback asks for
//! each shard whole (`GetShard`, what a listener's play costs the node per shard), and asks
//! the node to prove a random 1 KiB range of each (`Audit`, what the tracker's audit
//! costs); the two measurements are interleaved in rounds, so both see the same load, and
//! the median of `--reps` is kept. CPU is the process's (node and client together: an upper
//! bound on the node's share), bytes are what the node sends.
//!
//! Then the cost at the tracker's default rate, one audit a minute per node, as a share of
//! serving one listener for the hour (a 320 kbit/s stream: 144 MB an hour).
//!
//! cargo run --release -p medley-bench --bin audit

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use futures::StreamExt;
use medley_bench::{median, pseudo_random};
use medley_core::{Challenge, ShardId};
use medley_net::Peer;
use medley_node::{Node, NodeConfig, Tier};

#[derive(Parser)]
struct Args {
    /// Distinct shards stored and fetched or audited per round.
    #[arg(long, default_value_t = 512)]
    shards: usize,
    /// Shard size.
    #[arg(long, default_value_t = 64 * 1024)]
    shard: usize,
    /// Rounds of each measurement, interleaved; the median round is reported.
    #[arg(long, default_value_t = 9)]
    reps: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
}

/// Wall and CPU time of one round, and bytes the node sent.
struct Round {
    wall: Duration,
    cpu: f64,
    bytes: u64,
}

async fn measure<F, Fut>(n: usize, in_flight: usize, one: F) -> Round
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let cpu = medley_testnet::run::self_usage().0;
    let start = Instant::now();
    let bytes: u64 = futures::stream::iter(0..n)
        .map(one)
        .buffer_unordered(in_flight)
        .fold(0, |a, b| async move { a + b })
        .await;
    Round {
        wall: start.elapsed(),
        cpu: medley_testnet::run::self_usage().0 - cpu,
        bytes,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let node = Node::bind(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
        capacity: bytesize::ByteSize::gib(8),
        peer_bytes_per_sec: bytesize::ByteSize::b(0),
        // Every read goes to RocksDB and is checked, as an audit of a cold shard does.
        hot_cache: bytesize::ByteSize::b(0),
        ..NodeConfig::default()
    })
    .await?;
    let shards: Vec<Vec<u8>> = (0..args.shards)
        .map(|i| pseudo_random(i as u64 + 1, args.shard))
        .collect();
    let ids: Vec<ShardId> = shards.iter().map(|s| ShardId::of(s)).collect();
    for (id, s) in ids.iter().zip(&shards) {
        node.store().put(Tier::Durable, id.0, s)?;
    }
    let (node_id, addrs) = (node.peer_id(), node.listen_addrs().await);
    let client = Peer::dial_only().await?;
    // Connections up before anything is timed.
    client.get_shard(node_id, addrs.clone(), ids[0]).await?;

    let mut serve = Vec::new();
    let mut audit = Vec::new();
    for round in 0..args.reps {
        serve.push(
            measure(args.shards, args.in_flight, |i| {
                let (client, addrs, id) = (client.clone(), addrs.clone(), ids[i]);
                async move {
                    let data = client.get_shard(node_id, addrs, id).await;
                    data.map_or(0, |d| d.len() as u64)
                }
            })
            .await,
        );
        let round_seed = round as u64 + 1;
        audit.push(
            measure(args.shards, args.in_flight, |i| {
                let (client, addrs, id) = (client.clone(), addrs.clone(), ids[i]);
                let len = args.shard;
                async move {
                    let entropy = (round_seed << 32) ^ i as u64;
                    let challenge =
                        Challenge::pick(id, len, entropy.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    match client.audit(node_id, addrs, challenge).await {
                        Ok(bytes) => bytes as u64,
                        Err(e) => panic!("audit of an honest node failed: {e}"),
                    }
                }
            })
            .await,
        );
    }
    let per = |rounds: &[Round]| -> (f64, f64, f64) {
        let n = args.shards as f64;
        let mut wall: Vec<f64> = rounds
            .iter()
            .map(|r| r.wall.as_secs_f64() * 1e6 / n)
            .collect();
        let mut cpu: Vec<f64> = rounds.iter().map(|r| r.cpu * 1e6 / n).collect();
        let mut bytes: Vec<f64> = rounds.iter().map(|r| r.bytes as f64 / n).collect();
        (median(&mut wall), median(&mut cpu), median(&mut bytes))
    };
    let (s_wall, s_cpu, s_bytes) = per(&serve);
    let (a_wall, a_cpu, a_bytes) = per(&audit);
    println!(
        "{} shards of {} KiB, {} in flight, median of {} interleaved rounds",
        args.shards,
        args.shard / 1024,
        args.in_flight,
        args.reps
    );
    println!("| request | wall µs / request | CPU µs / request | bytes sent / request |");
    println!("|---|---:|---:|---:|");
    println!("| GetShard (serving) | {s_wall:.0} | {s_cpu:.0} | {s_bytes:.0} |");
    println!("| Audit (1 KiB range proved) | {a_wall:.0} | {a_cpu:.0} | {a_bytes:.0} |");
    println!(
        "| audit / serving | {:.2}× | {:.2}× | {:.4}× |",
        a_wall / s_wall,
        a_cpu / s_cpu,
        a_bytes / s_bytes
    );
    // The default rate: one audit a minute per node; one listener's hour: 144 MB.
    let audits_per_hour = 60.0;
    let audit_bytes_hour = audits_per_hour * a_bytes;
    let audit_cpu_hour = audits_per_hour * a_cpu / 1e6;
    let listener_bytes_hour = 320_000.0 / 8.0 * 3600.0;
    let listener_shards_hour = listener_bytes_hour / s_bytes;
    let listener_cpu_hour = listener_shards_hour * s_cpu / 1e6;
    println!();
    println!(
        "per node per hour at the default rate (60 audits): {:.1} KiB sent, {:.3} s of CPU",
        audit_bytes_hour / 1024.0,
        audit_cpu_hour
    );
    println!(
        "serving one 320 kbit/s listener for the hour: {:.0} MiB sent, {:.2} s of CPU",
        listener_bytes_hour / (1 << 20) as f64,
        listener_cpu_hour
    );
    println!(
        "audits as a share of that: {:.4} % of the bytes, {:.3} % of the CPU",
        100.0 * audit_bytes_hour / listener_bytes_hour,
        100.0 * audit_cpu_hour / listener_cpu_hour
    );
    client.shutdown(Duration::from_secs(1)).await;
    node.shutdown(Duration::from_secs(2)).await?;
    Ok(())
}
