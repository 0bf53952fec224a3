//! Error codes by name, and their decoding: a code this build does not know
//! (a newer daemon's) decodes as [`ErrorCode::Unknown`] with the error's
//! message and fields intact, rather than failing the whole response.

use super::{ErrorCode, UNKNOWN_CODE_FIELD, WireError};
use serde::Deserialize;
use std::collections::BTreeMap;

impl ErrorCode {
    /// Every code, in declaration order (an index names the code at it). A
    /// new code goes at the end of both the enum and this list.
    pub const ALL: [Self; 25] = [
        Self::MalformedFrame,
        Self::FrameTooLarge,
        Self::UnsupportedVersion,
        Self::BadHello,
        Self::InvalidCoordinate,
        Self::InvalidKind,
        Self::PayloadTooLarge,
        Self::BatchTooLarge,
        Self::EmptyBatch,
        Self::VersionConflict,
        Self::IdempotencyConflict,
        Self::DuplicateEventId,
        Self::InvalidEventId,
        Self::Busy,
        Self::TooManyInFlight,
        Self::PermissionDenied,
        Self::TransactionState,
        Self::ShuttingDown,
        Self::WriterPoisoned,
        Self::Io,
        Self::Timeout,
        Self::Internal,
        Self::OutcomeUnknown,
        Self::EntityFull,
        Self::Unknown,
    ];

    /// The code's name: what the wire carries.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::MalformedFrame => "MalformedFrame",
            Self::FrameTooLarge => "FrameTooLarge",
            Self::UnsupportedVersion => "UnsupportedVersion",
            Self::BadHello => "BadHello",
            Self::InvalidCoordinate => "InvalidCoordinate",
            Self::InvalidKind => "InvalidKind",
            Self::PayloadTooLarge => "PayloadTooLarge",
            Self::BatchTooLarge => "BatchTooLarge",
            Self::EmptyBatch => "EmptyBatch",
            Self::VersionConflict => "VersionConflict",
            Self::IdempotencyConflict => "IdempotencyConflict",
            Self::DuplicateEventId => "DuplicateEventId",
            Self::InvalidEventId => "InvalidEventId",
            Self::Busy => "Busy",
            Self::TooManyInFlight => "TooManyInFlight",
            Self::PermissionDenied => "PermissionDenied",
            Self::TransactionState => "TransactionState",
            Self::ShuttingDown => "ShuttingDown",
            Self::WriterPoisoned => "WriterPoisoned",
            Self::Io => "Io",
            Self::Timeout => "Timeout",
            Self::Internal => "Internal",
            Self::OutcomeUnknown => "OutcomeUnknown",
            Self::EntityFull => "EntityFull",
            Self::Unknown => "Unknown",
        }
    }
}

/// A code as decoded: one this build knows, or the name (`#` and the index
/// for an index) of one it does not.
struct RawCode(Result<ErrorCode, String>);

impl RawCode {
    fn of_name(name: &str) -> Self {
        Self(
            ErrorCode::ALL
                .into_iter()
                .find(|c| c.name() == name)
                .ok_or_else(|| name.to_owned()),
        )
    }
}

/// Reads a code as serde's derive would (the variant's name, or its index),
/// except that an unknown one is kept rather than refused.
impl<'de> Deserialize<'de> for RawCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = RawCode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an error code's name or index")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCode, E> {
                Ok(RawCode::of_name(v))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<RawCode, E> {
                Ok(RawCode::of_name(&String::from_utf8_lossy(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawCode, E> {
                Ok(RawCode(
                    usize::try_from(v)
                        .ok()
                        .and_then(|i| ErrorCode::ALL.get(i).copied())
                        .ok_or_else(|| format!("#{v}")),
                ))
            }
        }
        /// The variant's identifier.
        struct Named(RawCode);
        impl<'de> Deserialize<'de> for Named {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_identifier(Name).map(Named)
            }
        }
        struct Code;
        impl<'de> serde::de::Visitor<'de> for Code {
            type Value = RawCode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an error code")
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<RawCode, A::Error> {
                use serde::de::VariantAccess;
                let (Named(code), variant) = a.variant::<Named>()?;
                variant.unit_variant()?;
                Ok(code)
            }
        }
        d.deserialize_enum("ErrorCode", &[], Code)
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawCode::deserialize(d).map(|c| c.0.unwrap_or(Self::Unknown))
    }
}

