//! Command-line interface of `medley-tracker`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::io::{Read, Write};

use anyhow::{Context, bail};
use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use tracing::info;

use crate::config::{CONFIG_FILE, ENV_PREFIX, FIELDS, TrackerConfig};
use crate::server::Tracker;
use crate::state::State;
use medley_api::{LayoutPreview, NodeEntry, TrackerClient};

/// Medley tracker: catalogue, node registry, layout and publish commit.
#[derive(Debug, Parser)]
#[command(name = "medley-tracker", version, about)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "MEDLEY_LOG", default_value = "info", global = true)]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up a tracker: create the data directory and a commented medley-tracker.toml
    /// holding every setting (refuses to replace an existing one).
    Init(InitArgs),
    /// Run the tracker until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Show what the running tracker holds: songs, nodes alive and draining, the layout,
    /// the coding, repair work summed over the nodes.
    Status(StatusArgs),
    /// List the storage nodes: admission (pending, admitted, revoked, evicted), state (up,
    /// stopped, down, draining), region, storage, layout weight, load, repair backlog and
    /// when each was last heard from; or admit nodes (`invite`, `approve`) and revoke them.
    Nodes(NodesArgs),
    /// Show the layout in force and what a change would move before it is applied: slots
    /// per node now and after, and the shards and bytes the new holders would fetch.
    Layout(LayoutArgs),
    /// Print the settings `run` would use with the same arguments (file, then environment,
    /// then flags), as TOML.
    Config(RunArgs),
    /// Bulk-load signed manifests into a stopped tracker's catalogue and index.
    ///
    /// Each FILE is a manifest stream: every manifest preceded by its length as a 4-byte
    /// big-endian number ('-' reads standard input). Manifests are checked as a publish
    /// checks them; refused ones are listed and skipped.
    Import(ImportArgs),
}

/// `medley-tracker import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Where the tracker's settings come from (data dir, config, publishers).
    #[command(flatten)]
    pub run: RunArgs,
    /// Manifest stream files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Manifests committed per batch (one synced write and one index commit each).
    #[arg(long, default_value_t = 20_000)]
    pub batch: usize,
}

/// Writes a manifest stream record: the length (4 bytes, big-endian), then the manifest.
pub fn write_stream_record(out: &mut impl Write, manifest: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(manifest.len()).map_err(std::io::Error::other)?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(manifest)
}

/// Reads the next manifest of a stream; `None` at a clean end.
fn read_stream_record(input: &mut impl Read) -> anyhow::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > medley_core::MAX_MANIFEST_SIZE {
        bail!("a record claims {len} bytes, more than a manifest may have");
    }
    let mut buf = vec![0u8; len];
    input
        .read_exact(&mut buf)
        .context("the stream ends inside a manifest")?;
    Ok(Some(buf))
}

/// Runs an import.
pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let publishers = config.validate()?;
    let dir = config.data_dir.clone();
    let state = State::open(config, &publishers).with_context(|| {
        format!(
            "cannot open the tracker's state in {} (is the tracker running?)",
            dir.display()
        )
    })?;
    let bar = medley_daemon::progress_bar(None, "{spinner} {pos} manifests {per_sec}");
    let (mut created, mut existing, mut rejected) = (0usize, 0usize, 0usize);
    let started = std::time::Instant::now();
    for file in &args.files {
        let mut input: Box<dyn Read> = if file.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(file)
                    .with_context(|| format!("cannot open {}", file.display()))?,
            ))
        };
        let mut offset = 0usize;
        loop {
            let mut batch = Vec::with_capacity(args.batch.min(100_000));
            while batch.len() < args.batch.max(1) {
                match read_stream_record(&mut input).with_context(|| {
                    format!("{}: record {}", file.display(), offset + batch.len())
                })? {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            let done = state.catalog().import(&batch).context("import failed")?;
            for (i, why) in &done.rejected {
                eprintln!("{}: manifest {}: {why}", file.display(), offset + i);
            }
            created += done.created;
            existing += done.existing;
            rejected += done.rejected.len();
            offset += n;
            bar.inc(n as u64);
        }
    }
    bar.finish_and_clear();
    if created > 0 {
        eprintln!("merging the search index…");
        state
            .catalog()
            .merge_search()
            .context("cannot merge the search index")?;
    }
    println!(
        "imported {created} new songs ({existing} already there, {rejected} refused) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if rejected > 0 {
        bail!("{rejected} manifests were refused");
    }
    Ok(())
}

