//! The one module of this crate that holds `unsafe`: read-only file mappings,
//! the futex wait, and ASCII names read as text without UTF-8 validation.
//!
//! A mapping is never exposed as one `&[u8]` over the whole file, because the
//! daemon keeps writing the unpublished parts. Callers get atomics for words
//! that change while mapped, and plain slices only through [`Mapped::published`]
//! for byte ranges that no process writes any more.
#![allow(unsafe_code)]

use crate::error::AttachError;
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;
use weir_protocol::shm::Region;

/// A directory held open: files are opened through it (`openat`), so that a
/// view keeps reading the store it attached to even when the path comes to
/// name another (a store deleted and created anew at the same place).
#[derive(Debug)]
pub(crate) struct Dir {
    /// The directory's descriptor. A shared `flock` taken on it
    /// ([`open_shared`](Self::open_shared)) is released when the last
    /// descriptor of its open file goes, never explicitly: a forked child
    /// shares the open file, and an explicit unlock in either process
    /// would release the lock for both (the parent's snapshot could then
    /// lose its generation to a daemon start).
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory `path`.
    pub(crate) fn open(path: PathBuf) -> Result<Self, AttachError> {
        use nix::fcntl::OFlag;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        match nix::fcntl::open(&path, flags, nix::sys::stat::Mode::empty()) {
            Ok(fd) => Ok(Self { fd, path }),
            Err(errno) => Err(AttachError::Io {
                path,
                source: errno.into(),
            }),
        }
    }

    /// [`open`](Self::open), holding a shared `flock` on the directory
    /// until dropped: a daemon deletes an old index generation only if it
    /// can lock it exclusively (FORMAT.md, "Restore order"). A lock not
    /// granted (the daemon is deleting it right now, or a file system
    /// without `flock`) leaves the directory unprotected, not unread.
    pub(crate) fn open_shared(path: PathBuf) -> Result<Self, AttachError> {
        let dir = Self::open(path)?;
        // `File`'s drop closes without unlocking (see `fd`); the lock goes
        // with the open file's last descriptor.
        let file = File::from(dir.fd);
        let _ = file.try_lock_shared();
        Ok(Self {
            fd: file.into(),
            path: dir.path,
        })
    }

    fn fd(&self) -> &std::os::fd::OwnedFd {
        &self.fd
    }

    /// The path of `name` in this directory (for messages; files are opened
    /// through the directory, not by this path).
    pub(crate) fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// [`Mapped::open`] of the file `path` names in this directory (its
    /// last component, as [`join`](Self::join) made it).
    pub(crate) fn map(
        &self,
        path: &Path,
        expected: Option<u64>,
        min: u64,
    ) -> Result<Mapped, AttachError> {
        use nix::fcntl::OFlag;
        let io = |source| AttachError::Io {
            path: path.to_owned(),
            source,
        };
        let name = path
            .file_name()
            .ok_or_else(|| io(std::io::ErrorKind::InvalidInput.into()))?;
        let fd = nix::fcntl::openat(
            self.fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| io(errno.into()))?;
        Mapped::from_file(&File::from(fd), path, expected, min)
    }
}

/// A read-only, shared mapping of a whole file.
#[derive(Debug)]
pub(crate) struct Mapped {
    region: Region,
    path: PathBuf,
    /// (device, inode) of the file, as when it was mapped.
    file_id: (u64, u64),
    // Keeps the pages mapped for as long as `region` is used; never
    // dereferenced (only advised, see `advise_huge_pages`).
    map: Mmap,
}

impl Mapped {
    /// Opens `path` read-only and maps all of it. The file must be exactly
    /// `expected` bytes long when `expected` is given, and at least `min`
    /// bytes long in any case: a short copy is refused here, before any access
    /// past its end could raise SIGBUS.
    pub(crate) fn open(path: &Path, expected: Option<u64>, min: u64) -> Result<Self, AttachError> {
        let file = File::open(path).map_err(|source| AttachError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_file(&file, path, expected, min)
    }

    /// [`open`](Self::open) of a file already open (`path` for messages).
    fn from_file(
        file: &File,
        path: &Path,
        expected: Option<u64>,
        min: u64,
    ) -> Result<Self, AttachError> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| AttachError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = file.metadata().map_err(io)?;
        let found = meta.len();
        if let Some(expected) = expected.filter(|e| *e != found) {
            return Err(AttachError::Length {
                path: path.to_owned(),
                expected,
                found,
            });
        }
        if found < min || found == 0 {
            return Err(AttachError::Length {
                path: path.to_owned(),
                expected: min.max(1),
                found,
            });
        }
        let len = usize::try_from(found).map_err(|_| AttachError::Length {
            path: path.to_owned(),
            expected: min,
            found,
        })?;
        // SAFETY: memmap2's contract is that the file is not modified or
        // truncated while mapped in ways that break Rust's aliasing rules.
        // weir's daemon never truncates a mapped file (FORMAT.md, invariant
        // 8) and this crate never forms a reference to bytes the daemon may
        // still write: the `Mmap` is never dereferenced; access goes through
        // `Region`, which hands out atomics for changing words and slices only
        // for published, immutable bytes (see `published`).
        let map = unsafe { MmapOptions::new().len(len).map(file) }.map_err(io)?;
        // SAFETY: `map` is a live mapping of `len` bytes, page-aligned (mmap
        // returns page-aligned addresses), owned by the returned value, which
        // outlives every use of `region` (it is dropped together with it, and
        // every borrow of a `Mapped` ends before it drops). The region is only
        // ever read (Relaxed loads and `published` slices), as PROT_READ requires.
        let region = unsafe { Region::new(map.as_ptr().cast_mut(), len) };
        Ok(Self {
            region,
            path: path.to_owned(),
            file_id: (meta.dev(), meta.ino()),
            map,
        })
    }

