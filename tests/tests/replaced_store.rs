//! A reader whose store is replaced behind it: deleted and created anew at
//! the same path, or its gate put in place by something other than a daemon
//! start. The reader never answers from a mix of the two stores, follows the
//! new one by itself, and lets go of what it mapped of the old one on request.

use anyhow::{Result, ensure};
use std::time::{Duration, Instant};
use weir::{AppendRequest, EventId, Reader, Region};
use weir_tests::{Daemon, SMALL_STORE, Setup, temp_root};

/// `n` events of `entity` with payloads `{tag}{i}`.
fn append_tagged(d: &Daemon, entity: &str, tag: &str, n: usize) -> Result<Vec<EventId>> {
    let mut c = d.client()?;
    (0..n)
        .map(|i| {
            let r = c.append_with(AppendRequest {
                entity: entity.into(),
                scope: "tenant:a".into(),
                kind: 0x1001,
                payload: format!("{tag}{i}").into_bytes(),
                ..AppendRequest::default()
            })?;
            Ok(EventId(r.event_id))
        })
        .collect()
}

fn append(d: &Daemon, entity: &str, n: usize) -> Result<Vec<EventId>> {
    append_tagged(d, entity, entity, n)
}

/// The payloads of the events `reader` answers for the whole store.
fn payloads(reader: &Reader) -> Result<Vec<String>> {
    reader
        .query(&Region::all())?
        .iter()
        .map(|e| Ok(String::from_utf8_lossy(e.payload()?).into_owned()))
        .collect()
}

