use std::process::ExitCode;

use clap::Parser;
use medley_tracker::cli::{
    Cli, Command, import, init, layout, nodes_command, run, show_config, status,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    medley_daemon::run_main(&cli.log, async {
        match cli.command {
            Command::Init(args) => init(args),
            Command::Run(args) => run(args).await,
            Command::Config(args) => show_config(&args),
            Command::Status(args) => status(args).await,
            Command::Nodes(args) => nodes_command(args).await,
            Command::Layout(args) => layout(args).await,
            Command::Import(args) => tokio::task::spawn_blocking(move || import(args)).await?,
        }
    })
}
