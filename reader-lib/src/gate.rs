//! The attached gate page: header validation, the watermark load (visible and
//! the cancelled ranges, once per query), instance state and the futex word.
#![forbid(unsafe_code)]

use crate::error::AttachError;
use crate::map::Mapped;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use weir_protocol::gate::{
    CANCEL_CAPACITY, CANCEL_COUNT_OFF, CANCEL_OVERFLOW_OFF, CANCEL_RANGES_OFF, CANCEL_SEQ_OFF,
    FUTEX_OFF, GATE_LEN, GATE_MAGIC, GATE_VERSION, GateHeader, HEARTBEAT_OFF, ID_KEY_CRC_OFF,
    ID_KEY_OFF, ID_MASK_OFF, PUBLISHED_OFF, STATE_OFF, VISIBLE_OFF, checked_id_key,
};
use weir_protocol::index::CHUNK_LOG2_RANGE;
use weir_protocol::locate::IdKey;
use zerocopy::FromBytes;

/// How often a reader re-reads the cancelled ranges while the writer holds
/// the seqlock before it gives up on them and relies on tombstone rows.
const SEQLOCK_TRIES: usize = 1000;

/// Cancelled ranges kept inline; more spill to the heap (rare: the daemon
/// merges adjacent ranges).
const INLINE_RANGES: usize = 4;

/// What one query may see: sequences below `visible`, minus the cancelled
/// ranges loaded with it.
#[derive(Clone)]
pub(crate) struct Watermark {
    /// Exclusive upper bound of published sequences.
    pub(crate) visible: u64,
    /// The gate said more ranges were cancelled than it holds: only
    /// tombstone rows tell which (lookups by location then use the index).
    pub(crate) overflow: bool,
    n: usize,
    inline: [(u64, u64); INLINE_RANGES],
    spill: Vec<(u64, u64)>,
}

impl std::fmt::Debug for Watermark {
    // Shows the live ranges only, not the unused inline slots.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watermark")
            .field("visible", &self.visible)
            .field("cancelled", &self.cancelled())
            .finish()
    }
}

impl Watermark {
    /// The cancelled ranges, sorted and disjoint.
    pub(crate) fn cancelled(&self) -> &[(u64, u64)] {
        if self.spill.is_empty() {
            &self.inline[..self.n]
        } else {
            &self.spill
        }
    }

    fn set_ranges(&mut self, ranges: impl ExactSizeIterator<Item = (u64, u64)>) {
        self.n = 0;
        self.spill.clear();
        if ranges.len() == 0 {
            return;
        }
        if ranges.len() <= INLINE_RANGES {
            for (slot, r) in self.inline.iter_mut().zip(ranges) {
                *slot = r;
                self.n += 1;
            }
        } else {
            self.spill.extend(ranges);
            self.n = self.spill.len();
        }
    }

    /// Is `seq` published and not cancelled? (The tombstone check needs the row.)
    pub(crate) fn admits(&self, seq: u64) -> bool {
        seq < self.visible && !weir_protocol::gate::in_ranges(self.cancelled(), seq)
    }

    /// The maximal runs of `[lo, hi)` that no cancelled range covers, in order.
    pub(crate) fn open_runs(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut at = lo;
        let mut ranges = self.cancelled().iter();
        std::iter::from_fn(move || {
            while at < hi {
                match ranges.next() {
                    Some(&(_, e)) if e <= at => {}
                    Some(&(s, e)) => {
                        let run = (at, s.min(hi));
                        at = at.max(e);
                        if run.0 < run.1 {
                            return Some(run);
                        }
                    }
                    None => {
                        let run = (at, hi);
                        at = hi;
                        return Some(run);
                    }
                }
            }
            None
        })
    }
}

/// A mapped, validated gate.
#[derive(Debug)]
pub(crate) struct Gate {
    map: Mapped,
    /// The immutable header.
    pub(crate) header: GateHeader,
    /// The store's id key, if the gate has one (see `located`).
    pub(crate) id_key: Option<IdKey>,
    /// Which store the gate belongs to: a hash of its id key (drawn at the
    /// store's first start and carried from gate to gate), whatever mask
    /// word goes with it; `None` for a gate without a valid key (older builds).
    pub(crate) store: Option<u64>,
}

impl Gate {
    /// Maps `path` and validates its header.
    /// (device, inode) of the gate file mapped.
    pub(crate) fn file_id(&self) -> (u64, u64) {
        self.map.file_id()
    }

