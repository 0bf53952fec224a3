//! Column kernels: branch-free counting loops over published column cells
//! that the compiler vectorises, and the cell predicate of a resolved region.
#![forbid(unsafe_code)]

use std::sync::Arc;
use weir_protocol::KindFilter;
use weir_protocol::index::NO_NAME;
use weir_protocol::model::CANCELLED_KIND;
use zerocopy::little_endian::{U16, U32};

/// Cells per inner block: the u32 lane counters cannot overflow.
const BLOCK: usize = 1 << 16;

/// Counts the cells of `col` for which `f` holds.
#[inline]
pub(crate) fn count_by<T: Copy>(col: &[T], f: impl Fn(T) -> bool) -> u64 {
    col.chunks(BLOCK)
        .map(|b| u64::from(b.iter().map(|&x| u32::from(f(x))).sum::<u32>()))
        .sum()
}

/// Counts the positions where `f` holds over two columns of equal length.
#[inline]
pub(crate) fn count_by2<A: Copy, B: Copy>(a: &[A], b: &[B], f: impl Fn(A, B) -> bool) -> u64 {
    a.chunks(BLOCK)
        .zip(b.chunks(BLOCK))
        .map(|(a, b)| {
            u64::from(
                a.iter()
                    .zip(b)
                    .map(|(&x, &y)| u32::from(f(x, y)))
                    .sum::<u32>(),
            )
        })
        .sum()
}

/// A set of string ids, added in ascending order (the order names are
/// written in): the ids, and a bitmap over the words from the first id's.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdSet {
    ids: Vec<u32>,
    /// Word `i` holds ids `64 (base + i) ..`.
    bits: Vec<u64>,
    base: usize,
}

impl IdSet {
    /// Adds `id`, which is above every id already in the set (or it is not
    /// added to the bitmap's words below `base`: string ids only grow).
    pub(crate) fn push(&mut self, id: u32) {
        let word = id as usize / 64;
        if self.ids.is_empty() {
            self.base = word;
        }
        let Some(i) = word.checked_sub(self.base) else {
            debug_assert!(false, "ids are added in ascending order");
            return;
        };
        if i >= self.bits.len() {
            self.bits.resize(i + 1, 0);
        }
        self.bits[i] |= 1 << (id % 64);
        self.ids.push(id);
    }

    #[inline]
    pub(crate) fn has(&self, id: u32) -> bool {
        (id as usize / 64)
            .checked_sub(self.base)
            .and_then(|i| self.bits.get(i))
            .is_some_and(|w| w >> (id % 64) & 1 == 1)
    }

    pub(crate) fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Its size in u32s (ids and bitmap), for a cache's bound.
    pub(crate) fn size(&self) -> usize {
        self.ids.len() + 2 * self.bits.len()
    }
}

/// Which entities a resolved region selects.
#[derive(Debug, Clone)]
pub(crate) enum EntitySel {
    /// Any entity.
    Any,
    /// One string id.
    One(u32),
    /// A set of string ids, shared with the prefix cache it came from.
    Set(Arc<IdSet>),
}

impl EntitySel {
    /// Does string id `id` pass?
    #[inline]
    pub(crate) fn has(&self, id: u32) -> bool {
        match self {
            Self::Any => id != NO_NAME,
            Self::One(x) => *x == id,
            Self::Set(set) => set.has(id),
        }
    }

    /// A selection of `set`'s ids (not empty).
    pub(crate) fn of(set: &Arc<IdSet>) -> Self {
        match set.ids() {
            [one] => Self::One(*one),
            _ => Self::Set(Arc::clone(set)),
        }
    }

    /// A set of the given ids, ascending.
    #[cfg(test)]
    pub(crate) fn set(ids: &[u32]) -> Self {
        let mut set = IdSet::default();
        for &id in ids {
            set.push(id);
        }
        Self::of(&Arc::new(set))
    }
}

/// A region with its names resolved to string ids: a predicate on the
/// (kind, scope id, entity id) cells of a column, plus the clock range,
/// which only rows hold.
#[derive(Debug, Clone)]
pub(crate) struct CellFilter {
    pub(crate) kind: KindFilter,
    pub(crate) scope: Option<u32>,
    pub(crate) entity: EntitySel,
    pub(crate) clock: Option<(u32, u32)>,
}