/// `medley-tracker run`: defaults < config file < environment < flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file [default: <data-dir>/medley-tracker.toml, if it exists].
    #[arg(long, env = "MEDLEY_TRACKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the database and tracker.json.
    #[arg(long, env = "MEDLEY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:4700.
    #[arg(long, env = "MEDLEY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Authorise a publisher key (hex); repeatable.
    #[arg(long = "publisher", env = "MEDLEY_PUBLISHERS", value_delimiter = ',')]
    pub publishers: Vec<String>,
    /// The store: "rocksdb" (embedded, the default) or a postgres:// URL that tracker
    /// replicas share.
    #[arg(long)]
    pub store: Option<String>,
    /// Accept admin requests over HTTP without a token (loopback only; for throwaway
    /// development networks).
    #[arg(long)]
    pub insecure_dev_admin: bool,
}

impl RunArgs {
    /// The effective configuration: the file, then the environment (`MEDLEY_<SETTING>`),
    /// then the flags.
    pub fn resolve(&self) -> anyhow::Result<TrackerConfig> {
        let config: TrackerConfig = medley_daemon::load_config(
            self.config.as_deref(),
            self.data_dir.as_deref(),
            CONFIG_FILE,
        )?;
        // The flag of `publishers` adds keys; its variable is read by the flag.
        let fields: Vec<_> = FIELDS
            .iter()
            .copied()
            .filter(|f| f.name != "publishers")
            .collect();
        let mut config = medley_daemon::settings::apply_env(config, ENV_PREFIX, &fields, |k| {
            std::env::var(k).ok()
        })?;
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let Some(s) = &self.store {
            config.store = Some(s.clone());
        }
        config.publishers.extend(self.publishers.iter().cloned());
        config.insecure_dev_admin |= self.insecure_dev_admin;
        config.validate().context("invalid configuration")?;
        Ok(config)
    }
}

/// `medley-tracker init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the database and config [default: ./medley-tracker-data].
    #[arg(long, env = "MEDLEY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Write the config here instead of <data-dir>/medley-tracker.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:4700.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Authorise a publisher key (hex); repeatable.
    #[arg(long = "publisher", value_delimiter = ',')]
    pub publishers: Vec<String>,
    /// Data shards per segment (fixed for the life of the network).
    #[arg(long)]
    pub k: Option<u8>,
    /// Parity shards per segment (fixed for the life of the network).
    #[arg(long)]
    pub m: Option<u8>,
    /// Replace an existing config file.
    #[arg(long)]
    pub force: bool,
}

/// Creates the data directory and a commented config file.
pub fn init(args: InitArgs) -> anyhow::Result<()> {
    let mut config = TrackerConfig::default();
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(k) = args.k {
        config.k = k;
    }
    if let Some(m) = args.m {
        config.m = m;
    }
    config.publishers = args.publishers;
    config.validate().context("invalid settings")?;
    let dir = config.data_dir.clone();
    let path = medley_daemon::settings::init_config_file(
        "medley-tracker",
        &dir,
        args.config,
        CONFIG_FILE,
        &config,
        ENV_PREFIX,
        &FIELDS,
        args.force,
    )?;
    println!("config:   {}", path.display());
    println!("data dir: {}", dir.display());
    println!("API:      http://{}", config.listen);
    println!("next: medley-tracker run --data-dir {}", dir.display());
    if config.publishers.is_empty() {
        println!("      (add publisher keys to `publishers` so someone can publish)");
    }
    Ok(())
}

/// `medley-tracker status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the tracker's settings come from (its data dir holds tracker.json).
    #[command(flatten)]
    pub run: RunArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `medley-tracker nodes`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodesArgs {
    /// What to do; without one, list the nodes.
    #[command(subcommand)]
    pub action: Option<NodesCommand>,
    /// Listing options.
    #[command(flatten)]
    pub list: StatusArgs,
}

/// `medley-tracker nodes` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the storage nodes (the default).
    List(StatusArgs),
    /// Print a join token admitting one node: give it to the node's operator for
    /// `medley-node init --join TOKEN`.
    Invite(InviteArgs),
    /// Admit a node that registered without a token (listed pending), or one evicted after
    /// failed audits.
    Approve(ApproveArgs),
    /// Revoke a node's admission: it leaves the layout and its slots move to other nodes.
    Revoke(RevokeArgs),
}

