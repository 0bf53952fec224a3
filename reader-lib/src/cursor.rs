//! [`Cursor`]: where a subscription stands, and the store and daemon
//! instance its position counts in; saved and read back as 52 fixed bytes
//! or through serde, so that a projection can take its subscription up
//! again in another process.
#![forbid(unsafe_code)]

use crate::view::View;
use serde::{Deserialize, Serialize};

/// The daemon instance, and the store, a subscription's position counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) instance: [u8; 16],
    pub(crate) store: Option<u64>,
}

/// Where a [`Subscription`](crate::Subscription) stands: its position, and
/// the store and daemon instance that sequence counts in. See
/// [`Reader::resume`](crate::Reader::resume).
///
/// A cursor can be saved and read back in another process, so that a
/// projection that restarts takes its subscription up again with the same
/// [`Resumed`](crate::Resumed) answers as a subscription that lived on:
/// [`to_bytes`](Self::to_bytes) and [`from_bytes`](Self::from_bytes) (52
/// bytes), or serde, as the fields `version`, `position`, `seen`,
/// `instance` (32 hex digits) and `store` (16 hex digits, or none). Both
/// forms are stable: a change that a reader must understand comes with a
/// new `version`, which older builds refuse ([`CursorError::UnsupportedVersion`]);
/// serde ignores fields it does not know, so a cursor can be flattened into
/// a larger state.
///
/// ```no_run
/// use weir::{Cursor, Reader, Region};
/// # fn main() -> Result<(), weir::Error> {
/// let reader = Reader::open("/var/lib/weir")?;
/// let mut sub = reader.subscribe(Region::all(), 0);
/// let saved: [u8; 52] = sub.cursor().to_bytes();
/// drop(sub);
/// // ... in another process, later:
/// let sub = reader.resume(Region::all(), Cursor::from_bytes(&saved)?);
/// # drop(sub);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CursorFields", into = "CursorFields")]
pub struct Cursor {
    pub(crate) position: u64,
    pub(crate) origin: Origin,
    /// The origin's `visible` when the position was last checked against it.
    pub(crate) seen: u64,
}

/// The layout version of both saved forms.
const VERSION: u16 = 1;
/// The bytes form's magic.
const MAGIC: [u8; 4] = *b"wcur";
/// Flag: the cursor's instance had a store id key.
const HAS_STORE: u16 = 1;

// The bytes form, all little-endian; the CRC-32 (zlib's) covers 0..48.
const VERSION_AT: usize = 4;
const FLAGS_AT: usize = VERSION_AT + 2;
const POSITION_AT: usize = FLAGS_AT + 2;
const SEEN_AT: usize = POSITION_AT + 8;
const STORE_AT: usize = SEEN_AT + 8;
const INSTANCE_AT: usize = STORE_AT + 8;
const CRC_AT: usize = INSTANCE_AT + 16;
/// Length of [`Cursor::to_bytes`].
const LEN: usize = CRC_AT + 4;
const _: () = assert!(LEN == 52);

impl Cursor {
    pub(crate) fn at(view: &View, position: u64, seen: u64) -> Self {
        Self {
            position,
            seen,
            origin: Origin {
                instance: view.gate.header.instance,
                store: view.gate.store,
            },
        }
    }

