//! Client-chosen ids that claim a place the log has not reached yet.
//!
//! The daemon gives an event the self-locating id of its frame's place
//! (`weir_protocol::locate`). A client that knows or recovers the store's
//! id key can compute the id the daemon is about to give, and append it as
//! its own first; without a check two events would then share an id. Such
//! an id decodes, under the key, to a place the log has not reached and to
//! a stamp (ms, counter) the daemon has not given yet. The writer keeps
//! every stored client-chosen id of that shape here and never gives one of
//! them to its own events (it takes the next stamp instead).
//!
//! What makes this hold across starts ("Claimed ids" in `docs/FORMAT.md`):
//! - the set is kept in `claimed-ids` in the data directory, written and
//!   synced before the frames of the group that made a new claim;
//! - an id is left out by stamp only if no start can give that stamp again:
//!   below the wall time of its own command (stored in its frame; every
//!   start gives stamps from the log's newest wall time on) or at or below
//!   the file's **floor**. A claim is forgotten once the daemon's stamps or
//!   the clock have passed it, and the file then records that stamp as the
//!   floor, which every start gives stamps above;
//! - an id is left out by place only if the log has durably passed it, or
//!   its offset is past the segment length the writer then used. The file
//!   keeps the smallest such length (**bound**); the daemon checks every id
//!   it gives to a frame at or past it against the index instead (that
//!   happens only after `segment-max-bytes` grew).
//!
//! A client that is not trying to collide almost never makes a claim: its
//! id must decode into the length of a segment (odds about
//! `segment length / 2^42` for random bits, 2^-14 at the default 256 MiB)
//! with a stamp at or after its command's wall time. One that reads the key
//! in the gate can make claims at will, stamped so far ahead and placed so
//! far on that they are never forgotten: the set holds at most
//! [`set_max`](Claims::set_max) claims (`max-claimed-ids`), and an id that
//! would make one more is refused ([`Full`]).

use crate::fxhash::FxHashSet;
use std::io;
use std::path::{Path, PathBuf};
use weir_protocol::locate::{IdKey, LOCATED_SEGMENTS, id_stamp, locate};

/// Magic of the claims file.
pub const CLAIMS_MAGIC: [u8; 8] = *b"WEIRCLAM";
/// Its layout version.
pub const CLAIMS_VERSION: u32 = 1;
/// Its name in the data directory.
pub const CLAIMS_FILE: &str = "claimed-ids";
/// Bytes before the ids: magic, version, count, floor, bound.
const HEAD: usize = 32;

/// The claimed ids, in memory and in their file.
#[derive(Debug)]
pub struct Claims {
    path: PathBuf,
    ids: FxHashSet<u128>,
    /// Claims with a stamp at or below this were forgotten: the daemon
    /// gives only greater stamps.
    floor: u64,
    /// The smallest segment length any decision used: frames at or past
    /// this offset get ids checked against the index.
    bound: u64,
    /// Changed since the file was last written.
    dirty: bool,
    /// Most claims [`note`](Claims::note) lets the set hold.
    max: usize,
}

/// [`Claims::note`] refused a new claim: the set holds its most already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The most claims the set may hold.
    pub max: usize,
}

/// A log position, `(segment, offset)`: the next frame's place.
pub type Position = (u64, u64);

impl Claims {
    /// The claims recorded in `data_dir`. With no file (a new store, or one
    /// only older builds ran) the set is empty and the bound is set by the
    /// first [`use_segment_len`](Self::use_segment_len). It takes new
    /// claims without limit until [`set_max`](Self::set_max).
    ///
    /// # Errors
    /// The file exists but cannot be read, or is damaged (`Err` names what
    /// is wrong; the daemon does not start, see FORMAT.md).
    pub fn load(data_dir: &Path) -> Result<Self, (PathBuf, String)> {
        let path = data_dir.join(CLAIMS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err((path, e.to_string())),
        };
        let (floor, bound, ids, dirty) = match bytes {
            None => (0, u64::MAX, FxHashSet::default(), true),
            Some(b) => {
                let (floor, bound, ids) = decode(&b).map_err(|what| (path.clone(), what))?;
                (floor, bound, ids, false)
            }
        };
        Ok(Self {
            path,
            ids,
            floor,
            bound,
            dirty,
            max: usize::MAX,
        })
    }

    /// [`note`](Self::note) makes no new claim while `max` are held (a
    /// set loaded with more keeps them: nothing stored is forgotten).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// The writer writes into segments of `segment_len` bytes from now on
    /// (the larger of the current segment's and `segment-max-bytes`): the
    /// bound follows it down, never up. Call [`settle`](Self::settle)
    /// before the first append if this leaves the claims [`dirty`](Self::dirty).
    pub fn use_segment_len(&mut self, segment_len: u64) {
        if segment_len < self.bound {
            self.bound = segment_len;
            self.dirty = true;
        }
    }

