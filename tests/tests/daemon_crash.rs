//! kill -9 of the daemon while clients append with automatic idempotency
//! keys: the clients reconnect to the restarted daemon and resend, and
//! every append that returned Ok is stored exactly once.

use anyhow::{Result, ensure};
use std::collections::HashMap;
use std::time::Duration;
use weir::Reader;
use weir_tests::{Daemon, Setup, collect, spawn_client, temp_root};

const BIN: &str = env!("CARGO_BIN_EXE_weir-test-client");
const CLIENTS: usize = 8;
const EACH: u64 = 2000;

#[test]
fn appends_survive_a_daemon_kill_exactly_once() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path());
    let mut d = Daemon::start(&setup)?;
    let sock = d.socket.to_string_lossy().into_owned();
    let each = EACH.to_string();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| spawn_client(BIN, &["append", &sock, &format!("k{c}"), &each, "20000"]))
        .collect::<Result<_>>()?;
    // Kill once a good part is stored, while the rest is in flight.
    let watch = Reader::open(&setup.data_dir)?;
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while watch.visible() < 1000 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    d.kill9()?;
    drop(watch);
    let before = Reader::open(&setup.data_dir)?.visible();
    std::thread::sleep(Duration::from_millis(200));
    let d = Daemon::start(&setup)?;
    let mut all = Vec::new();
    for c in clients {
        let (status, lines) = collect(c)?;
        ensure!(status.success());
        ensure!(lines.len() == EACH as usize, "a client gave up early");
        all.push(lines);
    }
    ensure!(
        before > 0 && before < (CLIENTS as u64 * EACH),
        "the kill did not land mid-run (visible {before})"
    );
    let reader = Reader::open(&d.data_dir)?;
    for (c, lines) in all.iter().enumerate() {
        let entity = format!("k{c}");
        let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
        for e in reader.stream(&entity)? {
            *seen.entry(e.payload()?.to_vec()).or_default() += 1;
        }
        for l in lines {
            ensure!(
                l.err.is_none(),
                "append {entity}:{} failed: {:?}",
                l.i,
                l.err
            );
            let n = seen.get(format!("{entity}:{}", l.i).as_bytes()).copied();
            ensure!(n == Some(1), "{entity}:{} stored {n:?} times", l.i);
        }
        ensure!(seen.values().all(|&n| n == 1), "duplicates in {entity}");
    }
    Ok(())
}

/// kill -9 once the daemon has written a crash checkpoint: the restarted
/// daemon keeps the checkpoint's index chunks (restore path `checkpoint`),
/// replays the rest of the log, and answers every earlier append's retry
/// with its original receipt.
#[test]
fn a_killed_daemon_restarts_from_its_crash_checkpoint() -> Result<()> {
    use weir_protocol::wire::AppendRequest;
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path())
        .with("chunk-rows-log2 = 10")
        .with("checkpoint-interval-ms = 100");
    let mut d = Daemon::start(&setup)?;
    let mut client = d.client()?;
    // 2600 events: two index chunks of 1024 rows fill, a third does not.
    // Entity `early` has its 10 events (its head) in the first chunk.
    let entity = |x: u32| match x {
        0..10 => "early".to_owned(),
        _ => format!("user:{}", x % 37),
    };
    let batches: Vec<Vec<AppendRequest>> = (0..26u32)
        .map(|b| {
            (0..100u32)
                .map(|i| AppendRequest {
                    entity: entity(b * 100 + i),
                    scope: "t".into(),
                    kind: 0x1001,
                    payload: vec![b as u8; 200],
                    idempotency_key: Some(u128::from(b * 100 + i) + 1),
                    ..AppendRequest::default()
                })
                .collect()
        })
        .collect();
    let mut receipts = Vec::new();
    for b in &batches {
        receipts.extend(client.append_batch(b.clone())?);
    }
    let until = std::time::Instant::now() + Duration::from_secs(20);
    // The checkpoint's watermark (FORMAT.md: u64 at offset 24).
    let watermark = || -> Result<u64> {
        let mut w = 0;
        for e in std::fs::read_dir(d.data_dir.join("index"))? {
            if let Ok(b) = std::fs::read(e?.path().join("checkpoint")) {
                w = w.max(u64::from_le_bytes(b[24..32].try_into()?));
            }
        }
        Ok(w)
    };
    while watermark()? < 2048 {
        ensure!(std::time::Instant::now() < until, "no crash checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    d.kill9()?;
    let d = Daemon::start(&setup)?;
    let mut client = d.client()?;
    let stats = client.stats()?;
    ensure!(
        (stats.restore_path.as_str(), stats.restore_entries) == ("checkpoint", 2600),
        "restored by {} ({} entries)",
        stats.restore_path,
        stats.restore_entries
    );
    ensure!(
        d.log_text().contains("tail_entries=552"),
        "two chunks kept, the rest replayed: {}",
        d.log_text()
    );
    let reader = Reader::open(&d.data_dir)?;
    ensure!(reader.visible() == 2600, "visible {}", reader.visible());
    // Every entity's stream (kept rows, then replayed ones, linked through
    // the recomputed heads) holds its events and its hash chain verifies.
    let mut chained = 0;
    for e in (0..37).map(|u| format!("user:{u}")).chain(["early".into()]) {
        let report = reader.verify_chain(&e)?;
        ensure!(report.first_bad.is_none(), "{e}: {report:?}");
        chained += report.verified;
    }
    ensure!(chained == 2600, "{chained} events in the entities' streams");
    let mut again = Vec::new();
    for b in &batches {
        again.extend(client.append_batch(b.clone())?);
    }
    for (a, r) in again.iter().zip(&receipts) {
        ensure!(a.replayed, "event {} was stored again", r.sequence);
        ensure!((a.sequence, a.event_id, a.event_hash) == (r.sequence, r.event_id, r.event_hash));
        let e = reader.get(weir::EventId(r.event_id))?;
        ensure!(
            e.is_some_and(|e| e.sequence() == r.sequence),
            "get {}",
            r.sequence
        );
    }
    // Chains go on where they were: from a replayed head, and from a head
    // in the kept chunks (read back through the recomputed entity heads).
    let at = |e: &str| weir::Coordinate::new(e, "t");
    let next = client.append(&at("user:1")?, weir::EventKind(0x1001), b"after")?;
    let user1 = (10..2600).filter(|x| x % 37 == 1).count() as u32;
    ensure!(next.sequence == 2600 && next.clock == user1, "{next:?}");
    let next = client.append(&at("early")?, weir::EventKind(0x1001), b"after")?;
    ensure!(next.sequence == 2601 && next.clock == 10, "{next:?}");
    let reader = Reader::open(&d.data_dir)?;
    for (e, n) in [("user:1", u64::from(user1) + 1), ("early", 11)] {
        let report = reader.verify_chain(e)?;
        ensure!(
            report.first_bad.is_none() && report.verified == n,
            "{e}: {report:?}"
        );
    }
    Ok(())
}
