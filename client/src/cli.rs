//! Command-line interface of `medley`: publish, search, play and download songs on a Medley
//! network, and serve the local gateway.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::gateway::{self, GatewayOptions, SubsonicUser};
use crate::{
    CONFIG_FILE, Client, ClientConfig, FileOutcome, Output, SearchQuery, default_data_dir,
};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

/// Medley: a peer-assisted network that stores and streams music.
#[derive(Debug, Parser)]
#[command(name = "medley", version)]
pub struct Cli {
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
    /// Tracker URL, e.g. http://127.0.0.1:4700; replicas as URLs separated by commas, asked
    /// in turn (the next on a connection error or a 5xx answer).
    #[arg(long, global = true, env = "MEDLEY_TRACKER")]
    tracker: Option<String>,
    /// CA (PEM) of an https:// tracker the system does not trust.
    #[arg(long, global = true, env = "MEDLEY_TRACKER_CA")]
    tracker_ca: Option<PathBuf>,
    /// This listener's region.
    #[arg(long, global = true, env = "MEDLEY_REGION")]
    region: Option<String>,
    /// Data directory (identity, publisher key, medley.toml) [default: ~/.local/share/medley].
    #[arg(long, global = true, env = "MEDLEY_CLIENT_DIR")]
    data_dir: Option<PathBuf>,
    /// Config file [default: <data-dir>/medley.toml, if it exists].
    #[arg(long, global = true, env = "MEDLEY_CLIENT_CONFIG")]
    config: Option<PathBuf>,
    /// Bytes of played segments kept on disk, e.g. "2 GiB"; 0 turns the cache (and serving
    /// it to other listeners) off.
    #[arg(long, global = true, env = "MEDLEY_CACHE_BYTES")]
    cache_bytes: Option<bytesize::ByteSize>,
    /// Data-plane address the cache is served on, e.g. /ip4/0.0.0.0/udp/0/quic-v1.
    #[arg(long, global = true, env = "MEDLEY_SERVE_LISTEN")]
    serve_listen: Option<String>,
    /// Do not serve the cache to other listeners.
    #[arg(long, global = true)]
    no_serve: bool,
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
    /// Stream songs and decode them: one song id or several (played in order, without a
    /// gap), or search words (the best match, or the first --results matches in order).
    Play {
        /// Song ids, or search words.
        #[arg(required = true)]
        what: Vec<String>,
        /// Queue the first N results of the search, not only the best match.
        #[arg(long, value_name = "N")]
        results: Option<usize>,
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
    /// Serve a local HTTP gateway: /stream/{id} with Range, a web player at /, the Subsonic
    /// API at /rest, Prometheus metrics at /metrics.
    Serve {
        /// Address to listen on [default: 127.0.0.1:4800, or gateway_listen in medley.toml].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Subsonic user name [default: medley, or subsonic_user in medley.toml].
        #[arg(long, env = "MEDLEY_SUBSONIC_USER")]
        subsonic_user: Option<String>,
        /// Subsonic password; the Subsonic API is off without one.
        #[arg(long, env = "MEDLEY_SUBSONIC_PASSWORD", hide_env_values = true)]
        subsonic_password: Option<String>,
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
    if let Some(ca) = &g.tracker_ca {
        c.tracker_ca = Some(ca.clone());
    }
    if let Some(r) = &g.region {
        c.region = r.clone();
    }
    if let Some(b) = g.cache_bytes {
        c.cache_bytes = b;
    }
    if let Some(l) = &g.serve_listen {
        c.serve_listen = l.clone();
    }
    if g.no_serve {
        c.serve_cache = false;
    }
    c.validate().context("invalid configuration")?;
    Ok(c)
}

/// The songs `what` names: several song ids in order, or the first `results` (default 1)
/// matches of `what` as search words.
async fn queue(
    client: &Client,
    what: &[String],
    results: Option<usize>,
) -> anyhow::Result<Vec<medley_core::SongId>> {
    let ids: Result<Vec<medley_core::SongId>, _> = what.iter().map(|w| w.parse()).collect();
    match (ids, results) {
        (Ok(ids), None) => return Ok(ids),
        (Ok(_), Some(_)) => bail!("--results queues search results; give search words, not ids"),
        (Err(_), _) => {}
    }
    let query = what.join(" ");
    let n = results.unwrap_or(1);
    if n == 0 || n > 100 {
        bail!("--results must be 1 to 100");
    }
    let page = client
        .tracker()
        .search(&SearchQuery {
            q: query.clone(),
            limit: Some(n),
            ..SearchQuery::default()
        })
        .await
        .context("search failed")?;
    if page.results.is_empty() {
        bail!("no song matches {query:?}");
    }
    let mut ids = Vec::new();
    for h in &page.results {
        eprintln!(
            "{} {} — {}  ({})",
            if ids.is_empty() { "playing" } else { "queued " },
            h.title,
            h.artist.as_deref().unwrap_or("unknown artist"),
            h.id
        );
        ids.push(
            h.id.parse()
                .with_context(|| format!("the tracker sent a bad song id {:?}", h.id))?,
        );
    }
    Ok(ids)
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

async fn run_command(cli: Cli) -> anyhow::Result<ExitCode> {
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
                .search(&SearchQuery {
                    q: query.join(" "),
                    artist,
                    album,
                    genre,
                    year_from,
                    year_to,
                    offset: 0,
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
        Command::Play {
            what,
            out,
            json,
            results,
        } => {
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
            let ids = queue(&client, &what, results).await?;
            let terminal = std::io::stderr().is_terminal();
            let announce = Box::new(move |t: Duration| {
                if terminal {
                    eprintln!("first audio after {:.1} ms", t.as_secs_f64() * 1000.0);
                }
            });
            let outcomes = client
                .play_queue(&ids, output, started, Some(announce))
                .await
                .with_context(|| match ids.as_slice() {
                    [one] => format!("cannot play song {one}"),
                    many => format!("cannot play the queue of {} songs", many.len()),
                })?;
            for o in &outcomes {
                for liar in &o.bad_sources {
                    eprintln!("warning: source {liar} sent shards that failed their hash check");
                }
            }
            if json {
                match outcomes.as_slice() {
                    [one] => println!("{}", serde_json::to_string_pretty(one)?),
                    many => println!("{}", serde_json::to_string_pretty(many)?),
                }
            } else {
                for o in &outcomes {
                    eprintln!(
                        "played {} — {}: {:.1} s of audio, time to first audio {:.1} ms, {} sources",
                        o.title,
                        o.artist.as_deref().unwrap_or("unknown artist"),
                        o.frames as f64 / f64::from(o.sample_rate.max(1)),
                        o.time_to_first_audio_ms,
                        o.sources_used
                    );
                }
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
        Command::Serve {
            listen,
            subsonic_user,
            subsonic_password,
        } => {
            let c = client.config().clone();
            let listen = listen.unwrap_or(c.gateway_listen);
            let user = subsonic_user.unwrap_or(c.subsonic_user);
            let password = subsonic_password.unwrap_or(c.subsonic_password);
            let subsonic = (!password.is_empty()).then_some(SubsonicUser {
                name: user,
                password,
            });
            let opts = GatewayOptions {
                cache_bytes: c.gateway_cache_bytes.as_u64(),
                subsonic,
                hosts: c.gateway_hosts.clone(),
            };
            let client = std::sync::Arc::new(client);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let shutdown = {
                let mut stopped = stopped.clone();
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }
            };
            let running = gateway::serve(client.clone(), listen, opts, shutdown)
                .await
                .with_context(|| format!("cannot serve on {listen}"))?;
            // The first line of standard output is the address, for scripts.
            println!("listening on http://{}/", running.addr);
            eprintln!(
                "web player: http://{0}/   stream: http://{0}/stream/<song-id>   Subsonic: http://{0}/rest",
                running.addr
            );
            let mut task = running.task;
            tokio::select! {
                r = &mut task => {
                    r.context("the gateway stopped")?;
                }
                () = medley_daemon::shutdown_signal() => {
                    // Finish the requests in flight, but a paused player may hold a stream
                    // open for ever: wait a bounded time.
                    let _ = stop.send(true);
                    if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                        eprintln!("streams still open after 5 s: closing them");
                        task.abort();
                    }
                }
            }
            client.shutdown().await;
            return Ok(ExitCode::SUCCESS);
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

/// Runs the command `cli` names; the exit code says how it went (errors are printed with
/// their causes).
pub fn run(cli: Cli) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    let filter = cli.global.log.clone();
    let result = medley_daemon::run_main(&filter, async {
        code = run_command(cli).await?;
        Ok(())
    });
    if result == ExitCode::SUCCESS {
        code
    } else {
        result
    }
}
