//! The restore planner (seed 002's order): reuse the index files after a
//! clean stop; otherwise rebuild a new generation from the sealed segments'
//! footers (in parallel) and a frame scan of the unsealed ones.

use crate::checkpoint::CrashCheckpoint;
use crate::config::Config;
use crate::error::OpenError;
use crate::index::{IndexWriter, IndexedEvent, generation_dir};
use crate::proof::Published;
use crate::segments::{LogPosition, OpenSegment, SegmentLog};
use crate::state::{Entities, EntityState, IdemWindow};
use crate::storage::{SegmentBytes, Storage, segment_file_name};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_protocol::index::{Checkpoint, NS_ENTITY};
use weir_protocol::segment::{
    Decoded, FooterEntry, FrameRef, SEGMENT_HEADER_LEN, SegmentHeader, Trailer, decode_at,
    footer_entries, frame_flags,
};
use weir_protocol::wire::Receipt;
use zerocopy::FromZeros;

/// Which restore path ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePath {
    /// No segments: a new store.
    Empty,
    /// The index files of a clean stop were reused in place.
    IndexFiles,
    /// After a crash: the sealed chunks of the previous generation's crash
    /// checkpoint were kept, the rest replayed from the log.
    Checkpoint,
    /// Rebuilt from sealed-segment footers, plus a frame scan of the tail.
    Footers,
    /// Rebuilt by scanning every frame.
    FrameScan,
}

impl RestorePath {
    /// Kebab-case name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::IndexFiles => "index-files",
            Self::Checkpoint => "checkpoint",
            Self::Footers => "footers",
            Self::FrameScan => "frame-scan",
        }
    }
}

/// What restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The path.
    pub path: RestorePath,
    /// Events restored by that path (index files, checkpoint or footers).
    pub entries: u64,
    /// Events restored by scanning frames.
    pub tail_entries: u64,
    /// Sequences cancelled (tombstones).
    pub cancelled: u64,
    /// Wall time taken.
    pub elapsed: Duration,
    /// Index generation in use.
    pub generation: u64,
    /// Why an earlier, faster path was not taken.
    pub fallback_reason: Option<String>,
}

/// Everything the writer needs to continue.
#[derive(Debug)]
pub struct Restored {
    /// The index, filled up to `next_seq`.
    pub index: IndexWriter,
    /// The log, positioned to append.
    pub log: SegmentLog,
    /// Next sequence to allocate.
    pub next_seq: u64,
    /// Cancelled ranges.
    pub cancelled: Vec<(u64, u64)>,
    /// Chain heads.
    pub entities: Entities,
    /// Idempotency window.
    pub idem: IdemWindow,
    /// HLC floor.
    pub max_wall_ms: u64,
    /// The report.
    pub report: RestoreReport,
    /// The watermark of the generation's valid crash checkpoint (0: none).
    pub checkpoint: u64,
}

