//! Segment files: a header, then 8-byte-aligned frames, zeros after the last
//! frame, and for sealed segments a footer frame plus a trailer in the last
//! 64 bytes of the (preallocated) file.

use crate::{align8, crc32};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Magic of a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WEIRSEG\0";
/// Current segment layout version.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes before the first frame.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Bytes of the trailer at the end of a sealed segment file.
pub const TRAILER_LEN: usize = 64;
/// Magic of a sealed segment's trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"WEIRSEAL";

/// Segment file header (64 bytes, at offset 0).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: [u8; 8],
    /// [`SEGMENT_VERSION`].
    pub version: U32,
    /// [`SEGMENT_HEADER_LEN`].
    pub header_len: U32,
    /// Segment number; file name is `{segment_id:010}.seg`.
    pub segment_id: U64,
    /// Sequence of the first event this segment may hold.
    pub base_seq: U64,
    /// Total file size (preallocated, never changes).
    pub file_len: U64,
    /// Instance id of the daemon that created it.
    pub instance: [u8; 16],
    /// Reserved, zero.
    pub reserved: [u8; 4],
    /// CRC-32 of bytes 0..60.
    pub crc: U32,
}
const _: () = assert!(size_of::<SegmentHeader>() == SEGMENT_HEADER_LEN);

/// Why segment or frame bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Header magic is wrong.
    #[error("bad magic: not a weir segment")]
    BadMagic,
    /// Layout version unknown to this build.
    #[error("segment layout version {found} is not supported (this build reads {SEGMENT_VERSION})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
    },
    /// A checksum did not match.
    #[error(
        "checksum mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Checksum {
        /// Offset of the structure.
        offset: u64,
        /// Stored CRC.
        stored: u32,
        /// Computed CRC.
        computed: u32,
    },
    /// A length or offset points outside the bytes available.
    #[error("frame at offset {offset} is truncated or its length {len} is out of bounds")]
    OutOfBounds {
        /// Offset of the frame.
        offset: u64,
        /// Length it claims.
        len: u64,
    },
    /// A field holds a value no writer produces.
    #[error("frame at offset {offset} is malformed: {what}")]
    Malformed {
        /// Offset of the frame.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
}

impl SegmentHeader {
    /// Builds a header with its CRC.
    #[must_use]
    pub fn new(segment_id: u64, base_seq: u64, file_len: u64, instance: u128) -> Self {
        let mut h = Self {
            magic: SEGMENT_MAGIC,
            version: SEGMENT_VERSION.into(),
            header_len: (SEGMENT_HEADER_LEN as u32).into(),
            segment_id: segment_id.into(),
            base_seq: base_seq.into(),
            file_len: file_len.into(),
            instance: instance.to_le_bytes(),
            reserved: [0; 4],
            crc: 0.into(),
        };
        h.crc = crc32(&h.as_bytes()[..60]).into();
        h
    }
    /// Parses and checks a header from the start of a segment.
    pub fn parse(bytes: &[u8]) -> Result<Self, FrameError> {
        let (h, _) = Self::read_from_prefix(bytes).map_err(|_| FrameError::OutOfBounds {
            offset: 0,
            len: SEGMENT_HEADER_LEN as u64,
        })?;
        if h.magic != SEGMENT_MAGIC {
            return Err(FrameError::BadMagic);
        }
        if h.version.get() != SEGMENT_VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: h.version.get(),
            });
        }
        let computed = crc32(&h.as_bytes()[..60]);
        if computed != h.crc.get() {
            return Err(FrameError::Checksum {
                offset: 0,
                stored: h.crc.get(),
                computed,
            });
        }
        Ok(h)
    }
}

/// Frame types.
pub mod frame_type {
    /// An event.
    pub const EVENT: u8 = 1;
    /// A cancelled sequence range `[sequence, sequence + batch_len)`.
    pub const CANCEL: u8 = 2;
    /// A sealed segment's footer: the body lists every frame.
    pub const FOOTER: u8 = 3;
}

/// Frame flag bits.
pub mod frame_flags {
    /// Last frame of its batch: the batch is complete on disk.
    pub const BATCH_END: u8 = 1;
    /// `causation_id` is set.
    pub const HAS_CAUSATION: u8 = 2;
}

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 184;

