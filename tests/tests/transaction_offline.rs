//! A transaction staging while the daemon is down: an event the daemon
//! would refuse is refused at once (not at the replay, where it blocked
//! every later call with that event's error), and a replay the restarted
//! daemon refuses names the staged event it concerns.

use anyhow::{Result, ensure};
use std::time::Duration;
use weir::{ClientError, ClientOptions, Coordinate, EventKind, Reader};
use weir_protocol::wire::ErrorCode;
use weir_tests::{Daemon, Setup, temp_root};

fn opts() -> ClientOptions {
    ClientOptions::default()
        .retry_for(Duration::from_secs(5))
        .io_timeout(Duration::from_secs(3))
}

#[test]
fn an_invalid_event_staged_while_the_daemon_is_down_is_refused_at_once() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path());
    let mut d = Daemon::start(&setup)?;
    let mut c = weir::Client::connect_with(&d.socket, opts())?;
    let at = Coordinate::new("inv", "s")?;
    let mut t = c.transaction();
    t.append(&at, EventKind(0x1001), b"ok0")?;
    d.kill9()?;
    let r = t.append(&at, EventKind(0x0001), b"bad");
    ensure!(
        matches!(&r, Err(e @ ClientError::InvalidEvent { index: 1, .. }) if e.code() == Some(ErrorCode::InvalidKind)),
        "{r:?}"
    );
    let r = t.append(&at, EventKind(0x1001), &vec![0; (16 << 20) + 1]);
    ensure!(
        matches!(&r, Err(e) if e.code() == Some(ErrorCode::PayloadTooLarge)),
        "{r:?}"
    );
    let zero = weir::AppendRequest {
        entity: "inv".into(),
        scope: "s".into(),
        kind: 0x1001,
        payload: b"zero".to_vec(),
        idempotency_key: Some(0),
        ..weir::AppendRequest::default()
    };
    let r = t.append_with(zero);
    ensure!(
        matches!(&r, Err(e @ ClientError::InvalidEvent { index: 1, .. }) if e.code() == Some(ErrorCode::InvalidEventId)),
        "{r:?}"
    );
    ensure!(t.len() == 1);
    // Valid events staged while down are kept and replayed.
    ensure!(t.append(&at, EventKind(0x1001), b"ok1")? == 2);
    let d = Daemon::start(&setup)?;
    ensure!(t.append(&at, EventKind(0x1001), b"ok2")? == 3);
    let receipts = t.commit()?;
    ensure!(receipts.len() == 3);
    ensure!(Reader::open(&d.data_dir)?.stream("inv")?.len() == 3);
    Ok(())
}

#[test]
fn a_refused_replay_names_the_staged_event() -> Result<()> {
    let root = temp_root()?;
    let mut d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut c = weir::Client::connect_with(&d.socket, opts())?;
    let at = Coordinate::new("rep", "s")?;
    let mut t = c.transaction();
    t.append(&at, EventKind(0x1001), b"small")?;
    d.kill9()?;
    // Within the limit the daemon announced, over the one it restarts with.
    t.append(&at, EventKind(0x1001), &[7; 8192])?;
    let _d = Daemon::start(&Setup::in_dir(root.path()).with("max-payload-bytes = 4096"))?;
    let r = t.append(&at, EventKind(0x1001), b"next");
    ensure!(
        matches!(&r, Err(e @ ClientError::StagedEventRefused { index: Some(1), .. }) if e.code() == Some(ErrorCode::PayloadTooLarge)),
        "{r:?}"
    );
    let text = r.unwrap_err().to_string();
    ensure!(text.contains("staged event 1"), "{text}");
    Ok(())
}
