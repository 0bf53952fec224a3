//! Event ids (UUIDv7) and the wall clock that never goes backwards.

use std::time::{SystemTime, UNIX_EPOCH};
use weir_protocol::locate::{IdKey, located_id, uuid7};

/// The latest wall time weir stamps: the most an id's 48-bit time holds
/// (year 10889). A clock past it stamps this.
pub const MAX_WALL_MS: u64 = (1 << 48) - 1;

/// Milliseconds since the Unix epoch, at most [`MAX_WALL_MS`].
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .min(MAX_WALL_MS)
}

/// 128 random bits from the kernel.
#[must_use]
pub fn random_u128() -> u128 {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        // No urandom (odd sandbox): fall back to time and pid, still unique per start.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return t ^ (u128::from(std::process::id()) << 96);
    }
    u128::from_le_bytes(b)
}

/// Hybrid wall clock: `max(now, last)`, seeded from the log on start.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    last: u64,
}

impl WallClock {
    /// Starts no earlier than `floor` (held to [`MAX_WALL_MS`], which a
    /// log written by an older build may exceed).
    #[must_use]
    pub fn new(floor: u64) -> Self {
        Self {
            last: floor.min(MAX_WALL_MS),
        }
    }
    /// The largest time handed out so far (or the floor it started from).
    #[must_use]
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next wall time.
    pub fn now(&mut self) -> u64 {
        self.last = self.last.max(now_ms());
        self.last
    }
}

/// Monotonic UUIDv7 generator: 48-bit ms time, version 7, a 12-bit counter
/// within the ms, variant 10, then 62 bits: the frame's place in the log
/// masked under the store's id key ([`weir_protocol::locate`]), or random
/// bits when there is no key or the place cannot be encoded.
#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
    last_ms: u64,
    counter: u16,
    key: Option<IdKey>,
}

impl IdGen {
    /// Seeded from the kernel; ids are self-locating under `key`.
    #[must_use]
    pub fn new(key: Option<IdKey>) -> Self {
        Self {
            state: random_u128() as u64,
            last_ms: 0,
            counter: 0,
            key,
        }
    }

    fn next_random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        weir_protocol::index::mix64(self.state)
    }

    /// The key its ids are located under.
    #[must_use]
    pub fn key(&self) -> Option<IdKey> {
        self.key
    }

    /// The stamp (`ms · 2^12 + counter`) of the newest id given; every
    /// later id has a greater one (0 before the first).
    #[must_use]
    pub fn last_stamp(&self) -> u64 {
        self.last_ms << 12 | u64::from(self.counter)
    }

    /// Gives only stamps above `stamp` from now on (a floor kept across
    /// starts, see `claims.rs`).
    pub fn raise_to(&mut self, stamp: u64) {
        let stamp = stamp.min(MAX_WALL_MS << 12 | 0xFFF);
        if stamp > self.last_stamp() {
            self.last_ms = stamp >> 12;
            self.counter = (stamp & 0xFFF) as u16;
        }
    }

    /// Where a self-locating id of this generator's key points.
    #[must_use]
    pub fn locate(&self, id: u128) -> Option<(u64, u64)> {
        weir_protocol::locate::locate(self.key?, id)
    }

    /// A new id, greater than every earlier one from this generator, for
    /// the event whose frame will start at `offset` of `segment`.
    pub fn next(&mut self, now_ms: u64, segment: u64, offset: u64) -> u128 {
        let ms = now_ms.min(MAX_WALL_MS).max(self.last_ms);
        if ms == self.last_ms {
            self.counter += 1;
            if self.counter > 0xFFF {
                // At MAX_WALL_MS the stamps repeat rather than wrap to 1970;
                // the ids stay unique by their place (or random bits).
                self.last_ms = (self.last_ms + 1).min(MAX_WALL_MS);
                self.counter = 0;
            }
        } else {
            self.last_ms = ms;
            self.counter = 0;
        }
        let (ms, counter) = (self.last_ms, self.counter);
        self.key
            .and_then(|key| located_id(key, ms, counter, segment, offset))
            .unwrap_or_else(|| uuid7(ms, counter, self.next_random()))
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_floor_holds_even_when_the_clock_is_behind_it() {
        let mut g = IdGen::new(IdKey::from_bytes(*b"a key of 16 byte"));
        g.raise_to(5_000 << 12 | 0xFFE);
        let stamp = |id| weir_protocol::locate::id_stamp(id).unwrap();
        let a = g.next(1_000, 0, 64);
        assert_eq!(stamp(a), 5_000 << 12 | 0xFFF);
        let b = g.next(1_000, 0, 128);
        assert_eq!(stamp(b), 5_001 << 12, "the counter carries into the ms");
        // A lower floor changes nothing.
        g.raise_to(7);
        assert_eq!(stamp(g.next(1_000, 0, 192)), 5_001 << 12 | 1);
        assert_eq!(g.last_stamp(), 5_001 << 12 | 1);
    }

    #[test]
    fn uuid7_is_versioned_and_increasing() {
        let key = IdKey::from_bytes(*b"a key of 16 byte");
        for (mut g, key) in [(IdGen::new(None), None), (IdGen::new(key), key)] {
            let mut last = 0;
            for i in 0..10_000u64 {
                let offset = 64 + 8 * i;
                let id = g.next(1_700_000_000_000 + i / 5000, 3, offset);
                assert_eq!((id >> 76) & 0xF, 7);
                assert_eq!((id >> 62) & 0b11, 0b10);
                assert!(id > last);
                last = id;
                if let Some(key) = key {
                    assert_eq!(weir_protocol::locate::locate(key, id), Some((3, offset)));
                }
            }
        }
        let mut c = WallClock::new(u64::MAX - 5);
        assert_eq!(c.now(), MAX_WALL_MS);
    }

    #[test]
    fn wall_times_past_the_ids_48_bits_are_held_at_the_last_they_hold() {
        // A clock past year 10889 used to stamp ids with its low 48 bits
        // (year 2142 for 11062), below the wall times the claims are
        // checked against: a client's id equal to the next daemon id was
        // not held as a claim, and two events shared an id.
        assert!(now_ms() <= MAX_WALL_MS);
        let key = IdKey::from_bytes(*b"a key of 16 byte");
        let mut g = IdGen::new(key);
        let stamp = |id| weir_protocol::locate::id_stamp(id).unwrap();
        let mut ids = std::collections::HashSet::new();
        for i in 0..10_000u64 {
            let id = g.next(MAX_WALL_MS + 1_000_000, 3, 64 + 8 * i);
            assert_eq!(stamp(id) >> 12, MAX_WALL_MS, "{i}");
            assert!(ids.insert(id), "{i}: a repeated id");
        }
        g.raise_to(u64::MAX);
        assert_eq!(g.last_stamp(), MAX_WALL_MS << 12 | 0xFFF);
        assert_eq!(WallClock::new(MAX_WALL_MS + 7).last(), MAX_WALL_MS);
    }
}
