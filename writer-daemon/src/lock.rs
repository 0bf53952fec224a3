//! The data directory's single-writer lock: `flock` on `LOCK`, which the
//! kernel releases when the process dies (never a pid file).

use crate::error::OpenError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// Held for the daemon's lifetime.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    /// Takes the lock or fails at once with [`OpenError::Locked`].
    pub fn acquire(data_dir: &Path) -> Result<Self, OpenError> {
        let path = data_dir.join("LOCK");
        let file = crate::modes::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(OpenError::io(&path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // The pid is informational only (for the error message of a second daemon).
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = writeln!(&mut *lock, "{}", std::process::id());
                Ok(Self { _lock: lock })
            }
            Err((file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                Err(locked(path, file))
            }
            Err((_, errno)) => Err(OpenError::Io {
                path,
                source: errno.into(),
            }),
        }
    }

    /// Whether another process holds the lock: [`OpenError::Locked`] if so,
    /// else `Ok`. Creates nothing (a directory without `LOCK` has no
    /// daemon) and writes nothing; a lock it gets is released at once. Any
    /// other failure is `Ok`: [`DirLock::acquire`] decides and says why.
    pub fn probe(data_dir: &Path) -> Result<(), OpenError> {
        let path = data_dir.join("LOCK");
        let Ok(file) = File::open(&path) else {
            return Ok(());
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Err((file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                Err(locked(path, file))
            }
            // Dropping a lock we got releases it.
            _ => Ok(()),
        }
    }
}

/// The error for a lock held by another process, with the pid it recorded.
fn locked(path: std::path::PathBuf, mut file: File) -> OpenError {
    let mut s = String::new();
    let _ = file.read_to_string(&mut s);
    OpenError::Locked {
        path,
        holder: s.trim().parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_sees_a_held_lock_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        DirLock::probe(dir.path()).unwrap();
        assert!(!dir.path().join("LOCK").exists());
        let held = DirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file: a second open is refused
        // even in the same process.
        match DirLock::probe(dir.path()) {
            Err(OpenError::Locked { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        DirLock::probe(dir.path()).unwrap();
        // The probe released what it took.
        drop(DirLock::acquire(dir.path()).unwrap());
    }
}
