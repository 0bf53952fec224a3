//! A new segment that cannot be created for want of descriptors (EMFILE)
//! refuses the appends of that group with a retryable error, stores nothing
//! of them and leaves no sequence behind; the writer is not poisoned, the
//! next append creates the segment, and a restart finds every acknowledged
//! event. An index chunk file created ahead for an append that was then
//! refused is no obstacle to the start that reuses the index files.
mod common;
use common::{config, ev};
use weir_daemon::storage::SimStorage;
use weir_daemon::{AppendError, Store};
use weir_protocol::ExpectedVersion;
use weir_protocol::wire::{AppendRequest, ErrorCode, Receipt};

fn keyed(i: u64) -> AppendRequest {
    AppendRequest {
        idempotency_key: Some(u128::from(i) + 1),
        ..ev(&format!("user:{}", i % 7), 0x1001, &[i as u8; 1200])
    }
}

/// Appends keyed events one by one until one is refused: segment 1's
/// create fails once with EMFILE. Returns the acknowledged ones and the
/// refused one with its error.
fn until_refused(
    s: &Store,
    sim: &SimStorage,
) -> (Vec<(AppendRequest, Receipt)>, AppendRequest, AppendError) {
    sim.state.lock().unwrap().fail_create = Some((1, nix::libc::EMFILE));
    let mut acked = Vec::new();
    for i in 0..2000 {
        let req = keyed(i);
        match s.append(req.clone()) {
            Ok(r) => acked.push((req, r)),
            Err(e) => return (acked, req, e),
        }
    }
    panic!("no rotation in 2000 appends");
}

/// Every acknowledged append replays its receipt after a restart.
fn all_there(s: &Store, acked: &[(AppendRequest, Receipt)]) {
    for (req, r) in acked {
        let again = s.append(req.clone()).unwrap();
        assert!(again.replayed, "sequence {} was lost", r.sequence);
        assert_eq!(
            (again.sequence, again.event_id, again.event_hash),
            (r.sequence, r.event_id, r.event_hash)
        );
    }
}

#[test]
fn a_segment_that_cannot_be_created_refuses_the_group_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    let (mut acked, refused, err) = until_refused(&s, &sim);
    assert!(
        matches!(&err, AppendError::Unavailable { cause, .. }
            if cause.contains("0000000001.seg") && cause.contains("Too many open files")),
        "{err}"
    );
    let wire = err.to_wire();
    assert_eq!(wire.code, ErrorCode::Busy);
    assert_eq!(
        wire.fields.get("retry_after_ms").map(String::as_str),
        Some("100")
    );
    assert!(!s.stats().writer_poisoned);
    // Segment 0 is sealed: a small append that would fit in what is left
    // of it goes to the new segment, at the next sequence (the refused
    // append left no hole that would hold back the watermark).
    let sealed = sim.state.lock().unwrap().files[&0].live.clone();
    let last = acked.last().unwrap().1.sequence;
    let small = AppendRequest {
        idempotency_key: Some(9000),
        ..ev("user:0", 0x1001, b"small")
    };
    let r = s.append(small.clone()).unwrap();
    assert_eq!(r.sequence, last + 1);
    acked.push((small, r));
    assert_eq!(sim.state.lock().unwrap().files[&0].live, sealed);
    assert!(sim.state.lock().unwrap().files.contains_key(&1));
    let r = s.append(refused.clone()).unwrap();
    assert!(!r.replayed);
    assert_eq!(r.sequence, last + 2);
    acked.push((refused, r));
    assert_eq!(s.stats().visible, last + 3);
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    all_there(&s, &acked);
    s.shutdown().unwrap();
}

#[test]
fn a_stop_while_the_next_segment_is_missing_loses_nothing() {
    // Segment 0 is sealed, segment 1 was never created: the next start
    // continues after the sealed segment.
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    let (acked, refused, err) = until_refused(&s, &sim);
    assert!(matches!(err, AppendError::Unavailable { .. }), "{err}");
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    all_there(&s, &acked);
    let r = s.append(refused).unwrap();
    assert!(!r.replayed);
    assert_eq!(r.sequence, acked.last().unwrap().1.sequence + 1);
    s.shutdown().unwrap();
}

#[test]
fn a_chunk_created_for_a_refused_append_does_not_stop_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    for b in 0..20u64 {
        let batch = (0..50).map(|i| keyed(b * 50 + i)).collect();
        s.append_batch(batch).unwrap();
    }
    // Sequences 1000..1050 need chunk 1 (1,024 rows to a chunk): it is
    // created, then the batch is refused.
    let mut batch: Vec<_> = (1000..1050).map(keyed).collect();
    batch[49].expected = ExpectedVersion::Exact(12345);
    let err = s.append_batch(batch).unwrap_err();
    assert!(matches!(err, AppendError::VersionConflict { .. }), "{err}");
    let chunk = dir.path().join("index/gen-00000000/chunk-000001");
    assert!(chunk.exists());
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open(config(dir.path())).unwrap();
    assert_eq!(s.stats().restore_path, "index-files");
    let r = s.append_batch((1000..1050).map(keyed).collect()).unwrap();
    assert_eq!(r[0].sequence, 1000);
    assert!(!s.stats().writer_poisoned);
    s.shutdown().unwrap();
}
