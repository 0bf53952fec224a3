//! An entity or scope name as a hash-map key, held in the map's own slot
//! when it is short.
//!
//! The writer looks up every event's entity by name twice (its chain head,
//! its string id) in maps of one slot per entity. With `Box<[u8]>` keys,
//! comparing the key first loads the slot, then the name's heap block: two
//! cache misses per lookup once the entities outgrow the CPU caches. Names
//! of up to [`INLINE`] bytes (most: `user:12345`, `order-2026-000123`) are
//! kept in the slot instead, so the comparison reads the line the slot is
//! on. Longer names still live on the heap.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Longest name kept inline.
pub const INLINE: usize = 22;

/// A name, inline up to [`INLINE`] bytes, else boxed. 24 bytes either way.
#[derive(Clone)]
pub enum NameKey {
    /// `bytes[..len]` is the name.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A longer name.
    Heap(Box<[u8]>),
}

impl NameKey {
    /// The name's bytes.
    #[must_use]
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for NameKey {
    #[inline]
    fn from(name: &[u8]) -> Self {
        if name.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..name.len()].copy_from_slice(name);
            Self::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(name.into())
        }
    }
}

impl std::ops::Deref for NameKey {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<[u8]> for NameKey {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

// Hash and equality are the bytes' own, as `Borrow<[u8]>` requires: a map
// keyed by `NameKey` is searched with a plain `&[u8]`.
impl Hash for NameKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for NameKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for NameKey {}

impl std::fmt::Debug for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fxhash::FxHashMap;

    #[test]
    fn short_and_long_names_are_found_by_their_bytes() {
        let names: Vec<Vec<u8>> = [0, 1, 9, INLINE - 1, INLINE, INLINE + 1, 300]
            .iter()
            .map(|&n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        let mut m: FxHashMap<NameKey, usize> = FxHashMap::default();
        for (i, n) in names.iter().enumerate() {
            let k = NameKey::from(&n[..]);
            assert_eq!(k.as_bytes(), &n[..]);
            assert_eq!(
                matches!(k, NameKey::Inline { .. }),
                n.len() <= INLINE,
                "{} bytes",
                n.len()
            );
            m.insert(k, i);
        }
        assert_eq!(m.len(), names.len());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(m.get(&n[..]), Some(&i), "{} bytes", n.len());
        }
        // A prefix of an inline name (the padding is zeros) is another key.
        assert_eq!(m.get(&b"abcdefghi\0"[..]), None);
        assert_eq!(std::mem::size_of::<NameKey>(), 24);
    }
}
