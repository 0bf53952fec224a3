//! The index publisher: writes rows, columns, id slots, names and heads for
//! each sequence before the gate publishes it (FORMAT.md, "Write order").

mod names;
mod prefault;

use crate::fxhash::FxHashMap;
use crate::mapped::MappedFile;
pub use names::Names;
use prefault::Prefaulter;
use rayon::prelude::*;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use weir_protocol::index::{
    CHUNK_MAGIC, CHUNK_MAX_ID_OFF, CHUNK_MIN_ID_OFF, CHUNK_SEALED_OFF, Checkpoint, ChunkGeometry,
    ENTITY_JUMP, FileHeader, KINDS_FILE_LEN, KINDS_MAGIC, META_CHECKPOINT_OFFS, META_MAGIC,
    NO_NAME, NS_ENTITY, NS_SCOPE, PAGE, RANGE_RECORD_LEN, RANGES_CAP, RANGES_COUNT_OFF,
    RANGES_FILE_LEN, RANGES_MAGIC, ROW_LEN, Row, fingerprint, id_hash, pack_slot,
    parse_range_record, range_record, ranges_record, unpack_slot,
};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Path of generation `g` under a data directory.
#[must_use]
pub fn generation_dir(data_dir: &Path, g: u64) -> PathBuf {
    data_dir.join("index").join(format!("gen-{g:08}"))
}

/// One event as the index stores it.
#[derive(Debug, Clone, Copy)]
pub struct IndexedEvent<'a> {
    /// Sequence.
    pub seq: u64,
    /// Event id.
    pub event_id: u128,
    /// Correlation id.
    pub correlation_id: u128,
    /// Causation id.
    pub causation_id: Option<u128>,
    /// Wall time.
    pub wall_ms: u64,
    /// Entity name.
    pub entity: &'a [u8],
    /// The entity name's string id when the caller knows it (from an
    /// earlier `put_event` of the same name); `None` interns `entity`.
    pub entity_id: Option<u32>,
    /// Scope name.
    pub scope: &'a [u8],
    /// Kind.
    pub kind: u16,
    /// Clock.
    pub clock: u32,
    /// Segment id.
    pub segment_id: u32,
    /// Frame offset.
    pub frame_offset: u64,
    /// Frame length.
    pub frame_len: u32,
    /// Last of its batch?
    pub batch_end: bool,
}

/// Heads and counts of one kept chunk's columns.
#[derive(Default)]
struct ChunkCounts {
    names: FxHashMap<u32, (u64, u64)>,
    kinds: FxHashMap<u16, (u64, u64)>,
    cancelled: Vec<(u64, u64)>,
    tombstones: u64,
}

impl ChunkCounts {
    /// Counts the rows of a chunk from `base`: `[kinds, scopes, entities]`.
    fn of(base: u64, [kind_col, scope_col, entity_col]: &[&[u8]; 3]) -> Self {
        let u32s = |b: &[u8], i: usize| {
            u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"))
        };
        let mut out = Self::default();
        for i in 0..kind_col.len() / 2 {
            let seq = base + i as u64;
            let entity = u32s(entity_col, i);
            if entity == NO_NAME {
                weir_protocol::gate::merge_range(&mut out.cancelled, seq, seq + 1);
                out.tombstones += 1;
                continue;
            }
            for id in [entity, u32s(scope_col, i)] {
                let e = out.names.entry(id).or_default();
                *e = (seq + 1, e.1 + 1);
            }
            let kind = u16::from_le_bytes([kind_col[2 * i], kind_col[2 * i + 1]]);
            let e = out.kinds.entry(kind).or_default();
            *e = (seq + 1, e.1 + 1);
        }
        out
    }
}

/// What [`IndexWriter::adopt`] found in the chunks it kept.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Cancelled ranges (tombstone rows) below the kept rows' end.
    pub cancelled: Vec<(u64, u64)>,
    /// Tombstone rows kept.
    pub tombstones: u64,
    /// The segment holding the newest kept event's frame.
    pub last_segment: Option<u32>,
}

