//! A transaction replayed after a reconnect while the daemon's staging room
//! (`max-staged-bytes`) is taken by another transaction is refused `Busy`
//! for now: a retryable `Server` error, not `StagedEventRefused` (which says
//! a staged event itself is refused and is not retryable). Once the other
//! transaction ends, the same call replays and goes on.

use anyhow::{Result, ensure};
use weir::{ClientError, Coordinate, ErrorCode, EventKind, Reader};
use weir_tests::{Daemon, Setup, stop_cleanly, temp_root};

#[test]
fn a_replay_refused_for_staging_room_is_retryable_and_goes_through_later() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path())
        .with("max-payload-bytes = 8192")
        .with("max-batch-bytes = 32768")
        .with("max-staged-bytes = 32768")
        .with("max-batch-events = 16")
        .with("max-frame-bytes = 65536");
    let mut d = Daemon::start(&setup)?;
    let mut a = d.client()?;
    let at = Coordinate::new("a", "s")?;
    let mut txn = a.transaction();
    txn.append(&at, EventKind(0x1001), &[1; 8000])?;
    // A restart: the daemon's transaction is gone. The client's next call
    // finds the connection broken and stages its event locally; the call
    // after replays everything on a new connection.
    stop_cleanly(&mut d)?;
    let d = Daemon::start(&setup)?;
    txn.append(&at, EventKind(0x1001), &[2; 8000])?;
    let mut b = d.client()?;
    let mut other = b.transaction();
    for i in 0..3u8 {
        other.append(&Coordinate::new("b", "s")?, EventKind(0x1001), &[i; 8000])?;
    }
    let err = txn
        .append(&at, EventKind(0x1001), &[3; 8000])
        .expect_err("the replay found room for 16 KiB more in 32 KiB holding 24 KiB");
    ensure!(
        matches!(&err, ClientError::Server(e) if e.code == ErrorCode::Busy),
        "{err:?}"
    );
    ensure!(err.is_retryable(), "{err}");
    other.cancel()?;
    txn.append(&at, EventKind(0x1001), &[3; 8000])?;
    let receipts = txn.commit()?;
    ensure!(receipts.len() == 3, "{receipts:?}");
    let stored: Vec<u8> = Reader::open(&d.data_dir)?
        .stream("a")?
        .iter()
        .map(|e| e.payload().map(|p| p[0]))
        .collect::<Result<_, _>>()?;
    ensure!(stored == [1, 2, 3], "{stored:?}");
    Ok(())
}
