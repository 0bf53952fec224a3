//! A commit group stops at `max-batch-bytes` of requests: a small append
//! queued behind large ones is not synced together with all of them.
mod common;
use common::{config, ev};
use std::sync::mpsc;
use weir_daemon::Store;
use weir_daemon::storage::SimStorage;
use weir_daemon::writer::Done;

#[test]
fn a_group_holds_at_most_max_batch_bytes_of_requests() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    // max-batch-bytes: 256 KiB (common::config); sync = always.
    let store = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    let (tx, rx) = mpsc::channel();
    let submit = |entity: &str, payload: usize| {
        let tx = tx.clone();
        let done: Done = Box::new(move |r| tx.send(r.map(|v| v.len())).unwrap());
        store
            .submit(vec![ev(entity, 0x1001, &vec![1; payload])], done)
            .unwrap();
    };
    // The writer stops inside the first group's write; five requests of
    // 60 KiB and a small one queue behind it.
    {
        let mut st = sim.state.lock().unwrap();
        st.pause_at = Some(st.ops + 1);
    }
    submit("first", 10);
    sim.wait_paused();
    for i in 0..5 {
        submit(&format!("big:{i}"), 60 << 10);
    }
    submit("small", 2);
    let before = store.stats();
    sim.release();
    for _ in 0..7 {
        assert_eq!(rx.recv().unwrap().unwrap(), 1);
    }
    let after = store.stats();
    // The group after the first stops once it holds 256 KiB (at the fifth
    // large request), and the small one is synced on its own. Without the
    // cap (8192 events a group) all six were one group.
    assert_eq!(after.groups - before.groups, 3, "{after:?}");
    assert_eq!(after.fsyncs - before.fsyncs, 3);
    assert_eq!(after.appends, 7);
}
