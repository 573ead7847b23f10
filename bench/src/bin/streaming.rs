//! Time to first audio and download throughput on a loopback testnet (tracker and 6 nodes in
//! 3 regions, real processes), beside nginx serving the same files with HTTP Range requests
//! on loopback, measured in the same run and interleaved play by play.
//!
//! Each play is timed from the request to the first decoded PCM written, through the same
//! symphonia decoder for every source:
//! - medley (warm): a long-running listener (connections to nodes kept open between plays),
//!   asking the tracker for the manifest and the sources, then fetching shards;
//! - medley (cold): a new client per play, as `medley play` starts: a new QUIC peer and new
//!   connections every time;
//! - nginx: a new TCP connection per play, `Range: bytes=0-`, as a player does.
//!
//! bash scripts/bench-streaming.sh   (installs nginx, builds release, runs this)

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use medley_bench::{http_get, latency_row, published_testnet};
use medley_client::{Client, Output, decode_reader};

#[derive(Debug, Parser)]
struct Args {
    /// Plays per source.
    #[arg(long, default_value_t = 240)]
    plays: usize,
    /// Songs in the library.
    #[arg(long, default_value_t = 24)]
    songs: usize,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Size of the song of the `medley get` phase, in MiB (0 skips the phase).
    #[arg(long, default_value_t = 40)]
    big_mib: u64,
    /// Downloads of that song per source (alternating `medley get` and nginx).
    #[arg(long, default_value_t = 5)]
    big_rounds: usize,
}

struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(bin: &Path, prefix: &Path, root: &Path) -> anyhow::Result<Nginx> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = format!(
        "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  types {{ audio/flac flac; }}\n\
         client_body_temp_path {p}/tmp;\n  proxy_temp_path {p}/tmp;\n  fastcgi_temp_path {p}/tmp;\n\
         uwsgi_temp_path {p}/tmp;\n  scgi_temp_path {p}/tmp;\n\
         server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
        p = prefix.display(),
        root = root.display()
    );
    std::fs::write(prefix.join("nginx.conf"), conf)?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {} (apt-get install nginx)", bin.display()))?;
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "nginx did not start; see {}/logs/error.log",
                prefix.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Nginx { child, port })
}

fn url_path(root: &Path, file: &Path) -> anyhow::Result<String> {
    let rel = file.strip_prefix(root)?;
    let mut out = String::new();
    for part in rel.components() {
        out.push('/');
        for b in part.as_os_str().to_string_lossy().bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    Ok(out)
}

struct Series {
    name: &'static str,
    ms: Vec<f64>,
}

impl Series {
    fn row(&mut self) -> (f64, f64, f64) {
        latency_row(self.name, 14, &mut self.ms)
    }
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (net, ids) = published_testnet(
        medley_testnet::Testnet::builder(),
        dir.path(),
        args.bin_dir.as_deref(),
        args.songs,
        99,
        (20.0, 40.0),
    )
    .await?;
    let lib = dir.path().join("library");
    let total_bytes: u64 = ids
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    eprintln!(
        "{} songs, {:.1} MiB; starting nginx…",
        ids.len(),
        total_bytes as f64 / 1048576.0
    );
    let nginx = start_nginx(&args.nginx, &dir.path().join("nginx"), &lib)?;
    let regions = net.regions();
    let warm: Vec<Client> = regions
        .iter()
        .map(|r| Client::new(net.client_config(r, false)))
        .collect::<Result<_, _>>()?;
    let sink = Output::File(PathBuf::from("/dev/null"));

    let mut medley_warm = Series {
        name: "medley warm",
        ms: Vec::new(),
    };
    let mut medley_cold = Series {
        name: "medley cold",
        ms: Vec::new(),
    };
    let mut nginx_s = Series {
        name: "nginx",
        ms: Vec::new(),
    };
    let warmup = 6;
    for i in 0..args.plays + warmup {
        let (id, path) = &ids[i % ids.len()];
        let r = i % regions.len();
        // Medley, long-running listener.
        let t = Instant::now();
        let o = warm[r].play(*id, sink.clone(), t, None).await?;
        if i >= warmup {
            medley_warm.ms.push(o.time_to_first_audio_ms);
        }
        // nginx, new connection, Range request, same decoder.
        let (port, url) = (nginx.port, url_path(&lib, path)?);
        let out = sink.clone();
        let ms = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
            let t = Instant::now();
            let (status, body) = http_get(port, &url, Some("bytes=0-"))?;
            if status != 206 {
                bail!("nginx answered {status} to a range request");
            }
            let (_, _, _, ttfa) = decode_reader(Box::new(body), Some("flac"), &out, t)?;
            Ok(ttfa.as_secs_f64() * 1000.0)
        })
        .await??;
        if i >= warmup {
            nginx_s.ms.push(ms);
        }
        // Medley, a new client per play.
        let t = Instant::now();
        let cold = Client::new(net.client_config(&regions[r], false))?;
        let o = cold.play(*id, sink.clone(), t, None).await?;
        cold.shutdown().await;
        if i >= warmup {
            medley_cold.ms.push(o.time_to_first_audio_ms);
        }
    }
    println!(
        "time to first audio, ms ({} plays of {} songs each):",
        args.plays,
        ids.len()
    );
    println!(
        "{:<14} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "source", "plays", "p50", "p90", "p99", "max"
    );
    let (w50, _, w99) = medley_warm.row();
    let (c50, _, c99) = medley_cold.row();
    let (n50, _, n99) = nginx_s.row();
    println!(
        "ratio to nginx: warm p50 {:.2}x p99 {:.2}x; cold p50 {:.2}x p99 {:.2}x",
        w50 / n50,
        w99 / n99,
        c50 / n50,
        c99 / n99
    );

    // Download throughput, whole songs to a file, alternating sources.
    let dl = dir.path().join("dl");
    let (mut medley_t, mut nginx_t) = (Duration::ZERO, Duration::ZERO);
    let rounds = 3;
    for _ in 0..rounds {
        for (id, path) in &ids {
            let t = Instant::now();
            warm[0].download(*id, &dl).await?;
            medley_t += t.elapsed();
            nginx_t += nginx_download(nginx.port, url_path(&lib, path)?, dl.clone()).await?;
        }
    }
    let mib = (total_bytes * rounds) as f64 / 1048576.0;
    let (m, n) = (mib / medley_t.as_secs_f64(), mib / nginx_t.as_secs_f64());
    println!("download throughput (whole songs, sequential, {rounds} rounds):");
    println!(
        "  medley {m:.1} MiB/s, nginx {n:.1} MiB/s, ratio {:.2}x",
        m / n
    );
    for c in &warm {
        c.shutdown().await;
    }
    if args.big_mib > 0 {
        big_get(&args, &net, &lib, nginx.port).await?;
    }
    Ok(())
}

