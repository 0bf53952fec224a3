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
    /// Reserved, zero.
    pub reserved: U32,
    /// CRC-32 of bytes 0..124.
    pub crc: U32,
}
const _: () = assert!(size_of::<Row>() == ROW_LEN);

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

/// Chunk header (the first bytes of the header page).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ChunkHeader {
    /// [`CHUNK_MAGIC`].
    pub magic: [u8; 8],
    /// [`INDEX_VERSION`].
    pub version: U32,
    /// log2 rows.
    pub log2: U32,
    /// Chunk number.
    pub chunk: U64,
    /// CRC-32 of bytes 0..24.
    pub crc: U32,
    /// Reserved.
    pub reserved: U32,
}
/// Offset, inside a chunk header page, of the atomic `sealed` word (1 once
/// the chunk is full and `min_id`/`max_id` are final).
pub const CHUNK_SEALED_OFF: usize = 64;
/// Offset of the sealed chunk's smallest event id (16 bytes, LE).
pub const CHUNK_MIN_ID_OFF: usize = 80;
/// Offset of the sealed chunk's largest event id (16 bytes, LE).
pub const CHUNK_MAX_ID_OFF: usize = 96;

impl ChunkHeader {
    /// A header with its CRC.
    #[must_use]
    pub fn new(log2: u32, chunk: u64) -> Self {
        let mut h = Self {
            magic: CHUNK_MAGIC,
            version: INDEX_VERSION.into(),
            log2: log2.into(),
            chunk: chunk.into(),
            crc: 0.into(),
            reserved: 0.into(),
        };
        h.crc = crc32(&h.as_bytes()[..24]).into();
        h
    }
    /// Is this a valid header for chunk `chunk` of geometry `log2`?
    #[must_use]
    pub fn check(&self, log2: u32, chunk: u64) -> bool {
        self.magic == CHUNK_MAGIC
            && self.version.get() == INDEX_VERSION
            && self.log2.get() == log2
            && self.chunk.get() == chunk
            && crc32(&self.as_bytes()[..24]) == self.crc.get()
    }
}

/// Mixes an event id into a 64-bit hash (id-table home slot and fingerprint).
#[must_use]
pub const fn id_hash(id: u128) -> u64 {
    let x = (id as u64) ^ ((id >> 64) as u64).rotate_left(29);
    mix64(x)
}

/// A 64-bit finaliser (splitmix64).
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

/// Unpacks a non-empty slot into (row index, fingerprint).
#[must_use]
pub const fn unpack_slot(slot: u64) -> (usize, u32) {
    (((slot & 0xffff_ffff) - 1) as usize, (slot >> 32) as u32)
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

/// A names table: header page then `1 << log2` u64 slots, each
/// `(string_id + 1) | fingerprint << 32`, packed with [`pack_slot`].
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct NamesHeader {
    /// [`NAMES_MAGIC`].
    pub magic: [u8; 8],
    /// [`INDEX_VERSION`].
    pub version: U32,
    /// log2 of slots.
    pub log2: U32,
    /// Table number (file `names-{n:04}`).
    pub table: U64,
    /// CRC-32 of bytes 0..24.
    pub crc: U32,
    /// Reserved.
    pub reserved: U32,
}

impl NamesHeader {
    /// A header with its CRC.
    #[must_use]
    pub fn new(log2: u32, table: u64) -> Self {
        let mut h = Self { magic: NAMES_MAGIC, version: INDEX_VERSION.into(), log2: log2.into(), table: table.into(), crc: 0.into(), reserved: 0.into() };
        h.crc = crc32(&h.as_bytes()[..24]).into();
        h
    }
    /// Valid header of table `table`?
    #[must_use]
    pub fn check(&self, table: u64) -> bool {
        self.magic == NAMES_MAGIC && self.version.get() == INDEX_VERSION && self.table.get() == table && (4..=32).contains(&self.log2.get()) && crc32(&self.as_bytes()[..24]) == self.crc.get()
    }
}

/// Smallest names table (log2 slots).
pub const NAMES_MIN_LOG2: u32 = 14;
/// Kinds file: header page then 65536 × (head u64, count u64).
pub const KINDS_FILE_LEN: usize = PAGE + 65536 * 16;

/// `meta`: fixed header, then atomics, then two checkpoint copies.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct MetaHeader {
    /// [`META_MAGIC`].
    pub magic: [u8; 8],
    /// [`INDEX_VERSION`].
    pub version: U32,
    /// log2 rows per chunk.
    pub chunk_log2: U32,
    /// Generation number (directory `index/gen-{n:08}`).
    pub generation: U64,
    /// CRC-32 of bytes 0..24.
    pub crc: U32,
    /// Reserved.
    pub reserved: U32,
}

impl MetaHeader {
    /// A header with its CRC.
    #[must_use]
    pub fn new(chunk_log2: u32, generation: u64) -> Self {
        let mut h = Self { magic: META_MAGIC, version: INDEX_VERSION.into(), chunk_log2: chunk_log2.into(), generation: generation.into(), crc: 0.into(), reserved: 0.into() };
        h.crc = crc32(&h.as_bytes()[..24]).into();
        h
    }
}
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
        [a, b].into_iter().flatten().filter(Self::valid).max_by_key(|c| c.counter.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn slots_round_trip() {
        let h = id_hash(0x1234_5678_9abc_def0_0fed_cba9_8765_4321);
        let s = pack_slot(77, h);
        assert_ne!(s, 0);
        assert_eq!(unpack_slot(s), (77, fingerprint(h)));
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
        assert_eq!(Checkpoint::newest(Some(old), Some(c)).unwrap().watermark.get(), 10);
        let mut bad = c;
        bad.watermark = 11.into();
        assert_eq!(Checkpoint::newest(Some(old), Some(bad)).unwrap().counter.get(), 1);
    }
}