    /// The stamp the daemon must give only greater ones than.
    #[must_use]
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Frames at or past this offset get ids checked against the index.
    #[must_use]
    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// No claims (the common case: then [`contains`](Self::contains) is
    /// never asked).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Is `id` claimed?
    #[must_use]
    pub fn contains(&self, id: u128) -> bool {
        self.ids.contains(&id)
    }

    /// Claims held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Records client-chosen `id`, stored by a command with wall time
    /// `wall_ms`, if the daemon could give it to one of its own events: its
    /// stamp is at or after `wall_ms` and above the floor, and its place,
    /// under `key`, is a frame start at or after `next` inside a segment of
    /// `segment_len` bytes. Returns whether `id` is a new claim (to take
    /// back with [`forget`](Self::forget) if its command is refused).
    ///
    /// # Errors
    /// `id` would be a new claim while the set holds its most ([`Full`]):
    /// its command must be refused (nothing was noted).
    pub fn note(
        &mut self,
        key: IdKey,
        id: u128,
        wall_ms: u64,
        next: Position,
        segment_len: u64,
    ) -> Result<bool, Full> {
        let below = self.floor.max((wall_ms << 12).saturating_sub(1));
        if !could_be_given(key, id, below, Some(next), segment_len) {
            return Ok(false);
        }
        if self.ids.len() >= self.max && !self.ids.contains(&id) {
            return Err(Full { max: self.max });
        }
        let new = self.ids.insert(id);
        self.dirty |= new;
        Ok(new)
    }

    /// Takes back a claim [`note`](Self::note) made for a command that was
    /// refused (its event was never stored).
    pub fn forget(&mut self, id: u128) {
        self.dirty |= self.ids.remove(&id);
    }

    /// Forgets every claim the daemon can no longer give: stamp at or
    /// below `given` (no stamp up to it will be given again once it is the
    /// floor), or place before `durable` (the log's durable end; `None` if
    /// frames past it are not durable yet). Writes the file, with `given`
    /// as the new floor, if anything changed since it was last written.
    ///
    /// # Errors
    /// The file cannot be written or synced.
    pub fn settle(
        &mut self,
        key: IdKey,
        given: u64,
        durable: Option<Position>,
        segment_len: u64,
    ) -> io::Result<()> {
        let before = self.ids.len();
        self.ids
            .retain(|id| could_be_given(key, *id, given, durable, segment_len));
        self.dirty |= self.ids.len() != before;
        if !self.dirty {
            return Ok(());
        }
        // Kept even when empty: the floor and bound must outlive the claims.
        let floor = self.floor.max(given);
        crate::state::write_synced(&self.path, &encode(floor, self.bound, &self.ids))?;
        self.floor = floor;
        self.dirty = false;
        Ok(())
    }

    /// Unwritten changes?
    #[must_use]
    pub fn dirty(&self) -> bool {
        self.dirty
    }
}

/// Whether the daemon could still give `id`: a stamp above `given`, a place
/// at or after `next` (any place if `None`) inside a segment of
/// `segment_len` bytes.
fn could_be_given(
    key: IdKey,
    id: u128,
    given: u64,
    next: Option<Position>,
    segment_len: u64,
) -> bool {
    let (Some(stamp), Some((segment, offset))) = (id_stamp(id), locate(key, id)) else {
        return false;
    };
    stamp > given
        && segment < LOCATED_SEGMENTS
        && offset < segment_len
        && next.is_none_or(|n| (segment, offset) >= n)
}