/// A whole file from nginx over a new connection, written to `out` and synced: how long.
async fn nginx_download(port: u16, url: String, out: PathBuf) -> anyhow::Result<Duration> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let t = Instant::now();
        let (status, mut body) = http_get(port, &url, None)?;
        if status != 200 {
            bail!("nginx answered {status}");
        }
        let mut f = std::fs::File::create(&out)?;
        std::io::copy(&mut body, &mut f)?;
        f.sync_all()?;
        Ok(t.elapsed())
    })
    .await?
}

/// The region the downloads of the `medley get` phase say they are in: one without nodes,
/// so that their repeated requests for one song do not make it hot (a surge orders hot
/// copies in the requesters' region) and the nodes filling copies do not share the machine
/// with the measurement.
const GET_REGION: &str = "bench-get";

/// `medley get` of one large song (a new process each time, as a user runs it, with no
/// cache, so every byte comes from the nodes) against nginx serving the same file over a
/// new connection, alternating; both write the file and sync it.
async fn big_get(
    args: &Args,
    net: &medley_testnet::Testnet,
    lib: &Path,
    nginx_port: u16,
) -> anyhow::Result<()> {
    let dir = lib.join("big");
    let want = args.big_mib * 1048576;
    // The synthesizer's FLAC at 96 kHz (its highest rate): size grows with length, so scale a short probe.
    eprintln!("synthesizing a {} MiB song…", args.big_mib);
    let probe = lib.join("big-probe");
    let probe_bytes = {
        let p = probe.clone();
        tokio::task::spawn_blocking(move || {
            medley_testnet::library::generate_at(&p, 1, 4242, (20.0, 20.0), &[96_000], |_| {})
        })
        .await??
        .first()
        .map(|s| std::fs::metadata(&s.path).map(|m| m.len()))
        .context("no probe song")??
    };
    std::fs::remove_dir_all(&probe)?;
    let seconds = 20.0 * want as f64 / probe_bytes.max(1) as f64 * 1.02;
    let song = {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || {
            medley_testnet::library::generate_at(&d, 1, 4242, (seconds, seconds), &[96_000], |_| {})
        })
        .await??
        .pop()
        .context("no song")?
    };
    let size = std::fs::metadata(&song.path)?.len();
    let publisher = Client::new(net.client_config("eu-west", true))?;
    let summary = publisher.publish_path(&dir).await?;
    publisher.shutdown().await;
    let id = match summary.files.into_iter().next() {
        Some(medley_client::FileOutcome::Published(p)) => p.id,
        other => bail!("publish of the large song failed: {other:?}"),
    };
    let out = lib.join("big-got");
    let url = url_path(lib, &song.path)?;
    // The same download in a long-running client (no process start, no QUIC handshakes,
    // no shutdown), with no cache either: what the data path itself reaches.
    let mut config = net.client_config("eu-west", false);
    config.cache_bytes = bytesize::ByteSize::b(0);
    config.region = GET_REGION.into();
    let in_process = Client::new(config)?;
    let (mut medley_t, mut nginx_t, mut warm_t) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.big_rounds + 1 {
        let t = Instant::now();
        let got = net
            .medley("eu-west", false)
            .env("MEDLEY_CACHE_BYTES", "0")
            .env("MEDLEY_REGION", GET_REGION)
            .args(["get", &id, "-o"])
            .arg(&out)
            .output()?;
        let m = t.elapsed();
        if !got.status.success() {
            bail!(
                "medley get failed: {}",
                String::from_utf8_lossy(&got.stderr)
            );
        }
        if std::fs::metadata(&out)?.len() != size {
            bail!("medley get wrote the wrong length");
        }
        let n = nginx_download(nginx_port, url.clone(), out.clone()).await?;
        let t = Instant::now();
        in_process.download(id.parse()?, &out).await?;
        let w = t.elapsed();
        // The first round warms them all (page cache, connections).
        if round > 0 {
            medley_t.push(m.as_secs_f64());
            nginx_t.push(n.as_secs_f64());
            warm_t.push(w.as_secs_f64());
        }
    }
    in_process.shutdown().await;
    let mib = size as f64 / 1048576.0;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m, n) = (mib / median(&mut medley_t), mib / median(&mut nginx_t));
    let w = mib / median(&mut warm_t);
    println!(
        "medley get of a {mib:.1} MiB song (new process, no cache; median of {}): {m:.1} MiB/s, nginx {n:.1} MiB/s, ratio {:.2}x",
        args.big_rounds,
        m / n
    );
    println!(
        "  the same download in a running client: {w:.1} MiB/s, ratio {:.2}x",
        w / n
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Runtime::new()?.block_on(main_async(args))
}
