//! [`Entry`]: one visible event, borrowed from the reader's mappings.
#![forbid(unsafe_code)]

use crate::error::ReadError;
use crate::view::View;
use serde::de::DeserializeOwned;
use std::cell::OnceCell;
use weir_protocol::index::{NS_ENTITY, NS_SCOPE, ROW_BATCH_END, ROW_HAS_CAUSATION, Row};
use weir_protocol::segment::{Decoded, FrameRef, decode_at, frame_flags};
use weir_protocol::{EventId, EventKind};

/// One visible event. Header fields come from the index row (already
/// checked) or, for a lookup by place, from the frame; `payload`,
/// `prev_hash` and `event_hash` come from the frame in the mapped segment,
/// CRC-checked on first use.
///
/// Small (it borrows the row or the frame instead of copying either), so
/// that handing one back, or a `Vec` of them, copies a few words per event.
pub struct Entry<'r> {
    view: &'r View,
    head: Head<'r>,
    entity: &'r str,
    scope: &'r str,
}

// An entry is handed back by value, often in a `Vec`: a few words, not a
// copied row (224 bytes when it held one).
const _: () = assert!(size_of::<Entry<'static>>() <= 112);

/// Where an [`Entry`]'s header fields are read.
enum Head<'r> {
    /// The event's index row; its frame is read when first asked for.
    Row(&'r Row, OnceCell<FrameRef<'r>>),
    /// The event's frame, read (and CRC-checked) first.
    Frame(FrameRef<'r>),
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("sequence", &self.sequence())
            .field("event_id", &self.event_id())
            .field("entity", &self.entity)
            .field("scope", &self.scope)
            .field("kind", &self.kind())
            .field("clock", &self.clock())
            .finish_non_exhaustive()
    }
}

impl<'r> Entry<'r> {
    /// Builds an entry from a checked, visible, non-tombstone row.
    pub(crate) fn new(view: &'r View, row: &'r Row) -> Result<Self, ReadError> {
        let entity = view.name(row.entity_id.get(), NS_ENTITY)?;
        let scope = view.name(row.scope_id.get(), NS_SCOPE)?;
        Ok(Self::with_names(view, row, entity, scope))
    }

    /// [`new`](Self::new) with the row's entity and scope names already
    /// looked up (by the caller, for these very ids).
    pub(crate) fn with_names(
        view: &'r View,
        row: &'r Row,
        entity: &'r str,
        scope: &'r str,
    ) -> Self {
        Self {
            view,
            head: Head::Row(row, OnceCell::new()),
            entity,
            scope,
        }
    }

    /// An entry whose frame was read (and CRC-checked) first, with no
    /// index row: `entity` and `scope` are the frame's names, as text.
    pub(crate) fn with_frame(
        view: &'r View,
        frame: FrameRef<'r>,
        entity: &'r str,
        scope: &'r str,
    ) -> Self {
        Self {
            view,
            head: Head::Frame(frame),
            entity,
            scope,
        }
    }

