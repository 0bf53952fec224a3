//! The `weir` command.
//!
//! `weir serve` runs the daemon. Configuration comes from, lowest first: the
//! TOML file (`--config` or `$WEIR_CONFIG`), `WEIR_<KEY>` environment
//! variables (`WEIR_MAX_CONNECTIONS=8192` sets `max-connections`), then flags.
//!
//! The other subcommands are clients of one data directory (`--data-dir`,
//! else `$WEIR_DATA_DIR`, else `$STATE_DIRECTORY`, else `./weir-data`):
//! `append` goes through the daemon's socket; the read commands map the
//! store through `weir::Reader` and work with the daemon stopped.
//!
//! Exit status: 0 on success, 2 for usage errors, 1 for everything else,
//! with one line `weir: <problem>` on stderr.
#![forbid(unsafe_code)]

mod cmd;
mod metrics;
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
    /// Append one event (payload flag), or JSON lines from stdin.
    Append(cmd::append::AppendArgs),
    /// Print the event with this id.
    Get(cmd::read::GetArgs),
    /// Print an entity's events, oldest first.
    Stream(cmd::read::StreamArgs),
    /// Print the events of a region, in sequence order.
    Query(cmd::read::QueryArgs),
    /// Print the last events of a region; `-f` follows new ones.
    Tail(cmd::read::TailArgs),
    /// Show the store's and the daemon's state and counters.
    Stat(cmd::stat::StatArgs),
    /// Check every frame CRC, the index against the segments, every hash chain.
    Verify(cmd::verify::VerifyArgs),
    /// Write the events of a region as JSON lines.
    Export(cmd::export::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        serve::init_logging("warn");
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Append(args) => cmd::append::run(args),
        Command::Get(args) => cmd::read::get(args),
        Command::Stream(args) => cmd::read::stream(args),
        Command::Query(args) => cmd::read::query(args),
        Command::Tail(args) => cmd::read::tail(args),
        Command::Stat(args) => cmd::stat::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Export(args) => cmd::export::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `weir query | head`: the reader went away; nothing to report.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `a: b: c`, each cause left out
/// when the text before it already says it (many errors print their
/// source themselves).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::message;

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        // An error whose own text includes its source's, as `OpenError::Io` does.
        let e = anyhow::Error::new(io).context(format!("/x: {text}"));
        assert_eq!(message(&e), format!("/x: {text}"));
        // A cause with text of its own is kept.
        let e = anyhow::anyhow!("disk full").context("cannot append");
        assert_eq!(message(&e), "cannot append: disk full");
    }
}
