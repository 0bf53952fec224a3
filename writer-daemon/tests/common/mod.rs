//! Shared helpers for the daemon's in-process tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weir_daemon::{Config, Store};
use weir_protocol::wire::AppendRequest;

/// A small-file configuration for tests.
pub fn config(dir: &std::path::Path) -> Config {
    Config {
        segment_max_bytes: 1 << 20,
        chunk_rows_log2: 10,
        max_payload_bytes: 64 << 10,
        max_batch_bytes: 256 << 10,
        max_batch_events: 64,
        max_frame_bytes: 1 << 20,
        ..Config::new(dir)
    }
}

/// An append request.
pub fn ev(entity: &str, kind: u16, payload: &[u8]) -> AppendRequest {
    AppendRequest {
        entity: entity.into(),
        scope: "tenant:a".into(),
        kind,
        payload: payload.to_vec(),
        ..AppendRequest::default()
    }
}

/// `events` events (a multiple of 50) in batches of 50: 37 entities,
/// 1200-byte payloads, about 600 to a 1 MiB segment.
pub fn fill(store: &Store, events: u64) {
    for b in 0..(events / 50) {
        let batch = (0..50)
            .map(|i| {
                ev(
                    &format!("user:{}", (b * 50 + i) % 37),
                    0x1001,
                    &[b as u8; 1200],
                )
            })
            .collect();
        store.append_batch(batch).unwrap();
    }
}

/// The path of segment `id` in the data directory `dir`.
pub fn segment(dir: &Path, id: u64) -> PathBuf {
    dir.join("segments")
        .join(weir_daemon::storage::segment_file_name(id))
}

/// Every file under `dir` (by its path below `dir`) but `LOCK` and
/// zero-filled `.prep` files (every start removes those leftovers of a
/// preparation), with its bytes: what a refused start must leave as it was.
pub fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(at).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().unwrap() != "LOCK" && p.extension().is_none_or(|x| x != "prep")
            {
                out.insert(
                    p.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Asserts that every file under `dir` is as [`files`] found it in
/// `before`: what a refused start must leave.
pub fn unchanged(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let after = files(dir);
    let changed: Vec<_> = after
        .keys()
        .chain(before.keys())
        .filter(|p| after.get(*p) != before.get(*p))
        .collect();
    assert!(changed.is_empty(), "a refused start changed {changed:?}");
}

/// What an append command was answered.
pub type Outcome = Result<Vec<weir_protocol::wire::Receipt>, weir_daemon::AppendError>;

/// Submits `cmds` so that all but the first share one group: the storage
/// pauses inside the first command's sync while the others queue. Returns
/// the outcomes in order.
pub fn one_group_after_the_first(
    s: &Store,
    sim: &weir_daemon::storage::SimStorage,
    cmds: Vec<Vec<AppendRequest>>,
) -> Vec<Outcome> {
    {
        let mut st = sim.state.lock().unwrap();
        st.pause_at = Some(st.ops + 2); // the first command's write (+1), sync (+2)
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let n = cmds.len();
    for (i, cmd) in cmds.into_iter().enumerate() {
        let t = tx.clone();
        s.submit(cmd, Box::new(move |r| drop(t.send((i, r)))))
            .unwrap();
        if i == 0 {
            sim.wait_paused();
        }
    }
    sim.release();
    let mut out: Vec<_> = (0..n).map(|_| rx.recv().unwrap()).collect();
    out.sort_by_key(|r| r.0);
    out.into_iter().map(|r| r.1).collect()
}
