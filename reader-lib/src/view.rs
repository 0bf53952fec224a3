//! One attached instance: its gate, its index generation and lazily mapped
//! files. A view never changes what it maps; a daemon restart makes a new view.
#![forbid(unsafe_code)]

use crate::error::{AttachError, ReadError};
use crate::gate::{Gate, mismatch};
use crate::lazy::LazyTable;
use crate::map::{Dir, Mapped};
use crate::memfit;
use crate::prefixes::PrefixCache;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Mutex, OnceLock};
use weir_protocol::index::{
    CHUNK_MAGIC, ChunkGeometry, FileHeader, HeaderError, INDEX_VERSION, KINDS_FILE_LEN,
    KINDS_MAGIC, META_MAGIC, META_NAMES_TABLE_OFF, META_STRINGS_END_OFF, NAMES_MAGIC, PAGE,
    RANGE_RECORD_LEN, RANGES_COUNT_OFF, RANGES_FILE_LEN, RANGES_MAGIC, ROW_LEN, Row,
    STRINGS_FILE_LEN, STRINGS_FILE_LOG2, STRINGS_MAGIC, parse_range_record, ranges_record,
};
use weir_protocol::locate::unpack_position;
use weir_protocol::segment::{SEGMENT_HEADER_LEN, SegmentHeader, Trailer};
use zerocopy::FromBytes;
use zerocopy::little_endian::{U16, U32};

/// Largest names table (log2 slots) a reader maps.
const NAMES_MAX_LOG2: u32 = 32;

/// Chunk files a view can address.
const MAX_CHUNKS: usize = 1 << 20;
/// Segment files a view can address.
const MAX_SEGMENTS: usize = 1 << 20;
/// Strings files: string ids are u32, so global offsets stay below 2^35.
const MAX_STRINGS_FILES: usize = 1 << (35 - 26);
/// Names tables a view can address.
const MAX_NAMES_TABLES: usize = 64;

/// A names table: its mapping and slot count.
#[derive(Debug)]
pub(crate) struct NamesTable {
    pub(crate) map: Mapped,
    pub(crate) log2: u32,
}

/// The kind, scope-id and entity-id cells of one chunk's published rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Columns<'a> {
    pub(crate) kinds: &'a [U16],
    pub(crate) scopes: &'a [U32],
    pub(crate) entities: &'a [U32],
}

/// Gate + generation + lazily mapped files of one daemon instance.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) gate: Gate,
    pub(crate) geo: ChunkGeometry,
    dir: PathBuf,
    /// The index generation's directory and `segments/`, held open from
    /// the attach: files mapped later come from the store attached to,
    /// whatever the paths name by then. The generation's directory is
    /// `flock`ed shared, which keeps a daemon start from deleting it.
    gen_dir: Dir,
    segments_dir: Dir,
    meta: Mapped,
    kinds: OnceLock<Mapped>,
    /// The generation's `ranges` file, if it has a valid one.
    ranges: OnceLock<Option<Mapped>>,
    chunks: LazyTable<Mapped>,
    segments: LazyTable<Mapped>,
    /// Whether segments are mapped with huge pages (`memfit`).
    huge_pages: memfit::HugePages,
    /// Per segment the log has moved past: one past the largest sequence a
    /// live frame in it can hold (see `seq_limit`).
    seq_limits: LazyTable<u64>,
    strings: LazyTable<Mapped>,
    /// One bit per 8 bytes of strings: set once the entry starting there
    /// passed its checksum (entries never change, so once is enough).
    pub(crate) names_ok: LazyTable<Box<[AtomicU64]>>,
    names: LazyTable<NamesTable>,
    /// The entity ids of the prefixes plain queries asked for last.
    pub(crate) prefixes: Mutex<PrefixCache>,
}

