//! The hash chain. `event_hash` commits to the event's identity, its
//! predecessor in the same entity, and its payload; see `docs/FORMAT.md`
//! ("Event hash") for the exact byte sequence.

mod lanes;

/// Domain separator that opens every hashed message.
pub const EVENT_HASH_DOMAIN: &[u8; 16] = b"weir.event.v1\0\0\0";

/// Everything `event_hash` covers.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    /// Event id.
    pub event_id: u128,
    /// Correlation id.
    pub correlation_id: u128,
    /// Causation id, if any.
    pub causation_id: Option<u128>,
    /// Kind.
    pub kind: u16,
    /// Per-entity clock.
    pub clock: u32,
    /// Wall time, ms since the Unix epoch.
    pub wall_ms: u64,
    /// Entity name.
    pub entity: &'a [u8],
    /// Scope name.
    pub scope: &'a [u8],
    /// The same entity's previous `event_hash`, zeros for its first event.
    pub prev_hash: [u8; 32],
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// blake3 over the canonical encoding of `input` (all integers little-endian):
/// domain(16) ‖ event_id(16) ‖ correlation_id(16) ‖ has_causation(1) ‖
/// causation_id(16, zero if none) ‖ kind(2) ‖ clock(4) ‖ wall_ms(8) ‖
/// entity_len(4) ‖ entity ‖ scope_len(4) ‖ scope ‖ prev_hash(32) ‖
/// payload_len(8) ‖ payload.
#[must_use]
pub fn event_hash(input: &HashInput<'_>) -> [u8; 32] {
    // One contiguous message and one `update`: blake3's per-call overhead
    // and an allocation per event dominate for small events. Typical events
    // fit the stack buffer; larger ones hash the head, then the payload.
    const INLINE: usize = 512;
    let head_len = HEAD_FIXED + input.entity.len() + input.scope.len();
    if head_len + input.payload.len() <= INLINE {
        let mut msg = [0u8; INLINE];
        let mut at = 0;
        put_head(input, |b| {
            msg[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        });
        msg[at..at + input.payload.len()].copy_from_slice(input.payload);
        at += input.payload.len();
        return *blake3::hash(&msg[..at]).as_bytes();
    }
    let mut head = Vec::with_capacity(head_len);
    put_head(input, |b| head.extend_from_slice(b));
    let mut h = blake3::Hasher::new();
    h.update(&head);
    h.update(input.payload);
    *h.finalize().as_bytes()
}

/// Hashes many events at once: [`event_hash`] of each, computed
/// [`LANES`](EventHasher::LANES) messages per pass of the vector unit (see
/// `lanes.rs`). Keeps its message buffer from call to call.
#[derive(Debug, Default)]
pub struct EventHasher {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl EventHasher {
    /// Most events one [`hash_all`](Self::hash_all) call hashes in one pass.
    pub const LANES: usize = lanes::LANES;

    /// Writes `event_hash(&inputs[i])` to `out[i]` for every `i`.
    ///
    /// Messages of up to one chunk go through the lanes, [`LANES`](Self::LANES)
    /// per pass; longer ones, and a last pass of fewer than [`MIN_PASS`]
    /// messages (a pass costs about as much for one message as for eight),
    /// are hashed one by one.
    ///
    /// # Panics
    /// If `out` is shorter than `inputs`.
    pub fn hash_all(&mut self, inputs: &[HashInput<'_>], out: &mut [[u8; 32]]) {
        assert!(out.len() >= inputs.len(), "one output per input");
        let mut pass = [0usize; lanes::LANES];
        let mut n = 0;
        for (k, i) in inputs.iter().enumerate() {
            if message_len(i) > lanes::MAX_LEN {
                out[k] = event_hash(i);
                continue;
            }
            pass[n] = k;
            n += 1;
            if n == lanes::LANES {
                self.pass(inputs, &pass, out);
                n = 0;
            }
        }
        if n >= MIN_PASS {
            self.pass(inputs, &pass[..n], out);
        } else {
            for &k in &pass[..n] {
                out[k] = event_hash(&inputs[k]);
            }
        }
    }

    /// Hashes `inputs[k]` for each `k` of `which` (at most `LANES`, each
    /// message at most one chunk) in one pass of the lanes.
    fn pass(&mut self, inputs: &[HashInput<'_>], which: &[usize], out: &mut [[u8; 32]]) {
        self.buf.clear();
        self.ends.clear();
        for &k in which {
            let i = &inputs[k];
            put_head(i, |b| self.buf.extend_from_slice(b));
            self.buf.extend_from_slice(i.payload);
            self.ends.push(self.buf.len());
        }
        let mut msgs: [&[u8]; lanes::LANES] = [&[]; lanes::LANES];
        let mut start = 0;
        for (m, &end) in msgs.iter_mut().zip(&self.ends) {
            *m = &self.buf[start..end];
            start = end;
        }
        let mut hashes = [[0u8; 32]; lanes::LANES];
        lanes::hash_many(&msgs[..which.len()], &mut hashes);
        for (&k, h) in which.iter().zip(hashes) {
            out[k] = h;
        }
    }
}

/// Fewest messages [`EventHasher::hash_all`] hashes in one pass of the lanes:
/// below it, one by one is faster (AVX-512 machine, 100-byte payloads: a
/// pass of one message 583 ns, of two 305 ns per message, of eight 99.5 ns;
/// one by one 224 ns).
pub const MIN_PASS: usize = 3;

/// Length of `event_hash`'s message for `input`.
fn message_len(input: &HashInput<'_>) -> usize {
    HEAD_FIXED + input.entity.len() + input.scope.len() + input.payload.len()
}

/// Bytes of the message before the payload that do not depend on the names.
const HEAD_FIXED: usize = 16 + 16 + 16 + 1 + 16 + 2 + 4 + 8 + 4 + 4 + 32 + 8;

/// Hands `put` the message up to the payload, in order.
fn put_head(input: &HashInput<'_>, mut put: impl FnMut(&[u8])) {
    put(EVENT_HASH_DOMAIN);
    put(&input.event_id.to_le_bytes());
    put(&input.correlation_id.to_le_bytes());
    put(&[u8::from(input.causation_id.is_some())]);
    put(&input.causation_id.unwrap_or(0).to_le_bytes());
    put(&input.kind.to_le_bytes());
    put(&input.clock.to_le_bytes());
    put(&input.wall_ms.to_le_bytes());
    put(&(input.entity.len() as u32).to_le_bytes());
    put(input.entity);
    put(&(input.scope.len() as u32).to_le_bytes());
    put(input.scope);
    put(&input.prev_hash);
    put(&(input.payload.len() as u64).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashInput<'static> {
        HashInput {
            event_id: 1,
            correlation_id: 1,
            causation_id: None,
            kind: 0x1001,
            clock: 0,
            wall_ms: 5,
            entity: b"e",
            scope: b"s",
            prev_hash: [0; 32],
            payload: b"p",
        }
    }

    #[test]
    fn hash_matches_the_documented_encoding() {
        let i = base();
        let mut m = Vec::new();
        m.extend_from_slice(b"weir.event.v1\0\0\0");
        m.extend_from_slice(&1u128.to_le_bytes());
        m.extend_from_slice(&1u128.to_le_bytes());
        m.push(0);
        m.extend_from_slice(&0u128.to_le_bytes());
        m.extend_from_slice(&0x1001u16.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&5u64.to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes());
        m.push(b'e');
        m.extend_from_slice(&1u32.to_le_bytes());
        m.push(b's');
        m.extend_from_slice(&[0; 32]);
        m.extend_from_slice(&1u64.to_le_bytes());
        m.push(b'p');
        assert_eq!(event_hash(&i), *blake3::hash(&m).as_bytes());
    }

    #[test]
    fn small_and_large_events_hash_the_same_message() {
        // Around the stack buffer's size the message is hashed in one call
        // or in two; both must be the documented bytes.
        for len in [0, 300, 350, 351, 352, 400, 600, 5000] {
            let payload = vec![7u8; len];
            let entity = vec![b'x'; 30];
            let i = HashInput {
                payload: &payload,
                entity: &entity,
                causation_id: Some(9),
                ..base()
            };
            let mut m = Vec::new();
            put_head(&i, |b| m.extend_from_slice(b));
            assert_eq!(m.len(), HEAD_FIXED + 30 + 1, "len {len}");
            m.extend_from_slice(&payload);
            assert_eq!(event_hash(&i), *blake3::hash(&m).as_bytes(), "len {len}");
        }
    }

    #[test]
    fn many_at_once_equals_one_by_one() {
        // Message lengths around one chunk: 129 bytes of head here, so a
        // payload of 895 makes exactly 1024 bytes (through the lanes) and
        // 896 one byte more (one by one), mixed into passes of short ones;
        // counts around the lane width and the smallest pass.
        let lens = [
            0, 1, 100, 895, 300, 896, 57, 894, 100, 5000, 2, 640, 895, 100,
        ];
        let payloads: Vec<Vec<u8>> = (0..48)
            .map(|k| vec![k as u8; lens[k % lens.len()]])
            .collect();
        let inputs: Vec<HashInput<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(k, p)| HashInput {
                payload: p,
                clock: k as u32,
                ..base()
            })
            .collect();
        assert_eq!(message_len(&inputs[3]), 1024);
        let mut h = EventHasher::default();
        for n in [0, 1, 2, 3, 4, 7, 8, 9, 10, 16, 17, 48] {
            let mut out = vec![[0u8; 32]; n];
            h.hash_all(&inputs[..n], &mut out);
            for (i, o) in inputs[..n].iter().zip(&out) {
                assert_eq!(*o, event_hash(i), "{n} inputs, payload {}", i.payload.len());
            }
        }
    }

    #[test]
    fn every_field_changes_the_hash() {
        let h0 = event_hash(&base());
        let variants: Vec<HashInput<'static>> = vec![
            HashInput {
                event_id: 2,
                ..base()
            },
            HashInput {
                correlation_id: 2,
                ..base()
            },
            HashInput {
                causation_id: Some(0),
                ..base()
            },
            HashInput {
                kind: 0x1002,
                ..base()
            },
            HashInput { clock: 1, ..base() },
            HashInput {
                wall_ms: 6,
                ..base()
            },
            HashInput {
                entity: b"f",
                ..base()
            },
            HashInput {
                scope: b"t",
                ..base()
            },
            HashInput {
                prev_hash: [1; 32],
                ..base()
            },
            HashInput {
                payload: b"q",
                ..base()
            },
            // Moving a byte between entity and scope must not collide.
            HashInput {
                entity: b"es",
                scope: b"",
                ..base()
            },
        ];
        for v in variants {
            assert_ne!(event_hash(&v), h0, "{v:?}");
        }
        assert_eq!(event_hash(&base()), h0);
    }
}
