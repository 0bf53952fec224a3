//! Self-locating ids (FORMAT.md, "Event ids"): an id the daemon assigned is
//! found through its frame's place in the log, with every header field the
//! index would show; a client-chosen id through the index; and an id that
//! names a real frame's place but not that frame's id is never answered
//! from it.
mod common;
use anyhow::Context;
use weir::{Entry, Reader};
use weir_daemon::{Config, Store, SyncPolicy};
use weir_protocol::EventId;
use weir_protocol::index::ChunkGeometry;
use weir_protocol::locate::{IdKey, locate, located_id};
use weir_protocol::wire::{AppendRequest, Receipt};

type Res = anyhow::Result<()>;
/// Each appended event with its receipt, in sequence order.
type Written = Vec<(Receipt, AppendRequest)>;

/// Small chunks (1024 rows) and 1 MiB segments, `sync = never`.
fn config(dir: &std::path::Path) -> Config {
    Config {
        sync: SyncPolicy::Never,
        chunk_rows_log2: 10,
        segment_max_bytes: 1 << 20,
        max_payload_bytes: 64 << 10,
        max_batch_bytes: 256 << 10,
        max_batch_events: 64,
        ..Config::new(dir)
    }
}

/// 280 events in batches of 7, with payloads of up to 20 KiB, in 1 MiB
/// segments (so over several sealed segments); every third event brings
/// its own id.
fn build(dir: &std::path::Path) -> anyhow::Result<Written> {
    let store = Store::open(config(dir)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut out = Vec::new();
    for b in 0..40u64 {
        let batch: Vec<AppendRequest> = (0..7)
            .map(|k| {
                let i = b * 7 + k;
                AppendRequest {
                    entity: format!("user:{}", i % 5),
                    scope: format!("t:{}", i % 3),
                    kind: 0x1001 + (i % 4) as u16,
                    payload: vec![i as u8; (i % 50) as usize * 400],
                    event_id: (i % 3 == 0)
                        .then_some(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(i)),
                    causation_id: (i % 2 == 0).then_some(77),
                    ..AppendRequest::default()
                }
            })
            .collect();
        let receipts = store
            .append_batch(batch.clone())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        out.extend(receipts.into_iter().zip(batch));
    }
    store.shutdown().map_err(|e| anyhow::anyhow!(e))?;
    Ok(out)
}

/// The index files under `dir` this process maps read-only (`meta`
/// aside: `Reader::open` maps it).
fn index_files_mapped(dir: &std::path::Path) -> Vec<String> {
    let mut names = common::mapped_read_only(&dir.join("index"));
    names.retain(|n| n != "meta");
    names
}

/// A store from [`build`] and its id key (read from the gate).
fn built_with_key() -> anyhow::Result<(tempfile::TempDir, Written, IdKey)> {
    let dir = tempfile::tempdir()?;
    let written = build(dir.path())?;
    let gate = std::fs::read(dir.path().join("gate"))?;
    let key = weir_protocol::gate::read_id_key(&gate).context("the gate holds an id key")?;
    Ok((dir, written, key))
}

/// Every field an entry shows.
fn shown(e: &Entry<'_>) -> anyhow::Result<String> {
    Ok(format!(
        "{} {:?} {} {} {:?} {} {} {:?} {:?} {} {:?} {:?} {:?}",
        e.sequence(),
        e.event_id(),
        e.entity(),
        e.scope(),
        e.kind(),
        e.clock(),
        e.wall_ms(),
        e.correlation_id(),
        e.causation_id(),
        e.is_batch_end(),
        e.payload()?,
        e.prev_hash()?,
        e.event_hash()?,
    ))
}

/// Zeroes the id table of every index chunk: only ids found by their
/// place can then be found at all.
fn wipe_id_tables(dir: &std::path::Path) -> Res {
    let geo = ChunkGeometry { log2: 10 };
    let mut wiped = 0;
    for g in std::fs::read_dir(dir.join("index"))? {
        for f in std::fs::read_dir(g?.path())? {
            let path = f?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("chunk-"))
            {
                let mut bytes = std::fs::read(&path)?;
                let ids = geo.ids_offset();
                bytes[ids..ids + 8 * geo.id_slots()].fill(0);
                std::fs::write(&path, bytes)?;
                wiped += 1;
            }
        }
    }
    anyhow::ensure!(wiped > 0, "no index chunk found");
    Ok(())
}

