//! The modes the daemon creates its files and directories with.
//!
//! The process umask only narrows them: under a permissive umask (a manual
//! `weir serve` run with `umask 000`) the store would otherwise be writable
//! by every local user, and the next start would refuse it as
//! world-writable. 0755 and 0644 keep what the usual umask 022 gave (readers
//! of other users may map the files read-only, README "Permission model");
//! `UMask=0027` narrows them to the `weir` group.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The widest mode of a directory the daemon creates.
pub const DIR_MODE: u32 = 0o755;

/// The widest mode of a file the daemon creates.
pub const FILE_MODE: u32 = 0o644;

/// `create_dir_all` with every directory it creates at most [`DIR_MODE`],
/// each new one's name made durable (its parent fsynced): a power loss must
/// not take back a new data directory, with what was stored in it, after
/// appends in it were acknowledged as durable. A parent that cannot be
/// opened or synced (search and write permission create a directory, but
/// opening it takes read permission) is logged, not an error: the start
/// worked before the sync was added, and the directory exists.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    create_dir_all_with(path, |parent| std::fs::File::open(parent)?.sync_all())
}

/// [`create_dir_all`] with `sync` making a parent's entries durable.
fn create_dir_all_with(path: &Path, sync: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
    let created = missing_dirs(path);
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    for dir in created.iter().rev() {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Err(e) = sync(parent) {
            tracing::warn!(
                dir = %dir.display(),
                parent = %parent.display(),
                error = %e,
                "created a directory but could not sync its parent: a power loss soon after may take the new directory back"
            );
        }
    }
    Ok(())
}

/// `path` and each of its ancestors that does not exist yet, deepest first.
fn missing_dirs(path: &Path) -> Vec<&Path> {
    path.ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect()
}

/// Options that create a file (if they are set to) at most [`FILE_MODE`].
#[must_use]
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// `posix_fallocate(f, 0, len)` on a descriptor that must be open for
/// reading as well as writing: where the file system has no `fallocate`
/// (ext2, ext3 without extents, some network file systems) glibc emulates
/// it, reading back every block inside the file's size, which fails with
/// EBADF on a write-only descriptor. Refused here on every file system, so
/// that a write-only open fails the tests on ext4 too.
///
/// # Errors
/// `f` is not open for reading and writing, or the reservation failed.
pub fn fallocate(f: &std::fs::File, len: u64) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
    if flags & OFlag::O_ACCMODE != OFlag::O_RDWR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "posix_fallocate needs a file opened for reading and writing (without \
             fallocate in the file system, glibc reads the blocks back)",
        ));
    }
    nix::fcntl::posix_fallocate(f, 0, len as i64).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::{create_dir_all, fallocate, missing_dirs, options};
    use std::path::Path;

    #[test]
    fn fallocate_refuses_a_write_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let w = options().write(true).create(true).open(&p).unwrap();
        let err = fallocate(&w, 8192).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        let rw = options().read(true).write(true).open(&p).unwrap();
        fallocate(&rw, 8192).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 8192);
    }

    #[test]
    fn the_dirs_to_create_are_the_missing_ancestors_deepest_first() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b/c");
        assert_eq!(
            missing_dirs(&deep),
            [deep.as_path(), &t.path().join("a/b"), &t.path().join("a")]
        );
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        assert!(missing_dirs(&deep).is_empty());
        assert_eq!(missing_dirs(Path::new("")), Vec::<&Path>::new());
    }

    #[test]
    fn a_parent_that_cannot_be_synced_does_not_fail_the_creation() {
        // As a parent with search and write permission but no read
        // permission does (found by the hunt on the day's changes: the
        // first start failed with EACCES, the second worked).
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b");
        let asked = std::cell::RefCell::new(Vec::new());
        super::create_dir_all_with(&deep, |p| {
            asked.borrow_mut().push(p.to_path_buf());
            Err(std::io::Error::from_raw_os_error(nix::libc::EACCES))
        })
        .unwrap();
        assert!(deep.is_dir());
        assert_eq!(
            *asked.borrow(),
            [t.path().to_path_buf(), t.path().join("a")]
        );
    }
}