/// The daemon's writable view of one index generation.
#[derive(Debug)]
pub struct IndexWriter {
    dir: PathBuf,
    generation: u64,
    geo: ChunkGeometry,
    meta: MappedFile,
    kinds: MappedFile,
    /// The sealed chunks' id ranges, for readers (see [`Self::publish_ranges`]).
    ranges: MappedFile,
    chunks: Vec<Arc<MappedFile>>,
    /// Faults the rows and columns just ahead of the writer in.
    prefault: Prefaulter,
    /// (chunk, row) up to which the prefault thread was asked.
    prefault_at: (usize, usize),
    /// Running (min, max) event id per chunk, for sealing.
    id_ranges: Vec<(u128, u128)>,
    sealed: usize,
    names: Names,
    checkpoint_counter: u64,
    /// The newest sequences of recently written entities' chains, for the
    /// rows' `entity_jump` hints (see [`Recent`]).
    recent: crate::namekey::Sharded<u32, Recent>,
    /// The data directory, checked before each file made in `dir` once
    /// the daemon runs (`home.rs`).
    home: Option<crate::home::Home>,
}

/// Entities whose newest sequences [`IndexWriter`] keeps (≈ 80 bytes each
/// in a hash map, so at most ≈ 42 MiB); past that it forgets them all and reads them down
/// the chains again as they come back (eight row reads per entity). A store
/// whose writes cycle through more entities than this pays those reads on
/// most events.
const RECENT_ENTITIES: usize = 1 << 18;

/// The newest [`ENTITY_JUMP`] sequences of one entity's chain, oldest at
/// `next` once full: a function of the chain alone, so every restore path
/// writes the same `entity_jump` values.
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    seqs: [u64; ENTITY_JUMP],
    len: u8,
    next: u8,
}

impl Recent {
    /// The hint for a new row at `seq`: the distance to the row
    /// `ENTITY_JUMP` links down the chain, 0 when there is none or it does
    /// not fit in 32 bits.
    fn jump(&self, seq: u64) -> u32 {
        if usize::from(self.len) < ENTITY_JUMP {
            return 0;
        }
        seq.checked_sub(self.seqs[usize::from(self.next)])
            .and_then(|d| u32::try_from(d).ok())
            .unwrap_or(0)
    }

    fn push(&mut self, seq: u64) {
        self.seqs[usize::from(self.next)] = seq;
        self.next = ((usize::from(self.next) + 1) % ENTITY_JUMP) as u8;
        self.len = (self.len + 1).min(ENTITY_JUMP as u8);
    }
}

impl IndexWriter {
    /// Creates a new, empty generation directory.
    pub fn create(data_dir: &Path, generation: u64, log2: u32) -> io::Result<Self> {
        let dir = generation_dir(data_dir, generation);
        if dir.exists() {
            // A half-built generation from a start that died: never published.
            std::fs::remove_dir_all(&dir)?;
        }
        // Its name is durable on return (`create_dir_all` syncs the parent):
        // it must outlive a power loss once the gate names this generation
        // (its crash checkpoint lives in it).
        crate::modes::create_dir_all(&dir)?;
        let meta = MappedFile::create(&dir.join("meta"), PAGE)?;
        meta.write(0, FileHeader::new(META_MAGIC, log2, generation).as_bytes());
        let kinds = MappedFile::create(&dir.join("kinds"), KINDS_FILE_LEN)?;
        kinds.write(0, FileHeader::new(KINDS_MAGIC, 0, 0).as_bytes());
        let ranges = new_ranges(&dir.join("ranges"), log2, generation)?;
        let names = Names::create(&dir, &meta)?;
        Ok(Self {
            dir,
            generation,
            geo: ChunkGeometry { log2 },
            meta,
            kinds,
            ranges,
            chunks: Vec::new(),
            prefault: Prefaulter::default(),
            prefault_at: (usize::MAX, 0),
            id_ranges: Vec::new(),
            sealed: 0,
            names,
            checkpoint_counter: 0,
            recent: Default::default(),
            home: None,
        })
    }

