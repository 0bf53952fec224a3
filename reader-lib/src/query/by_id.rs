//! Lookups by event id through the index: the chunks whose id range may
//! hold an id, their id slots probed, and for `get_many` a group of ids
//! warmed step by step so that their cache misses overlap.

use crate::error::ReadError;
use crate::gate::Watermark;
use crate::map::Mapped;
use crate::view::View;
use std::cell::OnceCell;
use std::sync::atomic::{Ordering, fence};
use weir_protocol::EventId;
use weir_protocol::index::{ROW_LEN, Row, fingerprint, id_hash, unpack_slot};
use zerocopy::FromBytes;

/// A chunk as lookups by id probe it, for [`warm`]: its sealed id range and
/// its file, each read on first need and then kept for the rest of a
/// `get_many` call (reading them for every id cost about a fifth of a
/// lookup's instructions).
pub(crate) struct ProbeChunk<'v> {
    c: u64,
    last: u64,
    /// `Some(range)` as `View::chunk_range` answered; `None` if it failed.
    range: OnceCell<Option<Option<(u128, u128)>>>,
    /// The mapped file; `None` if it could not be mapped.
    map: OnceCell<Option<&'v Mapped>>,
}

impl<'v> ProbeChunk<'v> {
    fn range(&self, view: &View) -> Option<Option<(u128, u128)>> {
        *self
            .range
            .get_or_init(|| view.chunk_range(self.c, self.last).ok())
    }
    fn map(&self, view: &'v View) -> Option<&'v Mapped> {
        *self.map.get_or_init(|| view.chunk(self.c).ok())
    }
}

/// The chunks lookups probe under `wm`, newest first (nothing read yet but
/// the newest chunk's header).
///
/// # Errors
/// The newest chunk cannot be mapped: `visible` names rows past the index
/// (a damaged gate), which `get` reports the same way. Checked first, so
/// that such a `visible` costs no list of chunks that do not exist.
pub(crate) fn probe_chunks<'v>(
    view: &'v View,
    wm: &Watermark,
) -> Result<Vec<ProbeChunk<'v>>, ReadError> {
    if wm.visible == 0 {
        return Ok(Vec::new());
    }
    let last = view.geo.locate(wm.visible - 1).0;
    view.chunk(last)?;
    Ok((0..=last)
        .rev()
        .map(|c| ProbeChunk {
            c,
            last,
            range: OnceCell::new(),
            map: OnceCell::new(),
        })
        .collect())
}

/// How many lookups [`warm`] prepares at a time: enough to keep the memory
/// system busy, few enough that what it loads is still cached when
/// `get_warmed` (or `get`) runs.
pub(crate) const WARM_GROUP: usize = 32;

/// Loads what `get` will read for each of `ids` (at most [`WARM_GROUP`]), one
/// step for the whole group before the next: id slots, then rows, then frames.
/// Each step first asks the CPU to fetch the whole group's lines (a prefetch
/// retires at once, so all of them are in flight together), then reads what
/// the next step needs from them. So the group's cache misses overlap instead
/// of following one another, and `get` then finds them cached. Reads only:
/// whatever looks odd here is skipped and left to `get`.
///
/// Returns, for each id it found where `get` would find it (the first slot
/// with its fingerprint, probing as `get` probes, whose row below `visible`
/// holds this very id), that row's sequence: [`get_warmed`] then reads that
/// row instead of probing again.
pub(crate) fn warm<'v>(
    view: &'v View,
    wm: &Watermark,
    chunks: &[ProbeChunk<'v>],
    ids: &[EventId],
) -> [Option<u64>; WARM_GROUP] {
    let geo = view.geo;
    let mut hints = [None; WARM_GROUP];
    let slots = geo.id_slots();
    // The chunks an id may be in, newest first, as `get` probes them: past
    // the sealed ones whose id range excludes it, up to the first chunk
    // `get` could not read (it reports that; nothing here goes past it).
    let may_hold = |id: u128| {
        chunks
            .iter()
            .map(move |pc| match pc.range(view) {
                None => None,
                Some(Some((lo, hi))) if id < lo || id > hi => Some(None),
                Some(_) => pc.map(view).map(|m| Some((pc.c, m))),
            })
            // Outer `None`: stop here; inner `None`: skip this chunk.
            .take_while(Option::is_some)
            .flatten()
            .flatten()
    };
    // Step 1: the home slot of each id, in every chunk it may be in; then
    // the slot each lookup will match, probed as `get` probes: the next
    // chunk at an empty slot, a few slots at most per chunk.
    for &EventId(id) in ids {
        let home = geo.id_slot_offset(geo.home_slot(id_hash(id)));
        for (_, chunk) in may_hold(id) {
            chunk.prefetch(home);
        }
    }
    let mut found = [None; WARM_GROUP];
    for (i, &EventId(id)) in ids.iter().enumerate() {
        let hash = id_hash(id);
        'chunks: for (c, chunk) in may_hold(id) {
            for k in 0..WARM_PROBES {
                let slot = view.id_slot(chunk, (geo.home_slot(hash) + k) % slots);
                if slot == 0 {
                    continue 'chunks;
                }
                match unpack_slot(slot) {
                    // A slot no writer produces: `get` reports it.
                    None => break 'chunks,
                    Some((r, fp)) if fp == fingerprint(hash) => {
                        found[i] = Some((c, r, chunk));
                        break 'chunks;
                    }
                    Some(_) => {}
                }
            }
            break;
        }
    }
    // Step 2: the rows those slots name; then their frame's place and names.
    let rows = found.map(|f| {
        let (c, r, chunk) = f?;
        let seq = (c << geo.log2) + r as u64;
        (r < geo.rows() && seq < wm.visible).then_some((chunk, r, seq))
    });
    for &(chunk, r, _) in rows.iter().flatten() {
        view.prefetch_row_in(chunk, r);
    }
    let mut frames = [None; WARM_GROUP];
    for (i, &(chunk, r, seq)) in rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.as_ref()?)))
    {
        // SYNC: a row below `wm.visible`, and the frame and names it points
        // at, were published before the snapshot's acquire load of `visible`
        // (as in `get`); the daemon never rewrites them.
        let row = chunk
            .published(geo.row_offset(r), ROW_LEN)
            .and_then(|b| Row::ref_from_bytes(b).ok())
            // A row that names another sequence is left to `get` to report.
            .filter(|row| row.sequence.get() == seq);
        if let Some(row) = row {
            if row.id() == ids[i].0 {
                hints[i] = Some(seq);
            }
            frames[i] = Some(row);
            view.prefetch_string(row.entity_id.get());
            view.prefetch_string(row.scope_id.get());
        }
    }
    // Step 3: the start of each frame (header, names, the payload's first
    // bytes); a longer payload is read in sequence, which the CPU prefetches.
    for row in frames.into_iter().flatten() {
        view.prefetch_frame(row);
    }
    hints
}

