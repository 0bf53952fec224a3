//! Lookups by self-locating id: the frame first, no index probe.
//!
//! An id the daemon assigned names its frame's place in the log under the
//! store's id key (`weir_protocol::locate`). [`get`] reads the frame there
//! and answers only if everything holds; otherwise the caller probes the
//! index, as for a client-chosen id. What must hold:
//! - the place is below the gate's `published` position, so every byte read
//!   was written before (and is never written again);
//! - the frame there is an EVENT frame whose CRC holds and which carries the
//!   very id asked for (128 bits);
//! - its sequence is admitted by the snapshot (below `visible`, in no
//!   cancelled range, and the gate's ranges are complete);
//! - in a segment left unsealed by a crash, its sequence is below the next
//!   segment's first: a daemon that restarts after a crash continues in a
//!   new segment from the last intact batch, so intact frames of a torn
//!   batch may lie past that point in the old segment with sequences the
//!   log has since given to other events (`View::seq_limit`).
#![forbid(unsafe_code)]

use crate::entry::Entry;
use crate::gate::Watermark;
use crate::view::{FRAME_PREFETCH_BYTES, View};
use weir_protocol::locate::{locate, unpack_position};
use weir_protocol::segment::{Decoded, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, decode_at};

/// Where a self-locating id of this store would have its frame:
/// `(segment, offset)`; `None` if the gate has no key or `id` is no UUIDv7.
pub(crate) fn place(view: &View, id: u128) -> Option<(u64, u64)> {
    locate(view.gate.id_key?, id)
}

/// The entry of `id` found through its place in the log, or `None` (not a
/// self-locating id of this store, or the place does not hold it visibly):
/// the caller then asks the index.
pub(crate) fn get<'r>(view: &'r View, wm: &Watermark, id: u128) -> Option<Entry<'r>> {
    let at = place(view, id)?;
    get_at(view, wm, view.gate.published(), id, at)
}

/// [`get`] at the gate's current watermark, without taking a snapshot: the
/// event's sequence is checked against `visible` and, in place, against
/// the cancelled ranges. `None` in every case [`get`] gives `None`, and also
/// when the ranges are being written or overflowed: the caller then asks
/// the index under a [`Watermark`].
pub(crate) fn get_now(view: &View, id: u128) -> Option<Entry<'_>> {
    // `visible` first, as `Gate::watermark` loads it: ranges read after it
    // hold every cancelled sequence below it.
    let visible = view.gate.visible();
    let at = place(view, id)?;
    let admits = |seq| seq < visible && view.gate.cancelled_now(seq) == Some(false);
    read_at(view, admits, view.gate.published(), id, at)
}

/// [`get`] with the place of `id` (from [`place`]) and the gate's
/// `published` word (loaded with Acquire) at hand.
pub(crate) fn get_at<'r>(
    view: &'r View,
    wm: &Watermark,
    published: u64,
    id: u128,
    at: (u64, u64),
) -> Option<Entry<'r>> {
    if wm.overflow {
        return None;
    }
    read_at(view, |seq| wm.admits(seq), published, id, at)
}

/// The frame of `id` at `(segment, offset)`, if it holds `id` and `admits`
/// its sequence.
fn read_at<'r>(
    view: &'r View,
    admits: impl FnOnce(u64) -> bool,
    published: u64,
    id: u128,
    (segment, offset): (u64, u64),
) -> Option<Entry<'r>> {
    let (last, end) = unpack_position(published);
    if segment > last {
        return None;
    }
    let map = view.segment(segment).ok()?;
    let limit = if segment == last {
        usize::try_from(end).ok()?.min(map.len())
    } else {
        map.len()
    };
    let start = usize::try_from(offset).ok()?;
    if start < SEGMENT_HEADER_LEN || start.checked_add(FRAME_HEADER_LEN)? > limit {
        return None;
    }
    // SYNC: bytes below `published` (loaded with Acquire by the caller)
    // were written before it was stored, and are never written again.
    let bytes = map.published(0, limit)?;
    let (Decoded::Event(frame), _) = decode_at(bytes, start, true).ok()? else {
        return None;
    };
    let h = frame.header;
    let seq = h.sequence.get();
    if h.event_id() != id || !admits(seq) {
        return None;
    }
    if segment < last && seq >= view.seq_limit(segment)? {
        return None;
    }
    let text = |b| crate::map::ascii_str(b).or_else(|| std::str::from_utf8(b).ok());
    let (entity, scope) = (text(frame.entity)?, text(frame.scope)?);
    Some(Entry::with_frame(view, frame, entity, scope))
}

/// Asks the CPU to fetch the start of the frame at `(segment, offset)`
/// (from [`place`]): the lookup then finds it cached. The frame's length is
/// not known yet, so its first [`FRAME_PREFETCH_BYTES`] (fetching only part
/// of a located frame cost `get_many` a third of its speed).
pub(crate) fn prefetch(view: &View, (segment, offset): (u64, u64)) {
    view.prefetch_frame_at(segment, offset, FRAME_PREFETCH_BYTES);
}
