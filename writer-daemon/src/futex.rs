//! `FUTEX_WAKE` on a shared (not private) futex word in the gate.
#![allow(unsafe_code)]

use std::sync::atomic::AtomicU32;

/// Wakes every process waiting on `word`.
pub fn wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address to find waiters; `word` is a
    // valid, aligned u32 in a live shared mapping. No private flag, because
    // the waiters are other processes mapping the same file.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_futex,
            word.as_ptr(),
            nix::libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}
