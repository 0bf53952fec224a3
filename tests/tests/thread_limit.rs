//! A daemon that cannot start a connection's threads (its user's task limit,
//! `RLIMIT_NPROC`, here; systemd's `TasksMax=` in production) refuses the
//! connection `Busy` in its hello reply, and serves again once threads free
//! up. Before, a hello was answered Ok before the reply writer's thread was
//! started, and the client was then dropped without a word.

use anyhow::{Result, bail, ensure};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;
use weir_protocol::wire::{ErrorCode, HelloReply};
use weir_tests::{Daemon, Setup, temp_root, wait_for};

const NOBODY: u32 = 65534;

fn hello(socket: &std::path::Path) -> Result<(UnixStream, HelloReply)> {
    weir_tests::raw_hello(socket, "thread-limit")
}

/// Threads of every process whose real uid is `uid` (what RLIMIT_NPROC counts).
fn tasks_of(uid: u32) -> Result<usize> {
    let mut n = 0;
    for p in std::fs::read_dir("/proc")?.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(p.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if real == Some(uid) {
            n += std::fs::read_dir(p.path().join("task")).map_or(0, Iterator::count);
        }
    }
    Ok(n)
}

/// Waits until the count of `uid`'s threads holds still for 300 ms.
fn settled(uid: u32) -> Result<usize> {
    let mut last = tasks_of(uid)?;
    let mut same = 0;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(50));
        let now = tasks_of(uid)?;
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if same >= 6 {
            return Ok(now);
        }
    }
    bail!("the threads of uid {uid} did not settle")
}

#[test]
fn a_connection_without_threads_is_refused_busy_in_its_hello() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run the daemon as another user");
        return Ok(());
    }
    let root = temp_root()?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    nix::unistd::chown(
        root.path(),
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )?;
    let d = Daemon::start(&Setup::in_dir(root.path()).as_user(NOBODY, NOBODY))?;
    let idle = settled(NOBODY)?;
    // Room for exactly three more threads: one connection (two threads)
    // and the first thread of a second.
    let limit = idle + 3;
    // As the daemon's user: lowering a limit needs no privilege, and root
    // may lack CAP_SYS_RESOURCE (in a container).
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg("prlimit")
        .arg("--pid")
        .arg(d.pid().to_string())
        .arg(format!("--nproc={limit}:{limit}"))
        .output()?;
    ensure!(
        out.status.success(),
        "prlimit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (first, reply) = hello(&d.socket)?;
    ensure!(matches!(reply, HelloReply::Ok(_)), "{reply:?}");
    match hello(&d.socket)?.1 {
        HelloReply::Err(e) => {
            ensure!(e.code == ErrorCode::Busy, "{e}");
            ensure!(e.fields.contains_key("retry_after_ms"), "{e}");
        }
        HelloReply::Ok(_) => {
            bail!("a connection whose reply thread could not start was told Ok")
        }
    }
    ensure!(
        d.log_text().contains("cannot start connection threads"),
        "the refusal was not logged:\n{}",
        d.log_text()
    );

    // Once the first connection's threads are gone, a client is served.
    drop(first);
    wait_for("the first connection's threads to end", || {
        Ok(tasks_of(NOBODY)? <= idle)
    })?;
    let mut c = d.client()?;
    c.ping()?;
    Ok(())
}
