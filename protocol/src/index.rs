//! The published index: rows addressed by sequence in chunk files, per-chunk
//! columns and id tables, interned names, per-kind heads. Written only by the
//! daemon, mapped read-only by readers. See `docs/FORMAT.md` ("Index").
//!
//! Everything a reader follows (slot, head, link) names a sequence; a reader
//! uses it only if that sequence is below the `visible` it loaded.

use crate::crc32;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Current index layout version (meta, chunks, strings, names, kinds).
pub const INDEX_VERSION: u32 = 1;
/// Size of each file's header page.
pub const PAGE: usize = 4096;

/// Magic of `meta`.
pub const META_MAGIC: [u8; 8] = *b"WEIRMETA";
/// Magic of a chunk file.
pub const CHUNK_MAGIC: [u8; 8] = *b"WEIRCHNK";
/// Magic of a strings file.
pub const STRINGS_MAGIC: [u8; 8] = *b"WEIRSTRS";
/// Magic of a names table.
pub const NAMES_MAGIC: [u8; 8] = *b"WEIRNAME";
/// Magic of the kinds file.
pub const KINDS_MAGIC: [u8; 8] = *b"WEIRKIND";

/// Row flag: the event has a causation id.
pub const ROW_HAS_CAUSATION: u16 = 1;
/// Row flag: the sequence was cancelled; the row holds no event.
pub const ROW_CANCELLED: u16 = 2;
/// Row flag: last event of its batch.
pub const ROW_BATCH_END: u16 = 4;

/// Bytes per row.
pub const ROW_LEN: usize = 128;

/// One event's index row (128 bytes), addressed by its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Row {
    /// Event id.
    pub event_id: [u8; 16],
    /// Correlation id.
    pub correlation_id: [u8; 16],
    /// Causation id (zero unless [`ROW_HAS_CAUSATION`]).
    pub causation_id: [u8; 16],
    /// Wall time, ms.
    pub wall_ms: U64,
    /// Its own sequence (a self-check).
    pub sequence: U64,
    /// Previous sequence + 1 of the same entity; 0 if none.
    pub prev_entity: U64,
    /// Previous sequence + 1 of the same kind; 0 if none.
    pub prev_kind: U64,
    /// Previous sequence + 1 of the same scope; 0 if none.
    pub prev_scope: U64,
    /// Frame offset in its segment.
    pub frame_offset: U64,
    /// Segment id.
    pub segment_id: U32,
    /// Frame length.
    pub frame_len: U32,
    /// Interned entity id.
    pub entity_id: U32,
    /// Interned scope id.
    pub scope_id: U32,
    /// Per-entity clock.
    pub clock: U32,
    /// Kind.
    pub kind: U16,
    /// `ROW_*` flags.
    pub flags: U16,
    /// A prefetch hint for walks down the entity's chain: this sequence
    /// minus the sequence of the row [`ENTITY_JUMP`] links down the chain
    /// (`prev_entity` followed that many times); 0 when the chain is shorter
    /// or the distance does not fit. Readers may fetch that row early and
    /// must never rely on it (rows written before this field existed hold 0).
    pub entity_jump: U32,
    /// CRC-32 of bytes 0..124.
    pub crc: U32,
}
const _: () = assert!(size_of::<Row>() == ROW_LEN);

/// How many links down the entity's chain [`Row::entity_jump`] points.
pub const ENTITY_JUMP: usize = 8;

