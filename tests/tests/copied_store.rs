//! A copy of a data directory names its original's socket in its `socket`
//! file: a client that finds its daemon through the copy (`connect_dir`, the
//! CLI) refuses the original's daemon, at its first connect and at a
//! reconnect, and writes nothing anywhere; `weir stat` says no daemon runs
//! for the copy.

use anyhow::{Result, ensure};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use weir::{Client, ClientError, ClientOptions, Coordinate, EventKind, Reader};
use weir_tests::{Daemon, SMALL_STORE, Setup, copy_dir as copy, temp_root, weir_bin};

fn visible(dir: &Path) -> Result<u64> {
    Ok(Reader::open(dir)?.visible())
}

fn weir(args: &[&str], dir: &Path) -> Result<Output> {
    Ok(Command::new(weir_bin()?)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("WEIR_DATA_DIR")
        .output()?)
}

#[test]
fn a_copy_of_a_live_store_does_not_reach_its_daemon() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let d = Daemon::start(&setup)?;
    let at = Coordinate::new("user:1", "tenant:a")?;
    d.client()?.append(&at, EventKind(0x1001), b"before")?;
    let copy_dir = root.path().join("copy");
    copy(&setup.data_dir, &copy_dir)?;
    let before = visible(&setup.data_dir)?;

    match Client::connect_dir(&copy_dir) {
        Err(ClientError::OtherDataDir {
            data_dir,
            served_dir,
            ..
        }) => {
            ensure!(data_dir == copy_dir, "names {}", data_dir.display());
            ensure!(
                served_dir == setup.data_dir.canonicalize()?,
                "names {} as the daemon's",
                served_dir.display()
            );
        }
        Err(e) => anyhow::bail!("connect_dir(copy) failed otherwise: {e}"),
        Ok(_) => anyhow::bail!("connect_dir(copy) reached the original's daemon"),
    }
    // The original's own directory still reaches it.
    Client::connect_dir(&setup.data_dir)?.ping()?;

    let out = weir(
        &[
            "append",
            "--entity",
            "user:1",
            "--scope",
            "tenant:a",
            "--kind",
            "0x1001",
            "--payload-json",
            "{\"to\":\"copy\"}",
        ],
        &copy_dir,
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "append to the copy succeeded: {err}");
    ensure!(
        err.contains(&format!(
            "the daemon is not running for {}",
            copy_dir.display()
        )),
        "{err}"
    );
    ensure!(
        visible(&setup.data_dir)? == before,
        "the original's store changed"
    );

    let out = weir(&["stat", "--json"], &copy_dir)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["daemon_running"] == false, "stat says {v}");
    Ok(())
}

#[test]
fn a_reconnect_refuses_the_daemon_of_another_directory() -> Result<()> {
    let root = temp_root()?;
    let a = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&a)?;
    let at = Coordinate::new("user:1", "tenant:a")?;
    let mut client = Client::connect_dir_with(
        &a.data_dir,
        ClientOptions::default().retry_for(Duration::from_secs(5)),
    )?;
    client.append(&at, EventKind(0x1001), b"to a")?;
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))?;
    // Another store's daemon now serves the same socket path.
    let b = Setup {
        data_dir: root.path().join("b"),
        ..a.clone()
    };
    copy(&a.data_dir, &b.data_dir)?;
    let _b = Daemon::start(&b)?;
    let before = visible(&b.data_dir)?;
    let r = client.append(&at, EventKind(0x1001), b"meant for a");
    ensure!(
        matches!(r, Err(ClientError::OtherDataDir { .. })),
        "the reconnect gave {r:?}"
    );
    ensure!(visible(&b.data_dir)? == before, "b's store changed");
    Ok(())
}

#[test]
fn a_client_reaches_a_store_put_back_from_a_backup_at_its_path() -> Result<()> {
    // The directory a client was given is looked at again at each connect:
    // a backup put back at the same path is another directory (another
    // inode), served by its own daemon, which the client must reach
    // (found by the hunt on the day's changes: refused for good).
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    let at = Coordinate::new("user:1", "tenant:a")?;
    let mut client = Client::connect_dir_with(
        &setup.data_dir,
        ClientOptions::default().retry_for(Duration::from_secs(5)),
    )?;
    client.append(&at, EventKind(0x1001), b"first")?;
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))?;
    drop(d);
    let backup = root.path().join("backup");
    copy(&setup.data_dir, &backup)?;
    std::fs::rename(&setup.data_dir, root.path().join("data.old"))?;
    copy(&backup, &setup.data_dir)?;
    let _d = Daemon::start(&setup)?;
    let r = client.append(&at, EventKind(0x1001), b"second")?;
    ensure!(r.sequence == 1, "stored at {}", r.sequence);
    ensure!(
        visible(&setup.data_dir)? == 2,
        "the restored store has both"
    );
    Ok(())
}
