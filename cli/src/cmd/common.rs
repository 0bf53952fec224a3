//! What every client command shares: finding the data directory and the
//! daemon, parsing kinds and regions, and the output mode.

use anyhow::{Context, Result, anyhow, bail};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use weir::{Client, ClientError, ClientOptions, ErrorCode, EventKind, KindFilter, Reader, Region};

/// `--data-dir`, shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// Data directory. Default: `$WEIR_DATA_DIR`, else `$STATE_DIRECTORY`
    /// (systemd), else `./weir-data`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDir {
    /// The directory: the flag, then `$WEIR_DATA_DIR`, `$STATE_DIRECTORY`, `./weir-data`.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        self.data_dir
            .clone()
            .or_else(|| env("WEIR_DATA_DIR").map(PathBuf::from))
            .or_else(|| {
                // systemd may pass several directories, colon-separated.
                env("STATE_DIRECTORY").and_then(|v| {
                    v.to_str()
                        .and_then(|s| s.split(':').next())
                        .map(PathBuf::from)
                })
            })
            .unwrap_or_else(|| PathBuf::from("weir-data"))
    }

    /// The path, refusing one that is not a weir data directory.
    pub fn existing(&self) -> Result<PathBuf> {
        let dir = self.path();
        if !dir.is_dir() {
            bail!(
                "no data directory at {} (pass --data-dir or set WEIR_DATA_DIR)",
                dir.display()
            );
        }
        if !dir.join("gate").exists() {
            bail!(
                "{} is not a weir data directory (no gate file); run `weir serve --data-dir {}` once to create it",
                dir.display(),
                dir.display()
            );
        }
        Ok(dir)
    }

    /// Attaches a reader; works whether or not the daemon runs.
    pub fn reader(&self) -> Result<Reader> {
        let dir = self.existing()?;
        Reader::open(&dir).with_context(|| format!("cannot open the store at {}", dir.display()))
    }

    /// Connects to the daemon serving this directory.
    pub fn client(&self, retry_for: Duration) -> Result<Client> {
        let dir = self.existing()?;
        connect(&dir, retry_for).map_err(|e| not_running(&dir, &e))
    }
}

/// Connects to the daemon serving `dir`, keeping the client's error.
pub fn connect(dir: &std::path::Path, retry_for: Duration) -> Result<Client, ClientError> {
    let opts = ClientOptions::default()
        .retry_for(retry_for)
        .name(format!("weir-cli/{}", std::process::id()));
    Client::connect_dir_with(dir, opts)
}

/// Does `e` mean that no daemon serves the directory (no socket recorded,
/// no socket file, nothing listening on it, or the daemon of another
/// directory, as a copy's `socket` file leads to)? A daemon that refused the
/// connection (`ClientError::Refused`: busy, stopping) runs.
pub fn means_not_running(e: &ClientError) -> bool {
    match e {
        ClientError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ),
        ClientError::NotRunning { .. }
        | ClientError::Disconnected { .. }
        | ClientError::OtherDataDir { .. } => true,
        _ => false,
    }
}

/// Says "not running" when that is what the error means.
fn not_running(dir: &std::path::Path, e: &ClientError) -> anyhow::Error {
    let gone = means_not_running(e);
    if let ClientError::NotAnswering { .. } = e {
        return anyhow!(
            "the daemon for {} is not answering ({e}); it runs but may be stopped, hung or overloaded",
            dir.display()
        );
    }
    if let ClientError::Refused { error, .. } = e {
        return anyhow!(
            "the daemon for {} is running but refused the connection as {} ({e}); try again later",
            dir.display(),
            refusal(error.code)
        );
    }
    if let ClientError::NotRunning { .. } = e {
        // Its text already says "the daemon is not running for <dir>".
        return anyhow!(
            "{e}; start it with `weir serve --data-dir {}`",
            dir.display()
        );
    }
    if gone {
        anyhow!(
            "the daemon is not running for {} ({e}); start it with `weir serve --data-dir {}`",
            dir.display(),
            dir.display()
        )
    } else {
        anyhow!("cannot reach the daemon for {}: {e}", dir.display())
    }
}

/// Why a running daemon refuses connections, in a word or two.
pub fn refusal(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Busy => "busy",
        ErrorCode::ShuttingDown => "shutting down",
        _ => "not ready",
    }
}

/// `--json`, shared by every read command.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Output {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Output {
    /// Is stdout a terminal (table with a header) rather than a pipe (tab-separated lines)?
    #[must_use]
    pub fn tty() -> bool {
        std::io::stdout().is_terminal()
    }
}

/// The region flags of `query`, `tail` and `export`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegionArgs {
    /// Entity, or ancestor of entities (`user` selects `user` and `user:…`;
    /// leave it out to select every entity).
    #[arg(long, value_name = "P", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub entity_prefix: Option<String>,
    /// Exact scope.
    #[arg(long, value_name = "S")]
    pub scope: Option<String>,
    /// One kind, decimal or 0x-hex (`0x1001`).
    #[arg(long, value_name = "K", value_parser = parse_kind, conflicts_with = "category")]
    pub kind: Option<EventKind>,
    /// Every kind of one 4-bit category, decimal or 0x-hex (`0x1`).
    #[arg(long, value_name = "C", value_parser = parse_category)]
    pub category: Option<u8>,
    /// Per-entity clocks, inclusive: `N`, `N..M`, `N..` (from N on) or
    /// `..M`. An entity's events from clock N on cost a read of each of
    /// them, not of its older events.
    #[arg(long, value_name = "RANGE", value_parser = parse_clock_range)]
    pub clock: Option<(u32, u32)>,
}

