//! Command-line interface of `medley-node`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};

use crate::config::{CONFIG_FILE, ENV_PREFIX, FIELDS, NodeConfig};
use crate::server::Node;

/// Medley storage node: keeps erasure-coded shards of songs and serves them over QUIC.
#[derive(Debug, Parser)]
#[command(name = "medley-node", version, about)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `medley_node=debug`.
    #[arg(long, env = "MEDLEY_LOG", default_value = "info", global = true)]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up a node: create the data directory, the node's identity and a commented
    /// medley-node.toml holding every setting (refuses to replace an existing one).
    Init(InitArgs),
    /// Run the node until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Show what the running node is doing: identity, addresses, capacity used and free,
    /// shards, bytes served, repair work, whether the tracker answers.
    Status(StatusArgs),
    /// Print the settings `run` would use with the same arguments (file, then environment,
    /// then flags), as TOML.
    Config(RunArgs),
    /// Move this node's shards to other nodes before it leaves: the tracker takes it out of
    /// the layout, the new holders copy its shards from it, and it deletes each shard once
    /// its new holder has it. Waits (with progress) until the node holds nothing. The node
    /// must keep running meanwhile; stop it afterwards.
    Drain(DrainArgs),
}

/// Where a node's settings are: the config file and the data directory.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Config file [default: <data-dir>/medley-node.toml, if it exists].
    #[arg(long, env = "MEDLEY_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the store, identity and node.json.
    #[arg(long, env = "MEDLEY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The config file's settings (or the defaults), then the environment's
    /// (`MEDLEY_<SETTING>`), with `--data-dir` applied.
    fn load(&self) -> anyhow::Result<NodeConfig> {
        let config: NodeConfig = medley_daemon::load_config(
            self.config.as_deref(),
            self.data_dir.as_deref(),
            CONFIG_FILE,
        )?;
        let mut config = medley_daemon::settings::apply_env(config, ENV_PREFIX, &FIELDS, |k| {
            std::env::var(k).ok()
        })?;
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        config.merge_trackers();
        Ok(config)
    }
}

/// `medley-node init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the store, identity and config [default: ./medley-node-data].
    #[arg(long, env = "MEDLEY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Write the config here instead of <data-dir>/medley-node.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Region name, e.g. eu-west.
    #[arg(long)]
    pub region: Option<String>,
    /// Bytes of audio to keep, e.g. "50 GiB".
    #[arg(long)]
    pub capacity: Option<ByteSize>,
    /// Tracker URL, e.g. http://127.0.0.1:4700.
    #[arg(long)]
    pub tracker: Option<String>,
    /// The join token from the tracker's operator (`medley-tracker nodes invite`); the
    /// region it names, if any, is the node's.
    #[arg(long)]
    pub join: Option<String>,
    /// Data-plane listen multiaddr(s) (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Replace an existing config file.
    #[arg(long)]
    pub force: bool,
}

/// Creates the data directory, the identity and a commented config file.
pub fn init(args: InitArgs) -> anyhow::Result<()> {
    let mut config = NodeConfig::default();
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(token) = &args.join {
        let invite = medley_core::Invite::peek(token).context("--join")?;
        match (&invite.region, &args.region) {
            (Some(theirs), Some(mine)) if theirs != mine => bail!(
                "the join token admits a node of region {theirs:?}, not {mine:?}: drop --region or ask for another token"
            ),
            (Some(theirs), None) => config.region = theirs.clone(),
            _ => {}
        }
        if let (Some(cap), Some(mine)) = (invite.capacity, args.capacity)
            && mine.as_u64() > cap
        {
            eprintln!(
                "note: the join token lets the tracker count at most {} of this node's {mine}",
                ByteSize::b(cap)
            );
        }
        config.join_token = Some(token.trim().to_string());
    }
    if let Some(r) = args.region {
        config.region = r;
    }
    if let Some(c) = args.capacity {
        config.capacity = c;
    }
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.tracker = args.tracker;
    config.peer_config().context("invalid settings")?;
    let dir = config.data_dir.clone();
    let path = medley_daemon::settings::init_config_file(
        "medley-node",
        &dir,
        args.config,
        CONFIG_FILE,
        &config,
        ENV_PREFIX,
        &FIELDS,
        args.force,
    )?;
    let key = medley_daemon::identity::load_or_create_identity(&dir)
        .with_context(|| format!("cannot create the node's identity in {}", dir.display()))?;
    println!("node identity: {}", key.public().to_peer_id());
    println!("config:        {}", path.display());
    println!("data dir:      {}", dir.display());
    let config_flag = if path == dir.join(CONFIG_FILE) {
        String::new()
    } else {
        format!(" --config {}", path.display())
    };
    println!(
        "next: medley-node run --data-dir {}{config_flag}",
        dir.display()
    );
    if config.tracker.is_none() {
        println!("      (set `tracker` in the config, or pass --tracker, to join a network)");
    }
    Ok(())
}