/// `medley-tracker nodes invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Where the tracker's settings come from.
    #[command(flatten)]
    pub run: RunArgs,
    /// The region the node must register in (one of the tracker's `regions`).
    #[arg(long)]
    pub region: Option<String>,
    /// The most capacity the node may count with, e.g. "4 TB".
    #[arg(long)]
    pub capacity: Option<ByteSize>,
    /// How long the token holds, in hours.
    #[arg(long, default_value_t = 168)]
    pub expires_hours: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `medley-tracker nodes approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Where the tracker's settings come from.
    #[command(flatten)]
    pub run: RunArgs,
    /// The node's peer id (`medley-tracker nodes` lists it).
    pub peer_id: String,
    /// The most capacity the node may count with, e.g. "4 TB".
    #[arg(long)]
    pub capacity: Option<ByteSize>,
}

/// `medley-tracker nodes revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Where the tracker's settings come from.
    #[command(flatten)]
    pub run: RunArgs,
    /// The node's peer id.
    pub peer_id: String,
}

/// Runs `medley-tracker nodes`.
pub async fn nodes_command(args: NodesArgs) -> anyhow::Result<()> {
    match args.action {
        None => nodes(args.list).await,
        Some(NodesCommand::List(list)) => nodes(list).await,
        Some(NodesCommand::Invite(a)) => {
            let config = a.run.resolve()?;
            let (tracker, _, who) = running(&config)?;
            let req = medley_api::InviteRequest {
                region: a.region,
                capacity: a.capacity.map(|c| c.as_u64()),
                expires_secs: Some(a.expires_hours.max(1) * 3600),
            };
            let t = tracker
                .invite(&req, config.admin_token.as_deref())
                .await
                .with_context(|| who.clone())?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("{}", t.token);
                eprintln!(
                    "join token {} (region {}, capacity {}), valid for {} h: on the node, run\n  medley-node init --join <token> ...",
                    t.id,
                    t.region.as_deref().unwrap_or("any"),
                    t.capacity
                        .map_or("up to the tracker's limit".into(), |c| ByteSize::b(c)
                            .to_string()),
                    a.expires_hours.max(1),
                );
            }
            Ok(())
        }
        Some(NodesCommand::Approve(a)) => {
            let config = a.run.resolve()?;
            let (tracker, _, who) = running(&config)?;
            let c = tracker
                .approve(
                    &a.peer_id,
                    a.capacity.map(|c| c.as_u64()),
                    config.admin_token.as_deref(),
                )
                .await
                .with_context(|| who.clone())?;
            println!(
                "{} admitted; layout version {}",
                c.node,
                c.layout_version
                    .map_or("none yet".into(), |v| v.to_string())
            );
            Ok(())
        }
        Some(NodesCommand::Revoke(a)) => {
            let config = a.run.resolve()?;
            let (tracker, _, who) = running(&config)?;
            let c = tracker
                .revoke(&a.peer_id, config.admin_token.as_deref())
                .await
                .with_context(|| who.clone())?;
            println!(
                "{} revoked: its slots move to other nodes (layout version {})",
                c.node,
                c.layout_version.map_or("none".into(), |v| v.to_string())
            );
            Ok(())
        }
    }
}

/// Asks the running tracker for its counters and prints them.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let (tracker, pid, who) = running(&config)?;
    let s = tracker.stats().await.with_context(|| who.clone())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("tracker   {} (pid {pid})", tracker.url());
    println!("key       {}", s.tracker_key);
    println!("songs     {}", s.songs);
    println!(
        "nodes     {} alive of {}, {} draining",
        s.nodes_alive, s.nodes, s.nodes_draining
    );
    match s.layout_version {
        Some(v) => println!(
            "layout    version {v}, {} partitions, {}+{} coding",
            s.partitions, s.k, s.m
        ),
        None => println!(
            "layout    none yet: fewer than {} nodes",
            u16::from(s.k) + u16::from(s.m)
        ),
    }
    let r = &s.repair;
    println!(
        "repair    backlog {}, done {}, failed {}; corrupt shards found {}",
        r.backlog, r.done, r.failed, r.scrub_bad
    );
    Ok(())
}

