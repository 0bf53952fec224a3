//! A refused start leaves no half-built index generation and no `gate.tmp`
//! behind, and a successful start removes generations newer than the one
//! its gate names (which no gate ever named); a start refused before its
//! gate is published leaves a clean stop's index files reusable.
mod common;
use common::{config, ev, files, unchanged};
use std::path::Path;
use weir_daemon::{RestorePath, Store};

fn leftovers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("index"))
        .unwrap()
        .map(|e| format!("index/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    if dir.join("gate.tmp").exists() {
        v.push("gate.tmp".into());
    }
    v.sort();
    v
}

/// Ten events in `dir`, stopped cleanly.
fn stopped_store(dir: &Path) {
    let s = Store::open(config(dir)).unwrap();
    for i in 0..10 {
        s.append(ev(&format!("e{i}"), 0x1001, b"x")).unwrap();
    }
    s.shutdown().unwrap();
}

#[test]
fn a_refused_start_removes_what_it_built() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    stopped_store(dir);
    let clean = vec!["index/gen-00000000".to_string()];
    assert_eq!(leftovers(dir), clean);
    let seg = dir.join("segments").join("0000000000.seg");
    let bytes = std::fs::read(&seg).unwrap();

    // The segment truncated to nothing: restore refuses it (while
    // rebuilding generation 1).
    std::fs::write(&seg, b"").unwrap();
    let err = Store::open(config(dir)).unwrap_err();
    assert!(err.to_string().contains("0000000000.seg"), "{err}");
    assert_eq!(leftovers(dir), clean, "after {err}");
    std::fs::write(&seg, &bytes).unwrap();

    // The gate replaced by a directory: publishing the new gate fails
    // (after generation 1 was built).
    std::fs::rename(dir.join("gate"), dir.join("gate.saved")).unwrap();
    std::fs::create_dir(dir.join("gate")).unwrap();
    let err = Store::open(config(dir)).unwrap_err();
    assert_eq!(leftovers(dir), clean, "after {err}");
    std::fs::remove_dir(dir.join("gate")).unwrap();
    std::fs::rename(dir.join("gate.saved"), dir.join("gate")).unwrap();

    // What an older build's refused start left: removed by the next start.
    std::fs::create_dir_all(dir.join("index/gen-00000001")).unwrap();
    std::fs::write(dir.join("index/gen-00000001/meta"), b"half").unwrap();
    std::fs::write(dir.join("gate.tmp"), b"half").unwrap();
    let s = Store::open(config(dir)).unwrap();
    assert_eq!(s.restore_report().path, RestorePath::IndexFiles);
    assert_eq!(s.stats().visible, 10);
    // Deleted on a thread of its own, which the stop joins.
    s.shutdown().unwrap();
    assert_eq!(leftovers(dir), clean);
}

#[test]
fn a_start_refused_at_gate_tmp_keeps_the_clean_stop_mark() {
    // On a full disk the new gate.tmp cannot be allocated. The clean mark
    // of the reused index files must survive that refusal, or the next
    // start needs the space of a whole new generation.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    stopped_store(dir);
    // A directory in the way: creating gate.tmp fails (as fallocate would).
    std::fs::create_dir_all(dir.join("gate.tmp/x")).unwrap();
    let before = files(dir);
    let err = Store::open(config(dir)).unwrap_err();
    assert!(err.to_string().contains("gate.tmp"), "{err}");
    unchanged(dir, &before);
    std::fs::remove_dir_all(dir.join("gate.tmp")).unwrap();
    let s = Store::open(config(dir)).unwrap();
    assert_eq!(
        s.restore_report().path,
        RestorePath::IndexFiles,
        "{:?}",
        s.restore_report().fallback_reason
    );
    assert_eq!(s.stats().visible, 10);
    s.shutdown().unwrap();
}
