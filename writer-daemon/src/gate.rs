//! The daemon's side of the gate: build a fresh page, rename it into place,
//! publish watermarks and cancelled ranges, wake waiters, supersede the old.

use crate::mapped::MappedFile;
use crate::segments::LogPosition;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use weir_protocol::gate::{
    ALLOCATED_OFF, CANCEL_CAPACITY, CANCEL_COUNT_OFF, CANCEL_OVERFLOW_OFF, CANCEL_RANGES_OFF,
    CANCEL_SEQ_OFF, FUTEX_OFF, GATE_LEN, GateHeader, HEARTBEAT_OFF, ID_KEY_CRC_OFF, ID_KEY_OFF,
    ID_MASK_OFF, PUBLISHED_OFF, STATE_OFF, STATE_SUPERSEDED, SYNC_DURABLE, SYNC_OFF, SYNC_UNSYNCED,
    VISIBLE_OFF, id_key_bytes, merge_range,
};
use weir_protocol::locate::{IdKey, pack_position};
use zerocopy::IntoBytes;

/// The live gate of this daemon instance.
#[derive(Debug)]
pub struct GateWriter {
    file: MappedFile,
    ranges: Vec<(u64, u64)>,
}

impl GateWriter {
    /// Writes `gate.tmp` (not yet visible to readers) with the store's id
    /// key, and whether this instance publishes only durable events (`sync
    /// = always`): the next start after a crash holds the log to `visible`
    /// only then.
    pub fn prepare(
        data_dir: &Path,
        header: &GateHeader,
        key: IdKey,
        durable_only: bool,
    ) -> io::Result<Self> {
        let tmp = data_dir.join("gate.tmp");
        let _ = std::fs::remove_file(&tmp);
        let file = MappedFile::create(&tmp, GATE_LEN)?;
        file.write(0, header.as_bytes());
        let (key, crc, mask) = id_key_bytes(key);
        file.write(ID_KEY_OFF, &key);
        file.write(ID_KEY_CRC_OFF, &crc);
        file.write(ID_MASK_OFF, &mask);
        let sync = if durable_only {
            SYNC_DURABLE
        } else {
            SYNC_UNSYNCED
        };
        file.write(SYNC_OFF, &sync);
        Ok(Self {
            file,
            ranges: Vec::new(),
        })
    }

    fn word(&self, off: usize) -> &std::sync::atomic::AtomicU64 {
        self.file.region().atomic_u64(off).expect("gate layout")
    }

    /// Sets the watermarks, the log position and the cancelled ranges
    /// before the gate is published.
    pub fn init(&mut self, allocated: u64, visible: u64, at: LogPosition, ranges: &[(u64, u64)]) {
        self.word(PUBLISHED_OFF)
            .store(pack_position(at.segment_id, at.offset), Ordering::Relaxed);
        self.word(ALLOCATED_OFF).store(allocated, Ordering::Relaxed);
        self.word(VISIBLE_OFF).store(visible, Ordering::Relaxed);
        for &(s, e) in ranges {
            merge_range(&mut self.ranges, s, e);
        }
        self.store_ranges();
    }

    /// Renames `gate.tmp` over `gate`, syncs the directory, and supersedes
    /// the previous gate (if any) so that its readers re-attach.
    pub fn publish(&self, data_dir: &Path, state: u64) -> io::Result<()> {
        self.word(STATE_OFF).store(state, Ordering::Release);
        self.file.flush()?;
        let gate = data_dir.join("gate");
        // The previous instance is dead (we hold LOCK): mark its gate first,
        // so that no crash or error between here and the rename can leave
        // its readers attached to a gate nobody will ever mark. A reader
        // that re-opens `gate` before the rename finds the same instance
        // and retries until the new gate is in place.
        if let Ok(old) = MappedFile::open(&gate, GATE_LEN) {
            // SYNC: Release; pairs with the readers' acquire of `state`.
            old.region()
                .atomic_u64(STATE_OFF)
                .expect("gate layout")
                .store(STATE_SUPERSEDED, Ordering::Release);
            wake_all(&old);
        }
        std::fs::rename(self.file.path(), &gate)?;
        sync_dir(data_dir)?;
        Ok(())
    }

    /// Reserves sequences up to `end` (exclusive).
    pub fn set_allocated(&self, end: u64) {
        self.word(ALLOCATED_OFF).store(end, Ordering::Release);
    }

    /// Publishes `[.., visible)` and wakes waiters; `at` is the log's
    /// position: every frame byte before it is written (and none will be
    /// written there again).
    pub fn publish_visible(&self, visible: u64, at: LogPosition) {
        // SYNC: Release pairs with readers' Relaxed load + fence(Acquire)
        // before they read frame bytes below `at` (written by `pwrite`
        // before this store).
        self.word(PUBLISHED_OFF)
            .store(pack_position(at.segment_id, at.offset), Ordering::Release);
        // SYNC: Release pairs with readers' Relaxed load + fence(Acquire):
        // every row, slot and head below `visible` was written before.
        self.word(VISIBLE_OFF).store(visible, Ordering::Release);
        wake_all(&self.file);
    }

    /// Current visible watermark.
    #[must_use]
    pub fn visible(&self) -> u64 {
        self.word(VISIBLE_OFF).load(Ordering::Relaxed)
    }

    /// Adds a cancelled range (seqlock-protected).
    pub fn cancel(&mut self, start: u64, end: u64) {
        merge_range(&mut self.ranges, start, end);
        self.store_ranges();
    }

    /// The cancelled ranges.
    #[must_use]
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    fn store_ranges(&self) {
        let seq = self.word(CANCEL_SEQ_OFF);
        let s = seq.load(Ordering::Relaxed);
        // SYNC: odd counter first; readers retry while odd or changed.
        seq.store(s + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        let n = self.ranges.len().min(CANCEL_CAPACITY);
        for (i, &(a, b)) in self.ranges.iter().take(n).enumerate() {
            self.word(CANCEL_RANGES_OFF + i * 16)
                .store(a, Ordering::Relaxed);
            self.word(CANCEL_RANGES_OFF + i * 16 + 8)
                .store(b, Ordering::Relaxed);
        }
        self.word(CANCEL_COUNT_OFF)
            .store(n as u64, Ordering::Relaxed);
        self.word(CANCEL_OVERFLOW_OFF).store(
            u64::from(self.ranges.len() > CANCEL_CAPACITY),
            Ordering::Relaxed,
        );
        // SYNC: Release; even counter after the ranges.
        seq.store(s + 2, Ordering::Release);
    }

    /// Refreshes the heartbeat.
    pub fn heartbeat(&self, now_ms: u64) {
        self.word(HEARTBEAT_OFF).store(now_ms, Ordering::Relaxed);
    }

    /// Sets the instance state and wakes waiters.
    pub fn set_state(&self, state: u64) {
        self.word(STATE_OFF).store(state, Ordering::Release);
        wake_all(&self.file);
    }

    /// Path of the published gate.
    #[must_use]
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("gate")
    }
}

fn wake_all(file: &MappedFile) {
    let word = file.region().atomic_u32(FUTEX_OFF).expect("gate layout");
    word.fetch_add(1, Ordering::Release);
    crate::futex::wake_all(word);
}

/// fsyncs a directory so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
