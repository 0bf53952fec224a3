//! Self-locating event ids: an id the daemon assigns carries the place of
//! its frame in the log, so that a lookup by id can read the frame at once,
//! without probing the index. See `docs/FORMAT.md` ("Event ids").
//!
//! A daemon-assigned id is a UUIDv7: 48 bits of ms time, version 7, a 12-bit
//! counter within the ms (ids of one daemon increase), variant `10`, and 62
//! bits `location ^ mask`. `location = segment << 38 | offset / 8`; `mask` is
//! a keyed mix of `ms << 12 | counter` under the store's 128-bit id key (in
//! the gate), so ids of different stores differ like random ones. Which mix
//! the gate says ([`IdMask`]): two multiply-xorshift rounds for stores made
//! since 2026-11-28 (a tenth of SipHash's instructions; a lookup by id
//! computes it first), SipHash-2-4 for older ones. The location is a hint:
//! a reader accepts a frame found through it only if it holds the very id
//! asked for, and otherwise probes the index as for any other id.

/// Segments below this number get self-locating ids (and a published
/// position); the log of a store with more keeps working, its ids carry
/// random bits instead.
pub const LOCATED_SEGMENTS: u64 = 1 << 23;
/// Frame offsets (bytes) below this can be located: every segment's, since
/// `segment-max-bytes` is at most 2^40.
pub const LOCATED_OFFSET_LIMIT: u64 = 1 << POSITION_OFFSET_BITS;
/// Bits of a packed log position that hold the offset (the segment above).
const POSITION_OFFSET_BITS: u32 = 41;
const OFFSET_BITS: u32 = 38;
const LOW62: u64 = (1 << 62) - 1;

/// How a store's ids are masked (the gate's `id mask` word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMask {
    /// 0: SipHash-2-4 (gates written by builds before 3da0113 hold 0 here).
    SipHash,
    /// 1: two multiply-xorshift rounds, keyed; every new store's.
    Mix,
}

impl IdMask {
    /// The gate's word for it.
    #[must_use]
    pub fn word(self) -> u32 {
        match self {
            Self::SipHash => 0,
            Self::Mix => 1,
        }
    }
    /// The mask a gate's word names; `None` for a word this build does not
    /// know (readers then find ids through the index).
    #[must_use]
    pub fn from_word(word: u32) -> Option<Self> {
        match word {
            0 => Some(Self::SipHash),
            1 => Some(Self::Mix),
            _ => None,
        }
    }
}

/// The store's key for id masks: 128 random bits, kept in the gate and
/// carried from gate to gate across restarts, with the mask it keys.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdKey {
    k0: u64,
    k1: u64,
    how: IdMask,
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not a secret, but no reason to print it.
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// The key in `bytes`, for the mask every new store uses
    /// ([`IdMask::Mix`]); `None` for all zeros (a gate without a key).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        let k = u128::from_le_bytes(bytes);
        (k != 0).then_some(Self {
            k0: k as u64,
            k1: (k >> 64) as u64,
            how: IdMask::Mix,
        })
    }
    /// This key for mask `how`.
    #[must_use]
    pub fn with_mask(self, how: IdMask) -> Self {
        Self { how, ..self }
    }
    /// The mask it keys.
    #[must_use]
    pub fn mask_kind(self) -> IdMask {
        self.how
    }
    /// Its 16 bytes, as the gate stores them.
    #[must_use]
    pub fn to_bytes(self) -> [u8; 16] {
        (u128::from(self.k0) | u128::from(self.k1) << 64).to_le_bytes()
    }

    fn mask(self, stamp: u64) -> u64 {
        match self.how {
            IdMask::SipHash => siphash24(self.k0, self.k1, stamp) & LOW62,
            IdMask::Mix => mix(self.k0, self.k1, stamp) & LOW62,
        }
    }
}

