//! The index rows and columns just ahead of the writer are faulted in by a
//! thread of their own (`index/prefault.rs`), so that the writer thread does
//! not take those page faults itself. Needs Linux 5.14+ (`MADV_POPULATE_WRITE`).
mod common;
use common::{config, ev};
use std::time::{Duration, Instant};
use weir_daemon::Store;

/// Resident kB of this process's mapping of the first index chunk.
fn chunk_rss_kb() -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut in_chunk = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_chunk = line.ends_with("/chunk-000000");
        } else if in_chunk && let Some(kb) = line.strip_prefix("Rss:") {
            return kb.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    None
}

/// Whether this kernel has `MADV_POPULATE_WRITE` (Linux 5.14+).
fn kernel_can_populate() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (5, 14)
}

#[test]
fn rows_ahead_of_the_writer_are_resident_before_it_writes_them() {
    if !kernel_can_populate() {
        eprintln!("skipped: this kernel has no MADV_POPULATE_WRITE (Linux 5.14+)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = weir_daemon::Config {
        // 65536 rows: 8 MiB of rows, far more than the prefault windows.
        chunk_rows_log2: 16,
        ..config(tmp.path())
    };
    let store = Store::open(cfg).unwrap();
    store.append(ev("user:1", 0x1001, b"x")).unwrap();
    // One event writes a handful of pages (header, its row, three column
    // cells, an id slot). Two windows of 4096 rows ahead are 1 MiB of rows
    // plus their columns.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rss = chunk_rss_kb();
    while rss.is_none_or(|kb| kb < 1024) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        rss = chunk_rss_kb();
    }
    // Let the thread finish what it was asked, then look again.
    std::thread::sleep(Duration::from_millis(300));
    let settled = chunk_rss_kb();
    store.shutdown().unwrap();
    let rss = rss.expect("the chunk is mapped");
    assert!(
        rss >= 1024,
        "{rss} kB of the chunk resident after one event"
    );
    // Bounded: under three windows of rows and their columns (1.6 MiB)
    // plus the pages the event wrote itself, not all 8 MiB of rows.
    let settled = settled.expect("the chunk is mapped");
    assert!(
        settled <= 2048,
        "{settled} kB of the chunk resident after one event"
    );
}
