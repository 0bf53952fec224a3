//! A second `weir serve` on a data directory a daemon serves, with the same
//! socket, is refused for the data directory's lock (naming the daemon's
//! pid), not for its socket, whose advice (another --socket) leads only to
//! the lock; it changes nothing in the directory and the first daemon
//! keeps serving.

use anyhow::{Context, Result, bail, ensure};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_tests::{Daemon, SMALL_STORE, Setup, temp_root, weir_bin};

/// Every file in `dir` with its contents (`LOCK`'s pid, `socket`'s path),
/// sorted by name.
fn listing(dir: &Path) -> Result<Vec<(String, Option<String>)>> {
    let mut v = std::fs::read_dir(dir)?
        .map(|e| {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let text = ["LOCK", "socket"]
                .contains(&name.as_str())
                .then(|| std::fs::read_to_string(e.path()))
                .transpose()?;
            Ok((name, text))
        })
        .collect::<Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}

#[test]
fn a_second_daemon_on_the_same_dir_is_refused_for_its_lock() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let d = Daemon::start(&setup)?;
    let before = listing(&d.data_dir)?;

    let err = root.path().join("second.err");
    let mut second = Command::new(weir_bin()?)
        .arg("serve")
        .arg("--data-dir")
        .arg(&setup.data_dir)
        .arg("--socket")
        .arg(&setup.socket)
        .arg("--config")
        .arg(root.path().join("weir-test.toml"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = second.try_wait()? {
            break st;
        }
        if Instant::now() > until {
            let _ = second.kill();
            let _ = second.wait();
            bail!("the second daemon did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&err)?;
    ensure!(!status.success(), "{status}: {text}");
    let want = format!(
        "{} is locked by another weir daemon (pid {}): only one writer may own a data directory",
        d.data_dir.join("LOCK").display(),
        d.pid()
    );
    ensure!(text.contains(&want), "{text}");
    ensure!(!text.contains("choose another --socket"), "{text}");

    ensure!(
        listing(&d.data_dir)? == before,
        "the second daemon changed the data dir"
    );
    d.client()?
        .ping()
        .context("the first daemon stopped serving")?;
    Ok(())
}
