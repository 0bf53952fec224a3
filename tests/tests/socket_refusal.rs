//! A socket path the bind would refuse (not a socket, in use by a live
//! daemon, under a regular file) is refused before the store is opened: no
//! new store is created, and a crashed one is not restored.
use anyhow::{Result, bail, ensure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_tests::{Daemon, Setup, temp_root, weir_bin};

/// Runs `weir serve`, which must exit non-zero; returns its stderr.
fn refused(data_dir: &Path, socket: &Path) -> Result<String> {
    let mut child = Command::new(weir_bin()?)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--socket")
        .arg(socket)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let until = Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            bail!("weir serve --socket {} did not exit", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(!out.status.success(), "the start succeeded: {err}");
    Ok(err)
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                all.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    Ok(all)
}

#[test]
fn a_socket_bind_would_refuse_changes_no_store() -> Result<()> {
    let root = temp_root()?;
    let file = root.path().join("notasocket");
    std::fs::write(&file, b"data")?;
    let live = Daemon::start(&Setup::in_dir(root.path()))?;

    // A new store is not created.
    let new = root.path().join("new");
    for (socket, says) in [
        (file.clone(), "is not a socket"),
        (live.socket.clone(), "in use by a running process"),
        (file.join("weir.sock"), "not a directory"),
    ] {
        let err = refused(&new, &socket)?;
        ensure!(
            err.to_lowercase().contains(says),
            "{}: {err}",
            socket.display()
        );
        ensure!(
            !new.exists(),
            "{} created the store: {err}",
            socket.display()
        );
    }

    // A crashed store is neither restored nor changed.
    let crashed = root.path().join("crashed");
    let mut d = Daemon::start(&Setup {
        data_dir: crashed.clone(),
        socket: root.path().join("c.sock"),
        ..Setup::in_dir(root.path())
    })?;
    let at = weir::Coordinate::new("user:1", "s")?;
    d.client()?.append(&at, weir::EventKind(0x1001), b"{}")?;
    d.kill9()?;
    let before = snapshot(&crashed)?;
    for socket in [&file, &live.socket] {
        let err = refused(&crashed, socket)?;
        ensure!(
            snapshot(&crashed)? == before,
            "the refused start changed the store: {err}"
        );
    }
    Ok(())
}
