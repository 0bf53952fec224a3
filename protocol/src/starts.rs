//! The `starts` file: the store's id key, and which `visible` each daemon
//! instance of the store started with, newest last (`docs/FORMAT.md`,
//! "Starts").
//!
//! A restart after a crash under a `sync` policy other than `always` may
//! start below the `visible` readers had seen: the unsynced tail is gone
//! and new events get its sequences. A subscription that moves from one
//! instance to a later one takes the lowest start of the instances in
//! between as the first sequence that may have been given again, however
//! far the new instance has appended since.

/// Magic of the file.
pub const STARTS_MAGIC: [u8; 8] = *b"WEIRSTRT";
/// Layout version.
pub const STARTS_VERSION: u32 = 1;
/// Bytes before the first record.
pub const STARTS_HEADER_LEN: usize = 40;
/// Bytes of one record: instance id (16), `visible` at start (8).
pub const STARTS_RECORD_LEN: usize = 24;
/// Records kept: the oldest are dropped past this many.
pub const STARTS_KEPT: usize = 1024;
/// Starts the daemon's hello carries, the newest last.
pub const STARTS_IN_HELLO: usize = 16;

use crate::locate::{IdKey, IdMask};

/// One daemon start (also sent in the hello: `wire::ServerHello::starts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Start {
    /// The instance id its gate carries.
    #[serde(with = "crate::bin128")]
    pub instance: u128,
    /// Its `visible` when it published its gate: every sequence at or above
    /// it was given by this instance (or a later one).
    pub visible: u64,
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Starts {
    /// The store's id key, with its mask; `None` if the file names none or
    /// a mask this build does not know.
    pub id_key: Option<IdKey>,
    /// The starts, oldest first.
    pub starts: Vec<Start>,
}

/// The file's bytes for `starts` (oldest first; only the newest
/// [`STARTS_KEPT`] are written) of the store keyed `id_key`.
#[must_use]
pub fn encode(id_key: IdKey, starts: &[Start]) -> Vec<u8> {
    let kept = &starts[starts.len().saturating_sub(STARTS_KEPT)..];
    let mut out = Vec::with_capacity(STARTS_HEADER_LEN + STARTS_RECORD_LEN * kept.len() + 4);
    out.extend_from_slice(&STARTS_MAGIC);
    out.extend_from_slice(&STARTS_VERSION.to_le_bytes());
    out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
    out.extend_from_slice(&id_key.to_bytes());
    out.extend_from_slice(&id_key.mask_kind().word().to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for s in kept {
        out.extend_from_slice(&s.instance.to_le_bytes());
        out.extend_from_slice(&s.visible.to_le_bytes());
    }
    let crc = crate::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// What a whole file holds, or what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Starts, &'static str> {
    if bytes.len() < STARTS_HEADER_LEN + 4 || bytes[..8] != STARTS_MAGIC {
        return Err("no starts file header");
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if word(8) != STARTS_VERSION {
        return Err("unknown starts layout version");
    }
    let n = word(12) as usize;
    let end = n
        .checked_mul(STARTS_RECORD_LEN)
        .and_then(|b| b.checked_add(STARTS_HEADER_LEN))
        .filter(|&end| end.checked_add(4) == Some(bytes.len()))
        .ok_or("the record count does not match the file's length")?;
    if crate::crc32(&bytes[..end]) != word(end) {
        return Err("CRC mismatch");
    }
    let key: [u8; 16] = bytes[16..32].try_into().expect("16 bytes");
    let id_key = IdMask::from_word(word(32))
        .and_then(|how| IdKey::from_bytes(key).map(|k| k.with_mask(how)));
    let starts = bytes[STARTS_HEADER_LEN..end]
        .chunks_exact(STARTS_RECORD_LEN)
        .map(|r| Start {
            instance: u128::from_le_bytes(r[..16].try_into().expect("16 bytes")),
            visible: u64::from_le_bytes(r[16..].try_into().expect("8 bytes")),
        })
        .collect();
    Ok(Starts { id_key, starts })
}

/// The lowest `visible` an instance started with after `instance`, if
/// `starts` holds `instance`: `Some(None)` if none started after it.
#[must_use]
pub fn lowest_after(starts: &[Start], instance: u128) -> Option<Option<u64>> {
    let at = starts.iter().rposition(|s| s.instance == instance)?;
    Some(starts[at + 1..].iter().map(|s| s.visible).min())
}

/// The lowest `visible` any instance started with after `instance` (after
/// every record, if `instance` has none: a start before the file existed,
/// or dropped from it), or `None` if no record follows.
#[must_use]
pub fn lowest_since(starts: &[Start], instance: u128) -> Option<u64> {
    lowest_after(starts, instance).unwrap_or_else(|| starts.iter().map(|s| s.visible).min())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(instance: u128, visible: u64) -> Start {
        Start { instance, visible }
    }

    fn key() -> IdKey {
        IdKey::from_bytes([7; 16])
            .unwrap()
            .with_mask(IdMask::SipHash)
    }

    #[test]
    fn a_file_round_trips_and_keeps_the_newest() {
        let all: Vec<_> = (0..STARTS_KEPT as u128 + 5)
            .map(|i| s(i, i as u64))
            .collect();
        let file = decode(&encode(key(), &all)).unwrap();
        let back = file.starts;
        assert_eq!(back.len(), STARTS_KEPT);
        assert_eq!(back[0], s(5, 5));
        assert_eq!(back.last(), all.last());
        let k = file.id_key.unwrap();
        assert_eq!((k.to_bytes(), k.mask_kind()), ([7; 16], IdMask::SipHash));
    }

    #[test]
    fn a_damaged_or_cut_file_is_refused() {
        let bytes = encode(key(), &[s(1, 10), s(2, 7)]);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flipped byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn the_lowest_start_counts_only_instances_after_the_given_one() {
        let starts = [s(1, 50), s(2, 30), s(3, 40), s(4, 45)];
        assert_eq!(lowest_since(&starts, 2), Some(40));
        assert_eq!(lowest_since(&starts, 1), Some(30));
        assert_eq!(lowest_since(&starts, 4), None);
        // Unknown: every record counts.
        assert_eq!(lowest_since(&starts, 9), Some(30));
    }
}
