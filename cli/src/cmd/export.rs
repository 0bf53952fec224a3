//! `weir export`: the events of a region as JSON lines, with their hashes,
//! in sequence order from one snapshot. `weir append` reads the same lines
//! back (a base64 payload stays bytes).

use super::common::{DataDir, RegionArgs};
use super::render::entry_json;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

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
    /// Write to FILE instead of stdout. FILE is replaced only by a complete
    /// export (written beside it and renamed over it); a failed export leaves
    /// it as it was.
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
    let Some(path) = &args.output else {
        let mut out = BufWriter::new(std::io::stdout().lock());
        export(&snap, &region, args.after, &mut out)?;
        return out.flush().map_err(Into::into);
    };
    let Some(target) = staging_target(path)? else {
        // A device or pipe (`-o /dev/null`): written in place.
        let file = File::options()
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let n = export(&snap, &region, args.after, &mut out)?;
        out.flush()?;
        eprintln!("exported {n} events to {}", path.display());
        return Ok(());
    };
    let staged = Staged::create(&target)?;
    let mut out = BufWriter::new(&staged.file);
    let n = export(&snap, &region, args.after, &mut out)?;
    out.flush()?;
    drop(out);
    staged.commit()?;
    eprintln!("exported {n} events to {}", path.display());
    Ok(())
}

/// Where `-o PATH` is staged: the regular file it names (through a
/// symlink), or PATH if nothing is there yet; `None` for anything else.
fn staging_target(path: &Path) -> Result<Option<PathBuf>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(std::fs::canonicalize(path)?)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(path.to_path_buf())),
        Err(e) => Err(e).with_context(|| format!("cannot open {}", path.display())),
    }
}

/// An export being written to `.<name>.weir-export.<pid>` beside its
/// target; removed on drop unless [`Staged::commit`] renamed it into place.
struct Staged {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Staged {
    fn create(target: &Path) -> Result<Self> {
        let name = target.file_name().context("the output has no file name")?;
        let tmp = target.with_file_name(format!(
            ".{}.weir-export.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let staged = Self {
            file,
            tmp,
            target: target.to_path_buf(),
            done: false,
        };
        // The replaced file's mode stays (its owner cannot, without root).
        if let Ok(m) = std::fs::metadata(target) {
            staged.file.set_permissions(m.permissions())?;
        }
        Ok(staged)
    }

    /// Syncs the export and renames it over the target (its directory synced too).
    fn commit(mut self) -> Result<()> {
        let at = || format!("cannot write {}", self.target.display());
        self.file.sync_all().with_context(at)?;
        std::fs::rename(&self.tmp, &self.target).with_context(at)?;
        self.done = true;
        let dir = self
            .target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).with_context(at)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes the events of `region` in `snap` above `after` to `out` as JSON
/// lines; returns how many.
fn export(
    snap: &weir::Snapshot<'_>,
    region: &weir::Region,
    mut after: Option<u64>,
    out: &mut impl Write,
) -> Result<u64> {
    let bar = if std::io::stderr().is_terminal() {
        let total = snap.count(region)?;
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("exporting [{bar:40}] {human_pos}/{human_len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut n = 0u64;
    loop {
        let page = snap.query_after(region, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.sequence());
        for e in &page {
            serde_json::to_writer(&mut *out, &entry_json(e, true)?)?;
            out.write_all(b"\n")?;
        }
        n += page.len() as u64;
        bar.set_position(n);
    }
    bar.finish_and_clear();
    Ok(n)
}
