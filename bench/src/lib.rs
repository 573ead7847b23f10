//! Shared pieces of Medley's benchmark binaries.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Deterministic pseudo-random bytes (xorshift), so every run moves the same data.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Throughput in MiB/s.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Sorts `ms` and prints one table row: `name` (padded to `width`), count, p50, p90, p99
/// and max. Returns (p50, p90, p99).
pub fn latency_row(name: &str, width: usize, ms: &mut [f64]) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p90, p99) = (
        percentile(ms, 0.5),
        percentile(ms, 0.9),
        percentile(ms, 0.99),
    );
    println!(
        "{name:<width$} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        ms.len(),
        p50,
        p90,
        p99,
        ms.last().copied().unwrap_or(f64::NAN)
    );
    (p50, p90, p99)
}

/// Median of a non-empty slice.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A GET on loopback `port` over a new connection; returns the status and a reader of the body.
pub fn http_get(
    port: u16,
    path: &str,
    range: Option<&str>,
) -> std::io::Result<(u16, std::io::Take<BufReader<TcpStream>>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{range}Connection: close\r\n\r\n"
    )?;
    let mut r = BufReader::with_capacity(1 << 16, s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse::<u64>().ok();
        }
    }
    Ok((
        status,
        r.take(len.ok_or_else(|| std::io::Error::other("no Content-Length"))?),
    ))
}

/// The `p` quantile of sorted values (nearest rank), as the testnet's reports compute it.
pub use medley_testnet::report::quantile as percentile;

/// A loopback testnet shaped by `builder` under `dir/net` (binaries from `bin_dir`, else
/// beside this one), with `songs` synthesized songs of `min_s` to `max_s` seconds written
/// to `dir/library` and published. Returns the network and each song's id and file.
pub async fn published_testnet(
    builder: medley_testnet::TestnetBuilder,
    dir: &std::path::Path,
    bin_dir: Option<&std::path::Path>,
    songs: usize,
    seed: u64,
    (min_s, max_s): (f64, f64),
) -> anyhow::Result<(
    medley_testnet::Testnet,
    Vec<(medley_core::SongId, std::path::PathBuf)>,
)> {
    use anyhow::Context as _;
    let mut b = builder.log("warn").dir(dir.join("net"));
    if let Some(d) = bin_dir {
        b = b.bin_dir(d);
    }
    let net = b.spawn().await.context("cannot start the testnet")?;
    let lib = dir.join("library");
    eprintln!("synthesizing {songs} songs…");
    {
        let l = lib.clone();
        tokio::task::spawn_blocking(move || {
            medley_testnet::library::generate(&l, songs, seed, min_s, max_s)
        })
        .await??;
    }
    let publisher = medley_client::Client::new(net.client_config("eu-west", true))?;
    let summary = publisher.publish_path(&lib).await?;
    publisher.shutdown().await;
    let mut ids = Vec::new();
    for f in summary.files {
        match f {
            medley_client::FileOutcome::Published(p) => ids.push((p.id.parse()?, p.path)),
            other => anyhow::bail!("publish failed: {other:?}"),
        }
    }
    Ok((net, ids))
}
