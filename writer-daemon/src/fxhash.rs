//! A fast multiplicative hasher for the writer's in-memory maps (entity
//! heads, names, idempotency keys). Its seed is random per process, so
//! colliding keys cannot be precomputed; clients are authenticated local
//! peers in any case.

use std::hash::{BuildHasher, Hasher};

const K: u64 = 0xf135_7aea_2e62_a9c5;

/// The hasher.
#[derive(Debug, Clone, Copy)]
pub struct FxHasher {
    h: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(tail(rest) ^ ((rest.len() as u64) << 56));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its buckets from the top
        // and its tags from the top 7 bits.
        weir_protocol::index::mix64(self.h)
    }
}

/// The 1-7 bytes of `rest` as a little-endian word, high bytes zero:
/// `u64::from_le_bytes` of them zero-padded, read with two overlapping
/// loads instead. (Copying them into a zeroed buffer called `memcpy`, and
/// the word load right after its narrower stores could not be forwarded
/// from them: a stall on every name the writer hashed.)
#[inline]
fn tail(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let lo = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
        let hi = u64::from(u32::from_le_bytes([
            rest[n - 4],
            rest[n - 3],
            rest[n - 2],
            rest[n - 1],
        ]));
        // Bytes n-4..4 are in both words, equal: OR keeps them.
        lo | (hi << (8 * (n - 4)))
    } else {
        u64::from(rest[0])
            | (u64::from(rest[n / 2]) << (8 * (n / 2)))
            | (u64::from(rest[n - 1]) << (8 * (n - 1)))
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.h = (self.h.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

/// Builds [`FxHasher`]s with a per-process random seed.
#[derive(Debug, Clone, Copy)]
pub struct FxBuild {
    seed: u64,
}

impl Default for FxBuild {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        Self {
            seed: *SEED.get_or_init(|| crate::ids::random_u128() as u64),
        }
    }
}

impl BuildHasher for FxBuild {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher { h: self.seed }
    }
}

/// A map with [`FxHasher`].
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;
/// A set with [`FxHasher`].
pub type FxHashSet<K> = std::collections::HashSet<K, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_the_zero_padded_little_endian_word() {
        let bytes: Vec<u8> = (0x11..=0x17).collect();
        for n in 1..8 {
            let mut padded = [0u8; 8];
            padded[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(tail(&bytes[..n]), u64::from_le_bytes(padded), "{n} bytes");
        }
    }
}
