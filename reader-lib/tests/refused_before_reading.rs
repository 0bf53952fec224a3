//! A daemon that refuses a connection writes why and closes without reading
//! what the client sent: the client reports that refusal, not the broken
//! pipe its own write then meets. The fake daemon here closes while the
//! client's write is under way (a hello or request far larger than the
//! socket's buffer, so that the write is still blocked when the close
//! comes, whichever side runs first): the write fails every time.

mod fake;

use fake::{Res, frame, read_one, server_hello};
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;
use weir::{Client, ClientError, ClientOptions, Coordinate, EventKind};
use weir_protocol::wire::{ErrorCode, HelloReply, Response, ServerHello, WireError};

/// More than a Unix socket buffers (about 200 KiB by default).
const LARGE: usize = 4 << 20;

/// A fake daemon at `<dir>/fake.sock`: for one connection, `before` runs
/// first (it may read), then `refusal` is written and the connection closed
/// without reading anything more.
fn fake(
    dir: &tempfile::TempDir,
    before: impl FnOnce(&mut UnixStream) -> std::io::Result<()> + Send + 'static,
    refusal: Vec<u8>,
) -> Res<(PathBuf, std::thread::JoinHandle<std::io::Result<()>>)> {
    let path = dir.path().join("fake.sock");
    let l = UnixListener::bind(&path)?;
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept()?;
        before(&mut s)?;
        s.write_all(&refusal)?;
        drop(s);
        Ok(())
    });
    Ok((path, t))
}

fn opts() -> ClientOptions {
    ClientOptions::default()
        .io_timeout(Duration::from_secs(5))
        .retry_for(Duration::ZERO)
}

#[test]
fn a_hello_refused_before_it_was_read_reports_the_refusal() -> Res {
    let dir = tempfile::tempdir()?;
    let why = "client weir-test is not allowed here";
    let refusal = frame(&HelloReply::Err(WireError::new(
        ErrorCode::PermissionDenied,
        why,
    )))?;
    let (path, daemon) = fake(&dir, |_| Ok(()), refusal)?;
    let err = Client::connect_with(&path, opts().name("x".repeat(LARGE)))
        .expect_err("the fake daemon refuses");
    daemon.join().expect("the fake daemon")?;
    assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
    assert!(err.to_string().contains(why), "{err}");
    Ok(())
}

#[test]
fn a_request_refused_before_it_was_read_reports_the_refusal() -> Res {
    let dir = tempfile::tempdir()?;
    let why = "the connection was idle too long";
    let refusal = frame(&Response {
        id: 0,
        result: Err(WireError::new(ErrorCode::PermissionDenied, why)),
    })?;
    let before = |s: &mut UnixStream| {
        // Read the hello, answer it, and refuse what comes next unread.
        read_one(s)?;
        s.write_all(&frame(&HelloReply::Ok(ServerHello {
            max_frame: 64 << 20,
            max_payload: 64 << 20,
            max_batch_bytes: 64 << 20,
            ..server_hello()
        }))?)
    };
    let (path, daemon) = fake(&dir, before, refusal)?;
    let mut c = Client::connect_with(&path, opts())?;
    let at = Coordinate::new("user:1", "t")?;
    let err = c
        .append(&at, EventKind(0x1001), &vec![7; LARGE])
        .expect_err("the fake daemon refuses");
    daemon.join().expect("the fake daemon")?;
    let ClientError::Server(e) = &err else {
        return Err(format!("not the daemon's refusal: {err}").into());
    };
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    assert_eq!(e.message, why);
    Ok(())
}
