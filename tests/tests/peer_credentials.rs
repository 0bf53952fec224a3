//! Appends are allowed only to the daemon's uid/gid and the allow-lists
//! (a supplementary group counts as well as the primary gid); other peers
//! may still ping. Needs root to run a client as another user
//! (`setpriv`); without root the test says so and passes vacuously.

use anyhow::{Context, Result, ensure};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use weir_tests::{Daemon, Setup, temp_root};

const BIN: &str = env!("CARGO_BIN_EXE_weir-test-client");
const NOBODY: u32 = 65534;

/// Runs the helper as uid/gid 65534 and returns what it printed.
fn as_nobody(bin: &std::path::Path, socket: &std::path::Path) -> Result<String> {
    as_nobody_in(bin, socket, None)
}

/// Runs the helper's `mode` as uid/gid 65534 and returns what it printed.
fn as_nobody_run(bin: &std::path::Path, socket: &std::path::Path, mode: &str) -> Result<String> {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(bin)
        .arg(mode)
        .arg(socket)
        .output()
        .context("setpriv")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Runs the helper as uid/gid 65534 with `group` as its only supplementary
/// group (none if `None`) and returns what it printed.
fn as_nobody_in(
    bin: &std::path::Path,
    socket: &std::path::Path,
    group: Option<u32>,
) -> Result<String> {
    let groups = match group {
        Some(g) => format!("--groups={g}"),
        None => "--clear-groups".to_owned(),
    };
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg(groups)
        .arg(bin)
        .arg("try-append")
        .arg(socket)
        .output()
        .context("setpriv")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn start(root: &std::path::Path, toml: &str) -> Result<Daemon> {
    let d = Daemon::start(&Setup::in_dir(root).with(toml))?;
    // Socket mode stays 0660 (o+w is refused by the daemon): hand the
    // socket's group to nobody so that the file permissions let it connect,
    // leaving the decision to SO_PEERCRED.
    nix::unistd::chown(&d.socket, None, Some(nix::unistd::Gid::from_raw(NOBODY)))?;
    Ok(d)
}

#[test]
fn a_uid_that_is_not_allowed_is_refused() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client under another uid");
        return Ok(());
    }
    let root = temp_root()?;
    // The helper must be reachable by nobody: copy it into the 0755 root.
    let bin = root.path().join("client");
    std::fs::copy(BIN, &bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;

    let mut d = start(root.path(), "")?;
    let said = as_nobody(&bin, &d.socket)?;
    ensure!(said.contains("ping ok"), "nobody could not ping: {said}");
    ensure!(
        said.contains("append err PermissionDenied"),
        "nobody was not refused: {said}"
    );
    // A peer that may not append cannot make the daemon hold a large frame:
    // the head of a 1 MiB frame is refused at once, before its body.
    let said = as_nobody_run(&bin, &d.socket, "big-frame")?;
    ensure!(
        said.contains("big frame refused PermissionDenied"),
        "a large frame of a peer that may not append was not refused at its head: {said}"
    );
    // The daemon's own uid (root here) may append.
    let mut own = d.client()?;
    own.ping()?;
    let at = weir::Coordinate::new("own", "s")?;
    own.append(&at, weir::EventKind(0x1001), b"x")?;
    let rejected = own.stats()?.rejected;
    ensure!(rejected.get("PermissionDenied").copied().unwrap_or(0) >= 1);
    drop(own);
    d.signal_and_wait(
        nix::sys::signal::Signal::SIGTERM,
        std::time::Duration::from_secs(10),
    )?;

    // With nobody on the allow-list, the same client may append.
    let d = start(root.path(), &format!("allow-uids = [{NOBODY}]"))?;
    let said = as_nobody(&bin, &d.socket)?;
    ensure!(
        said.contains("append ok"),
        "allowed uid was refused: {said}"
    );
    Ok(())
}

/// `usermod -aG weir myservice`: the daemon's group, or a listed one, as a
/// supplementary group (not the primary gid) lets a peer append.
#[test]
fn a_supplementary_group_that_is_allowed_may_append() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client under another uid");
        return Ok(());
    }
    let root = temp_root()?;
    let bin = root.path().join("client");
    std::fs::copy(BIN, &bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;

    let mut d = start(root.path(), "")?;
    let own_gid = nix::unistd::getegid().as_raw();
    let said = as_nobody_in(&bin, &d.socket, Some(own_gid))?;
    ensure!(
        said.contains("append ok"),
        "a peer in the daemon's group (supplementary) was refused: {said}"
    );
    let said = as_nobody_in(&bin, &d.socket, Some(4242))?;
    ensure!(
        said.contains("append err PermissionDenied"),
        "a peer in an unlisted group was not refused: {said}"
    );
    d.signal_and_wait(
        nix::sys::signal::Signal::SIGTERM,
        std::time::Duration::from_secs(10),
    )?;

    let d = start(root.path(), "allow-gids = [4242]")?;
    let said = as_nobody_in(&bin, &d.socket, Some(4242))?;
    ensure!(
        said.contains("append ok"),
        "a peer in an allowed group (supplementary) was refused: {said}"
    );
    Ok(())
}
