//! Proves that flipped bytes and truncated copies of the gate, index and
//! segment files surface as typed errors (never a panic, SIGBUS or garbage).

mod fixture;

use fixture::{Ev, Fixture, Res, geo, id_of};
use std::os::unix::fs::FileExt;
use std::path::Path;
use weir::{AttachError, EventId, ReadError, Reader, Region};
use weir_protocol::index::{CHUNK_SEALED_OFF, PAGE};
use weir_protocol::segment::FrameError;

fn flip(path: &Path, off: u64) -> Res {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut b = [0u8];
    f.read_exact_at(&mut b, off)?;
    f.write_all_at(&[b[0] ^ 0x20], off)?;
    Ok(())
}

fn truncate(path: &Path, len: u64) -> Res {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(len)?;
    Ok(())
}

/// A store of `evs`, published and flushed to its files.
fn published(evs: &[Ev]) -> Res<Fixture> {
    let mut f = Fixture::new()?;
    f.append(evs)?;
    f.publish();
    f.flush()?;
    Ok(f)
}

fn store() -> Res<Fixture> {
    published(&[
        Ev::new("user:1", "t", 0x1001, b"payload-0"),
        Ev::new("user:1", "t", 0x1001, b"payload-1"),
    ])
}

#[test]
fn gate_damage_is_refused_on_open() -> Res {
    let f = store()?;
    let gate = f.path().join("gate");
    flip(&gate, 0)?;
    assert!(
        matches!(Reader::open(f.path()), Err(AttachError::BadMagic { expected, .. }) if &expected == b"WEIRGATE")
    );
    flip(&gate, 0)?;
    Reader::open(f.path())?;
    flip(&gate, 8)?;
    assert!(matches!(
        Reader::open(f.path()),
        Err(AttachError::UnsupportedVersion {
            expected: 1,
            found: 33,
            ..
        })
    ));
    flip(&gate, 8)?;
    flip(&gate, 33)?; // generation
    assert!(matches!(
        Reader::open(f.path()),
        Err(AttachError::Checksum { .. })
    ));
    flip(&gate, 33)?;
    truncate(&gate, 100)?;
    let err = Reader::open(f.path()).err().ok_or("short gate opened")?;
    assert!(
        matches!(&err, AttachError::Length { expected: 4096, found: 100, path } if path.ends_with("gate")),
        "{err}"
    );
    Ok(())
}

#[test]
fn meta_damage_is_refused_on_open() -> Res {
    let f = store()?;
    let meta = f.gen_file("meta");
    flip(&meta, 17)?;
    assert!(matches!(
        Reader::open(f.path()),
        Err(AttachError::Checksum { .. })
    ));
    flip(&meta, 17)?;
    truncate(&meta, 64)?;
    assert!(matches!(
        Reader::open(f.path()),
        Err(AttachError::Length {
            expected: 4096,
            found: 64,
            ..
        })
    ));
    std::fs::remove_file(&meta)?;
    assert!(matches!(
        Reader::open(f.path()),
        Err(AttachError::Io { .. })
    ));
    Ok(())
}

#[test]
fn corrupt_row_is_a_typed_error() -> Res {
    let f = store()?;
    let r = Reader::open(f.path())?;
    flip(
        &f.gen_file("chunk-000000"),
        (geo().row_offset(1) + 112) as u64,
    )?; // clock of row 1
    assert!(matches!(
        r.stream("user:1"),
        Err(ReadError::CorruptRow { sequence: 1, .. })
    ));
    assert!(matches!(
        r.query(&Region::all()),
        Err(ReadError::CorruptRow { sequence: 1, .. })
    ));
    assert!(matches!(
        r.get(EventId(id_of(1))),
        Err(ReadError::CorruptRow { sequence: 1, .. })
    ));
    // `get_many` checks the row it found while prefetching as `get` does.
    assert!(matches!(
        r.get_many(&[EventId(id_of(0)), EventId(id_of(1))]),
        Err(ReadError::CorruptRow { sequence: 1, .. })
    ));
    // Row 0 is intact and still answers.
    assert_eq!(r.get(EventId(id_of(0)))?.map(|e| e.sequence()), Some(0));
    let many = r.get_many(&[EventId(id_of(0))])?;
    assert_eq!(
        many.iter()
            .map(|e| e.as_ref().map(|e| e.sequence()))
            .collect::<Vec<_>>(),
        [Some(0)]
    );
    Ok(())
}

#[test]
fn a_subscription_iterator_ends_after_yielding_a_read_error() -> Res {
    let f = store()?;
    let r = Reader::open(f.path())?;
    flip(
        &f.gen_file("chunk-000000"),
        (geo().row_offset(1) + 112) as u64,
    )?;
    let items: Vec<_> = r.subscribe(Region::all(), 0).take(3).collect();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(matches!(
        items[0],
        Err(ReadError::CorruptRow { sequence: 1, .. })
    ));
    Ok(())
}

