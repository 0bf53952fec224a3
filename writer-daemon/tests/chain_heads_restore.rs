//! A restart reads each entity's chain head back through the index only if
//! the head's row is that entity's event: a damaged head word (index-files
//! path) or entity column cell (checkpoint path) that names another
//! entity's row sends restore down the next path, and the writer continues
//! every chain where the log has it (no repeated clock, no broken hash).
mod common;
use common::{config, ev};
use std::collections::HashMap;
use std::path::Path;
use weir_daemon::{RestorePath, Store};
use weir_protocol::hash::{HashInput, event_hash};
use weir_protocol::index::{ChunkGeometry, NS_ENTITY, PAGE, STRING_ENTRY_HEADER, STRING_HEAD_OFF};
use weir_protocol::segment::{Decoded, SEGMENT_HEADER_LEN, decode_at};

fn gen_dir(dir: &Path, generation: u64) -> std::path::PathBuf {
    dir.join("index").join(format!("gen-{generation:08}"))
}

/// Entity name → offset of its entry in `strings-0000`.
fn entity_entries(gen_dir: &Path) -> HashMap<String, usize> {
    let b = std::fs::read(gen_dir.join("strings-0000")).unwrap();
    let mut out = HashMap::new();
    let mut off = PAGE;
    loop {
        let len = u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        if b[off + 4] == NS_ENTITY {
            let name = &b[off + STRING_ENTRY_HEADER..][..len];
            out.insert(String::from_utf8(name.to_vec()).unwrap(), off);
        }
        off += (STRING_ENTRY_HEADER + len).next_multiple_of(8);
    }
    out
}

/// Walks every frame of the log, checking each entity's hash chain and
/// that its clocks run 0, 1, 2, …; returns each entity's event count.
fn check_chains(dir: &Path) -> HashMap<Vec<u8>, u32> {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    let mut heads: HashMap<Vec<u8>, ([u8; 32], u32)> = HashMap::new();
    for path in paths {
        let seg = std::fs::read(&path).unwrap();
        let mut off = SEGMENT_HEADER_LEN;
        loop {
            let (d, len) = decode_at(&seg, off, true).unwrap();
            let Decoded::Event(f) = d else { break };
            let h = f.header;
            let (prev, clock) = heads.get(f.entity).copied().unwrap_or(([0; 32], 0));
            let seq = h.sequence.get();
            assert_eq!(h.prev_hash, prev, "prev_hash of sequence {seq}");
            assert_eq!(h.clock.get(), clock, "clock of sequence {seq}");
            let want = event_hash(&HashInput {
                prev_hash: prev,
                ..f.hash_input()
            });
            assert_eq!(h.event_hash, want, "event_hash of sequence {seq}");
            heads.insert(f.entity.to_vec(), (want, clock + 1));
            off += len;
        }
    }
    heads.into_iter().map(|(k, (_, n))| (k, n)).collect()
}

/// Appends one more event to each of `entities`, then checks every chain
/// in the log.
fn append_and_check(store: &Store, dir: &Path, entities: &[&str]) {
    let before = check_chains(dir);
    for e in entities {
        let r = store.append(ev(e, 0x1001, b"after")).unwrap();
        assert_eq!(r.clock, before[e.as_bytes()], "clock of {e}'s new event");
    }
    store.sync().unwrap();
    check_chains(dir);
}

#[test]
fn a_head_word_naming_another_entitys_row_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = Store::open(config(dir)).unwrap();
    // e0..e5 have one event each (0..6), e6 the other 14 (6..20).
    for i in 0..20 {
        s.append(ev(&format!("e{}", i.min(6)), 0x1001, b"x"))
            .unwrap();
    }
    let g = s.restore_report().generation;
    s.shutdown().unwrap();
    drop(s);
    // e0's head word names e6's newest row.
    let strings = gen_dir(dir, g).join("strings-0000");
    let off = entity_entries(&gen_dir(dir, g))["e0"] + STRING_HEAD_OFF;
    let mut b = std::fs::read(&strings).unwrap();
    assert_eq!(b[off..off + 8], 1u64.to_le_bytes());
    b[off..off + 8].copy_from_slice(&20u64.to_le_bytes());
    std::fs::write(&strings, b).unwrap();

    let s = Store::open(config(dir)).unwrap();
    let r = s.restore_report().clone();
    assert_ne!(r.path, RestorePath::IndexFiles, "{r:?}");
    let why = r.fallback_reason.clone().unwrap_or_default();
    assert!(why.contains("e0") && why.contains("row 19"), "{why}");
    assert_eq!(r.entries + r.tail_entries, 20, "{r:?}");
    append_and_check(&s, dir, &["e0", "e6"]);
}

#[test]
fn an_entity_column_cell_naming_another_entity_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = weir_daemon::Config {
        checkpoint_interval_ms: 100,
        ..config(dir)
    };
    let s = Store::open(cfg.clone()).unwrap();
    // Rows 0..1024 cycle through e0..e6 (row 1023 is e1's newest), the
    // rest name other entities.
    for b in 0..16 {
        let batch = (0..64)
            .map(|i| ev(&format!("e{}", (b * 64 + i) % 7), 0x1001, b"x"))
            .collect();
        s.append_batch(batch).unwrap();
    }
    for i in 0..50 {
        s.append(ev(&format!("late{}", i % 3), 0x1001, b"y"))
            .unwrap();
    }
    let g = s.restore_report().generation;
    s.shutdown().unwrap();
    drop(s);
    let gd = gen_dir(dir, g);
    assert!(gd.join("checkpoint").exists());
    // Without `idem` the index files are not reused: the checkpoint path
    // keeps chunk 0 and takes heads from its entity column, where row 1023
    // now names e2.
    std::fs::remove_file(gd.join("idem")).unwrap();
    let e2 = (entity_entries(&gd)["e2"] / 8) as u32;
    let geo = ChunkGeometry { log2: 10 };
    let chunk = gd.join("chunk-000000");
    let mut b = std::fs::read(&chunk).unwrap();
    let cell = geo.entities_offset() + 1023 * 4;
    b[cell..cell + 4].copy_from_slice(&e2.to_le_bytes());
    std::fs::write(&chunk, b).unwrap();

    let s = Store::open(cfg).unwrap();
    let r = s.restore_report().clone();
    assert_ne!(r.path, RestorePath::IndexFiles, "{r:?}");
    assert_ne!(r.path, RestorePath::Checkpoint, "{r:?}");
    let why = r.fallback_reason.clone().unwrap_or_default();
    assert!(why.contains("checkpoint: ") && why.contains("e2"), "{why}");
    assert_eq!(r.entries + r.tail_entries, 1074, "{r:?}");
    append_and_check(&s, dir, &["e1", "e2"]);
}
