//! A batch whose write fails midway is cancelled, durably, before any reply;
//! the writer then refuses writes until restarted, and a restart keeps the
//! cancellation.
mod common;
use common::{config, ev};
use weir_daemon::storage::SimStorage;
use weir_daemon::{AppendError, Store};

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
    let dir2 = tempfile::tempdir().unwrap();
    let store =
        Store::open_with_storage(config(dir2.path()), Box::new(SimStorage::from_files(image)))
            .unwrap();
    assert_eq!(
        store.restore_report().cancelled,
        2,
        "{:?}",
        store.restore_report()
    );
    let next = store.append(ev("a", 0x1001, b"after")).unwrap();
    assert_eq!(next.sequence, 3, "cancelled sequences are never reused");
    assert_eq!(
        next.clock,
        kept.clock + 1,
        "the cancelled events are not part of the chain"
    );
}
