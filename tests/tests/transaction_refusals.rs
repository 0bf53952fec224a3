//! A request refused inside a transaction leaves it open: a `Commit`
//! refused before it reached the writer keeps everything staged for its
//! retry, and what is pipelined behind it is still staged; an event the
//! commit would refuse (a repeated key or event id) is refused when staged, and
//! an event over max-payload-bytes is refused for its payload, not as a batch.

use anyhow::{Result, bail, ensure};
use std::io::Write;
use std::os::unix::net::UnixStream;
use weir::{AppendRequest, ErrorCode, Reader, WireError};
use weir_protocol::wire::{
    HelloReply, Op, Reply, Request, Response, decode, encode, read_frame_bytes,
};
use weir_tests::{Daemon, Setup, temp_root};

/// A connection after a good hello, numbering its requests.
struct Wire {
    s: UnixStream,
    next: u64,
}

impl Wire {
    fn open(d: &Daemon) -> Result<Self> {
        match weir_tests::raw_hello(&d.socket, "transaction-refusals")? {
            (s, HelloReply::Ok(_)) => Ok(Self { s, next: 1 }),
            (_, HelloReply::Err(e)) => bail!("hello refused: {e}"),
        }
    }

    fn frame(s: &mut UnixStream) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        read_frame_bytes(s, 1 << 24, &mut body)?;
        Ok(body)
    }

    /// Sends `ops` in one write and returns their answers, in order.
    fn round(&mut self, ops: Vec<Op>) -> Result<Vec<Result<Reply, WireError>>> {
        let mut buf = Vec::new();
        let first = self.next;
        for op in ops {
            encode(&mut buf, &Request { id: self.next, op })?;
            self.next += 1;
        }
        self.s.write_all(&buf)?;
        (first..self.next)
            .map(|id| {
                let r: Response = decode(&Self::frame(&mut self.s)?)?;
                ensure!(r.id == id, "answer {} where {id} was due", r.id);
                Ok(r.result)
            })
            .collect()
    }
}

fn ev(entity: &str, payload: &[u8]) -> AppendRequest {
    AppendRequest {
        entity: entity.into(),
        scope: "s".into(),
        kind: 0x1001,
        payload: payload.to_vec(),
        ..AppendRequest::default()
    }
}

fn code(r: &Result<Reply, WireError>) -> Option<ErrorCode> {
    r.as_ref().err().map(|e| e.code)
}

#[test]
fn a_commit_refused_as_too_many_in_flight_keeps_the_transaction() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()).with("max-in-flight-per-connection = 2"))?;
    let mut w = Wire::open(&d)?;
    // Two appends fill the connection's in-flight limit (their fsyncs take
    // far longer than reading the frames behind them), so the commit is
    // refused; the append pipelined behind it must still be staged. Should
    // the appends ever be answered first, the round is tried again.
    let mut refused = None;
    for round in 0..20u8 {
        let r = w.round(vec![
            Op::Append(ev("a", &[round])),
            Op::Append(ev("a", &[round])),
            Op::Begin,
            Op::Append(ev("txn", b"first")),
            Op::Commit,
            Op::Append(ev("txn", b"behind the commit")),
        ])?;
        if code(&r[4]) == Some(ErrorCode::TooManyInFlight) {
            refused = Some(r);
            break;
        }
        ensure!(matches!(r[4], Ok(Reply::Batch(_))), "commit: {:?}", r[4]);
        ensure!(matches!(r[5], Ok(Reply::Appended(_))), "after: {:?}", r[5]);
    }
    let Some(r) = refused else {
        bail!("the commit was never refused as TooManyInFlight");
    };
    ensure!(
        matches!(r[5], Ok(Reply::Staged { staged: 2 })),
        "the append behind the refused commit was not staged: {:?}",
        r[5]
    );
    let reader = Reader::open(&d.data_dir)?;
    ensure!(
        reader.stream("txn")?.is_empty(),
        "staged events are visible"
    );
    // The retry the error invites commits both: every reply was read, so
    // nothing is in flight (the daemon counts a reply out when it takes it
    // to be written, before this side can read it).
    let again = w.round(vec![Op::Commit])?.remove(0);
    let Ok(Reply::Batch(receipts)) = &again else {
        bail!("the retried commit: {again:?}");
    };
    ensure!(receipts.len() == 2, "{receipts:?}");
    ensure!(receipts[1].sequence == receipts[0].sequence + 1);
    ensure!(reader.stream("txn")?.len() == 2);
    Ok(())
}