    pub(crate) fn open(path: &Path) -> Result<Self, AttachError> {
        let map = Mapped::open(path, Some(GATE_LEN as u64), GATE_LEN as u64)?;
        // Bytes 0..60 are written before the rename that published the file.
        let head = map.published(0, size_of::<GateHeader>());
        let header = head
            .and_then(|b| GateHeader::read_from_bytes(b).ok())
            .ok_or_else(|| AttachError::Length {
                path: path.to_owned(),
                expected: GATE_LEN as u64,
                found: map.len() as u64,
            })?;
        check_magic_version(
            path,
            GATE_MAGIC,
            header.magic,
            GATE_VERSION,
            header.version.get(),
        )?;
        if !header.crc_ok() {
            let computed = weir_protocol::crc32(&zerocopy::IntoBytes::as_bytes(&header)[..56]);
            return Err(AttachError::Checksum {
                path: path.to_owned(),
                stored: header.crc.get(),
                computed,
            });
        }
        if header.len.get() as usize != GATE_LEN {
            return Err(mismatch(
                path,
                "length",
                GATE_LEN as u64,
                header.len.get().into(),
            ));
        }
        let log2 = header.chunk_log2.get();
        if !CHUNK_LOG2_RANGE.contains(&log2) {
            return Err(mismatch(
                path,
                "chunk_log2",
                u64::from(*CHUNK_LOG2_RANGE.end()),
                log2.into(),
            ));
        }
        // The key is written before the rename too, and never changes. A
        // missing or damaged one only sends every lookup through the index.
        let id_key = map
            .published(ID_KEY_OFF, 16)
            .zip(map.published(ID_KEY_CRC_OFF, 4))
            .zip(map.published(ID_MASK_OFF, 4))
            .and_then(|((k, c), m)| {
                checked_id_key(k.try_into().ok()?, c.try_into().ok()?, m.try_into().ok()?)
            });
        let store = map
            .published(ID_KEY_OFF, 16)
            .zip(map.published(ID_KEY_CRC_OFF, 4))
            .and_then(|(k, c)| store_id(k, c));
        Ok(Self {
            map,
            header,
            id_key,
            store,
        })
    }

