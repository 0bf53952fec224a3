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

/// `create_dir_all` with every directory it creates at most [`DIR_MODE`].
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options that create a file (if they are set to) at most [`FILE_MODE`].
#[must_use]
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}
