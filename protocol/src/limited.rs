//! Decoding a [`Request`] with a limit on the events of an `AppendBatch`,
//! checked at the batch's array header: a frame that announces millions of
//! tiny events is refused before any of them is decoded or allocated
//! (decoded whole, 64 MiB of them took over a gigabyte).
//!
//! The fast decoder declines such a frame with one comparison; this is the
//! serde path, which reads every encoding rmp-serde reads (a `Request` as
//! an array or a map, a variant by name or index) and gives the typed error.

use crate::fastwire::MIN_EVENT;
use crate::wire::{AppendRequest, Op, Request, decode_seed};
use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::cell::Cell;
use std::fmt;

/// Why a request frame was not decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The frame is not a msgpack `Request`.
    #[error("{0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// An `AppendBatch` announces more events than the limit; none was decoded.
    #[error("a batch of {events} events exceeds the limit of {max}")]
    BatchTooLarge {
        /// The request id, when it came before the batch (it does in the
        /// array form every weir client writes).
        id: Option<u64>,
        /// Events announced.
        events: usize,
        /// The limit.
        max: usize,
    },
}

/// Decodes a `Request` as [`crate::wire::decode`] does, refusing an
/// `AppendBatch` of more than `max_batch_events` at its header.
pub fn decode_request(body: &[u8], max_batch_events: usize) -> Result<Request, RequestError> {
    let st = State {
        max: max_batch_events,
        room: body.len() / MIN_EVENT,
        id: Cell::new(None),
        over: Cell::new(None),
    };
    match decode_seed(body, RequestSeed(&st)) {
        Ok(r) => Ok(r),
        Err(e) => Err(match st.over.get() {
            Some(events) => RequestError::BatchTooLarge {
                id: st.id.get(),
                events,
                max: st.max,
            },
            None => e.into(),
        }),
    }
}

struct State {
    max: usize,
    /// Most events the frame could hold: a capacity never reserves more.
    room: usize,
    id: Cell<Option<u64>>,
    /// Set when a batch was refused for its length.
    over: Cell<Option<usize>>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Id,
    Op,
}

/// `Op`'s variants, by name or index; mirrors `Op` (the round-trip test
/// decodes every op through here).
#[derive(Deserialize)]
#[serde(variant_identifier)]
enum Tag {
    Append,
    AppendBatch,
    Begin,
    Commit,
    Cancel,
    Sync,
    Stats,
    Ping,
}

const OPS: &[&str] = &[
    "Append",
    "AppendBatch",
    "Begin",
    "Commit",
    "Cancel",
    "Sync",
    "Stats",
    "Ping",
];

struct RequestSeed<'s>(&'s State);

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = Request;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Request, D::Error> {
        d.deserialize_struct("Request", &["id", "op"], self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = Request;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Request")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Request, A::Error> {
        let id: u64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        self.0.id.set(Some(id));
        let op = seq
            .next_element_seed(OpSeed(self.0))?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Ok(Request { id, op })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
        let (mut id, mut op) = (None, None);
        while let Some(k) = map.next_key()? {
            match k {
                Field::Id if id.is_some() => return Err(de::Error::duplicate_field("id")),
                Field::Op if op.is_some() => return Err(de::Error::duplicate_field("op")),
                Field::Id => {
                    let v: u64 = map.next_value()?;
                    self.0.id.set(Some(v));
                    id = Some(v);
                }
                Field::Op => op = Some(map.next_value_seed(OpSeed(self.0))?),
            }
        }
        Ok(Request {
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            op: op.ok_or_else(|| de::Error::missing_field("op"))?,
        })
    }
}

struct OpSeed<'s>(&'s State);

impl<'de> DeserializeSeed<'de> for OpSeed<'_> {
    type Value = Op;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Op, D::Error> {
        d.deserialize_enum("Op", OPS, self)
    }
}

