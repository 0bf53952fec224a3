//! A store keeps its id key for life: also when a build from before the
//! key (2026-11-28) ran it and wrote its gate without one, and when its gate
//! is lost. The key is in `starts` too, which such builds leave alone.
mod common;
use common::ev;
use weir_daemon::Store;
use weir_protocol::gate::{ID_KEY_CRC_OFF, ID_KEY_OFF, read_id_key};
use weir_protocol::locate::IdMask;

fn key(dir: &std::path::Path) -> ([u8; 16], IdMask) {
    let k = read_id_key(&std::fs::read(dir.join("gate")).unwrap()).expect("a key");
    (k.to_bytes(), k.mask_kind())
}

/// One start that appends an event and stops cleanly.
fn run(dir: &std::path::Path) {
    let store = Store::open(common::config(dir)).unwrap();
    store.append(ev("user:1", 0x1001, b"x")).unwrap();
    store.shutdown().unwrap();
}

#[test]
fn a_gate_without_a_key_or_no_gate_keeps_the_store_key() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path());
    let first = key(dir.path());
    // A build before the key writes zeros over the key, its CRC and the
    // mask word.
    let path = dir.path().join("gate");
    let mut gate = std::fs::read(&path).unwrap();
    gate[ID_KEY_OFF..ID_KEY_OFF + 16].fill(0);
    gate[ID_KEY_CRC_OFF..ID_KEY_CRC_OFF + 8].fill(0);
    std::fs::write(&path, gate).unwrap();
    assert!(read_id_key(&std::fs::read(&path).unwrap()).is_none());
    run(dir.path());
    assert_eq!(key(dir.path()), first, "after a gate without a key");
    // A lost gate.
    std::fs::remove_file(&path).unwrap();
    run(dir.path());
    assert_eq!(key(dir.path()), first, "after a lost gate");
    // Another store (a fresh directory) draws its own.
    let other = tempfile::tempdir().unwrap();
    run(other.path());
    assert_ne!(key(other.path()).0, first.0);
}
