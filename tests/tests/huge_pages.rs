//! Segments are mapped for huge pages (FORMAT.md, "Media assumptions"): the
//! daemon's read-only mappings (restore, replays) and every reader's ask the
//! kernel (`MADV_HUGEPAGE`) to bring pages that are not cached in as 2 MiB
//! folios, so that a store read back after a reboot is mapped as a freshly
//! zero-filled one is, one page-table entry per 2 MiB.
mod common;
use common::{small_chunk_store, vm_flags};
use std::path::Path;
use weir::{EventId, Reader};
use weir_daemon::storage::{FileStorage, Storage};
use weir_protocol::wire::AppendRequest;

/// Without transparent huge pages the kernel refuses the advice: nothing to
/// check (the test says so and passes).
fn has_thp() -> bool {
    let thp = Path::new("/sys/kernel/mm/transparent_hugepage").exists();
    if !thp {
        eprintln!("skipped: this kernel has no transparent huge pages");
    }
    thp
}

fn assert_advised(file: &Path) {
    let flags = vm_flags(file);
    assert_eq!(
        flags.len(),
        1,
        "one mapping of {}: {flags:?}",
        file.display()
    );
    assert!(
        flags[0].split_whitespace().any(|f| f == "hg"),
        "{} is mapped without MADV_HUGEPAGE: {flags:?}",
        file.display()
    );
}

#[test]
fn the_daemon_maps_segments_for_huge_pages() {
    if !has_thp() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::new(tmp.path()).unwrap();
    storage.create(0, 4 << 20, b"segment header").unwrap();
    let bytes = storage.read(0).unwrap();
    assert_eq!(&bytes[..14], b"segment header");
    assert_advised(&tmp.path().join("segments").join("0000000000.seg"));
}

#[test]
fn a_reader_maps_segments_for_huge_pages() {
    if !has_thp() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = small_chunk_store(tmp.path());
    let receipt = store
        .append(AppendRequest {
            entity: "user:1".into(),
            scope: "tenant:a".into(),
            kind: 0x1001,
            payload: vec![7; 100],
            ..AppendRequest::default()
        })
        .unwrap();
    store.shutdown().unwrap();
    let reader = Reader::open(tmp.path()).unwrap();
    let e = reader.get(EventId(receipt.event_id)).unwrap().unwrap();
    assert_eq!(e.payload().unwrap(), &[7; 100][..]);
    assert_advised(&tmp.path().join("segments").join("0000000000.seg"));
}
