//! Prometheus text exposition (format 0.0.4) of the daemon's `Stats` and
//! what a reader sees, for `weir stat --prometheus` and the optional
//! `metrics-listen` HTTP listener of `weir serve`.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir::{Client, ClientOptions, Reader, Region, Stats};

/// What a reader knows without the daemon.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Local {
    /// The gate's `visible` watermark.
    pub visible: u64,
    /// Visible events (cancelled sequences excluded).
    pub events: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of index files.
    pub index_bytes: u64,
    /// The current generation's crash checkpoint covers every sequence
    /// below this (0: none); a crash would replay the log from about here.
    pub checkpoint_watermark: u64,
}

impl Local {
    /// Reads the counts from the store at `dir` through `reader`.
    pub fn read(reader: &Reader, dir: &Path) -> Result<Self, weir::ReadError> {
        let snap = reader.snapshot();
        Ok(Self {
            visible: snap.visible(),
            events: snap.count(&Region::all())?,
            segments: std::fs::read_dir(dir.join("segments")).map_or(0, |rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                    .count() as u64
            }),
            index_bytes: weir_daemon::store::dir_bytes(&dir.join("index")),
            checkpoint_watermark: weir_daemon::checkpoint::watermark_in(
                dir,
                reader.status().generation,
            )
            .unwrap_or(0),
        })
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// A histogram from per-bucket (not cumulative) counts. The daemon keeps
/// no sum, so `_sum` is left out (parsers accept that; rate() of the
/// buckets still gives quantiles).
fn histogram(out: &mut String, name: &str, help: &str, buckets: &[(u64, u64)], divisor: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut total = 0;
    for &(ub, n) in buckets {
        total += n;
        let le = if ub == u64::MAX {
            "+Inf".to_owned()
        } else {
            format!("{}", ub as f64 / divisor)
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
    }
    if buckets.last().is_none_or(|(ub, _)| *ub != u64::MAX) {
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    }
    let _ = writeln!(out, "{name}_count {total}");
}

/// The exposition text; `stats` is `None` when the daemon is not running.
#[must_use]
pub fn render(stats: Option<&Stats>, local: &Local) -> String {
    let mut o = String::new();
    metric(
        &mut o,
        "weir_up",
        "gauge",
        "1 if the daemon answered.",
        u8::from(stats.is_some()),
    );
    metric(
        &mut o,
        "weir_visible_watermark",
        "gauge",
        "Sequences below this are published.",
        local.visible,
    );
    metric(
        &mut o,
        "weir_events",
        "gauge",
        "Visible events in the store.",
        local.events,
    );
    metric(
        &mut o,
        "weir_segments",
        "gauge",
        "Segment files.",
        local.segments,
    );
    metric(
        &mut o,
        "weir_index_bytes",
        "gauge",
        "Bytes of index files.",
        local.index_bytes,
    );
    metric(
        &mut o,
        "weir_checkpoint_watermark",
        "gauge",
        "The current index generation's crash checkpoint covers every sequence below this (0: none).",
        local.checkpoint_watermark,
    );
    let Some(s) = stats else {
        return o;
    };
    metric(
        &mut o,
        "weir_appends_total",
        "counter",
        "Events appended since the daemon started.",
        s.appends,
    );
    metric(
        &mut o,
        "weir_append_bytes_total",
        "counter",
        "Payload and name bytes appended since start.",
        s.bytes,
    );
    metric(
        &mut o,
        "weir_groups_total",
        "counter",
        "Group commits since start.",
        s.groups,
    );
    metric(
        &mut o,
        "weir_fsyncs_total",
        "counter",
        "fsync calls since start.",
        s.fsyncs,
    );
    metric(
        &mut o,
        "weir_queue_depth",
        "gauge",
        "Requests waiting for the writer.",
        s.queue_depth,
    );
    metric(
        &mut o,
        "weir_connections",
        "gauge",
        "Open client connections.",
        s.connections,
    );
    metric(
        &mut o,
        "weir_restore_entries",
        "gauge",
        "Events restored at start.",
        s.restore_entries,
    );
    metric(
        &mut o,
        "weir_restore_seconds",
        "gauge",
        "How long the restore at start took.",
        s.restore_ms as f64 / 1000.0,
    );
    let _ = writeln!(
        o,
        "# HELP weir_restore_info The restore path taken at start.\n# TYPE weir_restore_info gauge\nweir_restore_info{{path=\"{}\"}} 1",
        escape(&s.restore_path)
    );
    let _ = writeln!(
        o,
        "# HELP weir_rejected_total Requests refused, by reason.\n# TYPE weir_rejected_total counter"
    );
    for (reason, n) in &s.rejected {
        let _ = writeln!(
            o,
            "weir_rejected_total{{reason=\"{}\"}} {n}",
            escape(reason)
        );
    }
    histogram(
        &mut o,
        "weir_fsync_duration_seconds",
        "fsync latency.",
        &s.fsync_hist_us,
        1e6,
    );
    histogram(
        &mut o,
        "weir_group_size_events",
        "Events per group commit.",
        &s.group_hist,
        1.0,
    );
    o
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves the exposition text over plain HTTP on `addr` from a background
/// thread, asking the daemon (through its own socket) on every scrape.
/// Binds before returning, so a bad address fails `weir serve` at once.
pub fn listen(addr: &str, data_dir: PathBuf) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    tracing::info!(address = %listener.local_addr()?, "serving Prometheus metrics");
    std::thread::Builder::new()
        .name("weir-metrics".into())
        .spawn(move || {
            let mut scraper = Scraper {
                dir: data_dir,
                client: None,
                reader: None,
                warned: false,
            };
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &mut scraper) {
                    tracing::debug!(error = %e, "metrics request failed");
                }
            }
        })?;
    Ok(())
}

