//! The index-files and checkpoint paths of the restore planner: reuse a
//! clean stop's generation, or keep the sealed chunks a crash checkpoint
//! covers, and rebuild the entities' chain heads from the index.

use super::Base;
use crate::checkpoint::CrashCheckpoint;
use crate::config::Config;
use crate::index::{IndexWriter, generation_dir};
use crate::segments::{LogPosition, OpenSegment};
use crate::state::{Entities, EntityState, IdemWindow};
use crate::storage::{SegmentBytes, Storage};
use std::collections::HashMap;
use weir_protocol::index::{Checkpoint, NS_ENTITY};
use weir_protocol::segment::{
    Decoded, FooterEntry, SEGMENT_HEADER_LEN, SegmentHeader, Trailer, decode_at,
};

/// The checkpoint path: generation `next` keeps the sealed chunks that
/// generation `g`'s crash checkpoint covers (FORMAT.md, "Restore order").
pub(super) fn from_checkpoint(
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
pub(super) struct Reuse {
    pub(super) index: IndexWriter,
    pub(super) open: OpenSegment,
    pub(super) cp: Checkpoint,
    pub(super) ranges: Vec<(u64, u64)>,
    pub(super) entities: Entities,
    pub(super) idem: IdemWindow,
}

pub(super) fn try_reuse(
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
        // A clean stop leaves an entity's count at its head's clock + 1
        // (clocks run 0, 1, 2, …). Neither word has a CRC: a head naming an
        // older event of the entity passes the checks above, and the writer
        // would fork the chain there. (On the checkpoint path both come
        // from the kept chunks' column, and the replay checks what follows.)
        let count = index.names().count(id);
        if !unused_ok && count != u64::from(clock) + 1 {
            return Err(format!(
                "entity {:?}'s head names its event of clock {clock}, but its count is {count} events",
                String::from_utf8_lossy(name)
            ));
        }
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
