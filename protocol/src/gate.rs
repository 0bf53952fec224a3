//! The gate: one shared page (4096 bytes) with the watermarks, the cancelled
//! ranges and the futex word. See `docs/FORMAT.md` ("Gate").

use crate::crc32;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Gate file size.
pub const GATE_LEN: usize = 4096;
/// Magic.
pub const GATE_MAGIC: [u8; 8] = *b"WEIRGATE";
/// Layout version.
pub const GATE_VERSION: u32 = 1;

/// The immutable head of the gate (written once, before the file is renamed into place).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GateHeader {
    /// [`GATE_MAGIC`].
    pub magic: [u8; 8],
    /// [`GATE_VERSION`].
    pub version: U32,
    /// [`GATE_LEN`].
    pub len: U32,
    /// Random id of the daemon instance that owns this gate.
    pub instance: [u8; 16],
    /// Index generation (directory `index/gen-{n:08}`).
    pub generation: U64,
    /// log2 rows per index chunk.
    pub chunk_log2: U32,
    /// Daemon pid (informational).
    pub pid: U32,
    /// When the instance started, ms since the epoch.
    pub started_ms: U64,
    /// CRC-32 of bytes 0..56.
    pub crc: U32,
}
const _: () = assert!(size_of::<GateHeader>() == 60);

impl GateHeader {
    /// A header with its CRC.
    #[must_use]
    pub fn new(
        instance: u128,
        generation: u64,
        chunk_log2: u32,
        pid: u32,
        started_ms: u64,
    ) -> Self {
        let mut h = Self {
            magic: GATE_MAGIC,
            version: GATE_VERSION.into(),
            len: (GATE_LEN as u32).into(),
            instance: instance.to_le_bytes(),
            generation: generation.into(),
            chunk_log2: chunk_log2.into(),
            pid: pid.into(),
            started_ms: started_ms.into(),
            crc: 0.into(),
        };
        h.crc = crc32(&h.as_bytes()[..56]).into();
        h
    }
    /// Does the CRC match?
    #[must_use]
    pub fn crc_ok(&self) -> bool {
        crc32(&self.as_bytes()[..56]) == self.crc.get()
    }
}

/// Atomic u64: instance state, one of the `STATE_*` values.
pub const STATE_OFF: usize = 64;
/// Atomic u64: next sequence to allocate.
pub const ALLOCATED_OFF: usize = 72;
/// Atomic u64: exclusive visibility watermark.
pub const VISIBLE_OFF: usize = 80;
/// Atomic u32: futex word, bumped after every publish.
pub const FUTEX_OFF: usize = 88;
/// Atomic u64: heartbeat, ms since the epoch, refreshed by the daemon.
pub const HEARTBEAT_OFF: usize = 96;
/// Atomic u64: the log position below which every frame byte is written
/// ([`crate::locate::pack_position`]); stored (Release) before `visible`.
pub const PUBLISHED_OFF: usize = 104;
/// 16 bytes: the store's id key ([`crate::locate::IdKey`]; zeros = none),
/// written before the gate is renamed into place, never changed.
pub const ID_KEY_OFF: usize = 112;
/// u32: CRC-32 of the id key's 16 bytes.
pub const ID_KEY_CRC_OFF: usize = 152;
/// u32: how ids are masked under the key ([`crate::locate::IdMask::word`]).
pub const ID_MASK_OFF: usize = 156;
/// 4 bytes: the sync policy the instance runs under, [`SYNC_DURABLE`] or
/// [`SYNC_UNSYNCED`] (zeros in gates of builds before 2026-11-28 evening);
/// written before the gate is renamed into place, never changed. A restart
/// after a crash holds the log to the old gate's `visible` only if it says
/// [`SYNC_DURABLE`].
pub const SYNC_OFF: usize = 60;
/// [`SYNC_OFF`]: `sync = always`, which publishes only durable events.
pub const SYNC_DURABLE: [u8; 4] = *b"syn1";
/// [`SYNC_OFF`]: another policy, which may publish events not yet synced.
pub const SYNC_UNSYNCED: [u8; 4] = *b"syn0";

/// Does the gate page `bytes` say its instance published only durable
/// events? `None`: no word there (an older build) or an unknown value.
#[must_use]
pub fn published_durable_only(bytes: &[u8]) -> Option<bool> {
    match bytes.get(SYNC_OFF..SYNC_OFF + 4)? {
        w if w == SYNC_DURABLE => Some(true),
        w if w == SYNC_UNSYNCED => Some(false),
        _ => None,
    }
}

/// Atomic u64: seqlock counter of the cancelled ranges (odd while writing).
pub const CANCEL_SEQ_OFF: usize = 128;
/// Atomic u64: number of cancelled ranges stored.
pub const CANCEL_COUNT_OFF: usize = 136;
/// Atomic u64: 1 if more ranges were cancelled than fit; rows stay authoritative.
pub const CANCEL_OVERFLOW_OFF: usize = 144;
/// First range: pairs of atomic u64 `[start, end)`, merged and sorted.
pub const CANCEL_RANGES_OFF: usize = 160;
/// How many ranges fit.
pub const CANCEL_CAPACITY: usize = (GATE_LEN - CANCEL_RANGES_OFF) / 16;