    /// Re-opens an existing generation whose checkpoint `cp` is trusted.
    pub fn open(data_dir: &Path, generation: u64, log2: u32, cp: &Checkpoint) -> io::Result<Self> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let dir = generation_dir(data_dir, generation);
        let meta = MappedFile::open(&dir.join("meta"), PAGE)?;
        FileHeader::parse(meta.read(0, 32), META_MAGIC, Some(log2), generation)
            .map_err(|e| invalid(format!("meta: {e}")))?;
        let kinds = MappedFile::open(&dir.join("kinds"), KINDS_FILE_LEN)?;
        FileHeader::parse(kinds.read(0, 32), KINDS_MAGIC, Some(0), 0)
            .map_err(|e| invalid(format!("kinds: {e}")))?;
        let geo = ChunkGeometry { log2 };
        let watermark = cp.watermark.get();
        let nchunks = watermark.div_ceil(geo.rows() as u64) as usize;
        let mut chunks = Vec::with_capacity(nchunks);
        let mut id_ranges = Vec::with_capacity(nchunks);
        let mut sealed = 0;
        for c in 0..nchunks {
            let f = MappedFile::open(&dir.join(format!("chunk-{c:06}")), geo.file_len())?;
            FileHeader::parse(f.read(0, 32), CHUNK_MAGIC, Some(log2), c as u64)
                .map_err(|e| invalid(format!("chunk-{c:06}: {e}")))?;
            let range = if let Some(range) = sealed_range(&f) {
                sealed = c + 1;
                range
            } else {
                let rows =
                    (watermark - (c as u64) * geo.rows() as u64).min(geo.rows() as u64) as usize;
                let mut r = (u128::MAX, 0);
                for i in 0..rows {
                    let row =
                        Row::read_from_bytes(f.read(geo.row_offset(i), ROW_LEN)).expect("row size");
                    if !row.is_cancelled() {
                        r = (r.0.min(row.id()), r.1.max(row.id()));
                    }
                }
                r
            };
            chunks.push(Arc::new(f));
            id_ranges.push(range);
        }
        let names = Names::open(&dir, cp.strings_end.get(), cp.names_table.get(), &meta)?;
        // A generation written before `ranges` existed gets one now, and a
        // damaged one is written again: the chunk headers are the authority.
        let path = dir.join("ranges");
        let ranges = match check_ranges(&path, log2, generation, &id_ranges[..sealed]) {
            Ok(f) => f,
            Err(why) => {
                tracing::warn!(%why, path = %path.display(), "writing the index ranges file again from the chunk headers");
                replace_ranges(&dir, log2, generation, &id_ranges[..sealed])?
            }
        };
        let w = Self {
            dir,
            generation,
            geo,
            meta,
            kinds,
            ranges,
            chunks,
            prefault: Prefaulter::default(),
            prefault_at: (usize::MAX, 0),
            id_ranges,
            sealed,
            names,
            checkpoint_counter: cp.counter.get(),
            recent: Default::default(),
            home: None,
        };
        w.publish_ranges();
        Ok(w)
    }

    /// Creates generation `generation` from the first `chunks` chunks of
    /// generation `old`, which must be sealed (they are immutable, so they
    /// are hard-linked, not copied), and from the strings of `old` that
    /// those chunks use, all below `strings_end` (interned again in order,
    /// so every string id stays);
    /// then sets each name's and kind's head and count from the kept
    /// chunks' columns. Restore replays the rest of the log on top.
    pub fn adopt(
        data_dir: &Path,
        old: u64,
        generation: u64,
        log2: u32,
        chunks: usize,
        strings_end: u64,
    ) -> io::Result<(Self, Adopted)> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let at = |p: &Path| {
            let p = p.to_owned();
            move |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()))
        };
        let mut w = Self::create(data_dir, generation, log2)?;
        let old_dir = generation_dir(data_dir, old);
        let geo = w.geo;
        for c in 0..chunks {
            let name = format!("chunk-{c:06}");
            let path = w.dir.join(&name);
            std::fs::hard_link(old_dir.join(&name), &path).map_err(at(&old_dir.join(&name)))?;
            let f = MappedFile::open(&path, geo.file_len()).map_err(at(&path))?;
            FileHeader::parse(f.read(0, 32), CHUNK_MAGIC, Some(log2), c as u64)
                .map_err(|e| invalid(format!("{name}: {e}")))?;
            let range = sealed_range(&f).ok_or_else(|| invalid(format!("{name} is not sealed")))?;
            w.id_ranges.push(range);
            w.chunks.push(Arc::new(f));
        }
        w.sealed = chunks;
        w.publish_ranges();
        // Each chunk's columns are counted on its own (in parallel), then
        // merged in order: later heads win, counts add up.
        let n = geo.rows();
        let columns: Vec<[&[u8]; 3]> = w
            .chunks
            .iter()
            .map(|f| {
                [
                    f.read(geo.kinds_offset(), 2 * n),
                    f.read(geo.scopes_offset(), 4 * n),
                    f.read(geo.entities_offset(), 4 * n),
                ]
            })
            .collect();
        let parts: Vec<ChunkCounts> = columns
            .par_iter()
            .enumerate()
            .map(|(c, cols)| ChunkCounts::of((c as u64) << log2, cols))
            .collect();
        let mut names: FxHashMap<u32, (u64, u64)> = FxHashMap::default();
        let mut kinds: FxHashMap<u16, (u64, u64)> = FxHashMap::default();
        let mut adopted = Adopted::default();
        for part in parts {
            for (id, (head, count)) in part.names {
                let e = names.entry(id).or_default();
                *e = (head, e.1 + count);
            }
            for (kind, (head, count)) in part.kinds {
                let e = kinds.entry(kind).or_default();
                *e = (head, e.1 + count);
            }
            for (a, b) in part.cancelled {
                weir_protocol::gate::merge_range(&mut adopted.cancelled, a, b);
            }
            adopted.tombstones += part.tombstones;
        }
        // Names are interned in sequence order, so the names the kept rows
        // use are exactly the strings up to the newest of them: interning
        // just those gives every later name the id a full rebuild gives it.
        let last = names.keys().max().map_or(0, |&id| u64::from(id) * 8);
        if last >= strings_end {
            return Err(invalid(format!(
                "a kept row names the string at {last}, past the checkpoint's strings end {strings_end}"
            )));
        }
        let known = w.names.copy_from(&old_dir, last + 1, &w.meta)?;
        for (&id, &(head, count)) in &names {
            if !known.contains(&id) {
                return Err(invalid(format!(
                    "a kept row names string id {id}, which starts no string entry"
                )));
            }
            w.names.set(id, head, count);
        }
        for (&kind, &(head, count)) in &kinds {
            // SYNC: Release, like put_event (nothing is published yet).
            w.kind_counter(kind, 0).store(head, Ordering::Release);
            w.kind_counter(kind, 8).store(count, Ordering::Release);
        }
        adopted.last_segment = (0..w.sealed_rows())
            .rev()
            .find_map(|seq| w.row(seq).filter(|r| !r.is_cancelled()))
            .map(|r| r.segment_id.get());
        Ok((w, adopted))
    }

    /// Rows below this are in sealed chunks.
    #[must_use]
    pub fn sealed_rows(&self) -> u64 {
        (self.sealed as u64) << self.geo.log2
    }

    /// This generation's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What a crash checkpoint at `to` must sync when the last one was at
    /// `from`: the chunks sealed in between and the strings files.
    #[must_use]
    pub fn checkpoint_files(&self, from: u64, to: u64) -> Vec<PathBuf> {
        let chunk = |seq: u64| (seq >> self.geo.log2) as usize;
        self.chunks[chunk(from)..chunk(to).min(self.sealed)]
            .iter()
            .map(|f| f.path().to_owned())
            .chain(self.names.strings_paths())
            .collect()
    }

    /// This generation's number.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Chunk geometry.
    #[must_use]
    pub fn geometry(&self) -> ChunkGeometry {
        self.geo
    }

    /// The names.
    #[must_use]
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Interns an entity or scope name.
    pub fn intern(&mut self, ns: u8, name: &[u8]) -> io::Result<u32> {
        self.names.intern(ns, name, &self.meta)
    }

    /// Creates the chunk files that the rows of every sequence below `end`
    /// go into. The writer calls it before it allocates the sequences: a
    /// file that cannot be created then refuses the append, while indexing
    /// after the frames are written could only stop the writer. The error
    /// comes with the path of the file that could not be created.
    pub fn reserve(&mut self, end: u64) -> Result<(), (PathBuf, io::Error)> {
        let Some(last) = end.checked_sub(1) else {
            return Ok(());
        };
        self.ensure_chunk(self.geo.locate(last).0 as usize)
            .map_err(|e| (self.chunk_path(self.chunks.len()), e))
    }

    fn chunk_path(&self, c: usize) -> PathBuf {
        self.dir.join(format!("chunk-{c:06}"))
    }

    /// From now on (the daemon runs), creates files only while `home`
    /// still names the data directory it named at the start.
    pub fn set_home(&mut self, home: crate::home::Home) {
        self.names.set_home(home.clone());
        self.home = Some(home);
    }

    /// Creates the chunk files up to chunk `c`.
    fn ensure_chunk(&mut self, c: usize) -> io::Result<()> {
        if self.chunks.len() <= c
            && let Some(home) = &self.home
        {
            home.check()?;
        }
        while self.chunks.len() <= c {
            let n = self.chunks.len();
            let path = self.chunk_path(n);
            // A chunk past every row of this generation: created ahead
            // (`reserve`) for an append that was then refused, before a
            // clean stop whose index files this start reuses. It holds no
            // published row.
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let f = MappedFile::create(&path, self.geo.file_len())?;
            f.write(
                0,
                FileHeader::new(CHUNK_MAGIC, self.geo.log2, n as u64).as_bytes(),
            );
            self.chunks.push(Arc::new(f));
            self.id_ranges.push((u128::MAX, 0));
        }
        Ok(())
    }

    /// Asks the prefault thread for the rows and columns up to two windows
    /// past row `i` of chunk `c` (see `prefault.rs`).
    fn prefault_ahead(&mut self, c: usize, i: usize) {
        /// Rows per request: 512 KiB of rows and 40 KiB of columns.
        const WINDOW: usize = 4096;
        let geo = self.geo;
        if self.prefault_at.0 != c || i > self.prefault_at.1 {
            self.prefault_at = (c, i - i % WINDOW);
        }
        let until = (i + 2 * WINDOW).min(geo.rows());
        while self.prefault_at.1 < until {
            let from = self.prefault_at.1;
            let n = WINDOW.min(geo.rows() - from);
            self.prefault.ask(
                &self.chunks[c],
                [
                    (geo.row_offset(from), n * ROW_LEN),
                    (geo.kinds_offset() + from * 2, n * 2),
                    (geo.scopes_offset() + from * 4, n * 4),
                    (geo.entities_offset() + from * 4, n * 4),
                ],
            );
            self.prefault_at.1 += n;
        }
    }

    fn write_cells(&mut self, seq: u64, row: &Row) -> io::Result<(usize, usize)> {
        let geo = self.geo;
        let (c, i) = geo.locate(seq);
        let c = c as usize;
        self.ensure_chunk(c)?;
        self.prefault_ahead(c, i);
        let f = &self.chunks[c];
        f.write(geo.row_offset(i), row.as_bytes());
        f.write(geo.kinds_offset() + i * 2, &row.kind.get().to_le_bytes());
        f.write(
            geo.scopes_offset() + i * 4,
            &row.scope_id.get().to_le_bytes(),
        );
        f.write(
            geo.entities_offset() + i * 4,
            &row.entity_id.get().to_le_bytes(),
        );
        Ok((c, i))
    }

    /// Writes the row, columns, id slot and heads of one event (unpublished);
    /// returns the entity's string id.
    pub fn put_event(&mut self, ev: &IndexedEvent<'_>) -> io::Result<u32> {
        let entity_id = match ev.entity_id {
            Some(id) => id,
            None => self.intern(NS_ENTITY, ev.entity)?,
        };
        debug_assert_eq!(self.names.name(entity_id), Some(ev.entity), "entity id");
        let scope_id = self.intern(NS_SCOPE, ev.scope)?;
        let prev_kind = self.kind_counter(ev.kind, 0).load(Ordering::Relaxed);
        let mut row = Row::new_zeroed();
        row.event_id = ev.event_id.to_le_bytes();
        row.correlation_id = ev.correlation_id.to_le_bytes();
        row.causation_id = ev.causation_id.unwrap_or(0).to_le_bytes();
        row.wall_ms = ev.wall_ms.into();
        row.sequence = ev.seq.into();
        let head = self.names.head(entity_id);
        row.prev_entity = head.into();
        row.entity_jump = self.entity_jump(entity_id, head, ev.seq).into();
        row.prev_kind = prev_kind.into();
        row.prev_scope = self.names.head(scope_id).into();
        row.frame_offset = ev.frame_offset.into();
        row.segment_id = ev.segment_id.into();
        row.frame_len = ev.frame_len.into();
        row.entity_id = entity_id.into();
        row.scope_id = scope_id.into();
        row.clock = ev.clock.into();
        row.kind = ev.kind.into();
        let mut flags = 0;
        if ev.causation_id.is_some() {
            flags |= weir_protocol::index::ROW_HAS_CAUSATION;
        }
        if ev.batch_end {
            flags |= weir_protocol::index::ROW_BATCH_END;
        }
        row.flags = flags.into();
        row.seal();
        let (c, i) = self.write_cells(ev.seq, &row)?;
        let geo = self.geo;
        let table = &self.chunks[c];
        let hash = id_hash(ev.event_id);
        let mask = geo.id_slots() - 1;
        let mut s = geo.home_slot(hash);
        loop {
            let slot = table
                .region()
                .atomic_u64(geo.id_slot_offset(s))
                .expect("id slot in bounds");
            if slot.load(Ordering::Relaxed) == 0 {
                // SYNC: Release; the row was written above. Readers confirm
                // the row only below their loaded `visible`.
                slot.store(pack_slot(i, hash), Ordering::Release);
                break;
            }
            s = (s + 1) & mask;
        }
        let r = &mut self.id_ranges[c];
        *r = (r.0.min(ev.event_id), r.1.max(ev.event_id));
        self.names.bump(entity_id, ev.seq);
        self.names.bump(scope_id, ev.seq);
        let kind_count = self.kind_counter(ev.kind, 8);
        // SYNC: Release, after the row (FORMAT.md write order).
        self.kind_counter(ev.kind, 0)
            .store(ev.seq + 1, Ordering::Release);
        kind_count.store(kind_count.load(Ordering::Relaxed) + 1, Ordering::Release);
        Ok(entity_id)
    }

    /// The `entity_jump` hint of a new row at `seq` whose entity's chain
    /// head is `head` (newest sequence + 1, 0 for none); records `seq` as
    /// the entity's newest.
    fn entity_jump(&mut self, entity_id: u32, head: u64, seq: u64) -> u32 {
        if let Some(r) = self.recent.get_mut(&entity_id) {
            let jump = r.jump(seq);
            r.push(seq);
            return jump;
        }
        // Not in memory (new, forgotten, or written before this start):
        // read the newest sequences down the chain.
        let mut down = [0u64; ENTITY_JUMP];
        let mut n = 0;
        let mut link = head;
        while link != 0 && n < ENTITY_JUMP {
            let Some(row) = self.row(link - 1) else { break };
            if row.entity_id.get() != entity_id || row.prev_entity.get() >= link {
                break;
            }
            down[n] = link - 1;
            n += 1;
            link = row.prev_entity.get();
        }
        let mut r = Recent::default();
        for &s in down[..n].iter().rev() {
            r.push(s);
        }
        let jump = r.jump(seq);
        r.push(seq);
        if self.recent.len() >= RECENT_ENTITIES {
            self.recent.clear();
        }
        self.recent.insert(entity_id, r);
        jump
    }

    /// Starts loading the id-table slot where `put_event` will first look
    /// for `id` at `seq` (a hint; nothing if the chunk does not exist yet).
    /// The table is larger than the CPU caches and an id's slot is random,
    /// so each insert misses; hinting a few events ahead overlaps the misses.
    pub fn prefetch_id_slot(&self, seq: u64, id: u128) {
        let (c, _) = self.geo.locate(seq);
        if let Some(f) = self.chunks.get(c as usize) {
            let s = self.geo.home_slot(id_hash(id));
            f.region().prefetch(self.geo.id_slot_offset(s));
        }
    }

    /// Writes a tombstone row for a cancelled sequence.
    pub fn put_tombstone(&mut self, seq: u64) -> io::Result<()> {
        self.write_cells(seq, &Row::tombstone(seq)).map(|_| ())
    }

    fn kind_counter(&self, kind: u16, off: usize) -> &std::sync::atomic::AtomicU64 {
        self.kinds
            .region()
            .atomic_u64(PAGE + usize::from(kind) * 16 + off)
            .expect("kinds layout")
    }

    /// The row of `seq`, if its chunk exists.
    #[must_use]
    pub fn row(&self, seq: u64) -> Option<Row> {
        let (c, i) = self.geo.locate(seq);
        let f = self.chunks.get(c as usize)?;
        Row::read_from_bytes(f.read(self.geo.row_offset(i), ROW_LEN)).ok()
    }

    /// The sequence holding `id`, among sequences below `end`.
    #[must_use]
    pub fn find_id(&self, id: u128, end: u64) -> Option<u64> {
        let geo = self.geo;
        let hash = id_hash(id);
        let mask = geo.id_slots() - 1;
        for (c, f) in self.chunks.iter().enumerate().rev() {
            let (lo, hi) = self.id_ranges[c];
            if id < lo || id > hi {
                continue;
            }
            let mut s = geo.home_slot(hash);
            loop {
                let v = f
                    .region()
                    .atomic_u64(geo.id_slot_offset(s))
                    .expect("slot")
                    .load(Ordering::Relaxed);
                if v == 0 {
                    break;
                }
                let Some((i, fp)) = unpack_slot(v) else { break };
                if fp == fingerprint(hash) {
                    let seq = ((c as u64) << geo.log2) + i as u64;
                    if seq < end && self.row(seq).is_some_and(|r| r.id() == id) {
                        return Some(seq);
                    }
                }
                s = (s + 1) & mask;
            }
        }
        None
    }

    /// Seals every chunk whose rows are all below `visible` (after publish).
    pub fn seal_through(&mut self, visible: u64) {
        while ((self.sealed + 1) << self.geo.log2) as u64 <= visible
            && self.sealed < self.chunks.len()
        {
            let f = &self.chunks[self.sealed];
            let (lo, hi) = self.id_ranges[self.sealed];
            f.write(CHUNK_MIN_ID_OFF, &lo.to_le_bytes());
            f.write(CHUNK_MAX_ID_OFF, &hi.to_le_bytes());
            // SYNC: Release; readers trust min/max only after loading sealed == 1.
            f.region()
                .atomic_u64(CHUNK_SEALED_OFF)
                .expect("layout")
                .store(1, Ordering::Release);
            self.sealed += 1;
        }
        self.publish_ranges();
    }

    /// Writes the id range of every sealed chunk `ranges` does not hold yet
    /// (up to its capacity), then publishes their count. Records below the
    /// count are never written again.
    fn publish_ranges(&self) {
        write_ranges(&self.ranges, &self.id_ranges[..self.sealed]);
    }

    /// Restores a name's head and count (after a rebuild from the log they
    /// are already right; this is for repairing an in-place reuse).
    pub fn set_name_counters(&self, id: u32, head: u64, count: u64) {
        self.names.set(id, head, count);
    }

    /// Flushes every file and records `cp` as the newest checkpoint.
    pub fn checkpoint(&mut self, mut cp: Checkpoint) -> io::Result<()> {
        for f in self
            .chunks
            .iter()
            .map(|f| &**f)
            .chain(self.names.files())
            .chain([&self.kinds, &self.ranges])
        {
            f.flush()?;
        }
        let (strings_end, names_table) = self.names.position();
        self.checkpoint_counter += 1;
        cp.counter = self.checkpoint_counter.into();
        cp.strings_end = strings_end.into();
        cp.names_table = names_table.into();
        cp.seal();
        let slot = META_CHECKPOINT_OFFS[(self.checkpoint_counter % 2) as usize];
        self.meta.write(slot, cp.as_bytes());
        self.meta.flush()
    }

    /// The newest valid checkpoint of a generation, read without mapping it writable.
    pub fn read_checkpoint(
        data_dir: &Path,
        generation: u64,
    ) -> io::Result<Option<(Checkpoint, u32)>> {
        let bytes = std::fs::read(generation_dir(data_dir, generation).join("meta"))?;
        let Ok(h) = FileHeader::parse(&bytes, META_MAGIC, None, generation) else {
            return Ok(None);
        };
        let copy = |off: usize| {
            bytes
                .get(off..off + 64)
                .and_then(|b| Checkpoint::read_from_bytes(b).ok())
        };
        Ok(
            Checkpoint::newest(copy(META_CHECKPOINT_OFFS[0]), copy(META_CHECKPOINT_OFFS[1]))
                .map(|c| (c, h.param.get())),
        )
    }

    /// Total bytes of this generation's files.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        let files = self
            .chunks
            .iter()
            .map(|f| &**f)
            .chain(self.names.files())
            .chain([&self.kinds, &self.meta]);
        files.map(|f| f.region().len() as u64).sum()
    }

    /// Is `id` a valid entity/scope id?
    #[must_use]
    pub fn has_name(&self, id: u32) -> bool {
        id != NO_NAME && self.names.name(id).is_some()
    }
}