/// Restores from `storage`; `previous` is the index generation the last
/// instance used, if known; `published`, what its gate shows the log held.
/// A log that holds less (a segment missing, a durable frame damaged) is
/// refused before any file changes.
pub fn restore(
    config: &Config,
    storage: Box<dyn Storage>,
    instance: u128,
    previous: Option<u64>,
    old_ranges: Option<Vec<(u64, u64)>>,
    mut published: Published,
) -> Result<Restored, OpenError> {
    let started = Instant::now();
    let data_dir = &config.data_dir;
    let seg_err = |id: u64| OpenError::io(data_dir.join("segments").join(segment_file_name(id)));
    let ids = storage
        .list()
        .map_err(OpenError::io(data_dir.join("segments")))?;
    if let Some(g) = previous {
        published.add_index(data_dir, g);
    }
    published.check_segments(&data_dir.join("segments"), &ids)?;
    let next_gen = previous.map_or(0, |g| g + 1);
    if ids.is_empty() {
        let index = IndexWriter::create(data_dir, next_gen, config.chunk_rows_log2)
            .map_err(OpenError::io(generation_dir(data_dir, next_gen)))?;
        let log = SegmentLog::start_new(storage, config.segment_max_bytes, instance, 0, 0)
            .map_err(seg_err(0))?;
        return Ok(Restored {
            index,
            log,
            next_seq: 0,
            cancelled: Vec::new(),
            entities: Entities::default(),
            idem: IdemWindow::new(config.idempotency_window as usize),
            max_wall_ms: 0,
            checkpoint: 0,
            report: RestoreReport {
                path: RestorePath::Empty,
                entries: 0,
                tail_entries: 0,
                cancelled: 0,
                elapsed: started.elapsed(),
                generation: next_gen,
                fallback_reason: None,
            },
        });
    }
    let mut fallback = None;
    if let Some(g) = previous {
        match try_reuse(config, &*storage, &ids, g, old_ranges) {
            Ok(r) => {
                let Reuse {
                    index,
                    open,
                    cp,
                    ranges,
                    entities,
                    idem,
                } = r;
                let next_seq = cp.watermark.get();
                let cancelled: u64 = ranges.iter().map(|r| r.1.saturating_sub(r.0)).sum();
                let seg = open.pos.segment_id;
                let log = SegmentLog::resume(storage, config.segment_max_bytes, instance, open)
                    .map_err(seg_err(seg))?;
                return Ok(Restored {
                    index,
                    log,
                    next_seq,
                    cancelled: ranges.clone(),
                    entities,
                    idem,
                    max_wall_ms: cp.max_wall_ms.get(),
                    // The reused generation's crash checkpoint stays valid:
                    // its chunks, strings and window entries do not change.
                    checkpoint: CrashCheckpoint::load(data_dir, g, config.chunk_rows_log2)
                        .map_or(0, |c| c.watermark),
                    report: RestoreReport {
                        path: RestorePath::IndexFiles,
                        // Events, as the other paths count them: cancelled
                        // sequences are reported apart.
                        entries: next_seq.saturating_sub(cancelled),
                        tail_entries: 0,
                        cancelled,
                        elapsed: started.elapsed(),
                        generation: g,
                        fallback_reason: None,
                    },
                });
            }
            Err(why) => fallback = Some(format!("index files: {why}")),
        }
        match from_checkpoint(config, &*storage, &ids, g, next_gen) {
            Ok(base) => {
                return rebuild(
                    config,
                    storage,
                    instance,
                    &ids,
                    next_gen,
                    started,
                    Some(base),
                    &published,
                )
                .map(|r| r.with_fallback(fallback));
            }
            Err(why) => {
                let why = format!("checkpoint: {why}");
                fallback = Some(fallback.map_or(why.clone(), |f| format!("{f}; {why}")));
            }
        }
    }
    rebuild(
        config, storage, instance, &ids, next_gen, started, None, &published,
    )
    .map(|r| r.with_fallback(fallback))
}

impl Restored {
    fn with_fallback(mut self, why: Option<String>) -> Self {
        self.report.fallback_reason = why;
        self
    }
}

/// What the checkpoint path kept, for the replay of the rest.
struct Base {
    index: IndexWriter,
    entities: Entities,
    idem: IdemWindow,
    cancelled: Vec<(u64, u64)>,
    tombstones: u64,
    watermark: u64,
    max_wall_ms: u64,
    /// Where in the segment list the replay starts.
    first_segment: usize,
}

/// The checkpoint path: generation `next` keeps the sealed chunks that
/// generation `g`'s crash checkpoint covers (FORMAT.md, "Restore order").
fn from_checkpoint(
    config: &Config,
    storage: &dyn Storage,
    ids: &[u64],
    g: u64,
    next: u64,
) -> Result<Base, String> {
    let data_dir = &config.data_dir;
    let cp = CrashCheckpoint::load(data_dir, g, config.chunk_rows_log2)?;
    let rows = 1u64 << cp.log2;
    let (index, adopted) = IndexWriter::adopt(
        data_dir,
        g,
        next,
        cp.log2,
        (cp.watermark / rows) as usize,
        cp.strings_end,
    )
    .map_err(|e| e.to_string())?;
    let seg = adopted
        .last_segment
        .ok_or("no event below the checkpoint's watermark")?;
    let first_segment = ids
        .binary_search(&u64::from(seg))
        .map_err(|_| format!("segment {seg}, which holds the last kept event, is missing"))?;
    let entities = chains_from_index(&index, storage, cp.watermark, true)?;
    let mut idem = IdemWindow::new(config.idempotency_window as usize);
    for (k, r) in cp.idem {
        idem.insert(k, r);
    }
    Ok(Base {
        index,
        entities,
        idem,
        cancelled: adopted.cancelled,
        tombstones: adopted.tombstones,
        watermark: cp.watermark,
        max_wall_ms: cp.max_wall_ms,
        first_segment,
    })
}