/// [`WireError`] as decoded, before an unknown code is put in its fields.
#[derive(Deserialize)]
pub(super) struct WireErrorRepr {
    code: RawCode,
    message: String,
    fields: BTreeMap<String, String>,
}

impl From<WireErrorRepr> for WireError {
    fn from(r: WireErrorRepr) -> Self {
        let mut fields = r.fields;
        let code = r.code.0.unwrap_or_else(|name| {
            fields.insert(UNKNOWN_CODE_FIELD.to_owned(), name);
            ErrorCode::Unknown
        });
        Self {
            code,
            message: r.message,
            fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HelloReply, Reply, Response, decode};

    /// A response `[id, {"Err": [code, message, fields]}]` built from plain
    /// msgpack values, as a daemon of any build writes it.
    fn refusal(code: &str, message: &str, fields: &[(&str, &str)]) -> Vec<u8> {
        let fields: BTreeMap<&str, &str> = fields.iter().copied().collect();
        let err = BTreeMap::from([("Err", (code, message, fields))]);
        rmp_serde::to_vec(&(7u64, err)).unwrap()
    }

    #[test]
    fn a_code_is_sent_by_name_as_before() {
        // The bytes every build wrote for `Busy`: a fixstr of its name.
        assert_eq!(rmp_serde::to_vec(&ErrorCode::Busy).unwrap(), b"\xa4Busy");
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, i, "{code:?} out of order in ALL");
            assert_eq!(code.name(), format!("{code:?}"));
            let bytes = rmp_serde::to_vec(&code).unwrap();
            assert_eq!(bytes, rmp_serde::to_vec(code.name()).unwrap());
            assert_eq!(decode::<ErrorCode>(&bytes).unwrap(), code);
            // serde's derive also read a variant's index.
            assert_eq!(
                decode::<ErrorCode>(&rmp_serde::to_vec(&i).unwrap()).unwrap(),
                code
            );
        }
        let bytes = refusal("Busy", "queue full", &[("retry_after_ms", "5")]);
        let resp = Response {
            id: 7,
            result: Err(WireError::new(ErrorCode::Busy, "queue full").with("retry_after_ms", 5)),
        };
        assert_eq!(rmp_serde::to_vec(&resp).unwrap(), bytes);
        assert_eq!(decode::<Response>(&bytes).unwrap(), resp);
    }

    #[test]
    fn an_unknown_code_keeps_the_message_and_fields() {
        let bytes = refusal(
            "CodeFromTheFuture",
            "the entity is frozen",
            &[("index", "3")],
        );
        let r: Response = decode(&bytes).unwrap();
        assert_eq!(r.id, 7);
        let e = r.result.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unknown);
        assert_eq!(e.message, "the entity is frozen");
        assert_eq!(e.fields["index"], "3");
        assert_eq!(e.fields[UNKNOWN_CODE_FIELD], "CodeFromTheFuture");
        assert_eq!(e.code_name(), "CodeFromTheFuture");
        assert_eq!(e.to_string(), "CodeFromTheFuture: the entity is frozen");
        // In a hello refusal too, and as an index past the last code.
        let err = (99u8, "no", BTreeMap::<&str, &str>::new());
        let hello = rmp_serde::to_vec(&BTreeMap::from([("Err", err)])).unwrap();
        let HelloReply::Err(e) = decode::<HelloReply>(&hello).unwrap() else {
            panic!("not a refusal");
        };
        assert_eq!((e.code, e.code_name()), (ErrorCode::Unknown, "#99"));
        // Other shapes are still refused.
        assert!(decode::<ErrorCode>(b"\x92\x01\x02").is_err());
        let ok = BTreeMap::from([("Ok", BTreeMap::from([("Frobbed", ())]))]);
        assert!(decode::<Response>(&rmp_serde::to_vec(&(7u64, ok)).unwrap()).is_err());
        assert!(decode::<Reply>(b"\xa7Frobbed").is_err());
    }
}
