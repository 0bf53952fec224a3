//! Direct msgpack codecs for the hot path: the requests that carry events
//! (`Append`, `AppendBatch`; decoded by the daemon, encoded by the client)
//! and the receipts that answer them (decoded by the client).
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
use crate::wire::{AppendRequest, Op, Receipt, Reply, Request, Response};

/// Smallest encoding of an event: fixarray, two empty strings, a fixint
/// kind, an empty bin8, four nils, `"Any"`.
pub(crate) const MIN_EVENT: usize = 14;
/// Smallest encoding of a receipt: fixarray, a bin8 id (18), two fixints,
/// a bin8 hash (34), two bools.
const MIN_RECEIPT: usize = 57;

/// Decodes a `Request` whose op is `Append` or `AppendBatch`, written the
/// way rmp-serde writes it; `None` for anything else, including a batch
/// that announces more than `max_batch_events` (declined at its header:
/// [`crate::limited::decode_request`] gives the typed error).
#[must_use]
pub fn decode_append_request(body: &[u8], max_batch_events: usize) -> Option<Request> {
    let mut c = Cursor { b: body, at: 0 };
    let id = c.envelope()?;
    let op = match c.str()? {
        "Append" => Op::Append(c.append()?),
        "AppendBatch" => Op::AppendBatch(c.list(MIN_EVENT, max_batch_events, Cursor::append)?),
        _ => return None,
    };
    c.end(Request { id, op })
}

/// Decodes a `Response` that carries receipts (`Ok(Appended)` or
/// `Ok(Batch)`), written the way rmp-serde writes it; `None` for anything
/// else (errors, other replies), which the caller decodes with serde.
#[must_use]
pub fn decode_receipts_response(body: &[u8]) -> Option<Response> {
    let mut c = Cursor { b: body, at: 0 };
    let id = c.envelope()?;
    if c.str()? != "Ok" || c.map_len()? != 1 {
        return None;
    }
    let reply = match c.str()? {
        "Appended" => Reply::Appended(c.receipt()?),
        "Batch" => Reply::Batch(c.list(MIN_RECEIPT, usize::MAX, Cursor::receipt)?),
        _ => return None,
    };
    c.end(Response {
        id,
        result: Ok(reply),
    })
}

/// Appends the msgpack of `Request { id, op }` to `out`, byte for byte what
/// rmp-serde writes, when `op` is `Append` or `AppendBatch`; returns `false`
/// (and writes nothing) for any other op.
pub fn encode_append_request(out: &mut Vec<u8>, id: u64, op: &Op) -> bool {
    let (name, events): (&str, &[AppendRequest]) = match op {
        Op::Append(e) => ("Append", std::slice::from_ref(e)),
        Op::AppendBatch(evs) => ("AppendBatch", evs),
        _ => return false,
    };
    out.push(0x92);
    put_uint(out, id);
    out.push(0x81);
    put_str(out, name);
    if let Op::AppendBatch(_) = op {
        put_len(out, events.len(), ARRAY);
    }
    for e in events {
        out.push(0x99);
        put_str(out, &e.entity);
        put_str(out, &e.scope);
        put_uint(out, e.kind.into());
        put_bin(out, &e.payload);
        for v in [
            e.event_id,
            e.correlation_id,
            e.causation_id,
            e.idempotency_key,
        ] {
            match v {
                None => out.push(0xc0),
                Some(v) => put_bin(out, &v.to_be_bytes()),
            }
        }
        match e.expected {
            ExpectedVersion::Any => put_str(out, "Any"),
            ExpectedVersion::NoStream => put_str(out, "NoStream"),
            ExpectedVersion::Exact(n) => {
                out.push(0x81);
                put_str(out, "Exact");
                put_uint(out, n.into());
            }
        }
    }
    true
}

/// msgpack's shortest unsigned encoding, as rmp writes it.
fn put_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// How msgpack writes the length of one kind of value: a fix form (first
/// marker, largest length it holds) and the 8-, 16- and 32-bit markers (0:
/// the kind has no 8-bit form). The encoder and the decoder share these.
#[derive(Clone, Copy)]
struct LenForm {
    fix: Option<(u8, u8)>,
    wide: [u8; 3],
}

const STR: LenForm = LenForm {
    fix: Some((0xa0, 31)),
    wide: [0xd9, 0xda, 0xdb],
};
const BIN: LenForm = LenForm {
    fix: None,
    wide: [0xc4, 0xc5, 0xc6],
};
const ARRAY: LenForm = LenForm {
    fix: Some((0x90, 15)),
    wide: [0, 0xdc, 0xdd],
};
const MAP: LenForm = LenForm {
    fix: Some((0x80, 15)),
    wide: [0, 0xde, 0xdf],
};

