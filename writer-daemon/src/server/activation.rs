//! Socket activation: adopt the listening socket systemd passed as fd 3.
//! With `peer_groups`, the only `unsafe` of the server.
#![allow(unsafe_code)]

use nix::sys::socket::{SockType, getsockopt, sockopt};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// The inherited listener and its path, if `LISTEN_PID` names this process
/// and `LISTEN_FDS` is at least 1. The variables are unset so that children
/// do not inherit them. A socket that is not a listening AF_UNIX stream
/// socket bound to a path (TCP, abstract namespace) is refused here, before
/// the store is opened.
pub(super) fn inherited_listener() -> io::Result<Option<(UnixListener, PathBuf)>> {
    let fds: Vec<_> = sd_notify::listen_fds()?.collect();
    let Some(&fd) = fds.first() else {
        return Ok(None);
    };
    if fds.len() > 1 {
        tracing::warn!(
            count = fds.len(),
            "several sockets were passed; serving the first only"
        );
    }
    // SAFETY: `listen_fds` returned fd 3 only because LISTEN_PID equals our
    // pid, i.e. systemd passed fds 3.. to this very process. This runs
    // through `take_inherited`, which `weir serve` calls first thing (before
    // its logging and metrics listener open descriptors or start threads;
    // the `serve` of in-process users calls it before anything of its own),
    // so fd 3 is still the inherited descriptor and nothing else wraps or
    // closes it: the new `OwnedFd` is its sole owner. (Taking it later could
    // adopt a descriptor the process itself opened as fd 3, such as the
    // metrics listener or the LOCK file.)
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let ty = getsockopt(&owned, sockopt::SockType).map_err(io::Error::from)?;
    let listening = getsockopt(&owned, sockopt::AcceptConn).map_err(io::Error::from)?;
    if ty != SockType::Stream || !listening {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket passed by systemd (fd 3) is not a listening stream socket; use ListenStream= in weir.socket",
        ));
    }
    let listener = UnixListener::from(owned);
    // `local_addr` fails for a socket of another family.
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the socket passed by systemd (fd 3) is not a Unix socket with a path; \
                 use ListenStream=/path/to/weir.sock in weir.socket",
            )
        })?;
    Ok(Some((listener, path)))
}
