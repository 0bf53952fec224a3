//! `weir verify`: checks a store end to end, on one pinned watermark.
//!
//! 1. Every frame of every segment: bounds and CRC. A bad frame followed by
//!    no published event of its segment is a torn, never-published tail
//!    (left by a crash; the daemon continued in a new segment) and is only
//!    reported; one that hides a published event is a failure.
//! 2. Every visible index row against its frame (CRC, sequence, id, kind,
//!    clock, length), and each entity's clocks in sequence order: 0, 1, 2, ...
//! 3. Every entity's hash chain (`Snapshot::verify_chain`), which must reach
//!    each of the entity's rows that step 2 counted (a head naming an older
//!    event hides the newer ones from every stream).
//!
//! The first failure is named by segment, offset and sequence.

use super::common::DataDir;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use weir::{BreakKind, ReadError, Reader, Region, Snapshot};
use weir_protocol::segment::{
    Decoded, FRAME_HEADER_LEN, FrameError, SEGMENT_HEADER_LEN, SegmentHeader, decode_at,
};

/// Index rows read per page.
const PAGE: usize = 4096;

/// Arguments of `weir verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: DataDir,
}

/// The first bad position.
#[derive(Debug)]
struct Bad {
    segment: Option<u64>,
    offset: Option<u64>,
    sequence: Option<u64>,
    problem: String,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
        write!(
            f,
            "segment {} offset {} sequence {}: {}",
            opt(self.segment),
            opt(self.offset),
            opt(self.sequence),
            self.problem
        )
    }
}

/// What a clean run counted.
#[derive(Debug, Default)]
struct Counts {
    segments: u64,
    frames: u64,
    torn_tails: Vec<String>,
    rows: u64,
    entities: u64,
}

/// Runs `weir verify`.
pub fn run(args: VerifyArgs) -> Result<()> {
    let dir = args.dir.existing()?;
    let reader = args.dir.reader()?;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:40}] {human_pos}/{human_len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut counts = Counts::default();
    let result = check(&dir, &reader, &bar, &mut counts);
    bar.finish_and_clear();
    let visible = reader.visible();
    let bad = result?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = json!({
            "ok": bad.is_none(),
            "segments": counts.segments,
            "frames": counts.frames,
            "index_rows": counts.rows,
            "entities": counts.entities,
            "torn_tails": counts.torn_tails,
            "visible": visible,
            "first_bad": bad.as_ref().map(|b| json!({
                "segment": b.segment, "offset": b.offset,
                "sequence": b.sequence, "problem": b.problem,
            })),
        });
        writeln!(out, "{v}")?;
    } else if bad.is_none() {
        for t in &counts.torn_tails {
            writeln!(out, "note: {t}")?;
        }
        writeln!(
            out,
            "ok: {} segments, {} frames (CRC), {} index rows, {} entity hash chains",
            counts.segments, counts.frames, counts.rows, counts.entities
        )?;
    }
    match bad {
        Some(b) => bail!("verify failed at {b}"),
        None => Ok(()),
    }
}