/// What the index-files path recovered.
struct Reuse {
    index: IndexWriter,
    open: OpenSegment,
    cp: Checkpoint,
    ranges: Vec<(u64, u64)>,
    entities: Entities,
    idem: IdemWindow,
}

fn try_reuse(
    config: &Config,
    storage: &dyn Storage,
    ids: &[u64],
    g: u64,
    old_ranges: Option<Vec<(u64, u64)>>,
) -> Result<Reuse, String> {
    let data_dir = &config.data_dir;
    let (cp, log2) = IndexWriter::read_checkpoint(data_dir, g)
        .map_err(|e| format!("no checkpoint in generation {g}: {e}"))?
        .ok_or("no valid checkpoint")?;
    if cp.clean.get() != 1 {
        return Err("the previous instance did not stop cleanly".into());
    }
    if log2 != config.chunk_rows_log2 {
        return Err(format!(
            "chunk-rows-log2 changed from {log2} to {}",
            config.chunk_rows_log2
        ));
    }
    let ranges = old_ranges.ok_or("the previous gate's cancelled ranges are unavailable")?;
    let seg = cp.segment_id.get();
    if ids.last() != Some(&seg) {
        return Err("segments were added after the checkpoint".into());
    }
    let bytes = storage.read(seg).map_err(|e| e.to_string())?;
    let header = SegmentHeader::parse(&bytes).map_err(|e| e.to_string())?;
    if Trailer::parse(&bytes).is_some() {
        return Err("the checkpoint's segment is sealed".into());
    }
    // Walk the frames of the open segment (their CRCs were checked when they
    // were written; a clean stop flushed them) to rebuild its footer list and
    // confirm the checkpoint's offset is the end of the data.
    let mut off = SEGMENT_HEADER_LEN;
    let mut footer = Vec::new();
    let mut first_seq = None;
    loop {
        let (d, len) = decode_at(&bytes, off, true).map_err(|e| format!("segment {seg}: {e}"))?;
        match d {
            Decoded::End => break,
            Decoded::Event(f) => {
                first_seq.get_or_insert(f.header.sequence.get());
            }
            Decoded::Cancel { first, .. } => {
                first_seq.get_or_insert(first);
            }
            Decoded::Footer(_) => return Err("footer frame in an open segment".into()),
        }
        let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().expect("4 bytes"));
        footer.push(FooterEntry {
            offset: (off as u64).into(),
            len: (len as u32).into(),
            crc: crc.into(),
        });
        off += len;
    }
    if off as u64 != cp.segment_offset.get() {
        return Err(format!(
            "the log ends at {off}, the checkpoint at {}",
            cp.segment_offset.get()
        ));
    }
    let index = IndexWriter::open(data_dir, g, log2, &cp).map_err(|e| e.to_string())?;
    check_cancelled(&index, &ranges, cp.watermark.get())?;
    let pos = LogPosition {
        segment_id: seg,
        offset: off as u64,
    };
    let entities = chains_from_index(&index, storage, cp.watermark.get(), false)?;
    let idem_path = generation_dir(data_dir, g).join("idem");
    let idem = crate::state::load_window(&idem_path, config.idempotency_window as usize)?;
    let open = OpenSegment {
        pos,
        footer,
        base_seq: header.base_seq.get(),
        end_seq: cp.watermark.get(),
        first_seq,
    };
    Ok(Reuse {
        index,
        open,
        cp,
        ranges,
        entities,
        idem,
    })
}