impl View {
    /// Maps `dir/gate` and the generation's `meta`, validating both. Every
    /// other file is mapped on first use, so this is O(1) in the events.
    pub(crate) fn open(dir: &Path) -> Result<Self, AttachError> {
        let huge_pages = memfit::HugePages::from_env()?;
        let gate = Gate::open(&dir.join("gate"))?;
        let generation = gate.header.generation.get();
        let log2 = gate.header.chunk_log2.get();
        // Locked shared for the view's life, so that a later daemon start
        // leaves the generation's files for its lazy mappings.
        let gen_dir = Dir::open_shared(dir.join("index").join(format!("gen-{generation:08}")))?;
        let segments_dir = Dir::open(dir.join("segments"))?;
        let meta = gen_dir.map(&gen_dir.join("meta"), Some(PAGE as u64), PAGE as u64)?;
        file_header(&meta, META_MAGIC, Some(log2), generation)?;
        Ok(Self {
            gate,
            geo: ChunkGeometry { log2 },
            dir: dir.to_owned(),
            gen_dir,
            segments_dir,
            meta,
            kinds: OnceLock::new(),
            ranges: OnceLock::new(),
            chunks: LazyTable::new(MAX_CHUNKS),
            segments: LazyTable::new(MAX_SEGMENTS),
            huge_pages,
            seq_limits: LazyTable::new(MAX_SEGMENTS),
            strings: LazyTable::new(MAX_STRINGS_FILES),
            names_ok: LazyTable::new(
                MAX_STRINGS_FILES << (STRINGS_FILE_LOG2 - NAMES_OK_BLOCK_LOG2),
            ),
            names: LazyTable::new(MAX_NAMES_TABLES),
            prefixes: Mutex::default(),
        })
    }