impl Row {
    /// Seals the row: computes its CRC.
    pub fn seal(&mut self) {
        self.crc = crc32(&self.as_bytes()[..124]).into();
    }
    /// Does the stored CRC match?
    #[must_use]
    pub fn crc_ok(&self) -> bool {
        crc32(&self.as_bytes()[..124]) == self.crc.get()
    }
    /// Event id as a number.
    #[must_use]
    pub fn id(&self) -> u128 {
        u128::from_le_bytes(self.event_id)
    }
    /// Is this a cancelled (tombstone) row?
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.flags.get() & ROW_CANCELLED != 0
    }
    /// A tombstone row for a cancelled sequence.
    #[must_use]
    pub fn tombstone(sequence: u64) -> Self {
        let mut r = Self::new_zeroed();
        r.sequence = sequence.into();
        r.kind = crate::model::CANCELLED_KIND.0.into();
        r.flags = ROW_CANCELLED.into();
        r.entity_id = NO_NAME.into();
        r.scope_id = NO_NAME.into();
        r.seal();
        r
    }
}

/// Entity/scope column value of a cancelled row.
pub const NO_NAME: u32 = u32::MAX;

/// Geometry of one chunk file holding `1 << log2` rows.
///
/// Layout: header page ‖ rows (N×128) ‖ kind column (N×u16) ‖ scope column
/// (N×u32) ‖ entity column (N×u32) ‖ id table (2N × u64 slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkGeometry {
    /// log2 of rows per chunk.
    pub log2: u32,
}

/// Smallest and largest allowed `chunk-rows-log2`.
pub const CHUNK_LOG2_RANGE: std::ops::RangeInclusive<u32> = 10..=24;

impl ChunkGeometry {
    /// Rows per chunk.
    #[must_use]
    pub const fn rows(self) -> usize {
        1 << self.log2
    }
    /// Offset of row `i`.
    #[must_use]
    pub const fn row_offset(self, i: usize) -> usize {
        PAGE + i * ROW_LEN
    }
    /// Offset of the kind column.
    #[must_use]
    pub const fn kinds_offset(self) -> usize {
        PAGE + self.rows() * ROW_LEN
    }
    /// Offset of the scope column.
    #[must_use]
    pub const fn scopes_offset(self) -> usize {
        self.kinds_offset() + self.rows() * 2
    }
    /// Offset of the entity column.
    #[must_use]
    pub const fn entities_offset(self) -> usize {
        self.scopes_offset() + self.rows() * 4
    }
    /// Offset of the id table.
    #[must_use]
    pub const fn ids_offset(self) -> usize {
        self.entities_offset() + self.rows() * 4
    }
    /// Slots in the id table (twice the rows: load factor ≤ 0.5).
    #[must_use]
    pub const fn id_slots(self) -> usize {
        self.rows() * 2
    }
    /// Offset of id-table slot `i`.
    #[must_use]
    pub const fn id_slot_offset(self, i: usize) -> usize {
        self.ids_offset() + i * 8
    }
    /// The id-table slot where probing for an id of hash `hash` starts.
    #[must_use]
    pub const fn home_slot(self, hash: u64) -> usize {
        (hash as usize) & (self.id_slots() - 1)
    }
    /// Whole file length.
    #[must_use]
    pub const fn file_len(self) -> usize {
        self.ids_offset() + self.id_slots() * 8
    }
    /// Which chunk holds `seq`, and the row inside it.
    #[must_use]
    pub const fn locate(self, seq: u64) -> (u64, usize) {
        (seq >> self.log2, (seq & ((1 << self.log2) - 1)) as usize)
    }
}

/// The header every index file starts with (32 bytes): magic, layout
/// version, one file-specific parameter, the file's number, a CRC.
///
/// | file | `param` | `number` |
/// | --- | --- | --- |
/// | `meta` | log2 rows per chunk | generation |
/// | `chunk-{c}` | log2 rows per chunk | chunk number |
/// | `strings-{n}` | 0 | file number |
/// | `names-{t}` | log2 slots | table number |
/// | `kinds` | 0 | 0 |
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FileHeader {
    /// File magic.
    pub magic: [u8; 8],
    /// [`INDEX_VERSION`].
    pub version: U32,
    /// File-specific parameter (see the table above).
    pub param: U32,
    /// File number (see the table above).
    pub number: U64,
    /// CRC-32 of bytes 0..24.
    pub crc: U32,
    /// Reserved, zero.
    pub reserved: U32,
}
const _: () = assert!(size_of::<FileHeader>() == 32);