fn encode(floor: u64, bound: u64, ids: &FxHashSet<u128>) -> Vec<u8> {
    let mut sorted: Vec<u128> = ids.iter().copied().collect();
    sorted.sort_unstable();
    let mut buf = Vec::with_capacity(HEAD + 16 * sorted.len() + 4);
    buf.extend_from_slice(&CLAIMS_MAGIC);
    buf.extend_from_slice(&CLAIMS_VERSION.to_le_bytes());
    buf.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    buf.extend_from_slice(&floor.to_le_bytes());
    buf.extend_from_slice(&bound.to_le_bytes());
    for id in sorted {
        buf.extend_from_slice(&id.to_le_bytes());
    }
    let crc = weir_protocol::crc32(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(bytes: &[u8]) -> Result<(u64, u64, FxHashSet<u128>), String> {
    if bytes.len() < HEAD + 4 {
        return Err(format!("{} bytes, shorter than a header", bytes.len()));
    }
    if bytes[..8] != CLAIMS_MAGIC {
        return Err("bad magic".into());
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != CLAIMS_VERSION {
        return Err(format!(
            "layout version {version}, this build reads {CLAIMS_VERSION}"
        ));
    }
    let count = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if bytes.len() != HEAD + 16 * count + 4 {
        return Err(format!(
            "{} bytes, but {count} ids need {}",
            bytes.len(),
            HEAD + 16 * count + 4
        ));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    let computed = weir_protocol::crc32(body);
    if stored != computed {
        return Err(format!(
            "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let ids = body[HEAD..]
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
        .collect();
    Ok((word(16), word(24), ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_protocol::locate::located_id;

    const SEG: u64 = 1 << 28;

    fn key() -> IdKey {
        IdKey::from_bytes(*b"claims-test-key!").expect("non-zero")
    }

    fn loaded(dir: &Path, segment_len: u64) -> Claims {
        let mut c = Claims::load(dir).unwrap();
        c.use_segment_len(segment_len);
        c
    }

    fn stamp(ms: u64, counter: u16) -> u64 {
        ms << 12 | u64::from(counter)
    }

    #[test]
    fn only_ids_the_daemon_could_still_give_are_claims() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = loaded(dir.path(), SEG);
        let k = key();
        let next = (2, 4096);
        let wall = 1_000;
        let id = |ms, counter, seg, off| located_id(k, ms, counter, seg, off).unwrap();
        // A stamp at or after the command's wall time, at a place the log
        // has not reached (the very next frame's included): a claim.
        assert!(c.note(k, id(1_000, 0, 2, 8192), wall, next, SEG).unwrap());
        assert!(c.note(k, id(1_000, 3, 2, 4096), wall, next, SEG).unwrap());
        assert!(
            !c.note(k, id(1_000, 3, 2, 4096), wall, next, SEG).unwrap(),
            "not new"
        );
        // A stamp before the command's wall time: no start gives it again.
        assert!(!c.note(k, id(999, 0xFFF, 2, 8192), wall, next, SEG).unwrap());
        // A place the log has passed: not one.
        assert!(!c.note(k, id(2_000, 0, 2, 4088), wall, next, SEG).unwrap());
        assert!(!c.note(k, id(2_000, 0, 1, 8192), wall, next, SEG).unwrap());
        // A later segment counts; a place past the segment's length does not.
        assert!(c.note(k, id(2_000, 0, 9, 64), wall, next, SEG).unwrap());
        assert!(!c.note(k, id(2_000, 0, 9, SEG), wall, next, SEG).unwrap());
        // Not a UUIDv7: never one.
        assert!(!c.note(k, 42, wall, next, SEG).unwrap());
        assert_eq!(c.len(), 3);
        // A refused command's claim is taken back.
        c.forget(id(2_000, 0, 9, 64));
        assert_eq!(c.len(), 2);
        assert!(c.dirty());
    }

    #[test]
    fn no_new_claim_past_the_most_the_set_may_hold() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = loaded(dir.path(), SEG);
        c.set_max(2);
        let k = key();
        let next = (2, 4096);
        let id = |counter, off| located_id(k, 1_000, counter, 2, off).unwrap();
        assert_eq!(c.note(k, id(0, 8192), 1_000, next, SEG), Ok(true));
        assert_eq!(c.note(k, id(1, 8192), 1_000, next, SEG), Ok(true));
        // A third claim is refused and not noted; one held already, and
        // an id that is no claim, are as before.
        assert_eq!(
            c.note(k, id(2, 8192), 1_000, next, SEG),
            Err(Full { max: 2 })
        );
        assert_eq!(c.note(k, id(1, 8192), 1_000, next, SEG), Ok(false));
        assert_eq!(c.note(k, id(2, 8), 1_000, next, SEG), Ok(false));
        assert_eq!((c.len(), c.contains(id(2, 8192))), (2, false));
        // Room again once one is forgotten.
        c.forget(id(0, 8192));
        assert_eq!(c.note(k, id(2, 8192), 1_000, next, SEG), Ok(true));
        // A lower most keeps every claim held.
        c.set_max(1);
        assert_eq!(c.len(), 2);
        assert!(c.note(k, id(3, 8192), 1_000, next, SEG).is_err());
    }

    #[test]
    fn claims_survive_a_reload_and_are_forgotten_once_passed() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let mut c = loaded(dir.path(), SEG);
        assert!(c.dirty(), "a new file is to be written");
        let a = located_id(k, 1_000, 8, 2, 8192).unwrap();
        let b = located_id(k, 5_000, 0, 3, 64).unwrap();
        assert!(c.note(k, a, 1_000, (2, 4096), SEG).unwrap());
        assert!(c.note(k, b, 1_000, (2, 4096), SEG).unwrap());
        c.settle(k, stamp(1_000, 7), Some((2, 4096)), SEG).unwrap();
        assert!(!c.dirty());
        let back = loaded(dir.path(), SEG);
        assert!(!back.dirty());
        assert_eq!(
            (back.len(), back.contains(a), back.contains(b)),
            (2, true, true)
        );
        // The daemon's stamps pass `a`: it is forgotten, `b` stays.
        let mut back = back;
        back.settle(k, stamp(1_000, 9), Some((2, 4096)), SEG)
            .unwrap();
        let again = loaded(dir.path(), SEG);
        assert_eq!((again.len(), again.contains(b)), (1, true));
        assert_eq!(again.floor(), stamp(1_000, 9), "the floor is kept");
        // Frames past `b`'s place that are not durable yet do not count.
        let mut again = again;
        again.settle(k, stamp(1_000, 9), None, SEG).unwrap();
        assert_eq!(again.len(), 1);
        // The log passes `b`'s place durably: nothing is left, the floor stays.
        again.settle(k, stamp(1_000, 9), Some((4, 0)), SEG).unwrap();
        assert!(again.is_empty());
        let last = loaded(dir.path(), SEG);
        assert_eq!((last.len(), last.floor()), (0, stamp(1_000, 9)));
        // A floor at or above a stamp keeps it from becoming a claim.
        let mut last = last;
        assert!(
            !last
                .note(k, located_id(k, 1_000, 9, 5, 64).unwrap(), 0, (2, 0), SEG)
                .unwrap()
        );
        assert!(
            last.note(k, located_id(k, 1_000, 10, 5, 64).unwrap(), 0, (2, 0), SEG)
                .unwrap()
        );
    }

    #[test]
    fn the_bound_is_the_smallest_segment_length_ever_used() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let mut c = loaded(dir.path(), 1 << 20);
        assert_eq!(c.bound(), 1 << 20);
        c.settle(k, 0, None, 1 << 20).unwrap();
        // Larger segments later: the bound stays at the smaller length.
        let c = loaded(dir.path(), 1 << 24);
        assert_eq!((c.bound(), c.dirty()), (1 << 20, false));
        // Smaller ones: it follows them down, and is written.
        let mut c = loaded(dir.path(), 1 << 19);
        assert_eq!((c.bound(), c.dirty()), (1 << 19, true));
        c.settle(k, 0, None, 1 << 19).unwrap();
        assert_eq!(loaded(dir.path(), 1 << 24).bound(), 1 << 19);
    }

    #[test]
    fn the_layout_matches_the_spec() {
        let (section, rows) = crate::spec::section("### Claimed ids");
        assert_eq!(rows, vec![(0, 8), (8, 4), (12, 4), (16, 8), (24, 8)]);
        assert!(section.contains(&format!("| {HEAD} | 16 × n | the claimed ids")));
        assert!(section.contains(&format!("magic `{}`", "WEIRCLAM")));
        let ids: FxHashSet<u128> = [7u128, 3].into_iter().collect();
        let b = encode(0x0102_0304_0506_0708, 1 << 28, &ids);
        assert_eq!(&b[..8], &CLAIMS_MAGIC);
        assert_eq!(&b[8..12], &CLAIMS_VERSION.to_le_bytes());
        assert_eq!(&b[12..16], &2u32.to_le_bytes());
        assert_eq!(&b[16..24], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[24..32], &(1u64 << 28).to_le_bytes());
        assert_eq!(&b[32..48], &3u128.to_le_bytes(), "ascending");
        assert_eq!(&b[64..68], &weir_protocol::crc32(&b[..64]).to_le_bytes());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_names_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let mut c = loaded(dir.path(), SEG);
        assert!(
            c.note(k, located_id(k, 1_000, 8, 2, 8192).unwrap(), 0, (0, 0), SEG)
                .unwrap()
        );
        c.settle(k, 0, Some((0, 0)), SEG).unwrap();
        let path = dir.path().join(CLAIMS_FILE);
        let good = std::fs::read(&path).unwrap();
        let cases: [(Vec<u8>, &str); 4] = [
            (good[..good.len() - 1].to_vec(), "bytes, but 1 ids need"),
            (
                {
                    let mut b = good.clone();
                    b[36] ^= 1;
                    b
                },
                "CRC mismatch",
            ),
            (
                {
                    let mut b = good.clone();
                    b[0] = b'X';
                    b
                },
                "bad magic",
            ),
            (
                {
                    let mut b = good.clone();
                    b[8] = 9;
                    b
                },
                "layout version 9",
            ),
        ];
        for (bytes, what) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let (p, e) = Claims::load(dir.path()).unwrap_err();
            assert_eq!(p, path);
            assert!(e.contains(what), "{e} should say {what}");
        }
    }
}
