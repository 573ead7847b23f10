//! Search on a generated catalogue (1,000,000 songs by default): the tracker over HTTP
//! against PostgreSQL full-text search (tsvector + GIN) on the same songs and the same
//! queries, in one run. Also index build time, and the tracker's memory and disk per song.
//!
//! bash scripts/bench-search.sh   (installs and starts PostgreSQL, builds release, runs this)
//!
//! The query mix is fixed by the seed: one title word; an artist's whole name; a title word
//! and an artist word; two words with the last one cut short (search as you type); a word
//! with a genre filter. Both systems answer the top 20 by relevance and the total count.
//! Every word must match, the last one also as a prefix; Medley also tolerates typos, which
//! PostgreSQL's full-text search does not do (so no query in the mix has a typo).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use medley_core::{Manifest, PublisherKey, SongMeta};
use medley_synth::{CatalogSpec, SynthSong, catalog};
use rand::{RngExt, SeedableRng};

#[derive(Debug, Parser)]
struct Args {
    /// Songs in the catalogue.
    #[arg(long, default_value_t = 1_000_000)]
    songs: usize,
    /// Distinct queries in the mix (each system answers all of them).
    #[arg(long, default_value_t = 20_000)]
    queries: usize,
    /// Requests in flight at once in the throughput phase.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Queries of the latency phase (one request at a time).
    #[arg(long, default_value_t = 2_000)]
    latency_queries: usize,
    /// Catalogue and query seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// PostgreSQL connection string.
    #[arg(
        long,
        default_value = "host=/tmp/medley-pg-sock port=5499 user=postgres dbname=postgres"
    )]
    pg: String,
    /// Directory of the release binaries [default: beside this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Skip PostgreSQL (for quick iterations on Medley alone; no ratios are printed).
    #[arg(long)]
    no_baseline: bool,
    /// Work directory [default: a temporary one].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also load the catalogue into tracker replicas on this PostgreSQL database (empty),
    /// and search through one replica and through three, against the RocksDB tracker.
    #[arg(long)]
    replicas: Option<String>,
}