/// [`get`] of `id`, which [`warm`] found in the row of `seq` (below the
/// snapshot's `visible`): that row is read and checked as `get` reads it,
/// without probing the id table again. The same answer as `get`: `warm`
/// named the row `get` would reach first. (The first checks below cannot
/// fail for a hint from `warm`; they keep a wrong hint from answering.)
pub(crate) fn get_warmed<'v>(
    view: &'v View,
    wm: &Watermark,
    id: u128,
    seq: u64,
) -> Result<Option<&'v Row>, ReadError> {
    if id == 0 || seq >= wm.visible {
        return get(view, wm, id);
    }
    let row = view.row(seq)?;
    if row.id() != id {
        return get(view, wm, id);
    }
    Ok(admitted(wm, seq, row))
}

/// The row of `seq` holding the id a lookup asked for, if the snapshot
/// shows it: not in a cancelled range, not a tombstone.
fn admitted<'v>(wm: &Watermark, seq: u64, row: &'v Row) -> Option<&'v Row> {
    (wm.admits(seq) && !row.is_cancelled()).then_some(row)
}

/// Slots [`warm`] probes per chunk before leaving a lookup to `get`.
const WARM_PROBES: usize = 4;

/// The admitted row of event `id`, probing each chunk's id table newest first.
pub(crate) fn get<'v>(
    view: &'v View,
    wm: &Watermark,
    id: u128,
) -> Result<Option<&'v Row>, ReadError> {
    if wm.visible == 0 || id == 0 {
        return Ok(None);
    }
    let geo = view.geo;
    let hash = id_hash(id);
    let fp = fingerprint(hash);
    let slots = geo.id_slots();
    let last = geo.locate(wm.visible - 1).0;
    for c in (0..=last).rev() {
        if view
            .chunk_range(c, last)?
            .is_some_and(|(lo, hi)| id < lo || id > hi)
        {
            continue;
        }
        let chunk = view.chunk(c)?;
        let mut i = geo.home_slot(hash);
        for _ in 0..slots {
            let slot = view.id_slot(chunk, i);
            if slot == 0 {
                break;
            }
            let Some((r, sfp)) = unpack_slot(slot) else {
                return Err(ReadError::CorruptTable {
                    path: chunk.path().to_owned(),
                    what: "id slot with an empty row field",
                });
            };
            if sfp == fp {
                // SYNC: pairs with the daemon's Release store of the slot,
                // made after it wrote the row.
                fence(Ordering::Acquire);
                if r >= geo.rows() {
                    let path = chunk.path().to_owned();
                    return Err(ReadError::CorruptTable {
                        path,
                        what: "id slot names a row past the chunk",
                    });
                }
                let seq = (c << geo.log2) + r as u64;
                if seq < wm.visible {
                    let row = view.row(seq)?;
                    if row.id() == id {
                        return Ok(admitted(wm, seq, row));
                    }
                }
            }
            i = (i + 1) % slots;
        }
    }
    Ok(None)
}
