//! SIGTERM with appends in flight: exit code 0, the socket file is gone,
//! and every acknowledged event is there after a restart. SIGHUP (the
//! terminal of a `weir serve &` closed) stops the daemon as cleanly.

use anyhow::{Result, ensure};
use nix::sys::signal::Signal;
use std::time::Duration;
use weir::{EventId, Reader};
use weir_tests::{Daemon, Setup, collect, hex, spawn_client, temp_root};

const BIN: &str = env!("CARGO_BIN_EXE_weir-test-client");

/// Sends `signal` and checks the stop was clean: exit code 0, the socket
/// and the discovery file removed.
fn stop_cleanly(d: &mut Daemon, signal: Signal) -> Result<()> {
    let status = d.signal_and_wait(signal, Duration::from_secs(15))?;
    ensure!(
        status.code() == Some(0),
        "exit status {status} after {signal}:\n{}",
        d.log_text()
    );
    ensure!(!d.socket.exists(), "the socket file is still there");
    ensure!(
        !d.data_dir.join("socket").exists(),
        "the discovery file is still there"
    );
    Ok(())
}

#[test]
fn sigterm_drains_and_keeps_every_acknowledged_event() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path());
    let mut d = Daemon::start(&setup)?;
    let sock = d.socket.to_string_lossy().into_owned();
    let clients: Vec<_> = (0..8)
        .map(|c| spawn_client(BIN, &["append", &sock, &format!("w{c}"), "100000", "300"]))
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_millis(400));
    stop_cleanly(&mut d, Signal::SIGTERM)?;

    let mut acked = Vec::new();
    for c in clients {
        let (_, lines) = collect(c)?;
        acked.extend(lines.into_iter().filter(|l| l.err.is_none()));
    }
    ensure!(
        acked.len() > 8,
        "too few appends before the stop: {}",
        acked.len()
    );
    let _again = Daemon::start(&setup)?;
    let reader = Reader::open(&setup.data_dir)?;
    for l in &acked {
        let id: u128 = l.id.as_deref().unwrap_or("0").parse()?;
        let e = reader.get(EventId(id))?;
        let e = e.ok_or_else(|| anyhow::anyhow!("acknowledged event {id} lost"))?;
        ensure!(Some(e.sequence()) == l.seq && Some(hex(&e.event_hash()?)) == l.hash);
    }
    Ok(())
}

#[test]
fn sighup_stops_cleanly() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path());
    let mut d = Daemon::start(&setup)?;
    let at = weir::Coordinate::new("user:1", "s")?;
    d.client()?.append(&at, weir::EventKind(0x1001), b"{}")?;
    stop_cleanly(&mut d, Signal::SIGHUP)?;
    let again = Daemon::start(&setup)?;
    let stats = again.client()?.stats()?;
    ensure!(
        stats.restore_path == "index-files" && stats.visible == 1,
        "the start after SIGHUP restored via {} ({} visible)",
        stats.restore_path,
        stats.visible
    );
    Ok(())
}
