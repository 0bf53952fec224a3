//! A data directory renamed while its daemon runs: the daemon writes no file
//! into whatever directory is at the old path then. Its next new file (here
//! the rotation's segment) stops the writer with an error that names the
//! path and says what to do, its clean stop writes nothing there either, and
//! the renamed directory starts again with every acknowledged event.
mod common;
use common::{config, ev, files, unchanged};
use weir_daemon::{AppendError, Store};
use weir_protocol::wire::AppendRequest;

/// Events before the rename: half a 1 MiB segment (1200-byte payloads).
const BEFORE: u64 = 300;

#[test]
fn a_renamed_data_dir_stops_the_writer_at_its_next_file_and_restarts_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, renamed) = (tmp.path().join("a"), tmp.path().join("a-renamed"));
    let s = Store::open(config(&old)).unwrap();
    // Keyed: the idempotency window the clean stop would save is not empty.
    let batch = |b: u64| {
        (0..50)
            .map(|i| AppendRequest {
                idempotency_key: Some(u128::from(b + i + 1)),
                ..ev(&format!("user:{}", i % 37), 0x1001, &[b as u8; 1200])
            })
            .collect::<Vec<_>>()
    };
    let mut acked = 0;
    while acked < BEFORE {
        acked += s.append_batch(batch(acked)).unwrap().len() as u64;
    }
    std::fs::rename(&old, &renamed).unwrap();
    // Another store takes the old path.
    let other = Store::open(config(&old)).unwrap();
    other.append(ev("other", 0x1001, b"o")).unwrap();
    other.shutdown().unwrap();
    drop(other);
    let theirs = files(&old);
    // A retry of the first batch is checked against its frames, read back
    // by path: never against the other store's segment at the old path
    // (that gave IdempotencyConflict); unreadable, the receipts stand.
    let replay = s.append_batch(batch(0)).unwrap();
    assert!(replay.iter().all(|r| r.replayed));
    assert!(replay.iter().map(|r| r.sequence).eq(0..50));

    // Appends go on into the open segment until it is full; the rotation's
    // new segment would be made by path.
    let err = loop {
        match s.append_batch(batch(acked)) {
            Ok(r) => acked += r.len() as u64,
            Err(e) => break e,
        }
        assert!(acked < 2000, "no rotation refused");
    };
    let AppendError::Io { cause, start, end } = &err else {
        panic!("expected an Io refusal, got {err:?}");
    };
    assert_eq!(start, end, "nothing reserved, nothing cancelled: {err}");
    assert!(cause.contains(&old.display().to_string()), "{err}");
    assert!(cause.contains("moved or replaced"), "{err}");
    assert!(cause.contains("new path"), "{err}");
    let next = s.append(ev("late", 0x1001, b"x")).unwrap_err();
    assert!(
        matches!(&next, AppendError::Poisoned { cause: c } if c == cause),
        "{next:?}"
    );

    // The clean stop writes none of its files into the directory at the old
    // path either, and says why.
    let stopped = s.shutdown().unwrap_err();
    assert!(stopped.contains("moved or replaced"), "{stopped}");
    drop(s);
    unchanged(&old, &theirs);
    let o = Store::open(config(&old)).unwrap();
    assert_eq!(o.append(ev("other", 0x1001, b"o")).unwrap().sequence, 1);
    o.shutdown().unwrap();

    let s = Store::open(config(&renamed)).unwrap();
    let r = s.restore_report().clone();
    assert_eq!(r.entries + r.tail_entries, acked, "{r:?}");
    assert_eq!(s.append(ev("after", 0x1001, b"x")).unwrap().sequence, acked);
    s.shutdown().unwrap();
}
