use std::process::ExitCode;

use clap::Parser;
use medley_node::cli::{Cli, Command, drain, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    medley_daemon::run_main(&cli.log, async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Drain(args) => drain(args).await,
        }
    })
}
