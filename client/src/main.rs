use std::process::ExitCode;

use clap::Parser;
use medley_client::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
