//! A frame that fails its check where the log shows it was durable (a later
//! segment follows it, a clean stop or a crash checkpoint covers it) stops
//! the start with an error naming the segment and the offset: its events
//! and the intact ones after it are not cancelled, no file changes, and with
//! the segment repaired the store starts whole. (A torn tail that nothing
//! shows durable is still dropped: tests/crash.rs.)
mod common;
use common::{config, ev, files, fill, segment};
use std::collections::BTreeMap;
use std::path::Path;
use weir_daemon::storage::SimStorage;
use weir_daemon::{OpenError, Store};

/// (offset, sequence) of every frame of a segment, up to the first zeros.
fn frames(bytes: &[u8]) -> Vec<(usize, u64)> {
    let word = |off: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&bytes[off..off + n]);
        u64::from_le_bytes(b)
    };
    let mut out = Vec::new();
    let mut off = 64;
    loop {
        let len = word(off, 4) as usize;
        if len == 0 || off + len > bytes.len() {
            return out;
        }
        out.push((off, word(off + 16, 8)));
        off += len;
    }
}

/// The start's error, which must be `DamagedLog` at `offset` of segment
/// `id`, with no file changed.
fn refused(
    dir: &Path,
    open: impl FnOnce() -> Result<Store, OpenError>,
    id: u64,
    offset: usize,
) -> String {
    let before = files(dir);
    let err = open().unwrap_err();
    let msg = err.to_string();
    match &err {
        OpenError::DamagedLog {
            path, offset: at, ..
        } => {
            assert_eq!(
                (path, *at),
                (&segment(dir, id), Some(offset as u64)),
                "{msg}"
            );
        }
        e => panic!("expected DamagedLog, got {e:?}"),
    }
    assert!(msg.contains("backup"), "{msg}");
    assert!(files(dir) == before, "a refused start changed files");
    msg
}

#[test]
fn a_damaged_frame_in_a_segment_followed_by_another_is_refused() {
    // No gate and no index: only the next segment's base sequence shows
    // that the frames were durable (before, they became tombstones).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = Store::open(config(dir)).unwrap();
    fill(&s, 2500);
    s.shutdown().unwrap();
    drop(s);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    std::fs::remove_file(dir.join("gate")).unwrap();
    let path = segment(dir, 1);
    let good = std::fs::read(&path).unwrap();
    let (off, _) = frames(&good)[100];
    let mut bad = good.clone();
    bad[off + 4] ^= 0x5A; // the CRC field
    std::fs::write(&path, &bad).unwrap();
    let msg = refused(dir, || Store::open(config(dir)), 1, off);
    assert!(msg.contains("0000000002.seg begins at sequence"), "{msg}");
    std::fs::write(&path, &good).unwrap();
    let s = Store::open(config(dir)).unwrap();
    let r = s.restore_report().clone();
    assert_eq!(
        (r.entries + r.tail_entries, r.cancelled),
        (2500, 0),
        "{r:?}"
    );
    s.shutdown().unwrap();
}

#[test]
fn a_damaged_frame_a_clean_stop_covers_is_refused_by_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = Store::open(config(dir)).unwrap();
    fill(&s, 2500);
    s.shutdown().unwrap();
    drop(s);
    let path = segment(dir, 3);
    let good = std::fs::read(&path).unwrap();
    let (off, _) = frames(&good)[0];
    let mut bad = good.clone();
    bad[off + 300] ^= 1; // a payload byte
    std::fs::write(&path, &bad).unwrap();
    let msg = refused(dir, || Store::open(config(dir)), 3, off);
    assert!(msg.contains("checksum") && msg.contains("cleanly"), "{msg}");
    std::fs::write(&path, &good).unwrap();
    let s = Store::open(config(dir)).unwrap();
    assert_eq!(s.append(ev("after", 0x1001, b"x")).unwrap().sequence, 2500);
    s.shutdown().unwrap();
}

