//! Idempotency keys generated for appends that carry none: 16 bytes from
//! `/dev/urandom` once per process, then a counter and the pid pushed
//! through a bijective mixer, so keys never repeat within a process (or a
//! forked child) and collide across processes with probability ~2^-64.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static SEED: OnceLock<u128> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn seed() -> u128 {
    *SEED.get_or_init(|| {
        let mut b = [0u8; 16];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
        if read.is_err() {
            // No urandom (odd sandboxes): time and address entropy, mixed.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let addr = std::ptr::addr_of!(b) as usize as u128;
            b = mix(t ^ (addr << 64)).to_le_bytes();
        }
        u128::from_le_bytes(b)
    })
}

/// A bijection on u128 (xor-shift and odd multiplications), so distinct
/// inputs give distinct keys.
fn mix(mut x: u128) -> u128 {
    x ^= x >> 67;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    x ^= x >> 59;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93_2b9b_14f0_6b1d_d8e5);
    x ^ (x >> 64)
}

/// A fresh, never-zero idempotency key.
pub(crate) fn new_key() -> u128 {
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = u128::from(std::process::id());
        let k = mix(seed().wrapping_add((pid << 64) | u128::from(n)));
        if k != 0 {
            return k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_do_not_repeat() {
        let keys: HashSet<u128> = (0..100_000).map(|_| new_key()).collect();
        assert_eq!(keys.len(), 100_000);
        assert!(!keys.contains(&0));
    }
}
