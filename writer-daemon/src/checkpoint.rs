//! Crash checkpoints (FORMAT.md, "`checkpoint`"): what a start after a crash
//! needs to keep an index generation's sealed chunks instead of rebuilding
//! them from the log.
//!
//! A sealed chunk is immutable, so a checkpoint only has to make it durable
//! once and say so: the writer hands a background thread the files to sync
//! and the state at the checkpoint's watermark (a chunk boundary), and the
//! thread syncs them and then writes the `checkpoint` file. The writer never
//! waits for it.

use crate::state::{IDEM_ENTRY_LEN, entry_at, put_entry, write_synced};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weir_protocol::wire::Receipt;

/// Magic of a generation's `checkpoint` file.
pub const CKPT_MAGIC: [u8; 8] = *b"WEIRCKPT";
/// Its layout version.
pub const CKPT_VERSION: u32 = 1;
/// Its name in the generation directory.
pub const CKPT_FILE: &str = "checkpoint";
/// Offset of the layout version (u32).
const OFF_VERSION: usize = 8;
/// Offset of log2 rows per chunk (u32).
const OFF_LOG2: usize = 12;
/// Offset of the generation (u64).
const OFF_GENERATION: usize = 16;
/// Offset of the watermark (u64).
const OFF_WATERMARK: usize = 24;
/// Offset of the strings end (u64).
const OFF_STRINGS_END: usize = 32;
/// Offset of the HLC floor (u64).
const OFF_MAX_WALL: usize = 40;
/// Offset of the idempotency entry count (u64).
const OFF_COUNT: usize = 48;
/// Bytes before the idempotency entries.
pub const CKPT_HEADER_LEN: usize = 56;

/// What a `checkpoint` file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashCheckpoint {
    /// The generation whose files it describes.
    pub generation: u64,
    /// log2 rows per chunk of that generation.
    pub log2: u32,
    /// Every sequence below is in a sealed chunk that was synced, and its
    /// frame was durable in the log; a multiple of the chunk size.
    pub watermark: u64,
    /// Global end of the strings that were synced (names interned later
    /// are not covered).
    pub strings_end: u64,
    /// An upper bound of the wall_ms of every event below the watermark.
    pub max_wall_ms: u64,
    /// The idempotency window's entries below the watermark, oldest first.
    pub idem: Vec<(u128, Receipt)>,
}

