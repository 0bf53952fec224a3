//! The restore planner (seed 002's order): reuse the index files after a
//! clean stop; otherwise rebuild a new generation from the sealed segments'
//! footers (in parallel) and a frame scan of the unsealed ones.

mod index_paths;
mod scan;

use index_paths::{Reuse, from_checkpoint, try_reuse};
use scan::{Scan, Stop, scan_segment};

use crate::checkpoint::CrashCheckpoint;
use crate::config::Config;
use crate::error::OpenError;
use crate::index::{IndexWriter, IndexedEvent, generation_dir};
use crate::proof::Published;
use crate::segments::{OpenSegment, SegmentLog};
use crate::state::{Entities, EntityState, IdemWindow};
use crate::storage::{SegmentBytes, Storage, segment_file_name};
use rayon::prelude::*;
use std::time::{Duration, Instant};
use weir_protocol::index::Checkpoint;
use weir_protocol::segment::{SegmentHeader, frame_flags};
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
                // The event must continue the chain held so far (the kept
                // chunks' head on the checkpoint path), or the writer would
                // chain new events onto a wrong one.
                let held = match heads.get(&entity) {
                    Some(s) => Some(*s),
                    None if entities.is_empty() => None,
                    None => index
                        .names()
                        .name(entity)
                        .and_then(|n| entities.get(n))
                        .copied(),
                };
                if let Some(what) = chain_break(held, h.clock.get(), &h.prev_hash) {
                    return Err(OpenError::BrokenChain {
                        path: seg_path(id),
                        offset: off,
                        sequence: seq,
                        entity: String::from_utf8_lossy(f.entity).into_owned(),
                        what,
                    });
                }
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

/// Why an event of clock `clock` and `prev_hash` does not continue its
/// entity's chain whose newest event so far is `held`, if it does not.
fn chain_break(held: Option<EntityState>, clock: u32, prev_hash: &[u8; 32]) -> Option<String> {
    match held {
        None if clock != 0 => Some(format!(
            "has clock {clock}, but no event of its entity comes before it in the log (clock 0 expected)"
        )),
        None if *prev_hash != [0; 32] => Some(
            "is its entity's first event in the log, but its prev_hash is not zeros".to_owned(),
        ),
        None => None,
        Some(s) if s.clock.checked_add(1) != Some(clock) => Some(format!(
            "has clock {clock}, but the entity's event before it in the log has clock {} ({} expected)",
            s.clock,
            u64::from(s.clock) + 1
        )),
        Some(s) if s.hash != *prev_hash => Some(format!(
            "has clock {clock}, but its prev_hash is not the event_hash of the entity's event before it in the log (clock {})",
            s.clock
        )),
        Some(_) => None,
    }
}