/// `medley-node drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node's config file and data directory (its identity names the node).
    #[command(flatten)]
    pub files: ConfigArgs,
    /// Tracker URL [default: from the config].
    #[arg(long, env = "MEDLEY_TRACKER")]
    pub tracker: Option<String>,
    /// CA (PEM) of an https:// tracker the system does not trust [default: from the config].
    #[arg(long, env = "MEDLEY_TRACKER_CA")]
    pub tracker_ca: Option<PathBuf>,
    /// The tracker's admin token, if it has one (draining is an admin request).
    #[arg(long, env = "MEDLEY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Cancel a drain: the node gets slots in the layout again.
    #[arg(long)]
    pub cancel: bool,
    /// Return once the tracker has accepted the drain, without waiting for the handover.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds (the drain goes on).
    #[arg(long, default_value_t = 86_400)]
    pub timeout_secs: u64,
}

/// `medley-node run`: settings come from the config file, then environment, then flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file and data directory.
    #[command(flatten)]
    pub files: ConfigArgs,
    /// Data-plane listen multiaddr(s), e.g. /ip4/127.0.0.1/udp/0/quic-v1 (repeat or comma-separate).
    #[arg(long, env = "MEDLEY_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Region name, e.g. eu-west.
    #[arg(long, env = "MEDLEY_REGION")]
    pub region: Option<String>,
    /// Bytes of audio to keep, e.g. "50 GiB".
    #[arg(long, env = "MEDLEY_CAPACITY")]
    pub capacity: Option<ByteSize>,
    /// Inbound requests handled at once; more are answered busy.
    #[arg(long, env = "MEDLEY_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// Tracker URL to register with, e.g. http://127.0.0.1:4700.
    #[arg(long, env = "MEDLEY_TRACKER")]
    pub tracker: Option<String>,
    /// CA (PEM) of an https:// tracker the system does not trust.
    #[arg(long, env = "MEDLEY_TRACKER_CA")]
    pub tracker_ca: Option<PathBuf>,
    /// The tracker's public key (64 hex digits), which signs the grants uploads need.
    #[arg(long, env = "MEDLEY_TRACKER_KEY")]
    pub tracker_key: Option<medley_core::TrackerId>,
}

impl RunArgs {
    /// Builds the effective configuration: defaults < file < environment < flags.
    pub fn resolve(&self) -> anyhow::Result<NodeConfig> {
        let mut config = self.files.load()?;
        if !self.listen.is_empty() {
            config.listen = self.listen.clone();
        }
        if let Some(r) = &self.region {
            config.region = r.clone();
        }
        if let Some(c) = self.capacity {
            config.capacity = c;
        }
        if let Some(n) = self.max_concurrent_requests {
            config.max_concurrent_requests = n;
        }
        if let Some(t) = &self.tracker {
            config.tracker = Some(t.clone());
        }
        if let Some(c) = &self.tracker_ca {
            config.tracker_ca = Some(c.clone());
        }
        if let Some(k) = self.tracker_key {
            config.tracker_key = Some(k);
        }
        config.peer_config().context("invalid configuration")?;
        Ok(config)
    }
}

