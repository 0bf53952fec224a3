//! BLAKE3 over several short messages at once: one SIMD lane per message.
//!
//! `blake3::hash` compresses a message of one chunk (at most 1024 bytes)
//! block after block on one lane of the vector unit; the writer hashes
//! every event, and that serial compression was about a fifth of its time
//! per event (213 ns of ≈ 1050, typical 250-byte messages) and two fifths
//! of its instructions. Here each 32-bit word of the compression state is a vector with
//! one lane per message, so one pass over the rounds compresses a block of
//! each of [`LANES`] messages. Messages of different lengths share the pass:
//! block length, flags and "still running" are per lane.
//!
//! Only the root hash of a single-chunk message is computed (chunk counter
//! 0, no key, no extended output); longer messages take `blake3::hash`.
//! The tests compare every length from 0 to 1024 against `blake3::hash`.
//!
//! The lane code is plain safe Rust on arrays that the compiler vectorises
//! when it is compiled with AVX-512VL or AVX2 (x86-64). Calling those
//! compilations, after the CPU was checked for the features they need, is
//! the module's only `unsafe`.
#![allow(unsafe_code)]

/// Messages hashed per pass.
pub const LANES: usize = 8;

/// Longest message hashed here: one BLAKE3 chunk.
pub const MAX_LEN: usize = 1024;

const BLOCK: usize = 64;

const IV: [u32; 8] = [
    0x6A09_E667,
    0xBB67_AE85,
    0x3C6E_F372,
    0xA54F_F53A,
    0x510E_527F,
    0x9B05_688C,
    0x1F83_D9AB,
    0x5BE0_CD19,
];

const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const ROOT: u32 = 8;

/// Message word order of each of the seven rounds (BLAKE3's permutation
/// applied round after round to 0..16).
const SCHEDULE: [[usize; 16]; 7] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8],
    [3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1],
    [10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6],
    [12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4],
    [9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7],
    [11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13],
];

/// One 32-bit word of every lane.
type V = [u32; LANES];