/// Why an index file header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Too short to hold a header.
    #[error("file too short for a header")]
    Short,
    /// Wrong magic.
    #[error("bad magic: expected {expected:?}, found {found:?}")]
    BadMagic {
        /// Expected magic.
        expected: [u8; 8],
        /// Found magic.
        found: [u8; 8],
    },
    /// Unknown layout version.
    #[error("index layout version {found} is not supported (this build reads {INDEX_VERSION})")]
    UnsupportedVersion {
        /// Version found.
        found: u32,
    },
    /// CRC mismatch.
    #[error("header checksum mismatch")]
    Checksum,
    /// Parameter or number differ from what the caller expects.
    #[error("header names {field} {found}, expected {expected}")]
    Mismatch {
        /// `param` or `number`.
        field: &'static str,
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
}

impl FileHeader {
    /// A header with its CRC.
    #[must_use]
    pub fn new(magic: [u8; 8], param: u32, number: u64) -> Self {
        let mut h = Self {
            magic,
            version: INDEX_VERSION.into(),
            param: param.into(),
            number: number.into(),
            crc: 0.into(),
            reserved: 0.into(),
        };
        h.crc = crc32(&h.as_bytes()[..24]).into();
        h
    }
    /// Parses and checks the header at the start of `bytes`. `param` is
    /// checked when given; `number` always.
    pub fn parse(
        bytes: &[u8],
        magic: [u8; 8],
        param: Option<u32>,
        number: u64,
    ) -> Result<Self, HeaderError> {
        let (h, _) = Self::read_from_prefix(bytes).map_err(|_| HeaderError::Short)?;
        if h.magic != magic {
            return Err(HeaderError::BadMagic {
                expected: magic,
                found: h.magic,
            });
        }
        if h.version.get() != INDEX_VERSION {
            return Err(HeaderError::UnsupportedVersion {
                found: h.version.get(),
            });
        }
        if crc32(&h.as_bytes()[..24]) != h.crc.get() {
            return Err(HeaderError::Checksum);
        }
        if let Some(p) = param.filter(|p| *p != h.param.get()) {
            return Err(HeaderError::Mismatch {
                field: "param",
                expected: p.into(),
                found: h.param.get().into(),
            });
        }
        if h.number.get() != number {
            return Err(HeaderError::Mismatch {
                field: "number",
                expected: number,
                found: h.number.get(),
            });
        }
        Ok(h)
    }
}

/// Offset, inside a chunk header page, of the atomic `sealed` word (1 once
/// the chunk is full and `min_id`/`max_id` are final).
pub const CHUNK_SEALED_OFF: usize = 64;
/// Offset of the sealed chunk's smallest event id (16 bytes, LE).
pub const CHUNK_MIN_ID_OFF: usize = 80;
/// Offset of the sealed chunk's largest event id (16 bytes, LE).
pub const CHUNK_MAX_ID_OFF: usize = 96;

/// Magic of a generation's `ranges` file: the id range of every sealed chunk
/// in one place, so that a lookup rules chunks out without mapping them.
pub const RANGES_MAGIC: [u8; 8] = *b"WEIRRNGS";
/// Offset of the atomic count of final records in `ranges` (chunks `0..count`).
pub const RANGES_COUNT_OFF: usize = 64;
/// Chunks whose range `ranges` holds; a later chunk's is only in its header.
pub const RANGES_CAP: usize = 1 << 15;
/// Bytes per `ranges` record.
pub const RANGE_RECORD_LEN: usize = 64;
/// Length of the `ranges` file: a header page, then one record per chunk.
pub const RANGES_FILE_LEN: usize = PAGE + RANGE_RECORD_LEN * RANGES_CAP;

/// Offset in `ranges` of chunk `c`'s record.
#[must_use]
pub const fn ranges_record(c: usize) -> usize {
    PAGE + RANGE_RECORD_LEN * c
}

