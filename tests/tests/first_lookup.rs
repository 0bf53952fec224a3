//! A first lookup in a store of many index chunks maps only the chunks it
//! must: the sealed chunks' id ranges come from the generation's `ranges`
//! file (FORMAT.md), not from mapping every chunk newest first.

use weir::{EventId, Reader};
mod common;
use common::{mapped_read_only, small_chunk_store};
use weir_protocol::wire::AppendRequest;

/// The chunk files of `dir` this process maps read-only.
fn chunks_mapped_read_only(dir: &std::path::Path) -> Vec<String> {
    let mut names = mapped_read_only(dir);
    names.retain(|n| n.starts_with("chunk-"));
    names
}

#[test]
fn a_first_lookup_maps_only_the_chunks_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = small_chunk_store(dir);
    // Five chunks of 1024 rows: four sealed, the fifth filling.
    let mut receipts = Vec::new();
    for b in 0..18 {
        let batch = (0..250)
            .map(|i| AppendRequest {
                entity: format!("user:{}", (b * 250 + i) % 31),
                scope: "s".into(),
                kind: 0x1001,
                payload: vec![b as u8; 20],
                // Client-chosen ids are found through the index (the
                // daemon's own are found by place and map no chunk at all:
                // tests/located_ids.rs).
                event_id: Some(0x0190_0000_0000_7000_8000_0000_0000_0000 + (b * 250 + i) as u128),
                ..AppendRequest::default()
            })
            .collect();
        receipts.extend(store.append_batch(batch).unwrap());
    }
    assert_eq!(receipts.len(), 4500);

    let r = Reader::open(dir).unwrap();
    let e = r.get(EventId(receipts[10].event_id)).unwrap().unwrap();
    assert_eq!(e.sequence(), 10);
    assert_eq!(e.payload().unwrap(), &[0u8; 20]);
    // The newest chunk (filling: its range is not final) and the one that
    // holds the event; chunks 1-3 were ruled out by their published ranges.
    assert_eq!(
        chunks_mapped_read_only(dir),
        ["chunk-000000", "chunk-000004"]
    );
    // Every event is still found, in whichever chunk it lies.
    for (seq, rec) in receipts.iter().enumerate().step_by(37) {
        let e = r.get(EventId(rec.event_id)).unwrap().unwrap();
        assert_eq!(e.sequence(), seq as u64);
    }
    assert!(
        r.get(EventId(receipts[0].event_id + 1_000_000))
            .unwrap()
            .is_none()
    );
    drop(r);

    // A damaged record (chunk 2's max id zeroed, its CRC left stale) is
    // ignored: a new reader takes chunk 2's range from its header and still
    // finds the chunk's events.
    let ranges = dir.join("index/gen-00000000/ranges");
    let mut bytes = std::fs::read(&ranges).unwrap();
    bytes[4096 + 2 * 64 + 16..4096 + 2 * 64 + 32].fill(0);
    std::fs::write(&ranges, &bytes).unwrap();
    let r = Reader::open(dir).unwrap();
    let e = r.get(EventId(receipts[2100].event_id)).unwrap().unwrap();
    assert_eq!(e.sequence(), 2100);
    drop(r);
    store.shutdown().unwrap();
}
