//! Proves that `weir::Client` survives a socket peer that misbehaves: a
//! reply nested too deep is a protocol error, not a stack overflow, and a
//! daemon that takes the connection but never answers (or never accepts
//! it, its listen backlog full) is reported as not answering, not as gone, and one that sends its reply a byte at a time
//! does not hold a call past the io timeout; a call whose outcome is
//! unknown gives the idempotency keys to resend its events with, and a
//! pipelined call that loses its connection keeps the answers it had.

mod fake;

use fake::{Res, fake, frame, full_backlog, read_one, server_hello};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use weir::{Client, ClientError, ClientOptions, Coordinate, EventKind};
use weir_protocol::wire::{
    AppendRequest, ErrorCode, HelloReply, Op, Receipt, Reply, Request, Response, ServerHello,
    WireError, decode, encode,
};

/// A good hello reply frame.
fn hello() -> std::io::Result<Vec<u8>> {
    hello_with_frame(1 << 20)
}

/// A good hello reply frame announcing `max_frame`.
fn hello_with_frame(max_frame: u32) -> std::io::Result<Vec<u8>> {
    frame(&HelloReply::Ok(ServerHello {
        max_frame,
        ..server_hello()
    }))
}

/// Reads one request and answers it with the error `code`.
fn refuse_one(s: &mut UnixStream, code: ErrorCode, message: &str) -> std::io::Result<Vec<u8>> {
    let body = read_one(s)?;
    let req: Request = decode(&body).map_err(std::io::Error::other)?;
    let mut reply = Vec::new();
    encode(
        &mut reply,
        &Response {
            id: req.id,
            result: Err(WireError::new(code, message)),
        },
    )
    .map_err(std::io::Error::other)?;
    s.write_all(&reply)?;
    Ok(body)
}

fn opts() -> ClientOptions {
    ClientOptions::default()
        .io_timeout(Duration::from_millis(500))
        .retry_for(Duration::from_millis(300))
}

#[test]
fn a_deeply_nested_reply_is_a_protocol_error() -> Res {
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, |s| {
        // {"Ok": ServerHello as a map, with an extra key "x": [[[[…]]]]},
        // 100,000 deep: serde skips the unknown key's value by recursing.
        let mut body = vec![0x81, 0xa2, b'O', b'k', 0x87];
        for (k, v) in [
            ("version", &[1][..]),
            (
                "instance",
                &[0xc4, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
            ),
            ("max_frame", &[0xce, 0, 1, 0, 0]),
            ("max_payload", &[0x7f]),
            ("max_batch_events", &[0x7f]),
            ("max_batch_bytes", &[0x7f]),
            ("x", &[]),
        ] {
            body.push(0xa0 | k.len() as u8);
            body.extend_from_slice(k.as_bytes());
            body.extend_from_slice(v);
        }
        body.extend(std::iter::repeat_n(0x91, 100_000));
        body.push(0xc0);
        s.write_all(&(body.len() as u32).to_le_bytes())?;
        s.write_all(&body)?;
        std::thread::sleep(Duration::from_secs(1));
        Ok(())
    })?;
    // A small stack: rmp-serde's own depth limit (1024) overflowed 2 MiB.
    let r = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || Client::connect_with(&path, opts()).map(|_| ()))?
        .join()
        .map_err(|_| "the client thread panicked")?;
    assert!(
        matches!(&r, Err(ClientError::Protocol { what }) if what.contains("depth")),
        "{r:?}"
    );
    Ok(())
}

#[test]
fn a_daemon_that_does_not_answer_is_not_called_gone() -> Res {
    // No answer to the hello.
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, |_| {
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    })?;
    let r = Client::connect_with(&path, opts());
    assert!(
        matches!(&r, Err(ClientError::NotAnswering { waited, .. }) if waited.is_zero()),
        "{r:?}"
    );
    // A hello, then no answer to the append: retried, then reported.
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, |s| {
        s.write_all(&hello()?)?;
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    })?;
    let mut c = Client::connect_with(&path, opts())?;
    let r = c.append(&Coordinate::new("e:1", "s")?, EventKind(0x1001), b"x");
    assert!(
        matches!(&r, Err(ClientError::NotAnswering { timeout, .. }) if *timeout == Duration::from_millis(500)),
        "{r:?}"
    );
    Ok(())
}

