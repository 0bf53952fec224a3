//! A restart that reuses the index files stores the checkpoint's names
//! table and strings end into `meta`'s words (which readers read and which
//! carry no CRC) before the gate is published: a damaged word is repaired,
//! not carried forward.
mod common;
use common::{config, ev};
use weir_daemon::{RestorePath, Store};
use weir_protocol::index::{META_NAMES_TABLE_OFF, META_STRINGS_END_OFF};

#[test]
fn a_damaged_names_word_in_meta_is_repaired_by_a_clean_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = Store::open(config(dir)).unwrap();
    for i in 0..20 {
        s.append(ev(&format!("user:{i}"), 0x1001, b"x")).unwrap();
    }
    let g = s.restore_report().generation;
    s.shutdown().unwrap();
    drop(s);
    let meta = dir.join("index").join(format!("gen-{g:08}")).join("meta");
    let word = |b: &[u8], off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
    let good = std::fs::read(&meta).unwrap();
    let (table, end) = (
        word(&good, META_NAMES_TABLE_OFF),
        word(&good, META_STRINGS_END_OFF),
    );
    assert!(end > 4096, "table {table}, end {end}");
    for off in [META_NAMES_TABLE_OFF, META_STRINGS_END_OFF] {
        let mut b = std::fs::read(&meta).unwrap();
        b[off] ^= 0x80;
        std::fs::write(&meta, &b).unwrap();
        let s = Store::open(config(dir)).unwrap();
        assert_eq!(s.restore_report().path, RestorePath::IndexFiles);
        // Readers read these words once the gate is published.
        let b = std::fs::read(&meta).unwrap();
        assert_eq!(
            (
                word(&b, META_NAMES_TABLE_OFF),
                word(&b, META_STRINGS_END_OFF)
            ),
            (table, end),
            "after damage at {off}"
        );
        s.shutdown().unwrap();
    }
}