/// Chunk `c`'s `ranges` record: min id (16, LE), max id (16, LE), chunk
/// number (8, LE), 20 zero bytes, CRC-32 of bytes 0..60 (4, LE).
#[must_use]
pub fn range_record(c: u64, min: u128, max: u128) -> [u8; RANGE_RECORD_LEN] {
    let mut r = [0u8; RANGE_RECORD_LEN];
    r[..16].copy_from_slice(&min.to_le_bytes());
    r[16..32].copy_from_slice(&max.to_le_bytes());
    r[32..40].copy_from_slice(&c.to_le_bytes());
    let crc = crate::crc32(&r[..60]);
    r[60..].copy_from_slice(&crc.to_le_bytes());
    r
}

/// The (min, max) ids of a `ranges` record, if it is chunk `c`'s and its
/// CRC holds.
#[must_use]
pub fn parse_range_record(c: u64, r: &[u8]) -> Option<(u128, u128)> {
    let r: &[u8; RANGE_RECORD_LEN] = r.try_into().ok()?;
    let (ids, rest) = r.split_at(32);
    let (min, max) = ids.split_at(16);
    let crc = u32::from_le_bytes(rest[28..].try_into().ok()?);
    let chunk = u64::from_le_bytes(rest[..8].try_into().ok()?);
    (crc == crate::crc32(&r[..60]) && chunk == c).then(|| {
        (
            u128::from_le_bytes(min.try_into().unwrap_or_default()),
            u128::from_le_bytes(max.try_into().unwrap_or_default()),
        )
    })
}

/// Mixes an event id into a 64-bit hash (id-table home slot and fingerprint).
#[must_use]
pub const fn id_hash(id: u128) -> u64 {
    let x = (id as u64) ^ ((id >> 64) as u64).rotate_left(29);
    mix64(x)
}

/// A 64-bit mix: splitmix64's finaliser, without the golden-ratio increment
/// splitmix64 adds first (FORMAT.md, "Id table").
#[must_use]
pub const fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Packs an id-table slot: the row index + 1 in the low 32 bits, the hash's
/// high 32 bits as a fingerprint above. Zero is an empty slot.
#[must_use]
pub const fn pack_slot(row: usize, hash: u64) -> u64 {
    ((hash >> 32) << 32) | (row as u64 + 1)
}

/// Unpacks a non-empty slot into (row index, fingerprint); `None` for a
/// slot no writer produces (its low 32 bits are zero), which a reader
/// treats as corruption.
#[must_use]
pub const fn unpack_slot(slot: u64) -> Option<(usize, u32)> {
    match (slot & 0xffff_ffff).checked_sub(1) {
        Some(i) => Some((i as usize, (slot >> 32) as u32)),
        None => None,
    }
}

/// Fingerprint stored for a hash.
#[must_use]
pub const fn fingerprint(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Bytes of each strings file (header page included).
pub const STRINGS_FILE_LEN: usize = 1 << 26;
/// log2 of [`STRINGS_FILE_LEN`].
pub const STRINGS_FILE_LOG2: u32 = 26;
/// Namespace tag of entity names.
pub const NS_ENTITY: u8 = 1;
/// Namespace tag of scope names.
pub const NS_SCOPE: u8 = 2;
/// Bytes before the name in a string entry.
pub const STRING_ENTRY_HEADER: usize = 32;

/// A string entry's fixed header. Its `head` and `count` are atomics that
/// the daemon updates before each publish; the rest never changes.
///
/// A string id is the entry's global byte offset divided by 8; the global
/// offset is `file_no << 26 | offset_in_file`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StringEntry {
    /// Name bytes.
    pub len: U32,
    /// [`NS_ENTITY`] or [`NS_SCOPE`].
    pub ns: u8,
    /// Reserved.
    pub pad: [u8; 3],
    /// Newest sequence + 1 with this entity/scope (atomic).
    pub head: U64,
    /// Events with this entity/scope (atomic).
    pub count: U64,
    /// CRC-32 of `len`, `ns` and the name bytes.
    pub crc: U32,
    /// Reserved.
    pub reserved: U32,
}
const _: () = assert!(size_of::<StringEntry>() == STRING_ENTRY_HEADER);
/// Offset of `head` inside a string entry.
pub const STRING_HEAD_OFF: usize = 8;
/// Offset of `count` inside a string entry.
pub const STRING_COUNT_OFF: usize = 16;
/// Offset of `crc` inside a string entry.
pub const STRING_CRC_OFF: usize = 24;
const _: () = assert!(
    std::mem::offset_of!(StringEntry, head) == STRING_HEAD_OFF
        && std::mem::offset_of!(StringEntry, count) == STRING_COUNT_OFF
        && std::mem::offset_of!(StringEntry, crc) == STRING_CRC_OFF
);