/// Maps an existing `ranges` file, if its header names this generation and
/// every published record matches `sealed` (the sealed chunks' id ranges,
/// from their headers); else says what is wrong.
fn check_ranges(
    path: &Path,
    log2: u32,
    generation: u64,
    sealed: &[(u128, u128)],
) -> Result<MappedFile, String> {
    let f = MappedFile::open(path, RANGES_FILE_LEN).map_err(|e| e.to_string())?;
    FileHeader::parse(f.read(0, 32), RANGES_MAGIC, Some(log2), generation)
        .map_err(|e| e.to_string())?;
    let count = f
        .region()
        .atomic_u64(RANGES_COUNT_OFF)
        .expect("ranges layout")
        .load(Ordering::Acquire) as usize;
    if count > sealed.len().min(RANGES_CAP) {
        return Err(format!(
            "{count} records, but {} sealed chunks",
            sealed.len()
        ));
    }
    for (c, &range) in sealed.iter().enumerate().take(count) {
        let rec = f.read(ranges_record(c), RANGE_RECORD_LEN);
        if parse_range_record(c as u64, rec) != Some(range) {
            return Err(format!(
                "chunk {c}'s record differs from the chunk's header"
            ));
        }
    }
    Ok(f)
}

/// Writes a complete `ranges` file for `sealed` beside the old one, makes
/// it durable and renames it into place (a reader of the previous instance
/// keeps the file it mapped; nobody sees a half-written one).
fn replace_ranges(
    dir: &Path,
    log2: u32,
    generation: u64,
    sealed: &[(u128, u128)],
) -> io::Result<MappedFile> {
    let tmp = dir.join("ranges.tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let f = new_ranges(&tmp, log2, generation)?;
        write_ranges(&f, sealed);
        f.flush()?;
    }
    let path = dir.join("ranges");
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    MappedFile::open(&path, RANGES_FILE_LEN)
}