/// The shortest form of length `n`, as rmp writes it.
fn put_len(out: &mut Vec<u8>, n: usize, f: LenForm) {
    match (f.fix, n) {
        (Some((base, max)), n) if n <= usize::from(max) => out.push(base | n as u8),
        (_, 0..=0xff) if f.wide[0] != 0 => out.extend_from_slice(&[f.wide[0], n as u8]),
        (_, 0..=0xffff) => {
            out.push(f.wide[1]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(f.wide[2]);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len(), STR);
    out.extend_from_slice(s.as_bytes());
}

fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len(), BIN);
    out.extend_from_slice(b);
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// `[id, {…}]` with a one-entry map: the shape of a `Request` and a
    /// `Response`. Returns the id; the map's key is next.
    fn envelope(&mut self) -> Option<u64> {
        if self.array_len()? != 2 {
            return None;
        }
        let id = self.uint()?;
        (self.map_len()? == 1).then_some(id)
    }

    /// An array of at most `max` items of at least `min` bytes each: a
    /// hostile length cannot make it allocate more than the frame could
    /// hold, nor more items than the caller takes.
    fn list<T>(
        &mut self,
        min: usize,
        max: usize,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        let n = self.array_len()?;
        if n > max || n > self.b.len() / min {
            return None;
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(item(self)?);
        }
        Some(v)
    }

    /// `v`, if the whole frame was read (serde stops after the value; a
    /// fast decode must see all of it).
    fn end<T>(&self, v: T) -> Option<T> {
        (self.at == self.b.len()).then_some(v)
    }

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

    /// A length in any of the forms `f` allows.
    fn len(&mut self, f: LenForm) -> Option<usize> {
        let m = self.byte()?;
        match f.fix {
            Some((base, max)) if (base..=base + max).contains(&m) => Some(usize::from(m - base)),
            _ if f.wide[0] != 0 && m == f.wide[0] => Some(self.be(1)? as usize),
            _ if m == f.wide[1] => Some(self.be(2)? as usize),
            _ if m == f.wide[2] => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    fn array_len(&mut self) -> Option<usize> {
        self.len(ARRAY)
    }

    fn map_len(&mut self) -> Option<usize> {
        self.len(MAP)
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
        let n = self.len(STR)?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = self.len(BIN)?;
        self.take(n)
    }

    /// `Option<u128>`: nil, or a 16-byte big-endian bin (rmp-serde's u128).
    fn opt_u128(&mut self) -> Option<Option<u128>> {
        if self.b.get(self.at) == Some(&0xc0) {
            self.at += 1;
            return Some(None);
        }
        // Only bin8 of length 16: rmp-serde refuses the wider bin forms
        // for a u128, so the fast path must too.
        if self.take(2)? != [0xc4, 16] {
            return None;
        }
        let b: [u8; 16] = self.take(16)?.try_into().ok()?;
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

    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    fn receipt(&mut self) -> Option<Receipt> {
        if self.array_len()? != 6 {
            return None;
        }
        Some(Receipt {
            event_id: self.opt_u128()??,
            sequence: self.uint()?,
            clock: u32::try_from(self.uint()?).ok()?,
            event_hash: self.bin()?.try_into().ok()?,
            durable: self.bool()?,
            replayed: self.bool()?,
        })
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
        /// Flips one bit, truncates, appends a byte, or writes one bin8
        /// length in the bin16 form (valid msgpack, but not every field
        /// takes it).
        fn damage(&mut self, body: &mut Vec<u8>) {
            match self.below(4) {
                3 => {
                    let bins: Vec<usize> = (0..body.len().saturating_sub(1))
                        .filter(|&i| body[i] == 0xc4)
                        .collect();
                    if let Some(&at) = bins.get(self.below(bins.len() as u64 + 1) as usize) {
                        body.splice(at..=at, [0xc5, 0x00]);
                    }
                }
                0 => {
                    let at = self.below(body.len() as u64) as usize;
                    body[at] ^= 1 << self.below(8);
                }
                1 => body.truncate(self.below(body.len() as u64) as usize),
                _ => body.push(self.next() as u8),
            }
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

    /// The msgpack body serde writes for `msg` (its frame without the length).
    fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, msg).unwrap();
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
            assert_eq!(
                decode_append_request(&body, usize::MAX),
                Some(req),
                "case {i}"
            );
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
            r.damage(&mut body);
            if let Some(got) = decode_append_request(&body, usize::MAX) {
                fast += 1;
                let want: Request = decode(&body).unwrap_or_else(|e| panic!("case {i}: {e}"));
                assert_eq!(got, want, "case {i}");
            }
        }
        // Some flips land in payload bytes or ids and still decode.
        assert!(fast > 100, "{fast}");
    }

    #[test]
    fn encodes_what_serde_encodes() {
        let mut r = Rng(0xe9c0);
        for i in 0..300 {
            let op = if i % 3 == 0 {
                Op::Append(event(&mut r))
            } else {
                // Batch lengths across fixarray and array16.
                let n = [0, 1, 15, 16, 300][r.below(5) as usize];
                Op::AppendBatch((0..n).map(|_| event(&mut r)).collect())
            };
            let req = Request {
                id: r.next() >> r.below(64),
                op,
            };
            let mut fast = Vec::new();
            assert!(encode_append_request(&mut fast, req.id, &req.op));
            assert_eq!(fast, frame(&req), "case {i}");
        }
        let mut out = Vec::new();
        assert!(!encode_append_request(&mut out, 1, &Op::Commit));
        assert!(out.is_empty());
    }

    fn receipt(r: &mut Rng) -> Receipt {
        Receipt {
            event_id: u128::from(r.next()) << 64 | u128::from(r.next()),
            sequence: r.next() >> r.below(64),
            clock: (r.next() >> r.below(64)) as u32,
            event_hash: [r.next() as u8; 32],
            durable: r.below(2) == 0,
            replayed: r.below(2) == 0,
        }
    }

    #[test]
    fn receipts_decode_as_serde_decodes_them() {
        let mut r = Rng(0x4ec);
        for i in 0..2000 {
            let result = if i % 2 == 0 {
                Ok(Reply::Appended(receipt(&mut r)))
            } else {
                Ok(Reply::Batch(
                    (0..r.below(40)).map(|_| receipt(&mut r)).collect(),
                ))
            };
            let resp = Response {
                id: r.next(),
                result,
            };
            let mut body = frame(&resp);
            if i < 300 {
                assert_eq!(decode_receipts_response(&body), Some(resp), "case {i}");
                continue;
            }
            r.damage(&mut body);
            if let Some(got) = decode_receipts_response(&body) {
                let want: Response = decode(&body).unwrap_or_else(|e| panic!("case {i}: {e}"));
                assert_eq!(got, want, "case {i}");
            }
        }
        for result in [
            Ok(Reply::Pong),
            Ok(Reply::Synced { visible: 3 }),
            Err(crate::wire::WireError::new(
                crate::wire::ErrorCode::Busy,
                "busy",
            )),
        ] {
            let body = frame(&Response { id: 1, result });
            assert_eq!(decode_receipts_response(&body), None);
        }
    }

    #[test]
    fn other_ops_and_shapes_are_left_to_serde() {
        for op in [Op::Begin, Op::Commit, Op::Sync, Op::Ping] {
            assert_eq!(
                decode_append_request(&frame(&Request { id: 1, op }), usize::MAX),
                None
            );
        }
        // A batch length larger than the frame could hold.
        let mut body = vec![0x92, 0x01, 0x81, 0xab];
        body.extend_from_slice(b"AppendBatch");
        body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_append_request(&body, usize::MAX), None);
        assert_eq!(decode_append_request(&[], usize::MAX), None);
    }

    #[test]
    fn a_batch_over_the_limit_is_declined_at_its_header() {
        let mut r = Rng(0x1177);
        let req = Request {
            id: 3,
            op: Op::AppendBatch((0..3).map(|_| event(&mut r)).collect()),
        };
        let body = frame(&req);
        assert_eq!(decode_append_request(&body, 3), Some(req));
        assert_eq!(decode_append_request(&body, 2), None);
    }

    #[test]
    fn the_bounds_are_the_smallest_items() {
        // [0, {"Append": event}]: 10 bytes around the event.
        let body = frame(&Request {
            id: 0,
            op: Op::Append(AppendRequest::default()),
        });
        assert_eq!(body.len() - 10, MIN_EVENT);
        // [0, {"Ok": {"Appended": receipt}}]: 16 bytes around the receipt.
        let receipt = Receipt {
            event_id: 0,
            sequence: 0,
            clock: 0,
            event_hash: [0; 32],
            durable: false,
            replayed: false,
        };
        let body = frame(&Response {
            id: 0,
            result: Ok(Reply::Appended(receipt)),
        });
        assert_eq!(body.len() - 16, MIN_RECEIPT);
    }
}
