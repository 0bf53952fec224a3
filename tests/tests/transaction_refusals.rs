//! A request refused inside a transaction leaves it open: a `Commit`
//! refused before it reached the writer keeps everything staged for its
//! retry, and what is pipelined behind it is still staged.

use anyhow::{Result, bail, ensure};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use weir::{AppendRequest, ErrorCode, Reader, WireError};
use weir_protocol::wire::{
    ClientHello, HELLO_MAGIC, HelloReply, Op, PROTOCOL_VERSION, Reply, Request, Response, decode,
    encode, read_frame_bytes, write_frame,
};
use weir_tests::{Daemon, Setup, temp_root};

/// A connection after a good hello, numbering its requests.
struct Wire {
    s: UnixStream,
    next: u64,
}

impl Wire {
    fn open(d: &Daemon) -> Result<Self> {
        let mut s = UnixStream::connect(&d.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write_frame(
            &mut s,
            &ClientHello {
                magic: HELLO_MAGIC,
                versions: vec![PROTOCOL_VERSION],
                client: "transaction-refusals".into(),
            },
        )?;
        match decode::<HelloReply>(&Self::frame(&mut s)?)? {
            HelloReply::Ok(_) => Ok(Self { s, next: 1 }),
            HelloReply::Err(e) => bail!("hello refused: {e}"),
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
    // The retry the error invites commits both. (The daemon counts a reply
    // in flight until its write returns, which may be after it arrived
    // here: the retry can be refused the same way, and is retried.)
    let mut again = w.round(vec![Op::Commit])?.remove(0);
    for _ in 0..1000 {
        if code(&again) != Some(ErrorCode::TooManyInFlight) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        again = w.round(vec![Op::Commit])?.remove(0);
    }
    let Ok(Reply::Batch(receipts)) = &again else {
        bail!("the retried commit: {again:?}");
    };
    ensure!(receipts.len() == 2, "{receipts:?}");
    ensure!(receipts[1].sequence == receipts[0].sequence + 1);
    ensure!(reader.stream("txn")?.len() == 2);
    Ok(())
}