#[inline]
fn kind_ok(f: KindFilter, k: u16) -> bool {
    match f {
        KindFilter::Any => true,
        KindFilter::Exact(x) => x.0 == k,
        KindFilter::Category(c) => (k >> 12) as u8 == c,
    }
}

impl CellFilter {
    /// Does a cell triple pass? Tombstones (entity id `NO_NAME`) never do.
    #[inline]
    pub(crate) fn cell(&self, kind: u16, scope: u32, entity: u32) -> bool {
        entity != NO_NAME
            && kind_ok(self.kind, kind)
            && self.scope.is_none_or(|s| s == scope)
            && self.entity.has(entity)
    }

    /// Counts the passing cells of equal-length column slices, with a
    /// single-column kernel whenever one column decides.
    pub(crate) fn count(&self, kinds: &[U16], scopes: &[U32], entities: &[U32]) -> u64 {
        let tomb = CANCELLED_KIND.0;
        // Could the kind filter admit a tombstone's kind? Then entity ids must rule them out.
        let kind_admits_tomb = kind_ok(self.kind, tomb);
        match (&self.entity, self.scope, self.kind) {
            (EntitySel::Any, None, KindFilter::Any) => count_by(entities, |e| e.get() != NO_NAME),
            (EntitySel::Any, None, KindFilter::Exact(k)) if !kind_admits_tomb => {
                count_by(kinds, |x| x.get() == k.0)
            }
            (EntitySel::Any, None, KindFilter::Category(c)) if !kind_admits_tomb => {
                count_by(kinds, |x| (x.get() >> 12) as u8 == c)
            }
            (EntitySel::Any, None, f) => count_by2(kinds, entities, |k, e| {
                kind_ok(f, k.get()) && e.get() != NO_NAME
            }),
            (EntitySel::Any, Some(s), KindFilter::Any) => count_by(scopes, |x| x.get() == s),
            (EntitySel::One(id), None, KindFilter::Any) => {
                let id = *id;
                count_by(entities, |x| x.get() == id)
            }
            _ => kinds
                .iter()
                .zip(scopes)
                .zip(entities)
                .filter(|((k, s), e)| self.cell(k.get(), s.get(), e.get()))
                .count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_protocol::EventKind;

    #[test]
    fn an_id_set_holds_its_ids_only_with_a_bitmap_from_the_first() {
        let ids = [130, 131, 191, 192, 700];
        let sel = EntitySel::set(&ids);
        let EntitySel::Set(set) = &sel else {
            panic!("{sel:?}")
        };
        assert_eq!(set.ids(), ids);
        assert_eq!(set.size(), 5 + 2 * (700 / 64 - 2 + 1));
        for id in 0..1000 {
            assert_eq!(sel.has(id), ids.contains(&id), "{id}");
        }
        assert!(!sel.has(NO_NAME));
    }

    #[test]
    fn kernels_agree_with_the_cell_predicate() {
        let n = 70_000;
        let kinds: Vec<U16> = (0..n)
            .map(|i| {
                U16::new(if i % 7 == 0 {
                    0xDFFF
                } else {
                    0x1000 + (i % 5) as u16
                })
            })
            .collect();
        let scopes: Vec<U32> = (0..n)
            .map(|i| U32::new(if i % 7 == 0 { NO_NAME } else { (i % 3) as u32 }))
            .collect();
        let ents: Vec<U32> = (0..n)
            .map(|i| U32::new(if i % 7 == 0 { NO_NAME } else { (i % 11) as u32 }))
            .collect();
        let kinds_f = [
            KindFilter::Any,
            KindFilter::Exact(EventKind(0x1002)),
            KindFilter::Exact(EventKind(0xDFFF)),
            KindFilter::Category(1),
            KindFilter::Category(0xD),
        ];
        for kind in kinds_f {
            for scope in [None, Some(1)] {
                for entity in [
                    EntitySel::Any,
                    EntitySel::set(&[4]),
                    EntitySel::set(&[4, 9, 200]),
                ] {
                    let f = CellFilter {
                        kind,
                        scope,
                        entity,
                        clock: None,
                    };
                    let slow = (0..n)
                        .filter(|&i| f.cell(kinds[i].get(), scopes[i].get(), ents[i].get()))
                        .count();
                    assert_eq!(f.count(&kinds, &scopes, &ents), slow as u64, "{f:?}");
                }
            }
        }
    }
}
