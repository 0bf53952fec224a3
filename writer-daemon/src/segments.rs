//! The append-only segment log: frames go into the current segment at the
//! write offset; a full segment is sealed with a footer and a trailer and the
//! next one is created. Published bytes are never rewritten.

use crate::config::SyncMode;
use crate::storage::{SegmentBytes, Storage};
use std::io;
use weir_protocol::align8;
use weir_protocol::segment::{
    FRAME_HEADER_LEN, FooterEntry, MAX_FOOTER_ENTRIES, SEGMENT_HEADER_LEN, SegmentHeader,
    TRAILER_LEN, Trailer, encode_footer,
};
use zerocopy::IntoBytes;

/// Where the log continues after restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// Segment to write into.
    pub segment_id: u64,
    /// Offset of the next frame in it.
    pub offset: u64,
}

/// An unsealed segment that writing continues in.
#[derive(Debug, Clone)]
pub struct OpenSegment {
    /// Where the next frame goes.
    pub pos: LogPosition,
    /// Its frames so far.
    pub footer: Vec<FooterEntry>,
    /// Its base sequence.
    pub base_seq: u64,
    /// One past the last sequence it holds.
    pub end_seq: u64,
    /// Its first sequence, if it holds any frame.
    pub first_seq: Option<u64>,
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Writing or syncing the current segment's footer and trailer failed:
    /// they may be half-written.
    #[error("sealing the segment failed: {0}")]
    Seal(io::Error),
    /// The current segment is sealed; creating the next failed. Nothing
    /// else was written.
    #[error("cannot create segment {}: {source}", crate::storage::segment_file_name(*.segment))]
    Create {
        /// The segment that could not be created.
        segment: u64,
        /// Why.
        source: io::Error,
    },
}

/// Bytes of a CANCEL frame (a header, no body).
const CANCEL_FRAME_LEN: usize = FRAME_HEADER_LEN;

/// The writer's handle on the segment files.
#[derive(Debug)]
pub struct SegmentLog {
    storage: Box<dyn Storage>,
    /// The current segment's length (its header's `file_len`).
    seg_len: u64,
    /// The length of the segments this log creates (`segment-max-bytes`).
    next_len: u64,
    instance: u128,
    current: u64,
    offset: u64,
    footer: Vec<FooterEntry>,
    first_seq: Option<u64>,
    end_seq: u64,
    base_seq: u64,
    unsynced: bool,
    /// Has the next segment been asked for?
    prepared: bool,
    /// Is the current segment sealed while its successor does not exist
    /// yet (a rotation whose create failed)? Nothing more goes into it:
    /// the next rotation only creates the successor.
    sealed: bool,
    /// Segments created since start (for stats).
    pub segments: u64,
}

impl SegmentLog {
    /// Starts a fresh segment `segment_id` whose first sequence is `base_seq`.
    /// Used on an empty store and after a crash (a torn tail is never
    /// appended to: writing continues in a new segment).
    pub fn start_new(
        mut storage: Box<dyn Storage>,
        seg_len: u64,
        instance: u128,
        segment_id: u64,
        base_seq: u64,
    ) -> io::Result<Self> {
        let header = SegmentHeader::new(segment_id, base_seq, seg_len, instance);
        // The daemon is starting: zero-fill now, so that the first syncs into
        // this segment commit no extent conversions (as in later segments,
        // which are zero-filled in the background).
        storage.prepare_now(segment_id, seg_len);
        storage.create(segment_id, seg_len, header.as_bytes())?;
        let segments = storage.list()?.len() as u64;
        Ok(Self {
            storage,
            seg_len,
            next_len: seg_len,
            instance,
            current: segment_id,
            offset: SEGMENT_HEADER_LEN as u64,
            footer: Vec::new(),
            first_seq: None,
            end_seq: base_seq,
            base_seq,
            unsynced: false,
            prepared: false,
            sealed: false,
            segments,
        })
    }

    /// Continues an intact, unsealed segment: `open.footer` lists its frames
    /// so far. The segment keeps the length its header records (it may have
    /// been made under another `segment-max-bytes`); later ones get
    /// `next_len`.
    ///
    /// # Errors
    /// The segment cannot be read, or its header does not check out or
    /// names a length other than the file's.
    pub fn resume(
        storage: Box<dyn Storage>,
        next_len: u64,
        instance: u128,
        open: OpenSegment,
    ) -> io::Result<Self> {
        let OpenSegment {
            pos,
            footer,
            base_seq,
            end_seq,
            first_seq,
        } = open;
        let seg_len = {
            let bytes = storage.read(pos.segment_id)?;
            let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
            let head = bytes
                .get(..SEGMENT_HEADER_LEN)
                .ok_or_else(|| bad("shorter than a segment header".into()))?;
            let header = SegmentHeader::parse(head).map_err(|e| bad(e.to_string()))?;
            let len = header.file_len.get();
            if len != bytes.len() as u64 || pos.offset > len {
                return Err(bad(format!(
                    "header says {len} bytes, the file has {} (write offset {})",
                    bytes.len(),
                    pos.offset
                )));
            }
            len
        };
        let segments = storage.list()?.len() as u64;
        Ok(Self {
            storage,
            seg_len,
            next_len,
            instance,
            current: pos.segment_id,
            offset: pos.offset,
            footer,
            first_seq,
            end_seq,
            base_seq,
            unsynced: false,
            prepared: false,
            sealed: false,
            segments,
        })
    }

