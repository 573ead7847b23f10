use std::process::ExitCode;

use clap::Parser;
use medley_tracker::cli::{Cli, Command, import, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    medley_daemon::run_main(&cli.log, async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Import(args) => tokio::task::spawn_blocking(move || import(args)).await?,
        }
    })
}
