//! An entity whose clock is at `u32::MAX` takes no more events: an append
//! to it is refused (`EntityFull`), with any expected version, and stores
//! nothing; other entities go on. (No test can append four billion events:
//! the log and the index row are rewritten so that the entity's only event
//! carries that clock, and the reused index takes its head from them; a
//! rebuild refuses such a first event, whose clock is not 0.)
mod common;
use common::{config, ev, segment};
use weir_daemon::{AppendError, RestorePath, Store};
use weir_protocol::ExpectedVersion;
use weir_protocol::hash::{HashInput, event_hash};
use weir_protocol::index::Row;
use weir_protocol::segment::{Decoded, EventFrame, SEGMENT_HEADER_LEN, decode_at, encode_event};
use weir_protocol::wire::{AppendRequest, ErrorCode};
use zerocopy::{FromBytes, IntoBytes};

/// Rewrites the first frame of segment 0 with `clock` (and the hash that
/// goes with it).
fn set_first_clock(dir: &std::path::Path, clock: u32) {
    let path = segment(dir, 0);
    let mut seg = std::fs::read(&path).unwrap();
    let (d, len) = decode_at(&seg, SEGMENT_HEADER_LEN, true).unwrap();
    let Decoded::Event(f) = d else {
        panic!("no event first")
    };
    let h = f.header;
    let hash = event_hash(&HashInput {
        clock,
        ..f.hash_input()
    });
    let mut frame = Vec::new();
    encode_event(
        &mut frame,
        &EventFrame {
            sequence: h.sequence.get(),
            batch_first: h.batch_first.get(),
            batch_len: h.batch_len.get(),
            batch_end: true,
            kind: h.kind.get(),
            clock,
            event_id: h.event_id(),
            correlation_id: h.correlation_id(),
            causation_id: h.causation_id(),
            idempotency_key: h.idempotency_key(),
            wall_ms: h.wall_ms.get(),
            entity: f.entity,
            scope: f.scope,
            payload: f.payload,
            prev_hash: h.prev_hash,
            event_hash: hash,
        },
    );
    assert_eq!(frame.len(), len);
    seg[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + len].copy_from_slice(&frame);
    std::fs::write(&path, seg).unwrap();
}

/// Rewrites row 0 of the only index generation with `clock` (and its CRC).
fn set_first_row_clock(dir: &std::path::Path, clock: u32) {
    let path = dir.join("index/gen-00000000/chunk-000000");
    let mut chunk = std::fs::read(&path).unwrap();
    let at = 4096..4096 + weir_protocol::index::ROW_LEN;
    let mut row = Row::read_from_bytes(&chunk[at.clone()]).unwrap();
    row.clock = clock.into();
    row.seal();
    chunk[at].copy_from_slice(row.as_bytes());
    std::fs::write(&path, chunk).unwrap();
}

fn expecting(entity: &str, expected: ExpectedVersion) -> AppendRequest {
    AppendRequest {
        expected,
        ..ev(entity, 0x1001, b"one more")
    }
}

#[test]
fn an_entity_at_the_last_clock_takes_no_more_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = Store::open(config(dir)).unwrap();
    s.append(ev("full", 0x1001, b"first")).unwrap();
    s.append(ev("other", 0x1001, b"x")).unwrap();
    s.shutdown().unwrap();
    drop(s);
    set_first_clock(dir, u32::MAX);
    set_first_row_clock(dir, u32::MAX);
    // The index-files path wants the count at the head's clock + 1.
    weir_tests::set_name_words(dir, "full", None, Some(1 << 32)).unwrap();

    let s = Store::open(config(dir)).unwrap();
    let path = s.restore_report().path;
    assert_eq!(path, RestorePath::IndexFiles);
    let full = |index| AppendError::EntityFull {
        index,
        entity: "full".into(),
    };
    for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(u32::MAX)] {
        let e = s.append(expecting("full", expected)).unwrap_err();
        assert_eq!(e, full(0), "{expected:?}");
        assert_eq!(e.to_wire().code, ErrorCode::EntityFull);
    }
    // Another expected version is a conflict with the last clock, as ever.
    let e = s
        .append(expecting("full", ExpectedVersion::Exact(u32::MAX - 1)))
        .unwrap_err();
    assert!(
        matches!(&e, AppendError::VersionConflict { found, .. } if *found == u32::MAX.to_string()),
        "{e}"
    );
    // A batch with one event for it is refused whole.
    let batch = vec![ev("other", 0x1001, b"y"), ev("full", 0x1001, b"z")];
    assert_eq!(s.append_batch(batch).unwrap_err(), full(1));
    let next = s.append(ev("other", 0x1001, b"y")).unwrap();
    assert_eq!((next.sequence, next.clock), (2, 1), "nothing was stored");
    s.shutdown().unwrap();
}
