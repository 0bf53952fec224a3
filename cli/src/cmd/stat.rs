//! `weir stat`: the store as a reader sees it, plus the daemon's counters
//! when it runs.

use super::common::{DataDir, connect, means_not_running, refusal};
use crate::metrics::{self, Local, LocalGauges};
use anyhow::{Context, Result};
use serde_json::json;
use std::io::{ErrorKind, Write};
use std::time::Duration;
use weir::{ClientError, DaemonState, Stats};

/// Arguments of `weir stat`.
#[derive(Debug, clap::Args)]
pub struct StatArgs {
    /// One JSON object.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Prometheus text exposition format.
    #[arg(long)]
    prometheus: bool,
    #[command(flatten)]
    dir: DataDir,
}

fn state_name(s: DaemonState) -> String {
    match s {
        DaemonState::Starting => "starting".into(),
        DaemonState::Live => "live".into(),
        DaemonState::Stopped => "stopped".into(),
        DaemonState::Superseded => "superseded".into(),
        DaemonState::Unknown(n) => format!("unknown ({n})"),
        _ => format!("{s:?}"),
    }
}

/// Runs `weir stat`.
pub fn run(args: StatArgs) -> Result<()> {
    let dir = args.dir.existing()?;
    let reader = args.dir.reader()?;
    let local = Local::read(&reader, &dir).context("cannot count the events")?;
    let status = reader.status();
    // Nothing listening within a moment counts as not running; a socket
    // that refuses this user, a daemon that refuses the connection (busy)
    // for that moment or that fails the call does not.
    let (stats, unreachable) =
        match connect(&dir, Duration::from_millis(500)).and_then(|mut c| c.stats()) {
            Ok(s) => (Some(s), None),
            Err(e) if means_not_running(&e) => (None, None),
            Err(e) => (None, Some(e)),
        };
    let mut out = std::io::stdout().lock();
    if args.prometheus {
        write!(
            out,
            "{}",
            metrics::render(stats.as_ref(), &LocalGauges::Read(local.clone()))
        )?;
        return Ok(());
    }
    let heartbeat_age_ms = now_ms().saturating_sub(status.heartbeat_ms);
    if args.json {
        let mut v = json!({
            "data_dir": dir.display().to_string(),
            // null: something is there, but it could not be asked (`daemon_error`).
            "daemon_running": if unreachable.is_some() { None } else { Some(stats.is_some()) },
            "gate_state": state_name(status.state),
            "pid": status.pid,
            "instance": weir::EventId(status.instance).to_string(),
            "index_generation": status.generation,
            "heartbeat_age_ms": heartbeat_age_ms,
            "visible": local.visible,
            "events": local.events,
            "segments": local.segments,
            "checkpoint_watermark": local.checkpoint_watermark,
            "index_bytes": local.index_bytes,
        });
        if let Some(s) = &stats {
            v["daemon"] = serde_json::to_value(daemon_json(s))?;
        }
        if let Some(e) = &unreachable {
            v["daemon_error"] = e.to_string().into();
        }
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("data dir", dir.display().to_string()),
        (
            "daemon",
            match (&stats, &unreachable) {
                (Some(s), _) if s.writer_poisoned => format!(
                    "running (pid {}) but REFUSING EVERY WRITE: a write or fsync failed (see its log); restart it",
                    status.pid
                ),
                (Some(_), _) => format!("running (pid {})", status.pid),
                (None, Some(e)) => unreachable_row(e, &status, heartbeat_age_ms),
                (None, None) => format!(
                    "not running (gate says {}, last heartbeat {} ago); daemon counters unavailable",
                    state_name(status.state),
                    age(heartbeat_age_ms)
                ),
            },
        ),
        ("visible watermark", local.visible.to_string()),
        ("events", local.events.to_string()),
        ("segments", local.segments.to_string()),
        ("index size", bytes(local.index_bytes)),
        ("index generation", status.generation.to_string()),
        (
            "crash checkpoint",
            if local.checkpoint_watermark == 0 {
                "none (a crash would rebuild the index)".to_owned()
            } else {
                format!(
                    "covers sequences below {} (a crash would replay the rest)",
                    local.checkpoint_watermark
                )
            },
        ),
    ];
    if let Some(s) = &stats {
        rows.extend([
            ("connections", s.connections.to_string()),
            ("queue depth", s.queue_depth.to_string()),
            (
                "restore",
                format!(
                    "{} ({} events in {} ms)",
                    s.restore_path, s.restore_entries, s.restore_ms
                ),
            ),
            (
                "since start",
                format!(
                    "{} appends, {}, {} groups, {} fsyncs",
                    s.appends,
                    bytes(s.bytes),
                    s.groups,
                    s.fsyncs
                ),
            ),
            (
                "rejected",
                if s.rejected.is_empty() {
                    "none".to_owned()
                } else {
                    s.rejected
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ),
        ]);
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        writeln!(out, "{k:<w$}  {v}")?;
    }
    Ok(())
}

/// The daemon row when a socket is there but the call failed: the gate's
/// word on whether it runs, and why it could not be asked.
fn unreachable_row(e: &ClientError, status: &weir::Status, heartbeat_age_ms: u64) -> String {
    let why = match e {
        ClientError::Io { source, .. } if source.kind() == ErrorKind::PermissionDenied => {
            format!("its socket refused this user ({e})")
        }
        ClientError::Refused { error, .. } => {
            format!("it refused the connection as {} ({e})", refusal(error.code))
        }
        _ => format!("cannot reach it ({e})"),
    };
    if status.state == DaemonState::Live {
        format!(
            "running (pid {}, last heartbeat {} ago), but {why}; daemon counters unavailable",
            status.pid,
            age(heartbeat_age_ms)
        )
    } else {
        format!(
            "unknown (gate says {}, last heartbeat {} ago): {why}; daemon counters unavailable",
            state_name(status.state),
            age(heartbeat_age_ms)
        )
    }
}

fn daemon_json(s: &Stats) -> serde_json::Value {
    json!({
        "writer_poisoned": s.writer_poisoned,
        "connections": s.connections,
        "queue_depth": s.queue_depth,
        "restore_path": s.restore_path,
        "restore_entries": s.restore_entries,
        "restore_ms": s.restore_ms,
        "appends": s.appends,
        "bytes": s.bytes,
        "groups": s.groups,
        "fsyncs": s.fsyncs,
        "segments": s.segments,
        "index_bytes": s.index_bytes,
        "rejected": s.rejected,
        "fsync_hist_us": s.fsync_hist_us,
        "group_hist": s.group_hist,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn age(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..120_000 => format!("{} s", ms / 1000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
