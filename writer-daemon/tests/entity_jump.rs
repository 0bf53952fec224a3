//! Every row's `entity_jump` hint (FORMAT.md, Row) is the distance to the
//! row eight links down its entity's chain, or 0 where the chain is shorter:
//! while the daemon runs, and after a restart, where the daemon no longer
//! has the entity's newest sequences in memory and reads them down the chain.
mod common;
use common::{config, ev};
use std::collections::HashMap;
use std::path::Path;
use weir_daemon::{RestorePath, Store};
use weir_protocol::index::{ChunkGeometry, ENTITY_JUMP, Row};
use zerocopy::FromBytes;

/// The rows of sequences `0..end` in generation `g`.
fn rows(dir: &Path, g: u64, end: u64) -> Vec<Row> {
    let geo = ChunkGeometry {
        log2: config(dir).chunk_rows_log2,
    };
    let gen_dir = dir.join("index").join(format!("gen-{g:08}"));
    let mut chunks: HashMap<u64, Vec<u8>> = HashMap::new();
    (0..end)
        .map(|seq| {
            let (c, i) = geo.locate(seq);
            let chunk = chunks
                .entry(c)
                .or_insert_with(|| std::fs::read(gen_dir.join(format!("chunk-{c:06}"))).unwrap());
            let off = geo.row_offset(i);
            let row = Row::read_from_bytes(&chunk[off..off + 128]).unwrap();
            assert_eq!(row.sequence.get(), seq);
            row
        })
        .collect()
}

/// Asserts each row's hint against its entity's chain; returns how many
/// rows carry one.
fn assert_jumps(rows: &[Row]) -> usize {
    let mut chains: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut hinted = 0;
    for row in rows {
        let seq = row.sequence.get();
        let chain = chains.entry(row.entity_id.get()).or_default();
        let want = match chain.len().checked_sub(ENTITY_JUMP) {
            Some(k) => seq - chain[k],
            None => 0,
        };
        assert_eq!(
            u64::from(row.entity_jump.get()),
            want,
            "entity_jump of sequence {seq} (link {} of its chain)",
            chain.len()
        );
        hinted += usize::from(want != 0);
        chain.push(seq);
    }
    hinted
}

#[test]
fn rows_point_eight_links_down_their_chain_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Entities with long and short chains, spread over several chunks.
    let entity = |b: u32, i: u32| match (b * 40 + i) % 7 {
        0..=2 => "busy".to_owned(),
        n => format!("quiet:{}", (b + n) % 3),
    };
    let fill = |store: &Store, batches: std::ops::Range<u32>| {
        for b in batches {
            let batch = (0..40).map(|i| ev(&entity(b, i), 0x1001, b"p")).collect();
            store.append_batch(batch).unwrap();
        }
    };
    let store = Store::open(config(dir)).unwrap();
    fill(&store, 0..40);
    store.shutdown().unwrap();
    drop(store);

    // After a clean stop the daemon reopens the index files and starts
    // with no sequences in memory.
    let store = Store::open(config(dir)).unwrap();
    assert_eq!(store.restore_report().path, RestorePath::IndexFiles);
    // Two events of a chain first, so that the restart happens mid-window.
    store.append(ev("busy", 0x1001, b"q")).unwrap();
    store.append(ev("busy", 0x1001, b"q")).unwrap();
    fill(&store, 40..70);
    let g = store.restore_report().generation;
    store.shutdown().unwrap();

    let end = 70 * 40 + 2;
    let all = rows(dir, g, end);
    let hinted = assert_jumps(&all);
    // Every row past the first eight of its chain carries a hint.
    assert!(hinted > end as usize - 40, "{hinted} of {end} rows hinted");
}