/// Checks the previous gate's cancelled ranges, which carry no checksum,
/// against the reused index: sorted and merged, each non-empty and below
/// `end`, every sequence in them a tombstone row. O(cancelled sequences).
fn check_cancelled(index: &IndexWriter, ranges: &[(u64, u64)], end: u64) -> Result<(), String> {
    let mut floor = 0;
    for (i, &(a, b)) in ranges.iter().enumerate() {
        if a < floor || a >= b || b > end {
            return Err(format!(
                "the previous gate's cancelled range {i}, [{a}, {b}), is not sorted, \
                 merged and below the watermark {end}"
            ));
        }
        let tombstone = |s: u64| {
            index
                .row(s)
                .is_some_and(|r| r.crc_ok() && r.sequence.get() == s && r.is_cancelled())
        };
        if let Some(s) = (a..b).find(|&s| !tombstone(s)) {
            return Err(format!(
                "the previous gate's cancelled range [{a}, {b}) holds sequence {s}, \
                 whose row is not a tombstone"
            ));
        }
        // Merged ranges never touch: the next one starts past this end.
        floor = b + 1;
    }
    Ok(())
}

/// Rebuilds the entity chain heads from a reused index: O(entities).
/// `unused_ok`: a name with no event yet is skipped (the checkpoint path
/// keeps names whose events are still to be replayed) instead of refused.
fn chains_from_index(
    index: &IndexWriter,
    storage: &dyn Storage,
    end: u64,
    unused_ok: bool,
) -> Result<Entities, String> {
    let mut segs: HashMap<u32, SegmentBytes> = HashMap::new();
    // The head words (and, on the checkpoint path, the entity column they
    // were counted from) carry no CRC: the head must be a CRC-valid row of
    // this very entity whose frame holds the same event, or the writer
    // would continue another chain.
    let mut head_of = |seq: u64, id: u32, name: &[u8]| -> Result<(u32, [u8; 32]), String> {
        let who = String::from_utf8_lossy(name);
        let row = index
            .row(seq)
            .filter(|r| r.crc_ok() && r.sequence.get() == seq)
            .ok_or_else(|| format!("row {seq}, the head of entity {who:?}, is damaged"))?;
        if row.is_cancelled() || row.entity_id.get() != id {
            return Err(format!(
                "entity {who:?}'s head names row {seq}, which is not one of its events"
            ));
        }
        let sid = row.segment_id.get();
        if let std::collections::hash_map::Entry::Vacant(v) = segs.entry(sid) {
            v.insert(storage.read(u64::from(sid)).map_err(|e| e.to_string())?);
        }
        let (d, _) = decode_at(&segs[&sid], row.frame_offset.get() as usize, false)
            .map_err(|e| e.to_string())?;
        let Decoded::Event(f) = d else {
            return Err(format!("row {seq} points at a non-event frame"));
        };
        if f.entity != name || f.header.sequence.get() != seq || f.header.clock != row.clock {
            return Err(format!(
                "row {seq}, the head of entity {who:?}, points at another event's frame"
            ));
        }
        Ok((row.clock.get(), f.header.event_hash))
    };
    let mut entities = Entities::default();
    for (ns, name, id) in index.names().iter() {
        if ns != NS_ENTITY {
            continue;
        }
        let head = index.names().head(id);
        if head == 0 && unused_ok {
            continue;
        }
        if head == 0 || head > end {
            return Err(format!(
                "entity {:?}'s head {head} is out of range",
                String::from_utf8_lossy(name)
            ));
        }
        let (clock, hash) = head_of(head - 1, id, name)?;
        entities.insert(
            name.into(),
            EntityState {
                clock,
                hash,
                entity_id: id,
            },
        );
    }
    Ok(entities)
}

/// One segment's usable content.
struct Scan<'a> {
    events: Vec<FrameRef<'a>>,
    offsets: Vec<(u64, u32)>,
    cancels: Vec<(u64, u64)>,
    via_footer: bool,
    /// Intact and unsealed: writing may continue in it.
    resumable: Option<(LogPosition, Vec<FooterEntry>, u64)>,
    /// Where the frame scan stopped short of a clean end, and why.
    stop: Option<Stop>,
}

/// Where a frame scan stopped before a clean end (zeros, the footer).
#[derive(Debug, Clone)]
struct Stop {
    /// Offset of the first frame not used.
    offset: u64,
    /// What is there.
    what: String,
    /// A damaged frame, not only a batch without its end.
    damaged: bool,
}

