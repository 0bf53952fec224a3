//! Prometheus text exposition (format 0.0.4) of the daemon's `Stats` and
//! what a reader sees, for `weir stat --prometheus` and the optional
//! `metrics-listen` HTTP listener of `weir serve`.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use weir::{Client, ClientOptions, Reader, Region, Stats};
use weir_daemon::server::accept_log::{AcceptFailures, retry_at_once};

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
            segments: segment_files(dir),
            index_bytes: index_bytes(dir),
            checkpoint_watermark: weir_daemon::checkpoint::watermark_in(
                dir,
                reader.status().generation,
            )
            .unwrap_or(0),
        })
    }
}

/// Segment files in the store at `dir` (no reader needed).
fn segment_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("segments")).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count() as u64
    })
}

/// Bytes of the index files of the store at `dir` (no reader needed).
fn index_bytes(dir: &Path) -> u64 {
    weir_daemon::store::dir_bytes(&dir.join("index"))
}

/// The local gauges of one exposition.
#[derive(Debug, Clone)]
pub enum LocalGauges {
    /// Everything a reader sees.
    Read(Local),
    /// This process's reader could not open the store or count its events:
    /// only what the directory shows, and no figure that would read as zero.
    Unread {
        /// Segment files.
        segments: u64,
        /// Bytes of index files.
        index_bytes: u64,
    },
}

impl LocalGauges {
    /// The gauges that need no reader, of the store at `dir`.
    #[must_use]
    pub fn unread(dir: &Path) -> Self {
        Self::Unread {
            segments: segment_files(dir),
            index_bytes: index_bytes(dir),
        }
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
pub fn render(stats: Option<&Stats>, local: &LocalGauges) -> String {
    let mut o = String::new();
    metric(
        &mut o,
        "weir_up",
        "gauge",
        "1 if the daemon answered.",
        u8::from(stats.is_some()),
    );
    let (read, segments, index_bytes) = match local {
        LocalGauges::Read(l) => (Some(l), l.segments, l.index_bytes),
        LocalGauges::Unread {
            segments,
            index_bytes,
        } => (None, *segments, *index_bytes),
    };
    metric(
        &mut o,
        "weir_local_metrics_up",
        "gauge",
        "1 if this process's reader could read the store; 0: weir_visible_watermark, weir_events and weir_checkpoint_watermark are left out.",
        u8::from(read.is_some()),
    );
    if let Some(l) = read {
        metric(
            &mut o,
            "weir_visible_watermark",
            "gauge",
            "Sequences below this are published.",
            l.visible,
        );
        metric(
            &mut o,
            "weir_events",
            "gauge",
            "Visible events in the store.",
            l.events,
        );
    }
    metric(&mut o, "weir_segments", "gauge", "Segment files.", segments);
    metric(
        &mut o,
        "weir_index_bytes",
        "gauge",
        "Bytes of index files.",
        index_bytes,
    );
    if let Some(l) = read {
        metric(
            &mut o,
            "weir_checkpoint_watermark",
            "gauge",
            "The current index generation's crash checkpoint covers every sequence below this (0: none).",
            l.checkpoint_watermark,
        );
    }
    let Some(s) = stats else {
        return o;
    };
    metric(
        &mut o,
        "weir_writer_poisoned",
        "gauge",
        "1 if a failed write or fsync stopped the writer: every write is refused until the daemon restarts.",
        u8::from(s.writer_poisoned),
    );
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

/// The whole request head (request line and headers) must arrive within
/// this many bytes; a longer one gets 431 and the connection is closed.
const MAX_HEAD: usize = 8 * 1024;
/// The whole request head must arrive within this time, however it is
/// trickled; the read timeout alone is per read.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once, each on its own short-lived thread; more
/// are closed at once, so a few slow clients cannot hold every scrape.
const MAX_CONNECTIONS: usize = 16;

/// Serves the exposition text over plain HTTP on `addr` from a background
/// thread, asking the daemon (through its own socket) on every scrape.
/// Binds before returning, so a bad address fails `weir serve` at once.
pub fn listen(addr: &str, data_dir: PathBuf) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    tracing::info!(address = %listener.local_addr()?, "serving Prometheus metrics");
    std::thread::Builder::new()
        .name("weir-metrics".into())
        .spawn(move || serve(&listener, data_dir))?;
    Ok(())
}

/// Accepts on `listener` for good, one thread per connection (at most
/// [`MAX_CONNECTIONS`]), sharing one [`Scraper`].
fn serve(listener: &TcpListener, data_dir: PathBuf) {
    let scraper = Arc::new(Mutex::new(Scraper {
        dir: data_dir,
        client: None,
        reader: None,
        warned: false,
    }));
    let open = Arc::new(AtomicUsize::new(0));
    accept_loop(
        || listener.accept().map(|(s, _)| s),
        |stream| {
            let Some(slot) = Slot::take(&open) else {
                tracing::debug!("metrics connection closed: too many open");
                return ControlFlow::Continue(());
            };
            let scraper = Arc::clone(&scraper);
            // A failed spawn drops the closure, and the slot with it.
            let _ = std::thread::Builder::new()
                .name("weir-metrics-conn".into())
                .spawn(move || {
                    let _slot = slot;
                    if let Err(e) = answer(stream, &scraper) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                });
            ControlFlow::Continue(())
        },
        std::thread::sleep,
    );
}

/// How long accepting pauses after a failure other than an interrupted call
/// or an aborted connection (EMFILE, ENFILE, ENOBUFS, ENOMEM): retrying at
/// once spins a core while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Hands what `accept` yields to `handle` until `handle` breaks (for the
/// listener: never). A failed accept is followed by `pause(ACCEPT_BACKOFF)`
/// and logged as the daemon's socket logs its own (`accept_log`: the first
/// of a run, then at most once a minute, and the recovery).
fn accept_loop<S>(
    mut accept: impl FnMut() -> std::io::Result<S>,
    mut handle: impl FnMut(S) -> ControlFlow<()>,
    mut pause: impl FnMut(Duration),
) {
    let mut failures = AcceptFailures::new("metrics", ACCEPT_BACKOFF);
    loop {
        match accept() {
            Ok(stream) => {
                failures.accepted();
                if handle(stream).is_break() {
                    return;
                }
            }
            Err(e) if retry_at_once(&e) => {}
            Err(e) => {
                failures.failed(&e, Instant::now());
                pause(ACCEPT_BACKOFF);
            }
        }
    }
}

/// One of the [`MAX_CONNECTIONS`] connection threads; given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Self> {
        let slot = Self(Arc::clone(open));
        (open.fetch_add(1, Ordering::AcqRel) < MAX_CONNECTIONS).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
        let local = local_gauges(self.reader.as_ref(), &self.dir);
        Some(render(Some(&stats), &local))
    }
}

