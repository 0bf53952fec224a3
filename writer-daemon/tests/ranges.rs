//! A reopened generation's `ranges` file is checked against the chunk
//! headers: missing or damaged, it is written again from them, and the
//! start still reuses the index files.
mod common;
use common::{config, ev};
use std::path::{Path, PathBuf};
use weir_daemon::{RestorePath, Store};

fn ranges_file(dir: &Path, generation: u64) -> PathBuf {
    dir.join("index")
        .join(format!("gen-{generation:08}"))
        .join("ranges")
}

/// A store with several sealed chunks, cleanly stopped; its generation.
fn fill(dir: &Path) -> u64 {
    let store = Store::open(config(dir)).unwrap();
    for b in 0..60u32 {
        let batch = (0..50u32)
            .map(|i| ev(&format!("u:{}", (b * 50 + i) % 97), 0x1001, b"xy"))
            .collect();
        store.append_batch(batch).unwrap();
    }
    let g = store.restore_report().generation;
    store.shutdown().unwrap();
    g
}

/// Damages the stopped store's `ranges` file with `damage`, restarts, and
/// asserts the index-files path ran and the file is back to what it was.
fn restart_repairs(damage: impl FnOnce(&Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let g = fill(dir);
    let path = ranges_file(dir, g);
    let good = std::fs::read(&path).unwrap();
    let count = u64::from_le_bytes(good[64..72].try_into().unwrap());
    assert!(count >= 2, "{count} records");
    damage(&path);
    assert_ne!(std::fs::read(&path).ok(), Some(good.clone()));
    let s = Store::open(config(dir)).unwrap();
    let r = s.restore_report().clone();
    assert_eq!(r.path, RestorePath::IndexFiles, "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert!(!path.with_extension("tmp").exists());
    s.shutdown().unwrap();
}

#[test]
fn a_generation_without_ranges_gets_one() {
    restart_repairs(|p| std::fs::remove_file(p).unwrap());
}

#[test]
fn a_damaged_ranges_header_is_written_again() {
    restart_repairs(|p| {
        let mut b = std::fs::read(p).unwrap();
        b[..32].fill(0);
        std::fs::write(p, &b).unwrap();
    });
}

#[test]
fn a_damaged_ranges_record_is_written_again() {
    restart_repairs(|p| {
        let mut b = std::fs::read(p).unwrap();
        b[4096 + 64 + 3] ^= 0x40;
        std::fs::write(p, &b).unwrap();
    });
}

#[test]
fn a_count_past_the_sealed_chunks_is_written_again() {
    restart_repairs(|p| {
        let mut b = std::fs::read(p).unwrap();
        b[64..72].copy_from_slice(&1000u64.to_le_bytes());
        std::fs::write(p, &b).unwrap();
    });
}
