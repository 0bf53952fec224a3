//! A msgpack payload as JSON, its maps in the payload's own key order.
//!
//! `serde_json::Value` sorts object keys (the workspace builds serde_json
//! without `preserve_order`, and `weir append` relies on that to encode a
//! line's payload the same way every time), so a payload written by a
//! client from a struct whose fields are not in alphabetical order cannot
//! be shown through it in its own order. [`Shown`] keeps the order.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value};
use std::collections::HashSet;
use std::fmt;

/// One msgpack value that has a JSON form: no bin or ext, string map keys,
/// each key once per map, finite floats.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// nil.
    Null,
    /// true or false.
    Bool(bool),
    /// An integer or a finite float.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Shown>),
    /// A map with string keys, in the payload's order.
    Map(Vec<(String, Shown)>),
}

impl Shown {
    /// Decodes exactly one msgpack value with a JSON form (trailing bytes,
    /// an empty payload or a value without a JSON form give `None`).
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            return None;
        }
        let mut cursor = std::io::Cursor::new(bytes);
        let mut de = rmp_serde::Deserializer::new(&mut cursor);
        let v = Self::deserialize(&mut de).ok()?;
        (cursor.position() == bytes.len() as u64).then_some(v)
    }

    /// How many arrays and maps it nests (0 for a scalar).
    #[must_use]
    pub fn depth(&self) -> usize {
        match self {
            Self::Array(a) => 1 + a.iter().map(Self::depth).max().unwrap_or(0),
            Self::Map(m) => 1 + m.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The same value as a `serde_json::Value` (its maps' keys sorted).
    #[must_use]
    pub fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Number(n) => Value::Number(n.clone()),
            Self::String(s) => Value::String(s.clone()),
            Self::Array(a) => Value::Array(a.iter().map(Self::to_value).collect()),
            Self::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

impl fmt::Display for Shown {
    /// Compact JSON text, keys in the payload's order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Shown {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Number(n) => n.serialize(s),
            Self::String(t) => s.serialize_str(t),
            Self::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Self::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Shown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShownVisitor)
    }
}

/// Accepts what JSON can say; bin (`visit_bytes`) and ext (a newtype) fall
/// to serde's default refusal.
struct ShownVisitor;

impl<'de> Visitor<'de> for ShownVisitor {
    type Value = Shown;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a msgpack value with a JSON form")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shown, E> {
        Ok(Shown::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Shown, E> {
        Ok(Shown::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Shown, D::Error> {
        Shown::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Shown, E> {
        Ok(Shown::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Shown, E> {
        Ok(Shown::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Shown, E> {
        Ok(Shown::Number(n.into()))
    }

    fn visit_f32<E: de::Error>(self, n: f32) -> Result<Shown, E> {
        // The float32's shortest decimal (0.1, not 0.10000000149011612, its
        // exact value): what the writer of a float32 0.1 meant.
        self.visit_f64(format!("{n}").parse::<f64>().unwrap_or(f64::from(n)))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Shown, E> {
        // JSON has no NaN or infinity.
        Number::from_f64(n)
            .map(Shown::Number)
            .ok_or_else(|| E::custom("a float JSON cannot hold"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Shown, E> {
        Ok(Shown::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Shown, E> {
        Ok(Shown::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shown, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(x) = seq.next_element()? {
            v.push(x);
        }
        Ok(Shown::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shown, A::Error> {
        let mut v: Vec<(String, Shown)> = Vec::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<Shown>()? {
            let Shown::String(key) = key else {
                return Err(de::Error::custom("a map key that is not a string"));
            };
            // JSON's names should be unique (RFC 8259), and a reader of the
            // line would keep only one of them.
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom("a map key given twice"));
            }
            v.push((key, map.next_value()?));
        }
        Ok(Shown::Map(v))
    }
}