#[test]
fn daemon_ids_are_found_by_place_and_client_ids_through_the_index() -> Res {
    let dir = tempfile::tempdir()?;
    let written = build(dir.path())?;
    let segments = std::fs::read_dir(dir.path().join("segments"))?.count();
    assert!(segments >= 3, "{segments} segments");
    let r = Reader::open(dir.path())?;
    let (first, _) = written
        .iter()
        .find(|(_, q)| q.event_id.is_none())
        .expect("a daemon id");
    assert!(r.get(EventId(first.event_id))?.is_some());
    assert_eq!(
        index_files_mapped(dir.path()),
        Vec::<String>::new(),
        "a first lookup by place reads no index file"
    );
    // By id (daemon-assigned ids by place) equals what the index's rows
    // show (the entity's stream), field by field.
    for (receipt, req) in &written {
        let got = r
            .get(EventId(receipt.event_id))?
            .expect("every id is found");
        let stream = r.stream(&req.entity)?;
        let row = stream
            .iter()
            .find(|e| e.sequence() == receipt.sequence)
            .expect("in its entity's stream");
        assert_eq!(shown(&got)?, shown(row)?);
        assert_eq!(got.payload()?, &req.payload[..]);
    }
    let ids: Vec<EventId> = written.iter().map(|(r, _)| EventId(r.event_id)).collect();
    let many = r.get_many(&ids)?;
    for ((receipt, _), e) in written.iter().zip(&many) {
        assert_eq!(e.as_ref().map(Entry::sequence), Some(receipt.sequence));
    }
    drop(many);
    drop(r);

    wipe_id_tables(dir.path())?;
    let r = Reader::open(dir.path())?;
    let (mut by_place, mut client) = (0, 0);
    for (receipt, req) in &written {
        let got = r.get(EventId(receipt.event_id))?.map(|e| e.sequence());
        if req.event_id.is_some() {
            assert_eq!(got, None, "a client-chosen id is only in the (wiped) index");
            client += 1;
        } else {
            assert_eq!(
                got,
                Some(receipt.sequence),
                "a daemon-assigned id is found by place"
            );
            by_place += 1;
        }
    }
    assert!(by_place > 150 && client > 50);
    let many = r.get_many(&ids)?;
    for ((receipt, req), e) in written.iter().zip(&many) {
        let want = req.event_id.is_none().then_some(receipt.sequence);
        assert_eq!(e.as_ref().map(Entry::sequence), want);
    }
    Ok(())
}

#[test]
fn an_id_naming_a_frames_place_but_not_its_id_is_not_answered() -> Res {
    let (dir, written, key) = built_with_key()?;
    let r = Reader::open(dir.path())?;
    let mut forged = 0;
    for (receipt, req) in &written {
        if req.event_id.is_some() {
            continue;
        }
        let id = receipt.event_id;
        let (segment, offset) = locate(key, id).expect("a located id");
        // Same place, another counter (so another id and another mask).
        let (ms, counter) = ((id >> 80) as u64, ((id >> 64) & 0xFFF) as u16);
        let other = located_id(key, ms, counter ^ 0x800, segment, offset).expect("encodable");
        assert_ne!(other, id);
        assert_eq!(locate(key, other), Some((segment, offset)));
        assert!(r.get(EventId(other))?.is_none(), "{other:x} is not {id:x}");
        assert!(r.get_many(&[EventId(other)])?[0].is_none());
        forged += 1;
    }
    assert!(forged > 150);
    Ok(())
}

#[test]
fn intact_frames_of_a_torn_batch_are_not_answered_by_place() -> Res {
    let (dir, written, key) = built_with_key()?;
    // Tear the last batch (7 events): damage its 5th frame, and drop the
    // index so that the next start rebuilds from the segments. The batch's
    // first four frames stay intact where they are, with their ids.
    let last = &written[written.len() - 7..];
    let (damaged, req) = &last[4];
    assert!(
        req.event_id.is_none(),
        "the 5th event of the last batch has a daemon id"
    );
    let (seg, off) = locate(key, damaged.event_id).expect("a located id");
    let path = dir.path().join("segments").join(format!("{seg:010}.seg"));
    let mut bytes = std::fs::read(&path)?;
    bytes[off as usize + 190] ^= 0xFF;
    std::fs::write(&path, bytes)?;
    std::fs::remove_dir_all(dir.path().join("index"))?;
    // As a crash leaves the gate (LIVE): after a clean stop the batch was
    // durable, and a start refuses a log that lost it.
    let mut gate = std::fs::read(dir.path().join("gate"))?;
    let state = weir_protocol::gate::STATE_OFF;
    gate[state..state + 8].copy_from_slice(&weir_protocol::gate::STATE_LIVE.to_le_bytes());
    std::fs::write(dir.path().join("gate"), gate)?;
    // Restart, and give the store new events past the torn batch's start.
    let store = Store::open(config(dir.path())).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let more: Vec<AppendRequest> = (0..14)
        .map(|i| AppendRequest {
            entity: "user:9".into(),
            scope: "t:9".into(),
            kind: 0x1009,
            payload: vec![9; i],
            ..AppendRequest::default()
        })
        .collect();
    store
        .append_batch(more)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    store.shutdown().map_err(|e| anyhow::anyhow!(e))?;
    let r = Reader::open(dir.path())?;
    assert!(
        r.visible() > last[0].0.sequence,
        "the torn batch's sequences were passed"
    );
    for (receipt, _) in last {
        let got = r.get(EventId(receipt.event_id))?;
        assert!(
            got.is_none(),
            "seq {} of the torn batch answered",
            receipt.sequence
        );
    }
    // The batch before it is intact and still found (by place).
    let (before, _) = &written[written.len() - 8];
    assert_eq!(
        r.get(EventId(before.event_id))?.map(|e| e.sequence()),
        Some(before.sequence)
    );
    Ok(())
}