/// `medley-tracker layout`.
#[derive(Debug, Args)]
pub struct LayoutArgs {
    /// Where the tracker's settings come from (its data dir holds tracker.json; its
    /// admin_token, if any, authorises the request).
    #[command(flatten)]
    pub run: RunArgs,
    /// Preview draining these nodes (peer ids, comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub drain: Vec<String>,
    /// Preview cancelling the drain of these nodes.
    #[arg(long, value_delimiter = ',')]
    pub undrain: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A client of the running tracker, its process id and a name for it in errors. Through
/// its admin socket when it has one (admin requests need no token there, and a tracker
/// serving HTTPS with a private certificate needs no CA); else its HTTP API, where admin
/// requests need the admin token.
fn running(config: &TrackerConfig) -> anyhow::Result<(TrackerClient, u32, String)> {
    let info: crate::TrackerInfo =
        medley_daemon::read_running_info(&config.data_dir, crate::TRACKER_INFO_FILE, "tracker")?;
    let url = info.admin.clone().unwrap_or_else(|| info.url.clone());
    let who = format!("asking the tracker (pid {}) at {url}", info.pid);
    Ok((TrackerClient::new(&url)?, info.pid, who))
}

/// Lists the nodes the running tracker knows.
pub async fn nodes(args: StatusArgs) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let (tracker, _, who) = running(&config)?;
    let nodes = tracker.nodes().await.with_context(|| who.clone())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&medley_api::NodeList { nodes })?
        );
        return Ok(());
    }
    print!("{}", node_table(&nodes, medley_core::unix_now_ms()));
    Ok(())
}

/// The node list as a table, one row per node, for a terminal.
fn node_table(nodes: &[NodeEntry], now_ms: u64) -> String {
    use std::fmt::Write as _;
    let size = |b: u64| ByteSize::b(b).to_string();
    let mut out = format!(
        "{:<52}  {:<10}  {:<9}  {:<8}  {:>21}  {:>10}  {:>8}  {:>11}  {:>7}  {:>9}\n",
        "NODE",
        "REGION",
        "ADMISSION",
        "STATE",
        "USED / CAPACITY",
        "WEIGHT",
        "SHARDS",
        "SERVING",
        "BACKLOG",
        "SEEN"
    );
    for NodeEntry {
        node: rec,
        alive,
        weight,
        ..
    } in nodes
    {
        let state = match (rec.draining, rec.stopped, alive) {
            (true, _, true) => "draining",
            (_, true, _) => "stopped",
            (_, _, true) => "up",
            (_, _, false) => "down",
        };
        let admission = if rec.evicted.is_some() {
            "evicted"
        } else {
            rec.admission.as_str()
        };
        let seen = now_ms.saturating_sub(rec.last_seen_ms) / 1000;
        let _ = writeln!(
            out,
            "{:<52}  {:<10}  {:<9}  {:<8}  {:>21}  {:>10}  {:>8}  {:>11}  {:>7}  {:>9}",
            rec.peer_id,
            rec.region,
            admission,
            state,
            format!("{} / {}", size(rec.load.used), size(rec.capacity)),
            size(*weight),
            rec.load.shards,
            format!("{}/s", size(rec.load.bytes_per_sec)),
            rec.load.repair.backlog,
            format!("{seen} s ago"),
        );
    }
    out
}

/// Shows the layout in force and a preview of a change.
pub async fn layout(args: LayoutArgs) -> anyhow::Result<()> {
    let config = args.run.resolve()?;
    let (tracker, _, who) = running(&config)?;
    let p = tracker
        .layout_preview(&args.drain, &args.undrain, config.admin_token.as_deref())
        .await
        .with_context(|| who.clone())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    print!(
        "{}",
        preview_text(&p, args.drain.is_empty() && args.undrain.is_empty())
    );
    Ok(())
}

/// A preview for a terminal; `unchanged_input`: no change was asked for, so a difference
/// is one the tracker would make by itself (a node came or went).
fn preview_text(p: &LayoutPreview, unchanged_input: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    match p.current_version {
        Some(v) => {
            let _ = writeln!(out, "layout in force: version {v}");
        }
        None => {
            let _ = writeln!(out, "no layout yet");
        }
    }
    let _ = writeln!(
        out,
        "{:<52}  {:<10}  {:>6}  {:>6}",
        "NODE", "REGION", "SLOTS", "AFTER"
    );
    for n in &p.nodes {
        let mark = if n.before == n.after { "" } else { "  *" };
        let _ = writeln!(
            out,
            "{:<52}  {:<10}  {:>6}  {:>6}{mark}",
            n.peer_id, n.region, n.before, n.after
        );
    }
    if !p.changes {
        let _ = writeln!(out, "no slot would move");
    } else {
        let _ = writeln!(
            out,
            "{} would move: {} slots, {} shards, {}",
            if unchanged_input {
                "the next recomputation"
            } else {
                "this change"
            },
            p.moved_slots,
            p.moved_shards,
            ByteSize::b(p.moved_bytes)
        );
    }
    out
}

