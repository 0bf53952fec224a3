//! `weir verify` passes on a healthy store and fails, naming segment,
//! offset and sequence, when a frame byte is flipped (CRC) or when a
//! payload is changed and its CRC recomputed (hash chain); and when an
//! entity's chain from its head misses events (a head word naming an older
//! event) or its clocks repeat one (the fork a daemon then appends).

mod common;

use anyhow::{Context, Result};
use common::{daemon, json_lines, one_line_error, stopped_after, weir};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first event's frame starts right after the 64-byte segment header;
/// its 184-byte header is followed by entity, scope and payload.
const FRAME: u64 = 64;
const HEADER: u64 = 184;

fn segment(dir: &Path) -> Result<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v.into_iter().next().context("no segment")
}

#[test]
fn verify_passes_then_names_the_first_bad_position() -> Result<()> {
    let root = weir_tests::temp_root()?;
    let mut d = daemon(root.path(), "")?;
    let dir = d.data_dir.clone();
    let lines: String = (0..30)
        .map(|i| {
            format!(
                "{{\"entity\":\"e:{}\",\"scope\":\"s\",\"kind\":4097,\"payload\":{{\"i\":{i}}}}}\n",
                i % 3
            )
        })
        .collect();
    weir(&dir)
        .arg("append")
        .write_stdin(lines)
        .assert()
        .success();
    // Healthy while the daemon runs, and after it stopped.
    weir(&dir).arg("verify").assert().success();
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    let out = weir(&dir).arg("verify").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.contains("ok: 1 segments, 30 frames (CRC), 30 index rows, 3 entity hash chains"),
        "{text}"
    );
    // A copy under a name the daemon does not give is not a segment: the
    // daemon ignores it, and so does verify (it counted it before).
    let stray = dir.join("segments/00000000000.seg");
    std::fs::copy(segment(&dir)?, &stray)?;
    let out = weir(&dir).arg("verify").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("ok: 1 segments, 30 frames (CRC)"), "{text}");
    std::fs::remove_file(&stray)?;

    // Flip one byte of the first frame's body: its CRC no longer matches.
    let seg = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment(&dir)?)?;
    let mut frame = vec![0u8; 256];
    seg.read_exact_at(&mut frame, FRAME)?;
    let len = u32::from_le_bytes(frame[..4].try_into()?) as usize;
    frame.truncate(len);
    seg.read_exact_at(&mut frame, FRAME)?;
    // The last payload byte (entity and scope lengths at 112 and 114).
    let names = u16::from_le_bytes(frame[112..114].try_into()?) as usize
        + u16::from_le_bytes(frame[114..116].try_into()?) as usize;
    let payload_len = u32::from_le_bytes(frame[108..112].try_into()?) as usize;
    let at = HEADER as usize + names + payload_len - 1;
    let mut bad = frame.clone();
    bad[at] ^= 0x01;
    seg.write_all_at(&bad, FRAME)?;
    let out = weir(&dir).arg("verify").assert().code(1);
    let err = one_line_error(&out.get_output().stderr);
    assert!(err.contains("segment 0 offset 64 sequence 0"), "{err}");
    assert!(err.contains("CRC"), "{err}");
    let out = weir(&dir).args(["verify", "--json"]).assert().code(1);
    let v = &json_lines(&out.get_output().stdout)?[0];
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_bad"]["offset"], FRAME);

    // The same change with a recomputed CRC passes the frame checks but not
    // the hash chain.
    let crc = weir_protocol::crc32(&bad[8..]);
    bad[4..8].copy_from_slice(&crc.to_le_bytes());
    seg.write_all_at(&bad, FRAME)?;
    let out = weir(&dir).arg("verify").assert().code(1);
    let err = one_line_error(&out.get_output().stderr);
    assert!(err.contains("segment 0 offset 64 sequence 0"), "{err}");
    assert!(err.contains("event_hash"), "{err}");

    // Restored, it verifies again.
    seg.write_all_at(&frame, FRAME)?;
    weir(&dir).arg("verify").assert().success();
    Ok(())
}

