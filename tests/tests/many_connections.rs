//! The daemon serves at least 1,000 concurrent connections: all of them
//! are held open at once, each completes a round trip, and appends through
//! a spread of them land in order.
use anyhow::{Result, ensure};
use weir::{Client, Coordinate, EventKind};
use weir_tests::{Daemon, Setup, temp_root};

#[test]
fn a_thousand_connections_at_once() -> Result<()> {
    // Room for 1,000 sockets in this process (the daemon raises its own limit).
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    if soft < 2048 {
        nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            hard.min(4096),
            hard,
        )?;
    }
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()).with("sync = \"never\""))?;
    let mut clients: Vec<Client> = (0..1000)
        .map(|_| Client::connect(&d.socket))
        .collect::<Result<_, _>>()?;
    for c in &mut clients {
        c.ping()?;
    }
    let stats = clients[0].stats()?;
    ensure!(
        stats.connections >= 1000,
        "the daemon counts {} connections",
        stats.connections
    );
    let at = Coordinate::new("conn:test", "t")?;
    let mut last = None;
    for (i, c) in clients.iter_mut().enumerate().step_by(37) {
        let r = c.append(&at, EventKind(0x1001), &(i as u32).to_le_bytes())?;
        ensure!(
            last.is_none_or(|l| r.sequence > l),
            "sequences must increase"
        );
        last = Some(r.sequence);
    }
    drop(clients);
    Ok(())
}
