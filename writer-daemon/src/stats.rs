//! Counters the writer and the server share, read by `Stats` and metrics.

use crate::error::AppendError;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use weir_protocol::wire::Stats;

/// Upper bounds (µs) of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    50,
    100,
    200,
    300,
    500,
    750,
    1000,
    2000,
    5000,
    10_000,
    50_000,
    u64::MAX,
];
/// Upper bounds of the group size histogram buckets.
pub const GROUP_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 64, 256, 1024, 4096, u64::MAX];

/// Shared counters.
#[derive(Debug, Default)]
pub struct Shared {
    appends: AtomicU64,
    bytes: AtomicU64,
    groups: AtomicU64,
    fsyncs: AtomicU64,
    visible: AtomicU64,
    queue: AtomicU64,
    connections: AtomicU64,
    segments: AtomicU64,
    last_tick_ms: AtomicU64,
    checkpoint: AtomicU64,
    fsync_hist: [AtomicU64; 12],
    group_hist: [AtomicU64; 10],
    rejected: Mutex<BTreeMap<String, u64>>,
    poisoned: AtomicBool,
}

impl Shared {
    /// A request entered the queue.
    pub fn enqueued(&self) {
        self.queue.fetch_add(1, Relaxed);
    }
    /// Requests left the queue.
    pub fn dequeued(&self, n: u64) {
        self.queue
            .fetch_sub(n.min(self.queue.load(Relaxed)), Relaxed);
    }
    /// Requests waiting.
    pub fn queue_depth(&self) -> u64 {
        self.queue.load(Relaxed)
    }
    /// Connection count changes.
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections.fetch_add(1, Relaxed);
        } else {
            self.connections.fetch_sub(1, Relaxed);
        }
    }
    /// Open connections.
    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }
    /// A crash checkpoint now covers every sequence below `watermark`.
    pub fn checkpointed(&self, watermark: u64) {
        self.checkpoint.store(watermark, Relaxed);
    }
    /// The watermark of the newest crash checkpoint (0: none yet).
    pub fn checkpoint_watermark(&self) -> u64 {
        self.checkpoint.load(Relaxed)
    }
    /// One fsync took `d`.
    pub fn fsynced(&self, d: Duration) {
        self.fsyncs.fetch_add(1, Relaxed);
        let us = d.as_micros() as u64;
        let b = FSYNC_BUCKETS_US
            .iter()
            .position(|&ub| us <= ub)
            .unwrap_or(FSYNC_BUCKETS_US.len() - 1);
        self.fsync_hist[b].fetch_add(1, Relaxed);
    }
    /// A group committed `events` fresh events. One that wrote none (every
    /// request refused or replayed) is no group commit and is not counted.
    pub fn committed(&self, events: u64, bytes: u64, visible: u64) {
        self.visible.store(visible, Relaxed);
        if events == 0 {
            return;
        }
        self.appends.fetch_add(events, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        self.groups.fetch_add(1, Relaxed);
        let b = GROUP_BUCKETS
            .iter()
            .position(|&ub| events <= ub)
            .unwrap_or(GROUP_BUCKETS.len() - 1);
        self.group_hist[b].fetch_add(1, Relaxed);
    }
    /// Sets the visible watermark (at start, before any group).
    pub fn set_visible(&self, visible: u64) {
        self.visible.store(visible, Relaxed);
    }
    /// A request was refused.
    pub fn rejected(&self, e: &AppendError) {
        self.reject_code(&format!("{:?}", e.code()));
    }
    /// A request was refused, by code name.
    pub fn reject_code(&self, code: &str) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(code.to_owned()).or_default() += 1;
        }
    }
    /// The writer refuses writes until restarted (after a failed write or
    /// fsync).
    pub fn set_poisoned(&self) {
        self.poisoned.store(true, Relaxed);
    }
    /// Segment count.
    pub fn set_segments(&self, n: u64) {
        self.segments.store(n, Relaxed);
    }
    /// The writer is alive now.
    pub fn tick(&self) {
        self.last_tick_ms.store(mono_ms(), Relaxed);
    }
    /// When the writer last showed life, on [`mono_ms`]'s clock.
    pub fn last_tick_ms(&self) -> u64 {
        self.last_tick_ms.load(Relaxed)
    }
    /// How long ago the writer last showed life.
    pub fn writer_silent_ms(&self) -> u64 {
        mono_ms().saturating_sub(self.last_tick_ms())
    }
    /// A snapshot (the caller fills instance, restore and index fields).
    pub fn snapshot(&self) -> Stats {
        let hist = |h: &[AtomicU64], b: &[u64]| {
            b.iter()
                .zip(h)
                .map(|(ub, c)| (*ub, c.load(Relaxed)))
                .collect()
        };
        Stats {
            appends: self.appends.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            groups: self.groups.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            visible: self.visible.load(Relaxed),
            allocated: self.visible.load(Relaxed),
            queue_depth: self.queue_depth(),
            connections: self.connections(),
            segments: self.segments.load(Relaxed),
            rejected: self.rejected.lock().map(|m| m.clone()).unwrap_or_default(),
            fsync_hist_us: hist(&self.fsync_hist, &FSYNC_BUCKETS_US),
            group_hist: hist(&self.group_hist, &GROUP_BUCKETS),
            writer_poisoned: self.poisoned.load(Relaxed),
            ..Stats::default()
        }
    }
}

/// Milliseconds on a monotonic clock, from this process's first call. The
/// writer's liveness is measured on it: a step of the wall clock (NTP, an
/// operator) must not make a live writer look silent to the watchdog.
#[must_use]
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_is_timed_on_a_monotonic_clock() {
        let shared = Shared::default();
        std::thread::sleep(std::time::Duration::from_millis(20));
        shared.tick();
        // A tick is a monotonic reading, not the wall clock's milliseconds
        // since 1970 (about 1.8e12 today), which a step of the system clock
        // moves: the watchdog then took a live writer for a silent one.
        assert!(
            shared.last_tick_ms() < 1_000_000_000,
            "{}",
            shared.last_tick_ms()
        );
        assert!(shared.writer_silent_ms() < 1_000);
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(shared.writer_silent_ms() >= 30);
    }
}
