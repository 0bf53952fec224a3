//! Every restore path (index files, checkpoint, sealed-segment footers,
//! frame scan) yields the same index as the one the live writer built.
mod common;
use common::{config, ev};
use std::path::Path;
use weir_daemon::{RestorePath, Store};
use weir_protocol::wire::{AppendRequest, Receipt};

fn gen_dir(dir: &Path, generation: u64) -> std::path::PathBuf {
    dir.join("index").join(format!("gen-{generation:08}"))
}

/// The `ranges` file holds one record per sealed chunk, equal to the id
/// range in that chunk's header (FORMAT.md, `ranges`).
fn assert_ranges_match_chunk_headers(gen_dir: &Path) {
    let ranges = std::fs::read(gen_dir.join("ranges")).unwrap();
    let word = |b: &[u8], off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
    let count = word(&ranges, 64) as usize;
    let mut sealed = 0;
    for c in 0.. {
        let Ok(chunk) = std::fs::read(gen_dir.join(format!("chunk-{c:06}"))) else {
            break;
        };
        if word(&chunk, 64) != 1 {
            break;
        }
        sealed += 1;
        let rec = &ranges[4096 + 64 * c..4096 + 64 * (c + 1)];
        assert_eq!(&rec[..32], &chunk[80..112], "chunk {c}'s ids");
        assert_eq!(
            &rec[32..40],
            &(c as u64).to_le_bytes(),
            "chunk {c}'s number"
        );
        assert_eq!(
            &rec[60..],
            &weir_protocol::crc32(&rec[..60]).to_le_bytes(),
            "chunk {c}'s CRC"
        );
    }
    assert!(sealed >= 2, "{sealed} sealed chunks");
    assert_eq!(count, sealed, "records published");
}

/// The generation's chunk, strings, kinds and ranges files, by name (the
/// ranges file without its header, which names the generation).
fn chunks(dir: &Path, generation: u64) -> Vec<(String, Vec<u8>)> {
    let gen_dir = gen_dir(dir, generation);
    let mut names: Vec<_> = std::fs::read_dir(&gen_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.starts_with("chunk-") || n.starts_with("strings-") || n == "kinds" || n == "ranges"
        })
        .collect();
    names.sort();
    assert!(
        names.iter().filter(|n| n.starts_with("chunk-")).count() >= 3,
        "{names:?}"
    );
    names
        .into_iter()
        .map(|n| {
            let mut bytes = std::fs::read(gen_dir.join(&n)).unwrap();
            if n == "ranges" {
                bytes.drain(..32);
            }
            (n, bytes)
        })
        .collect()
}

/// Asserts that two generations' files are byte-identical, naming the first
/// file and offset that differ.
fn same(got: &[(String, Vec<u8>)], want: &[(String, Vec<u8>)], what: &str) {
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: files");
    for ((name, a), (_, b)) in got.iter().zip(want) {
        assert_eq!(a.len(), b.len(), "{what}: length of {name}");
        if let Some(off) = a.iter().zip(b).position(|(x, y)| x != y) {
            panic!(
                "{what}: {name} differs at byte {off}: {} vs {}",
                a[off], b[off]
            );
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            // A checkpoint being written renames its temporary file away.
            match std::fs::copy(e.path(), to.join(e.file_name())) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                r => drop(r.unwrap()),
            }
        }
    }
}

/// The cancelled ranges the live gate publishes to readers.
fn gate_ranges(dir: &Path) -> Vec<(u64, u64)> {
    use weir_protocol::gate::{CANCEL_COUNT_OFF, CANCEL_OVERFLOW_OFF, CANCEL_RANGES_OFF};
    let b = std::fs::read(dir.join("gate")).unwrap();
    let word = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
    assert_eq!(word(CANCEL_OVERFLOW_OFF), 0);
    (0..word(CANCEL_COUNT_OFF) as usize)
        .map(|i| {
            let at = CANCEL_RANGES_OFF + 16 * i;
            (word(at), word(at + 8))
        })
        .collect()
}