/// Hashes each of `msgs` (at most [`LANES`], each at most [`MAX_LEN`]
/// bytes) into the same index of `out`.
///
/// # Panics
/// If either bound is broken or `out` is shorter than `msgs`.
pub fn hash_many(msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    assert!(msgs.len() <= LANES && out.len() >= msgs.len());
    assert!(msgs.iter().all(|m| m.len() <= MAX_LEN));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
        // SAFETY: the CPU supports AVX-512F and AVX-512VL (checked just
        // above), the only requirement of this `#[target_feature]` function.
        unsafe { hash_many_avx512(msgs, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only
        // requirement of a `#[target_feature(enable = "avx2")]` function.
        unsafe { hash_many_avx2(msgs, out) };
        return;
    }
    hash_many_portable(msgs, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hash_many_avx2(msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    lanes(msgs, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn hash_many_avx512(msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    lanes(msgs, out);
}

fn hash_many_portable(msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    for (m, o) in msgs.iter().zip(out.iter_mut()) {
        *o = *blake3::hash(m).as_bytes();
    }
}

/// Blocks a message of `len` bytes compresses (an empty one still one).
fn blocks(len: usize) -> usize {
    len.div_ceil(BLOCK).max(1)
}

#[inline(always)]
fn lanes(msgs: &[&[u8]], out: &mut [[u8; 32]]) {
    let mut cv: [V; 8] = std::array::from_fn(|w| [IV[w]; LANES]);
    let rounds = msgs.iter().map(|m| blocks(m.len())).max().unwrap_or(0);
    for b in 0..rounds {
        // Each lane's block, lane-major (whole-block copies), then turned
        // word-major for the compression. A lane past its last block
        // compresses zeros and keeps its chaining value (`keep`).
        let mut blk = [[0u32; 16]; LANES];
        let mut block_len = [0u32; LANES];
        let mut flags = [0u32; LANES];
        let mut keep = [u32::MAX; LANES];
        for (l, m) in msgs.iter().enumerate() {
            let n = blocks(m.len());
            if b >= n {
                continue;
            }
            keep[l] = 0;
            let start = b * BLOCK;
            let bytes = &m[start..m.len().min(start + BLOCK)];
            let mut padded = [0u8; BLOCK];
            padded[..bytes.len()].copy_from_slice(bytes);
            for (w, word) in padded.chunks_exact(4).enumerate() {
                blk[l][w] = u32::from_le_bytes(word.try_into().expect("4 bytes"));
            }
            block_len[l] = bytes.len() as u32;
            flags[l] = if b == 0 { CHUNK_START } else { 0 }
                | if b + 1 == n { CHUNK_END | ROOT } else { 0 };
        }
        let words: [V; 16] = std::array::from_fn(|w| std::array::from_fn(|l| blk[l][w]));
        let next = compress(&cv, &words, &block_len, &flags);
        for (c, n) in cv.iter_mut().zip(&next) {
            for l in 0..LANES {
                c[l] = (c[l] & keep[l]) | (n[l] & !keep[l]);
            }
        }
    }
    for (l, o) in out.iter_mut().enumerate().take(msgs.len()) {
        for w in 0..8 {
            o[4 * w..4 * w + 4].copy_from_slice(&cv[w][l].to_le_bytes());
        }
    }
}

/// One compression of every lane, chunk counter 0; returns the new
/// chaining values (the first 8 output words).
#[inline(always)]
fn compress(cv: &[V; 8], m: &[V; 16], block_len: &V, flags: &V) -> [V; 8] {
    let mut s: [V; 16] = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        [IV[0]; LANES],
        [IV[1]; LANES],
        [IV[2]; LANES],
        [IV[3]; LANES],
        [0; LANES],
        [0; LANES],
        *block_len,
        *flags,
    ];
    for order in &SCHEDULE {
        g(&mut s, [0, 4, 8, 12], &m[order[0]], &m[order[1]]);
        g(&mut s, [1, 5, 9, 13], &m[order[2]], &m[order[3]]);
        g(&mut s, [2, 6, 10, 14], &m[order[4]], &m[order[5]]);
        g(&mut s, [3, 7, 11, 15], &m[order[6]], &m[order[7]]);
        g(&mut s, [0, 5, 10, 15], &m[order[8]], &m[order[9]]);
        g(&mut s, [1, 6, 11, 12], &m[order[10]], &m[order[11]]);
        g(&mut s, [2, 7, 8, 13], &m[order[12]], &m[order[13]]);
        g(&mut s, [3, 4, 9, 14], &m[order[14]], &m[order[15]]);
    }
    std::array::from_fn(|w| std::array::from_fn(|l| s[w][l] ^ s[w + 8][l]))
}

/// BLAKE3's quarter-round on every lane.
#[inline(always)]
fn g(s: &mut [V; 16], [a, b, c, d]: [usize; 4], x: &V, y: &V) {
    for l in 0..LANES {
        let (mut va, mut vb, mut vc, mut vd) = (s[a][l], s[b][l], s[c][l], s[d][l]);
        va = va.wrapping_add(vb).wrapping_add(x[l]);
        vd = (vd ^ va).rotate_right(16);
        vc = vc.wrapping_add(vd);
        vb = (vb ^ vc).rotate_right(12);
        va = va.wrapping_add(vb).wrapping_add(y[l]);
        vd = (vd ^ va).rotate_right(8);
        vc = vc.wrapping_add(vd);
        vb = (vb ^ vc).rotate_right(7);
        (s[a][l], s[b][l], s[c][l], s[d][l]) = (va, vb, vc, vd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i * 31 + seed * 7 + i / 5) as u8)
            .collect()
    }

    #[test]
    fn every_length_matches_blake3() {
        // Eight lanes of different lengths per pass, so that lanes stop at
        // different blocks (then every length 0..=1024 alone, below).
        let lens: Vec<usize> = (0..=MAX_LEN).collect();
        for (k, group) in lens.chunks(LANES).enumerate() {
            let group: Vec<usize> = group
                .iter()
                .map(|&l| (l * 37 + k) % (MAX_LEN + 1))
                .collect();
            let msgs: Vec<Vec<u8>> = group.iter().map(|&l| message(l, k)).collect();
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let mut out = [[0u8; 32]; LANES];
            hash_many(&refs, &mut out);
            for (m, h) in msgs.iter().zip(&out) {
                assert_eq!(h, blake3::hash(m).as_bytes(), "length {}", m.len());
            }
        }
        for len in 0..=MAX_LEN {
            let m = message(len, 3);
            let mut out = [[0u8; 32]; 1];
            hash_many(&[&m], &mut out);
            assert_eq!(&out[0], blake3::hash(&m).as_bytes(), "length {len} alone");
        }
    }

    #[test]
    fn lane_code_matches_without_avx2_too() {
        // The lane code itself, compiled without AVX2, whatever this CPU has.
        let msgs: Vec<Vec<u8>> = (0..LANES).map(|l| message(l * 130, l)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let mut out = [[0u8; 32]; LANES];
        lanes(&refs, &mut out);
        for (m, h) in msgs.iter().zip(&out) {
            assert_eq!(h, blake3::hash(m).as_bytes(), "length {}", m.len());
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_compilation_matches_where_the_cpu_has_it() {
        // `hash_many` takes AVX-512 where it can; test the AVX2 path too.
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let msgs: Vec<Vec<u8>> = (0..LANES).map(|l| message(l * 129 + 3, l)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let mut out = [[0u8; 32]; LANES];
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { hash_many_avx2(&refs, &mut out) };
        for (m, h) in msgs.iter().zip(&out) {
            assert_eq!(h, blake3::hash(m).as_bytes(), "length {}", m.len());
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let long = vec![0u8; MAX_LEN + 1];
        let r = std::panic::catch_unwind(|| hash_many(&[&long], &mut [[0; 32]]));
        assert!(r.is_err());
    }
}
