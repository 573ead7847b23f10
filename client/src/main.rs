//! `medley`: publish, search, play and download songs on a Medley network.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use medley_client::{
    CONFIG_FILE, Client, ClientConfig, FileOutcome, Output, SearchParams, default_data_dir,
};

/// Medley: a peer-assisted network that stores and streams music.
#[derive(Debug, Parser)]
#[command(name = "medley", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `medley_client=debug`.
    #[arg(
        long,
        global = true,
        env = "MEDLEY_LOG",
        default_value = "warn,lofty=error,symphonia_core::probe=off"
    )]
    log: String,
    /// Tracker URL, e.g. http://127.0.0.1:4700.
    #[arg(long, global = true, env = "MEDLEY_TRACKER")]
    tracker: Option<String>,
    /// This listener's region.
    #[arg(long, global = true, env = "MEDLEY_REGION")]
    region: Option<String>,
    /// Data directory (identity, publisher key, medley.toml) [default: ~/.local/share/medley].
    #[arg(long, global = true, env = "MEDLEY_CLIENT_DIR")]
    data_dir: Option<PathBuf>,
    /// Config file [default: <data-dir>/medley.toml, if it exists].
    #[arg(long, global = true, env = "MEDLEY_CLIENT_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish an audio file, or every audio file under a folder.
    Publish {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search the catalogue.
    Search {
        /// Words to look for (title, artist, album, genre; typos and prefixes allowed).
        query: Vec<String>,
        /// Only this artist.
        #[arg(long)]
        artist: Option<String>,
        /// Only this album.
        #[arg(long)]
        album: Option<String>,
        /// Only this genre.
        #[arg(long)]
        genre: Option<String>,
        /// Only this year, or a range like 1990-1999.
        #[arg(long)]
        year: Option<String>,
        /// Results to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print a JSON array of results.
        #[arg(long)]
        json: bool,
    },
    /// Stream a song (by id, or the best match of a query) and decode it.
    Play {
        /// A song id, or search words.
        #[arg(required = true)]
        what: Vec<String>,
        /// Write WAV to FILE ('-': standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Print a JSON summary on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Download a song, byte-identical to what was published.
    Get {
        /// The song id.
        id: String,
        /// Output file ('-': standard output).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Show this client's identity and publisher key.
    Id,
}

fn config(g: &Global) -> anyhow::Result<ClientConfig> {
    let data_dir = g.data_dir.clone().unwrap_or_else(default_data_dir);
    let mut c: ClientConfig =
        medley_daemon::load_config(g.config.as_deref(), Some(&data_dir), CONFIG_FILE)?;
    if let Some(d) = &g.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(t) = &g.tracker {
        c.tracker = t.clone();
    }
    if let Some(r) = &g.region {
        c.region = r.clone();
    }
    c.validate().context("invalid configuration")?;
    Ok(c)
}

fn year_range(y: &str) -> anyhow::Result<(u16, u16)> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u16>()
            .with_context(|| format!("--year {y:?}: expected YEAR or FROM-TO"))
    };
    Ok(match y.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let v = parse(y)?;
            (v, v)
        }
    })
}

