//! Commands queued back to back share group commits: chains that run
//! through several commands of one group, keys replayed inside the group
//! that wrote them, single appends behind batches. Every frame must carry
//! the hash chain that one event at a time would give, recomputed here from
//! the segment files themselves, and every receipt (replays included) the
//! hash its frame carries.
mod common;
use common::{config, ev};
use std::collections::HashMap;
use std::sync::mpsc;
use weir_daemon::{Config, Store};
use weir_protocol::hash::{HashInput, event_hash};
use weir_protocol::segment::{Decoded, SEGMENT_HEADER_LEN, decode_at};
use weir_protocol::wire::{AppendRequest, Receipt};

fn keyed(entity: &str, n: u32, key: Option<u128>) -> AppendRequest {
    AppendRequest {
        idempotency_key: key,
        ..ev(entity, 0x1001, format!("{entity} #{n}").as_bytes())
    }
}

/// Every event frame in the store's segments, in order: checks each
/// frame's CRC and recomputes its chain. Returns sequence → event_hash.
fn walk_and_check_chains(dir: &std::path::Path) -> HashMap<u64, [u8; 32]> {
    let mut names: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    names.sort();
    let mut heads: HashMap<Vec<u8>, [u8; 32]> = HashMap::new();
    let mut hashes = HashMap::new();
    for path in names {
        let seg = std::fs::read(&path).unwrap();
        let mut off = SEGMENT_HEADER_LEN;
        loop {
            let (d, len) = decode_at(&seg, off, true).unwrap();
            let Decoded::Event(f) = d else { break };
            let h = f.header;
            let prev = heads.get(f.entity).copied().unwrap_or([0; 32]);
            assert_eq!(
                h.prev_hash,
                prev,
                "prev_hash of sequence {}",
                h.sequence.get()
            );
            let want = event_hash(&HashInput {
                prev_hash: prev,
                ..f.hash_input()
            });
            assert_eq!(
                h.event_hash,
                want,
                "event_hash of sequence {}",
                h.sequence.get()
            );
            heads.insert(f.entity.to_vec(), want);
            hashes.insert(h.sequence.get(), want);
            off += len;
        }
    }
    hashes
}

#[test]
fn grouped_commands_chain_as_one_event_at_a_time_would() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        max_batch_events: 512,
        max_batch_bytes: 128 << 10,
        ..config(dir.path())
    };
    let store = Store::open(cfg).unwrap();
    // Queued back to back so that they share groups: long chains across
    // commands (e0..e6 in both batches), new entities, keys, a replay of a
    // batch staged in the same group, and single appends.
    let first: Vec<_> = (0..300)
        .map(|i| keyed(&format!("e{}", i % 7), i, Some(1000 + u128::from(i))))
        .collect();
    let second: Vec<_> = (0..200)
        .map(|i| keyed(&format!("e{}", i % 11), i, None))
        .collect();
    let replay = first.clone();
    let (tx, rx) = mpsc::channel::<(usize, Vec<Receipt>)>();
    let cmds = [
        first,
        second,
        replay,
        vec![keyed("e0", 999, None)],
        vec![keyed("solo", 0, None)],
    ];
    for (n, events) in cmds.into_iter().enumerate() {
        let tx = tx.clone();
        store
            .submit(events, Box::new(move |r| drop(tx.send((n, r.unwrap())))))
            .unwrap();
    }
    drop(tx);
    let mut got: Vec<(usize, Vec<Receipt>)> = rx.iter().collect();
    got.sort_by_key(|(n, _)| *n);
    assert_eq!(got.len(), 5);
    // After the groups: e0's head must be settled (its next event chains on).
    let after = store.append(keyed("e0", 1000, None)).unwrap();
    store.shutdown().unwrap();

    let hashes = walk_and_check_chains(dir.path());
    assert_eq!(hashes.len(), 300 + 200 + 1 + 1 + 1);
    for (n, receipts) in &got {
        for r in receipts {
            assert_eq!(
                hashes[&r.sequence], r.event_hash,
                "command {n}, sequence {}",
                r.sequence
            );
        }
    }
    // The replay answered the first batch's receipts, hashes included.
    let originals: HashMap<u64, [u8; 32]> = got[0]
        .1
        .iter()
        .map(|r| (r.sequence, r.event_hash))
        .collect();
    assert_eq!(got[2].1.len(), 300);
    for r in &got[2].1 {
        assert!(r.replayed);
        assert_eq!(originals[&r.sequence], r.event_hash);
    }
    assert_eq!(hashes[&after.sequence], after.event_hash);
    assert_ne!(after.event_hash, [0; 32]);
}
