//! The `weir` command.
//!
//! `weir serve` runs the daemon. Configuration comes from, lowest first: the
//! TOML file (`--config` or `$WEIR_CONFIG`), `WEIR_<KEY>` environment
//! variables (`WEIR_MAX_CONNECTIONS=8192` sets `max-connections`), then flags.

mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// weir: a durable, hash-chained event store for the services of one host.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the writer daemon on a data directory.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}
