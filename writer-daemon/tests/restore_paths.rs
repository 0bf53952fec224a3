//! Every restore path (index files, sealed-segment footers, frame scan)
//! yields the same index as the one the live writer built.
mod common;
use common::{config, ev};
use std::path::Path;
use weir_daemon::{RestorePath, Store};

fn chunks(dir: &Path, generation: u64) -> Vec<Vec<u8>> {
    let gen_dir = dir.join("index").join(format!("gen-{generation:08}"));
    let mut names: Vec<_> = std::fs::read_dir(&gen_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("chunk-") || n.starts_with("strings-") || n == "kinds")
        .collect();
    names.sort();
    assert!(
        names.iter().filter(|n| n.starts_with("chunk-")).count() >= 3,
        "{names:?}"
    );
    names
        .iter()
        .map(|n| std::fs::read(gen_dir.join(n)).unwrap())
        .collect()
}

fn reopen(dir: &Path) -> (Store, RestorePath, u64) {
    let store = Store::open(config(dir)).unwrap();
    let r = store.restore_report().clone();
    (store, r.path, r.generation)
}

#[test]
fn all_restore_paths_build_the_same_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(config(dir)).unwrap();
    let payload = vec![7u8; 1500];
    let mut n = 0u64;
    for b in 0..60u32 {
        let batch = (0..50u32)
            .map(|i| {
                ev(
                    &format!("user:{}", (b * 50 + i) % 97),
                    0x1001 + (i % 8) as u16,
                    &payload[..(i as usize * 31) % 1500],
                )
            })
            .collect();
        n += store.append_batch(batch).unwrap().len() as u64;
    }
    let live_gen = store.restore_report().generation;
    store.shutdown().unwrap();
    drop(store);
    let live = chunks(dir, live_gen);
    let segments = std::fs::read_dir(dir.join("segments")).unwrap().count();
    assert!(
        segments >= 4,
        "expected several sealed segments, found {segments}"
    );

    let (s, path, g) = reopen(dir);
    assert_eq!(path, RestorePath::IndexFiles);
    assert_eq!(chunks(dir, g), live, "index-files path");
    assert_eq!(s.restore_report().entries, n);
    s.shutdown().unwrap();
    drop(s);

    // Without the index, sealed segments are rebuilt from their footers.
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let (s, path, g) = reopen(dir);
    assert_eq!(path, RestorePath::Footers, "{:?}", s.restore_report());
    assert!(
        s.restore_report().entries > 0
            && s.restore_report().entries + s.restore_report().tail_entries == n
    );
    assert_eq!(chunks(dir, g), live, "footers path");
    s.shutdown().unwrap();
    drop(s);

    // Without trailers (and so without usable footers), every frame is scanned.
    for e in std::fs::read_dir(dir.join("segments")).unwrap() {
        let p = e.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        let len = bytes.len();
        bytes[len - 64..].fill(0);
        std::fs::write(&p, bytes).unwrap();
    }
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let (s, path, g) = reopen(dir);
    assert_eq!(path, RestorePath::FrameScan, "{:?}", s.restore_report());
    assert_eq!(s.restore_report().entries, n);
    assert_eq!(chunks(dir, g), live, "frame-scan path");
    // The writer continues the chains where the log ends.
    let r = s.append(ev("user:0", 0x1001, b"x")).unwrap();
    assert_eq!(r.sequence, n);
}