    /// Current position.
    #[must_use]
    pub fn position(&self) -> LogPosition {
        LogPosition {
            segment_id: self.current,
            offset: self.offset,
        }
    }

    /// The length of the segments this log writes into from now on: the
    /// current one's, or the configured length of the next if larger.
    #[must_use]
    pub fn writing_len(&self) -> u64 {
        self.seg_len.max(self.next_len)
    }

    fn footer_room(entries: usize) -> u64 {
        align8(FRAME_HEADER_LEN + entries * size_of::<FooterEntry>()) as u64 + TRAILER_LEN as u64
    }

    /// Would a group of `bytes` in `frames` frames fit in the current
    /// segment, with room left for the CANCEL frame that takes the group
    /// back if its sync fails (see [`fits_exactly`](Self::fits_exactly))?
    /// Without that room, a group that fills the segment and then fails its
    /// sync would leave the cancel where the seal's footer must go.
    #[must_use]
    pub fn fits(&self, bytes: usize, frames: usize) -> bool {
        self.fits_exactly(bytes + CANCEL_FRAME_LEN, frames + 1)
    }

    /// Would `bytes` of `frames` frames fit in the current segment, with the
    /// seal's footer and trailer after them? Nothing fits in a sealed one,
    /// nor past the frames a footer lists (only a segment longer than
    /// `SEGMENT_MAX_LEN`, which an older build could create, gets there).
    #[must_use]
    pub fn fits_exactly(&self, bytes: usize, frames: usize) -> bool {
        !self.sealed
            && self.footer.len() + frames <= MAX_FOOTER_ENTRIES
            && self.offset + bytes as u64 + Self::footer_room(self.footer.len() + frames)
                <= self.seg_len
    }

    /// Would `bytes` of `frames` frames fit in the next segment this log
    /// creates, while empty?
    #[must_use]
    pub fn fits_new(&self, bytes: usize, frames: usize) -> bool {
        Self::fits_empty(self.next_len, bytes as u64, frames)
    }

    /// Would `bytes` of `frames` frames fit in an empty segment of `len`
    /// bytes, as [`fits`](Self::fits) counts (header, the seal, room for a
    /// CANCEL frame)? A group that does not fit its segment goes to the
    /// next one, so a command that fails this can be written nowhere; the
    /// configuration's batch limits keep every command within it.
    #[must_use]
    pub fn fits_empty(len: u64, bytes: u64, frames: usize) -> bool {
        let fixed = (SEGMENT_HEADER_LEN + CANCEL_FRAME_LEN) as u64 + Self::footer_room(frames + 1);
        bytes.checked_add(fixed).is_some_and(|need| need <= len)
    }

    /// Writes encoded frames (`lens[i]` bytes each, covering sequences
    /// `first..end`) at the write offset. Returns the offset of the first.
    pub fn append(
        &mut self,
        bytes: &[u8],
        frames: &[(u32, u32)],
        first: u64,
        end: u64,
    ) -> io::Result<u64> {
        debug_assert!(self.fits_exactly(bytes.len(), frames.len()));
        let at = self.offset;
        self.storage.write_at(self.current, at, bytes)?;
        let mut off = at;
        for &(len, crc) in frames {
            self.footer.push(FooterEntry {
                offset: off.into(),
                len: len.into(),
                crc: crc.into(),
            });
            off += u64::from(len);
        }
        self.offset = off;
        if !self.prepared && self.offset > self.seg_len / 2 {
            // Half full: have the next segment zero-filled in the background,
            // late enough not to compete with a fresh start's first syncs.
            self.prepared = true;
            self.storage.prepare(self.current + 1, self.next_len);
        }
        self.first_seq.get_or_insert(first);
        self.end_seq = end;
        self.unsynced = true;
        Ok(at)
    }

