//! A direct decoder for the requests that carry events (`Append`,
//! `AppendBatch`), the daemon's hot path.
//!
//! Generic serde decoding of an `AppendRequest` costs a few thousand
//! instructions per event; this reads the msgpack bytes the serde encoding
//! produces (see `docs/FORMAT.md`, "Wire protocol") with a cursor. It is
//! only a fast path: anything it does not recognise (another op, another
//! integer or string encoding, a malformed frame) returns `None`, and the
//! caller decodes the frame with serde, which gives the typed error. When
//! it returns `Some`, the value equals what serde decodes from the same
//! bytes (tested on random and mutated frames).

use crate::ExpectedVersion;
use crate::wire::{AppendRequest, Op, Request};

/// Decodes a `Request` whose op is `Append` or `AppendBatch`, written the
/// way rmp-serde writes it; `None` for anything else.
#[must_use]
pub fn decode_append_request(body: &[u8]) -> Option<Request> {
    let mut c = Cursor { b: body, at: 0 };
    if c.array_len()? != 2 {
        return None;
    }
    let id = c.uint()?;
    if c.map_len()? != 1 {
        return None;
    }
    let op = match c.str()? {
        "Append" => Op::Append(c.append()?),
        "AppendBatch" => {
            let n = c.array_len()?;
            // Each event takes at least 9 bytes: a hostile length cannot
            // make this allocate more than the frame could hold.
            if n > c.b.len() / 9 {
                return None;
            }
            let mut evs = Vec::with_capacity(n);
            for _ in 0..n {
                evs.push(c.append()?);
            }
            Op::AppendBatch(evs)
        }
        _ => return None,
    };
    // Serde stops after the value; a fast decode must see all of it.
    (c.at == c.b.len()).then_some(Request { id, op })
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |a, &x| (a << 8) | u64::from(x)),
        )
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some(usize::from(m & 0x0f)),
            0xdc => Some(self.be(2)? as usize),
            0xdd => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    /// A non-negative integer in any of msgpack's unsigned encodings.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.be(1)? as usize,
            0xc5 => self.be(2)? as usize,
            0xc6 => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }

    /// `Option<u128>`: nil, or a 16-byte big-endian bin (rmp-serde's u128).
    fn opt_u128(&mut self) -> Option<Option<u128>> {
        if self.b.get(self.at) == Some(&0xc0) {
            self.at += 1;
            return Some(None);
        }
        let b: [u8; 16] = self.bin()?.try_into().ok()?;
        Some(Some(u128::from_be_bytes(b)))
    }

    fn expected(&mut self) -> Option<ExpectedVersion> {
        if self.b.get(self.at).is_some_and(|m| m & 0xf0 == 0x80) {
            if self.map_len()? != 1 || self.str()? != "Exact" {
                return None;
            }
            return Some(ExpectedVersion::Exact(u32::try_from(self.uint()?).ok()?));
        }
        match self.str()? {
            "Any" => Some(ExpectedVersion::Any),
            "NoStream" => Some(ExpectedVersion::NoStream),
            _ => None,
        }
    }

    fn append(&mut self) -> Option<AppendRequest> {
        if self.array_len()? != 9 {
            return None;
        }
        Some(AppendRequest {
            entity: self.str()?.to_owned(),
            scope: self.str()?.to_owned(),
            kind: u16::try_from(self.uint()?).ok()?,
            payload: self.bin()?.to_vec(),
            event_id: self.opt_u128()?,
            correlation_id: self.opt_u128()?,
            causation_id: self.opt_u128()?,
            idempotency_key: self.opt_u128()?,
            expected: self.expected()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode};

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn opt(&mut self) -> Option<u128> {
            (self.below(2) == 0).then(|| u128::from(self.next()) << 64 | u128::from(self.next()))
        }
    }

    fn event(r: &mut Rng) -> AppendRequest {
        // Lengths across msgpack's size classes (fix, 8-, 16-bit).
        let lens = [0, 1, 31, 32, 255, 256, 70_000];
        let name = |r: &mut Rng| "é".repeat(lens[r.below(6) as usize] / 2 + 1);
        AppendRequest {
            entity: name(r),
            scope: name(r),
            kind: [0, 0x7f, 0x80, 0xff, 0x100, 0xffff][r.below(6) as usize],
            payload: vec![r.next() as u8; lens[r.below(7) as usize]],
            event_id: r.opt(),
            correlation_id: r.opt(),
            causation_id: r.opt(),
            idempotency_key: r.opt(),
            expected: match r.below(4) {
                0 => ExpectedVersion::Any,
                1 => ExpectedVersion::NoStream,
                2 => ExpectedVersion::Exact(r.next() as u32),
                _ => ExpectedVersion::Exact(r.below(200) as u32),
            },
        }
    }

    fn frame(req: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, req).unwrap();
        out.split_off(4)
    }

    #[test]
    fn decodes_what_serde_encodes() {
        let mut r = Rng(0x5eed);
        for i in 0..300 {
            let op = if i % 3 == 0 {
                Op::Append(event(&mut r))
            } else {
                Op::AppendBatch((0..r.below(20)).map(|_| event(&mut r)).collect())
            };
            let req = Request {
                id: r.next() >> (r.below(64)),
                op,
            };
            let body = frame(&req);
            assert_eq!(decode_append_request(&body), Some(req), "case {i}");
        }
    }

    #[test]
    fn agrees_with_serde_on_damaged_frames() {
        // Flipped bytes, truncations and extensions: the fast path either
        // declines or returns exactly what serde decodes.
        let mut r = Rng(0xbad);
        let mut fast = 0;
        for i in 0..3000 {
            let req = Request {
                id: r.next(),
                op: Op::AppendBatch((0..1 + r.below(3)).map(|_| event(&mut r)).collect()),
            };
            let mut body = frame(&req);
            match r.below(3) {
                0 => {
                    let at = r.below(body.len() as u64) as usize;
                    body[at] ^= 1 << r.below(8);
                }
                1 => body.truncate(r.below(body.len() as u64) as usize),
                _ => body.push(r.next() as u8),
            }
            if let Some(got) = decode_append_request(&body) {
                fast += 1;
                let want: Request = decode(&body).unwrap_or_else(|e| panic!("case {i}: {e}"));
                assert_eq!(got, want, "case {i}");
            }
        }
        // Some flips land in payload bytes or ids and still decode.
        assert!(fast > 100, "{fast}");
    }

    #[test]
    fn other_ops_and_shapes_are_left_to_serde() {
        for op in [Op::Begin, Op::Commit, Op::Sync, Op::Ping] {
            assert_eq!(decode_append_request(&frame(&Request { id: 1, op })), None);
        }
        // A batch length larger than the frame could hold.
        let mut body = vec![0x92, 0x01, 0x81, 0xab];
        body.extend_from_slice(b"AppendBatch");
        body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_append_request(&body), None);
        assert_eq!(decode_append_request(&[]), None);
    }
}
