//! A start never goes on without a segment file that the store's own records
//! show existed, nor with fewer events than a clean stop left: it refuses,
//! names the file(s), and changes no file; with the file back it starts with
//! every event.
mod common;
use common::{config, ev, files, fill, segment, unchanged};
use std::collections::BTreeMap;
use std::path::Path;
use weir_daemon::storage::SimStorage;
use weir_daemon::{Config, OpenError, Store, SyncPolicy};

/// Events the stores below hold: four 1 MiB segments.
const EVENTS: u64 = 2500;

/// A cleanly stopped store on real files.
fn clean_store(dir: &Path) {
    let s = Store::open(config(dir)).unwrap();
    fill(&s, EVENTS);
    s.shutdown().unwrap();
    drop(s);
    assert!(
        segment(dir, 3).exists() && !segment(dir, 4).exists(),
        "four segments"
    );
}

/// Opens `dir`, which must be refused with a missing-segments error naming
/// `want`, leaving every file as it was. Returns the message.
fn refused(dir: &Path, want: &[u64]) -> String {
    let before = files(dir);
    let err = Store::open(config(dir)).unwrap_err();
    let msg = err.to_string();
    match &err {
        OpenError::MissingSegments { missing, .. } => assert_eq!(missing, want, "{msg}"),
        e => panic!("expected MissingSegments, got {e:?}"),
    }
    for id in want {
        assert!(msg.contains(&format!("{id:010}.seg")), "{msg}");
    }
    assert!(msg.contains("backup"), "{msg}");
    unchanged(dir, &before);
    msg
}

/// Starts `dir` and checks it holds every event, by the sequence the next
/// append gets.
fn starts_whole(dir: &Path) {
    let s = Store::open(config(dir)).unwrap();
    let r = s.restore_report().clone();
    assert_eq!(r.entries + r.tail_entries, EVENTS, "{r:?}");
    assert_eq!(
        s.append(ev("after", 0x1001, b"x")).unwrap().sequence,
        EVENTS
    );
    s.shutdown().unwrap();
}

#[test]
fn a_missing_middle_segment_is_refused_after_a_clean_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clean_store(dir);
    let kept = tempfile::tempdir().unwrap();
    let aside = kept.path().join("seg");
    std::fs::rename(segment(dir, 1), &aside).unwrap();
    let msg = refused(dir, &[1]);
    assert!(msg.contains("0000000003.seg exists"), "{msg}");
    std::fs::rename(&aside, segment(dir, 1)).unwrap();
    starts_whole(dir);
}

#[test]
fn a_missing_newest_segment_is_refused_after_a_clean_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clean_store(dir);
    let kept = tempfile::tempdir().unwrap();
    let aside = kept.path().join("seg");
    std::fs::rename(segment(dir, 3), &aside).unwrap();
    let msg = refused(dir, &[3]);
    assert!(msg.contains("gate"), "{msg}");
    // Without the gate, the index's checkpoint still names the segment.
    let gate = std::fs::read(dir.join("gate")).unwrap();
    std::fs::remove_file(dir.join("gate")).unwrap();
    let msg = refused(dir, &[3]);
    assert!(msg.contains("meta"), "{msg}");
    std::fs::write(dir.join("gate"), gate).unwrap();
    std::fs::rename(&aside, segment(dir, 3)).unwrap();
    starts_whole(dir);
}

#[test]
fn an_emptied_segments_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clean_store(dir);
    let kept = tempfile::tempdir().unwrap();
    for id in 0..4 {
        std::fs::rename(segment(dir, id), kept.path().join(id.to_string())).unwrap();
    }
    refused(dir, &[0, 1, 2, 3]);
    // The old generation is still there: the store comes back whole.
    for id in 0..4 {
        std::fs::rename(kept.path().join(id.to_string()), segment(dir, id)).unwrap();
    }
    starts_whole(dir);
}

#[test]
fn a_log_shorter_than_a_clean_stop_left_is_refused() {
    // The newest segment's last frames are zeroed (as a file system that
    // lost them would show them): the clean stop's checkpoint shows they
    // were durable, so the start refuses instead of giving their sequences
    // to new events.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clean_store(dir);
    let path = segment(dir, 3);
    let bytes = std::fs::read(&path).unwrap();
    let end = 4096 + bytes[4096..].iter().rposition(|b| *b != 0).unwrap();
    let mut cut = bytes.clone();
    cut[end - 3000..=end].fill(0);
    std::fs::write(&path, &cut).unwrap();
    let before = files(dir);
    let err = Store::open(config(dir)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, OpenError::DamagedLog { .. }),
        "expected DamagedLog, got {err:?}"
    );
    assert!(
        msg.contains("0000000003.seg") && msg.contains("cleanly") && msg.contains("backup"),
        "{msg}"
    );
    unchanged(dir, &before);
    std::fs::write(&path, &bytes).unwrap();
    starts_whole(dir);
}

/// `EVENTS` events written under `config` to a simulated log, then a
/// crash: the gate and index files as the crash left them, and the image
/// of the log's synced bytes.
fn crashed(dir: &Path, config: Config) -> BTreeMap<u64, Vec<u8>> {
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config, Box::new(sim.clone())).unwrap();
    fill(&s, EVENTS);
    // Dropping the store stops it cleanly: keep the gate and the index as
    // they were before.
    let gate = std::fs::read(dir.join("gate")).unwrap();
    // Copied while the store runs.
    let index = tempfile::tempdir().unwrap();
    weir_tests::copy_dir_live(&dir.join("index"), index.path()).unwrap();
    sim.state.lock().unwrap().dead_from = Some(0);
    drop(s);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    weir_tests::copy_dir(&index.path().join("index"), dir).unwrap();
    std::fs::write(dir.join("gate"), gate).unwrap();
    sim.crash_image(0, None)
}

