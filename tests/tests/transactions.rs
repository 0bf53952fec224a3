//! Transactions are staged per connection: a committed one becomes
//! visible whole, a cancelled one or one whose client is killed with -9
//! never does.

use anyhow::{Context, Result, ensure};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};
use weir::{Coordinate, EventKind, Reader};
use weir_tests::{Daemon, Setup, spawn_client, temp_root};

const BIN: &str = env!("CARGO_BIN_EXE_weir-test-client");

#[test]
fn kill_9_inside_a_transaction_stores_nothing() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let sock = d.socket.to_string_lossy().into_owned();
    let mut child = spawn_client(BIN, &["txn-hang", &sock, "doomed", "20"])?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    ensure!(line.trim() == "staged", "the client said {line:?}");
    let mut c = d.client()?;
    ensure!(c.stats()?.connections >= 2);
    child.kill()?;
    child.wait()?;
    // The daemon notices the dead connection.
    let until = Instant::now() + Duration::from_secs(5);
    while c.stats()?.connections > 1 {
        ensure!(
            Instant::now() < until,
            "the dead connection was not noticed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let at = Coordinate::new("after", "s")?;
    let r = c.append(&at, EventKind(0x1001), b"marker")?;
    let reader = Reader::open(&d.data_dir)?;
    ensure!(reader.get(weir::EventId(r.event_id))?.is_some());
    ensure!(
        reader.stream("doomed")?.is_empty(),
        "a killed transaction leaked"
    );
    ensure!(r.sequence == 0, "the killed transaction took sequences");
    Ok(())
}

#[test]
fn commit_is_all_together_and_cancel_is_nothing() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut c = d.client()?;
    let at = Coordinate::new("acct", "s")?;
    let reader = Reader::open(&d.data_dir)?;

    let mut tx = c.transaction();
    for i in 0..5u8 {
        tx.append(&at, EventKind(0x1001), &[i])?;
    }
    ensure!(
        reader.stream("acct")?.is_empty(),
        "staged events are visible"
    );
    let receipts = tx.commit()?;
    ensure!(receipts.len() == 5);
    let seqs: Vec<u64> = receipts.iter().map(|r| r.sequence).collect();
    ensure!(
        seqs == (0..5).collect::<Vec<_>>(),
        "not one contiguous batch: {seqs:?}"
    );
    ensure!(reader.stream("acct")?.len() == 5);

    let mut tx = c.transaction();
    tx.append(&at, EventKind(0x1001), b"no")?;
    tx.cancel()?;
    {
        let mut tx = c.transaction();
        tx.append(&at, EventKind(0x1001), b"dropped")?;
    }
    // The connection is still usable and nothing was added.
    let r = c.append(&at, EventKind(0x1001), b"after")?;
    ensure!(
        r.sequence == 5,
        "cancelled events took sequences: {}",
        r.sequence
    );
    ensure!(reader.stream("acct")?.len() == 6);
    // A bad event is refused when staged, not at commit.
    let mut tx = c.transaction();
    tx.append(&at, EventKind(0x1001), b"good")?;
    let err = tx.append(&at, EventKind(0xD000), b"reserved").unwrap_err();
    ensure!(err.code() == Some(weir::ErrorCode::InvalidKind), "{err}");
    ensure!(tx.commit()?.len() == 1);
    Ok(())
}

#[test]
fn sync_makes_earlier_appends_durable_and_answers_in_order() -> Result<()> {
    // With `sync = "never"` receipts say not durable; `Sync` waits for the
    // appends queued before it, fsyncs, and answers with the watermark.
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()).with("sync = \"never\""))?;
    let mut c = d.client()?;
    let at = Coordinate::new("s", "s")?;
    let mut last = None;
    for i in 0..20u8 {
        let r = c.append(&at, EventKind(0x1001), &[i])?;
        ensure!(!r.durable, "sync = never acknowledged a durable append");
        last = Some(r.sequence);
    }
    let before = c.stats()?.fsyncs;
    let visible = c.sync()?;
    ensure!(
        Some(visible) == last.map(|s| s + 1),
        "sync answered {visible}, expected {last:?} + 1"
    );
    ensure!(c.stats()?.fsyncs > before, "sync did not fsync");
    // A sync with nothing new to write answers the same watermark.
    let again = c.sync()?;
    ensure!(
        again == visible,
        "a sync with nothing new moved the watermark"
    );
    Ok(())
}