fn scan_segment<'a>(id: u64, bytes: &'a [u8], path: &Path) -> Result<Scan<'a>, OpenError> {
    let corrupt = |what: String| OpenError::Corrupt {
        path: path.to_owned(),
        what,
    };
    let header = SegmentHeader::parse(bytes).map_err(|e| corrupt(e.to_string()))?;
    if header.segment_id.get() != id {
        return Err(corrupt(format!(
            "header names segment {}",
            header.segment_id.get()
        )));
    }
    let mut s = Scan {
        events: Vec::new(),
        offsets: Vec::new(),
        cancels: Vec::new(),
        via_footer: false,
        resumable: None,
        stop: None,
    };
    let trailer = Trailer::parse(bytes);
    if let Some(t) = &trailer
        && let Ok((Decoded::Footer(body), _)) =
            decode_at(bytes, t.footer_offset.get() as usize, true)
    {
        // Bodies are not re-hashed, so what a header says is checked before
        // it is used: a CANCEL frame (a header only) is CRC-checked, and
        // events must run on in sequence order from the trailer's first
        // sequence to its end, a CANCEL frame taking them past its range.
        // Anything else sends the segment to the frame scan.
        let mut ok = true;
        let mut expect = t.first_seq.get();
        for e in footer_entries(body) {
            let at = e.offset.get() as usize;
            match decode_at(bytes, at, false) {
                Ok((d, len))
                    if len == e.len.get() as usize
                        && bytes[at + 4..][..4] == e.crc.get().to_le_bytes() =>
                {
                    match d {
                        Decoded::Event(f) if f.header.sequence.get() == expect => {
                            expect += 1;
                            s.events.push(f);
                            s.offsets.push((e.offset.get(), len as u32));
                        }
                        Decoded::Cancel { first, count }
                            if first <= expect && decode_at(bytes, at, true).is_ok() =>
                        {
                            let end = first + u64::from(count);
                            expect = expect.max(end);
                            s.cancels.push((first, end));
                        }
                        _ => ok = false,
                    }
                }
                _ => ok = false,
            }
        }
        if ok && expect == t.end_seq.get() {
            s.via_footer = true;
            return Ok(s);
        }
        s = Scan {
            events: Vec::new(),
            offsets: Vec::new(),
            cancels: Vec::new(),
            via_footer: false,
            resumable: None,
            stop: None,
        };
    }
    // Frame scan with CRCs; a batch counts only once its BATCH_END frame is read.
    let mut off = SEGMENT_HEADER_LEN;
    let (mut batch, mut batch_offs) = (Vec::new(), Vec::new());
    let mut footer = Vec::new();
    let mut pending_footer = Vec::new();
    let mut intact = true;
    loop {
        match decode_at(bytes, off, true) {
            Ok((Decoded::End, _)) => {
                if let Some(t) = &trailer
                    && (off as u64) < t.footer_offset.get()
                {
                    s.stop = Some(Stop {
                        offset: off as u64,
                        what: format!(
                            "zeros where the trailer says frames are (up to its footer at offset {})",
                            t.footer_offset.get()
                        ),
                        damaged: true,
                    });
                }
                break;
            }
            Ok((Decoded::Event(f), len)) => {
                batch.push(f);
                batch_offs.push((off as u64, len as u32));
                pending_footer.push(FooterEntry {
                    offset: (off as u64).into(),
                    len: (len as u32).into(),
                    crc: f.header.crc,
                });
                if f.header.flags & frame_flags::BATCH_END != 0 {
                    s.events.append(&mut batch);
                    s.offsets.append(&mut batch_offs);
                    footer.append(&mut pending_footer);
                }
                off += len;
            }
            Ok((Decoded::Cancel { first, count }, len)) => {
                // A cancel ends whatever batch was being written when the write failed.
                batch.clear();
                batch_offs.clear();
                pending_footer.clear();
                s.cancels.push((first, first + u64::from(count)));
                footer.push(FooterEntry {
                    offset: (off as u64).into(),
                    len: (len as u32).into(),
                    crc: bytes[off + 4..off + 8]
                        .try_into()
                        .map(u32::from_le_bytes)
                        .unwrap_or(0)
                        .into(),
                });
                off += len;
            }
            Ok((Decoded::Footer(_), _)) => {
                intact = false;
                break;
            }
            Err(e) => {
                intact = false;
                s.stop = Some(Stop {
                    offset: off as u64,
                    what: e.to_string(),
                    damaged: true,
                });
                break;
            }
        }
    }
    if let Some(&(start, _)) = batch_offs.first() {
        intact = false;
        let bad = s.stop.take();
        s.stop = Some(Stop {
            offset: start,
            damaged: bad.is_some(),
            what: match bad {
                Some(bad) => format!(
                    "the batch from offset {start} is cut short by a damaged frame ({})",
                    bad.what
                ),
                None => format!("the batch from offset {start} has no BATCH_END frame"),
            },
        });
    }
    if intact && Trailer::parse(bytes).is_none() {
        s.resumable = Some((
            LogPosition {
                segment_id: id,
                offset: off as u64,
            },
            footer,
            header.base_seq.get(),
        ));
    }
    Ok(s)
}

