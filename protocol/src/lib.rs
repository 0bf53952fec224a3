//! weir's shared vocabulary: the event model, every byte layout that crosses a
//! process boundary (segment files, index files, the gate page) and the wire
//! messages of the append socket.
//!
//! This crate does no I/O. Layouts are little-endian; shared-memory atomics are
//! host-endian, which is why weir builds only for little-endian targets.
//! `docs/FORMAT.md` is the written spec; `tests/format_offsets.rs` checks the
//! constants here against it.
#![deny(unsafe_code)]

#[cfg(not(target_endian = "little"))]
compile_error!("weir's shared-memory layouts assume a little-endian host");

mod bin128;
pub mod fastwire;
pub mod gate;
pub mod hash;
pub mod index;
pub mod limited;
pub mod locate;
pub mod model;
pub mod segment;
pub mod shm;
pub mod starts;
pub mod wire;

pub use model::{
    Coordinate, CoordinateError, EventId, EventKind, ExpectedVersion, KindError, KindFilter, Region,
};

/// CRC-32 (IEEE, as `crc32fast` computes it) of `bytes`.
#[must_use]
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Rounds `n` up to the next multiple of 8.
#[must_use]
pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}
