//! What binding the socket would refuse, checked before the store is opened
//! (a refused start then creates and restores nothing). Read-only: the
//! bind in `listen` still checks again and is what decides.

use super::ServeError;
use nix::unistd::{AccessFlags, access};
use std::io;
use std::path::Path;

/// Refuses a socket path that is not a socket, one a live process listens
/// on (as [`OpenError::Locked`](crate::error::OpenError::Locked) when
/// another daemon holds `data_dir`'s lock), or one whose directory cannot
/// be created or written. A stale socket
/// passes (the bind replaces it). A socket directly in `data_dir` (the
/// default) leaves its directory to the store's own checks, which say more.
pub(super) fn socket_path(path: &Path, data_dir: &Path) -> Result<(), ServeError> {
    let bind = |source| ServeError::Bind {
        path: path.into(),
        source,
    };
    // Not a socket, or a live one: refused as the bind would. A stale one
    // passes (the bind replaces it); a missing one (ENOTDIR: a parent is not
    // a directory) leaves the walk below to say which directory is wrong.
    // A live one whose listener is the daemon of `data_dir` (its LOCK is
    // held) is refused for that: another --socket would only meet the lock.
    match super::listen::stale_socket(path) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e @ ServeError::SocketInUse { .. }) => {
            crate::lock::DirLock::probe(data_dir)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    if path.parent() == Some(data_dir) {
        return Ok(());
    }
    // The nearest existing ancestor of the socket's directory must be a
    // directory we may write in (to bind there, or create what is missing).
    let parent = path.parent().unwrap_or(Path::new(""));
    for dir in parent.ancestors() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                return access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
                    bind(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("cannot create files in {}: {e}", dir.display()),
                    ))
                });
            }
            Ok(_) => {
                return Err(bind(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(bind(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", dir.display()),
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn what_bind_would_refuse_is_refused_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"data").unwrap();
        let data = dir.path().join("data");
        assert!(matches!(
            socket_path(&file, &data),
            Err(ServeError::NotASocket { .. })
        ));
        assert!(matches!(
            socket_path(&file.join("a/b.sock"), &data),
            Err(ServeError::Bind { .. })
        ));
        // The store reports a data directory that is a file.
        socket_path(&file.join("b.sock"), &file).unwrap();
        let live = dir.path().join("live.sock");
        let l = UnixListener::bind(&live).unwrap();
        assert!(matches!(
            socket_path(&live, &data),
            Err(ServeError::SocketInUse { .. })
        ));
        drop(l);
        // Stale: the bind replaces it.
        socket_path(&live, &data).unwrap();
        let fresh = dir.path().join("new/deeper/s.sock");
        socket_path(&fresh, &data).unwrap();
        assert!(!dir.path().join("new").exists());
        assert!(live.exists() && file.exists());
    }
}
