//! Proves that a daemon's ids sort after every id an earlier instance gave,
//! also when the wall clock stands behind the floor the log restores (a
//! clock set back across a restart): the new instance's first ids used to
//! repeat the last instance's stamps.
mod common;
use common::{config, ev};
use weir_daemon::Store;
use weir_protocol::index::{Checkpoint, META_CHECKPOINT_OFFS};
use zerocopy::{FromBytes, IntoBytes};

/// Sets the clean checkpoint's wall-clock floor of generation `g` to
/// `wall_ms`, as if the events had been written at that time.
fn set_floor(dir: &std::path::Path, g: u64, wall_ms: u64) {
    let path = dir.join(format!("index/gen-{g:08}/meta"));
    let mut meta = std::fs::read(&path).unwrap();
    for off in META_CHECKPOINT_OFFS {
        let mut cp = Checkpoint::read_from_bytes(&meta[off..off + 64]).unwrap();
        if cp.valid() {
            cp.max_wall_ms = wall_ms.into();
            cp.seal();
            meta[off..off + 64].copy_from_slice(cp.as_bytes());
        }
    }
    std::fs::write(&path, meta).unwrap();
}

#[test]
fn ids_go_on_increasing_across_a_restart_behind_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    s.append(ev("user:1", 0x1001, b"a")).unwrap();
    s.shutdown().unwrap();
    drop(s);
    // An hour ahead of the clock: the next starts stamp at that floor.
    let floor = weir_daemon::ids::now_ms() + 3_600_000;
    set_floor(dir.path(), 0, floor);
    let s = Store::open(config(dir.path())).unwrap();
    let before: Vec<u128> = (0..3)
        .map(|_| s.append(ev("user:1", 0x1001, b"b")).unwrap().event_id)
        .collect();
    assert!(
        before.iter().all(|&id| (id >> 80) as u64 == floor),
        "stamped at the floor"
    );
    s.shutdown().unwrap();
    drop(s);
    // The clock is still behind: the next instance stamps at the same
    // floor, and its ids must come after the last one's.
    let s = Store::open(config(dir.path())).unwrap();
    let next = s.append(ev("user:1", 0x1001, b"c")).unwrap().event_id;
    assert!(next > before[2], "{next:x} after {:x}", before[2]);
    s.shutdown().unwrap();
}
