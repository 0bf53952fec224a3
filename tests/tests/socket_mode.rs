//! The socket the daemon binds has `socket-mode` from the moment its path
//! exists, even under umask 000: its mode is never changed after the name
//! appears, and no private bind directory is left behind.
//!
//! inotify reports a chmod of the path as IN_ATTRIB on its name in the
//! watched directory, queued by the syscall itself, so the check does not
//! depend on timing. It cannot see a chmod made through another name of the
//! same inode after the name appeared (the fix makes none).

use anyhow::{Result, ensure};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::unix::fs::PermissionsExt;
use weir_tests::{Daemon, SMALL_STORE, Setup, temp_root};

#[test]
fn the_socket_is_never_reachable_with_a_wider_mode() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE).with_umask(0);
    let watch = Inotify::init(InitFlags::IN_NONBLOCK)?;
    watch.add_watch(
        root.path(),
        AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ATTRIB,
    )?;
    let d = Daemon::start(&setup)?;
    let name = d.socket.file_name().map(ToOwned::to_owned);
    // The daemon answered a ping, so its bind and chmod are long queued.
    let mut seen = Vec::new();
    while let Ok(events) = watch.read_events() {
        seen.extend(
            events
                .into_iter()
                .filter(|e| e.name == name)
                .map(|e| e.mask),
        );
    }
    ensure!(!seen.is_empty(), "no event for the socket's name");
    ensure!(
        seen.iter().all(|m| !m.contains(AddWatchFlags::IN_ATTRIB)),
        "the socket's mode changed after its path appeared: {seen:?}"
    );
    let mode = std::fs::metadata(&d.socket)?.permissions().mode() & 0o7777;
    ensure!(mode == 0o660, "socket mode {mode:o}");
    let left: Vec<_> = std::fs::read_dir(root.path())?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".wb"))
        .collect();
    ensure!(left.is_empty(), "left behind: {left:?}");
    d.client()?.ping()?;
    Ok(())
}