    /// Global sequence.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        match &self.head {
            Head::Row(r, _) => r.sequence.get(),
            Head::Frame(f) => f.header.sequence.get(),
        }
    }
    /// Event id.
    #[must_use]
    pub fn event_id(&self) -> EventId {
        match &self.head {
            Head::Row(r, _) => EventId(r.id()),
            Head::Frame(f) => EventId(f.header.event_id()),
        }
    }
    /// Entity name.
    #[must_use]
    pub fn entity(&self) -> &'r str {
        self.entity
    }
    /// Scope name.
    #[must_use]
    pub fn scope(&self) -> &'r str {
        self.scope
    }
    /// Kind.
    #[must_use]
    pub fn kind(&self) -> EventKind {
        EventKind(match &self.head {
            Head::Row(r, _) => r.kind.get(),
            Head::Frame(f) => f.header.kind.get(),
        })
    }
    /// Per-entity clock (0 for an entity's first event).
    #[must_use]
    pub fn clock(&self) -> u32 {
        match &self.head {
            Head::Row(r, _) => r.clock.get(),
            Head::Frame(f) => f.header.clock.get(),
        }
    }
    /// Wall time, ms since the Unix epoch.
    #[must_use]
    pub fn wall_ms(&self) -> u64 {
        match &self.head {
            Head::Row(r, _) => r.wall_ms.get(),
            Head::Frame(f) => f.header.wall_ms.get(),
        }
    }
    /// Correlation id.
    #[must_use]
    pub fn correlation_id(&self) -> EventId {
        EventId(u128::from_le_bytes(match &self.head {
            Head::Row(r, _) => r.correlation_id,
            Head::Frame(f) => f.header.correlation_id,
        }))
    }
    /// Causation id, if the event has one.
    #[must_use]
    pub fn causation_id(&self) -> Option<EventId> {
        let (has, id) = match &self.head {
            Head::Row(r, _) => (r.flags.get() & ROW_HAS_CAUSATION != 0, r.causation_id),
            Head::Frame(f) => (
                f.header.flags & frame_flags::HAS_CAUSATION != 0,
                f.header.causation_id,
            ),
        };
        has.then(|| EventId(u128::from_le_bytes(id)))
    }
    /// Is this the last event of its batch?
    #[must_use]
    pub fn is_batch_end(&self) -> bool {
        match &self.head {
            Head::Row(r, _) => r.flags.get() & ROW_BATCH_END != 0,
            Head::Frame(f) => f.header.flags & frame_flags::BATCH_END != 0,
        }
    }

    /// The decoded frame, CRC-checked and matched against the row.
    pub fn frame(&self) -> Result<&FrameRef<'r>, ReadError> {
        match &self.head {
            Head::Frame(f) => Ok(f),
            Head::Row(row, cell) => {
                if let Some(f) = cell.get() {
                    return Ok(f);
                }
                let f = load_frame(self.view, row)?;
                Ok(cell.get_or_init(|| f))
            }
        }
    }
    /// The same entity's previous `event_hash` (zeros for its first event).
    pub fn prev_hash(&self) -> Result<[u8; 32], ReadError> {
        Ok(self.frame()?.header.prev_hash)
    }
    /// This event's hash.
    pub fn event_hash(&self) -> Result<[u8; 32], ReadError> {
        Ok(self.frame()?.header.event_hash)
    }
    /// Payload bytes, straight from the mapped segment after the frame CRC check.
    pub fn payload(&self) -> Result<&'r [u8], ReadError> {
        Ok(self.frame()?.payload)
    }
    /// Decodes a msgpack payload.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, ReadError> {
        rmp_serde::from_slice(self.payload()?).map_err(|source| ReadError::Decode {
            sequence: self.sequence(),
            source,
        })
    }
}

fn load_frame<'r>(view: &'r View, row: &Row) -> Result<FrameRef<'r>, ReadError> {
    let (sequence, segment, offset) = (
        row.sequence.get(),
        u64::from(row.segment_id.get()),
        row.frame_offset.get(),
    );
    let mismatch = |what| ReadError::FrameMismatch {
        sequence,
        segment,
        offset,
        what,
    };
    let seg = view.segment(segment)?;
    let start = usize::try_from(offset).map_err(|_| mismatch("offset beyond the address space"))?;
    let end = start
        .checked_add(row.frame_len.get() as usize)
        .ok_or_else(|| mismatch("frame end overflows"))?;
    // SYNC: the row is published (acquired through `visible`); the daemon
    // wrote this frame, and everything before it in the segment, before the
    // row, and never rewrites frame bytes.
    let bytes = seg
        .published(0, end)
        .ok_or_else(|| mismatch("frame runs past the segment file"))?;
    let (decoded, len) = decode_at(bytes, start, true).map_err(|source| ReadError::Frame {
        sequence,
        segment,
        offset,
        source,
    })?;
    let Decoded::Event(f) = decoded else {
        return Err(mismatch("not an event frame"));
    };
    if len != row.frame_len.get() as usize {
        return Err(mismatch("frame length"));
    }
    if f.header.sequence.get() != sequence {
        return Err(mismatch("sequence"));
    }
    if f.header.event_id != row.event_id {
        return Err(mismatch("event id"));
    }
    if f.header.kind != row.kind || f.header.clock != row.clock {
        return Err(mismatch("kind or clock"));
    }
    Ok(f)
}