/// The fixed part of every frame (184 bytes). The body follows: entity,
/// scope, payload, then zero padding to a multiple of 8.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FrameHeader {
    /// Whole frame length (header + body + padding), a multiple of 8. Zero marks the end of data.
    pub len: U32,
    /// CRC-32 of bytes `8..len` of the frame.
    pub crc: U32,
    /// [`frame_type`].
    pub frame_type: u8,
    /// [`frame_flags`].
    pub flags: u8,
    /// Event kind.
    pub kind: U16,
    /// Per-entity clock.
    pub clock: U32,
    /// Global sequence (for CANCEL: first cancelled sequence).
    pub sequence: U64,
    /// Event id.
    pub event_id: [u8; 16],
    /// Correlation id.
    pub correlation_id: [u8; 16],
    /// Causation id (zero when the flag is clear).
    pub causation_id: [u8; 16],
    /// Idempotency key; zero means none.
    pub idempotency_key: [u8; 16],
    /// Wall time, ms since the epoch (monotonic across restarts).
    pub wall_ms: U64,
    /// Sequence of the first event of this frame's batch.
    pub batch_first: U64,
    /// Events in the batch (for CANCEL: sequences cancelled; for FOOTER: entries).
    pub batch_len: U32,
    /// Payload bytes.
    pub payload_len: U32,
    /// Entity name bytes.
    pub entity_len: U16,
    /// Scope name bytes.
    pub scope_len: U16,
    /// Reserved, zero.
    pub reserved: U32,
    /// Previous event_hash of the same entity.
    pub prev_hash: [u8; 32],
    /// This event's hash.
    pub event_hash: [u8; 32],
}
const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_LEN);

/// A decoded event frame borrowing the segment bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    /// The header.
    pub header: &'a FrameHeader,
    /// Entity name.
    pub entity: &'a [u8],
    /// Scope name.
    pub scope: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// What `event_hash` covers, as this frame records it (its own
    /// `prev_hash` included).
    #[must_use]
    pub fn hash_input(&self) -> crate::hash::HashInput<'a> {
        let h = self.header;
        crate::hash::HashInput {
            event_id: h.event_id(),
            correlation_id: h.correlation_id(),
            causation_id: h.causation_id(),
            kind: h.kind.get(),
            clock: h.clock.get(),
            wall_ms: h.wall_ms.get(),
            entity: self.entity,
            scope: self.scope,
            prev_hash: h.prev_hash,
            payload: self.payload,
        }
    }
}

impl FrameHeader {
    /// Event id.
    #[must_use]
    pub fn event_id(&self) -> u128 {
        u128::from_le_bytes(self.event_id)
    }
    /// Correlation id.
    #[must_use]
    pub fn correlation_id(&self) -> u128 {
        u128::from_le_bytes(self.correlation_id)
    }
    /// Causation id, if set.
    #[must_use]
    pub fn causation_id(&self) -> Option<u128> {
        (self.flags & frame_flags::HAS_CAUSATION != 0)
            .then(|| u128::from_le_bytes(self.causation_id))
    }
    /// Idempotency key, if set.
    #[must_use]
    pub fn idempotency_key(&self) -> Option<u128> {
        let k = u128::from_le_bytes(self.idempotency_key);
        (k != 0).then_some(k)
    }
}

/// Everything needed to encode one event frame.
#[derive(Debug, Clone, Copy)]
pub struct EventFrame<'a> {
    /// Global sequence.
    pub sequence: u64,
    /// First sequence of its batch.
    pub batch_first: u64,
    /// Events in the batch.
    pub batch_len: u32,
    /// Is this the batch's last frame?
    pub batch_end: bool,
    /// Kind.
    pub kind: u16,
    /// Clock.
    pub clock: u32,
    /// Event id.
    pub event_id: u128,
    /// Correlation id.
    pub correlation_id: u128,
    /// Causation id.
    pub causation_id: Option<u128>,
    /// Idempotency key.
    pub idempotency_key: Option<u128>,
    /// Wall time.
    pub wall_ms: u64,
    /// Entity.
    pub entity: &'a [u8],
    /// Scope.
    pub scope: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
    /// Predecessor hash.
    pub prev_hash: [u8; 32],
    /// This event's hash.
    pub event_hash: [u8; 32],
}

/// Length of the frame that would hold this body.
#[must_use]
pub fn frame_len(entity: usize, scope: usize, payload: usize) -> usize {
    align8(FRAME_HEADER_LEN + entity + scope + payload)
}

