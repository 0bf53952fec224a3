//! Client-chosen ids that claim a place the log has not reached yet.
//!
//! The daemon gives an event the self-locating id of its frame's place
//! (`weir_protocol::locate`). A client that knows or recovers the store's
//! id key can compute the id the daemon is about to give, and append it as
//! its own id first; without a check two events would then share an id.
//! Such an id decodes, under the key, to a place the log has not reached and
//! to a stamp (ms, counter) the daemon has not given yet. The writer keeps
//! every stored client-chosen id of that shape here and never gives one of
//! them to its own events (it takes the next stamp instead). A claim stops
//! mattering once the daemon's stamps or the log have passed it, and is
//! then forgotten. The file also keeps the stamp up to which claims were
//! forgotten (the **floor**): every start gives stamps above it, so that a
//! forgotten claim cannot come back (a clock set back, or a crash that took
//! the newest events, would otherwise let the daemon give those stamps again).
//!
//! The set is kept in `claimed-ids` in the data directory ("Claimed ids" in
//! `docs/FORMAT.md`), written and synced before the group holding a new
//! claim is written to the log, so that no start can lose a claim whose
//! event survived. A client that is not trying to collide almost never
//! makes a claim: a random 62-bit tail lands inside a segment's length with
//! odds of about 2^-13, and a UUIDv7 with an earlier stamp is never one.

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
/// Bytes before the ids: magic, version, count, floor.
const HEAD: usize = 24;

/// The claimed ids, in memory and in their file.
#[derive(Debug)]
pub struct Claims {
    path: PathBuf,
    ids: FxHashSet<u128>,
    /// Claims with a stamp at or below this were forgotten: the daemon
    /// gives only greater stamps.
    floor: u64,
    /// Changed since the file was last written.
    dirty: bool,
}

/// A log position, `(segment, offset)`: the next frame's place.
pub type Position = (u64, u64);

impl Claims {
    /// The claims recorded in `data_dir` (none if the file does not exist).
    ///
    /// # Errors
    /// The file exists but cannot be read, or is damaged (`Err` names what
    /// is wrong; the daemon does not start, see FORMAT.md).
    pub fn load(data_dir: &Path) -> Result<Self, (PathBuf, String)> {
        let path = data_dir.join(CLAIMS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err((path, e.to_string())),
        };
        let (floor, ids) = if bytes.is_empty() {
            (0, FxHashSet::default())
        } else {
            decode(&bytes).map_err(|what| (path.clone(), what))?
        };
        Ok(Self {
            path,
            ids,
            floor,
            dirty: false,
        })
    }

