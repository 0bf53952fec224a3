//! The data directory a daemon started on. Readers and clients reach files
//! through directory handles, but the daemon names what it creates, renames
//! or removes by path under `config.data_dir`: once that path names another
//! directory (the data directory was renamed, or a symlink to it retargeted),
//! such a file would land in whatever directory is at the path now. Every
//! site that does so after the start calls [`Home::check`] first (a `stat`
//! per new file, never one per append).

use crate::error::DataDirMoved;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The data directory's path and the (device, inode) it named at the start.
#[derive(Debug, Clone)]
pub struct Home {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Home {
    /// `path`, which named the directory (`dev`, `ino`) at the start.
    #[must_use]
    pub fn new(path: PathBuf, dev: u64, ino: u64) -> Self {
        Self { path, dev, ino }
    }

    /// What `path` names now.
    ///
    /// # Errors
    /// `path` cannot be examined.
    pub fn of(path: &Path) -> io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self::new(path.to_path_buf(), meta.dev(), meta.ino()))
    }

    /// The data directory's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Does the path still name the directory the daemon started on?
    ///
    /// # Errors
    /// [`DataDirMoved`] (inside an [`io::Error`]) if the path names another
    /// directory or nothing; the `stat`'s own error otherwise.
    pub fn check(&self) -> io::Result<()> {
        let moved = || {
            io::Error::other(DataDirMoved {
                path: self.path.clone(),
            })
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == (self.dev, self.ino) => Ok(()),
            Ok(_) => Err(moved()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Err(moved())
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot examine the data directory {}: {e}",
                    self.path.display()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Home;
    use crate::error::DataDirMoved;

    #[test]
    fn a_renamed_or_replaced_directory_is_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let home = Home::of(&a).unwrap();
        home.check().unwrap();
        std::fs::rename(&a, d.path().join("b")).unwrap();
        let gone = home.check().unwrap_err();
        assert_eq!(DataDirMoved::of(&gone).expect("typed").path, a);
        std::fs::create_dir(&a).unwrap();
        let other = home.check().unwrap_err();
        assert_eq!(DataDirMoved::of(&other).expect("typed").path, a);
        // Put back (over the empty one): the same directory again.
        std::fs::rename(d.path().join("b"), &a).unwrap();
        home.check().unwrap();
    }
}