fn finish(out: &mut Vec<u8>, start: usize) {
    let end = align8(out.len());
    out.resize(end, 0);
    let len = (end - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32(&out[start + 8..end]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the encoded frame to `out`; returns its length.
pub fn encode_event(out: &mut Vec<u8>, f: &EventFrame<'_>) -> usize {
    let start = out.len();
    let mut flags = 0;
    if f.batch_end {
        flags |= frame_flags::BATCH_END;
    }
    if f.causation_id.is_some() {
        flags |= frame_flags::HAS_CAUSATION;
    }
    let h = FrameHeader {
        len: 0.into(),
        crc: 0.into(),
        frame_type: frame_type::EVENT,
        flags,
        kind: f.kind.into(),
        clock: f.clock.into(),
        sequence: f.sequence.into(),
        event_id: f.event_id.to_le_bytes(),
        correlation_id: f.correlation_id.to_le_bytes(),
        causation_id: f.causation_id.unwrap_or(0).to_le_bytes(),
        idempotency_key: f.idempotency_key.unwrap_or(0).to_le_bytes(),
        wall_ms: f.wall_ms.into(),
        batch_first: f.batch_first.into(),
        batch_len: f.batch_len.into(),
        payload_len: (f.payload.len() as u32).into(),
        entity_len: (f.entity.len() as u16).into(),
        scope_len: (f.scope.len() as u16).into(),
        reserved: 0.into(),
        prev_hash: f.prev_hash,
        event_hash: f.event_hash,
    };
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(f.entity);
    out.extend_from_slice(f.scope);
    out.extend_from_slice(f.payload);
    finish(out, start);
    out.len() - start
}

/// Appends a CANCEL frame for `[first, first + count)`; returns its length.
pub fn encode_cancel(out: &mut Vec<u8>, first: u64, count: u32) -> usize {
    let start = out.len();
    let mut h = FrameHeader::new_zeroed();
    h.frame_type = frame_type::CANCEL;
    h.flags = frame_flags::BATCH_END;
    h.sequence = first.into();
    h.batch_first = first.into();
    h.batch_len = count.into();
    out.extend_from_slice(h.as_bytes());
    finish(out, start);
    out.len() - start
}

/// One footer entry: where a frame starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FooterEntry {
    /// Offset of the frame in the segment.
    pub offset: U64,
    /// Frame length.
    pub len: U32,
    /// The frame's CRC, as stored in its header.
    pub crc: U32,
}

/// Most entries a FOOTER frame lists: its length (header, then 16 bytes an
/// entry) must fit the frame's u32 `len`.
pub const MAX_FOOTER_ENTRIES: usize =
    (u32::MAX as usize - FRAME_HEADER_LEN) / size_of::<FooterEntry>();

/// Longest segment file the daemon creates (32 GiB): every frame takes at
/// least a header (a CANCEL frame is nothing else) and a footer entry, so
/// a segment this long never holds more frames than a footer lists.
pub const SEGMENT_MAX_LEN: u64 = 1 << 35;
const _: () = assert!(
    SEGMENT_MAX_LEN / (FRAME_HEADER_LEN + size_of::<FooterEntry>()) as u64
        <= MAX_FOOTER_ENTRIES as u64
);

/// Appends a FOOTER frame listing `entries`; returns its length. `None`,
/// with nothing appended, for more than [`MAX_FOOTER_ENTRIES`] entries,
/// whose lengths the frame's u32 fields cannot hold.
pub fn encode_footer(out: &mut Vec<u8>, entries: &[FooterEntry]) -> Option<usize> {
    if entries.len() > MAX_FOOTER_ENTRIES {
        return None;
    }
    let count = u32::try_from(entries.len()).ok()?;
    let body = u32::try_from(size_of_val(entries)).ok()?;
    let start = out.len();
    let mut h = FrameHeader::new_zeroed();
    h.frame_type = frame_type::FOOTER;
    h.flags = frame_flags::BATCH_END;
    h.batch_len = count.into();
    h.payload_len = body.into();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(entries.as_bytes());
    finish(out, start);
    Some(out.len() - start)
}

/// The trailer in the last 64 bytes of a sealed segment file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Trailer {
    /// [`TRAILER_MAGIC`].
    pub magic: [u8; 8],
    /// Offset of the FOOTER frame.
    pub footer_offset: U64,
    /// End of the data (footer frame included).
    pub data_end: U64,
    /// First sequence held (or `base_seq` if empty).
    pub first_seq: U64,
    /// One past the last sequence held, cancelled ranges included.
    pub end_seq: U64,
    /// Number of frames listed in the footer.
    pub entries: U64,
    /// Reserved, zero.
    pub reserved: [u8; 12],
    /// CRC-32 of bytes 0..60.
    pub crc: U32,
}
const _: () = assert!(size_of::<Trailer>() == TRAILER_LEN);

impl Trailer {
    /// Builds a trailer with its CRC.
    #[must_use]
    pub fn new(
        footer_offset: u64,
        data_end: u64,
        first_seq: u64,
        end_seq: u64,
        entries: u64,
    ) -> Self {
        let mut t = Self {
            magic: TRAILER_MAGIC,
            footer_offset: footer_offset.into(),
            data_end: data_end.into(),
            first_seq: first_seq.into(),
            end_seq: end_seq.into(),
            entries: entries.into(),
            reserved: [0; 12],
            crc: 0.into(),
        };
        t.crc = crc32(&t.as_bytes()[..60]).into();
        t
    }
    /// Parses the last 64 bytes of a file; `None` if it is not a valid trailer.
    #[must_use]
    pub fn parse(file: &[u8]) -> Option<Self> {
        let tail = file.get(file.len().checked_sub(TRAILER_LEN)?..)?;
        let t = Self::read_from_bytes(tail).ok()?;
        (t.magic == TRAILER_MAGIC && crc32(&t.as_bytes()[..60]) == t.crc.get()).then_some(t)
    }
}

/// What [`decode_at`] found at an offset.
#[derive(Debug, Clone, Copy)]
pub enum Decoded<'a> {
    /// Zeros: the end of written data.
    End,
    /// An event.
    Event(FrameRef<'a>),
    /// A cancelled range.
    Cancel {
        /// First sequence.
        first: u64,
        /// How many.
        count: u32,
    },
    /// A footer with its entries' bytes.
    Footer(&'a [u8]),
}

/// Decodes the frame at `offset` of `seg`, checking bounds, lengths and CRC.
/// `verify_crc = false` skips the body checksum (for frames a sealed
/// segment's footer already vouches for).
pub fn decode_at(
    seg: &[u8],
    offset: usize,
    verify_crc: bool,
) -> Result<(Decoded<'_>, usize), FrameError> {
    let off64 = offset as u64;
    let Some(head) = seg.get(offset..offset + FRAME_HEADER_LEN) else {
        // Fewer than a header's bytes left: only zeros may remain.
        return if seg.get(offset..).is_some_and(|r| r.iter().all(|b| *b == 0)) {
            Ok((Decoded::End, 0))
        } else {
            Err(FrameError::OutOfBounds {
                offset: off64,
                len: FRAME_HEADER_LEN as u64,
            })
        };
    };
    let h = FrameHeader::ref_from_bytes(head).map_err(|_| FrameError::Malformed {
        offset: off64,
        what: "misaligned",
    })?;
    let len = h.len.get() as usize;
    if len == 0 {
        return if head.iter().all(|b| *b == 0) {
            Ok((Decoded::End, 0))
        } else {
            Err(FrameError::Malformed {
                offset: off64,
                what: "zero length with non-zero header",
            })
        };
    }
    if len < FRAME_HEADER_LEN || !len.is_multiple_of(8) || offset + len > seg.len() {
        return Err(FrameError::OutOfBounds {
            offset: off64,
            len: len as u64,
        });
    }
    let frame = &seg[offset..offset + len];
    if verify_crc {
        let computed = crc32(&frame[8..]);
        if computed != h.crc.get() {
            return Err(FrameError::Checksum {
                offset: off64,
                stored: h.crc.get(),
                computed,
            });
        }
    }
    let (el, sl, pl) = (
        h.entity_len.get() as usize,
        h.scope_len.get() as usize,
        h.payload_len.get() as usize,
    );
    if FRAME_HEADER_LEN + el + sl + pl > len || align8(FRAME_HEADER_LEN + el + sl + pl) != len {
        return Err(FrameError::Malformed {
            offset: off64,
            what: "body lengths disagree with frame length",
        });
    }
    let body = &frame[FRAME_HEADER_LEN..];
    let decoded = match h.frame_type {
        frame_type::EVENT => Decoded::Event(FrameRef {
            header: h,
            entity: &body[..el],
            scope: &body[el..el + sl],
            payload: &body[el + sl..el + sl + pl],
        }),
        frame_type::CANCEL => Decoded::Cancel {
            first: h.sequence.get(),
            count: h.batch_len.get(),
        },
        frame_type::FOOTER => {
            if pl != h.batch_len.get() as usize * size_of::<FooterEntry>() {
                return Err(FrameError::Malformed {
                    offset: off64,
                    what: "footer size",
                });
            }
            Decoded::Footer(&body[..pl])
        }
        _ => {
            return Err(FrameError::Malformed {
                offset: off64,
                what: "unknown frame type",
            });
        }
    };
    Ok((decoded, len))
}

/// Reads the footer entries out of a FOOTER body.
#[must_use]
pub fn footer_entries(body: &[u8]) -> Vec<FooterEntry> {
    body.chunks_exact(size_of::<FooterEntry>())
        .filter_map(|c| FooterEntry::read_from_bytes(c).ok())
        .collect()
}

#[cfg(test)]
mod tests;