    fn word(&self, off: usize) -> u64 {
        // Offsets are constants inside the 4096-byte page we checked on open.
        self.map
            .atomic_u64(off)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Instance state (`STATE_*`), one Relaxed load.
    pub(crate) fn state(&self) -> u64 {
        self.word(STATE_OFF)
    }

    /// Heartbeat, ms since the epoch.
    pub(crate) fn heartbeat_ms(&self) -> u64 {
        self.word(HEARTBEAT_OFF)
    }

    /// The futex word.
    pub(crate) fn futex(&self) -> Option<&AtomicU32> {
        self.map.atomic_u32(FUTEX_OFF)
    }

    /// `visible` alone: Relaxed load, then fence(Acquire).
    pub(crate) fn visible(&self) -> u64 {
        let v = self.word(VISIBLE_OFF);
        // SYNC: pairs with the daemon's Release store of `visible` after it
        // wrote rows, columns, slots, names and heads below it.
        fence(Ordering::Acquire);
        v
    }

    /// The log position below which every frame byte is written (packed,
    /// `weir_protocol::locate::pack_position`; 0 = none): Relaxed load,
    /// then fence(Acquire).
    pub(crate) fn published(&self) -> u64 {
        let p = self.word(PUBLISHED_OFF);
        // SYNC: pairs with the daemon's Release store of `published` after
        // it wrote the frames below it.
        fence(Ordering::Acquire);
        p
    }

    /// Cancelled range `i` as stored (Relaxed loads; the seqlock orders them).
    fn range(&self, i: usize) -> (u64, u64) {
        let off = CANCEL_RANGES_OFF + 16 * i;
        (self.word(off), self.word(off + 8))
    }

    /// One read of the cancelled ranges under their seqlock: `read` gets the
    /// number stored (capped at the gate's capacity) and loads what it needs
    /// ([`range`](Self::range), the overflow flag). `None` if the writer was
    /// changing them, before or during the read: nothing `read` saw counts.
    fn under_seqlock<T>(&self, read: impl FnOnce(usize) -> T) -> Option<T> {
        let before = self.word(CANCEL_SEQ_OFF);
        // SYNC: pairs with the daemon's Release store that made the
        // seqlock counter even after it wrote the ranges.
        fence(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        let n = usize::try_from(self.word(CANCEL_COUNT_OFF))
            .unwrap_or(usize::MAX)
            .min(CANCEL_CAPACITY);
        let seen = read(n);
        // SYNC: orders `read`'s loads before the counter re-check (seqlock
        // read side); the writer bumps the counter to odd before it touches
        // the ranges.
        fence(Ordering::Acquire);
        (self.word(CANCEL_SEQ_OFF) == before).then_some(seen)
    }

    /// Is `seq` in a cancelled range? Read in place under the ranges'
    /// seqlock, with the rules of [`watermark`](Self::watermark) (only the
    /// sane prefix counts), without copying them. `None` when one read is
    /// not enough (a write in progress, or ranges past the gate's capacity):
    /// the caller then takes a [`Watermark`].
    pub(crate) fn cancelled_now(&self, seq: u64) -> Option<bool> {
        self.under_seqlock(|n| {
            (self.word(CANCEL_OVERFLOW_OFF) == 0)
                .then(|| sane((0..n).map(|i| self.range(i))).any(|(s, e)| s <= seq && seq < e))
        })?
    }

    /// Loads `visible`, then the cancelled ranges under their seqlock.
    pub(crate) fn watermark(&self) -> Watermark {
        let visible = self.visible();
        let mut w = Watermark {
            visible,
            overflow: false,
            n: 0,
            inline: [(0, 0); INLINE_RANGES],
            spill: Vec::new(),
        };
        for _ in 0..SEQLOCK_TRIES {
            let read = self.under_seqlock(|n| {
                w.set_ranges((0..n).map(|i| self.range(i)));
                w.overflow = self.word(CANCEL_OVERFLOW_OFF) != 0;
            });
            if read.is_some() {
                w.n = sane(w.cancelled().iter().copied()).count();
                w.spill.truncate(w.n);
                return w;
            }
            w.set_ranges(std::iter::empty());
            std::hint::spin_loop();
        }
        // The writer died inside the seqlock or keeps changing the ranges:
        // tombstone rows stay authoritative for every published sequence.
        w.overflow = true;
        w
    }
}

/// The store identity of an id key `key` with CRC `crc` (as stored): a
/// hash, so that the key itself is not handed on; `None` for no key.
fn store_id(key: &[u8], crc: &[u8]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let valid = key.iter().any(|&b| b != 0)
        && crc.try_into().ok().map(u32::from_le_bytes) == Some(weir_protocol::crc32(key));
    valid.then(|| {
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    })
}

/// The longest sorted, non-empty, disjoint prefix of `ranges`. Ranges a
/// sane writer never stores are dropped, not trusted, with every range
/// after them.
fn sane(ranges: impl Iterator<Item = (u64, u64)>) -> impl Iterator<Item = (u64, u64)> {
    let mut prev_end = None;
    ranges.map_while(move |(s, e)| {
        let ok = s < e && prev_end.is_none_or(|p| s >= p);
        ok.then(|| {
            prev_end = Some(e);
            (s, e)
        })
    })
}

pub(crate) fn check_magic_version(
    path: &Path,
    expected: [u8; 8],
    found: [u8; 8],
    version: u32,
    found_version: u32,
) -> Result<(), AttachError> {
    if found != expected {
        return Err(AttachError::BadMagic {
            path: path.to_owned(),
            expected,
            found,
        });
    }
    if found_version != version {
        return Err(AttachError::UnsupportedVersion {
            path: path.to_owned(),
            expected: version,
            found: found_version,
        });
    }
    Ok(())
}

pub(crate) fn mismatch(path: &Path, field: &'static str, expected: u64, found: u64) -> AttachError {
    AttachError::Mismatch {
        path: path.to_owned(),
        field,
        expected,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wm(visible: u64, r: &[(u64, u64)]) -> Watermark {
        let mut w = Watermark {
            visible,
            overflow: false,
            n: 0,
            inline: [(0, 0); INLINE_RANGES],
            spill: Vec::new(),
        };
        w.set_ranges(r.iter().copied());
        w
    }

    #[test]
    fn open_runs_skip_cancelled_ranges() {
        let w = wm(100, &[(2, 4), (10, 20), (30, 31)]);
        let runs: Vec<_> = w.open_runs(0, 25).collect();
        assert_eq!(runs, vec![(0, 2), (4, 10), (20, 25)]);
        let runs: Vec<_> = w.open_runs(12, 40).collect();
        assert_eq!(runs, vec![(20, 30), (31, 40)]);
        assert_eq!(w.open_runs(11, 19).count(), 0);
        assert!(w.admits(4) && !w.admits(3) && !w.admits(100) && w.admits(99));
    }

    #[test]
    fn insane_ranges_are_cut() {
        let kept = |r: &[(u64, u64)]| sane(r.iter().copied()).count();
        assert_eq!(kept(&[(1, 3), (5, 9), (8, 12), (20, 30)]), 2);
        assert_eq!(kept(&[(3, 3)]), 0);
        let many: Vec<_> = (0..40).map(|i| (i * 10, i * 10 + 5)).collect();
        let w = wm(1000, &many);
        assert_eq!(w.cancelled().len(), 40);
        assert!(!w.admits(392) && w.admits(396));
    }
}