#[test]
fn a_missing_middle_segment_is_refused_after_a_crash() {
    // The crash leaves no clean checkpoint: the segment's absence used to
    // read as a torn batch, its events cancelled for good.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut image = crashed(dir, config(dir));
    assert!(image.len() >= 4, "{} segments", image.len());
    let lost = image.remove(&1).unwrap();
    let before = files(dir);
    let err =
        Store::open_with_storage(config(dir), Box::new(SimStorage::from_files(image.clone())))
            .unwrap_err();
    match &err {
        OpenError::MissingSegments { missing, .. } => assert_eq!(missing, &[1], "{err}"),
        e => panic!("expected MissingSegments, got {e:?}"),
    }
    unchanged(dir, &before);
    image.insert(1, lost);
    let s = Store::open_with_storage(config(dir), Box::new(SimStorage::from_files(image))).unwrap();
    let r = s.restore_report().clone();
    assert_eq!(
        (r.entries + r.tail_entries, r.cancelled),
        (EVENTS, 0),
        "{r:?}"
    );
    s.shutdown().unwrap();
}

#[test]
fn a_crash_under_sync_never_then_a_start_under_always_drops_the_unsynced_tail() {
    // The old gate's `visible` shows published events, not durable ones,
    // under `sync = never`: the start held the log to it because `always`
    // is configured now, and refused for good (DamagedLog) unless the
    // operator knew to start once under the old policy. The gate now says
    // which policy published it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let never = Config {
        sync: SyncPolicy::Never,
        ..config(dir)
    };
    let image = crashed(dir, never);
    let s = Store::open_with_storage(config(dir), Box::new(SimStorage::from_files(image))).unwrap();
    let r = s.restore_report().clone();
    let kept = r.entries + r.tail_entries;
    assert!(
        kept > 0 && kept < EVENTS,
        "the unsynced tail is lost: {r:?}"
    );
    assert_eq!(
        s.append(ev("after", 0x1001, b"x")).unwrap().sequence,
        kept + r.cancelled
    );
    s.shutdown().unwrap();
}

#[test]
fn a_stop_that_cannot_sync_under_never_leaves_the_gate_as_a_crash_does() {
    // A poisoned writer's stop cannot sync its unsynced tail, yet marked the
    // gate STOPPED, which tells the next start that every sequence below
    // `visible` is durable: after a power loss that start refused the store
    // as damaged (DamagedLog) although no event acknowledged as durable
    // was lost.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let never = Config {
        sync: SyncPolicy::Never,
        ..config(dir)
    };
    let sim = SimStorage::default();
    let s = Store::open_with_storage(never.clone(), Box::new(sim.clone())).unwrap();
    fill(&s, EVENTS);
    sim.state.lock().unwrap().dead_from = Some(0);
    assert!(s.append(ev("lost", 0x1001, b"x")).is_err());
    assert!(s.stats().writer_poisoned);
    assert!(s.shutdown().is_err());
    drop(s);
    let gate = std::fs::read(dir.join("gate")).unwrap();
    let at = weir_protocol::gate::STATE_OFF;
    let state = u64::from_le_bytes(gate[at..at + 8].try_into().unwrap());
    assert_eq!(state, weir_protocol::gate::STATE_LIVE);
    let image = sim.crash_image(0, None);
    let s = Store::open_with_storage(never, Box::new(SimStorage::from_files(image))).unwrap();
    let r = s.restore_report().clone();
    assert!(
        r.entries + r.tail_entries < EVENTS,
        "the unsynced tail is lost: {r:?}"
    );
    s.shutdown().unwrap();
}

#[test]
fn a_crash_under_sync_always_holds_a_start_under_never_to_the_gate() {
    // The reverse: every published event was durable, so a log that lost
    // some is damage whatever policy the next start is configured with.
    // Configured `never` used to skip the check and hand the lost events'
    // sequences out again.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut image = crashed(dir, config(dir));
    let (&newest, bytes) = image.iter_mut().next_back().unwrap();
    let end = 4096 + bytes[4096..].iter().rposition(|b| *b != 0).unwrap();
    bytes[end - 3000..=end].fill(0);
    let never = Config {
        sync: SyncPolicy::Never,
        ..config(dir)
    };
    let before = files(dir);
    let err = Store::open_with_storage(never, Box::new(SimStorage::from_files(image))).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, OpenError::DamagedLog { .. }),
        "expected DamagedLog, got {err:?}"
    );
    assert!(
        msg.contains(&format!("{newest:010}.seg")) && msg.contains("sync = always"),
        "{msg}"
    );
    unchanged(dir, &before);
}

#[test]
fn files_not_named_as_segments_are_ignored() {
    // `7.seg` was read as segment 7 (the start failed opening
    // 0000000007.seg); `00000000001.seg` as a second segment 1.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    clean_store(dir);
    let stray = dir.join("segments").join("7.seg");
    let twin = dir.join("segments").join("00000000001.seg");
    std::fs::write(&stray, b"not a segment").unwrap();
    std::fs::copy(segment(dir, 1), &twin).unwrap();
    starts_whole(dir);
    assert_eq!(std::fs::read(&stray).unwrap(), b"not a segment");
    assert_eq!(
        std::fs::read(&twin).unwrap(),
        std::fs::read(segment(dir, 1)).unwrap()
    );
}
