//! A clean restart takes the previous gate's cancelled ranges (words with
//! no checksum) only if they are sorted, merged, below the watermark and
//! cover tombstone rows alone: damaged ones send restore down the next
//! path, which recomputes them from the log, and no event is hidden.
mod common;
use common::{config, ev};
use std::path::Path;
use weir_daemon::storage::SimStorage;
use weir_daemon::{RestorePath, Store};
use weir_protocol::gate::{CANCEL_COUNT_OFF, CANCEL_OVERFLOW_OFF, CANCEL_RANGES_OFF};

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn gate_word(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// The cancelled ranges the gate publishes to readers.
fn gate_ranges(dir: &Path) -> Vec<(u64, u64)> {
    let b = std::fs::read(dir.join("gate")).unwrap();
    assert_eq!(gate_word(&b, CANCEL_OVERFLOW_OFF), 0);
    (0..gate_word(&b, CANCEL_COUNT_OFF) as usize)
        .map(|i| {
            let at = CANCEL_RANGES_OFF + 16 * i;
            (gate_word(&b, at), gate_word(&b, at + 8))
        })
        .collect()
}

#[test]
fn damaged_cancelled_ranges_in_the_gate_are_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    // Events 0..5, a failed group of 3 (cancelled: [5, 8)), 20 more events,
    // a clean stop.
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config(&clean), Box::new(sim.clone())).unwrap();
    for i in 0..5 {
        s.append(ev(&format!("e{i}"), 0x1001, b"kept")).unwrap();
    }
    let ops = sim.state.lock().unwrap().ops;
    sim.state.lock().unwrap().fail_at = Some(ops + 2); // the group's sync
    let batch = (0..3).map(|i| ev("z", 0x1001, &[i; 10])).collect();
    assert!(s.append_batch(batch).is_err());
    drop(s);
    let s = Store::open_with_storage(config(&clean), Box::new(sim.clone())).unwrap();
    for i in 0..20 {
        s.append(ev(&format!("e{}", i % 4), 0x1001, b"later"))
            .unwrap();
    }
    s.shutdown().unwrap();
    drop(s);
    assert_eq!(gate_ranges(&clean), vec![(5, 8)]);
    let image = sim.crash_image(0, None);

    let r0 = CANCEL_RANGES_OFF;
    let cases: [(&str, &[(usize, u64)]); 7] = [
        ("intact", &[]),
        ("end over events", &[(r0 + 8, 20)]),
        ("end past the watermark", &[(r0 + 8, 1_000_000)]),
        ("start over events", &[(r0, 0)]),
        ("end before start", &[(r0 + 8, 4)]),
        (
            "a second range over events",
            &[(CANCEL_COUNT_OFF, 2), (r0 + 16, 10), (r0 + 24, 12)],
        ),
        (
            "unsorted",
            &[(CANCEL_COUNT_OFF, 2), (r0 + 16, 6), (r0 + 24, 7)],
        ),
    ];
    for (i, (what, words)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case-{i}"));
        copy_tree(&clean, &dir);
        let mut gate = std::fs::read(dir.join("gate")).unwrap();
        for &(off, v) in words {
            gate[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        std::fs::write(dir.join("gate"), gate).unwrap();
        let sim = SimStorage::from_files(image.clone());
        let s = Store::open_with_storage(config(&dir), Box::new(sim.clone())).unwrap();
        let r = s.restore_report().clone();
        if words.is_empty() {
            assert_eq!(r.path, RestorePath::IndexFiles, "{what}: {r:?}");
        } else {
            assert_ne!(r.path, RestorePath::IndexFiles, "{what}: {r:?}");
            let why = r.fallback_reason.clone().unwrap_or_default();
            assert!(why.contains("cancelled range"), "{what}: {why}");
        }
        assert_eq!(
            (r.entries + r.tail_entries, r.cancelled),
            (25, 3),
            "{what}: {r:?}"
        );
        assert_eq!(s.stats().visible, 28, "{what}");
        assert_eq!(gate_ranges(&dir), vec![(5, 8)], "{what}");
        s.shutdown().unwrap();
        drop(s);
        // The ranges carried forward are the recomputed ones.
        let s = Store::open_with_storage(config(&dir), Box::new(sim)).unwrap();
        let r = s.restore_report().clone();
        assert_eq!(r.path, RestorePath::IndexFiles, "{what}, again: {r:?}");
        assert_eq!((r.entries, r.cancelled), (25, 3), "{what}, again: {r:?}");
        assert_eq!(gate_ranges(&dir), vec![(5, 8)], "{what}, again");
        s.shutdown().unwrap();
    }
}
