//! A rebuild (footers or frame scan) refuses an event that does not continue
//! its entity's chain (clock + 1 and `prev_hash`), here a frame altered with
//! its checksums recomputed: it names the segment, the offset, the sequence
//! and the entity, changes no file, and with the segment repaired the store
//! starts whole. Before, the frame became the entity's head and the next
//! append chained onto it.
mod common;
use common::{config, ev, files, fill, segment, unchanged};
use std::path::Path;
use weir_daemon::{OpenError, Store};
use weir_protocol::segment::Trailer;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// (offset, sequence, entity) of every EVENT frame of a segment.
fn events(bytes: &[u8]) -> Vec<(usize, u64, String)> {
    let mut out = Vec::new();
    let mut off = 64;
    loop {
        let len = u32_at(bytes, off) as usize;
        if len == 0 || off + len > bytes.len() || bytes[off + 8] == 3 {
            return out;
        }
        if bytes[off + 8] == 1 {
            let seq = u64::from_le_bytes(bytes[off + 16..off + 24].try_into().unwrap());
            let n = u16::from_le_bytes([bytes[off + 112], bytes[off + 113]]) as usize;
            let entity = String::from_utf8(bytes[off + 184..off + 184 + n].to_vec()).unwrap();
            out.push((off, seq, entity));
        }
        off += len;
    }
}

/// Recomputes the CRC of the frame at `off`, and, in a sealed segment, its
/// footer entry's CRC and the footer's: only the chain can tell.
fn fix_crcs(bytes: &mut [u8], off: usize) {
    let len = u32_at(bytes, off) as usize;
    let crc = crc32fast::hash(&bytes[off + 8..off + len]);
    bytes[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
    if let Some(t) = Trailer::parse(bytes) {
        let foot = t.footer_offset.get() as usize;
        let n = u32_at(bytes, foot + 104) as usize;
        for i in 0..n {
            let e = foot + 184 + 16 * i;
            if u64::from_le_bytes(bytes[e..e + 8].try_into().unwrap()) == off as u64 {
                bytes[e + 12..e + 16].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let flen = u32_at(bytes, foot) as usize;
        let fcrc = crc32fast::hash(&bytes[foot + 8..foot + flen]);
        bytes[foot + 4..foot + 8].copy_from_slice(&fcrc.to_le_bytes());
    }
}

/// A cleanly stopped store of 2500 events (37 entities, five segments)
/// without its index, so the start rebuilds from the segments.
fn store_to_rebuild(dir: &Path) {
    let s = Store::open(config(dir)).unwrap();
    fill(&s, 2500);
    s.shutdown().unwrap();
    drop(s);
    std::fs::remove_dir_all(dir.join("index")).unwrap();
}

/// Alters the `nth` event frame of segment `id` with `edit` (given the
/// frame's bytes), recomputes its checksums, starts, and expects a
/// `BrokenChain` refusal of that frame that changes no file; returns its
/// message, then repairs the segment and checks the store starts whole.
fn refused(dir: &Path, id: u64, nth: usize, edit: impl FnOnce(&mut [u8])) -> String {
    let path = segment(dir, id);
    let good = std::fs::read(&path).unwrap();
    let (off, seq, _) = events(&good)[nth].clone();
    let mut bad = good.clone();
    edit(&mut bad[off..]);
    fix_crcs(&mut bad, off);
    std::fs::write(&path, &bad).unwrap();
    let before = files(dir);
    let err = Store::open(config(dir)).map(drop).unwrap_err();
    let msg = err.to_string();
    match &err {
        OpenError::BrokenChain {
            path: p,
            offset,
            sequence,
            ..
        } => assert_eq!((p, *offset, *sequence), (&path, off as u64, seq), "{msg}"),
        e => panic!("expected BrokenChain, got {e:?}"),
    }
    assert!(
        msg.contains("backup") && msg.contains(&format!("offset {off}")),
        "{msg}"
    );
    unchanged(dir, &before);
    std::fs::write(&path, &good).unwrap();
    let s = Store::open(config(dir)).unwrap();
    let r = s.restore_report().clone();
    assert_eq!(
        (r.entries + r.tail_entries, r.cancelled),
        (2500, 0),
        "{r:?}"
    );
    assert_eq!(
        s.append(ev("user:2", 0x1001, b"x")).unwrap().clock,
        2500 / 37 + 1
    );
    s.shutdown().unwrap();
    msg
}

#[test]
fn a_frame_moved_to_another_entity_in_a_sealed_segment_is_refused() {
    // Footers path: user:1's event renamed user:2 (same length), frame CRC,
    // footer entry and footer CRC fixed. Its clock is the one user:2 would
    // have next (entities take turns), so only prev_hash tells.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store_to_rebuild(dir);
    let bytes = std::fs::read(segment(dir, 1)).unwrap();
    let nth = events(&bytes)
        .iter()
        .position(|(_, _, e)| e == "user:1")
        .unwrap();
    let msg = refused(dir, 1, nth, |f| f[184..190].copy_from_slice(b"user:2"));
    assert!(
        msg.contains("\"user:2\"") && msg.contains("prev_hash"),
        "{msg}"
    );
}

#[test]
fn a_clock_out_of_turn_in_the_scanned_tail_is_refused() {
    // Frame-scan path (the unsealed newest segment): a clock one too high.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store_to_rebuild(dir);
    let last = (0..)
        .take_while(|&id| segment(dir, id + 1).exists())
        .last()
        .map_or(0, |id| id + 1);
    let bytes = std::fs::read(segment(dir, last)).unwrap();
    assert!(Trailer::parse(&bytes).is_none(), "segment {last} is sealed");
    let msg = refused(dir, last, 10, |f| {
        let clock = u32::from_le_bytes(f[12..16].try_into().unwrap());
        f[12..16].copy_from_slice(&(clock + 1).to_le_bytes());
    });
    assert!(msg.contains("expected"), "{msg}");
}
