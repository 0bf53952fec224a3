//! `Client::sync` does not answer `Ok` for appends it cannot make durable:
//! events acknowledged as not durable by a daemon instance that crashed
//! before syncing them are reported as possibly lost when the sync reaches
//! the restarted daemon.

use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::time::Duration;
use weir::{ClientError, ClientOptions, Coordinate, EventKind, Reader};
use weir_tests::{Daemon, Setup, temp_root};

/// A daemon started with `setup`, and a client of it that retries a
/// connection for up to 10 s (across the restarts these tests make).
fn daemon_and_client(setup: &Setup) -> Result<(Daemon, weir::Client)> {
    let d = Daemon::start(setup)?;
    let o = ClientOptions::default()
        .retry_for(Duration::from_secs(10))
        .io_timeout(Duration::from_secs(5));
    let c = weir::Client::connect_with(&d.socket, o)?;
    Ok((d, c))
}

/// The offset of the last non-zero byte of `p`.
fn last_nonzero(p: &Path) -> Result<usize> {
    let b = std::fs::read(p)?;
    b.iter().rposition(|&x| x != 0).context("an empty segment")
}

#[test]
fn a_sync_on_a_restarted_daemon_reports_the_unsynced_appends_it_lost() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path())
        .with("sync = \"never\"\nsegment-max-bytes = 4194304\nmax-payload-bytes = 1048576\nmax-batch-bytes = 1050624");
    let (mut d, mut c) = daemon_and_client(&setup)?;
    let at = Coordinate::new("pl", "s")?;
    c.append(&at, EventKind(0x1001), b"A")?;
    c.sync()?;
    let seg = std::fs::read_dir(d.data_dir.join("segments"))?
        .next()
        .context("no segment")??
        .path();
    let end_a = last_nonzero(&seg)?;
    let b = c.append(&at, EventKind(0x1001), b"B")?;
    ensure!(!b.durable, "under sync = never a receipt is not durable");
    d.kill9()?;
    // A power loss: B's frame, never synced, did not reach the disk.
    let mut bytes = std::fs::read(&seg)?;
    let end_b = last_nonzero(&seg)?;
    ensure!(end_b > end_a, "B's frame is not after A's");
    bytes[(end_a + 1).div_ceil(8) * 8..=end_b].fill(0);
    std::fs::write(&seg, &bytes)?;
    let d = Daemon::start(&setup)?;
    ensure!(
        Reader::open(&d.data_dir)?.stream("pl")?.len() == 1,
        "B survived"
    );
    // The same client reconnects: its sync must not say B is durable.
    let r = c.sync();
    ensure!(
        matches!(
            r,
            Err(ClientError::NotSynced { events: 1, highest_sequence, .. })
                if highest_sequence == b.sequence
        ),
        "{r:?}"
    );
    // Reported once; what is appended now is synced as usual.
    c.append(&at, EventKind(0x1001), b"C")?;
    ensure!(c.sync().is_ok());
    Ok(())
}

/// After a clean stop (which syncs everything) the same sync answers `Ok`:
/// the new daemon's hello lists its start at a `visible` above B.
#[test]
fn a_sync_after_a_clean_restart_finds_the_unsynced_appends_kept() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with("sync = \"never\"");
    let (mut d, mut c) = daemon_and_client(&setup)?;
    let at = Coordinate::new("pl", "s")?;
    let b = c.append(&at, EventKind(0x1001), b"B")?;
    ensure!(!b.durable, "under sync = never a receipt is not durable");
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    drop(d);
    let d = Daemon::start(&setup)?;
    let r = c.sync();
    ensure!(r.is_ok(), "{r:?}");
    ensure!(Reader::open(&d.data_dir)?.stream("pl")?.len() == 1);
    Ok(())
}