    /// Whether `gate` in the data directory is now another file than the
    /// one this view mapped: a daemon started since (its gate renamed into
    /// place), or the store deleted and created anew, or a copy put in its
    /// place. One `stat`; a missing gate is no replacement (yet).
    pub(crate) fn gate_replaced(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.dir.join("gate"))
            .is_ok_and(|m| (m.dev(), m.ino()) != self.gate.file_id())
    }

    fn meta_word(&self, off: usize) -> u64 {
        let v = self
            .meta
            .atomic_u64(off)
            .map_or(0, |a| a.load(Ordering::Relaxed));
        // SYNC: pairs with the daemon's Release stores of the strings end and
        // the names table number (FORMAT.md write order, step 1).
        fence(Ordering::Acquire);
        v
    }

    /// Global end offset of the strings written so far.
    pub(crate) fn strings_end(&self) -> u64 {
        self.meta_word(META_STRINGS_END_OFF)
    }

    /// The current names table.
    pub(crate) fn names_table(&self) -> Result<&NamesTable, ReadError> {
        let t = self.meta_word(META_NAMES_TABLE_OFF);
        let path = || self.gen_dir.join(format!("names-{t:04}"));
        let init = |path: &Path| -> Result<NamesTable, AttachError> {
            let map = self.gen_dir.map(path, None, PAGE as u64)?;
            let log2 = file_header(&map, NAMES_MAGIC, None, t)?.param.get();
            if log2 > NAMES_MAX_LOG2 {
                return Err(mismatch(
                    path,
                    "log2 slots",
                    NAMES_MAX_LOG2.into(),
                    log2.into(),
                ));
            }
            let want = (PAGE as u64) + (8u64 << log2);
            if map.len() as u64 != want {
                return Err(AttachError::Length {
                    path: path.to_owned(),
                    expected: want,
                    found: map.len() as u64,
                });
            }
            Ok(NamesTable { map, log2 })
        };
        lazy(&self.names, t, path, init)
    }

    /// Strings file `n`.
    pub(crate) fn strings_file(&self, n: u64) -> Result<&Mapped, ReadError> {
        let path = || self.gen_dir.join(format!("strings-{n:04}"));
        let init = |path: &Path| -> Result<Mapped, AttachError> {
            let map = self
                .gen_dir
                .map(path, Some(STRINGS_FILE_LEN as u64), PAGE as u64)?;
            file_header(&map, STRINGS_MAGIC, Some(0), n)?;
            Ok(map)
        };
        lazy(&self.strings, n, path, init)
    }

    /// The `kinds` file.
    fn kinds(&self) -> Result<&Mapped, ReadError> {
        if let Some(m) = self.kinds.get() {
            return Ok(m);
        }
        let path = self.gen_dir.join("kinds");
        let len = Some(KINDS_FILE_LEN as u64);
        let map = self.gen_dir.map(&path, len, KINDS_FILE_LEN as u64)?;
        file_header(&map, KINDS_MAGIC, Some(0), 0)?;
        Ok(self.kinds.get_or_init(|| map))
    }

    /// A kind's head (newest sequence + 1) and count: atomics, possibly
    /// ahead of `visible`.
    pub(crate) fn kind_head(&self, kind: u16) -> Result<(u64, u64), ReadError> {
        let k = self.kinds()?;
        let off = PAGE + 16 * usize::from(kind);
        let load = |o| {
            k.atomic_u64(o)
                .map_or(0, |a: &AtomicU64| a.load(Ordering::Relaxed))
        };
        let (head, count) = (load(off), load(off + 8));
        // SYNC: pairs with the daemon's Release stores of heads, made after
        // the rows they name were written.
        fence(Ordering::Acquire);
        Ok((head, count))
    }

    /// Chunk file `c`, mapped and validated on first use.
    pub(crate) fn chunk(&self, c: u64) -> Result<&Mapped, ReadError> {
        let path = || self.gen_dir.join(format!("chunk-{c:06}"));
        let geo = self.geo;
        let init = |path: &Path| -> Result<Mapped, AttachError> {
            let len = geo.file_len() as u64;
            let map = self.gen_dir.map(path, Some(len), len)?;
            file_header(&map, CHUNK_MAGIC, Some(geo.log2), c)?;
            Ok(map)
        };
        lazy(&self.chunks, c, path, init)
    }

    /// The row of `seq`, CRC- and self-checked. The caller has made the row
    /// immutable for itself: `seq < visible`, or reached through a head,
    /// slot or link it loaded with acquire ordering.
    pub(crate) fn row(&self, seq: u64) -> Result<&Row, ReadError> {
        let (c, i) = self.geo.locate(seq);
        let chunk = self.chunk(c)?;
        let bytes =
            chunk
                .published(self.geo.row_offset(i), ROW_LEN)
                .ok_or(ReadError::CorruptRow {
                    sequence: seq,
                    what: "row outside its chunk file",
                })?;
        let row = Row::ref_from_bytes(bytes).map_err(|_| ReadError::CorruptRow {
            sequence: seq,
            what: "short row",
        })?;
        if !row.crc_ok() {
            return Err(ReadError::CorruptRow {
                sequence: seq,
                what: "checksum mismatch",
            });
        }
        if row.sequence.get() != seq {
            return Err(ReadError::CorruptRow {
                sequence: seq,
                what: "sequence field names another row",
            });
        }
        Ok(row)
    }

    /// The first `rows` cells of chunk `c`'s columns. Every cell must be
    /// below the caller's `visible`.
    pub(crate) fn columns(&self, c: u64, rows: usize) -> Result<Columns<'_>, ReadError> {
        let chunk = self.chunk(c)?;
        let geo = self.geo;
        let bad = || ReadError::CorruptTable {
            path: chunk.path().to_owned(),
            what: "column out of bounds",
        };
        let rows = rows.min(geo.rows());
        let kinds = chunk
            .published(geo.kinds_offset(), rows * 2)
            .ok_or_else(bad)?;
        let scopes = chunk
            .published(geo.scopes_offset(), rows * 4)
            .ok_or_else(bad)?;
        let entities = chunk
            .published(geo.entities_offset(), rows * 4)
            .ok_or_else(bad)?;
        Ok(Columns {
            kinds: <[U16]>::ref_from_bytes(kinds).map_err(|_| bad())?,
            scopes: <[U32]>::ref_from_bytes(scopes).map_err(|_| bad())?,
            entities: <[U32]>::ref_from_bytes(entities).map_err(|_| bad())?,
        })
    }

    /// Asks the CPU to fetch the start of a frame (header, names and the
    /// payload's first bytes; a longer payload is read in sequence, which
    /// the CPU prefetches itself). A hint only: see [`Self::prefetch_frame_at`].
    pub(crate) fn prefetch_frame(&self, row: &Row) {
        self.prefetch_frame_at(
            u64::from(row.segment_id.get()),
            row.frame_offset.get(),
            row.frame_len.get() as usize,
        );
    }

    /// Asks the CPU to fetch every cache line that the first `len` bytes
    /// (at most [`FRAME_PREFETCH_BYTES`]) of the frame at `offset` of
    /// `segment` touch, from the line the frame starts in. A hint only: a
    /// segment this view has not mapped yet is left alone (mapping it is a
    /// syscall the caller may never need).
    pub(crate) fn prefetch_frame_at(&self, segment: u64, offset: u64, len: usize) {
        let (Some(map), Ok(off)) = (self.segments.get(segment), usize::try_from(offset)) else {
            return;
        };
        let end = off.saturating_add(len.clamp(1, FRAME_PREFETCH_BYTES));
        for line in (off & !63..end).step_by(64) {
            map.prefetch(line);
        }
    }

    /// For a segment `id` the log has moved past (a later one holds
    /// published frames): one past the largest sequence a live frame in it
    /// can hold. A sealed segment (valid trailer) holds only live frames:
    /// `u64::MAX`. An unsealed one was left by a crash, and intact frames of
    /// its torn last batch may follow the live ones, with sequences that the
    /// next segment (whose base sequence is returned) gave to other events.
    /// Worked out once per segment. `None` if a file does not validate.
    pub(crate) fn seq_limit(&self, id: u64) -> Option<u64> {
        if let Some(&limit) = self.seq_limits.get(id) {
            return Some(limit);
        }
        let map = self.segment(id).ok()?;
        // SYNC: the log has moved past this segment, so its bytes are final.
        let limit = if Trailer::parse(map.published(0, map.len())?).is_some() {
            u64::MAX
        } else {
            let next = self.segment(id + 1).ok()?;
            let head = next.published(0, SEGMENT_HEADER_LEN)?;
            SegmentHeader::ref_from_bytes(head).ok()?.base_seq.get()
        };
        self.seq_limits
            .get_or_try_init(id, || Ok::<_, ()>(limit))?
            .ok()
            .copied()
    }

    /// Starts fetching the row of `seq` (both of its cache lines) if its
    /// chunk is mapped already: a hint, nothing is read.
    pub(crate) fn prefetch_row(&self, seq: u64) {
        let (c, i) = self.geo.locate(seq);
        if let Some(chunk) = self.chunks.get(c) {
            self.prefetch_row_in(chunk, i);
        }
    }

    /// Starts fetching row `i` of `chunk` (both of its cache lines).
    pub(crate) fn prefetch_row_in(&self, chunk: &Mapped, i: usize) {
        let off = self.geo.row_offset(i);
        chunk.prefetch(off);
        chunk.prefetch(off + ROW_LEN - 1);
    }

    /// Id-table slot `i` of chunk `c` (Relaxed load; the caller fences).
    pub(crate) fn id_slot(&self, chunk: &Mapped, i: usize) -> u64 {
        chunk
            .atomic_u64(self.geo.id_slot_offset(i))
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// `Some((min, max))` event ids of chunk `c` if it is sealed and the
    /// generation's `ranges` file holds its CRC-checked record (no need to
    /// map the chunk, so a first lookup costs the same whatever the number
    /// of chunks); `None` otherwise, and the chunk is probed. The chunk's
    /// own header also holds `sealed` and the range, but without a
    /// checksum: one damaged byte there would hide the chunk's events, so
    /// it is not read. The newest chunk (`c == last`, the one `visible`
    /// falls in) is always probed: it is sealed only in the moment it is
    /// exactly full.
    pub(crate) fn chunk_range(&self, c: u64, last: u64) -> Result<Option<(u128, u128)>, ReadError> {
        if c >= last {
            self.chunk(c)?;
            return Ok(None);
        }
        if let Some(r) = self.ranges() {
            let count = r
                .atomic_u64(RANGES_COUNT_OFF)
                .map_or(0, |a| a.load(Ordering::Relaxed));
            // SYNC: pairs with the daemon's Release store of the count after
            // it wrote the records below it (never written again).
            fence(Ordering::Acquire);
            // A record that fails its check is ignored: the chunk is probed.
            let range = usize::try_from(c)
                .ok()
                .filter(|&c| (c as u64) < count)
                .and_then(|i| r.published(ranges_record(i), RANGE_RECORD_LEN))
                .and_then(|rec| parse_range_record(c, rec));
            if range.is_some() {
                return Ok(range);
            }
        }
        self.chunk(c)?;
        Ok(None)
    }

    /// The `ranges` file, mapped on first use; `None` if the generation has
    /// none (written by an older daemon) or it does not validate: lookups
    /// then probe every chunk.
    fn ranges(&self) -> Option<&Mapped> {
        self.ranges
            .get_or_init(|| {
                let len = RANGES_FILE_LEN as u64;
                let map = self
                    .gen_dir
                    .map(&self.gen_dir.join("ranges"), Some(len), len)
                    .ok()?;
                let generation = self.gate.header.generation.get();
                file_header(&map, RANGES_MAGIC, Some(self.geo.log2), generation).ok()?;
                Some(map)
            })
            .as_ref()
    }

    /// Segment `id`, mapped whole and validated on first use.
    pub(crate) fn segment(&self, id: u64) -> Result<&Mapped, ReadError> {
        let path = || self.segments_dir.join(format!("{id:010}.seg"));
        let init = |path: &Path| -> Result<Mapped, AttachError> {
            let map = self.segments_dir.map(path, None, 64)?;
            // Before the first fault: cold pages then come in as 2 MiB
            // folios, while the store fits in memory (see `memfit`).
            let (last, _) = unpack_position(self.gate.published());
            let store_bytes = (last.max(id) + 1).saturating_mul(map.len() as u64);
            if self.huge_pages.pay(store_bytes) {
                map.advise_huge_pages();
            }
            let head = map.published(0, 64).ok_or_else(|| short(path, &map, 64))?;
            let h = SegmentHeader::parse(head).map_err(|e| match e {
                weir_protocol::segment::FrameError::BadMagic => AttachError::BadMagic {
                    path: path.to_owned(),
                    expected: weir_protocol::segment::SEGMENT_MAGIC,
                    found: head[..8].try_into().unwrap_or_default(),
                },
                weir_protocol::segment::FrameError::UnsupportedVersion { found } => {
                    AttachError::UnsupportedVersion {
                        path: path.to_owned(),
                        expected: weir_protocol::segment::SEGMENT_VERSION,
                        found,
                    }
                }
                weir_protocol::segment::FrameError::Checksum {
                    stored, computed, ..
                } => AttachError::Checksum {
                    path: path.to_owned(),
                    stored,
                    computed,
                },
                _ => short(path, &map, 64),
            })?;
            if h.segment_id.get() != id {
                return Err(mismatch(path, "segment id", id, h.segment_id.get()));
            }
            if h.file_len.get() != map.len() as u64 {
                return Err(AttachError::Length {
                    path: path.to_owned(),
                    expected: h.file_len.get(),
                    found: map.len() as u64,
                });
            }
            Ok(map)
        };
        lazy(&self.segments, id, path, init)
    }
}

