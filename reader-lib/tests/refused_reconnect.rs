//! A reconnect the daemon refuses for now (`Busy`) is tried again after its
//! `retry_after_ms` within `retry_for`; when the budget ends, the call
//! reports the daemon's refusal (`ClientError::Refused` with its code and
//! sentence, and the keys of what may be stored), not a daemon gone.

mod fake;

use fake::{Res, frame, read_one, server_hello};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::Duration;
use weir::{AppendRequest, Client, ClientError, ClientOptions, ErrorCode};
use weir_protocol::wire::{HelloReply, WireError};

#[test]
fn a_refused_reconnect_is_retried_then_reported_with_the_refusal() -> Res {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("fake.sock");
    let l = UnixListener::bind(&path)?;
    let why = "the daemon serves max-connections = 2 already";
    std::thread::spawn(move || -> std::io::Result<()> {
        // The first connection takes the request and breaks.
        let (mut s, _) = l.accept()?;
        read_one(&mut s)?;
        s.write_all(&frame(&HelloReply::Ok(server_hello()))?)?;
        read_one(&mut s)?;
        drop(s);
        // Every later one is refused, as a daemon at its limit does.
        let busy = frame(&HelloReply::Err(
            WireError::new(ErrorCode::Busy, why).with("retry_after_ms", 20),
        ))?;
        for s in l.incoming() {
            let _ = s?.write_all(&busy);
        }
        Ok(())
    });
    let opts = ClientOptions::default()
        .io_timeout(Duration::from_secs(5))
        .retry_for(Duration::from_millis(500));
    let mut c = Client::connect_with(&path, opts)?;
    let err = c
        .append_with(AppendRequest {
            entity: "user:1".into(),
            scope: "t".into(),
            kind: 0x1001,
            idempotency_key: Some(42),
            ..AppendRequest::default()
        })
        .expect_err("every reconnect is refused");
    assert!(matches!(err, ClientError::Refused { .. }), "{err:?}");
    assert_eq!(err.code(), Some(ErrorCode::Busy));
    assert_eq!(err.wire().map(|e| e.message.as_str()), Some(why));
    assert_eq!(err.unresolved_keys(), vec![42]);
    Ok(())
}