fn check(dir: &Path, reader: &Reader, bar: &ProgressBar, c: &mut Counts) -> Result<Option<Bad>> {
    let snap = reader.snapshot();
    let segments = list_segments(dir)?;
    bar.set_message("segments");
    bar.set_length(segments.len() as u64);
    for (i, path) in segments.iter().enumerate() {
        let next_base = match segments.get(i + 1) {
            Some(p) => Some(header(p)?.1),
            None => None,
        };
        if let Some(bad) = scan_segment(path, next_base, &snap, c)? {
            return Ok(Some(bad));
        }
        c.segments += 1;
        bar.inc(1);
    }
    bar.set_message("index rows");
    bar.set_position(0);
    bar.set_length(snap.visible());
    // Per entity: its rows so far (so the next one's clock) and the newest.
    let mut entities: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = snap.query_after(&Region::all(), after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.sequence());
        for e in &page {
            if let Err(err) = e.frame() {
                return Ok(Some(read_bad(e.sequence(), &err)));
            }
            let seen = match entities.get_mut(e.entity()) {
                Some(seen) => seen,
                None => entities.entry(e.entity().to_owned()).or_default(),
            };
            if u64::from(e.clock()) != seen.0 {
                return located_bad(
                    dir,
                    e.sequence(),
                    format!(
                        "entity {:?}: clock {}, but the entity's events before it number {} (clock {} expected): two events share a clock (a fork), or the chain skips one",
                        e.entity(),
                        e.clock(),
                        seen.0,
                        seen.0
                    ),
                )
                .map(Some);
            }
            *seen = (seen.0 + 1, e.sequence());
            c.rows += 1;
        }
        bar.set_position(last.sequence() + 1);
    }
    bar.set_message("hash chains");
    bar.set_position(0);
    bar.set_length(entities.len() as u64);
    for (entity, &(rows, newest)) in &entities {
        let report = snap.verify_chain(entity)?;
        if let Some(b) = report.first_bad {
            let problem = match &b.problem {
                BreakKind::Frame(err) => return Ok(Some(read_bad(b.sequence, err))),
                BreakKind::Entity => "the frame names another entity".to_owned(),
                BreakKind::Hash => "the recomputed event_hash differs from the stored one".into(),
                BreakKind::Link => {
                    "prev_hash is not the previous event's event_hash (chain broken)".into()
                }
                BreakKind::Clock => {
                    "the clock is not the previous event's + 1 (chain broken)".into()
                }
                other => format!("{other:?}"),
            };
            return located_bad(dir, b.sequence, format!("entity {entity:?}: {problem}")).map(Some);
        }
        if report.verified != rows {
            // The chain ends early: a stale head hides the newest events.
            let head = snap.latest(entity)?.map(|e| e.sequence());
            return located_bad(
                dir,
                newest,
                format!(
                    "entity {entity:?}: its chain from the head ({}) reaches {} of its {rows} events, not its newest, sequence {newest}: streams of the entity miss events",
                    head.map_or("none".to_owned(), |s| format!("sequence {s}")),
                    report.verified
                ),
            )
            .map(Some);
        }
        c.entities += 1;
        bar.inc(1);
    }
    Ok(None)
}

/// A failure at the event of `sequence`, named by the frame that holds it.
fn located_bad(dir: &Path, sequence: u64, problem: String) -> Result<Bad> {
    let (segment, offset) = locate(dir, sequence)?.unzip();
    Ok(Bad {
        segment,
        offset,
        sequence: Some(sequence),
        problem,
    })
}

fn read_bad(sequence: u64, err: &ReadError) -> Bad {
    let (segment, offset) = match err {
        ReadError::Frame {
            segment, offset, ..
        }
        | ReadError::FrameMismatch {
            segment, offset, ..
        } => (Some(*segment), Some(*offset)),
        _ => (None, None),
    };
    Bad {
        segment,
        offset,
        sequence: Some(sequence),
        problem: format!("index row does not match the segment: {err}"),
    }
}

/// Segment files, by id.
/// The segment files, by the daemon's naming: a file named otherwise
/// (`7.seg`, `00000000001.seg`) is no segment the daemon reads, so it is
/// not checked or counted here either (a warning names it).
fn list_segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let seg_dir = dir.join("segments");
    let mut v = Vec::new();
    for e in
        std::fs::read_dir(&seg_dir).with_context(|| format!("cannot list {}", seg_dir.display()))?
    {
        let path = e?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if name == weir_daemon::storage::segment_file_name(id) {
            v.push(path);
        } else {
            eprintln!(
                "weir: ignoring {}: not a segment's name (10 digits, then .seg)",
                path.display()
            );
        }
    }
    v.sort();
    Ok(v)
}

/// A segment's id and base sequence.
fn header(path: &Path) -> Result<(u64, u64)> {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let h = SegmentHeader::parse(&b).with_context(|| format!("{}", path.display()))?;
    Ok((h.segment_id.get(), h.base_seq.get()))
}

/// One frame as found on disk.
enum Frame {
    End,
    /// A sealed segment's FOOTER frame: the last frame (what follows up to
    /// the trailer is not frames; in segments sealed before 2026-11-28 the
    /// trailer can start within a frame header's length of it).
    Footer,
    Event {
        sequence: u64,
        len: usize,
    },
    Other {
        len: usize,
    },
    Bad(String),
}

