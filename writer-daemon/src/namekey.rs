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

use crate::fxhash::{FxBuild, FxHashMap};
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};

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

/// A map keyed by names, spread over maps (see [`Sharded`]).
pub type NameMap<V> = Sharded<NameKey, V>;

/// Maps a [`Sharded`] map spreads its keys over.
const SHARDS: usize = 64;

/// A map spread over `SHARDS` (64) maps by a hash of the key. A map that
/// outgrows its table moves every slot to a new one at once, on the
/// writer thread: with a million entities in one map that stalled every
/// append for 50-170 ms. Each of these maps holds a 64th of the keys, so
/// each such move does a 64th of the work (and they fall on different
/// appends).
#[derive(Debug, Clone)]
pub struct Sharded<K, V> {
    shards: Box<[FxHashMap<K, V>]>,
    build: FxBuild,
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| FxHashMap::default()).collect(),
            build: FxBuild::default(),
        }
    }
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    /// The map that holds `key`: bits of its hash the maps do not use
    /// themselves (they take the low bits for a slot, the top 7 for a tag).
    #[inline]
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        (self.build.hash_one(key) >> 40) as usize % SHARDS
    }
    /// The value of `key`.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }
    /// The value of `key`, to change.
    #[inline]
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard(key);
        self.shards[i].get_mut(key)
    }
    /// Sets `key`'s value; returns the one it replaced.
    #[inline]
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let i = self.shard(&key);
        self.shards[i].insert(key, value)
    }
    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.shard(key);
        self.shards[i].remove(key)
    }
    /// Keys held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(FxHashMap::len).sum()
    }
    /// Holds no key?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(FxHashMap::is_empty)
    }
    /// Forgets every key (keeping the maps' room).
    pub fn clear(&mut self) {
        self.shards.iter_mut().for_each(FxHashMap::clear);
    }
    /// Every (key, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|m| m.iter())
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

    #[test]
    fn a_name_map_spreads_its_names_and_finds_each() {
        let mut m: NameMap<usize> = NameMap::default();
        let name = |i: usize| format!("user:{i}").into_bytes();
        for i in 0..20_000 {
            assert_eq!(m.insert(NameKey::from(&name(i)[..]), i), None);
        }
        assert_eq!(m.insert(NameKey::from(&name(7)[..]), 70), Some(7));
        assert_eq!(m.len(), 20_000);
        for i in 0..20_000 {
            let want = if i == 7 { 70 } else { i };
            assert_eq!(m.get(&name(i)[..]), Some(&want), "{i}");
        }
        *m.get_mut(&name(9)[..]).expect("held") = 90;
        assert_eq!(m.get(&name(9)[..]), Some(&90));
        assert_eq!(m.remove(&name(9)[..]), Some(90));
        assert_eq!(m.get(&name(9)[..]), None);
        assert_eq!(m.iter().count(), 19_999);
        // Every map holds a share: none more than twice the mean (a map of
        // all the names would grow as one did before).
        let most = m.shards.iter().map(FxHashMap::len).max().unwrap_or(0);
        assert!(most < 2 * 19_999 / SHARDS, "{most} names in one map");
        assert!(m.shards.iter().all(|s| !s.is_empty()));
    }
}