/// Two multiply-xorshift rounds of `x` under `(k0, k1)` (the low bit of `k1`
/// is forced to 1): every input bit reaches every output bit. Not a
/// cryptographic function: it keeps ids of different stores apart, but
/// someone who learns the places of a few ids of one store can recover the
/// key (FORMAT.md, "Event ids").
fn mix(k0: u64, k1: u64, x: u64) -> u64 {
    let x = (x ^ k0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let x = (x ^ (x >> 32)).wrapping_mul(k1 | 1);
    x ^ (x >> 29)
}

/// The id the daemon gives the event whose frame starts at `offset` of
/// `segment`, stamped `ms` and `counter` (the counter orders ids within one
/// ms). `None` if the place cannot be encoded (the caller then fills the 62
/// bits at random).
#[must_use]
pub fn located_id(key: IdKey, ms: u64, counter: u16, segment: u64, offset: u64) -> Option<u128> {
    if segment >= LOCATED_SEGMENTS || offset >= LOCATED_OFFSET_LIMIT || !offset.is_multiple_of(8) {
        return None;
    }
    let stamp = (ms & 0xFFFF_FFFF_FFFF) << 12 | u64::from(counter & 0xFFF);
    let location = segment << OFFSET_BITS | offset >> 3;
    Some(uuid7(ms, counter, location ^ key.mask(stamp)))
}

/// A UUIDv7 with these fields (`low62` is cut to 62 bits).
#[must_use]
pub fn uuid7(ms: u64, counter: u16, low62: u64) -> u128 {
    u128::from(ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | u128::from(counter & 0xFFF) << 64
        | 0b10 << 62
        | u128::from(low62 & LOW62)
}

/// The stamp `ms · 2^12 + counter` of a UUIDv7 (version 7, variant `10`),
/// the order in which one daemon gives its ids; `None` for any other id.
#[must_use]
pub fn id_stamp(id: u128) -> Option<u64> {
    if (id >> 76) & 0xF != 7 || (id >> 62) & 0b11 != 0b10 {
        return None;
    }
    // The high half is ms << 16 | 7 << 12 | counter: take the version out.
    let hi = (id >> 64) as u64;
    Some((hi >> 16) << 12 | (hi & 0xFFF))
}

/// Where the frame of `id` lies, if `id` was made by [`located_id`] under
/// `key`: `(segment, offset)`. Any other UUIDv7 decodes to some place too
/// (usually a segment that does not exist); the caller must check that the
/// frame there holds `id`. `None` for an id that is not a UUIDv7.
#[must_use]
pub fn locate(key: IdKey, id: u128) -> Option<(u64, u64)> {
    let stamp = id_stamp(id)?;
    let location = (id as u64 & LOW62) ^ key.mask(stamp);
    Some((
        location >> OFFSET_BITS,
        (location & ((1 << OFFSET_BITS) - 1)) << 3,
    ))
}

/// Packs the log position "every frame byte before `offset` of `segment`,
/// and every byte of earlier segments, is written" for the gate's
/// `published` word; 0 (nothing) if it does not fit.
#[must_use]
pub fn pack_position(segment: u64, offset: u64) -> u64 {
    if segment >= LOCATED_SEGMENTS || offset >= LOCATED_OFFSET_LIMIT {
        return 0;
    }
    segment << POSITION_OFFSET_BITS | offset
}

/// The inverse of [`pack_position`]: `(segment, offset)`.
#[must_use]
pub fn unpack_position(word: u64) -> (u64, u64) {
    (
        word >> POSITION_OFFSET_BITS,
        word & (LOCATED_OFFSET_LIMIT - 1),
    )
}

/// SipHash-2-4 of one little-endian u64 under the key `(k0, k1)`.
#[must_use]
pub fn siphash24(k0: u64, k1: u64, m: u64) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    // Two blocks: the message, then its length (8) in the top byte.
    for block in [m, 8 << 56] {
        v[3] ^= block;
        round(&mut v);
        round(&mut v);
        v[0] ^= block;
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vector_and_std() {
        // The SipHash paper's vector: key 00..0f, message 00..07.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let m = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(siphash24(k0, k1, m), 0x93f5_f579_9a93_2462);
        for i in 0..1000u64 {
            let (k0, k1, m) = (i.wrapping_mul(0x9e37_79b9), !i << 7, (i * i) ^ 0x55);
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            std::hash::Hasher::write(&mut h, &m.to_le_bytes());
            assert_eq!(siphash24(k0, k1, m), std::hash::Hasher::finish(&h));
        }
    }

    #[test]
    fn located_ids_round_trip_and_stay_uuid7() {
        let key = IdKey::from_bytes(*b"0123456789abcdef").expect("non-zero");
        assert_eq!(key.mask_kind(), IdMask::Mix, "new keys mix");
        round_trips(key);
        round_trips(key.with_mask(IdMask::SipHash));
        assert_eq!(IdKey::from_bytes([0; 16]), None);
        // Not a UUIDv7 (version, then variant, wrong): no stamp.
        let id = located_id(key, 1_700_000_000_000, 3, 1, 64).expect("encodable");
        assert_eq!(id_stamp(id ^ 1 << 77), None);
        assert_eq!(id_stamp(id ^ 1 << 63), None);
        assert_eq!(IdKey::from_bytes(key.to_bytes()), Some(key));
    }

    #[test]
    fn the_two_masks_differ_and_their_words_round_trip() {
        let key = IdKey::from_bytes(*b"0123456789abcdef").expect("non-zero");
        let sip = key.with_mask(IdMask::SipHash);
        let id = located_id(key, 1_700_000_000_000, 5, 3, 4096).expect("encodable");
        assert_ne!(Some(id), located_id(sip, 1_700_000_000_000, 5, 3, 4096));
        assert_ne!(
            locate(sip, id),
            Some((3, 4096)),
            "a mixed id read as SipHash"
        );
        for how in [IdMask::SipHash, IdMask::Mix] {
            assert_eq!(IdMask::from_word(how.word()), Some(how));
        }
        assert_eq!(IdMask::from_word(2), None);
    }

    #[test]
    fn mix_is_the_function_format_md_gives() {
        // Values of the formula in FORMAT.md ("Event ids"), worked out apart.
        assert_eq!(mix(1, 2, 3), 0xb54c_da5d_e288_f0ca);
        assert_eq!(
            mix(0xDEAD_BEEF, 0x1234, 1_700_000_000_000 << 12 | 5),
            0x4317_ee59_739c_64a1
        );
    }

    #[test]
    fn mix_spreads_sequential_stamps() {
        // Consecutive stamps (as one ms's counter gives) flip about half
        // of the 62 mask bits, under any key.
        let (mut flips, mut n) = (0u32, 0u32);
        for (k0, k1) in [(1, 2), (0xDEAD_BEEF, 0x1234_5678_9ABC_DEF0)] {
            for s in 0..1000u64 {
                flips += ((mix(k0, k1, s) ^ mix(k0, k1, s + 1)) & LOW62).count_ones();
                n += 1;
            }
        }
        let mean = f64::from(flips) / f64::from(n);
        assert!((27.0..35.0).contains(&mean), "mean flipped bits {mean}");
    }

    fn round_trips(key: IdKey) {
        let mut last = 0;
        for (i, (seg, off)) in [
            (0, 64),
            (1, 64),
            (5, 4096),
            (LOCATED_SEGMENTS - 1, (1 << 41) - 8),
        ]
        .into_iter()
        .enumerate()
        {
            for counter in [0u16, 1, 0xFFF] {
                let ms = 1_700_000_000_000 + i as u64;
                let id = located_id(key, ms, counter, seg, off).expect("encodable");
                assert_eq!((id >> 76) & 0xF, 7, "version");
                assert_eq!((id >> 62) & 0b11, 0b10, "variant");
                assert_eq!((id >> 80) as u64, ms, "time");
                assert_eq!(((id >> 64) & 0xFFF) as u16, counter, "counter");
                assert_eq!(locate(key, id), Some((seg, off)));
                assert_eq!(id_stamp(id), Some(ms << 12 | u64::from(counter)));
                assert!(id > last, "ids increase with (ms, counter)");
                last = id;
                // Another key finds another place (almost surely).
                let other = IdKey::from_bytes(*b"fedcba9876543210")
                    .expect("non-zero")
                    .with_mask(key.mask_kind());
                assert_ne!(locate(other, id), Some((seg, off)));
            }
        }
        assert_eq!(located_id(key, 1, 0, LOCATED_SEGMENTS, 64), None);
        assert_eq!(located_id(key, 1, 0, 0, LOCATED_OFFSET_LIMIT), None);
        assert_eq!(located_id(key, 1, 0, 0, 65), None, "frames are 8-aligned");
        assert_eq!(locate(key, 0), None, "not a UUIDv7");
    }

    #[test]
    fn same_place_and_time_in_two_stores_gives_two_ids() {
        let a = IdKey::from_bytes(*b"store-a.........").expect("non-zero");
        let b = IdKey::from_bytes(*b"store-b.........").expect("non-zero");
        assert_ne!(located_id(a, 7, 0, 0, 64), located_id(b, 7, 0, 0, 64));
    }

    #[test]
    fn positions_pack_and_refuse_what_does_not_fit() {
        assert_eq!(unpack_position(pack_position(3, 4096)), (3, 4096));
        assert_eq!(
            unpack_position(pack_position(LOCATED_SEGMENTS - 1, (1 << 41) - 1)),
            (LOCATED_SEGMENTS - 1, (1 << 41) - 1)
        );
        assert_eq!(pack_position(LOCATED_SEGMENTS, 0), 0);
        assert_eq!(pack_position(0, 1 << 41), 0);
    }
}