/// CRC of a string entry's identity.
#[must_use]
pub fn string_crc(ns: u8, name: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(name.len() as u32).to_le_bytes());
    h.update(&[ns]);
    h.update(name);
    h.finalize()
}

/// Hash of a (namespace, name) pair for the names table.
#[must_use]
pub fn name_hash(ns: u8, name: &[u8]) -> u64 {
    let h = blake3::hash(&[&[ns][..], name].concat());
    let b = h.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

// A names table (`names-{t:04}`): a [`FileHeader`] page, then `1 << log2`
// u64 slots, each packed with [`pack_slot`] from the string id and
// [`name_hash`].

/// Smallest names table (log2 slots).
pub const NAMES_MIN_LOG2: u32 = 14;
/// Kinds file: header page then 65536 × (head u64, count u64).
pub const KINDS_FILE_LEN: usize = PAGE + 65536 * 16;

/// Atomic: number of the current names table.
pub const META_NAMES_TABLE_OFF: usize = 64;
/// Atomic: global end offset of the strings written so far.
pub const META_STRINGS_END_OFF: usize = 72;
/// Offsets of the two checkpoint copies inside `meta`.
pub const META_CHECKPOINT_OFFS: [usize; 2] = [1024, 2048];

/// A validated position: the index holds exactly the events below
/// `watermark`, which end at (`segment_id`, `segment_offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Checkpoint {
    /// Incremented on every write; the valid copy with the larger counter wins.
    pub counter: U64,
    /// Sequences below this are indexed (rows, tables, heads, strings).
    pub watermark: U64,
    /// Segment holding the next frame.
    pub segment_id: U64,
    /// Offset of the next frame in it.
    pub segment_offset: U64,
    /// Global end of strings at the checkpoint.
    pub strings_end: U64,
    /// Names table in use.
    pub names_table: U64,
    /// Largest wall_ms written (HLC floor for the next start).
    pub max_wall_ms: U64,
    /// 1 if the daemon stopped cleanly right after writing this.
    pub clean: U32,
    /// CRC-32 of bytes 0..60.
    pub crc: U32,
}
const _: () = assert!(size_of::<Checkpoint>() == 64);

