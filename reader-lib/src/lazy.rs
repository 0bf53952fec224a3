//! Lazily filled, append-only tables of mapped files: lock-free after the
//! first use of a slot, which pays the open + mmap syscalls once.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

/// Slots in the first level; level `k` has `FIRST << k`.
const FIRST_LOG2: u32 = 4;
const FIRST: usize = 1 << FIRST_LOG2;

/// `index → T`, filled on first use. The slots are in levels of doubling
/// size, each allocated on the first use of one of its slots: level `k` holds
/// indexes `FIRST·(2^k − 1) ..< FIRST·(2^(k+1) − 1)`. So a table costs what
/// its largest index used needs (at most twice that), and nothing for the
/// index space it could address. A lost race maps a file twice and drops one
/// copy; nobody waits for a file to be mapped (only, briefly, for a level to
/// be allocated).
///
/// This matters for the first lookup of a new process: every page that a
/// `Reader::open` and its first lookup write for the first time is a page
/// fault (≈ 1.5-3 µs on this VM, much more when memory is short). Blocks of
/// 1024 unboxed slots made that about 200 faults (452 KB for the views
/// table alone); boxed values in small levels make it a few.
#[derive(Debug)]
pub(crate) struct LazyTable<T> {
    levels: Box<[OnceLock<Level<T>>]>,
    capacity: usize,
}

/// One slot; boxed, so that a level's size does not depend on `T`.
type Slot<T> = OnceLock<Box<T>>;
/// The slots of one level.
type Level<T> = Box<[Slot<T>]>;

/// (level, offset in it) of index `i`; `None` past what any level holds.
fn place(i: usize) -> Option<(usize, usize)> {
    let j = i.checked_add(FIRST)?;
    let top = usize::BITS - 1 - j.leading_zeros();
    Some(((top - FIRST_LOG2) as usize, j - (1 << top)))
}

impl<T> LazyTable<T> {
    /// A table for indexes `0..capacity`.
    pub(crate) fn new(capacity: usize) -> Self {
        let levels = place(capacity.max(1) - 1).map_or(0, |(level, _)| level + 1);
        Self {
            levels: (0..levels).map(|_| OnceLock::new()).collect(),
            capacity,
        }
    }

    /// The value at `i`, if it was set (never beyond the capacity:
    /// `get_or_try_init` sets nothing there).
    pub(crate) fn get(&self, i: u64) -> Option<&T> {
        let (level, at) = place(usize::try_from(i).ok()?)?;
        self.levels.get(level)?.get()?.get(at)?.get().map(|v| &**v)
    }

    /// Empties every slot but `keep`, whose value (if any) moves to slot 0,
    /// and frees every level but the first; returns how many values it
    /// dropped.
    pub(crate) fn keep_only(&mut self, keep: u64) -> usize {
        let kept = usize::try_from(keep)
            .ok()
            .and_then(place)
            .and_then(|(level, at)| self.levels.get_mut(level)?.get_mut()?.get_mut(at)?.take());
        let mut dropped = 0;
        for slots in self.levels.iter_mut() {
            if let Some(slots) = slots.get_mut() {
                dropped += slots.iter_mut().filter_map(OnceLock::take).count();
            }
        }
        for level in self.levels.iter_mut().skip(1) {
            level.take();
        }
        if let (Some(kept), Some(first)) = (kept, self.levels.first()) {
            let slots = first.get_or_init(|| (0..FIRST).map(|_| OnceLock::new()).collect());
            let _ = slots[0].set(kept);
        }
        dropped
    }

    /// The value at `i`, creating it with `init` the first time. `None` when
    /// `i` is beyond the table's capacity.
    pub(crate) fn get_or_try_init<E>(
        &self,
        i: u64,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Option<Result<&T, E>> {
        let i = usize::try_from(i).ok().filter(|&i| i < self.capacity)?;
        let (level, at) = place(i)?;
        let slots = self
            .levels
            .get(level)?
            .get_or_init(|| (0..FIRST << level).map(|_| OnceLock::new()).collect());
        let slot = slots.get(at)?;
        if let Some(v) = slot.get() {
            return Some(Ok(&**v));
        }
        Some(init().map(|v| &**slot.get_or_init(move || Box::new(v))))
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
        assert_eq!(t.get(2500), Some(&7));
        assert_eq!(t.get(2501), None);
    }

    #[test]
    fn keep_only_moves_the_kept_value_to_slot_0() {
        let mut t: LazyTable<u64> = LazyTable::new(1 << 10);
        for i in [0, 3, 40, 700] {
            assert_eq!(t.get_or_try_init::<()>(i, || Ok(i)), Some(Ok(&i)));
        }
        assert_eq!(t.keep_only(700), 3);
        assert_eq!(t.get(0), Some(&700));
        for i in [3, 40, 700] {
            assert_eq!(t.get(i), None, "index {i}");
        }
        assert_eq!(t.levels.iter().filter(|l| l.get().is_some()).count(), 1);
        // Slots fill again after it.
        assert_eq!(t.get_or_try_init::<()>(1, || Ok(9)), Some(Ok(&9)));
        assert_eq!(t.keep_only(0), 1);
        assert_eq!((t.get(0), t.get(1)), (Some(&700), None));
    }

    #[test]
    fn levels_double_and_cover_every_index_once() {
        let mut next = 0;
        for level in 0..6 {
            for at in 0..FIRST << level {
                assert_eq!(place(next), Some((level, at)), "index {next}");
                next += 1;
            }
        }
    }

    #[test]
    fn spans_levels() {
        let t: LazyTable<u64> = LazyTable::new(1 << 20);
        let at = [0, 1, 15, 16, 47, 48, 5000, (1 << 20) - 1];
        for i in at {
            assert_eq!(t.get_or_try_init::<()>(i, || Ok(i * 3)), Some(Ok(&(i * 3))));
        }
        for i in at {
            assert_eq!(t.get(i), Some(&(i * 3)), "index {i}");
        }
        assert_eq!(t.get(2), None);
        assert_eq!(t.get(1025), None);
        assert!(t.get_or_try_init::<()>(1 << 20, || Ok(0)).is_none());
        assert_eq!(t.get(u64::MAX), None);
        // Only the levels used were allocated.
        let used = t.levels.iter().filter(|l| l.get().is_some()).count();
        assert_eq!(used, 5);
    }

    #[test]
    fn slots_stay_small_whatever_the_value() {
        // What keeps a table's first use to a few hundred bytes.
        assert_eq!(
            size_of::<Slot<[u8; 4096]>>(),
            size_of::<Slot<u8>>(),
            "a slot's size must not depend on the value's"
        );
        assert!(size_of::<Slot<[u8; 4096]>>() <= 2 * size_of::<usize>());
    }
}
