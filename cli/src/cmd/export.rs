//! `weir export`: the events of a region as JSON lines, with their hashes,
//! in sequence order from one snapshot. `weir append` reads the same lines
//! back (a base64 payload stays bytes).

use super::common::{DataDir, RegionArgs};
use super::render::entry_json;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

/// Events read per page.
const PAGE: usize = 4096;

/// Output formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
}

/// Arguments of `weir export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Only events with a sequence above SEQ.
    #[arg(long, value_name = "SEQ")]
    after: Option<u64>,
    #[command(flatten)]
    region: RegionArgs,
    #[command(flatten)]
    dir: DataDir,
}

/// Runs `weir export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let Format::Jsonl = args.format;
    let reader = args.dir.reader()?;
    let snap = reader.snapshot();
    let region = args.region.region();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let bar = if std::io::stderr().is_terminal() {
        let total = snap.count(&region)?;
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("exporting [{bar:40}] {human_pos}/{human_len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut after = args.after;
    let mut n = 0u64;
    loop {
        let page = snap.query_after(&region, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.sequence());
        for e in &page {
            serde_json::to_writer(&mut out, &entry_json(e, true)?)?;
            out.write_all(b"\n")?;
        }
        n += page.len() as u64;
        bar.set_position(n);
    }
    out.flush()?;
    bar.finish_and_clear();
    if let Some(path) = &args.output {
        eprintln!("exported {n} events to {}", path.display());
    }
    Ok(())
}