/// A search request to the tracker at one of `bases`, by worker (so load spreads over
/// replicas as clients given their URLs would).
fn tracker_search(
    http: reqwest::Client,
    bases: Vec<String>,
) -> impl Fn(
    usize,
    Query,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<u64>> + Send>>
+ Clone {
    let bases = Arc::new(bases);
    move |worker: usize, q: Query| {
        let (http, base) = (http.clone(), bases[worker % bases.len()].clone());
        Box::pin(async move {
            let mut req = http
                .get(format!("{base}/v1/search"))
                .query(&[("q", q.words.join(" ")), ("limit", "20".into())]);
            if let Some(g) = &q.genre {
                req = req.query(&[("genre", g)]);
            }
            let v: serde_json::Value = req.send().await?.error_for_status()?.json().await?;
            Ok(v["total"].as_u64().unwrap_or(0))
        })
    }
}

/// `medley-tracker import` of `stream` into the tracker on `data`, with `extra` flags.
fn import(
    bins: &Path,
    data: &Path,
    stream: &Path,
    key: &PublisherKey,
    extra: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut cmd = Command::new(bins.join("medley-tracker"));
    cmd.args(["import", "--publisher", &key.id().to_string(), "--data-dir"])
        .arg(data)
        .arg(stream)
        .env("MEDLEY_LOG", "warn");
    for (flag, value) in extra {
        cmd.args([flag, value]);
    }
    let out = cmd.output().context("cannot run medley-tracker import")?;
    if !out.status.success() {
        bail!("import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// What the replicas' phase reuses of the run.
struct Inputs<'a> {
    bins: &'a Path,
    dir: &'a Path,
    stream: &'a Path,
    key: &'a PublisherKey,
    queries: &'a Arc<Vec<Query>>,
    one_at_a_time: &'a Arc<Vec<Query>>,
}

/// Starts `medley-tracker run` on `data` with `extra` arguments; its process and URL.
fn run_tracker(
    bins: &Path,
    data: &Path,
    extra: &[&str],
    key: Option<&Path>,
) -> anyhow::Result<(Proc, String, u32)> {
    let _ = std::fs::remove_file(data.join("tracker.json"));
    let mut cmd = Command::new(bins.join("medley-tracker"));
    cmd.args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("MEDLEY_LOG", "warn")
        // The load comes from one address: measure the search, not the rate limit.
        .env("MEDLEY_RATE_LIMIT_PER_SEC", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(k) = key {
        cmd.env("MEDLEY_SIGNING_KEY", k);
    }
    let child = cmd.spawn().context("cannot start medley-tracker")?;
    let pid = child.id();
    let proc = Proc(child);
    #[derive(serde::Deserialize)]
    struct Info {
        url: String,
    }
    let info: Info =
        medley_daemon::wait_for_json_file(&data.join("tracker.json"), Duration::from_secs(1800))
            .context("the tracker did not start")?;
    Ok((proc, info.url, pid))
}

/// The catalogue imported into PostgreSQL, three replicas on it, and the same queries
/// through one replica and through three, against the RocksDB tracker's figures of this run.
async fn replicas_phase(
    args: &Args,
    url: &str,
    inputs: &Inputs<'_>,
    rocks: (&mut Stats, &mut Stats),
) -> anyhow::Result<()> {
    let (bins, dir) = (inputs.bins, inputs.dir);
    let (queries, one_at_a_time) = (inputs.queries, inputs.one_at_a_time);
    let signing = dir.join("replicas.key");
    std::fs::write(&signing, [7u8; 32])?;
    let data: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("replica-{i}"))).collect();
    let t = Instant::now();
    import(
        inputs.bins,
        &data[0],
        inputs.stream,
        inputs.key,
        &[("--store", url)],
    )?;
    let import = t.elapsed();
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    let mut starts = Vec::new();
    for d in &data {
        let t = Instant::now();
        let (p, u, _) = run_tracker(bins, d, &["--store", url], Some(&signing))?;
        starts.push(t.elapsed());
        procs.push(p);
        urls.push(u);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let one = tracker_search(http.clone(), urls[..1].to_vec());
    let all = tracker_search(http, urls.clone());
    let warm = Arc::new(queries.iter().take(500).cloned().collect::<Vec<_>>());
    load(&warm, args.concurrency, all.clone()).await?;
    let mut r1 = load(one_at_a_time, 1, one.clone()).await?;
    let mut r = load(queries, args.concurrency, one).await?;
    let mut r3 = load(queries, args.concurrency, all).await?;
    let (rocks1, rocks) = rocks;
    println!(
        "replicas on PostgreSQL, {} songs, one request at a time:",
        args.songs
    );
    let (a50, a99) = report("rocksdb", rocks1);
    let (b50, b99) = report("pg, 1 repl", &mut r1);
    println!(
        "ratio pg replica/rocksdb: p50 {:.2}x, p99 {:.2}x",
        b50 / a50,
        b99 / a99
    );
    println!("replicas on PostgreSQL, {} in flight:", args.concurrency);
    let (c50, c99) = report("rocksdb", rocks);
    let qps = rocks.qps;
    let (d50, d99) = report("pg, 1 repl", &mut r);
    let (e50, e99) = report("pg, 3 repl", &mut r3);
    println!(
        "ratio 1 replica/rocksdb: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x; 3 replicas/rocksdb: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x (one machine: overhead, not scaling)",
        d50 / c50,
        d99 / c99,
        r.qps / qps,
        e50 / c50,
        e99 / c99,
        r3.qps / qps
    );
    println!(
        "import into PostgreSQL {:.1} s; replica starts (0 holds the import's index, 1 and 2 build theirs from the table): {}",
        import.as_secs_f64(),
        starts
            .iter()
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[derive(Debug, Clone)]
struct Query {
    words: Vec<String>,
    genre: Option<String>,
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn query_mix(songs: &[SynthSong], n: usize, seed: u64) -> Vec<Query> {
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed ^ 0x5eed);
    (0..n)
        .map(|i| {
            let s = &songs[rng.random_range(0..songs.len())];
            let tw = words(&s.title);
            let aw = words(&s.artist);
            let t = tw[rng.random_range(0..tw.len())].clone();
            let a = aw[rng.random_range(0..aw.len())].clone();
            match i % 10 {
                0..=2 => Query {
                    words: vec![t],
                    genre: None,
                },
                3 | 4 => Query {
                    words: aw,
                    genre: None,
                },
                5 | 6 => Query {
                    words: vec![t, a],
                    genre: None,
                },
                7 | 8 => {
                    let cut: String = a.chars().take(3.max(a.chars().count() / 2)).collect();
                    Query {
                        words: vec![t, cut],
                        genre: None,
                    }
                }
                _ => Query {
                    words: vec![t],
                    genre: Some(s.genre.clone()),
                },
            }
        })
        .collect()
}

fn bin_dir(args: &Args) -> PathBuf {
    args.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    })
}

fn meta_of(s: &SynthSong) -> SongMeta {
    SongMeta {
        title: s.title.clone(),
        artist: Some(s.artist.clone()),
        album: Some(s.album.clone()),
        genre: Some(s.genre.clone()),
        year: Some(s.year),
        track: Some(s.track),
        duration_ms: Some(s.duration_ms),
        codec: "flac".into(),
        mime: "audio/flac".into(),
        bitrate: Some(900_000),
    }
}

/// Signs a manifest per song (a few bytes of stand-in audio each: search never reads audio)
/// and writes the manifest stream and PostgreSQL's TSV.
fn write_inputs(
    songs: &[SynthSong],
    key: &PublisherKey,
    stream: &Path,
    tsv: &Path,
) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = songs.len().div_ceil(threads);
    let signed: Vec<Vec<Manifest>> = std::thread::scope(|s| {
        let parts: Vec<_> = songs
            .chunks(per)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|song| {
                            let data = (song.index as u64).to_le_bytes().repeat(4);
                            let body = medley_core::test_utils::body_for(
                                meta_of(song),
                                &data,
                                64 * 1024,
                                4,
                                2,
                                key.id(),
                            );
                            Manifest::sign(body, key)
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a signing thread panicked"))?
                    .map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut out = BufWriter::new(std::fs::File::create(stream)?);
    let mut t = BufWriter::new(std::fs::File::create(tsv)?);
    for (m, s) in signed.iter().flatten().zip(songs) {
        medley_tracker::cli::write_stream_record(&mut out, m.encoded())?;
        let clean = |x: &str| x.replace(['\t', '\n', '\\'], " ");
        writeln!(
            t,
            "{}\t{}\t{}\t{}\t{}\t{}",
            m.id(),
            clean(&s.title),
            clean(&s.artist),
            clean(&s.album),
            clean(&s.genre),
            s.year
        )?;
    }
    out.flush()?;
    t.flush()?;
    Ok(())
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&p),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Stats {
    lat_ms: Vec<f64>,
    /// (latency, query index) of every query, for finding the slow ones.
    by_query: Vec<(f64, usize)>,
    qps: f64,
    hits: u64,
}

fn report(name: &str, s: &mut Stats) -> (f64, f64) {
    s.lat_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        s.lat_ms[((p * s.lat_ms.len() as f64).ceil() as usize).clamp(1, s.lat_ms.len()) - 1]
    };
    let (p50, p99) = (pct(0.5), pct(0.99));
    println!(
        "{name:<12} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>12}",
        s.lat_ms.len(),
        p50,
        pct(0.9),
        p99,
        s.qps,
        s.hits
    );
    (p50, p99)
}

/// Runs every query through `f` with `concurrency` in flight; returns latencies and q/s.
async fn load<F, Fut>(queries: &Arc<Vec<Query>>, concurrency: usize, f: F) -> anyhow::Result<Stats>
where
    F: Fn(usize, Query) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (f, next, queries) = (f.clone(), next.clone(), queries.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut by_query = Vec::new();
            let mut hits = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(q) = queries.get(i) else { break };
                let t = Instant::now();
                hits += f(worker, q.clone()).await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                lat.push(ms);
                by_query.push((ms, i));
            }
            Ok::<_, anyhow::Error>((lat, by_query, hits))
        }));
    }
    let mut all = Stats {
        lat_ms: Vec::new(),
        by_query: Vec::new(),
        qps: 0.0,
        hits: 0,
    };
    for t in tasks {
        let (lat, by_query, hits) = t.await??;
        all.lat_ms.extend(lat);
        all.by_query.extend(by_query);
        all.hits += hits;
    }
    all.qps = all.lat_ms.len() as f64 / started.elapsed().as_secs_f64();
    Ok(all)
}

