//! Read-write mappings of the index and gate files: one of the daemon's three
//! modules with `unsafe` (with `futex` and `writeback`).
#![allow(unsafe_code)]

use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use weir_protocol::shm::Region;

/// A file mapped shared and writable. Readers map the same file read-only.
#[derive(Debug)]
pub struct MappedFile {
    map: MmapMut,
    region: Region,
    path: PathBuf,
}

impl MappedFile {
    /// Creates `path` (which must not exist), preallocates `len` bytes with
    /// `posix_fallocate` (so later page faults cannot hit ENOSPC and raise
    /// SIGBUS in the daemon) and maps it. A file it could not reserve or map
    /// is removed (it holds nothing yet): a partial reservation on a full
    /// disk would hold the last free blocks.
    pub fn create(path: &Path, len: usize) -> io::Result<Self> {
        let file = crate::modes::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        crate::modes::fallocate(&file, len as u64)
            .and_then(|()| Self::map(file, path, len))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(path);
            })
    }

    /// Maps an existing file, which must be exactly `len` bytes long.
    pub fn open(path: &Path, len: usize) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let actual = file.metadata()?.len();
        if actual != len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {actual} bytes, expected {len}", path.display()),
            ));
        }
        Self::map(file, path, len)
    }

    fn map(file: File, path: &Path, len: usize) -> io::Result<Self> {
        // SAFETY: the file is exactly `len` bytes (created or checked above)
        // and weir never truncates a mapped file, so every mapped page stays
        // backed. Other processes map it read-only and only read; the daemon
        // is the single writer (guaranteed by the LOCK flock), so the only
        // concurrent mutation is our own, done through `Region`'s atomics or
        // to bytes not yet published.
        let mut map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file)? };
        // SAFETY: `map` is a live, page-aligned, writable mapping of `len`
        // bytes, owned by this struct; `region` never outlives it because it
        // is only handed out by reference to `self`, and a `Region` can be
        // neither copied nor cloned out of that reference.
        let region = unsafe { Region::new(map.as_mut_ptr(), len) };
        Ok(Self {
            map,
            region,
            path: path.to_owned(),
        })
    }

    /// The shared region.
    #[must_use]
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Writes `bytes` at `off`. The caller writes only bytes it has not yet
    /// published (rows, columns and entries above `visible`).
    pub fn write(&self, off: usize, bytes: &[u8]) {
        // SAFETY: the mapping is writable and alive; the daemon only writes
        // unpublished bytes (module contract above), so no reader is reading
        // them as published data.
        let done = unsafe { self.region.write(off, bytes) };
        assert!(
            done.is_some(),
            "index write out of bounds: {}+{} in {}",
            off,
            bytes.len(),
            self.path.display()
        );
    }

    /// Reads bytes the daemon itself wrote earlier.
    #[must_use]
    pub fn read(&self, off: usize, len: usize) -> &[u8] {
        // SAFETY: only this process writes the mapping, and the writer thread
        // that calls this is the thread that writes it; no concurrent writes.
        // The one other caller, the names-table builder (`names::build_table`),
        // reads strings entries below the end it was given, and of them only
        // bytes no thread writes again (length, namespace, CRC, name).
        let bytes = unsafe { self.region.published(off, len) };
        bytes.unwrap_or_else(|| {
            panic!(
                "index read out of bounds: {off}+{len} in {}",
                self.path.display()
            )
        })
    }

    /// Faults `off..off + len` in, writable, without changing a byte
    /// (`MADV_POPULATE_WRITE`, Linux 5.14+; `EINVAL` before). The range is
    /// widened to whole pages.
    pub fn prefault(&self, off: usize, len: usize) -> io::Result<()> {
        let page = weir_protocol::index::PAGE;
        let start = off - off % page;
        let end = (off + len).next_multiple_of(page).min(self.map.len());
        if start >= end {
            return Ok(());
        }
        self.map
            .advise_range(memmap2::Advice::PopulateWrite, start, end - start)
    }

    /// `msync`s the whole mapping.
    pub fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Maps a file read-only (restore reads segments this way, and the writer
/// the frames a retried request is compared with). The daemon holds the data
/// directory's lock, so no other process writes the file meanwhile.
/// Pages that are not cached come in as 2 MiB folios (`MADV_HUGEPAGE`, a
/// hint), as in readers' mappings: a restore after a reboot reads the
/// segments first, and the folio sizes it leaves in the page cache are the
/// ones every reader then maps (FORMAT.md, "Media assumptions").
pub fn map_read_only(path: &Path) -> io::Result<memmap2::Mmap> {
    let file = File::open(path)?;
    // SAFETY: weir never truncates segment files, and only this process (the
    // lock holder) writes them, never while a slice of this mapping is
    // borrowed: restore runs before the writer starts, and the writer's
    // replay borrows it only inside `Segments::with_event`, on the writer
    // thread, the one thread that writes segment bytes (the write-behind
    // helper only starts writeback, which changes no byte).
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    let _ = map.advise(memmap2::Advice::HugePage);
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::MappedFile;

    #[test]
    fn a_file_that_cannot_be_reserved_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chunk-000001");
        // Past any file system's largest file: EFBIG (or ENOSPC).
        assert!(MappedFile::create(&p, 1 << 62).is_err());
        assert!(!p.exists());
        assert!(MappedFile::create(&p, 4096).is_ok());
    }
}
