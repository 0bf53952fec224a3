//! `sync_file_range(SYNC_FILE_RANGE_WRITE)`: start writing a file range back
//! without waiting for it (nix has no wrapper).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Starts writeback of the dirty pages of `file` in `off..off + len` and
/// returns without waiting for the disk. Durability still needs a sync.
pub fn start(file: &File, off: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: sync_file_range takes an open descriptor (borrowed from
    // `file` for the call) and plain integers; it touches no memory of ours.
    let r = unsafe {
        nix::libc::sync_file_range(file.as_raw_fd(), off, len, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