/// Prints the effective settings.
pub fn show_config(args: &RunArgs) -> anyhow::Result<()> {
    medley_daemon::settings::print_settings(&args.resolve()?)?;
    Ok(())
}

/// Runs the tracker until a shutdown signal. A second signal exits at once.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let dir = config.data_dir.clone();
    let tracker = Tracker::bind(config)
        .await
        .with_context(|| format!("cannot start the tracker in {}", dir.display()))?;
    medley_daemon::shutdown_signal().await;
    info!("shutting down (a second signal exits at once)");
    tokio::select! {
        () = tracker.shutdown(Duration::from_secs(10)) => {}
        () = medley_daemon::shutdown_signal() => {
            tracing::warn!("second signal: exiting now");
            return Err(medley_daemon::Interrupted.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use medley_api::{Load, NodeRecord, NodeSlots};

    fn entry(node: NodeRecord, alive: bool) -> NodeEntry {
        NodeEntry {
            node,
            alive,
            banned: false,
            weight: 8 << 30,
        }
    }

    fn record(id: &str, draining: bool, stopped: bool, last_seen_ms: u64) -> NodeRecord {
        NodeRecord {
            peer_id: id.into(),
            addrs: vec!["/ip4/127.0.0.1/udp/1/quic-v1".into()],
            region: "eu".into(),
            capacity: 10 << 30,
            load: Load {
                used: 3 << 30,
                shards: 1234,
                bytes_per_sec: 2 << 20,
                ..Load::default()
            },
            last_seen_ms,
            draining,
            stopped,
            ..NodeRecord::default()
        }
    }

    #[test]
    fn node_table_shows_each_state_and_the_load() {
        let now = 100_000;
        let table = node_table(
            &[
                entry(record("a", false, false, now - 2_000), true),
                entry(record("b", false, true, now - 5_000), false),
                entry(record("c", false, false, now - 90_000), false),
                entry(record("d", true, false, now), true),
            ],
            now,
        );
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 5, "{table}");
        assert!(rows[0].starts_with("NODE"));
        let state = |row: &str| row.split_whitespace().nth(3).unwrap_or("").to_string();
        assert_eq!(
            rows[1..].iter().map(|r| state(r)).collect::<Vec<_>>(),
            ["up", "stopped", "down", "draining"]
        );
        assert!(
            rows[1].contains("1234") && rows[1].contains("2 s ago"),
            "{}",
            rows[1]
        );
        assert!(rows[3].contains("90 s ago"), "{}", rows[3]);
        assert!(
            rows[1].contains("admitted") && rows[1].contains("8.0 GiB"),
            "{}",
            rows[1]
        );
    }

    #[test]
    fn preview_text_marks_changed_nodes_and_sums_what_moves() {
        let p = LayoutPreview {
            current_version: Some(7),
            changes: true,
            moved_slots: 12,
            moved_shards: 340,
            moved_bytes: 340 << 16,
            nodes: vec![
                NodeSlots {
                    peer_id: "a".into(),
                    region: "eu".into(),
                    before: 12,
                    after: 0,
                },
                NodeSlots {
                    peer_id: "b".into(),
                    region: "us".into(),
                    before: 10,
                    after: 10,
                },
            ],
        };
        let text = preview_text(&p, false);
        assert!(text.contains("version 7"), "{text}");
        let row = |id: &str| {
            text.lines()
                .find(|l| l.starts_with(id))
                .unwrap()
                .to_string()
        };
        assert!(
            row("a").ends_with('*') && !row("b").ends_with('*'),
            "{text}"
        );
        assert!(
            text.contains("this change would move: 12 slots, 340 shards"),
            "{text}"
        );
        let idle = LayoutPreview {
            changes: false,
            moved_slots: 0,
            moved_shards: 0,
            moved_bytes: 0,
            ..p
        };
        assert!(preview_text(&idle, true).contains("no slot would move"));
    }
}