    /// Calls `f` with the event frame of segment `id` at `off` (CRC-checked):
    /// a retried request is compared with what its key first stored.
    /// `mapped` keeps the last segment read, for the next call: the keys of
    /// a retried batch mostly name frames of one segment, which is then
    /// mapped once, not once per key. Keep it no longer than the log is left
    /// unwritten (a copy, as the simulated storage gives, would go stale).
    pub fn with_event<R>(
        &self,
        mapped: &mut Option<(u64, SegmentBytes)>,
        id: u64,
        off: u64,
        f: impl FnOnce(&weir_protocol::segment::FrameRef<'_>) -> R,
    ) -> io::Result<R> {
        if mapped.as_ref().is_none_or(|(m, _)| *m != id) {
            *mapped = Some((id, self.storage.read(id)?));
        }
        let bytes = &mapped.as_ref().expect("mapped just above").1;
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let start = usize::try_from(off).map_err(|_| bad(format!("offset {off}")))?;
        match weir_protocol::segment::decode_at(bytes, start, true) {
            Ok((weir_protocol::segment::Decoded::Event(frame), _)) => Ok(f(&frame)),
            Ok(_) => Err(bad(format!("no event frame at {id}:{off}"))),
            Err(e) => Err(bad(format!("segment {id} offset {off}: {e}"))),
        }
    }

    /// Makes every written frame durable.
    pub fn sync(&mut self, mode: SyncMode) -> io::Result<()> {
        if self.unsynced {
            self.storage.sync(self.current, mode)?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Are there written, unsynced frames?
    #[must_use]
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    /// Seals the current segment (footer, trailer, sync) and starts the next,
    /// whose first sequence is `next_seq`. After a failed create the
    /// current segment stays sealed and the log where it was: the next call
    /// only tries the create again.
    pub fn rotate(&mut self, next_seq: u64, mode: SyncMode) -> Result<(), RotateError> {
        if !self.sealed {
            self.seal(mode).map_err(RotateError::Seal)?;
            self.sealed = true;
            // The seal synced every frame of the segment.
            self.unsynced = false;
        }
        let next = self.current + 1;
        let header = SegmentHeader::new(next, next_seq, self.next_len, self.instance);
        self.storage
            .create(next, self.next_len, header.as_bytes())
            .map_err(|source| RotateError::Create {
                segment: next,
                source,
            })?;
        self.seg_len = self.next_len;
        self.current = next;
        self.offset = SEGMENT_HEADER_LEN as u64;
        self.footer.clear();
        self.first_seq = None;
        self.base_seq = next_seq;
        self.end_seq = next_seq;
        self.unsynced = false;
        self.prepared = false;
        self.sealed = false;
        self.segments += 1;
        Ok(())
    }

    /// Writes the current segment's footer and trailer and syncs it.
    fn seal(&mut self, mode: SyncMode) -> io::Result<()> {
        let mut buf = Vec::new();
        // `fits_exactly` keeps the frames within what a footer lists.
        encode_footer(&mut buf, &self.footer).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "segment {}: {} frames, more than a footer lists ({MAX_FOOTER_ENTRIES})",
                    self.current,
                    self.footer.len()
                ),
            )
        })?;
        let footer_at = self.offset;
        self.storage.write_at(self.current, footer_at, &buf)?;
        let data_end = footer_at + buf.len() as u64;
        let first = self.first_seq.unwrap_or(self.base_seq);
        let trailer = Trailer::new(
            footer_at,
            data_end,
            first,
            self.end_seq,
            self.footer.len() as u64,
        );
        self.storage.write_at(
            self.current,
            self.seg_len - TRAILER_LEN as u64,
            trailer.as_bytes(),
        )?;
        self.storage.sync(self.current, mode)
    }

    /// The storage (for restore).
    #[must_use]
    pub fn storage(&self) -> &dyn Storage {
        &*self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    #[test]
    fn a_starting_daemon_zero_fills_its_first_segment_before_writing() {
        let sim = SimStorage::default();
        let log = SegmentLog::start_new(Box::new(sim.clone()), 1 << 16, 1, 3, 40).expect("start");
        // Before the segment exists: `create` then takes the zero-filled file.
        assert_eq!(sim.state.lock().expect("sim").prepared_now, [(3, false)]);
        assert_eq!(
            sim.state
                .lock()
                .expect("sim")
                .files
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [3]
        );
        drop(log);
    }

    #[test]
    fn fits_empty_counts_as_fits_does_on_a_new_segment() {
        let len = 1 << 16;
        let log =
            SegmentLog::start_new(Box::new(SimStorage::default()), len, 1, 0, 40).expect("start");
        for frames in [1, 2, 7, 100] {
            // The largest run that fits, by `fits` on the empty segment.
            let most = (0..len as usize)
                .rev()
                .step_by(8)
                .find(|&b| log.fits(b, frames))
                .expect("something fits");
            for b in [most, most + 8] {
                assert_eq!(
                    SegmentLog::fits_empty(len, b as u64, frames),
                    log.fits(b, frames),
                    "{b} bytes in {frames} frames"
                );
            }
        }
        assert!(!SegmentLog::fits_empty(len, u64::MAX, 1));
    }
}
