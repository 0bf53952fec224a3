//! Under umask 000 the daemon creates no directory wider than 0755 and no
//! file wider than 0644 in its store, and the next start under the same
//! umask serves from the store the first one made.

use anyhow::{Result, ensure};
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir::{Coordinate, EventKind};
use weir_tests::{Daemon, SMALL_STORE, Setup, temp_root};

/// Every path under `dir` (and `dir`) whose mode lets group or others
/// write, with its mode in octal.
fn writable_by_others(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            found.push((p.clone(), format!("{mode:o}")));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p)? {
                todo.push(e?.path());
            }
        }
    }
    Ok(found)
}

#[test]
fn umask_000_creates_nothing_others_may_write_and_the_store_restarts() -> Result<()> {
    let root = temp_root()?;
    // The data directory does not exist yet: the daemon creates it too.
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE).with_umask(0);
    let mut d = Daemon::start(&setup)?;
    let mut c = d.client()?;
    let at = Coordinate::new("user:1", "tenant:a")?;
    for i in 0..10u8 {
        c.append(&at, EventKind(0x1001), &[i])?;
    }
    c.sync()?;
    let running = writable_by_others(&setup.data_dir)?;
    ensure!(running.is_empty(), "while serving: {running:?}");
    let status = d.signal_and_wait(Signal::SIGTERM, Duration::from_secs(15))?;
    ensure!(status.code() == Some(0), "{status}:\n{}", d.log_text());
    let stopped = writable_by_others(&setup.data_dir)?;
    ensure!(stopped.is_empty(), "after the stop: {stopped:?}");

    let again = Daemon::start(&setup)?;
    let visible = again.client()?.stats()?.visible;
    ensure!(visible == 10, "{visible} events visible after the restart");
    Ok(())
}
