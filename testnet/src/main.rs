//! `medley-testnet`: a whole Medley network on one machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use medley_testnet::Testnet;
use medley_testnet::demo::{DemoOptions, run};

/// Runs a Medley network of real processes on this machine.
#[derive(Debug, Parser)]
#[command(name = "medley-testnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a network, publish a generated library, search and play it, check everything.
    Demo {
        /// Keep all data under DIR instead of a temporary folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Songs to generate (at least 12).
        #[arg(long, default_value_t = 12)]
        songs: usize,
        /// Seed of the catalogue and the melodies.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
    /// Start a network and keep it running until Ctrl-C.
    Up {
        /// Keep all data under DIR (kept afterwards) instead of a temporary folder.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Storage nodes.
        #[arg(long, default_value_t = 6)]
        nodes: usize,
        /// Regions.
        #[arg(long, default_value_t = 3)]
        regions: usize,
    },
}

async fn main_async(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo { dir, songs, seed } => {
            let checks = run(DemoOptions {
                dir,
                songs,
                seed,
                ..DemoOptions::default()
            })
            .await?;
            Ok(if checks.failed() == 0 {
                println!("demo passed");
                ExitCode::SUCCESS
            } else {
                println!("demo FAILED");
                ExitCode::FAILURE
            })
        }
        Command::Up {
            dir,
            nodes,
            regions,
        } => {
            let mut b = Testnet::builder().nodes(nodes).regions(regions);
            if let Some(d) = dir {
                b = b.dir(d);
            }
            let mut net = b.spawn().await.context("cannot start the testnet")?;
            println!("Medley testnet running: tracker at {}", net.tracker_url());
            println!("{} nodes in regions {}", nodes, net.regions().join(", "));
            println!("data and logs under {}", net.dir().display());
            println!();
            println!("# paste into a shell to use `medley` against it:");
            println!("export MEDLEY_TRACKER={}", net.tracker_url());
            println!("export MEDLEY_CLIENT_DIR={}", net.client_dir().display());
            println!();
            println!("Ctrl-C stops every process.");
            medley_daemon::shutdown_signal().await;
            println!("stopping…");
            net.shutdown();
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut code = ExitCode::SUCCESS;
    let r = medley_daemon::run_main("warn,lofty=error,symphonia_core::probe=off", async {
        code = main_async(cli).await?;
        Ok(())
    });
    if r == ExitCode::SUCCESS { code } else { r }
}