/// Writes the record of every sealed chunk (`sealed`: their id ranges, in
/// order) that `ranges` does not hold yet, up to its capacity, then
/// publishes their count. Records below the count are never written again.
fn write_ranges(ranges: &MappedFile, sealed: &[(u128, u128)]) {
    let count = ranges
        .region()
        .atomic_u64(RANGES_COUNT_OFF)
        .expect("ranges layout");
    let end = sealed.len().min(RANGES_CAP);
    let from = count.load(Ordering::Relaxed) as usize;
    if from >= end {
        return;
    }
    for (c, &(lo, hi)) in sealed.iter().enumerate().take(end).skip(from) {
        ranges.write(ranges_record(c), &range_record(c as u64, lo, hi));
    }
    // SYNC: Release; readers trust records below the count they load.
    count.store(end as u64, Ordering::Release);
}

/// The id range in a chunk's header, if the chunk is sealed.
fn sealed_range(f: &MappedFile) -> Option<(u128, u128)> {
    let sealed = f.region().atomic_u64(CHUNK_SEALED_OFF).expect("layout");
    (sealed.load(Ordering::Acquire) == 1).then(|| {
        (
            read_u128(f, CHUNK_MIN_ID_OFF),
            read_u128(f, CHUNK_MAX_ID_OFF),
        )
    })
}

/// Creates an empty `ranges` file at `path`.
fn new_ranges(path: &Path, log2: u32, generation: u64) -> io::Result<MappedFile> {
    let f = MappedFile::create(path, RANGES_FILE_LEN)?;
    f.write(
        0,
        FileHeader::new(RANGES_MAGIC, log2, generation).as_bytes(),
    );
    Ok(f)
}

fn read_u128(f: &MappedFile, off: usize) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(f.read(off, 16));
    u128::from_le_bytes(b)
}