#[test]
fn a_daemon_whose_listen_backlog_is_full_is_not_answering() -> Res {
    // A stopped daemon stops accepting; once its backlog is full, a connect
    // used to wait for room with no timeout at all.
    let dir = tempfile::tempdir()?;
    let (path, l, _queued) = full_backlog(&dir)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let o = ClientOptions::default().io_timeout(Duration::from_millis(300));
        let _ = tx.send(Client::connect_with(&p, o).map(|_| ()));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "connect still blocked after 5 s")?;
    assert!(
        matches!(&r, Err(ClientError::NotAnswering { waited, .. }) if waited.is_zero()),
        "{r:?}"
    );
    drop(l);
    Ok(())
}

#[test]
fn a_reply_sent_a_byte_at_a_time_ends_at_the_io_timeout() -> Res {
    // Each byte within the 300 ms timeout, the whole receipt (about 80
    // bytes, one per 100 ms) far past it.
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, |s| {
        s.write_all(&hello()?)?;
        let request = read_one(s)?;
        let mut reply = Vec::new();
        encode(
            &mut reply,
            &Response {
                id: u64::from(request[1]),
                result: Ok(Reply::Appended(Receipt {
                    event_id: 9,
                    sequence: 1,
                    clock: 0,
                    event_hash: [3; 32],
                    durable: true,
                    replayed: false,
                })),
            },
        )
        .map_err(std::io::Error::other)?;
        for b in reply {
            s.write_all(&[b])?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })?;
    let o = ClientOptions::default()
        .io_timeout(Duration::from_millis(300))
        .retry_for(Duration::ZERO);
    let mut c = Client::connect_with(&path, o)?;
    let r = c.append(&Coordinate::new("e:1", "s")?, EventKind(0x1001), b"x");
    assert!(matches!(&r, Err(ClientError::NotAnswering { .. })), "{r:?}");
    Ok(())
}

/// The idempotency keys of a request frame's events.
fn sent_keys(body: &[u8]) -> Vec<u128> {
    let req: Request = decode(body).expect("a request");
    match req.op {
        Op::Append(r) => vec![r.idempotency_key.expect("keyed")],
        Op::AppendBatch(v) => v
            .iter()
            .map(|r| r.idempotency_key.expect("keyed"))
            .collect(),
        op => panic!("unexpected {op:?}"),
    }
}

/// Three events, the second with the caller's own key.
fn batch() -> Vec<AppendRequest> {
    (0..3u8)
        .map(|i| AppendRequest {
            entity: format!("e:{i}"),
            scope: "s".into(),
            kind: 0x1001,
            payload: vec![i],
            idempotency_key: (i == 1).then_some(0xabc),
            ..AppendRequest::default()
        })
        .collect()
}

#[test]
fn a_call_whose_outcome_is_unknown_gives_the_keys_to_retry_with() -> Res {
    // The keys the client generated went nowhere the caller could see: the
    // daemon's advice "retry with the same idempotency key" could not be
    // followed, and a retry with new keys could store the events twice.
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, move |s| {
        s.write_all(&hello()?)?;
        let body = refuse_one(
            s,
            ErrorCode::OutcomeUnknown,
            "the outcome is unknown: index write failed",
        )?;
        tx.send(sent_keys(&body)).map_err(std::io::Error::other)?;
        std::thread::sleep(Duration::from_secs(1));
        Ok(())
    })?;
    let mut c = Client::connect_with(&path, opts())?;
    let err = c.append_batch(batch()).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OutcomeUnknown), "{err}");
    let sent = rx.recv()?;
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1], 0xabc);
    assert_eq!(err.unresolved_keys(), sent, "{err}");

    // Sent, then no answer: the same keys, once the retries give up.
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, move |s| {
        s.write_all(&hello()?)?;
        let body = read_one(s)?;
        tx.send(sent_keys(&body)).map_err(std::io::Error::other)?;
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    })?;
    let mut c = Client::connect_with(&path, opts())?;
    let err = c.append_batch(batch()).unwrap_err();
    assert!(matches!(err, ClientError::NotAnswering { .. }), "{err:?}");
    let sent = rx.recv()?;
    assert_eq!(err.unresolved_keys(), sent, "{err}");
    assert!(
        err.to_string().contains("may or may not be stored"),
        "{err}"
    );
    Ok(())
}

/// Answers request `body` with `reply`.
fn answer(s: &mut UnixStream, body: &[u8], reply: Reply) -> std::io::Result<Request> {
    let req: Request = decode(body).map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    encode(
        &mut out,
        &Response {
            id: req.id,
            result: Ok(reply),
        },
    )
    .map_err(std::io::Error::other)?;
    s.write_all(&out)?;
    Ok(req)
}

