//! What the testnet's user-space link emulation costs: the delay line's CPU per packet
//! (cores per 1,000 packets a second) and the round trip it adds with zero delay configured,
//! against unshaped loopback in the same run. Needs root and iptables-legacy.
//!
//! cargo run --release -p medley-bench --bin linkemu [-- --secs 5]

use std::time::{Duration, Instant};

use clap::Parser;
use medley_testnet::scenario::{Emulation, Network};
use medley_testnet::shaping::{self, Shaping};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of traffic per rate.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Packets per second offered, in turn.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,40000")]
    rates: Vec<u64>,
}

/// CPU seconds the delay line's thread has used (from /proc).
fn delay_line_cpu() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("medley-delay") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
        let rest = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (u, s) = (
            f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
            f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
        );
        return (u + s) / ticks;
    }
    0.0
}

/// Sends 200-byte datagrams from region 0 to region 1 at `pps` for `secs`; returns how many
/// arrived.
async fn blast(pps: u64, secs: u64) -> anyhow::Result<u64> {
    let rx = tokio::net::UdpSocket::bind((shaping::region_ip(1).as_str(), 0)).await?;
    let to = rx.local_addr()?;
    let counter = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let mut n = 0u64;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), rx.recv_from(&mut buf)).await
        {
            n += 1;
        }
        n
    });
    let tx = tokio::net::UdpSocket::bind((shaping::region_ip(0).as_str(), 0)).await?;
    let per_tick = (pps / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(per_tick as f64 / pps as f64));
    let data = [1u8; 200];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        for _ in 0..per_tick {
            tx.send_to(&data, to).await?;
        }
    }
    Ok(counter.await?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let regions = vec!["a".to_string(), "b".to_string()];
    let (a, b) = (shaping::region_ip(0), shaping::region_ip(1));
    let rtt = |n| {
        let (a, b) = (a.clone(), b.clone());
        async move { shaping::udp_rtt(&a, &b, n).await }
    };
    let unshaped = rtt(200).await?;
    let network = Network {
        emulation: Emulation::Userspace,
        ..Network::default()
    };
    let mut s = Shaping::start(&regions, &network, 1)?;
    let through = rtt(200).await?;
    println!(
        "round trip, median of 200: unshaped {:.3} ms, through the delay line (0 ms set) {:.3} ms: +{:.3} ms",
        unshaped,
        through,
        through - unshaped
    );
    println!(
        "{:>10} {:>10} {:>12} {:>8} {:>16}",
        "offered", "arrived", "passed", "cores", "cores per 1k/s"
    );
    for pps in &args.rates {
        let cpu0 = delay_line_cpu();
        let started = Instant::now();
        let arrived = blast(*pps, args.secs).await?;
        let wall = started.elapsed().as_secs_f64() - 1.0;
        let cores = (delay_line_cpu() - cpu0) / wall;
        let passed = s.delay_line_counters().map_or(0, |c| c.0);
        println!(
            "{:>10} {:>10} {:>12} {:>8.3} {:>16.4}",
            pps,
            arrived,
            passed,
            cores,
            cores / (*pps as f64 / 1000.0)
        );
    }
    s.stop();
    Ok(())
}