#[test]
fn a_gate_that_says_siphash_keeps_its_ids_masked_with_siphash() -> Res {
    use weir_protocol::gate::{ID_MASK_OFF, read_id_key};
    use weir_protocol::locate::IdMask;
    let dir = tempfile::tempdir()?;
    let gate = dir.path().join("gate");
    Store::open(config(dir.path()))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .shutdown()
        .map_err(|e| anyhow::anyhow!(e))?;
    let key = read_id_key(&std::fs::read(&gate)?).context("a key")?;
    assert_eq!(key.mask_kind(), IdMask::Mix, "a new store mixes");
    // A gate written before the mask word existed holds 0 there: SipHash.
    let mut bytes = std::fs::read(&gate)?;
    bytes[ID_MASK_OFF..ID_MASK_OFF + 4].fill(0);
    std::fs::write(&gate, bytes)?;
    let written = build(dir.path())?;
    let key = read_id_key(&std::fs::read(&gate)?).context("a key")?;
    assert_eq!(
        key.mask_kind(),
        IdMask::SipHash,
        "every start carries the word on"
    );
    // Found by place (the id tables are wiped), under SipHash.
    wipe_id_tables(dir.path())?;
    let r = Reader::open(dir.path())?;
    let mut by_place = 0;
    for (receipt, req) in written.iter().filter(|(_, q)| q.event_id.is_none()) {
        let id = receipt.event_id;
        assert_ne!(
            locate(key, id),
            locate(key.with_mask(IdMask::Mix), id),
            "the mask word matters"
        );
        let e = r.get(EventId(id))?.context("found by place")?;
        assert_eq!(
            (e.sequence(), e.payload()?),
            (receipt.sequence, &req.payload[..])
        );
        by_place += 1;
    }
    assert!(by_place > 150, "{by_place}");
    Ok(())
}

#[test]
fn a_gate_naming_an_unknown_mask_gets_a_new_key_and_old_ids_stay_found() -> Res {
    use weir_protocol::gate::{ID_MASK_OFF, read_id_key};
    use weir_protocol::locate::IdMask;
    let dir = tempfile::tempdir()?;
    let gate = dir.path().join("gate");
    let written = build(dir.path())?;
    let old = read_id_key(&std::fs::read(&gate)?).context("a key")?;
    let mut bytes = std::fs::read(&gate)?;
    bytes[ID_MASK_OFF..ID_MASK_OFF + 4].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(&gate, bytes)?;
    assert_eq!(read_id_key(&std::fs::read(&gate)?), None, "7 names no mask");
    // A build that knows mask 7 records it in `starts` too (else the start
    // takes the key from there: store_key.rs).
    let starts = dir.path().join("starts");
    let mut bytes = std::fs::read(&starts)?;
    bytes[32..36].copy_from_slice(&7u32.to_le_bytes());
    let end = bytes.len() - 4;
    let crc = weir_protocol::crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&starts, bytes)?;
    let file = weir_protocol::starts::decode(&std::fs::read(&starts)?);
    assert_eq!(file.map(|f| f.id_key), Ok(None), "7 names no mask");
    Store::open(config(dir.path()))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .shutdown()
        .map_err(|e| anyhow::anyhow!(e))?;
    let new = read_id_key(&std::fs::read(&gate)?).context("a new key")?;
    assert_ne!(new.to_bytes(), old.to_bytes(), "a new key was drawn");
    assert_eq!(new.mask_kind(), IdMask::Mix);
    // Every earlier id is still found (through the index now).
    let r = Reader::open(dir.path())?;
    for (receipt, _) in &written {
        let e = r.get(EventId(receipt.event_id))?.context("found")?;
        assert_eq!(e.sequence(), receipt.sequence);
    }
    Ok(())
}