/// The listener's lazily opened client and reader.
struct Scraper {
    dir: PathBuf,
    client: Option<Client>,
    reader: Option<Reader>,
    /// A reader setting in the environment that `Reader::open` refuses was
    /// logged (once: local metrics stay off until the daemon restarts).
    warned: bool,
}

impl Scraper {
    fn text(&mut self) -> Option<String> {
        if self.client.is_none() {
            let opts = ClientOptions::default()
                .retry_for(Duration::from_millis(500))
                .name("weir-metrics");
            self.client = Client::connect_dir_with(&self.dir, opts).ok();
        }
        let stats = self.client.as_mut()?.stats();
        let stats = match stats {
            Ok(s) => s,
            Err(_) => {
                self.client = None;
                return None;
            }
        };
        if self.reader.is_none() {
            self.reader = match Reader::open(&self.dir) {
                Ok(r) => Some(r),
                Err(e @ weir::AttachError::Setting { .. }) => {
                    if !self.warned {
                        tracing::warn!(error = %e, "local metrics are off");
                        self.warned = true;
                    }
                    None
                }
                Err(_) => None,
            };
        }
        let local = self
            .reader
            .as_ref()
            .and_then(|r| Local::read(r, &self.dir).ok())
            .unwrap_or_default();
        Some(render(Some(&stats), &local))
    }
}

fn answer(mut stream: TcpStream, scraper: &mut Scraper) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // Read the request head; any path gets the metrics.
    let mut head = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    while head.read_line(&mut line)? > 2 {
        line.clear();
    }
    let (status, body) = match scraper.text() {
        Some(text) => ("200 OK", text),
        None => (
            "503 Service Unavailable",
            "the daemon is not answering on its socket\n".to_owned(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_cumulative_buckets_and_reasons() {
        let s = Stats {
            appends: 5,
            rejected: [("Conflict".to_owned(), 2)].into(),
            fsync_hist_us: vec![(50, 1), (100, 2), (u64::MAX, 1)],
            ..Stats::default()
        };
        let local = Local {
            checkpoint_watermark: 2048,
            ..Local::default()
        };
        let text = render(Some(&s), &local);
        assert!(text.contains("weir_checkpoint_watermark 2048\n"), "{text}");
        assert!(text.contains("weir_up 1\n"), "{text}");
        assert!(text.contains("weir_appends_total 5\n"), "{text}");
        assert!(
            text.contains("weir_rejected_total{reason=\"Conflict\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_fsync_duration_seconds_bucket{le=\"0.0001\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("weir_fsync_duration_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        let down = render(None, &local);
        assert!(down.contains("weir_up 0\n"), "{down}");
        assert!(down.contains("weir_checkpoint_watermark 2048\n"), "{down}");
    }
}