/// `medley-node status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's config file and data directory (its node.json names the admin endpoint).
    #[command(flatten)]
    pub files: ConfigArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Asks the running node for its status and prints it.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let config = args.files.load()?;
    let info: crate::NodeInfo =
        medley_daemon::read_running_info(&config.data_dir, crate::NODE_INFO_FILE, "node")?;
    let admin = info
        .admin
        .context("this node does not publish an admin endpoint (an older version?)")?;
    let s: crate::NodeStatus = medley_daemon::get_local_json(
        &format!("{admin}/status"),
        &format!("the node (pid {})", info.pid),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let size = |b: u64| ByteSize::b(b).to_string();
    println!("node      {}", s.peer_id);
    println!("region    {}", s.region);
    for a in &s.listen {
        println!("listen    {a}");
    }
    println!("admin     {admin}");
    println!("up        {} s", s.uptime_secs);
    println!(
        "storage   {} of {} used ({} free), {} shards, {} hot songs ({} segments)",
        size(s.used),
        size(s.capacity),
        size(s.capacity.saturating_sub(s.used)),
        s.shards,
        s.hot_songs,
        s.hot_segments
    );
    println!(
        "served    {} in {} requests ({} in flight) to {} connected peers",
        size(s.bytes_served),
        s.requests,
        s.requests_in_flight,
        s.peers
    );
    println!(
        "shards    {} held, {} referenced by the node's slots, {} unreferenced (deleted after the grace period)",
        size(s.held_bytes),
        size(s.referenced_bytes),
        size(s.gc_pending_bytes)
    );
    println!(
        "repair    backlog {}, done {}, failed {}; corrupt shards found {}",
        s.repair_backlog, s.repaired, s.repair_failed, s.scrub_bad
    );
    match (&s.tracker, s.tracker_last_ok_secs) {
        (None, _) => println!("tracker   none (running unregistered)"),
        (Some(t), Some(ago)) => println!(
            "tracker   {t}: last answered {ago} s ago ({} failures)",
            s.tracker_failures
        ),
        (Some(t), None) => println!(
            "tracker   {t}: NOT REACHED yet ({} failures)",
            s.tracker_failures
        ),
    }
    if let Some(e) = &s.tracker_error {
        println!("          last failure: {e}");
    }
    match (s.admission, &s.evicted) {
        (Some(medley_api::Admission::Pending), _) => println!(
            "admission PENDING: the tracker gives this node no slots until its operator runs\n          `medley-tracker nodes approve {}` (or the node joins with a token)",
            s.peer_id
        ),
        (Some(medley_api::Admission::Revoked), _) => {
            println!("admission REVOKED by the tracker's operator: no slots")
        }
        (Some(_), Some(why)) => println!("admission EVICTED after failed audits ({why}): no slots"),
        (Some(_), None) => println!("admission admitted"),
        (None, _) => {}
    }
    for p in &s.worker_panics {
        println!("WORKER STOPPED  {p} (restart the node)");
    }
    Ok(())
}

/// Prints the effective settings.
pub fn show_config(args: &RunArgs) -> anyhow::Result<()> {
    medley_daemon::settings::print_settings(&args.resolve()?)?;
    Ok(())
}

