//! A store appends, chains per entity, and reopens where it left off.
mod common;
use common::{config, ev};
use weir_daemon::{RestorePath, Store};

#[test]
fn appends_chain_and_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.restore_report().path, RestorePath::Empty);
    let a0 = store.append(ev("user:1", 0x1001, b"a")).unwrap();
    let b0 = store.append(ev("user:2", 0x1001, b"b")).unwrap();
    let a1 = store.append(ev("user:1", 0x1002, b"c")).unwrap();
    assert_eq!((a0.sequence, b0.sequence, a1.sequence), (0, 1, 2));
    assert_eq!((a0.clock, b0.clock, a1.clock), (0, 0, 1));
    assert!(a0.durable);
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        store.restore_report().path,
        RestorePath::IndexFiles,
        "{:?}",
        store.restore_report()
    );
    let a2 = store.append(ev("user:1", 0x1001, b"d")).unwrap();
    assert_eq!((a2.sequence, a2.clock), (3, 2));
}