/// Waits (at most 30 s) until the store's crash checkpoint covers
/// `watermark`.
fn wait_for_checkpoint(store: &Store, watermark: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.shared().checkpoint_watermark() < watermark {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint through {watermark}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Appends every acknowledged request again, `batch` events at a time (as
/// they were sent: a retry replays one append): each must be answered as a
/// replay of its original receipt (its key was remembered).
fn assert_replays(store: &Store, acked: &[(AppendRequest, Receipt)], batch: usize) {
    for sent in acked.chunks(batch) {
        let reqs = sent.iter().map(|(req, _)| req.clone()).collect();
        let again = store.append_batch(reqs).unwrap();
        for (again, (_, r)) in again.iter().zip(sent) {
            assert!(
                again.replayed,
                "key of sequence {} forgotten ({:?})",
                r.sequence,
                store.restore_report()
            );
            assert_eq!(
                (
                    again.sequence,
                    again.event_id,
                    again.event_hash,
                    again.clock
                ),
                (r.sequence, r.event_id, r.event_hash, r.clock)
            );
        }
    }
}

/// The process dies: its index files and gate stay as they are now (the
/// page cache keeps them; the store's stop must not touch them), and the
/// log keeps what was synced. Returns the log's durable image.
fn crash(
    dir: &Path,
    store: Store,
    sim: &weir_daemon::storage::SimStorage,
) -> std::collections::BTreeMap<u64, Vec<u8>> {
    let crashed = tempfile::tempdir().unwrap();
    copy_tree(&dir.join("index"), &crashed.path().join("index"));
    std::fs::copy(dir.join("gate"), crashed.path().join("gate")).unwrap();
    sim.state.lock().unwrap().dead_from = Some(0);
    drop(store);
    let image = sim.crash_image(0, None);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    copy_tree(&crashed.path().join("index"), &dir.join("index"));
    std::fs::copy(crashed.path().join("gate"), dir.join("gate")).unwrap();
    image
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
                // Names first seen past the last sealed chunk, too.
                let entity = if b >= 50 && i == 0 {
                    format!("late:{b}")
                } else {
                    format!("user:{}", (b * 50 + i) % 97)
                };
                ev(
                    &entity,
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
    assert_ranges_match_chunk_headers(&gen_dir(dir, live_gen));
    let segments = std::fs::read_dir(dir.join("segments")).unwrap().count();
    assert!(
        segments >= 4,
        "expected several sealed segments, found {segments}"
    );

    let (s, path, g) = reopen(dir);
    assert_eq!(path, RestorePath::IndexFiles);
    same(&chunks(dir, g), &live, "index-files path");
    assert_eq!(s.restore_report().entries, n);
    s.shutdown().unwrap();
    drop(s);

    // Without the clean stop's idempotency window the index files cannot be
    // reused as they are (a crash leaves the same): the crash checkpoint's
    // sealed chunks are kept, hard-linked, and the rest replayed.
    std::fs::remove_file(gen_dir(dir, g).join("idem")).unwrap();
    let (s, path, g) = reopen(dir);
    let r = s.restore_report().clone();
    assert_eq!(path, RestorePath::Checkpoint, "{r:?}");
    assert!(
        r.fallback_reason.as_deref().unwrap().contains("idem"),
        "{r:?}"
    );
    assert!(r.entries >= 2 << 10 && r.tail_entries > 0, "{r:?}");
    assert_eq!(r.entries + r.tail_entries, n);
    same(&chunks(dir, g), &live, "checkpoint path");
    let kept = gen_dir(dir, g).join("chunk-000000");
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(kept).unwrap()),
        2
    );
    s.shutdown().unwrap();
    drop(s);

    // Again, from a generation the checkpoint path made (links of links).
    std::fs::remove_file(gen_dir(dir, g).join("idem")).unwrap();
    let (s, path, g) = reopen(dir);
    assert_eq!(path, RestorePath::Checkpoint, "{:?}", s.restore_report());
    same(&chunks(dir, g), &live, "checkpoint path, twice");
    s.shutdown().unwrap();
    drop(s);

    // A damaged checkpoint is refused, by name; the next path runs.
    let prev = gen_dir(dir, g);
    std::fs::remove_file(prev.join("idem")).unwrap();
    let mut bytes = std::fs::read(prev.join("checkpoint")).unwrap();
    bytes[30] ^= 1;
    std::fs::write(prev.join("checkpoint"), bytes).unwrap();
    let (s, path, g) = reopen(dir);
    let r = s.restore_report().clone();
    assert_eq!(path, RestorePath::Footers, "{r:?}");
    let why = r.fallback_reason.unwrap_or_default();
    assert!(
        why.contains("checkpoint: ") && why.contains("checksum"),
        "{why}"
    );
    same(&chunks(dir, g), &live, "after a damaged checkpoint");
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
    same(&chunks(dir, g), &live, "footers path");
    // The rebuilt generation has its crash checkpoint before the first append.
    assert_eq!(s.shared().checkpoint_watermark(), 2 << 10);
    assert!(gen_dir(dir, g).join("checkpoint").exists());
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
    same(&chunks(dir, g), &live, "frame-scan path");
    // The writer continues the chains where the log ends.
    let r = s.append(ev("user:0", 0x1001, b"x")).unwrap();
    assert_eq!(r.sequence, n);
}

/// A crash after the writer's background checkpoint: the next start keeps
/// the checkpoint's sealed chunks (a cancelled batch's tombstones among
/// them) and replays the rest of the durable log; the index is the one a
/// full rebuild of that log makes, every acknowledged event is found by its
/// idempotency key, and chains go on.
#[test]
fn a_crash_restarts_from_the_background_checkpoint() {
    use weir_daemon::storage::SimStorage;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = weir_daemon::Config {
        checkpoint_interval_ms: 100,
        ..config(dir)
    };
    let first = SimStorage::default();
    let store = Store::open_with_storage(cfg.clone(), Box::new(first.clone())).unwrap();
    let mut key = 0u128;
    let mut acked = Vec::new();
    let mut batch = |store: &Store, b: u32, entity: &dyn Fn(u32) -> String| {
        let reqs: Vec<_> = (0..40u32)
            .map(|i| {
                key += 1;
                AppendRequest {
                    idempotency_key: Some(key),
                    ..ev(&entity(i), 0x1001 + (i % 5) as u16, &[b as u8; 700])
                }
            })
            .collect();
        let receipts = store.append_batch(reqs.clone()).unwrap();
        acked.extend(reqs.into_iter().zip(receipts));
    };
    let users = |b: u32| move |i: u32| format!("user:{}", (b * 40 + i) % 61);
    for b in 0..10 {
        batch(&store, b, &users(b));
    }
    // A batch whose write fails is cancelled (40 tombstones in the first
    // chunk); the writer refuses writes until a restart.
    {
        let mut st = first.state.lock().unwrap();
        st.fail_at = Some(st.ops + 1); // the next write fails
    }
    let failed = (0..40)
        .map(|i| ev(&users(99)(i), 0x1001, b"lost"))
        .collect();
    assert!(store.append_batch(failed).is_err());
    drop(store);
    let sim = SimStorage::from_files(first.crash_image(0, None));
    let store = Store::open_with_storage(cfg.clone(), Box::new(sim.clone())).unwrap();
    assert_eq!(store.restore_report().cancelled, 40);
    for b in 10..60 {
        batch(&store, b, &users(b));
    }
    wait_for_checkpoint(&store, 2 << 10);
    // After the checkpoint: more events, new names among them.
    for b in 60..70 {
        batch(&store, b, &|i| format!("late:{}", (b * 40 + i) % 7));
    }
    let n = acked.len() as u64 + 40;
    assert!(n < 3 << 10, "the third chunk must stay unsealed");
    let image = crash(dir, store, &sim);

    let store =
        Store::open_with_storage(cfg.clone(), Box::new(SimStorage::from_files(image.clone())))
            .unwrap();
    let r = store.restore_report().clone();
    assert_eq!(r.path, RestorePath::Checkpoint, "{r:?}");
    assert_eq!(
        (r.entries, r.entries + r.tail_entries, r.cancelled),
        ((2 << 10) - 40, n - 40, 40),
        "{r:?}"
    );
    assert_replays(&store, &acked, 40);
    let via_checkpoint = chunks(dir, r.generation);
    // Readers see the cancelled batch as cancelled (the range came from the
    // kept chunk's tombstones, not from the log).
    assert_eq!(gate_ranges(dir), vec![(400, 440)]);
    store.shutdown().unwrap();
    drop(store);

    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let sim = SimStorage::from_files(image);
    let store = Store::open_with_storage(cfg.clone(), Box::new(sim.clone())).unwrap();
    let r = store.restore_report().clone();
    assert_ne!(r.path, RestorePath::Checkpoint, "{r:?}");
    assert_eq!(r.cancelled, 40, "{r:?}");
    assert_eq!(gate_ranges(dir), vec![(400, 440)]);
    same(
        &chunks(dir, r.generation),
        &via_checkpoint,
        "checkpoint vs rebuild",
    );
    let next = store.append(ev("late:3", 0x1001, b"after")).unwrap();
    assert_eq!((next.sequence, next.replayed), (n, false));

    // A crash right after that rebuild: the checkpoint the rebuild wrote
    // for its generation is used, with its idempotency window.
    let image = crash(dir, store, &sim);
    let store = Store::open_with_storage(cfg, Box::new(SimStorage::from_files(image))).unwrap();
    let r = store.restore_report().clone();
    assert_eq!(r.path, RestorePath::Checkpoint, "{r:?}");
    assert_eq!(r.entries + r.tail_entries, n - 40 + 1, "{r:?}");
    assert_replays(&store, &acked, 40);
    store.shutdown().unwrap();
}

/// Under `sync = never` a crash checkpoint is taken after an explicit sync,
/// and only while every written frame is durable: keys appended (and not
/// synced) after a sync evict older keys from the idempotency window, and a
/// checkpoint taken then would record a window missing durable keys that
/// the crash does not bring back.
#[test]
fn a_checkpoint_never_records_a_window_a_crash_can_shrink() {
    use weir_daemon::storage::SimStorage;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = weir_daemon::Config {
        sync: weir_daemon::SyncPolicy::Never,
        idempotency_window: 100,
        checkpoint_interval_ms: 100,
        ..config(dir)
    };
    let sim = SimStorage::default();
    let store = Store::open_with_storage(cfg.clone(), Box::new(sim.clone())).unwrap();
    let mut acked = Vec::new();
    let mut key = 0u128;
    let mut append = |store: &Store, batches: u32| {
        for _ in 0..batches {
            let reqs: Vec<_> = (0..50u32)
                .map(|i| {
                    key += 1;
                    AppendRequest {
                        idempotency_key: Some(key),
                        ..ev(&format!("user:{}", i % 13), 0x1001, &[7; 300])
                    }
                })
                .collect();
            let receipts = store.append_batch(reqs.clone()).unwrap();
            acked.extend(reqs.into_iter().zip(receipts));
        }
    };
    append(&store, 22); // 1100 keyed events: one chunk of 1024 seals
    store.sync().unwrap(); // the first checkpoint, at 1024
    // An unsynced event at once: only the check right after the sync can
    // have taken the checkpoint (the idle tick would find a frame not durable).
    store.append(ev("user:x", 0x1001, b"unsynced")).unwrap();
    wait_for_checkpoint(&store, 1 << 10);
    append(&store, 20); // 2101: the second chunk seals
    // Synced within the 100 ms interval of the first checkpoint, so no
    // checkpoint now (unless this machine took longer than that).
    store.sync().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    append(&store, 4); // 200 more, never synced, past the interval
    let image = crash(dir, store, &sim);

    let store = Store::open_with_storage(cfg, Box::new(SimStorage::from_files(image))).unwrap();
    let r = store.restore_report().clone();
    assert_eq!(store.stats().visible, 2101, "{r:?}");
    assert_eq!(r.path, RestorePath::Checkpoint, "{r:?}");
    assert!(r.entries == 1 << 10 || r.entries == 2 << 10, "{r:?}");
    // The newest 100 durable keys are remembered, whatever the path.
    assert_replays(&store, &acked[2000..2100], 50);
    store.shutdown().unwrap();
}

#[test]
fn a_segment_made_larger_than_the_configured_size_keeps_its_length() {
    // Events written into 4 MiB segments; the daemon restarts with 1 MiB:
    // it goes on in the open 4 MiB segment, so sealing it must put the
    // trailer at its own end, not inside its frames at 1 MiB.
    let dir = tempfile::tempdir().unwrap();
    let sized = |len: u64| weir_daemon::Config {
        segment_max_bytes: len,
        ..config(dir.path())
    };
    let payload = vec![5u8; 60 << 10];
    let s = Store::open(sized(4 << 20)).unwrap();
    for i in 0..50 {
        s.append(ev(&format!("e{i}"), 0x1001, &payload)).unwrap();
    }
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open(sized(1 << 20)).unwrap();
    for i in 50..70 {
        // Fills the open segment, rotates, and goes on in 1 MiB ones.
        s.append(ev(&format!("e{i}"), 0x1001, &payload)).unwrap();
    }
    let segments = s.stats().segments;
    s.shutdown().unwrap();
    drop(s);
    assert!(segments >= 2, "a rotation happened ({segments} segments)");
    // Rebuild from the log alone.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    std::fs::remove_file(dir.path().join("gate")).unwrap();
    let s = Store::open(sized(1 << 20)).unwrap();
    let r = s.restore_report().clone();
    assert_eq!((r.entries + r.tail_entries, r.cancelled), (70, 0), "{r:?}");
    s.shutdown().unwrap();
}

#[test]
fn every_path_counts_cancelled_sequences_apart_from_events() {
    // A group whose sync fails is cancelled; each restore path then reports
    // the stored events as entries and the cancelled sequences apart.
    use weir_daemon::storage::SimStorage;
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    for i in 0..5 {
        s.append(ev(&format!("e{i}"), 0x1001, b"kept")).unwrap();
    }
    let ops = sim.state.lock().unwrap().ops;
    sim.state.lock().unwrap().fail_at = Some(ops + 2); // the group's sync
    let batch = (0..3).map(|i| ev("z", 0x1001, &[i; 10])).collect();
    assert!(s.append_batch(batch).is_err());
    drop(s);
    let mut paths = Vec::new();
    for _ in 0..2 {
        let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
        let r = s.restore_report().clone();
        assert_eq!((r.entries + r.tail_entries, r.cancelled), (5, 3), "{r:?}");
        paths.push(r.path);
        s.shutdown().unwrap();
    }
    assert_eq!(
        paths[1],
        RestorePath::IndexFiles,
        "the second start reuses the files"
    );
}
