//! Typed access to memory that other processes share: the one module of this
//! crate that holds `unsafe`.
//!
//! A mapped region is kept as a raw pointer and a length, never as `&[u8]`
//! over bytes another process may change. Words that change while mapped
//! (watermarks, slots, heads) are reached only as atomics. Plain slices are
//! handed out only for bytes that are immutable once published (rows below
//! `visible`, frames, string names); callers promise that by the `// SYNC:`
//! acquire that precedes them.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64};

/// A shared, mapped region: base pointer and length. It does not own the
/// mapping; whoever builds one keeps the mapping alive for its lifetime.
/// Neither `Clone` nor `Copy`: an owner that hands it out by reference (with
/// the mapping) can then rely on no copy outliving the mapping.
#[derive(Debug)]
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a Region is a view of process-shared memory; every access it
// offers is atomic or restricted to bytes that are no longer written.
unsafe impl Send for Region {}
// SAFETY: as above; shared references only permit loads and atomic ops.
unsafe impl Sync for Region {}

impl Region {
    /// Wraps a mapping.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped (readable, and writable if any write
    /// method is called) for as long as this `Region` or anything derived
    /// from it is used, and `ptr` must be page-aligned.
    #[must_use]
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Length in bytes.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the region empty?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn check(&self, off: usize, size: usize) -> Option<*mut u8> {
        let end = off.checked_add(size)?;
        // The base is page-aligned (constructor contract), so `off` alignment suffices.
        (end <= self.len && off.is_multiple_of(size.clamp(1, 8)))
            .then(|| self.ptr.wrapping_add(off))
    }

    /// The atomic u64 at `off`; `None` if out of bounds or misaligned.
    #[inline]
    #[must_use]
    pub fn atomic_u64(&self, off: usize) -> Option<&AtomicU64> {
        let p = self.check(off, 8)?;
        // SAFETY: in bounds and 8-aligned (checked above); the mapping lives as
        // long as `self` (constructor contract); AtomicU64 has the layout of
        // u64 and its UnsafeCell allows other processes to change the word.
        // On a read-only mapping callers only load (Relaxed), as std permits.
        Some(unsafe { AtomicU64::from_ptr(p.cast::<u64>()) })
    }

    /// The atomic u32 at `off`; `None` if out of bounds or misaligned.
    #[inline]
    #[must_use]
    pub fn atomic_u32(&self, off: usize) -> Option<&AtomicU32> {
        let p = self.check(off, 4)?;
        // SAFETY: as in `atomic_u64`, for a 4-aligned, in-bounds u32.
        Some(unsafe { AtomicU32::from_ptr(p.cast::<u32>()) })
    }

    /// Asks the CPU to start loading the cache line that holds byte `off`
    /// (ignored out of bounds, and on targets without a prefetch hint).
    /// A hint only: it reads nothing and changes nothing, so a caller that
    /// knows several addresses ahead can overlap their cache misses.
    #[inline]
    pub fn prefetch(&self, off: usize) {
        if off < self.len {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `prefetch` only hints the cache; it never faults, even
            // on an unmapped address, and reads nothing the program sees. SSE
            // (the feature the intrinsic names) is part of every x86_64 CPU.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    self.ptr.wrapping_add(off).cast::<i8>().cast_const(),
                );
            }
        }
    }

    /// Bytes `off..off+len`, for data that no process writes any more.
    ///
    /// # Safety
    /// No process may write these bytes while the returned slice lives: the
    /// caller has observed (with acquire ordering) a publication that covers
    /// them, and the writer never rewrites published bytes.
    #[must_use]
    pub unsafe fn published(&self, off: usize, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: in bounds of a live mapping (constructor contract); no
        // concurrent writes (this function's contract).
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) })
    }

    /// Copies `src` into the region at `off`. Writer only.
    ///
    /// # Safety
    /// The region must be mapped writable, and no reader may be reading
    /// `off..off+src.len()` as published bytes (the writer writes only what
    /// it has not yet published).
    pub unsafe fn write(&self, off: usize, src: &[u8]) -> Option<()> {
        let end = off.checked_add(src.len())?;
        if end > self.len {
            return None;
        }
        // SAFETY: in bounds of a live writable mapping (contract); `src` is a
        // distinct Rust slice so the ranges do not overlap; nobody reads the
        // destination as published yet (contract).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) };
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn bounds_and_alignment_are_checked() {
        let mut buf = vec![0u64; 4];
        // SAFETY: `buf` outlives `r` and is 8-aligned; 32 bytes long.
        let r = unsafe { Region::new(buf.as_mut_ptr().cast(), 32) };
        assert!(r.atomic_u64(24).is_some());
        assert!(r.atomic_u64(28).is_none());
        assert!(r.atomic_u64(4).is_none());
        assert!(r.atomic_u32(28).is_some());
        r.atomic_u64(8).unwrap().store(7, Ordering::Relaxed);
        // SAFETY: single-threaded test; nothing writes concurrently.
        unsafe {
            r.write(16, &[1, 2]).unwrap();
            assert!(r.write(31, &[1, 2]).is_none());
            assert_eq!(r.published(16, 2).unwrap(), &[1, 2]);
            assert!(r.published(30, 3).is_none());
        }
        assert_eq!(buf[1], 7);
    }
}