/// The daemon is restoring; `visible` may still be 0.
pub const STATE_STARTING: u64 = 0;
/// The daemon is serving.
pub const STATE_LIVE: u64 = 1;
/// The daemon stopped cleanly; the view is final until a new instance starts.
pub const STATE_STOPPED: u64 = 2;
/// A newer instance replaced this gate: re-open `gate`.
pub const STATE_SUPERSEDED: u64 = 3;

/// The id key stored in a gate page, if it is there, its CRC holds and its
/// mask word is known.
#[must_use]
pub fn read_id_key(page: &[u8]) -> Option<crate::locate::IdKey> {
    let field = |off: usize, len: usize| page.get(off..off + len);
    checked_id_key(
        field(ID_KEY_OFF, 16)?.try_into().ok()?,
        field(ID_KEY_CRC_OFF, 4)?.try_into().ok()?,
        field(ID_MASK_OFF, 4)?.try_into().ok()?,
    )
}

/// The id key `key` if `crc` (as stored at [`ID_KEY_CRC_OFF`]) is its CRC,
/// it is not all zeros, and `mask` (as stored at [`ID_MASK_OFF`]) names a
/// known mask.
#[must_use]
pub fn checked_id_key(key: [u8; 16], crc: [u8; 4], mask: [u8; 4]) -> Option<crate::locate::IdKey> {
    let how = crate::locate::IdMask::from_word(u32::from_le_bytes(mask))?;
    (crc32(&key) == u32::from_le_bytes(crc))
        .then(|| crate::locate::IdKey::from_bytes(key))?
        .map(|k| k.with_mask(how))
}

/// The bytes [`read_id_key`] reads: the key at [`ID_KEY_OFF`], its CRC at
/// [`ID_KEY_CRC_OFF`], the mask word at [`ID_MASK_OFF`].
#[must_use]
pub fn id_key_bytes(key: crate::locate::IdKey) -> ([u8; 16], [u8; 4], [u8; 4]) {
    let bytes = key.to_bytes();
    (
        bytes,
        crc32(&bytes).to_le_bytes(),
        key.mask_kind().word().to_le_bytes(),
    )
}

/// Inserts `[start, end)` into sorted, merged `ranges` (ranges that overlap
/// or touch become one). O(log n) to find the place, plus the ranges it
/// swallows: a restore adds a range per cancelled sequence, in order.
pub fn merge_range(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    if start >= end {
        return;
    }
    // The first range that ends at or after `start`, and one past the last
    // that starts at or before `end`: those touch `[start, end)`.
    let i = ranges.partition_point(|r| r.1 < start);
    let j = i + ranges[i..].partition_point(|r| r.0 <= end);
    if i == j {
        ranges.insert(i, (start, end));
    } else {
        let merged = (start.min(ranges[i].0), end.max(ranges[j - 1].1));
        ranges.splice(i..j, [merged]);
    }
}

/// Is `seq` inside one of the sorted, merged `ranges`?
#[must_use]
pub fn in_ranges(ranges: &[(u64, u64)], seq: u64) -> bool {
    let i = ranges.partition_point(|r| r.1 <= seq);
    ranges.get(i).is_some_and(|r| r.0 <= seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_like_the_seed() {
        let mut r = Vec::new();
        merge_range(&mut r, 10, 20);
        merge_range(&mut r, 30, 40);
        merge_range(&mut r, 15, 31);
        merge_range(&mut r, 50, 50);
        assert_eq!(r, vec![(10, 40)]);
        merge_range(&mut r, 40, 45);
        merge_range(&mut r, 0, 2);
        assert_eq!(r, vec![(0, 2), (10, 45)]);
        assert!(in_ranges(&r, 0) && in_ranges(&r, 44) && in_ranges(&r, 10));
        assert!(!in_ranges(&r, 2) && !in_ranges(&r, 45) && !in_ranges(&r, 9));
    }

    #[test]
    fn ranges_merge_as_a_sort_and_sweep_does() {
        // The reference: push, sort, merge what overlaps or touches.
        fn sweep(ranges: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
            let mut all = ranges.to_vec();
            if start < end {
                all.push((start, end));
            }
            all.sort_unstable();
            let mut out: Vec<(u64, u64)> = Vec::new();
            for (s, e) in all {
                match out.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => out.push((s, e)),
                }
            }
            out
        }
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..200 {
            let mut r = Vec::new();
            for _ in 0..40 {
                let start = next(120);
                let end = start + next(12);
                let want = sweep(&r, start, end);
                merge_range(&mut r, start, end);
                assert_eq!(r, want, "after [{start}, {end})");
            }
        }
    }

    #[test]
    fn layout_fits_the_page() {
        const { assert!(CANCEL_RANGES_OFF + CANCEL_CAPACITY * 16 <= GATE_LEN) };
        assert!(size_of::<GateHeader>() <= STATE_OFF);
        assert_eq!(CANCEL_CAPACITY, 246);
    }
}