/// The local gauges through `reader`; without one, or when it cannot count,
/// only those that need none (a zero would read as an empty store).
fn local_gauges(reader: Option<&Reader>, dir: &Path) -> LocalGauges {
    reader
        .and_then(|r| Local::read(r, dir).ok())
        .map_or_else(|| LocalGauges::unread(dir), LocalGauges::Read)
}

/// How a request head ended.
enum Head {
    Complete,
    TooLarge,
}

/// Reads up to the blank line that ends the request head, keeping no more
/// than [`MAX_HEAD`] bytes and giving up at `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not complete in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf[..(MAX_HEAD + 1 - head.len()).min(1024)])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // A head ends with an empty line; bare LF line ends are accepted.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        let tail = &head[from..];
        if tail.windows(4).any(|w| w == b"\r\n\r\n") || tail.windows(2).any(|w| w == b"\n\n") {
            return Ok(Head::Complete);
        }
        if head.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

fn answer(mut stream: TcpStream, scraper: &Mutex<Scraper>) -> std::io::Result<()> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // Any path gets the metrics.
    let (status, body) = match read_head(&mut stream, deadline)? {
        Head::TooLarge => (
            "431 Request Header Fields Too Large",
            "request head too large\n".to_owned(),
        ),
        Head::Complete => {
            let text = scraper
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .text();
            match text {
                Some(text) => ("200 OK", text),
                None => (
                    "503 Service Unavailable",
                    "the daemon is not answering on its socket\n".to_owned(),
                ),
            }
        }
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    // Closing with unread bytes sends a reset that can overtake the answer;
    // drain briefly (at most 1 s and 1 MiB, nothing kept) so the client reads it.
    stream.shutdown(Shutdown::Write)?;
    let linger = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while let Some(left) = linger
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero() && drained < 1 << 20)
    {
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
    Ok(())
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
        let local = LocalGauges::Read(Local {
            checkpoint_watermark: 2048,
            ..Local::default()
        });
        let text = render(Some(&s), &local);
        assert!(text.contains("weir_checkpoint_watermark 2048\n"), "{text}");
        assert!(text.contains("weir_writer_poisoned 0\n"), "{text}");
        let poisoned = Stats {
            writer_poisoned: true,
            ..s.clone()
        };
        let text_p = render(Some(&poisoned), &local);
        assert!(text_p.contains("weir_writer_poisoned 1\n"), "{text_p}");
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
        assert!(text.contains("weir_local_metrics_up 1\n"), "{text}");
    }

    #[test]
    fn gauges_a_reader_could_not_read_are_left_out_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("segments")).unwrap();
        std::fs::write(dir.path().join("segments/0000000000.seg"), b"").unwrap();
        std::fs::create_dir_all(dir.path().join("index/gen-00000000")).unwrap();
        std::fs::write(dir.path().join("index/gen-00000000/meta"), [0u8; 100]).unwrap();
        let text = render(Some(&Stats::default()), &local_gauges(None, dir.path()));
        assert!(text.contains("weir_up 1\n"), "{text}");
        assert!(text.contains("weir_local_metrics_up 0\n"), "{text}");
        assert!(text.contains("weir_segments 1\n"), "{text}");
        assert!(text.contains("weir_index_bytes 100\n"), "{text}");
        for gone in [
            "weir_visible_watermark",
            "weir_events",
            "weir_checkpoint_watermark",
        ] {
            let sample = text
                .lines()
                .any(|l| l.split_whitespace().next() == Some(gone));
            assert!(!sample, "{gone} in {text}");
        }
    }

    #[test]
    fn accept_failures_pause_instead_of_spinning() {
        let mut results = (0..5)
            .map(|_| Err(std::io::Error::from_raw_os_error(24))) // EMFILE
            .chain([Err(std::io::ErrorKind::ConnectionAborted.into()), Ok(7)]);
        let mut pauses = Vec::new();
        let mut handled = Vec::new();
        accept_loop(
            || results.next().expect("accepted past the end"),
            |s| {
                handled.push(s);
                ControlFlow::Break(())
            },
            |d| pauses.push(d),
        );
        assert_eq!(handled, [7]);
        assert_eq!(pauses, [ACCEPT_BACKOFF; 5]);
    }

    /// A listener on a free port of a store nobody serves (scrapes get 503).
    fn listener() -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!("weir-metrics-test-{}", std::process::id()));
        std::thread::spawn(move || serve(&l, dir));
        addr
    }

    /// Reads until the server closes; a reset after the answer still counts.
    fn read_all(s: &mut TcpStream) -> String {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    fn scrape(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        read_all(&mut s)
    }

    #[test]
    fn a_request_line_without_end_is_refused_at_the_cap() {
        let addr = listener();
        let mut s = TcpStream::connect(addr).unwrap();
        let mut w = s.try_clone().unwrap();
        // 1 MiB with no newline; the server answers once it has 8 KiB and
        // reads no further into memory (it used to wait for a newline).
        let flood = std::thread::spawn(move || {
            let chunk = vec![b'A'; 64 * 1024];
            for _ in 0..16 {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let got = read_all(&mut s);
        assert!(got.starts_with("HTTP/1.1 431 "), "{got:?}");
        flood.join().unwrap();
        let next = scrape(addr);
        assert!(next.starts_with("HTTP/1.1 503 "), "{next:?}");
    }

    #[test]
    fn a_trickling_client_does_not_hold_other_scrapes() {
        let addr = listener();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"G").unwrap();
        // Answered while the slow head is still unfinished (one connection at
        // a time used to keep this scrape waiting behind it).
        let got = scrape(addr);
        assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
        slow.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let pending = slow.read(&mut buf);
        assert!(
            matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the slow connection was answered first: {pending:?}"
        );
    }
}