#[test]
fn a_lost_commit_whose_resend_is_too_large_is_unknown_with_its_keys() -> Res {
    // Three events of 3,000 bytes, each staged in its own frame; resent as
    // one batch they exceed the 8,000-byte frame. The client used to report
    // its own refusal as the daemon's ("the daemon refused the request"),
    // with no keys, although the commit may have been applied.
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, move |s| {
        s.write_all(&hello_with_frame(8000)?)?;
        let mut staged = 0;
        loop {
            let body = read_one(s)?;
            let req: Request = decode(&body).map_err(std::io::Error::other)?;
            match req.op {
                Op::Begin => drop(answer(s, &body, Reply::Begun)?),
                Op::Append(r) => {
                    staged += 1;
                    tx.send(r.idempotency_key).map_err(std::io::Error::other)?;
                    answer(s, &body, Reply::Staged { staged })?;
                }
                // The commit's answer is lost: the connection closes.
                _ => return Ok(()),
            }
        }
    })?;
    let mut c = Client::connect_with(&path, opts())?;
    let at = Coordinate::new("e:1", "s")?;
    let mut t = c.transaction();
    for i in 0..3u8 {
        t.append(&at, EventKind(0x1001), &[i; 3000])?;
    }
    let err = t.commit().unwrap_err();
    assert!(
        matches!(err, ClientError::RequestTooLarge { max: 8000, .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), None, "{err}");
    let sent: Vec<u128> = rx.try_iter().map(|k| k.expect("keyed")).collect();
    assert_eq!(sent.len(), 3);
    assert_eq!(err.unresolved_keys(), sent, "{err}");
    assert!(err.to_string().contains("was not sent"), "{err}");
    Ok(())
}

#[test]
fn a_call_with_a_known_outcome_has_no_keys_to_retry_with() -> Res {
    // Refused outright: nothing was stored, nothing to resend with the keys.
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, |s| {
        s.write_all(&hello()?)?;
        refuse_one(s, ErrorCode::VersionConflict, "conflict")?;
        std::thread::sleep(Duration::from_secs(1));
        Ok(())
    })?;
    let mut c = Client::connect_with(&path, opts())?;
    let err = c.append_batch(batch()).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::VersionConflict), "{err}");
    assert!(err.unresolved_keys().is_empty(), "{err:?}");
    // Never sent: the daemon is gone before the call.
    let gone = dir.path().join("gone.sock");
    let err = Client::connect_with(&gone, opts()).unwrap_err();
    assert!(err.unresolved_keys().is_empty(), "{err:?}");
    Ok(())
}

#[test]
fn a_pipelined_call_that_loses_its_connection_keeps_the_answers_it_had() -> Res {
    // The daemon answers the first window (a receipt and a refusal), reads
    // the second and answers only its first request, then dies; it is not
    // back within the retry budget. The answers came before the call gave
    // up: dropping them left the caller to count the stored events as not
    // appended, and to append them again.
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, move |s| {
        if conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            return Ok(()); // Gone: later connections close at once.
        }
        s.write_all(&hello()?)?;
        let receipt = |sequence| {
            Reply::Appended(Receipt {
                event_id: 0x100 + u128::from(sequence),
                sequence,
                clock: 0,
                event_hash: [0; 32],
                durable: true,
                replayed: false,
            })
        };
        let (r0, r1) = (read_one(s)?, read_one(s)?);
        answer(s, &r0, receipt(0))?;
        let req: Request = decode(&r1).map_err(std::io::Error::other)?;
        let conflict = Response {
            id: req.id,
            result: Err(WireError::new(ErrorCode::VersionConflict, "conflict")),
        };
        s.write_all(&frame(&conflict)?)?;
        let (r2, _r3) = (read_one(s)?, read_one(s)?);
        answer(s, &r2, receipt(1))?;
        Ok(())
    })?;
    let mut c = Client::connect_with(&path, opts().window(2))?;
    let events: Vec<_> = (0..6u128)
        .map(|i| AppendRequest {
            entity: format!("e:{i}"),
            scope: "s".into(),
            kind: 0x1001,
            payload: vec![1],
            idempotency_key: Some(100 + i),
            ..AppendRequest::default()
        })
        .collect();
    let err = c.append_pipelined(events).unwrap_err();
    let answered: Vec<_> = err
        .answered()
        .iter()
        .map(|a| match a {
            Some(Ok(r)) => format!("stored at {}", r.sequence),
            Some(Err(e)) => format!("{:?}", e.code),
            None => "no answer".to_owned(),
        })
        .collect();
    assert_eq!(
        answered,
        [
            "stored at 0",
            "VersionConflict",
            "stored at 1",
            "no answer",
            "no answer",
            "no answer"
        ],
        "{err:?}"
    );
    // Sent and not answered: event 3 only; events 4 and 5 were not sent.
    assert_eq!(err.unresolved_keys(), [103], "{err}");
    Ok(())
}