/// A store of two chunks: `id_of(0)` is in chunk 0, and chunk 1 (newer,
/// filling) is probed first by every lookup.
fn two_chunks() -> Res<Fixture> {
    let evs: Vec<Ev> = (0..=geo().rows())
        .map(|i| Ev::new(&format!("user:{}", i % 7), "t", 0x1001, b"p"))
        .collect();
    published(&evs)
}

/// `get_many` stops where `get` stops: a damaged newer chunk is the same
/// error from both, not an answer from an older chunk.
#[test]
fn get_many_reports_a_damaged_newer_chunk_as_get_does() -> Res {
    let f = two_chunks()?;
    let id = EventId(id_of(0));
    let r = Reader::open(f.path())?;
    assert_eq!(r.get(id)?.map(|e| e.sequence()), Some(0));
    assert_eq!(
        r.get_many(&[id])?[0].as_ref().map(|e| e.sequence()),
        Some(0)
    );
    // An id slot with an empty row field at the id's home slot in chunk 1.
    let chunk1 = f.gen_file("chunk-000001");
    let hash = weir_protocol::index::id_hash(id.0);
    let off = geo().id_slot_offset(geo().home_slot(hash)) as u64;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&chunk1)?;
    let mut was = [0u8; 8];
    file.read_exact_at(&mut was, off)?;
    file.write_all_at(
        &(u64::from(!weir_protocol::index::fingerprint(hash)) << 32).to_le_bytes(),
        off,
    )?;
    let r = Reader::open(f.path())?;
    for res in [r.get(id).map(|_| ()), r.get_many(&[id]).map(|_| ())] {
        assert!(
            matches!(res, Err(ReadError::CorruptTable { .. })),
            "{res:?}"
        );
    }
    file.write_all_at(&was, off)?;
    // Chunk 1's header damaged: its file cannot be mapped.
    flip(&chunk1, 16)?;
    let r = Reader::open(f.path())?;
    for res in [r.get(id).map(|_| ()), r.get_many(&[id]).map(|_| ())] {
        assert!(
            matches!(res, Err(ReadError::Attach(AttachError::Checksum { .. }))),
            "{res:?}"
        );
    }
    Ok(())
}

#[test]
fn chunk_header_and_length_are_checked_when_first_mapped() -> Res {
    let f = store()?;
    let chunk = f.gen_file("chunk-000000");
    flip(&chunk, 16)?; // chunk number
    let r = Reader::open(f.path())?;
    assert!(matches!(
        r.stream("user:1"),
        Err(ReadError::Attach(AttachError::Checksum { .. }))
    ));
    for res in [
        r.get(EventId(id_of(0))).map(|_| ()),
        r.get_many(&[EventId(id_of(0))]).map(|_| ()),
    ] {
        assert!(
            matches!(res, Err(ReadError::Attach(AttachError::Checksum { .. }))),
            "{res:?}"
        );
    }
    flip(&chunk, 16)?;
    truncate(&chunk, (PAGE + CHUNK_SEALED_OFF) as u64)?;
    let r = Reader::open(f.path())?;
    let err = r
        .query(&Region::all())
        .err()
        .ok_or("truncated chunk answered")?;
    assert!(
        matches!(&err, ReadError::Attach(AttachError::Length { expected, .. }) if *expected == geo().file_len() as u64),
        "{err}"
    );
    Ok(())
}

#[test]
fn corrupt_or_truncated_strings_are_typed_errors() -> Res {
    let f = store()?;
    let id = f
        .string_id(weir_protocol::index::NS_ENTITY, "user:1")
        .ok_or("no id")?;
    let strings = f.gen_file("strings-0000");
    flip(&strings, u64::from(id) * 8 + 32)?; // first name byte
    let r = Reader::open(f.path())?;
    assert!(matches!(
        r.query(&Region::all()),
        Err(ReadError::CorruptString { .. })
    ));
    assert!(matches!(
        r.stream("user:1"),
        Err(ReadError::CorruptString { .. })
    ));
    truncate(&strings, 8192)?;
    let r = Reader::open(f.path())?;
    assert!(matches!(
        r.query(&Region::all()),
        Err(ReadError::Attach(AttachError::Length { .. }))
    ));
    Ok(())
}