impl<'de> Visitor<'de> for OpSeed<'_> {
    type Value = Op;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an Op")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Op, A::Error> {
        let (tag, v) = data.variant::<Tag>()?;
        let unit = |v: A::Variant, op| v.unit_variant().map(|()| op);
        match tag {
            Tag::Append => v.newtype_variant::<AppendRequest>().map(Op::Append),
            Tag::AppendBatch => v
                .newtype_variant_seed(BatchSeed(self.0))
                .map(Op::AppendBatch),
            Tag::Begin => unit(v, Op::Begin),
            Tag::Commit => unit(v, Op::Commit),
            Tag::Cancel => unit(v, Op::Cancel),
            Tag::Sync => unit(v, Op::Sync),
            Tag::Stats => unit(v, Op::Stats),
            Tag::Ping => unit(v, Op::Ping),
        }
    }
}

struct BatchSeed<'s>(&'s State);

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Vec<AppendRequest>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = Vec<AppendRequest>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {} events", self.0.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let max = self.0.max;
        let over = |n| {
            self.0.over.set(Some(n));
            Err(de::Error::invalid_length(n, &self))
        };
        let announced = seq.size_hint().unwrap_or(0);
        if announced > max {
            return over(announced);
        }
        let mut v = Vec::with_capacity(announced.min(self.0.room));
        while let Some(e) = seq.next_element()? {
            if v.len() == max {
                return over(max + 1);
            }
            v.push(e);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExpectedVersion;
    use crate::wire::{decode, encode};

    fn body(req: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, req).unwrap();
        out.split_off(4)
    }

    fn event(i: u8) -> AppendRequest {
        AppendRequest {
            entity: format!("e:{i}"),
            scope: "s".into(),
            kind: 0x1001,
            payload: vec![i],
            idempotency_key: Some(u128::from(i) << 100),
            expected: ExpectedVersion::Exact(u32::from(i)),
            ..AppendRequest::default()
        }
    }

    #[test]
    fn decodes_every_op_as_serde_does() {
        let ops = [
            Op::Append(event(1)),
            Op::AppendBatch(vec![event(2), event(3)]),
            Op::AppendBatch(Vec::new()),
            Op::Begin,
            Op::Commit,
            Op::Cancel,
            Op::Sync,
            Op::Stats,
            Op::Ping,
        ];
        for (id, op) in ops.into_iter().enumerate() {
            let req = Request { id: id as u64, op };
            let b = body(&req);
            assert_eq!(decode_request(&b, 2).unwrap(), req);
            assert_eq!(decode::<Request>(&b).unwrap(), req);
        }
        // The map form, with the variant by index: serde reads it too.
        let mut named = Vec::new();
        rmp_serde::encode::write_named(
            &mut named,
            &Request {
                id: 9,
                op: Op::Ping,
            },
        )
        .unwrap();
        assert_eq!(
            decode_request(&named, 2).unwrap(),
            decode::<Request>(&named).unwrap()
        );
        let indexed = [0x92, 0x09, 0x81, 0x07, 0xc0];
        assert_eq!(decode::<Request>(&indexed).unwrap().op, Op::Ping);
        assert_eq!(decode_request(&indexed, 2).unwrap().op, Op::Ping);
    }

    #[test]
    fn an_oversized_batch_is_refused_at_its_header() {
        let req = Request {
            id: 7,
            op: Op::AppendBatch((0..3).map(event).collect()),
        };
        let b = body(&req);
        assert_eq!(decode_request(&b, 3).unwrap(), req);
        assert!(matches!(
            decode_request(&b, 2),
            Err(RequestError::BatchTooLarge {
                id: Some(7),
                events: 3,
                max: 2
            })
        ));
        // A header that announces 2^32 - 1 events, followed by nothing: no
        // event is read (or allocated) to find out.
        let mut hostile = vec![0x92, 0x07, 0x81, 0xab];
        hostile.extend_from_slice(b"AppendBatch");
        hostile.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_request(&hostile, 10_000),
            Err(RequestError::BatchTooLarge {
                id: Some(7),
                events: 0xffff_ffff,
                max: 10_000
            })
        ));
        // Malformed frames stay decode errors.
        assert!(matches!(
            decode_request(&b[..b.len() - 1], 3),
            Err(RequestError::Decode(_))
        ));
    }
}
