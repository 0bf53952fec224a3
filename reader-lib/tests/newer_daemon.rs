//! Proves that `weir::Client` works with a daemon newer than itself: a
//! refusal carrying an error code this build does not know reaches the
//! caller as `ClientError::Server` with the daemon's sentence and fields,
//! not as a response that does not decode.

mod fake;

use fake::{Res, fake, frame, read_one, server_hello};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use weir::{Client, ClientError, ClientOptions, Coordinate, EventKind};
use weir_protocol::wire::{ErrorCode, HelloReply, Request, UNKNOWN_CODE_FIELD, decode};

/// Writes `body` as one frame.
fn write_one(s: &mut UnixStream, body: &[u8]) -> std::io::Result<()> {
    s.write_all(&(body.len() as u32).to_le_bytes())?;
    s.write_all(body)
}

fn opts() -> ClientOptions {
    ClientOptions::default()
        .io_timeout(Duration::from_secs(5))
        .retry_for(Duration::from_millis(300))
}

#[test]
fn a_refusal_with_an_unknown_code_keeps_the_daemons_sentence() -> Res {
    let dir = tempfile::tempdir()?;
    let path = fake(&dir, |s| {
        s.write_all(&frame(&HelloReply::Ok(server_hello()))?)?;
        let req: Request = decode(&read_one(s)?).map_err(std::io::Error::other)?;
        // [id, {"Err": [code, message, fields]}] with a code added after
        // this build.
        let fields = BTreeMap::from([("index", "0"), ("entity", "user:1")]);
        let err = ("EntityFrozen", "user:1 is frozen; thaw it first", fields);
        let body = rmp_serde::to_vec(&(req.id, BTreeMap::from([("Err", err)])))
            .map_err(std::io::Error::other)?;
        write_one(s, &body)?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    })?;
    let mut c = Client::connect_with(&path, opts())?;
    let at = Coordinate::new("user:1", "t")?;
    let err = c.append(&at, EventKind(0x1001), b"x").unwrap_err();
    let ClientError::Server(e) = &err else {
        return Err(format!("not the daemon's refusal: {err}").into());
    };
    assert_eq!(err.code(), Some(ErrorCode::Unknown));
    assert_eq!(e.message, "user:1 is frozen; thaw it first");
    assert_eq!(e.fields["entity"], "user:1");
    assert_eq!(e.fields[UNKNOWN_CODE_FIELD], "EntityFrozen");
    assert!(
        err.to_string()
            .ends_with("EntityFrozen: user:1 is frozen; thaw it first"),
        "{err}"
    );
    Ok(())
}
