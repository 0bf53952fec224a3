//! Every kind of bad input gets a typed error while another client keeps
//! appending, and the daemon survives all of it.

use anyhow::{Context, Result, bail, ensure};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use weir::{Coordinate, EventKind};
use weir_protocol::wire::{
    AppendRequest, ClientHello, ErrorCode, HELLO_MAGIC, HelloReply, Op, PROTOCOL_VERSION, Reply,
    Request, Response, encode, read_frame_bytes, write_frame,
};
use weir_tests::{Daemon, Setup, temp_root};

fn raw(d: &Daemon) -> Result<UnixStream> {
    let s = UnixStream::connect(&d.socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn hello_with(s: &mut UnixStream, versions: Vec<u16>) -> Result<HelloReply> {
    write_frame(
        s,
        &ClientHello {
            magic: HELLO_MAGIC,
            versions,
            client: "bad-input".into(),
        },
    )?;
    read_msg(s)
}

fn read_msg<T: serde::de::DeserializeOwned>(s: &mut UnixStream) -> Result<T> {
    let mut body = Vec::new();
    read_frame_bytes(s, 1 << 24, &mut body)?;
    Ok(weir_protocol::wire::decode(&body)?)
}

fn session(d: &Daemon) -> Result<UnixStream> {
    let mut s = raw(d)?;
    match hello_with(&mut s, vec![PROTOCOL_VERSION])? {
        HelloReply::Ok(_) => Ok(s),
        HelloReply::Err(e) => bail!("hello refused: {e}"),
    }
}

/// Sends raw bytes after a good hello; expects a connection-level error and EOF.
fn fatal(d: &Daemon, bytes: &[u8], then_close: bool) -> Result<ErrorCode> {
    let mut s = session(d)?;
    let _ = s.write_all(bytes);
    if then_close {
        s.shutdown(std::net::Shutdown::Write)?;
    }
    let r: Response = read_msg(&mut s)?;
    ensure!(r.id == 0, "a connection-level error has id 0, got {}", r.id);
    let code = r.result.err().context("expected an error")?.code;
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    ensure!(
        rest.is_empty(),
        "the daemon kept talking after a fatal error"
    );
    Ok(code)
}

/// One request after a good hello; returns its result.
fn request(d: &Daemon, ops: Vec<Op>) -> Result<Vec<Result<Reply, weir::WireError>>> {
    let mut s = session(d)?;
    let mut buf = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        encode(
            &mut buf,
            &Request {
                id: i as u64 + 1,
                op: op.clone(),
            },
        )?;
    }
    s.write_all(&buf)?;
    let mut out = Vec::new();
    for i in 0..ops.len() {
        let r: Response = read_msg(&mut s)?;
        ensure!(
            r.id == i as u64 + 1,
            "replies out of order: {} at {i}",
            r.id
        );
        out.push(r.result);
    }
    Ok(out)
}

/// Requests one at a time on one connection.
fn request_seq(d: &Daemon, ops: Vec<Op>) -> Result<Vec<Result<Reply, weir::WireError>>> {
    let mut s = session(d)?;
    let mut out = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        write_frame(
            &mut s,
            &Request {
                id: i as u64 + 1,
                op,
            },
        )?;
        let r: Response = read_msg(&mut s)?;
        ensure!(r.id == i as u64 + 1, "reply for {} at {i}", r.id);
        out.push(r.result);
    }
    Ok(out)
}

fn code(r: &Result<Reply, weir::WireError>) -> Option<ErrorCode> {
    r.as_ref().err().map(|e| e.code)
}

fn ev(entity: &str, kind: u16, payload: usize) -> AppendRequest {
    AppendRequest {
        entity: entity.into(),
        scope: "s".into(),
        kind,
        payload: vec![7; payload],
        ..AppendRequest::default()
    }
}