/// Bytes of a frame's start that a prefetch fetches: a bench-shaped frame
/// (~300 bytes) whole; it spans up to six cache lines.
pub(crate) const FRAME_PREFETCH_BYTES: usize = 320;

/// log2 of the strings bytes one `names_ok` block covers (512 words × 64 bits × 8 bytes).
pub(crate) const NAMES_OK_BLOCK_LOG2: u32 = 18;

/// The mapping at `i` of `table`; on a miss, `path()` names the file and
/// `init(path)` maps it. The hit path allocates nothing (it runs per query).
fn lazy<T>(
    table: &LazyTable<T>,
    i: u64,
    path: impl FnOnce() -> PathBuf,
    init: impl FnOnce(&Path) -> Result<T, AttachError>,
) -> Result<&T, ReadError> {
    if let Some(v) = table.get(i) {
        return Ok(v);
    }
    let path = path();
    match table.get_or_try_init(i, || init(&path)) {
        Some(r) => r.map_err(ReadError::from),
        None => Err(ReadError::CorruptTable {
            path,
            what: "file number beyond what a reader addresses",
        }),
    }
}

/// Parses and checks an index file's header (written before anything
/// published names the file, never rewritten).
fn file_header(
    map: &Mapped,
    magic: [u8; 8],
    param: Option<u32>,
    number: u64,
) -> Result<FileHeader, AttachError> {
    let path = map.path();
    let bytes = map
        .published(0, size_of::<FileHeader>())
        .ok_or_else(|| short(path, map, size_of::<FileHeader>()))?;
    FileHeader::parse(bytes, magic, param, number).map_err(|e| match e {
        HeaderError::BadMagic { expected, found } => AttachError::BadMagic {
            path: path.to_owned(),
            expected,
            found,
        },
        HeaderError::UnsupportedVersion { found } => AttachError::UnsupportedVersion {
            path: path.to_owned(),
            expected: INDEX_VERSION,
            found,
        },
        HeaderError::Checksum => {
            let stored = le32(&bytes[24..28]);
            AttachError::Checksum {
                path: path.to_owned(),
                stored,
                computed: weir_protocol::crc32(&bytes[..24]),
            }
        }
        HeaderError::Mismatch {
            field,
            expected,
            found,
        } => mismatch(path, field, expected, found),
        _ => short(path, map, size_of::<FileHeader>()),
    })
}

fn short(path: &Path, map: &Mapped, want: usize) -> AttachError {
    AttachError::Length {
        path: path.to_owned(),
        expected: want as u64,
        found: map.len() as u64,
    }
}

pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or_default())
}
