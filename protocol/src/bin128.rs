//! The wire form of a `u128`: a bin of 16 bytes, big-endian (what rmp-serde
//! writes). rmp-serde also reads a u128 from any msgpack integer, and a
//! negative one wraps (`-1` becomes `u128::MAX`); these read only the bin.
//! Serde cannot tell bin8 from the wider bin forms, so those are taken too
//! when they hold 16 bytes; the fast decoders take only bin8 and leave the
//! others to serde.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use std::fmt;

struct Bin128;

impl Visitor<'_> for Bin128 {
    type Value = u128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a u128 as a bin of 16 bytes, big-endian")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<u128, E> {
        let b: [u8; 16] = v
            .try_into()
            .map_err(|_| E::invalid_length(v.len(), &self))?;
        Ok(u128::from_be_bytes(b))
    }
}

pub(crate) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(*v)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    d.deserialize_bytes(Bin128)
}

/// `Option<u128>`: nil, or the bin.
pub(crate) mod opt {
    use super::{Deserializer, Serializer, Visitor, de, fmt};

    struct OptBin128;

    impl<'de> Visitor<'de> for OptBin128 {
        type Value = Option<u128>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("nil or a u128 as a bin of 16 bytes, big-endian")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
    pub(crate) fn serialize<S: Serializer>(v: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(v) => s.serialize_some(v),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        d.deserialize_option(OptBin128)
    }
}