fn clock(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{}:{:02}", ms / 60_000, ms / 1000 % 60))
        .unwrap_or_default()
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = config(&cli.global)?;
    let client = Client::new(config)?;
    let code = match cli.command {
        Command::Publish { paths, json } => {
            let mut failures = 0;
            let mut all = Vec::new();
            for p in &paths {
                let summary = client
                    .publish_path(p)
                    .await
                    .with_context(|| format!("cannot publish {}", p.display()))?;
                failures += summary.failures();
                all.extend(summary.files);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for f in &all {
                    match f {
                        FileOutcome::Published(p) => println!(
                            "{} {}  {} — {}  ({})",
                            if p.created { "published" } else { "unchanged" },
                            p.id,
                            p.meta.title,
                            p.meta.artist.as_deref().unwrap_or("unknown artist"),
                            p.path.display()
                        ),
                        FileOutcome::Skipped { path, reason } => {
                            println!("skipped   {}: {reason}", path.display());
                        }
                        FileOutcome::Failed { path, error } => {
                            println!("FAILED    {}: {error}", path.display());
                        }
                    }
                }
            }
            if failures > 0 {
                eprintln!("error: {failures} file(s) failed to publish");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Search {
            query,
            artist,
            album,
            genre,
            year,
            limit,
            json,
        } => {
            let (year_from, year_to) = match year.as_deref().map(year_range).transpose()? {
                Some((a, b)) => (Some(a), Some(b)),
                None => (None, None),
            };
            let page = client
                .tracker()
                .search(&SearchParams {
                    q: query.join(" "),
                    artist,
                    album,
                    genre,
                    year_from,
                    year_to,
                    offset: None,
                    limit: Some(limit),
                })
                .await
                .context("search failed")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.results)?);
            } else if page.results.is_empty() {
                println!("no songs found");
            } else {
                println!(
                    "{:<12}  {:<28}  {:<22}  {:<22}  {:<11}  {:>4}  {:>5}",
                    "ID", "TITLE", "ARTIST", "ALBUM", "GENRE", "YEAR", "TIME"
                );
                for h in &page.results {
                    println!(
                        "{:<12}  {:<28}  {:<22}  {:<22}  {:<11}  {:>4}  {:>5}",
                        &h.id[..12.min(h.id.len())],
                        cut(&h.title, 28),
                        cut(h.artist.as_deref().unwrap_or(""), 22),
                        cut(h.album.as_deref().unwrap_or(""), 22),
                        cut(h.genre.as_deref().unwrap_or(""), 11),
                        h.year.map(|y| y.to_string()).unwrap_or_default(),
                        clock(h.duration_ms),
                    );
                }
                println!("{} of {} songs", page.results.len(), page.total);
            }
            ExitCode::SUCCESS
        }
        Command::Play { what, out, json } => {
            let started = Instant::now();
            let output = match out {
                Some(p) if p.as_os_str() == "-" => {
                    if json {
                        bail!("--json prints to standard output; it cannot be used with --out -");
                    }
                    Output::Stdout
                }
                Some(p) => Output::File(p),
                None => Output::Device,
            };
            let (id, hit) = client.resolve(&what.join(" ")).await?;
            if let Some(h) = &hit {
                eprintln!(
                    "playing {} — {}  ({})",
                    h.title,
                    h.artist.as_deref().unwrap_or("unknown artist"),
                    h.id
                );
            }
            let terminal = std::io::stderr().is_terminal();
            let announce = Box::new(move |t: Duration| {
                if terminal {
                    eprintln!("first audio after {:.1} ms", t.as_secs_f64() * 1000.0);
                }
            });
            let outcome = client
                .play(id, output, started, Some(announce))
                .await
                .with_context(|| format!("cannot play song {id}"))?;
            for liar in &outcome.bad_sources {
                eprintln!("warning: source {liar} sent shards that failed their hash check");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
            } else {
                eprintln!(
                    "played {} — {}: {:.1} s of audio, time to first audio {:.1} ms, {} sources",
                    outcome.title,
                    outcome.artist.as_deref().unwrap_or("unknown artist"),
                    outcome.frames as f64 / f64::from(outcome.sample_rate.max(1)),
                    outcome.time_to_first_audio_ms,
                    outcome.sources_used
                );
            }
            ExitCode::SUCCESS
        }
        Command::Get { id, output } => {
            let id = id
                .parse()
                .with_context(|| format!("{id:?} is not a song id"))?;
            let d = client
                .download(id, &output)
                .await
                .with_context(|| format!("cannot download song {id}"))?;
            for liar in &d.bad_sources {
                eprintln!("warning: source {liar} sent shards that failed their hash check");
            }
            if output.as_os_str() != "-" {
                eprintln!("wrote {} bytes to {}", d.bytes, output.display());
            }
            ExitCode::SUCCESS
        }
        Command::Id => {
            let key = client.publisher_key()?;
            let peer = client.peer().await?;
            println!("peer id:       {}", peer.peer_id());
            println!("publisher key: {}", key.id());
            println!("data dir:      {}", client.config().data_dir.display());
            ExitCode::SUCCESS
        }
    };
    client.shutdown().await;
    Ok(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut code = ExitCode::SUCCESS;
    let filter = cli.global.log.clone();
    let result = medley_daemon::run_main(&filter, async {
        code = run(cli).await?;
        Ok(())
    });
    if result == ExitCode::SUCCESS {
        code
    } else {
        result
    }
}