#[test]
fn every_bad_input_gets_a_typed_error() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(
        &Setup::in_dir(root.path())
            .with("max-payload-bytes = 8192")
            .with("max-frame-bytes = 65536")
            .with("max-batch-bytes = 32768")
            .with("max-batch-events = 16")
            .with("max-in-flight-per-connection = 4")
            .with("read-timeout-ms = 400"),
    )?;

    // Another client appends throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut bg = d.client()?;
    let bg_thread = {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        std::thread::spawn(move || -> Result<()> {
            let at = Coordinate::new("steady", "s")?;
            while !stop.load(Ordering::Relaxed) {
                bg.append(&at, EventKind(0x1001), b"tick")?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };

    // Before the hello: random bytes, a garbage body, a wrong version.
    let mut s = raw(&d)?;
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8])?;
    match read_msg::<HelloReply>(&mut s)? {
        HelloReply::Err(e) => ensure!(e.code == ErrorCode::FrameTooLarge, "{e}"),
        HelloReply::Ok(_) => bail!("random bytes were taken for a hello"),
    }
    let mut s = raw(&d)?;
    s.write_all(&[3, 0, 0, 0, 0xc1, 0xc1, 0xc1])?;
    match read_msg::<HelloReply>(&mut s)? {
        HelloReply::Err(e) => ensure!(e.code == ErrorCode::BadHello, "{e}"),
        HelloReply::Ok(_) => bail!("garbage was taken for a hello"),
    }
    let mut s = raw(&d)?;
    match hello_with(&mut s, vec![PROTOCOL_VERSION + 40])? {
        HelloReply::Err(e) => {
            ensure!(e.code == ErrorCode::UnsupportedVersion, "{e}");
            ensure!(e.fields.get("supported") == Some(&PROTOCOL_VERSION.to_string()));
        }
        HelloReply::Ok(_) => bail!("an unknown version was accepted"),
    }

    // Connection-level errors after the hello.
    ensure!(fatal(&d, &u32::MAX.to_le_bytes(), false)? == ErrorCode::FrameTooLarge);
    ensure!(fatal(&d, &[100, 0, 0, 0, 1, 2, 3], true)? == ErrorCode::MalformedFrame);
    let mut wrong = Vec::new();
    encode(&mut wrong, &("not", "a", "request", 42))?;
    ensure!(fatal(&d, &wrong, false)? == ErrorCode::MalformedFrame);
    let mut deep = vec![0x91u8; 5000];
    deep.push(0xc0);
    let mut nested = (deep.len() as u32).to_le_bytes().to_vec();
    nested.extend_from_slice(&deep);
    ensure!(fatal(&d, &nested, false)? == ErrorCode::MalformedFrame);
    ensure!(
        fatal(&d, &[], false)? == ErrorCode::Timeout,
        "idle connection"
    );
    ensure!(
        fatal(&d, &[9, 0], false)? == ErrorCode::Timeout,
        "stuck mid-frame"
    );

    // Request-level errors: the connection stays usable.
    let r = request_seq(
        &d,
        vec![
            Op::Append(ev("bad/entity", 0x1001, 1)),
            Op::Append(ev("e", 0xD001, 1)),
            Op::Append(ev("e", 0x0001, 1)),
            Op::Append(ev("e", 0x1001, 9000)),
            Op::AppendBatch((0..17).map(|_| ev("e", 0x1001, 1)).collect()),
            Op::AppendBatch(Vec::new()),
            Op::Commit,
            Op::Cancel,
            Op::Begin,
            Op::Begin,
            Op::Append(ev("", 0x1001, 1)),
            Op::Cancel,
            Op::Ping,
        ],
    )?;
    let want = [
        Some(ErrorCode::InvalidCoordinate),
        Some(ErrorCode::InvalidKind),
        Some(ErrorCode::InvalidKind),
        Some(ErrorCode::PayloadTooLarge),
        Some(ErrorCode::BatchTooLarge),
        Some(ErrorCode::EmptyBatch),
        Some(ErrorCode::TransactionState),
        Some(ErrorCode::TransactionState),
        None,
        Some(ErrorCode::TransactionState),
        Some(ErrorCode::InvalidCoordinate),
        None,
        None,
    ];
    let got: Vec<_> = r.iter().map(code).collect();
    ensure!(got == want, "got {got:?}");
    ensure!(matches!(r[11], Ok(Reply::Cancelled { dropped: 0 })));

    // A batch whose header announces 2^32 - 1 events (and that holds 20):
    // refused at the header, before any event is decoded (a frame of
    // millions of tiny events took over a gigabyte to decode), answered
    // with its id; the connection stays open.
    let mut frame = Vec::new();
    encode(
        &mut frame,
        &Request {
            id: 5,
            op: Op::AppendBatch((0..20).map(|_| ev("big", 0x1001, 1)).collect()),
        },
    )?;
    let at = frame
        .windows(11)
        .position(|w| w == b"AppendBatch")
        .context("the op name")?
        + 11;
    ensure!(frame[at..at + 3] == [0xdc, 0, 20], "an array16 header");
    frame.splice(at..at + 3, [0xdd, 0xff, 0xff, 0xff, 0xff]);
    let len = frame.len() as u32 - 4;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    encode(
        &mut frame,
        &Request {
            id: 6,
            op: Op::Ping,
        },
    )?;
    let mut s = session(&d)?;
    s.write_all(&frame)?;
    let r: Response = read_msg(&mut s)?;
    ensure!(r.id == 5, "answered as request {}: {:?}", r.id, r.result);
    let e = r.result.err().context("a refusal")?;
    ensure!(e.code == ErrorCode::BatchTooLarge, "{e}");
    ensure!(
        e.fields.get("events").map(String::as_str) == Some("4294967295"),
        "{e:?}"
    );
    let r: Response = read_msg(&mut s)?;
    ensure!(r.id == 6 && matches!(r.result, Ok(Reply::Pong)), "{r:?}");

    // More in flight than allowed: the excess is refused, in order.
    let many: Vec<Op> = (0..64)
        .map(|_| Op::Append(ev("burst", 0x1001, 10)))
        .collect();
    let r = request(&d, many)?;
    let refused = r
        .iter()
        .filter(|x| code(x) == Some(ErrorCode::TooManyInFlight))
        .count();
    let ok = r.iter().filter(|x| x.is_ok()).count();
    ensure!(
        refused > 0 && ok > 0 && refused + ok == 64,
        "{refused} refused, {ok} ok"
    );
    let e = r
        .iter()
        .find_map(|x| x.as_ref().err())
        .context("an error")?;
    ensure!(e.fields.contains_key("retry_after_ms"));

    let before = done.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    bg_thread.join().map_err(|_| anyhow::anyhow!("panic"))??;
    ensure!(
        done.load(Ordering::Relaxed) > before,
        "the steady client stalled"
    );
    let stats = d.client()?.stats()?;
    ensure!(stats.rejected.get("TooManyInFlight").copied().unwrap_or(0) > 0);
    Ok(())
}

/// A hello longer than 64 KiB (here the head of a 1 MiB one, well within the
/// default max-frame-bytes) is refused at its head, before its body: no
/// connection holds more than that before the daemon knows whom it serves.
#[test]
fn a_long_hello_is_refused_at_its_head() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut s = raw(&d)?;
    s.write_all(&(1u32 << 20).to_le_bytes())?;
    match read_msg::<HelloReply>(&mut s).context("no answer to the head of a 1 MiB hello")? {
        HelloReply::Err(e) => ensure!(e.code == ErrorCode::FrameTooLarge, "{e}"),
        HelloReply::Ok(_) => bail!("a 1 MiB hello was taken"),
    }
    Ok(())
}
