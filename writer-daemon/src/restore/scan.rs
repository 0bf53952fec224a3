//! The frame scan of one segment: its usable events, cancels and footer,
//! and where (and why) it stops short of a clean end.

use crate::error::OpenError;
use crate::segments::LogPosition;
use std::path::Path;
use weir_protocol::segment::{
    Decoded, FooterEntry, FrameRef, SEGMENT_HEADER_LEN, SegmentHeader, Trailer, decode_at,
    footer_entries, frame_flags,
};

/// One segment's usable content.
#[derive(Default)]
pub(super) struct Scan<'a> {
    pub(super) events: Vec<FrameRef<'a>>,
    pub(super) offsets: Vec<(u64, u32)>,
    pub(super) cancels: Vec<(u64, u64)>,
    pub(super) via_footer: bool,
    /// Intact and unsealed: writing may continue in it.
    pub(super) resumable: Option<(LogPosition, Vec<FooterEntry>, u64)>,
    /// Where the frame scan stopped short of a clean end, and why.
    pub(super) stop: Option<Stop>,
}

/// Where a frame scan stopped before a clean end (zeros, the footer).
#[derive(Debug, Clone)]
pub(super) struct Stop {
    /// Offset of the first frame not used.
    pub(super) offset: u64,
    /// What is there.
    pub(super) what: String,
    /// A damaged frame, not only a batch without its end.
    pub(super) damaged: bool,
}

pub(super) fn scan_segment<'a>(
    id: u64,
    bytes: &'a [u8],
    path: &Path,
) -> Result<Scan<'a>, OpenError> {
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
    let mut s = Scan::default();
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
        s = Scan::default();
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
        // Zeros where the frames end do not prove that nothing follows: a
        // power loss may keep the page of a later unsynced frame and lose an
        // earlier one's (writeback keeps no order). Writing over such a hole
        // would put frames a later scan reads straight into the kept ones, so
        // writing resumes here only when every byte after the frames is zero;
        // otherwise a new segment takes over, and nothing past `off` is read.
        match first_nonzero(&bytes[off..]) {
            None => {
                s.resumable = Some((
                    LogPosition {
                        segment_id: id,
                        offset: off as u64,
                    },
                    footer,
                    header.base_seq.get(),
                ));
            }
            Some(at) => {
                s.stop = Some(Stop {
                    offset: off as u64,
                    what: format!(
                        "the frames end at offset {off}, but bytes follow at offset {} (left by a crash that lost the writes before them)",
                        off + at
                    ),
                    damaged: false,
                });
            }
        }
    }
    Ok(s)
}

/// Offset of the first non-zero byte of `bytes`.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const STEP: usize = 64 << 10;
    bytes.chunks(STEP).enumerate().find_map(|(i, c)| {
        // An OR over a whole chunk vectorizes; the byte is sought only in the
        // chunk that has one.
        (c.iter().fold(0u8, |a, &b| a | b) != 0)
            .then(|| i * STEP + c.iter().position(|&b| b != 0).unwrap_or(0))
    })
}

#[cfg(test)]
mod tests {
    use super::first_nonzero;

    #[test]
    fn first_nonzero_finds_the_first_byte_in_any_chunk() {
        let mut b = vec![0u8; (64 << 10) * 3 + 5];
        let last = b.len() - 1;
        assert_eq!(first_nonzero(&b), None);
        for at in [0, 1, (64 << 10) - 1, 64 << 10, (64 << 10) * 3 + 4] {
            b[at] = 0x80;
            b[last] = 1;
            assert_eq!(first_nonzero(&b), Some(at));
            b.fill(0);
        }
    }
}