/// A sealed segment's frames end at its FOOTER frame: verify stops there
/// and does not read what follows (zeros up to the trailer, or, in segments
/// that builds before 2026-11-28 sealed, the trailer itself within a frame
/// header's length).
#[test]
fn verify_stops_at_a_sealed_segments_footer() -> Result<()> {
    let big = "x".repeat(200_000);
    let (_root, dir) = stopped_after(
        (0..30)
            .map(|i| format!("{{\"entity\":\"e:{i}\",\"scope\":\"s\",\"kind\":4097,\"payload\":{{\"s\":\"{big}\"}}}}\n"))
            .collect(),
    )?;
    // Segment 0 is sealed: fill the gap between its footer and its trailer
    // with bytes that are no frame.
    let seg = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment(&dir)?)?;
    let len = seg.metadata()?.len();
    let mut trailer = [0u8; 64];
    seg.read_exact_at(&mut trailer, len - 64)?;
    assert_eq!(&trailer[..8], b"WEIRSEAL");
    let data_end = u64::from_le_bytes(trailer[16..24].try_into()?);
    seg.write_all_at(&vec![0xAB; (len - 64 - data_end) as usize], data_end)?;
    let out = weir(&dir).arg("verify").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let notes = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(text.contains("ok: 2 segments, "), "{text}");
    assert!(!(text + &notes).contains("torn"), "{notes}");
    Ok(())
}

/// One JSON line appending to entity `e:{e}`.
fn line(e: u32) -> String {
    format!("{{\"entity\":\"e:{e}\",\"scope\":\"s\",\"kind\":4097,\"payload\":1}}\n")
}

/// A stopped daemon's store of 15 events over `e:0`, `e:1`, `e:2` in turn
/// (e:0 holds sequences 0, 3, ..., 12, clocks 0-4): its root and data dir.
fn fifteen_events() -> Result<(tempfile::TempDir, PathBuf)> {
    stopped_after((0..15).map(|i| line(i % 3)).collect())
}

#[test]
fn verify_fails_on_a_chain_that_misses_events_and_on_a_fork() -> Result<()> {
    let (root, dir) = fifteen_events()?;
    // e:0's head now names sequence 6, and its count (neither word has a CRC) says 3 events, as
    // for a head of clock 2.
    weir_tests::set_name_words(&dir, "e:0", Some(7), Some(3))?;
    let out = weir(&dir).arg("verify").assert().code(1);
    let err = one_line_error(&out.get_output().stderr);
    assert!(
        err.contains("sequence 12: entity \"e:0\"") && err.contains("reaches 3 of its 5 events"),
        "{err}"
    );
    // A daemon reuses the index (the head's row and frame are e:0's, the
    // count agrees) and chains the next event onto sequence 6: a second
    // clock 3.
    let mut d = daemon(root.path(), "")?;
    weir(&dir)
        .arg("append")
        .write_stdin(line(0))
        .assert()
        .success();
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    let out = weir(&dir).arg("verify").assert().code(1);
    let err = one_line_error(&out.get_output().stderr);
    assert!(
        err.contains("sequence 15: entity \"e:0\": clock 3") && err.contains("clock 5 expected"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_head_word_older_than_the_count_makes_the_daemon_rebuild_not_fork() -> Result<()> {
    let (root, dir) = fifteen_events()?;
    // e:0's head names sequence 6 (clock 2), its count still says 5.
    weir_tests::set_name_words(&dir, "e:0", Some(7), None)?;
    // The daemon does not reuse that index: it rebuilds from the log, and
    // e:0's next event gets clock 5, after sequence 12.
    let mut d = daemon(root.path(), "")?;
    let out = weir(&dir)
        .args([
            "append", "--entity", "e:0", "--scope", "s", "--kind", "4097",
        ])
        .args(["--payload-json", "1", "--json"])
        .assert()
        .success();
    let receipt: serde_json::Value = serde_json::from_slice(&out.get_output().stdout)?;
    assert_eq!(receipt["clock"], 5, "{receipt}");
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    weir(&dir).arg("verify").assert().success();
    Ok(())
}