    /// (device, inode) of the mapped file.
    pub(crate) fn file_id(&self) -> (u64, u64) {
        self.file_id
    }

    /// The file this mapping came from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the mapping.
    pub(crate) fn len(&self) -> usize {
        self.region.len()
    }

    /// Asks the kernel to read pages that are not cached into 2 MiB folios
    /// when this mapping faults on them (`MADV_HUGEPAGE`), and to map those
    /// with one page-table entry each. Pages already cached keep their folio
    /// size: a segment the daemon zero-filled is cached in 2 MiB folios
    /// already, but after a reboot or an eviction its pages are read back
    /// in whatever size readahead picks, and mapped 4 KiB at a time. Only for
    /// a store that fits in memory (`memfit`). A hint: a kernel without
    /// transparent huge pages refuses it, and nothing changes.
    pub(crate) fn advise_huge_pages(&self) {
        let _ = self.map.advise(memmap2::Advice::HugePage);
    }

    /// Asks the CPU to fetch the cache line holding byte `off` (a hint:
    /// nothing is read, and an offset out of bounds is ignored).
    pub(crate) fn prefetch(&self, off: usize) {
        self.region.prefetch(off);
    }

    /// The atomic u64 at `off`, or `None` when out of bounds or misaligned.
    pub(crate) fn atomic_u64(&self, off: usize) -> Option<&AtomicU64> {
        self.region.atomic_u64(off)
    }

    /// The atomic u32 at `off`, or `None` when out of bounds or misaligned.
    pub(crate) fn atomic_u32(&self, off: usize) -> Option<&AtomicU32> {
        self.region.atomic_u32(off)
    }

    /// Bytes `off..off + len`, bounds-checked; `None` if out of bounds.
    ///
    /// Crate contract (checked by review, not by the compiler): callers ask
    /// only for bytes that are immutable by the time of the call: file
    /// headers written before the file was published, or index/segment bytes
    /// covered by a publication the caller observed with acquire ordering
    /// (`visible`, a head, a slot, `strings_end`), each marked `// SYNC:` at
    /// the load. The daemon never rewrites such bytes (FORMAT.md).
    pub(crate) fn published(&self, off: usize, len: usize) -> Option<&[u8]> {
        // SAFETY: bounds are checked by `Region::published`; immutability of
        // the range is this function's crate contract above.
        unsafe { self.region.published(off, len) }
    }
}

/// Sleeps on the shared futex word `word` while it holds `expected`, for at
/// most `timeout`. Returns on wake, timeout, signal or value change; the
/// caller re-checks what it waits for. Uses `FUTEX_WAIT` without the private
/// flag: waker and waiter are different processes sharing the file's page.
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Duration,
) -> Result<(), nix::errno::Errno> {
    use nix::libc;
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
    };
    // SAFETY: `word` is a valid, aligned, live u32 (it is a reference) in a
    // shared mapping; FUTEX_WAIT only reads it and sleeps. `ts` lives across
    // the call; the unused uaddr2/val3 arguments are null/0 as futex(2)
    // requires for FUTEX_WAIT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &raw const ts,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::EAGAIN | nix::errno::Errno::ETIMEDOUT | nix::errno::Errno::EINTR => {
            Ok(())
        }
        e => Err(e),
    }
}

/// `bytes` as text if they are all ASCII (names usually are): one
/// word-at-a-time pass, far cheaper than validating a short name as UTF-8
/// byte by byte, which cost a lookup by id about a tenth of its
/// instructions. `None` otherwise, and the caller validates UTF-8.
pub(crate) fn ascii_str(bytes: &[u8]) -> Option<&str> {
    // SAFETY: every byte is below 0x80, and a sequence of such bytes is
    // valid UTF-8 (each is a whole one-byte code point).
    bytes
        .is_ascii()
        .then(|| unsafe { std::str::from_utf8_unchecked(bytes) })
}

#[cfg(test)]
mod tests {
    use super::ascii_str;

    #[test]
    fn ascii_str_reads_ascii_and_leaves_everything_else_to_utf8_validation() {
        assert_eq!(ascii_str(b"user:42"), Some("user:42"));
        assert_eq!(
            ascii_str(b"a-name-longer-than-two-words/x"),
            Some("a-name-longer-than-two-words/x")
        );
        assert_eq!(ascii_str(b""), Some(""));
        assert_eq!(ascii_str("café".as_bytes()), None);
        assert_eq!(ascii_str(b"user:\x80"), None);
        assert_eq!(ascii_str(b"a-long-ascii-prefix-then\xff"), None);
    }
}