#[test]
fn a_reader_never_mixes_a_replaced_store_with_its_own_and_follows_the_new_one() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    append_tagged(&d, "e", "old", 5)?;
    // Maps the gate and the generation's `meta`, nothing else yet.
    let reader = Reader::open(&setup.data_dir)?;
    let snap = reader.snapshot();
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    drop(d);
    // A new store of the same shape at the same path: same entity, same
    // sizes, so its files line up with the old ones byte for byte but for
    // the payloads (and ids and hashes).
    std::fs::remove_dir_all(&setup.data_dir)?;
    let d = Daemon::start(&setup)?;
    let new_ids = append_tagged(&d, "e", "new", 5)?;
    // The snapshot pinned the old store: it answers from it (its files are
    // deleted, so an error here), never with the new store's events.
    if let Ok(events) = snap.query(&Region::all()) {
        for e in events {
            let p = e.payload()?;
            ensure!(
                p.starts_with(b"old"),
                "the old snapshot read {p:?} of the new store"
            );
        }
    }
    for id in &new_ids {
        if let Ok(Some(e)) = snap.get(*id) {
            panic!("the old snapshot found {:?} of the new store", e.payload());
        }
    }
    drop(snap);
    // The reader itself moves to the new store (its old gate says stopped,
    // so every 64th query, at most every 100 ms, looks for a replacement).
    let want: Vec<String> = (0..5).map(|i| format!("new{i}")).collect();
    let until = Instant::now() + Duration::from_secs(10);
    while payloads(&reader).ok().as_ref() != Some(&want) {
        ensure!(
            Instant::now() < until,
            "the reader did not follow the new store: {:?}",
            payloads(&reader)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

#[test]
fn a_lookup_that_misses_on_a_stopped_store_follows_a_replaced_one() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    let old_ids = append_tagged(&d, "e", "old", 3)?;
    let reader = Reader::open(&setup.data_dir)?;
    ensure!(reader.get(old_ids[0])?.is_some());
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    drop(d);
    std::fs::remove_dir_all(&setup.data_dir)?;
    let d = Daemon::start(&setup)?;
    let new_ids = append_tagged(&d, "e", "new", 3)?;
    // Only lookups: a hit does not look for a replaced store (no syscall
    // in a loop of lookups), a miss does, at most every 100 ms.
    let until = Instant::now() + Duration::from_secs(10);
    let found = loop {
        if let Some(e) = reader.get(new_ids[2])? {
            break String::from_utf8_lossy(e.payload()?).into_owned();
        }
        ensure!(
            Instant::now() < until,
            "lookups of the new store's event kept missing"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(found == "new2", "{found}");
    Ok(())
}

#[test]
fn a_waiting_reader_follows_a_gate_replaced_behind_a_killed_daemon() -> Result<()> {
    // The killed daemon's gate still says "live", and the new daemon finds
    // no gate to mark superseded (it was deleted, as a fork of a copy does).
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    append(&d, "a", 5)?;
    let reader = Reader::open(&setup.data_dir)?;
    ensure!(reader.count(&Region::all())? == 5);
    d.kill9()?;
    drop(d);
    std::fs::remove_file(setup.data_dir.join("gate"))?;
    let d = Daemon::start(&setup)?;
    let mut c = d.client()?;
    let seq = c
        .append_with(AppendRequest {
            entity: "b".into(),
            scope: "tenant:a".into(),
            kind: 0x1001,
            ..AppendRequest::default()
        })?
        .sequence;
    ensure!(
        reader.wait_visible(seq, Duration::from_secs(10))?,
        "the waiting reader never saw sequence {seq} of the new daemon"
    );
    ensure!(reader.count(&Region::all())? == 6);
    Ok(())
}

#[test]
fn a_query_that_cannot_open_a_file_of_a_store_replaced_behind_a_killed_daemon_follows_it()
-> Result<()> {
    // The killed daemon's gate still says "live"; the store is deleted and
    // a new one created at the same path. The readers mapped only the gate
    // and `meta`: the old store's other files are gone with it.
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    append_tagged(&d, "e", "old", 10)?;
    let queried = Reader::open(&setup.data_dir)?;
    let looked_up = Reader::open(&setup.data_dir)?;
    let counted = Reader::open(&setup.data_dir)?;
    d.kill9()?;
    drop(d);
    std::fs::remove_dir_all(&setup.data_dir)?;
    let d = Daemon::start(&setup)?;
    let new_ids = append_tagged(&d, "e", "new", 3)?;
    // The first query, lookup and count answer from the new store.
    ensure!(payloads(&queried)? == ["new0", "new1", "new2"]);
    let found = looked_up.get(new_ids[1])?.map(|e| e.sequence());
    ensure!(found == Some(1), "get of the new store's event: {found:?}");
    ensure!(counted.count(&Region::all())? == 3);
    for r in [&queried, &looked_up, &counted] {
        ensure!(r.status().store == Reader::open(&setup.data_dir)?.status().store);
    }
    Ok(())
}

/// Mappings of this process whose file lies in the index generation `g`
/// of the data directory `dir`.
fn mapped_from_generation(dir: &std::path::Path, g: u64) -> Result<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let name = format!("{}/index/gen-{g:08}/", dir.display());
    Ok(maps.lines().filter(|l| l.contains(&name)).count())
}

#[test]
fn a_generation_stays_while_a_view_holds_it_and_goes_after_release_old_views() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let d = Daemon::start(&setup)?;
    append(&d, "a", 5)?;
    let mut reader = Reader::open(&setup.data_dir)?;
    let first = reader.status().generation;
    ensure!(reader.count(&Region::all())? == 5);
    // Each crash restart builds a new generation; the daemon keeps the one
    // before it, and an older one while a reader's view holds it.
    let mut d = d;
    let crash_restart = |d: &mut Daemon| -> Result<()> {
        d.kill9()?;
        *d = Daemon::start(&setup)?;
        append(d, "b", 1)?;
        Ok(())
    };
    for n in 1..=2 {
        crash_restart(&mut d)?;
        ensure!(reader.count(&Region::all())? == 5 + n, "re-attached");
    }
    let gen_dir = setup.data_dir.join(format!("index/gen-{first:08}"));
    ensure!(reader.status().generation >= first + 2, "new generations");
    // Old generations are deleted on a thread of the daemon's own, after
    // the start: its word comes first, then the directory is looked at.
    weir_tests::wait_for("the daemon said so", || {
        Ok(d.log_text()
            .contains("a reader still uses an old index generation"))
    })?;
    ensure!(
        gen_dir.exists(),
        "the daemon left the generation a view holds"
    );
    ensure!(
        mapped_from_generation(&setup.data_dir, first)? > 0,
        "still mapped before release"
    );
    ensure!(reader.release_old_views() == 2);
    ensure!(
        mapped_from_generation(&setup.data_dir, first)? == 0,
        "nothing of generation {first} is mapped after release"
    );
    ensure!(
        reader.count(&Region::all())? == 7,
        "the current view answers"
    );
    crash_restart(&mut d)?;
    // On a thread of the daemon's own, after the start.
    weir_tests::wait_for("the next start deleted it", || Ok(!gen_dir.exists()))?;
    Ok(())
}

#[test]
fn a_snapshot_pages_on_after_two_crash_restarts() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    let mut c = d.client()?;
    for b in 0..20u64 {
        let batch = (0..256)
            .map(|i| AppendRequest {
                entity: format!("e:{}", (b * 256 + i) % 97),
                scope: "s".into(),
                kind: 0x1001,
                ..AppendRequest::default()
            })
            .collect();
        c.append_batch(batch)?;
    }
    drop(c);
    let reader = Reader::open(&setup.data_dir)?;
    let snap = reader.snapshot();
    // Maps the first chunk only; the other chunk files are mapped as paged.
    let first = snap.query_after(&Region::all(), None, 10)?;
    for _ in 0..2 {
        d.kill9()?;
        drop(d);
        d = Daemon::start(&setup)?;
    }
    let mut after = first.last().map(weir::Entry::sequence);
    let mut n = first.len();
    loop {
        let page = snap.query_after(&Region::all(), after, 1000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.sequence());
        n += page.len();
    }
    ensure!(n == 20 * 256, "paged {n} events");
    Ok(())
}