    /// The next sequence to consider, in the store the cursor was taken in.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The cursor as 52 bytes, to save with the state built from the
    /// events before it: magic `wcur`, version (u16), flags (u16),
    /// position, seen, store (u64 each), instance (16 bytes), CRC-32 of the
    /// rest; little-endian.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 52] {
        let mut b = [0u8; LEN];
        let flags = if self.origin.store.is_some() {
            HAS_STORE
        } else {
            0
        };
        b[..VERSION_AT].copy_from_slice(&MAGIC);
        b[VERSION_AT..FLAGS_AT].copy_from_slice(&VERSION.to_le_bytes());
        b[FLAGS_AT..POSITION_AT].copy_from_slice(&flags.to_le_bytes());
        b[POSITION_AT..SEEN_AT].copy_from_slice(&self.position.to_le_bytes());
        b[SEEN_AT..STORE_AT].copy_from_slice(&self.seen.to_le_bytes());
        let store = self.origin.store.unwrap_or(0);
        b[STORE_AT..INSTANCE_AT].copy_from_slice(&store.to_le_bytes());
        b[INSTANCE_AT..CRC_AT].copy_from_slice(&self.origin.instance);
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A cursor saved by [`to_bytes`](Self::to_bytes). Bytes cut short,
    /// damaged, or of another version are refused, never guessed at.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CursorError> {
        let short = || CursorError::Length {
            expected: LEN,
            found: b.len(),
        };
        let magic: [u8; 4] = b
            .get(..VERSION_AT)
            .ok_or_else(short)?
            .try_into()
            .expect("4");
        if magic != MAGIC {
            return Err(CursorError::BadMagic {
                expected: MAGIC,
                found: magic,
            });
        }
        let version = u16_at(b, VERSION_AT).ok_or_else(short)?;
        if version != VERSION {
            return Err(CursorError::UnsupportedVersion {
                expected: VERSION,
                found: version,
            });
        }
        if b.len() != LEN {
            return Err(short());
        }
        let stored = u32::from_le_bytes(b[CRC_AT..].try_into().expect("4"));
        let computed = crc32fast::hash(&b[..CRC_AT]);
        if stored != computed {
            return Err(CursorError::Checksum { stored, computed });
        }
        let flags = u16_at(b, FLAGS_AT).expect("length checked");
        if flags & !HAS_STORE != 0 {
            return Err(CursorError::Field {
                field: "flags",
                why: format!("unknown bits in {flags:#06x}"),
            });
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
        Ok(Self {
            position: u64_at(POSITION_AT),
            seen: u64_at(SEEN_AT),
            origin: Origin {
                instance: b[INSTANCE_AT..CRC_AT].try_into().expect("16"),
                store: (flags & HAS_STORE != 0).then(|| u64_at(STORE_AT)),
            },
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// A saved cursor could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// The bytes are not as long as a saved cursor.
    #[error(
        "a saved cursor is {expected} bytes long, found {found}: it was cut short or is not a cursor"
    )]
    Length {
        /// Length of a saved cursor.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// The bytes do not start with a cursor's magic.
    #[error("not a saved cursor: magic {found:?}, expected {expected:?}")]
    BadMagic {
        /// A cursor's magic.
        expected: [u8; 4],
        /// Magic found.
        found: [u8; 4],
    },
    /// The cursor was saved in a format version this build does not read.
    #[error(
        "the saved cursor has format version {found}; this build reads version {expected}. Upgrade the library"
    )]
    UnsupportedVersion {
        /// The version this build reads.
        expected: u16,
        /// The version found.
        found: u16,
    },
    /// The checksum does not match: the bytes were damaged.
    #[error(
        "the saved cursor's checksum does not match (stored {stored:#010x}, computed {computed:#010x}): it is corrupt"
    )]
    Checksum {
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// A field holds a value no cursor has.
    #[error("the saved cursor's field `{field}` is invalid: {why}")]
    Field {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// The serde form of a [`Cursor`].
#[derive(Serialize, Deserialize)]
struct CursorFields {
    version: u16,
    position: u64,
    seen: u64,
    /// Hex, as `weir stat` prints an instance: exact in every format
    /// (JSON numbers past 2^53 and TOML's past 2^63 are not).
    instance: String,
    store: Option<String>,
}

impl From<Cursor> for CursorFields {
    fn from(c: Cursor) -> Self {
        Self {
            version: VERSION,
            position: c.position,
            seen: c.seen,
            instance: format!("{:032x}", u128::from_le_bytes(c.origin.instance)),
            store: c.origin.store.map(|s| format!("{s:016x}")),
        }
    }
}

impl TryFrom<CursorFields> for Cursor {
    type Error = CursorError;

    fn try_from(f: CursorFields) -> Result<Self, CursorError> {
        if f.version != VERSION {
            return Err(CursorError::UnsupportedVersion {
                expected: VERSION,
                found: f.version,
            });
        }
        let instance = hex(&f.instance, 32, "instance")?;
        let store = match &f.store {
            Some(s) => Some(hex(s, 16, "store")? as u64),
            None => None,
        };
        Ok(Self {
            position: f.position,
            seen: f.seen,
            origin: Origin {
                instance: instance.to_le_bytes(),
                store,
            },
        })
    }
}

/// `s` as exactly `digits` hex digits.
fn hex(s: &str, digits: usize, field: &'static str) -> Result<u128, CursorError> {
    let bad = || CursorError::Field {
        field,
        why: format!("{s:?} is not {digits} hex digits"),
    };
    if s.len() != digits || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u128::from_str_radix(s, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests;
