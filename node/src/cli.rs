//! Command-line interface of `medley-node`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};

use crate::config::{CONFIG_FILE, NodeConfig};
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
    /// Run the node until Ctrl-C or SIGTERM.
    Run(RunArgs),
}

/// `medley-node run`: settings come from the config file, then environment, then flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file [default: <data-dir>/medley-node.toml, if it exists].
    #[arg(long, env = "MEDLEY_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the store, identity and node.json.
    #[arg(long, env = "MEDLEY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
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
}

impl RunArgs {
    /// Builds the effective configuration: defaults < file < environment < flags.
    pub fn resolve(&self) -> anyhow::Result<NodeConfig> {
        let file = match (&self.config, &self.data_dir) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(dir)) if dir.join(CONFIG_FILE).exists() => Some(dir.join(CONFIG_FILE)),
            _ => None,
        };
        let mut config = match &file {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
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
        config.peer_config().context("invalid configuration")?;
        Ok(config)
    }
}

/// Runs the node until a shutdown signal. A second signal exits at once.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let data_dir = config.data_dir.clone();
    let node = Node::bind(config)
        .await
        .with_context(|| format!("cannot start the node in {}", data_dir.display()))?;
    shutdown_signal().await;
    info!("shutting down (a second signal exits at once)");
    let stop = node.shutdown(Duration::from_secs(10));
    tokio::select! {
        r = stop => r.context("shutdown failed")?,
        () = shutdown_signal() => {
            warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