#[test]
fn a_repeated_key_or_event_id_is_refused_when_staged() -> Result<()> {
    const X: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0001;
    const Y: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0002;
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut w = Wire::open(&d)?;
    let key = |k: u128, p: &[u8]| AppendRequest {
        idempotency_key: Some(k),
        ..ev("t", p)
    };
    let id = |i: u128| AppendRequest {
        event_id: Some(i),
        ..ev("t", b"")
    };
    let r = w.round(vec![
        Op::Begin,
        Op::Append(key(7, b"one")),
        Op::Append(key(7, b"two")),
        Op::AppendBatch(vec![key(8, b"a"), key(8, b"b")]),
        Op::Append(id(X)),
        Op::Append(id(X)),
        Op::AppendBatch(vec![ev("t", b""), id(Y), id(Y)]),
        Op::Commit,
    ])?;
    ensure!(
        matches!(r[1], Ok(Reply::Staged { staged: 1 })),
        "{:?}",
        r[1]
    );
    ensure!(
        code(&r[2]) == Some(ErrorCode::IdempotencyConflict),
        "{:?}",
        r[2]
    );
    ensure!(
        code(&r[3]) == Some(ErrorCode::IdempotencyConflict),
        "{:?}",
        r[3]
    );
    ensure!(
        matches!(r[4], Ok(Reply::Staged { staged: 2 })),
        "{:?}",
        r[4]
    );
    let field = |r: &Result<Reply, WireError>, f: &str| {
        r.as_ref()
            .err()
            .and_then(|e| e.fields.get(f).cloned())
            .unwrap_or_default()
    };
    ensure!(
        code(&r[5]) == Some(ErrorCode::DuplicateEventId),
        "{:?}",
        r[5]
    );
    ensure!(field(&r[5], "index") == "2" && field(&r[5], "earlier_index") == "1");
    ensure!(
        code(&r[6]) == Some(ErrorCode::DuplicateEventId),
        "{:?}",
        r[6]
    );
    ensure!(field(&r[6], "index") == "4" && field(&r[6], "earlier_index") == "3");
    // The transaction stayed open: the commit stores what was staged.
    let Ok(Reply::Batch(receipts)) = &r[7] else {
        bail!("commit: {:?}", r[7]);
    };
    ensure!(receipts.len() == 2, "{receipts:?}");
    ensure!(receipts[1].event_id == X);
    ensure!(Reader::open(&d.data_dir)?.stream("t")?.len() == 2);
    Ok(())
}

#[test]
fn an_event_over_the_payload_limit_is_refused_for_its_payload_not_as_a_batch() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(
        &Setup::in_dir(root.path()).with("max-payload-bytes = 65536\nmax-batch-bytes = 100000"),
    )?;
    let mut w = Wire::open(&d)?;
    // Over both limits: its payload is what the operator must change.
    let big = vec![7; 100_001];
    let r = w.round(vec![
        Op::Append(ev("p", &big)),
        Op::Begin,
        Op::Append(ev("p", &[1; 60_000])),
        Op::Append(ev("p", &big)),
        // Under the payload limit, over the batch's with what is staged.
        Op::Append(ev("p", &[2; 60_000])),
        Op::Commit,
    ])?;
    for i in [0, 3] {
        ensure!(
            code(&r[i]) == Some(ErrorCode::PayloadTooLarge),
            "{i}: {:?}",
            r[i]
        );
    }
    ensure!(code(&r[4]) == Some(ErrorCode::BatchTooLarge), "{:?}", r[4]);
    ensure!(
        matches!(&r[5], Ok(Reply::Batch(v)) if v.len() == 1),
        "{:?}",
        r[5]
    );
    Ok(())
}