impl CrashCheckpoint {
    /// The file's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; CKPT_HEADER_LEN];
        b[..8].copy_from_slice(&CKPT_MAGIC);
        b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&CKPT_VERSION.to_le_bytes());
        b[OFF_LOG2..OFF_LOG2 + 4].copy_from_slice(&self.log2.to_le_bytes());
        for (off, v) in [
            (OFF_GENERATION, self.generation),
            (OFF_WATERMARK, self.watermark),
            (OFF_STRINGS_END, self.strings_end),
            (OFF_MAX_WALL, self.max_wall_ms),
            (OFF_COUNT, self.idem.len() as u64),
        ] {
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        b.reserve(self.idem.len() * IDEM_ENTRY_LEN + 4);
        for (k, r) in &self.idem {
            put_entry(&mut b, *k, r);
        }
        let crc = weir_protocol::crc32(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// What an index generation would record at `watermark` (its end of
    /// sealed chunks, or less): the strings so far, the HLC floor
    /// `max_wall_ms` and `idem`'s entries below the watermark.
    #[must_use]
    pub fn at(
        index: &crate::index::IndexWriter,
        watermark: u64,
        max_wall_ms: u64,
        idem: &crate::state::IdemWindow,
    ) -> Self {
        Self {
            generation: index.generation(),
            log2: index.geometry().log2,
            watermark,
            strings_end: index.names().position().0,
            max_wall_ms,
            idem: idem
                .iter()
                .filter(|(_, r)| r.sequence < watermark)
                .map(|(k, r)| (k, *r))
                .collect(),
        }
    }

    /// Parses a file's bytes; `Err` names what is wrong.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let (mut cp, n) = Self::header(b)?;
        let body = n
            .checked_mul(IDEM_ENTRY_LEN)
            .and_then(|x| x.checked_add(CKPT_HEADER_LEN))
            .ok_or("entry count out of range")?;
        let crc = b
            .get(body..body + 4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4")));
        if b.len() != body + 4 || crc != Some(weir_protocol::crc32(&b[..body])) {
            return Err("checkpoint length or checksum mismatch".into());
        }
        cp.idem = b[CKPT_HEADER_LEN..body]
            .chunks_exact(IDEM_ENTRY_LEN)
            .map(entry_at)
            .collect();
        Ok(cp)
    }

    /// The header's fields (no entries yet) and the entry count, after the
    /// magic and version checks.
    fn header(b: &[u8]) -> Result<(Self, usize), String> {
        if b.len() < CKPT_HEADER_LEN || b[..8] != CKPT_MAGIC {
            return Err("not a checkpoint file".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if u32_at(OFF_VERSION) != CKPT_VERSION {
            return Err(format!(
                "unsupported checkpoint version {}",
                u32_at(OFF_VERSION)
            ));
        }
        let n = usize::try_from(u64_at(OFF_COUNT)).map_err(|_| "entry count out of range")?;
        let cp = Self {
            log2: u32_at(OFF_LOG2),
            generation: u64_at(OFF_GENERATION),
            watermark: u64_at(OFF_WATERMARK),
            strings_end: u64_at(OFF_STRINGS_END),
            max_wall_ms: u64_at(OFF_MAX_WALL),
            idem: Vec::new(),
        };
        Ok((cp, n))
    }

    /// Reads generation directory `dir`'s checkpoint.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join(CKPT_FILE);
        let b = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::decode(&b).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads generation `g`'s checkpoint under `data_dir` and checks that a
    /// restart configured with `log2` rows per chunk may use it.
    pub fn load(data_dir: &Path, g: u64, log2: u32) -> Result<Self, String> {
        let cp = Self::read(&crate::index::generation_dir(data_dir, g))?;
        if cp.generation != g {
            return Err(format!("it names generation {}", cp.generation));
        }
        if cp.log2 != log2 {
            return Err(format!(
                "chunk-rows-log2 changed from {} to {log2}",
                cp.log2
            ));
        }
        if cp.watermark == 0 || cp.watermark % (1u64 << log2) != 0 {
            return Err(format!(
                "watermark {} is not a chunk boundary",
                cp.watermark
            ));
        }
        Ok(cp)
    }

    /// Syncs `files` (data only: they are preallocated), then writes the
    /// checkpoint into `dir` (temporary file, sync, rename, directory sync).
    pub fn write_after(&self, files: &[PathBuf], dir: &Path) -> io::Result<()> {
        // Data only, whatever `sync-mode` says: every such file is
        // preallocated, so no size or extent change needs the metadata.
        for p in files {
            std::fs::File::open(p)?.sync_data()?;
        }
        write_synced(&dir.join(CKPT_FILE), &self.encode())
    }
}

/// The watermark of index generation `generation`'s crash checkpoint (the
/// one the gate names is the one a restart would use), read from its header
/// only (no checksum: for display).
#[must_use]
pub fn watermark_in(data_dir: &Path, generation: u64) -> Option<u64> {
    let mut head = [0u8; CKPT_HEADER_LEN];
    let path = crate::index::generation_dir(data_dir, generation).join(CKPT_FILE);
    std::io::Read::read_exact(&mut std::fs::File::open(path).ok()?, &mut head).ok()?;
    let (cp, _) = CrashCheckpoint::header(&head).ok()?;
    (cp.generation == generation).then_some(cp.watermark)
}

/// One checkpoint being written.
#[derive(Debug)]
struct Running {
    watermark: u64,
    handle: JoinHandle<io::Result<()>>,
}

/// The writer's side: when a checkpoint is due, and the one in flight.
#[derive(Debug)]
pub struct Checkpointer {
    interval: Duration,
    last: Option<Instant>,
    covered: u64,
    running: Option<Running>,
    failed: bool,
    published: Arc<crate::stats::Shared>,
}

impl Checkpointer {
    /// Checkpoints at most once per `interval`, the next one past
    /// `covered` (a valid checkpoint's watermark, or 0); `shared` hears of
    /// each.
    #[must_use]
    pub fn new(interval: Duration, covered: u64, shared: Arc<crate::stats::Shared>) -> Self {
        shared.checkpointed(covered);
        Self {
            interval,
            last: None,
            covered,
            running: None,
            failed: false,
            published: shared,
        }
    }

    /// The watermark of the newest checkpoint this instance wrote.
    #[must_use]
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Collects a finished checkpoint (all of them if `wait`).
    fn reap(&mut self, wait: bool) {
        let Some(r) = self.running.take_if(|r| wait || r.handle.is_finished()) else {
            return;
        };
        match r.handle.join() {
            Ok(Ok(())) => self.covered = r.watermark,
            Ok(Err(e)) => {
                // A failed fsync may have dropped dirty pages that a later
                // fsync would not report again: take no more checkpoints.
                self.failed = true;
                tracing::warn!(error = %e, watermark = r.watermark, "could not write a crash checkpoint; no more are taken until restart (the last one written stays valid)");
            }
            Err(_) => tracing::warn!("the checkpoint thread panicked"),
        }
    }

    /// Is a checkpoint at `watermark` due now (none in flight, none failed,
    /// newer than the last, the interval passed)?
    pub fn due(&mut self, watermark: u64) -> bool {
        self.reap(false);
        self.running.is_none()
            && !self.failed
            && watermark > self.covered
            && self.last.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Starts writing `cp` into `dir` once `files` are synced.
    pub fn start(&mut self, cp: CrashCheckpoint, files: Vec<PathBuf>, dir: PathBuf) {
        self.last = Some(Instant::now());
        let watermark = cp.watermark;
        let shared = Arc::clone(&self.published);
        let spawned = std::thread::Builder::new()
            .name("weir-checkpoint".into())
            .spawn(move || {
                cp.write_after(&files, &dir)?;
                shared.checkpointed(watermark);
                Ok(())
            });
        match spawned {
            Ok(handle) => self.running = Some(Running { watermark, handle }),
            Err(e) => tracing::warn!(error = %e, "could not start the checkpoint thread"),
        }
    }

    /// Waits for the checkpoint in flight, if any.
    pub fn finish(&mut self) {
        self.reap(true);
    }

    /// Writes `cp` now, on the calling thread (a clean stop).
    pub fn write_now(&mut self, cp: &CrashCheckpoint, files: &[PathBuf], dir: &Path) {
        self.finish();
        if self.failed {
            return;
        }
        match cp.write_after(files, dir) {
            Ok(()) => {
                self.covered = cp.watermark;
                self.published.checkpointed(cp.watermark);
            }
            Err(e) => tracing::warn!(error = %e, "could not write the stop checkpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CrashCheckpoint {
        CrashCheckpoint {
            generation: 7,
            log2: 10,
            watermark: 3 << 10,
            strings_end: 4096 + 96,
            max_wall_ms: 1_700_000_000_000,
            idem: (1..=3u128)
                .map(|k| {
                    (
                        k << 64 | 5,
                        Receipt {
                            event_id: k * 11,
                            sequence: k as u64 * 100,
                            clock: k as u32,
                            event_hash: [k as u8; 32],
                            durable: true,
                            replayed: true,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn watermark_in_reads_the_named_generation() {
        let data = tempfile::tempdir().unwrap();
        assert_eq!(watermark_in(data.path(), 2), None);
        for (g, w) in [(2u64, 5 << 10), (3, 7 << 10)] {
            let dir = crate::index::generation_dir(data.path(), g);
            std::fs::create_dir_all(&dir).unwrap();
            let cp = CrashCheckpoint {
                generation: g,
                watermark: w,
                ..sample()
            };
            cp.write_after(&[], &dir).unwrap();
        }
        assert_eq!(watermark_in(data.path(), 2), Some(5 << 10));
        assert_eq!(watermark_in(data.path(), 3), Some(7 << 10));
        // No checkpoint in generation 4 (restore would not look at older
        // generations); one copied from another generation does not count.
        let dir = crate::index::generation_dir(data.path(), 4);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(watermark_in(data.path(), 4), None);
        let other = crate::index::generation_dir(data.path(), 3).join(CKPT_FILE);
        std::fs::copy(other, dir.join(CKPT_FILE)).unwrap();
        assert_eq!(watermark_in(data.path(), 4), None, "names generation 3");
        std::fs::write(dir.join(CKPT_FILE), [0u8; 80]).unwrap();
        assert_eq!(watermark_in(data.path(), 4), None, "no magic");
    }

    #[test]
    fn offsets_match_the_spec() {
        let (section, rows) = crate::spec::section("### `checkpoint`");
        let want = vec![
            (0, 8),
            (OFF_VERSION, 4),
            (OFF_LOG2, 4),
            (OFF_GENERATION, 8),
            (OFF_WATERMARK, 8),
            (OFF_STRINGS_END, 8),
            (OFF_MAX_WALL, 8),
            (OFF_COUNT, 8),
        ];
        assert_eq!(rows, want);
        assert_eq!(OFF_COUNT + 8, CKPT_HEADER_LEN);
        assert!(section.contains("| 56 | 80 × n | entries"));
        assert_eq!(IDEM_ENTRY_LEN, 80);
    }

    #[test]
    fn checkpoint_files_round_trip_and_refuse_damage() {
        let cp = sample();
        let b = cp.encode();
        assert_eq!(b.len(), CKPT_HEADER_LEN + 3 * IDEM_ENTRY_LEN + 4);
        assert_eq!(CrashCheckpoint::decode(&b).unwrap(), cp);
        assert_eq!(
            &b[OFF_WATERMARK..OFF_WATERMARK + 8],
            &(3u64 << 10).to_le_bytes()
        );
        for i in [0, 9, 30, 60, b.len() - 1] {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(CrashCheckpoint::decode(&bad).is_err(), "byte {i} flipped");
        }
        assert!(CrashCheckpoint::decode(&b[..b.len() - 1]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let synced = dir.path().join("data");
        std::fs::write(&synced, b"x").unwrap();
        cp.write_after(&[synced], dir.path()).unwrap();
        assert_eq!(CrashCheckpoint::read(dir.path()).unwrap(), cp);
        let missing = cp.write_after(&[dir.path().join("nope")], &dir.path().join("sub"));
        assert!(missing.is_err());
    }
}
