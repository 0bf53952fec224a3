//! Lazily filled, append-only tables of mapped files: lock-free after the
//! first use of a slot, which pays the open + mmap syscalls once.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

/// Slots per second-level block.
const BLOCK: usize = 1024;

/// `index → T`, filled on first use. Two levels of `OnceLock`, so a huge
/// index space costs only the blocks that are touched. A lost race maps a file
/// twice and drops one copy; nobody waits.
#[derive(Debug)]
pub(crate) struct LazyTable<T> {
    blocks: Box<[OnceLock<Block<T>>]>,
}

/// A second-level block of slots.
type Block<T> = Box<[OnceLock<T>]>;

impl<T> LazyTable<T> {
    /// A table for indexes `0..capacity`.
    pub(crate) fn new(capacity: usize) -> Self {
        let blocks = capacity.div_ceil(BLOCK).max(1);
        Self {
            blocks: (0..blocks).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The value at `i`, if it was set.
    pub(crate) fn get(&self, i: u64) -> Option<&T> {
        let i = usize::try_from(i).ok()?;
        self.blocks.get(i / BLOCK)?.get()?[i % BLOCK].get()
    }

    /// The value at `i`, creating it with `init` the first time. `None` when
    /// `i` is beyond the table's capacity.
    pub(crate) fn get_or_try_init<E>(
        &self,
        i: u64,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Option<Result<&T, E>> {
        let i = usize::try_from(i).ok()?;
        let block = self.blocks.get(i / BLOCK)?;
        let block = block.get_or_init(|| (0..BLOCK).map(|_| OnceLock::new()).collect());
        let slot = &block[i % BLOCK];
        if let Some(v) = slot.get() {
            return Some(Ok(v));
        }
        Some(init().map(|v| slot.get_or_init(move || v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_once_and_refuses_out_of_range() {
        let t: LazyTable<u32> = LazyTable::new(3000);
        assert_eq!(t.get_or_try_init::<()>(2500, || Ok(7)), Some(Ok(&7)));
        assert_eq!(t.get_or_try_init::<()>(2500, || Ok(9)), Some(Ok(&7)));
        assert_eq!(t.get_or_try_init(5, || Err("no")), Some(Err("no")));
        assert_eq!(t.get_or_try_init::<()>(5, || Ok(1)), Some(Ok(&1)));
        assert!(t.get_or_try_init::<()>(4096, || Ok(1)).is_none());
    }
}
