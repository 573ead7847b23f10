//! Command-line interface of `medley-tracker`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing::info;

use crate::config::{CONFIG_FILE, TrackerConfig};
use crate::server::Tracker;

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
    /// Run the tracker until Ctrl-C or SIGTERM.
    Run(RunArgs),
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
}

impl RunArgs {
    /// The effective configuration.
    pub fn resolve(&self) -> anyhow::Result<TrackerConfig> {
        let file = medley_daemon::config_path(
            self.config.as_deref(),
            self.data_dir.as_deref(),
            CONFIG_FILE,
        );
        let mut config = match &file {
            Some(p) => TrackerConfig::from_file(p)?,
            None => TrackerConfig::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        config.publishers.extend(self.publishers.iter().cloned());
        config.validate().context("invalid configuration")?;
        Ok(config)
    }
}

/// Runs the tracker until a shutdown signal.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let dir = config.data_dir.clone();
    let tracker = Tracker::bind(config)
        .await
        .with_context(|| format!("cannot start the tracker in {}", dir.display()))?;
    medley_daemon::shutdown_signal().await;
    info!("shutting down");
    tracker.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