/// Reads and checks the frame at `offset` (bounds, length, CRC).
fn read_frame(f: &File, file_len: u64, offset: u64, buf: &mut Vec<u8>) -> Result<Frame> {
    let left = file_len.saturating_sub(offset);
    let head_len = (FRAME_HEADER_LEN as u64).min(left) as usize;
    buf.resize(head_len, 0);
    f.read_exact_at(buf, offset)?;
    if buf.iter().all(|b| *b == 0) {
        return Ok(Frame::End);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64;
    if head_len < FRAME_HEADER_LEN
        || len < FRAME_HEADER_LEN as u64
        || !len.is_multiple_of(8)
        || len > left
    {
        return Ok(Frame::Bad(format!(
            "frame length {len} is out of bounds (torn or damaged frame)"
        )));
    }
    buf.resize(len as usize, 0);
    f.read_exact_at(
        &mut buf[FRAME_HEADER_LEN..],
        offset + FRAME_HEADER_LEN as u64,
    )?;
    let len = len as usize;
    Ok(match decode_at(buf, 0, true) {
        Ok((Decoded::Event(fr), _)) => Frame::Event {
            sequence: fr.header.sequence.get(),
            len,
        },
        Ok((Decoded::End, _)) => Frame::End,
        Ok((Decoded::Footer(_), _)) => Frame::Footer,
        Ok(_) => Frame::Other { len },
        Err(FrameError::Checksum {
            stored, computed, ..
        }) => Frame::Bad(format!(
            "frame CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )),
        Err(FrameError::Malformed { what, .. }) => Frame::Bad(format!("malformed frame: {what}")),
        Err(e) => Frame::Bad(format!("bad frame: {e}")),
    })
}

/// Walks one segment's frames. A bad frame fails the check only if the
/// snapshot holds a visible event this segment should contain after it.
fn scan_segment(
    path: &Path,
    next_base: Option<u64>,
    snap: &Snapshot<'_>,
    c: &mut Counts,
) -> Result<Option<Bad>> {
    let (id, base) = header(path)?;
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = f.metadata()?.len();
    let mut buf = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN as u64;
    let mut last_seq: Option<u64> = None;
    loop {
        match read_frame(&f, file_len, offset, &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            Frame::End => return Ok(None),
            Frame::Footer => {
                c.frames += 1;
                return Ok(None);
            }
            Frame::Event { sequence, len } => {
                last_seq = Some(sequence);
                c.frames += 1;
                offset += len as u64;
            }
            Frame::Other { len } => {
                c.frames += 1;
                offset += len as u64;
            }
            Frame::Bad(problem) => {
                // The event the index says comes next in this segment, if any.
                let after = last_seq.or(base.checked_sub(1));
                let next = snap
                    .query_after(&Region::all(), after, 1)?
                    .first()
                    .map(weir::Entry::sequence)
                    .filter(|s| next_base.is_none_or(|nb| *s < nb));
                match next {
                    Some(sequence) => {
                        return Ok(Some(Bad {
                            segment: Some(id),
                            offset: Some(offset),
                            sequence: Some(sequence),
                            problem,
                        }));
                    }
                    None => {
                        c.torn_tails.push(format!(
                            "segment {id} ends with an unpublished torn frame at offset {offset} ({problem})"
                        ));
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// Where the event frame of `sequence` is, by a fresh scan (used only to
/// name the position of a chain break).
fn locate(dir: &Path, sequence: u64) -> Result<Option<(u64, u64)>> {
    let mut buf = Vec::new();
    for path in list_segments(dir)? {
        let (id, _) = header(&path)?;
        let f = File::open(&path)?;
        let file_len = f.metadata()?.len();
        let mut offset = SEGMENT_HEADER_LEN as u64;
        loop {
            match read_frame(&f, file_len, offset, &mut buf)? {
                Frame::Event { sequence: s, .. } if s == sequence => {
                    return Ok(Some((id, offset)));
                }
                Frame::Event { len, .. } | Frame::Other { len } => offset += len as u64,
                Frame::End | Frame::Footer | Frame::Bad(_) => break,
            }
        }
    }
    Ok(None)
}
