//! When an append's outcome is unknown (the daemon answered
//! `OutcomeUnknown`), `weir append` names the idempotency key to append the
//! event again with, so that a retry stores it at most once: the key the
//! client generated went nowhere the user could see before.

mod common;

use anyhow::Result;
use common::{APPEND_ONE, weir};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{Receiver, channel};
use weir_protocol::wire::{
    ErrorCode, HelloReply, Op, Request, Response, ServerHello, WireError, decode, encode,
};

fn read_one(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn send<T: serde::Serialize>(s: &mut UnixStream, msg: &T) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode(&mut out, msg).map_err(std::io::Error::other)?;
    s.write_all(&out)
}

/// A fake daemon for the data directory `dir` (a `gate` file and a
/// discovery file pointing at its socket) that answers every append
/// `OutcomeUnknown`; the keys it receives arrive on the channel.
fn fake(dir: &std::path::Path) -> Result<Receiver<u128>> {
    let sock = dir.join("fake.sock");
    let l = UnixListener::bind(&sock)?;
    std::fs::write(dir.join("gate"), b"")?;
    std::fs::write(dir.join("socket"), format!("{}\n", sock.display()))?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                read_one(&mut s)?;
                send(
                    &mut s,
                    &HelloReply::Ok(ServerHello {
                        version: 1,
                        instance: 7,
                        max_frame: 1 << 20,
                        max_payload: 1 << 16,
                        max_batch_events: 100,
                        max_batch_bytes: 1 << 20,
                        max_in_flight: None,
                        starts: Vec::new(),
                        data_dir: None,
                    }),
                )?;
                loop {
                    let req: Request = decode(&read_one(&mut s)?).map_err(std::io::Error::other)?;
                    if let Op::Append(r) = &req.op {
                        let _ = tx.send(r.idempotency_key.unwrap_or_default());
                    }
                    let e = WireError::new(
                        ErrorCode::OutcomeUnknown,
                        "the outcome is unknown: index write failed",
                    );
                    send(
                        &mut s,
                        &Response {
                            id: req.id,
                            result: Err(e),
                        },
                    )?;
                }
            });
        }
    });
    Ok(rx)
}

/// The UUID text after `marker` in `text`.
fn uuid_after<'t>(text: &'t str, marker: &str) -> &'t str {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {text}"))
        + marker.len();
    &text[at..at + 36]
}

#[test]
fn an_append_with_an_unknown_outcome_names_the_key_to_retry_with() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let keys = fake(tmp.path())?;
    let args = APPEND_ONE;
    let out = weir(tmp.path()).args(args).output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let key = uuid_after(&err, "--idempotency-key ").to_owned();
    let sent = keys.recv()?;
    assert_eq!(key, weir::EventId(sent).to_string(), "{err}");
    // The retry the message suggests sends that very key.
    let out = weir(tmp.path())
        .args(args)
        .args(["--idempotency-key", &key])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(keys.recv()?, sent);

    // From stdin: each line whose outcome is unknown gets its key.
    let out = weir(tmp.path())
        .args(["append", "--scope", "b", "--kind", "0x1001"])
        .write_stdin("{\"entity\": \"a\", \"payload\": 1}\n{\"entity\": \"c\", \"payload\": 2}\n")
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let sent = [keys.recv()?, keys.recv()?];
    for (line, sent) in ["line 1: ", "line 2: "].into_iter().zip(sent) {
        let at = err.find(line).unwrap_or_else(|| panic!("{line} in {err}"));
        let key = uuid_after(&err[at..], "\"idempotency_key\": \"");
        assert_eq!(key, weir::EventId(sent).to_string(), "{err}");
    }
    Ok(())
}