fn tsquery(q: &Query) -> String {
    let n = q.words.len();
    q.words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i + 1 == n {
                format!("{w}:*")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" & ")
}

/// Loads the songs into PostgreSQL: COPY, then a GIN index on a stored tsvector. Returns
/// the build time and the table's size with its indexes.
async fn load_postgres(args: &Args, tsv: &Path) -> anyhow::Result<(Duration, i64)> {
    let (pg, conn) = tokio_postgres::connect(&args.pg, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL ({})", args.pg))?;
    tokio::spawn(conn);
    pg.batch_execute(
        "DROP TABLE IF EXISTS songs;
         CREATE TABLE songs (id text, title text, artist text, album text, genre text, year int);",
    )
    .await?;
    let t = Instant::now();
    let copy = Command::new("psql")
        .arg(&args.pg)
        .args(["-q", "-c"])
        .arg(format!("\\copy songs FROM '{}'", tsv.display()))
        .output()
        .context("cannot run psql")?;
    if !copy.status.success() {
        bail!(
            "psql \\copy failed: {}",
            String::from_utf8_lossy(&copy.stderr)
        );
    }
    pg.batch_execute(
        "ALTER TABLE songs ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
             to_tsvector('simple', coalesce(title,'') || ' ' || coalesce(artist,'') || ' ' ||
                                   coalesce(album,'') || ' ' || coalesce(genre,''))) STORED;
         CREATE INDEX songs_tsv ON songs USING GIN (tsv);
         CREATE INDEX songs_genre ON songs (lower(genre));",
    )
    .await?;
    pg.batch_execute("VACUUM ANALYZE songs").await?;
    let pg_build = t.elapsed();
    let pg_disk: i64 = pg
        .query_one("SELECT pg_total_relation_size('songs')", &[])
        .await?
        .get(0);

    Ok((pg_build, pg_disk))
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let bins = bin_dir(&args);
    let key = PublisherKey::from_seed([7; 32]);

    eprintln!("generating {} songs…", args.songs);
    let songs: Vec<SynthSong> = catalog(CatalogSpec {
        songs: args.songs,
        seed: args.seed,
    })
    .collect();
    let queries = Arc::new(query_mix(&songs, args.queries, args.seed));
    let (stream, tsv) = (dir.join("manifests.bin"), dir.join("songs.tsv"));
    let t = Instant::now();
    write_inputs(&songs, &key, &stream, &tsv)?;
    let stream_bytes = std::fs::metadata(&stream)?.len();
    eprintln!(
        "signed {} manifests in {:.1} s, {:.0} B each on average (with the 4-byte length)",
        songs.len(),
        t.elapsed().as_secs_f64(),
        stream_bytes as f64 / songs.len().max(1) as f64
    );
    drop(songs);

    // Medley: bulk import into a stopped tracker, then start it.
    let data = dir.join("tracker");
    let _ = std::fs::remove_dir_all(&data);
    let t = Instant::now();
    import(&bins, &data, &stream, &key, &[])?;
    let medley_build = t.elapsed();
    let (_tracker, url, pid) = run_tracker(&bins, &data, &[], None)?;
    let medley_disk = du(&data);

    // Queries: warm up both, then the whole mix on each.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let medley = tracker_search(http.clone(), vec![url]);
    let one_at_a_time = Arc::new(
        queries
            .iter()
            .take(args.latency_queries)
            .cloned()
            .collect::<Vec<_>>(),
    );
    let header = || {
        println!(
            "{:<12} {:>8} {:>9} {:>9} {:>9} {:>10} {:>12}",
            "system", "queries", "p50 ms", "p90 ms", "p99 ms", "q/s", "hits"
        )
    };
    let warm = Arc::new(queries.iter().take(500).cloned().collect::<Vec<_>>());
    let inputs = Inputs {
        bins: &bins,
        dir: &dir,
        stream: &stream,
        key: &key,
        queries: &queries,
        one_at_a_time: &one_at_a_time,
    };
    if args.no_baseline {
        load(&warm, args.concurrency, medley.clone()).await?;
        let mut m1 = load(&one_at_a_time, 1, medley.clone()).await?;
        let mut m = load(&queries, args.concurrency, medley.clone()).await?;
        header();
        report("medley, 1", &mut m1);
        report(&format!("medley, {}", args.concurrency), &mut m);
        println!("medley import {:.1} s", medley_build.as_secs_f64());
        if let Some(url) = &args.replicas {
            replicas_phase(&args, url, &inputs, (&mut m1, &mut m)).await?;
            return Ok(());
        }
        m1.by_query.sort_by(|a, b| b.0.total_cmp(&a.0));
        println!("slowest queries, one at a time:");
        for (ms, i) in m1.by_query.iter().take(12) {
            println!("  {ms:>8.2} ms  {:?}", one_at_a_time[*i]);
        }
        return Ok(());
    }
    let (pg_build, pg_disk) = load_postgres(&args, &tsv).await?;
    let mut clients = Vec::new();
    for _ in 0..args.concurrency {
        let (c, conn) = tokio_postgres::connect(&args.pg, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        clients.push(c);
    }
    let clients = Arc::new(clients);
    let postgres = {
        let clients = clients.clone();
        move |worker: usize, q: Query| {
            let clients = clients.clone();
            async move {
                let c = &clients[worker % clients.len()];
                let ts = tsquery(&q);
                let rows = match &q.genre {
                    None => {
                        c.query(
                            "SELECT id, title, artist, album, genre, year, r, total FROM (
                               SELECT id, title, artist, album, genre, year,
                                      ts_rank(tsv, q) AS r, count(*) OVER () AS total
                               FROM songs, to_tsquery('simple', $1) q WHERE tsv @@ q
                             ) s ORDER BY r DESC LIMIT 20",
                            &[&ts],
                        )
                        .await?
                    }
                    Some(g) => {
                        c.query(
                            "SELECT id, title, artist, album, genre, year, r, total FROM (
                               SELECT id, title, artist, album, genre, year,
                                      ts_rank(tsv, q) AS r, count(*) OVER () AS total
                               FROM songs, to_tsquery('simple', $1) q
                               WHERE tsv @@ q AND lower(genre) = lower($2)
                             ) s ORDER BY r DESC LIMIT 20",
                            &[&ts, g],
                        )
                        .await?
                    }
                };
                Ok(rows.first().map_or(0, |r| r.get::<_, i64>(7) as u64))
            }
        }
    };
    load(&warm, args.concurrency, medley.clone()).await?;
    load(&warm, args.concurrency, postgres.clone()).await?;
    let mut m1 = load(&one_at_a_time, 1, medley.clone()).await?;
    let mut p1 = load(&one_at_a_time, 1, postgres.clone()).await?;
    let mut m = load(&queries, args.concurrency, medley.clone()).await?;
    let mut p = load(&queries, args.concurrency, postgres.clone()).await?;
    let rss = medley_daemon::resident_bytes(Some(pid)).unwrap_or(0);

    let n = args.songs as f64;
    println!("search, {} songs, one request at a time:", args.songs);
    header();
    let (a50, a99) = report("medley", &mut m1);
    let (b50, b99) = report("postgresql", &mut p1);
    println!(
        "ratio medley/postgresql: p50 {:.2}x, p99 {:.2}x",
        a50 / b50,
        a99 / b99
    );
    println!(
        "search, {} songs, {} queries, {} in flight:",
        args.songs,
        queries.len(),
        args.concurrency
    );
    header();
    let (m50, m99) = report("medley", &mut m);
    let (p50, p99) = report("postgresql", &mut p);
    println!(
        "ratio medley/postgresql: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x",
        m50 / p50,
        m99 / p99,
        m.qps / p.qps
    );
    println!(
        "index build: medley import {:.1} s (RocksDB + tantivy, signatures checked), postgresql COPY + GIN {:.1} s",
        medley_build.as_secs_f64(),
        pg_build.as_secs_f64()
    );
    println!(
        "per song: medley disk {:.0} B (manifests + index), tracker memory {:.0} B (RSS {:.0} MiB); postgresql table + indexes {:.0} B",
        medley_disk as f64 / n,
        rss as f64 / n,
        rss as f64 / 1048576.0,
        pg_disk as f64 / n
    );
    if let Some(url) = &args.replicas {
        replicas_phase(&args, url, &inputs, (&mut m1, &mut m)).await?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Runtime::new()?.block_on(main_async(args))
}
