//! `Client::connect_dir` tells a data directory whose daemon is not running
//! (stopped cleanly: `NotRunning`; killed: `Disconnected`, naming its socket
//! once) from a directory that does not exist (`Io`), and says which of
//! them retrying later can fix.

use anyhow::{Result, ensure};
use std::time::Duration;
use weir::{Client, ClientError, ClientOptions};
use weir_tests::{Daemon, SMALL_STORE, Setup, temp_root};

fn connect(dir: &std::path::Path) -> Result<ClientError> {
    let opts = ClientOptions::default().retry_for(Duration::from_millis(200));
    match Client::connect_dir_with(dir, opts) {
        Ok(_) => anyhow::bail!("connected to {}", dir.display()),
        Err(e) => Ok(e),
    }
}

#[test]
fn a_cleanly_stopped_daemon_is_not_running_and_a_missing_dir_is_an_io_error() -> Result<()> {
    let root = temp_root()?;
    let mut d = Daemon::start(&Setup::in_dir(root.path()).with(SMALL_STORE))?;
    let dir = d.data_dir.clone();
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;

    let e = connect(&dir)?;
    ensure!(
        matches!(&e, ClientError::NotRunning { data_dir } if *data_dir == dir),
        "{e:?}"
    );
    ensure!(
        e.to_string()
            .starts_with(&format!("the daemon is not running for {}", dir.display())),
        "{e}"
    );
    ensure!(e.is_retryable(), "{e}");

    let missing = root.path().join("no-such-dir");
    let e = connect(&missing)?;
    ensure!(
        matches!(&e, ClientError::Io { path, source }
            if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    ensure!(!e.is_retryable(), "{e}");
    Ok(())
}

#[test]
fn a_killed_daemon_is_named_by_its_socket_once() -> Result<()> {
    let root = temp_root()?;
    let mut d = Daemon::start(&Setup::in_dir(root.path()).with(SMALL_STORE))?;
    let (dir, socket) = (d.data_dir.clone(), d.socket.clone());
    d.kill9()?;

    // Its `socket` file and socket are left: nothing listens on it.
    let e = connect(&dir)?;
    ensure!(
        matches!(&e, ClientError::Disconnected { waited, .. } if waited.is_zero()),
        "{e:?}"
    );
    let text = e.to_string();
    let socket = socket.display().to_string();
    ensure!(text.matches(&socket).count() == 1, "{text}");
    ensure!(
        text.contains("no daemon is listening (not running, or still starting"),
        "{text}"
    );
    ensure!(e.is_retryable(), "{e}");
    Ok(())
}