impl RegionArgs {
    /// The region these flags select.
    #[must_use]
    pub fn region(&self) -> Region {
        let kind = match (self.kind, self.category) {
            (Some(k), _) => KindFilter::Exact(k),
            (None, Some(c)) => KindFilter::Category(c),
            (None, None) => KindFilter::Any,
        };
        Region {
            entity_prefix: self.entity_prefix.clone(),
            scope: self.scope.clone(),
            kind,
            clock_range: self.clock,
        }
    }
}

/// An unsigned number, decimal or `0x`-hex.
fn parse_number(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.replace('_', "").parse(),
    };
    r.map_err(|_| format!("`{s}` is not a number (decimal or 0x-hex)"))
}

/// A kind, decimal or `0x`-hex, at most 0xFFFF.
pub fn parse_kind(s: &str) -> Result<EventKind, String> {
    let n = parse_number(s)?;
    u16::try_from(n)
        .map(EventKind)
        .map_err(|_| format!("kind {s} does not fit in 16 bits (0x0000..=0xFFFF)"))
}

/// A 4-bit category, decimal or `0x`-hex.
pub fn parse_category(s: &str) -> Result<u8, String> {
    match parse_number(s)? {
        n @ 0..=15 => Ok(n as u8),
        _ => Err(format!("category {s} is out of range (0..=15, 0x0..=0xF)")),
    }
}

/// An inclusive clock range: `N`, `N..M`, `N..` or `..M`, each bound
/// decimal or `0x`-hex and at most `u32::MAX`.
pub fn parse_clock_range(s: &str) -> Result<(u32, u32), String> {
    let bound = |b: &str, default: u32| -> Result<u32, String> {
        if b.trim().is_empty() {
            return Ok(default);
        }
        let n = parse_number(b)?;
        u32::try_from(n)
            .map_err(|_| format!("clock {b} does not fit in 32 bits (0..={})", u32::MAX))
    };
    let (lo, hi) = match s.split_once("..") {
        Some((lo, hi)) => (bound(lo, 0)?, bound(hi, u32::MAX)?),
        None if !s.trim().is_empty() => {
            let n = bound(s, 0)?;
            (n, n)
        }
        None => return Err("an empty clock range (write N, N..M, N.. or ..M)".into()),
    };
    if lo > hi {
        return Err(format!("clock range {s} is empty: {lo} is above {hi}"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_refusing_the_connection_is_not_called_stopped() {
        let e = ClientError::Refused {
            path: PathBuf::from("/d/weir.sock"),
            waited: Duration::from_secs(10),
            error: Box::new(weir::WireError::new(
                ErrorCode::Busy,
                "the daemon serves max-connections = 2 already",
            )),
            keys: Vec::new(),
            answered: Vec::new(),
        };
        assert!(!means_not_running(&e));
        let text = not_running(std::path::Path::new("/d"), &e).to_string();
        assert!(
            text.starts_with("the daemon for /d is running but refused the connection as busy"),
            "{text}"
        );
        assert!(
            text.contains("Busy: the daemon serves max-connections = 2"),
            "{text}"
        );
        assert!(!text.contains("weir serve"), "{text}");
    }

    #[test]
    fn kinds_parse_as_decimal_or_hex() {
        assert_eq!(parse_kind("4097"), Ok(EventKind(0x1001)));
        assert_eq!(parse_kind("0x1001"), Ok(EventKind(0x1001)));
        assert!(parse_kind("0x10000").is_err());
        assert!(parse_kind("one").is_err());
        assert_eq!(parse_category("0xF"), Ok(15));
        assert!(parse_category("16").is_err());
    }

    #[test]
    fn clock_ranges_parse_with_open_ends() {
        assert_eq!(parse_clock_range("7"), Ok((7, 7)));
        assert_eq!(parse_clock_range("2..0x10"), Ok((2, 16)));
        assert_eq!(parse_clock_range("5.."), Ok((5, u32::MAX)));
        assert_eq!(parse_clock_range("..5"), Ok((0, 5)));
        assert_eq!(parse_clock_range(".."), Ok((0, u32::MAX)));
        assert_eq!(parse_clock_range("4294967295"), Ok((u32::MAX, u32::MAX)));
        let e = parse_clock_range("3..1").unwrap_err();
        assert!(e.contains("3 is above 1"), "{e}");
        let e = parse_clock_range("4294967296..").unwrap_err();
        assert!(e.contains("does not fit in 32 bits"), "{e}");
        assert!(parse_clock_range("").is_err());
        assert!(parse_clock_range("a..b").is_err());
        assert!(parse_clock_range("1...3").is_err());
    }
}
