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
            Err((mut file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                Err(OpenError::Locked {
                    path,
                    holder: s.trim().parse().ok(),
                })
            }
            Err((_, errno)) => Err(OpenError::Io {
                path,
                source: errno.into(),
            }),
        }
    }
}
