//! `medley-testnet`: a whole Medley network on one machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use medley_testnet::Testnet;
use medley_testnet::demo::{DemoOptions, run as run_demo};
use medley_testnet::run::{self, RunOptions};
use medley_testnet::scenario::Scenario;

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
    /// Run a research scenario: a network, a workload and faults from a TOML file; metrics,
    /// a report and plots in the output folder.
    Run {
        /// The scenario (see testnet/scenarios/).
        scenario: PathBuf,
        /// Seed of the schedule [default: the scenario's `seed`].
        #[arg(long)]
        seed: Option<u64>,
        /// Output folder [default: runs/<scenario>-<seed>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Do not shape the network even when running as root.
        #[arg(long)]
        no_shaping: bool,
        /// Only check the scenario and print its schedule's size; start nothing.
        #[arg(long)]
        check: bool,
    },
    /// Run a scenario over several seeds and a grid of field values: every run's figures
    /// in sweep.csv, each figure's mean and 95 % confidence interval per grid point in
    /// sweep.md, and plots against the swept field.
    Sweep {
        /// The scenario (see testnet/scenarios/).
        scenario: PathBuf,
        /// Runs per grid point, with seeds from the first on.
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        /// The first seed [default: the scenario's `seed`].
        #[arg(long)]
        seed: Option<u64>,
        /// A field of the scenario and the values it takes, e.g.
        /// `--set workload.arrivals_per_sec=1,2,4` (repeat for a grid of every combination).
        #[arg(long = "set", value_name = "FIELD=V1,V2")]
        sets: Vec<String>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Do not shape the network even when running as root.
        #[arg(long)]
        no_shaping: bool,
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
        /// Tracker replicas: more than 1 runs them on a private PostgreSQL cluster of the
        /// run (one tracker keeps its embedded RocksDB).
        #[arg(long, default_value_t = 1)]
        trackers: usize,
    },
}

async fn main_async(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo { dir, songs, seed } => {
            let checks = run_demo(DemoOptions {
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
        Command::Run {
            scenario,
            seed,
            out,
            no_shaping,
            check,
        } => {
            let sc = Scenario::load(&scenario)?;
            let seed = seed.unwrap_or(sc.seed);
            if check {
                let s = sc.schedule(seed)?;
                println!(
                    "{}: valid; seed {seed}: {} sessions, {} plays, {} faults",
                    sc.name,
                    s.sessions.len(),
                    s.sessions.iter().map(|x| x.plays.len()).sum::<usize>(),
                    s.faults.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let out =
                out.unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{seed}", sc.name)));
            let name = sc.name.clone();
            let data = run::run(RunOptions {
                scenario: sc,
                seed,
                out: out.clone(),
                bin_dir: None,
                shaping: !no_shaping,
            })
            .await
            .with_context(|| format!("scenario {name} failed"))?;
            let failed = data.plays.iter().filter(|p| p.error.is_some()).count();
            println!(
                "{name}: {} plays ({failed} failed), shaping {}",
                data.plays.len(),
                if data.shaped { "on" } else { "off" }
            );
            println!("report: {}", out.join("report.md").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep {
            scenario,
            seeds,
            seed,
            sets,
            out,
            no_shaping,
        } => {
            let text = std::fs::read_to_string(&scenario)
                .with_context(|| format!("cannot read {}", scenario.display()))?;
            let sets = sets
                .iter()
                .map(|s| medley_testnet::sweep::parse_set(s))
                .collect::<Result<Vec<_>, _>>()?;
            let runs = medley_testnet::sweep::sweep(medley_testnet::sweep::SweepOptions {
                scenario: text,
                seeds,
                seed,
                sets,
                out: out.clone(),
                shaping: !no_shaping,
                bin_dir: None,
            })
            .await
            .with_context(|| format!("sweep of {} failed", scenario.display()))?;
            println!("{} runs", runs.len());
            println!("sweep: {}", out.join("sweep.md").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            dir,
            nodes,
            regions,
            trackers,
        } => {
            let mut b = Testnet::builder()
                .nodes(nodes)
                .regions(regions)
                .trackers(trackers);
            if let Some(d) = dir {
                b = b.dir(d);
            }
            let mut net = b.spawn().await.context("cannot start the testnet")?;
            if net.tracker_count() > 1 {
                println!(
                    "Medley testnet running: {} tracker replicas on PostgreSQL at {}",
                    net.tracker_count(),
                    net.tracker_url()
                );
            } else {
                println!("Medley testnet running: tracker at {}", net.tracker_url());
            }
            println!("{} nodes in regions {}", nodes, net.regions().join(", "));
            println!("data and logs under {}", net.dir().display());
            println!();
            println!("# paste into a shell to use `medley` against it:");
            println!("export MEDLEY_TRACKER={}", net.tracker_url());
            println!("export MEDLEY_ADMIN_TOKEN={}", net.admin_token());
            if let Some(ca) = net.tracker_ca() {
                println!("export MEDLEY_TRACKER_CA={}", ca.display());
            }
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
    // Shaping needs root: a user who is not runs the scenario inside a namespace of its own.
    let shaped = matches!(
        cli.command,
        Command::Run {
            no_shaping: false,
            check: false,
            ..
        } | Command::Sweep {
            no_shaping: false,
            ..
        }
    );
    if shaped && let Some(code) = medley_testnet::userns::rerun_in_namespace() {
        return code;
    }
    let mut code = ExitCode::SUCCESS;
    let r = medley_daemon::run_main("warn,lofty=error,symphonia_core::probe=off", async {
        code = main_async(cli).await?;
        Ok(())
    });
    if r == ExitCode::SUCCESS { code } else { r }
}
