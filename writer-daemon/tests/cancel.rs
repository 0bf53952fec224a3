//! A batch whose write fails midway is cancelled, durably, before any reply;
//! the writer then refuses writes until restarted, and a restart keeps the
//! cancellation.
mod common;
use common::{config, ev};
use std::collections::BTreeMap;
use weir_daemon::storage::SimStorage;
use weir_daemon::{AppendError, Store};
use weir_protocol::wire::AppendRequest;

/// Restarts from a crash image and checks that restore kept the two
/// cancelled sequences; the directory lives as long as the store needs it.
fn restart_with_two_cancelled(image: BTreeMap<u64, Vec<u8>>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_with_storage(config(dir.path()), Box::new(SimStorage::from_files(image)))
            .unwrap();
    assert_eq!(
        store.restore_report().cancelled,
        2,
        "{:?}",
        store.restore_report()
    );
    (dir, store)
}

#[test]
fn failed_write_cancels_the_batch_durably_and_poisons_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let store = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    let kept = store.append(ev("a", 0x1001, b"kept")).unwrap();
    {
        let mut st = sim.state.lock().unwrap();
        st.fail_at = Some(st.ops + 1); // the next write fails
    }
    let err = store
        .append_batch(vec![ev("a", 0x1001, b"x"), ev("b", 0x1001, b"y")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::Io {
                start: 1,
                end: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store.append(ev("a", 0x1001, b"z")).unwrap_err();
    assert!(matches!(err, AppendError::Poisoned { .. }), "{err:?}");
    // Power loss right now: the cancellation must already be durable.
    let image = sim.crash_image(0, None);
    drop(store);
    let (_dir2, store) = restart_with_two_cancelled(image);
    let next = store.append(ev("a", 0x1001, b"after")).unwrap();
    assert_eq!(next.sequence, 3, "cancelled sequences are never reused");
    assert_eq!(
        next.clock,
        kept.clock + 1,
        "the cancelled events are not part of the chain"
    );
}

/// Runs `a`, pauses the storage inside its sync, queues `b` and `c` behind
/// it (so they share the next group), fails that group's write, and
/// returns the three outcomes.
fn same_group_after_pause(
    store: &Store,
    sim: &SimStorage,
    fail_offset: u64,
    a: AppendRequest,
    b: AppendRequest,
    c: AppendRequest,
) -> Vec<Result<Vec<weir_protocol::wire::Receipt>, AppendError>> {
    {
        let mut st = sim.state.lock().unwrap();
        st.pause_at = Some(st.ops + 2); // a: write (+1), sync (+2)
        st.fail_at = Some(st.ops + 2 + fail_offset);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let t = tx.clone();
    store
        .submit(vec![a], Box::new(move |r| drop(t.send((0, r)))))
        .unwrap();
    sim.wait_paused();
    let t = tx.clone();
    store
        .submit(vec![b], Box::new(move |r| drop(t.send((1, r)))))
        .unwrap();
    store
        .submit(vec![c], Box::new(move |r| drop(tx.send((2, r)))))
        .unwrap();
    sim.release();
    let mut out: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
    out.sort_by_key(|r| r.0);
    out.into_iter().map(|r| r.1).collect()
}

#[test]
fn a_replay_from_the_same_failed_group_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let store = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    let keyed = || AppendRequest {
        idempotency_key: Some(42),
        ..ev("x", 0x1001, b"retried")
    };
    // The group of b and c: its write (+1 after a's sync) fails.
    let out = same_group_after_pause(&store, &sim, 1, ev("a", 0x1001, b"a"), keyed(), keyed());
    assert!(out[0].is_ok(), "{:?}", out[0]);
    assert!(
        matches!(out[1], Err(AppendError::Io { .. })),
        "{:?}",
        out[1]
    );
    assert!(
        out[2].is_err(),
        "the retry was acknowledged for a cancelled event: {:?}",
        out[2]
    );
}

#[test]
fn a_failed_fsync_cancels_the_group_durably() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let store = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    // The group of b and c: its write (+1) succeeds, its sync (+2) fails.
    let out = same_group_after_pause(
        &store,
        &sim,
        2,
        ev("a", 0x1001, b"a"),
        ev("ghost", 0x1001, b"b"),
        ev("ghost", 0x1001, b"c"),
    );
    assert!(out[0].is_ok());
    let (start, end) = match &out[1] {
        Err(AppendError::Io { start, end, .. }) => (*start, *end),
        other => panic!("expected a durable cancel, got {other:?}"),
    };
    assert_eq!((start, end), (1, 3));
    assert!(matches!(out[2], Err(AppendError::Io { .. })));
    // Even if the page cache reached the disk, restart must not resurrect them.
    let image = sim.crash_image(usize::MAX, None);
    drop(store);
    let (_dir2, store) = restart_with_two_cancelled(image);
    let r = store
        .append(AppendRequest {
            expected: weir_protocol::ExpectedVersion::NoStream,
            ..ev("ghost", 0x1001, b"first")
        })
        .unwrap();
    assert_eq!(
        (r.sequence, r.clock),
        (3, 0),
        "the refused events came back"
    );
}
