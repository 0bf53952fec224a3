//! The listening socket: inherited from systemd, or bound here (replacing a
//! stale socket file only when nothing answers on it), its mode set, and its
//! path recorded in `<data_dir>/socket` for discovery.

use super::ServeError;
use crate::config::Config;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// File in the data directory that names the socket.
pub const SOCKET_FILE: &str = "socket";

/// A listener and what to clean up when it closes.
#[derive(Debug)]
pub(super) struct Listening {
    pub(super) listener: UnixListener,
    /// The socket path clients connect to.
    pub(super) path: PathBuf,
    /// Bound by us (so removed on stop); false under socket activation.
    pub(super) owned: bool,
}

/// Adopts systemd's socket (taken by [`super::activation::inherited_listener`]
/// before anything else ran) or binds `config.socket_path()`.
pub(super) fn open(
    config: &Config,
    inherited: Option<(UnixListener, PathBuf)>,
) -> Result<Listening, ServeError> {
    if let Some((listener, path)) = inherited {
        tracing::info!(socket = %path.display(), "using the socket passed by systemd");
        return Ok(Listening {
            listener,
            path,
            owned: false,
        });
    }
    let path = config.socket_path();
    let bind_err = |source| ServeError::Bind {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::modes::create_dir_all(parent).map_err(bind_err)?;
    }
    remove_stale(&path)?;
    let listener = UnixListener::bind(&path).map_err(bind_err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(config.socket_mode))
        .map_err(bind_err)?;
    Ok(Listening {
        listener,
        path,
        owned: true,
    })
}

/// Removes a socket file nobody listens on; refuses a live one or a file
/// that is not a socket.
fn remove_stale(path: &Path) -> Result<(), ServeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServeError::Bind {
                path: path.into(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket { path: path.into() });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServeError::SocketInUse { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing a stale socket file");
            std::fs::remove_file(path).map_err(|source| ServeError::Bind {
                path: path.into(),
                source,
            })
        }
        Err(source) => Err(ServeError::Bind {
            path: path.into(),
            source,
        }),
    }
}

/// Writes `<data_dir>/socket` atomically: the socket path and a newline.
pub(super) fn record_path(data_dir: &Path, socket: &Path) -> Result<(), ServeError> {
    let target = data_dir.join(SOCKET_FILE);
    let tmp = data_dir.join("socket.tmp");
    let absolute = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
    let write = || -> io::Result<()> {
        let mut f = crate::modes::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(absolute.as_os_str().as_encoded_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &target)
    };
    write().map_err(|source| ServeError::Io {
        path: target.clone(),
        source,
    })
}

/// Raises the soft open-file limit to the hard one: every connection holds
/// a descriptor. Returns the limit in force.
pub(super) fn raise_nofile_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_socket_is_replaced_but_a_live_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            remove_stale(&path),
            Err(ServeError::SocketInUse { .. })
        ));
        drop(live);
        remove_stale(&path).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(
            remove_stale(&path),
            Err(ServeError::NotASocket { .. })
        ));
        assert!(path.exists());
    }
}
