//! Refusals of a failed group and of a poisoned writer are counted, and the
//! poisoned writer shows in `Store::stats()`: a daemon refusing every write
//! does not look healthy.
mod common;
use common::{config, ev};
use weir_daemon::storage::SimStorage;
use weir_daemon::{AppendError, Store};

#[test]
fn a_failed_write_and_a_poisoned_writer_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let store = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    store.append(ev("a", 0x1001, b"kept")).unwrap();
    assert!(!store.stats().writer_poisoned);
    {
        let mut st = sim.state.lock().unwrap();
        st.fail_at = Some(st.ops + 1); // the next write fails
    }
    let err = store
        .append_batch(vec![ev("a", 0x1001, b"x"), ev("b", 0x1001, b"y")])
        .unwrap_err();
    assert!(matches!(err, AppendError::Io { .. }), "{err:?}");
    for _ in 0..3 {
        let err = store.append(ev("a", 0x1001, b"z")).unwrap_err();
        assert!(matches!(err, AppendError::Poisoned { .. }), "{err:?}");
    }
    let s = store.stats();
    assert!(s.writer_poisoned, "{s:?}");
    assert_eq!(s.rejected.get("Io"), Some(&1), "{:?}", s.rejected);
    assert_eq!(
        s.rejected.get("WriterPoisoned"),
        Some(&3),
        "{:?}",
        s.rejected
    );
}

#[test]
fn an_io_refusal_with_nothing_cancelled_says_so() {
    let cause = "write failed: disk full".to_owned();
    let none = AppendError::Io {
        cause: cause.clone(),
        start: 1300,
        end: 1300,
    }
    .to_string();
    assert!(!none.contains("1300..1300"), "{none}");
    assert!(none.contains("none was cancelled"), "{none}");
    let some = AppendError::Io {
        cause,
        start: 1300,
        end: 1302,
    }
    .to_string();
    assert!(
        some.contains("sequences 1300..1302 were cancelled"),
        "{some}"
    );
}