#[test]
fn a_damaged_frame_below_the_crash_checkpoint_is_refused() {
    // The checkpoint path keeps the chunks below 2048 and replays from the
    // newest segment; a frame there below the watermark was durable, so
    // the events after it are not a torn tail. No gate: only the
    // checkpoint shows it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = weir_daemon::Config {
        checkpoint_interval_ms: 100,
        ..config(dir)
    };
    let sim = SimStorage::default();
    let s = Store::open_with_storage(cfg.clone(), Box::new(sim.clone())).unwrap();
    fill(&s, 2100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.shared().checkpoint_watermark() < 2048 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let index = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| weir_tests::copy_dir(from, to).unwrap();
    // Copied while the store runs.
    weir_tests::copy_dir_live(&dir.join("index"), index.path()).unwrap();
    sim.state.lock().unwrap().dead_from = Some(0);
    drop(s);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    copy(&index.path().join("index"), dir);
    std::fs::remove_file(dir.join("gate")).unwrap();
    let mut image = sim.crash_image(0, None);
    let last = *image.keys().last().unwrap();
    let good = image[&last].clone();
    let (off, seq) = frames(&good)[50];
    assert!(
        seq < 2048,
        "the damaged frame {seq} lies below the watermark"
    );
    image.get_mut(&last).unwrap()[off + 300] ^= 1;
    let msg = refused(
        dir,
        || Store::open_with_storage(cfg.clone(), Box::new(SimStorage::from_files(image.clone()))),
        last,
        off,
    );
    assert!(msg.contains("crash checkpoint"), "{msg}");
    image.insert(last, good);
    let s = Store::open_with_storage(cfg, Box::new(SimStorage::from_files(image))).unwrap();
    let r = s.restore_report().clone();
    assert_eq!(r.entries + r.tail_entries, 2100, "{r:?}");
    s.shutdown().unwrap();
}

/// A clean store on simulated storage whose sealed segment 0 holds a CANCEL
/// frame (a group whose write failed, then more events after a restart),
/// without its gate and index, so that the next start reads the footers.
/// Returns the segments and the CANCEL frame's offset.
fn store_with_a_sealed_cancel(dir: &Path) -> (BTreeMap<u64, Vec<u8>>, usize) {
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config(dir), Box::new(sim.clone())).unwrap();
    fill(&s, 300);
    {
        let mut st = sim.state.lock().unwrap();
        st.fail_at = Some(st.ops + 1); // the next write fails: cancelled
    }
    assert!(s.append_batch(vec![ev("lost", 0x1001, b"x"); 5]).is_err());
    drop(s);
    let sim = SimStorage::from_files(sim.crash_image(usize::MAX, None));
    let s = Store::open_with_storage(config(dir), Box::new(sim.clone())).unwrap();
    fill(&s, 1500);
    s.shutdown().unwrap();
    drop(s);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    std::fs::remove_file(dir.join("gate")).unwrap();
    let image = sim.crash_image(usize::MAX, None);
    let cancel = frames(&image[&0])
        .into_iter()
        .zip(frames(&image[&0]).into_iter().skip(1))
        .find(|((a, _), (b, _))| b - a == weir_protocol::segment::FRAME_HEADER_LEN)
        .map(|((a, _), _)| a)
        .expect("a CANCEL frame in segment 0");
    assert!(image.contains_key(&1), "segment 0 is sealed");
    (image, cancel)
}

#[test]
fn a_sealed_cancel_frame_whose_count_is_damaged_hides_nothing() {
    // The footer vouches for the frame's length and CRC field only: a
    // count read without the CRC cancelled live events (here: 86).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut image, cancel) = store_with_a_sealed_cancel(dir);
    let good = image.clone();
    image.get_mut(&0).unwrap()[cancel + 104] ^= 0x5A; // the count
    let msg = refused(
        dir,
        || Store::open_with_storage(config(dir), Box::new(SimStorage::from_files(image))),
        0,
        cancel,
    );
    assert!(msg.contains("checksum"), "{msg}");
    let s = Store::open_with_storage(config(dir), Box::new(SimStorage::from_files(good))).unwrap();
    let r = s.restore_report().clone();
    assert_eq!(
        (r.entries + r.tail_entries, r.cancelled),
        (1800, 5),
        "{r:?}"
    );
    assert_eq!(r.path, weir_daemon::RestorePath::Footers, "{r:?}");
    s.shutdown().unwrap();
}

#[test]
fn a_sealed_event_frame_whose_sequence_is_damaged_is_checked() {
    // A sequence read without the CRC put the event at another sequence
    // and cancelled the ones between.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut image, _) = store_with_a_sealed_cancel(dir);
    let (off, _) = frames(&image[&1])[0];
    image.get_mut(&1).unwrap()[off + 16] ^= 0x4A; // the sequence
    let msg = refused(
        dir,
        || Store::open_with_storage(config(dir), Box::new(SimStorage::from_files(image))),
        1,
        off,
    );
    assert!(msg.contains("checksum"), "{msg}");
}