#[test]
fn corrupt_frame_fails_the_payload_crc_check() -> Res {
    let f = store()?;
    let r = Reader::open(f.path())?;
    let e = r.get(EventId(id_of(1)))?.ok_or("missing")?;
    let seg = f.segment_file();
    // Frame 0 starts at 64; flip the last payload byte of frame 1.
    let e0 = r.get(EventId(id_of(0)))?.ok_or("missing")?;
    let frame0_len = weir_protocol::segment::frame_len(6, 1, 9) as u64;
    let _ = e0.payload()?;
    flip(&seg, 64 + frame0_len + 184 + 6 + 1 + 8)?;
    assert!(matches!(
        e.payload(),
        Err(ReadError::Frame {
            sequence: 1,
            source: FrameError::Checksum { .. },
            ..
        })
    ));
    let report = r.verify_chain("user:1")?;
    let bad = report.first_bad.ok_or("verify missed the bad frame")?;
    assert_eq!((report.verified, bad.sequence), (1, 1));
    assert!(matches!(bad.problem, weir::BreakKind::Frame(_)));
    Ok(())
}

#[test]
fn truncated_segment_copy_is_refused() -> Res {
    let f = store()?;
    truncate(&f.segment_file(), 4096)?;
    let r = Reader::open(f.path())?;
    let e = r.get(EventId(id_of(0)))?.ok_or("missing")?;
    let err = e
        .payload()
        .err()
        .ok_or("payload from a truncated segment")?;
    assert!(
        matches!(
            &err,
            ReadError::Attach(AttachError::Length { found: 4096, .. })
        ),
        "{err}"
    );
    Ok(())
}

/// A `visible` word past the index (the gate's words after its header carry
/// no checksum) is an error from every lookup, and costs no allocation for
/// chunks that do not exist (it aborted `get_many` before).
#[test]
fn a_visible_word_past_the_index_is_an_error_not_an_abort() -> Res {
    let f = store()?;
    let id = EventId(id_of(0));
    let gate = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.path().join("gate"))?;
    for visible in [1u64 << 40, u64::MAX] {
        gate.write_all_at(
            &visible.to_le_bytes(),
            weir_protocol::gate::VISIBLE_OFF as u64,
        )?;
        let r = Reader::open(f.path())?;
        let many = r.get_many(&[id]).map(|_| ());
        let one = r.get(id).map(|_| ());
        for res in [many, one] {
            assert!(
                matches!(
                    res,
                    Err(ReadError::CorruptTable { .. } | ReadError::Attach(_))
                ),
                "visible {visible}: {res:?}"
            );
        }
    }
    Ok(())
}

/// The newest chunk's header words (`sealed`, the id range) carry no
/// checksum: a damaged `sealed` there must not hide the chunk's events from
/// lookups by id (it made them `Ok(None)` before).
#[test]
fn a_damaged_sealed_word_in_the_newest_chunk_hides_nothing() -> Res {
    let f = two_chunks()?;
    let newest = geo().rows() as u64;
    let id = EventId(id_of(newest));
    let r = Reader::open(f.path())?;
    assert_eq!(r.get(id)?.map(|e| e.sequence()), Some(newest));
    let chunk1 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.gen_file("chunk-000001"))?;
    chunk1.write_all_at(&1u64.to_le_bytes(), CHUNK_SEALED_OFF as u64)?;
    let r = Reader::open(f.path())?;
    assert_eq!(r.get(id)?.map(|e| e.sequence()), Some(newest));
    assert_eq!(
        r.get_many(&[id])?[0].as_ref().map(|e| e.sequence()),
        Some(newest)
    );
    Ok(())
}

/// An older chunk's header range has no checksum either: readers take a
/// sealed chunk's range only from its CRC-checked `ranges` record, and
/// probe a chunk that has none (a damaged header byte hid its events before).
#[test]
fn a_damaged_header_range_without_a_ranges_record_hides_nothing() -> Res {
    let f = two_chunks()?;
    let id = EventId(id_of(0));
    // Chunk 0 sealed, with a range that leaves its ids out (as one damaged
    // byte of its min id would), and no `ranges` record for it.
    let chunk0 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.gen_file("chunk-000000"))?;
    use weir_protocol::index::{CHUNK_MAX_ID_OFF, CHUNK_MIN_ID_OFF};
    chunk0.write_all_at(&(u128::MAX - 1).to_le_bytes(), CHUNK_MIN_ID_OFF as u64)?;
    chunk0.write_all_at(&u128::MAX.to_le_bytes(), CHUNK_MAX_ID_OFF as u64)?;
    chunk0.write_all_at(&1u64.to_le_bytes(), CHUNK_SEALED_OFF as u64)?;
    assert!(
        !f.gen_file("ranges").exists(),
        "the fixture writes no ranges file"
    );
    let r = Reader::open(f.path())?;
    assert_eq!(r.get(id)?.map(|e| e.sequence()), Some(0));
    assert_eq!(
        r.get_many(&[id])?[0].as_ref().map(|e| e.sequence()),
        Some(0)
    );
    Ok(())
}