impl Checkpoint {
    /// Seals with a CRC.
    pub fn seal(&mut self) {
        self.crc = crc32(&self.as_bytes()[..60]).into();
    }
    /// CRC matches and the copy was ever written.
    #[must_use]
    pub fn valid(&self) -> bool {
        self.counter.get() != 0 && crc32(&self.as_bytes()[..60]) == self.crc.get()
    }
    /// The newer valid of two copies.
    #[must_use]
    pub fn newest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        [a, b]
            .into_iter()
            .flatten()
            .filter(Self::valid)
            .max_by_key(|c| c.counter.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_records_round_trip_and_refuse_damage() {
        let r = range_record(7, 11, 99);
        assert_eq!(parse_range_record(7, &r), Some((11, 99)));
        assert_eq!(parse_range_record(8, &r), None, "another chunk's record");
        for i in 0..RANGE_RECORD_LEN {
            let mut bad = r;
            bad[i] ^= 1;
            assert_eq!(parse_range_record(7, &bad), None, "byte {i} flipped");
        }
        assert_eq!(parse_range_record(7, &r[..63]), None);
        assert_eq!(ranges_record(0), PAGE);
        assert_eq!(ranges_record(3) - ranges_record(2), 64);
    }

    #[test]
    fn geometry_is_contiguous_and_aligned() {
        for log2 in CHUNK_LOG2_RANGE {
            let g = ChunkGeometry { log2 };
            assert_eq!(g.row_offset(0), PAGE);
            assert_eq!(g.kinds_offset() % 8, 0);
            assert_eq!(g.ids_offset() % 8, 0);
            assert_eq!(g.file_len(), PAGE + g.rows() * (128 + 2 + 4 + 4 + 16));
            assert_eq!(g.locate((3 << log2) + 5), (3, 5));
        }
    }

    #[test]
    fn file_headers_check_every_field() {
        let h = FileHeader::new(CHUNK_MAGIC, 12, 3);
        let bytes = h.as_bytes();
        assert!(FileHeader::parse(bytes, CHUNK_MAGIC, Some(12), 3).is_ok());
        assert!(FileHeader::parse(bytes, CHUNK_MAGIC, None, 3).is_ok());
        assert!(matches!(
            FileHeader::parse(bytes, NAMES_MAGIC, None, 3),
            Err(HeaderError::BadMagic { .. })
        ));
        assert!(matches!(
            FileHeader::parse(bytes, CHUNK_MAGIC, Some(13), 3),
            Err(HeaderError::Mismatch { field: "param", .. })
        ));
        assert!(matches!(
            FileHeader::parse(bytes, CHUNK_MAGIC, None, 4),
            Err(HeaderError::Mismatch {
                field: "number",
                ..
            })
        ));
        assert_eq!(
            FileHeader::parse(&bytes[..10], CHUNK_MAGIC, None, 3).unwrap_err(),
            HeaderError::Short
        );
        let mut bad = bytes.to_vec();
        bad[17] ^= 1;
        assert_eq!(
            FileHeader::parse(&bad, CHUNK_MAGIC, None, 3).unwrap_err(),
            HeaderError::Checksum
        );
        let mut v2 = FileHeader::new(CHUNK_MAGIC, 12, 3);
        v2.version = 2.into();
        v2.crc = crc32(&v2.as_bytes()[..24]).into();
        assert_eq!(
            FileHeader::parse(v2.as_bytes(), CHUNK_MAGIC, None, 3).unwrap_err(),
            HeaderError::UnsupportedVersion { found: 2 }
        );
    }

    #[test]
    fn slots_round_trip() {
        let h = id_hash(0x1234_5678_9abc_def0_0fed_cba9_8765_4321);
        let s = pack_slot(77, h);
        assert_ne!(s, 0);
        assert_eq!(unpack_slot(s), Some((77, fingerprint(h))));
        assert_eq!(unpack_slot(0xdead_beef_0000_0000), None);
        assert_ne!(pack_slot(0, 0), 0);
    }

    #[test]
    fn rows_and_checkpoints_detect_corruption() {
        let mut r = Row::tombstone(9);
        assert!(r.crc_ok() && r.is_cancelled());
        r.clock = 1.into();
        assert!(!r.crc_ok());
        let mut c = Checkpoint::new_zeroed();
        c.counter = 2.into();
        c.watermark = 10.into();
        c.seal();
        let mut old = c;
        old.counter = 1.into();
        old.seal();
        assert_eq!(
            Checkpoint::newest(Some(old), Some(c))
                .unwrap()
                .watermark
                .get(),
            10
        );
        let mut bad = c;
        bad.watermark = 11.into();
        assert_eq!(
            Checkpoint::newest(Some(old), Some(bad))
                .unwrap()
                .counter
                .get(),
            1
        );
    }
}