/// Starts or cancels a drain and, unless told not to, waits until the node holds no shard.
pub async fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let config = args.files.load()?;
    let tracker = args
        .tracker
        .clone()
        .or(config.tracker.clone())
        .context("no tracker: pass --tracker or set `tracker` in the config")?;
    let key_file = config.data_dir.join(medley_daemon::identity::IDENTITY_FILE);
    anyhow::ensure!(
        key_file.exists(),
        "{} has no node identity ({}): is it a node's data directory?",
        config.data_dir.display(),
        key_file.display()
    );
    let peer_id = medley_daemon::identity::load_or_create_identity(&config.data_dir)
        .context("cannot read the node's identity")?
        .public()
        .to_peer_id()
        .to_string();
    let api = medley_api::TrackerClient::builder(&tracker)
        .ca_file(args.tracker_ca.clone().or(config.tracker_ca.clone()))
        .build()?;
    let version = api
        .set_draining(&peer_id, !args.cancel, args.admin_token.as_deref())
        .await
        .with_context(|| format!("the tracker refused to change the drain of {peer_id}"))?
        .layout_version;
    if args.cancel {
        println!("drain of {peer_id} cancelled; layout version {version:?}");
        return Ok(());
    }
    println!("draining {peer_id}: layout version {version:?} gives it no slots");
    if args.no_wait {
        return Ok(());
    }
    let bar = medley_daemon::progress_bar(Some(0), "[{bar:30}] {pos}/{len} shards handed over");
    let start = std::time::Instant::now();
    let mut first: Option<u64> = None;
    loop {
        let nodes = api.nodes().await.context("cannot list the nodes")?;
        let me = nodes
            .iter()
            .find(|n| n.node.peer_id == peer_id)
            .with_context(|| format!("the tracker no longer lists {peer_id}"))?;
        anyhow::ensure!(
            me.alive,
            "the node is down: it must keep running until its shards are handed over"
        );
        let shards = me.node.load.shards;
        let initial = *first.get_or_insert(shards);
        bar.set_length(initial.max(shards));
        bar.set_position(initial.saturating_sub(shards));
        if shards == 0 {
            bar.finish_and_clear();
            println!(
                "{peer_id} holds no shards: drained in {:.1} s; it can be stopped",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed().as_secs() < args.timeout_secs,
            "still {shards} shards on the node after {} s; the drain goes on",
            args.timeout_secs
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the node until a shutdown signal. A second signal exits at once.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let data_dir = config.data_dir.clone();
    let node = Node::bind(config)
        .await
        .with_context(|| format!("cannot start the node in {}", data_dir.display()))?;
    medley_daemon::shutdown_signal().await;
    info!("shutting down (a second signal exits at once)");
    let stop = node.shutdown(Duration::from_secs(10));
    tokio::select! {
        r = stop => r.context("shutdown failed")?,
        () = medley_daemon::shutdown_signal() => {
            warn!("second signal: exiting now");
            return Err(medley_daemon::Interrupted.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let mut argv = vec!["medley-node", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a,
            other => unreachable!("parsed run, got {other:?}"),
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "region = \"file-region\"\ncapacity = \"3 GiB\"\nmax_concurrent_requests = 7\n",
        )
        .unwrap();
        let d = dir.path().to_str().unwrap();
        // The file in the data dir is found without --config.
        let c = run_args(&["--data-dir", d]).resolve().unwrap();
        assert_eq!(
            (c.region.as_str(), c.capacity, c.max_concurrent_requests),
            ("file-region", ByteSize::gib(3), 7)
        );
        assert_eq!(c.listen, NodeConfig::default().listen);
        // Flags win over the file.
        let c = run_args(&[
            "--data-dir",
            d,
            "--region",
            "flag-region",
            "--capacity",
            "1 GiB",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ])
        .resolve()
        .unwrap();
        assert_eq!(
            (c.region.as_str(), c.capacity, c.max_concurrent_requests),
            ("flag-region", ByteSize::gib(1), 7)
        );
        assert_eq!(c.listen, vec!["/ip4/127.0.0.1/udp/0/quic-v1".to_string()]);
    }

    #[test]
    fn bad_settings_are_reported_with_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "capacity = 12\nregoin = \"x\"\n").unwrap();
        let err = run_args(&["--config", file.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("bad.toml") && text.contains("regoin"),
            "{text}"
        );
        let err = run_args(&["--listen", "udp/nope"]).resolve().unwrap_err();
        assert!(format!("{err:#}").contains("udp/nope"), "{err:#}");
        assert!(Cli::try_parse_from(["medley-node", "run", "--capacity", "lots"]).is_err());
    }
}