/// The next `n` events of `sub`, as (sequence, payload), each within 15 s.
fn next_events(sub: &mut weir::Subscription<'_>, n: usize) -> Result<Vec<(u64, String)>> {
    (0..n)
        .map(|_| {
            let e = sub
                .next_timeout(Duration::from_secs(15))?
                .ok_or_else(|| anyhow::anyhow!("no event within 15 s"))?;
            Ok((
                e.sequence(),
                String::from_utf8_lossy(e.payload()?).into_owned(),
            ))
        })
        .collect()
}

#[test]
fn a_subscription_goes_on_across_a_restart_and_starts_over_in_a_replaced_store() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    append_tagged(&d, "e", "old", 20)?;
    let reader = Reader::open(&setup.data_dir)?;
    let mut sub = reader.subscribe(Region::all(), reader.visible());
    ensure!(sub.next_timeout(Duration::ZERO)?.is_none());
    let old_store = reader.status().store;
    ensure!(old_store.is_some(), "a new store has an id key");
    // A restart of the same store: it goes on where it stood.
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    drop(d);
    let mut d = Daemon::start(&setup)?;
    append_tagged(&d, "e", "again", 3)?;
    let got = next_events(&mut sub, 3)?;
    let want: Vec<_> = (0..3).map(|i| (20 + i, format!("again{i}"))).collect();
    ensure!(got == want, "after a restart: {got:?}");
    ensure!(sub.take_resumed() == Some(weir::Resumed::Restarted));
    ensure!(reader.status().store == old_store, "the same store");
    // Another store at the same path: every one of its events, from 0.
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    drop(d);
    std::fs::remove_dir_all(&setup.data_dir)?;
    let d = Daemon::start(&setup)?;
    append_tagged(&d, "e", "new", 5)?;
    let got = next_events(&mut sub, 5)?;
    let want: Vec<_> = (0..5).map(|i| (i, format!("new{i}"))).collect();
    ensure!(got == want, "in the replaced store: {got:?}");
    ensure!(sub.take_resumed() == Some(weir::Resumed::Replaced { position: 23 }));
    ensure!(reader.status().store != old_store, "another store");
    ensure!(sub.next_timeout(Duration::from_millis(50))?.is_none());
    Ok(())
}

/// Zeros the frames of sequences `from..` in the store's only segment, as a
/// power loss leaves an unsynced tail of a preallocated file.
fn lose_tail_from(data_dir: &std::path::Path, from: u64) -> Result<()> {
    use weir_protocol::segment::{Decoded, SEGMENT_HEADER_LEN, decode_at};
    let path = data_dir.join("segments").join("0000000000.seg");
    let mut bytes = std::fs::read(&path)?;
    let mut at = SEGMENT_HEADER_LEN;
    loop {
        let (frame, len) = decode_at(&bytes, at, true)?;
        match frame {
            Decoded::Event(f) if f.header.sequence.get() == from => break,
            Decoded::End => anyhow::bail!("no frame of sequence {from}"),
            _ => at += len,
        }
    }
    bytes[at..].fill(0);
    std::fs::write(&path, bytes)?;
    Ok(())
}

#[test]
fn a_subscription_sees_a_lost_tail_after_the_new_instance_appended_past_it() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path())
        .with(SMALL_STORE)
        .with("sync = \"never\"\ncheckpoint-interval-ms = 3600000");
    let mut d = Daemon::start(&setup)?;
    append_tagged(&d, "e", "old", 20)?;
    let reader = Reader::open(&setup.data_dir)?;
    let mut sub = reader.subscribe(Region::all(), 0);
    ensure!(next_events(&mut sub, 20)?.len() == 20);
    // A crash that loses the unsynced tail from sequence 12 on.
    d.kill9()?;
    drop(d);
    lose_tail_from(&setup.data_dir, 12)?;
    let d = Daemon::start(&setup)?;
    // The new instance gives sequences 12.. again, past the subscription's
    // position (20) before it looks.
    append_tagged(&d, "e", "new", 15)?;
    ensure!(reader.visible() == 27, "visible {}", reader.visible());
    let got = next_events(&mut sub, 15)?;
    let want: Vec<_> = (0..15).map(|i| (12 + i, format!("new{i}"))).collect();
    ensure!(got == want, "after the lost tail: {got:?}");
    ensure!(
        sub.take_resumed()
            == Some(weir::Resumed::TailLost {
                visible: 12,
                position: 20
            })
    );
    Ok(())
}