    /// The stamp the daemon must give only greater ones than.
    #[must_use]
    pub fn floor(&self) -> u64 {
        self.floor
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

    /// Records client-chosen `id` if the daemon could still give it to one
    /// of its own events: its stamp is after `last_stamp` (the daemon's
    /// newest) and its place, under `key`, is a frame start at or after
    /// `next` inside a segment of `segment_len` bytes. Returns whether it
    /// was recorded.
    pub fn note(
        &mut self,
        key: IdKey,
        id: u128,
        last_stamp: u64,
        next: Position,
        segment_len: u64,
    ) -> bool {
        if !could_be_given(key, id, last_stamp, next, segment_len) {
            return false;
        }
        if self.ids.insert(id) {
            self.dirty = true;
        }
        true
    }

    /// Forgets every claim the daemon can no longer give (stamp at or
    /// before `last_stamp`, or place before `next`); writes the file, with
    /// `last_stamp` as the new floor, if the set changed since it was last
    /// written.
    ///
    /// # Errors
    /// The file cannot be written or synced.
    pub fn settle(
        &mut self,
        key: IdKey,
        last_stamp: u64,
        next: Position,
        segment_len: u64,
    ) -> io::Result<()> {
        let before = self.ids.len();
        self.ids
            .retain(|id| could_be_given(key, *id, last_stamp, next, segment_len));
        if self.ids.len() != before {
            self.dirty = true;
        }
        if !self.dirty {
            return Ok(());
        }
        // Kept even when empty: the floor must outlive the claims it forgot.
        let floor = self.floor.max(last_stamp);
        crate::state::write_synced(&self.path, &encode(floor, &self.ids))?;
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

/// Whether the daemon could still give `id` to an event of its own (see
/// [`Claims::note`]).
fn could_be_given(key: IdKey, id: u128, last_stamp: u64, next: Position, segment_len: u64) -> bool {
    let (Some(stamp), Some((segment, offset))) = (id_stamp(id), locate(key, id)) else {
        return false;
    };
    stamp > last_stamp
        && segment < LOCATED_SEGMENTS
        && offset < segment_len
        && (segment, offset) >= next
}

fn encode(floor: u64, ids: &FxHashSet<u128>) -> Vec<u8> {
    let mut sorted: Vec<u128> = ids.iter().copied().collect();
    sorted.sort_unstable();
    let mut buf = Vec::with_capacity(HEAD + 16 * sorted.len() + 4);
    buf.extend_from_slice(&CLAIMS_MAGIC);
    buf.extend_from_slice(&CLAIMS_VERSION.to_le_bytes());
    buf.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    buf.extend_from_slice(&floor.to_le_bytes());
    for id in sorted {
        buf.extend_from_slice(&id.to_le_bytes());
    }
    let crc = weir_protocol::crc32(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(bytes: &[u8]) -> Result<(u64, FxHashSet<u128>), String> {
    if bytes.len() < HEAD + 4 {
        return Err(format!("{} bytes, shorter than a header", bytes.len()));
    }
    if bytes[..8] != CLAIMS_MAGIC {
        return Err("bad magic".into());
    }
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
    let floor = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let ids = body[HEAD..]
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
        .collect();
    Ok((floor, ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_protocol::locate::located_id;

    const SEG: u64 = 1 << 28;

    fn key() -> IdKey {
        IdKey::from_bytes(*b"claims-test-key!").expect("non-zero")
    }

    fn stamp(ms: u64, counter: u16) -> u64 {
        ms << 12 | u64::from(counter)
    }

    #[test]
    fn only_ids_the_daemon_could_still_give_are_claims() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Claims::load(dir.path()).unwrap();
        let k = key();
        let next = (2, 4096);
        let last = stamp(1_000, 7);
        // A future stamp at a place the log has not reached: a claim.
        let ahead = located_id(k, 1_000, 8, 2, 8192).unwrap();
        assert!(c.note(k, ahead, last, next, SEG));
        // The same place with a stamp the daemon has given already: not one.
        assert!(!c.note(
            k,
            located_id(k, 1_000, 7, 2, 8192).unwrap(),
            last,
            next,
            SEG
        ));
        // A place the log has passed: not one.
        assert!(!c.note(
            k,
            located_id(k, 2_000, 0, 2, 4088).unwrap(),
            last,
            next,
            SEG
        ));
        assert!(!c.note(
            k,
            located_id(k, 2_000, 0, 1, 8192).unwrap(),
            last,
            next,
            SEG
        ));
        // A later segment counts; a place past the segment's length does not.
        assert!(c.note(k, located_id(k, 2_000, 0, 9, 64).unwrap(), last, next, SEG));
        assert!(!c.note(k, located_id(k, 2_000, 0, 9, SEG).unwrap(), last, next, SEG));
        // Not a UUIDv7: never one.
        assert!(!c.note(k, 42, last, next, SEG));
        assert_eq!(c.len(), 2);
        assert!(c.contains(ahead));
        assert!(c.dirty());
    }

    #[test]
    fn claims_survive_a_reload_and_are_forgotten_once_passed() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let mut c = Claims::load(dir.path()).unwrap();
        let a = located_id(k, 1_000, 8, 2, 8192).unwrap();
        let b = located_id(k, 5_000, 0, 3, 64).unwrap();
        assert!(c.note(k, a, stamp(1_000, 7), (2, 4096), SEG));
        assert!(c.note(k, b, stamp(1_000, 7), (2, 4096), SEG));
        c.settle(k, stamp(1_000, 7), (2, 4096), SEG).unwrap();
        assert!(!c.dirty());
        let back = Claims::load(dir.path()).unwrap();
        assert_eq!(
            (back.len(), back.contains(a), back.contains(b)),
            (2, true, true)
        );
        // The daemon's stamps pass `a`: it is forgotten, `b` stays.
        let mut back = back;
        back.settle(k, stamp(1_000, 9), (2, 4096), SEG).unwrap();
        let again = Claims::load(dir.path()).unwrap();
        assert_eq!((again.len(), again.contains(b)), (1, true));
        assert_eq!(again.floor(), stamp(1_000, 9), "the floor is kept");
        // The log passes `b`'s place: nothing is left, the floor stays.
        let mut again = again;
        again.settle(k, stamp(1_000, 9), (4, 0), SEG).unwrap();
        assert!(again.is_empty());
        let last = Claims::load(dir.path()).unwrap();
        assert_eq!((last.len(), last.floor()), (0, stamp(1_000, 9)));
    }

    #[test]
    fn the_layout_matches_the_spec() {
        let (section, rows) = crate::spec::section("### Claimed ids");
        assert_eq!(rows, vec![(0, 8), (8, 4), (12, 4), (16, 8)]);
        assert!(section.contains(&format!("| {HEAD} | 16 × n | the claimed ids")));
        assert!(section.contains(&format!("magic `{}`", "WEIRCLAM")));
        let ids: FxHashSet<u128> = [7u128, 3].into_iter().collect();
        let b = encode(0x0102_0304_0506_0708, &ids);
        assert_eq!(&b[..8], &CLAIMS_MAGIC);
        assert_eq!(&b[8..12], &CLAIMS_VERSION.to_le_bytes());
        assert_eq!(&b[12..16], &2u32.to_le_bytes());
        assert_eq!(&b[16..24], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[24..40], &3u128.to_le_bytes(), "ascending");
        assert_eq!(&b[56..60], &weir_protocol::crc32(&b[..56]).to_le_bytes());
    }

    #[test]
    fn a_damaged_file_is_an_error_that_names_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let mut c = Claims::load(dir.path()).unwrap();
        assert!(c.note(k, located_id(k, 1_000, 8, 2, 8192).unwrap(), 0, (0, 0), SEG));
        c.settle(k, 0, (0, 0), SEG).unwrap();
        let path = dir.path().join(CLAIMS_FILE);
        let good = std::fs::read(&path).unwrap();
        let cases: [(Vec<u8>, &str); 4] = [
            (good[..good.len() - 1].to_vec(), "bytes, but 1 ids need"),
            (
                {
                    let mut b = good.clone();
                    b[28] ^= 1;
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