/// Builds generation `generation` from the log (after `base`, if the
/// checkpoint path kept one). A log that holds less than `published` shows
/// it held is refused before any segment is synced or created (the start
/// then removes the half-built generation: `Store::open`), so nothing changed.
#[allow(clippy::too_many_arguments)] // one call per restore path
fn rebuild(
    config: &Config,
    storage: Box<dyn Storage>,
    instance: u128,
    ids: &[u64],
    generation: u64,
    started: Instant,
    base: Option<Base>,
    published: &Published,
) -> Result<Restored, OpenError> {
    let data_dir = &config.data_dir;
    let seg_path = |id: u64| data_dir.join("segments").join(segment_file_name(id));
    let gen_dir = generation_dir(data_dir, generation);
    // Built only on an error: the path used to be formatted for every
    // event (an eager `map_err` argument), more than half of a rebuild.
    let gen_err = |source: std::io::Error| OpenError::io(&gen_dir)(source);
    let kept = base.as_ref().map(|b| b.watermark - b.tombstones);
    let kept_watermark = base.as_ref().map_or(0, |b| b.watermark);
    let Base {
        mut index,
        mut entities,
        mut idem,
        mut cancelled,
        mut tombstones,
        watermark: mut next_seq,
        max_wall_ms: mut max_wall,
        first_segment,
    } = match base {
        Some(b) => b,
        None => Base {
            index: IndexWriter::create(data_dir, generation, config.chunk_rows_log2)
                .map_err(gen_err)?,
            entities: Entities::default(),
            idem: IdemWindow::new(config.idempotency_window as usize),
            cancelled: Vec::new(),
            tombstones: 0,
            watermark: 0,
            max_wall_ms: 0,
            first_segment: 0,
        },
    };
    let (mut from_footers, mut from_scan) = (0u64, 0u64);
    let mut resume = None;
    let mut unverified = Vec::new();
    let mut heads: crate::fxhash::FxHashMap<u32, EntityState> = Default::default();
    // One past the newest sequence an intact frame holds (skipped ones too),
    // and the segment scanned last, with where its frames stopped short.
    let mut reach = 0u64;
    let mut prev: Option<(u64, Option<Stop>)> = None;
    // Segments are scanned in parallel a window at a time, then applied in order.
    for window in ids[first_segment..].chunks(rayon::current_num_threads().max(2) * 2) {
        let bytes: Vec<SegmentBytes> = window
            .iter()
            .map(|&id| storage.read(id).map_err(OpenError::io(seg_path(id))))
            .collect::<Result<_, _>>()?;
        let scans: Vec<Scan<'_>> = window
            .par_iter()
            .zip(bytes.par_iter())
            .map(|(&id, b)| scan_segment(id, b, &seg_path(id)))
            .collect::<Result<_, _>>()?;
        for (i, scan) in scans.into_iter().enumerate() {
            let id = window[i];
            let last_base = SegmentHeader::parse(&bytes[i])
                .map(|h| h.base_seq.get())
                .unwrap_or(0);
            if last_base > next_seq {
                // Never a torn tail: a restart goes on in a new segment from
                // where the log's intact frames end, and a segment is synced
                // in full before the next one is created.
                let (path, offset, what) = match &prev {
                    Some((p, Some(stop))) => (seg_path(*p), Some(stop.offset), stop.what.clone()),
                    Some((p, None)) => (seg_path(*p), None, "its frames end".to_owned()),
                    None => (seg_path(id), None, "the log before it ends".to_owned()),
                };
                return Err(OpenError::DamagedLog {
                    path,
                    offset,
                    what: format!(
                        "{what}: the log stops at sequence {next_seq}, and sequences {next_seq}..{last_base} are in no frame"
                    ),
                    proof: format!(
                        "but {} begins at sequence {last_base}, and a segment is synced in full before the next one is created: they were durable",
                        segment_file_name(id)
                    ),
                });
            }
            for &(a, b) in &scan.cancels {
                weir_protocol::gate::merge_range(&mut cancelled, a, b);
                reach = reach.max(b);
            }
            if let Some(f) = scan.events.last() {
                reach = reach.max(f.header.sequence.get() + 1);
            }
            for (f, &(off, len)) in scan.events.iter().zip(&scan.offsets) {
                let h = f.header;
                let seq = h.sequence.get();
                if seq < next_seq || weir_protocol::gate::in_ranges(&cancelled, seq) {
                    // Superseded by a cancel, or a repeat of an earlier sequence: skip.
                    continue;
                }
                while next_seq < seq {
                    if !weir_protocol::gate::in_ranges(&cancelled, next_seq) {
                        return Err(OpenError::DamagedLog {
                            path: seg_path(id),
                            offset: Some(off),
                            what: format!(
                                "the frame at offset {off} holds sequence {seq}, but no frame before it holds sequences {next_seq}..{seq}"
                            ),
                            proof: "but frames follow one another in sequence order, and no CANCEL frame covers those".into(),
                        });
                    }
                    index.put_tombstone(next_seq).map_err(gen_err)?;
                    weir_protocol::gate::merge_range(&mut cancelled, next_seq, next_seq + 1);
                    tombstones += 1;
                    next_seq += 1;
                }
                let entity = index
                    .put_event(&IndexedEvent {
                        seq,
                        event_id: h.event_id(),
                        correlation_id: h.correlation_id(),
                        causation_id: h.causation_id(),
                        wall_ms: h.wall_ms.get(),
                        entity: f.entity,
                        entity_id: None,
                        scope: f.scope,
                        kind: h.kind.get(),
                        clock: h.clock.get(),
                        segment_id: id as u32,
                        frame_offset: off,
                        frame_len: len,
                        batch_end: h.flags & frame_flags::BATCH_END != 0,
                    })
                    .map_err(gen_err)?;
                // By string id: a small key, already known, hashed cheaply
                // (by name this map was a fifth of a rebuild's time).
                heads.insert(
                    entity,
                    EntityState {
                        clock: h.clock.get(),
                        hash: h.event_hash,
                        entity_id: entity,
                    },
                );
                if let Some(k) = h.idempotency_key() {
                    idem.insert(
                        k,
                        Receipt {
                            event_id: h.event_id(),
                            sequence: seq,
                            clock: h.clock.get(),
                            event_hash: h.event_hash,
                            durable: true,
                            replayed: true,
                        },
                    );
                }
                max_wall = max_wall.max(h.wall_ms.get());
                next_seq = seq + 1;
                if scan.via_footer {
                    from_footers += 1;
                } else {
                    from_scan += 1;
                }
            }
            let cancel_end = cancelled.last().map_or(0, |r| r.1);
            while next_seq < cancel_end {
                index.put_tombstone(next_seq).map_err(gen_err)?;
                weir_protocol::gate::merge_range(&mut cancelled, next_seq, next_seq + 1);
                tombstones += 1;
                next_seq += 1;
            }
            if !scan.via_footer || id == *ids.last().expect("ids not empty") {
                unverified.push(id);
            }
            resume = scan.resumable;
            prev = Some((id, scan.stop));
        }
    }
    let last_id = *ids.last().expect("ids not empty");
    let (mut durable_end, why) = published.durable_end();
    let mut why = why.to_owned();
    if kept_watermark > durable_end {
        durable_end = kept_watermark;
        why = format!(
            "the previous generation's crash checkpoint records sequences below {kept_watermark} as durable"
        );
    }
    let stop = prev.and_then(|(_, stop)| stop);
    // A frame damaged below what is known durable, even where the kept
    // chunks of the checkpoint path reach past it.
    let damaged_below = stop
        .as_ref()
        .is_some_and(|s| s.damaged && reach < durable_end);
    if next_seq < durable_end || damaged_below {
        let end = if next_seq < durable_end {
            next_seq
        } else {
            reach
        };
        let (offset, what) = match stop {
            Some(s) => (Some(s.offset), s.what),
            None => (None, "the log ends".to_owned()),
        };
        return Err(OpenError::DamagedLog {
            path: seg_path(last_id),
            offset,
            what: format!(
                "{what}: the log stops at sequence {end} (sequences {end}..{durable_end} are missing)"
            ),
            proof: format!("but {why}"),
        });
    }
    // Frames a crashed instance wrote may be in the page cache only: make
    // them durable before anything is published, or checkpointed, on top of
    // them. A sealed segment followed by another was synced before the next
    // was created; the newest segment and any scanned frame by frame may
    // not have been.
    let mut storage = storage;
    for &id in &unverified {
        storage
            .sync(id, config.sync_mode)
            .map_err(OpenError::io(seg_path(id)))?;
    }
    for (id, head) in heads {
        let name = index.names().name(id).expect("an interned name");
        entities.insert(name.into(), head);
    }
    index.seal_through(next_seq);
    let log = match resume {
        Some((pos, footer, base)) if pos.segment_id == last_id => {
            let first = (!footer.is_empty()).then_some(base);
            let open = OpenSegment {
                pos,
                footer,
                base_seq: base,
                end_seq: next_seq,
                first_seq: first,
            };
            SegmentLog::resume(storage, config.segment_max_bytes, instance, open)
                .map_err(OpenError::io(seg_path(last_id)))?
        }
        _ => SegmentLog::start_new(
            storage,
            config.segment_max_bytes,
            instance,
            last_id + 1,
            next_seq,
        )
        .map_err(OpenError::io(seg_path(last_id + 1)))?,
    };
    let mut cp = Checkpoint::new_zeroed();
    cp.watermark = next_seq.into();
    cp.segment_id = log.position().segment_id.into();
    cp.segment_offset = log.position().offset.into();
    cp.max_wall_ms = max_wall.into();
    index.checkpoint(cp).map_err(gen_err)?;
    // Every file is flushed and every frame durable: the new generation's
    // crash checkpoint can be written now rather than by the writer later,
    // so a crash right after this start does not rebuild everything again.
    let sealed = index.sealed_rows();
    let mut crash_checkpoint = 0;
    if sealed > 0 {
        let ck = CrashCheckpoint::at(&index, sealed, max_wall, &idem);
        match ck.write_after(&[], &gen_dir) {
            Ok(()) => crash_checkpoint = sealed,
            Err(e) => {
                tracing::warn!(error = %e, "could not write the new generation's crash checkpoint")
            }
        }
    }
    let path = if kept.is_some() {
        RestorePath::Checkpoint
    } else if from_footers > 0 {
        RestorePath::Footers
    } else {
        RestorePath::FrameScan
    };
    Ok(Restored {
        index,
        log,
        next_seq,
        cancelled,
        entities,
        idem,
        max_wall_ms: max_wall,
        checkpoint: crash_checkpoint,
        report: RestoreReport {
            path,
            entries: match path {
                RestorePath::Checkpoint => kept.unwrap_or(0),
                RestorePath::Footers => from_footers,
                _ => from_scan,
            },
            tail_entries: match path {
                RestorePath::Checkpoint => from_footers + from_scan,
                RestorePath::Footers => from_scan,
                _ => 0,
            },
            cancelled: tombstones,
            elapsed: started.elapsed(),
            generation,
            fallback_reason: None,
        },
    })
}
