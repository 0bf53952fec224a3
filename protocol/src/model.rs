//! The event model: identifiers, coordinates, kinds, expected versions, regions.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A 128-bit event identifier. The daemon assigns UUIDv7 values unless the
/// client supplies one. Zero is never a valid id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventId(pub u128);

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl fmt::Display for EventId {
    /// Canonical UUID text: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

impl std::str::FromStr for EventId {
    type Err = ParseIdError;
    /// Accepts the canonical UUID text, with or without hyphens.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return Err(ParseIdError(s.to_owned()));
        }
        u128::from_str_radix(&hex, 16)
            .map(EventId)
            .map_err(|_| ParseIdError(s.to_owned()))
    }
}

/// Text that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an event id: expected 32 hex digits, optionally hyphenated as a UUID")]
pub struct ParseIdError(pub String);

/// Longest entity or scope name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Which rule a coordinate broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinateError {
    /// The name is empty.
    #[error("{field} is empty")]
    Empty {
        /// `entity` or `scope`.
        field: &'static str,
    },
    /// The name is longer than [`MAX_NAME_BYTES`].
    #[error("{field} is {len} bytes long; the limit is {MAX_NAME_BYTES}")]
    TooLong {
        /// `entity` or `scope`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character or sequence that is not allowed.
    #[error(
        "{field} contains {what} at byte {at}; NUL, control characters, `/`, `..`, `|` and `=` are not allowed"
    )]
    Forbidden {
        /// `entity` or `scope`.
        field: &'static str,
        /// What was found, e.g. `'/'`.
        what: String,
        /// Byte offset of the first offending character.
        at: usize,
    },
}

/// `NAME_BYTE` class of a byte no name may hold.
const FORBIDDEN: u8 = 1;
/// `NAME_BYTE` class of `.` (forbidden only as `..`).
const DOT: u8 = 2;
/// Class of every byte value for [`validate_name`]'s fast path.
const NAME_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_control() || c == b'/' || c == b'|' || c == b'=' {
            t[b] = FORBIDDEN;
        }
        b += 1;
    }
    t[b'.' as usize] = DOT;
    t
};

/// Checks one coordinate name against the rules of [`Coordinate`].
pub fn validate_name(field: &'static str, name: &str) -> Result<(), CoordinateError> {
    if name.is_empty() {
        return Err(CoordinateError::Empty { field });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(CoordinateError::TooLong {
            field,
            len: name.len(),
        });
    }
    let bytes = name.as_bytes();
    // Fast path: one table lookup per byte; only a name with a forbidden
    // byte, or with a `.` that might start `..`, takes the exact walk below.
    let seen = bytes
        .iter()
        .fold(0u8, |acc, &b| acc | NAME_BYTE[usize::from(b)]);
    if seen & FORBIDDEN == 0 && (seen & DOT == 0 || !bytes.windows(2).any(|w| w == b"..")) {
        return Ok(());
    }
    for (at, &b) in bytes.iter().enumerate() {
        let bad = b.is_ascii_control()
            || matches!(b, b'/' | b'|' | b'=')
            || (b == b'.' && bytes.get(at + 1) == Some(&b'.'));
        if bad {
            let what = if b == b'.' {
                "`..`".to_owned()
            } else {
                format!("{:?}", char::from(b))
            };
            return Err(CoordinateError::Forbidden { field, what, at });
        }
    }
    Ok(())
}

/// Where an event lives: the entity it is about and the scope (tenant,
/// context) it belongs to.
///
/// Each name is non-empty, at most 1024 bytes, and holds no NUL, no ASCII
/// control character, no `/`, `..`, `|` or `=`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Coordinate {
    entity: String,
    scope: String,
}

impl Coordinate {
    /// Validates and builds a coordinate.
    pub fn new(
        entity: impl Into<String>,
        scope: impl Into<String>,
    ) -> Result<Self, CoordinateError> {
        let (entity, scope) = (entity.into(), scope.into());
        validate_name("entity", &entity)?;
        validate_name("scope", &scope)?;
        Ok(Self { entity, scope })
    }
    /// The entity name.
    #[must_use]
    pub fn entity(&self) -> &str {
        &self.entity
    }
    /// The scope name.
    #[must_use]
    pub fn scope(&self) -> &str {
        &self.scope
    }
}

/// An event kind: a 4-bit category and a 12-bit type.
///
/// Categories `0x0` and `0xD` belong to the system; clients cannot append them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventKind(pub u16);

/// The kind written into index rows of cancelled sequences (category 0xD, type 0xFFF).
pub const CANCELLED_KIND: EventKind = EventKind(0xDFFF);

/// Why a kind was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KindError {
    /// The category is reserved for the system.
    #[error(
        "kind {kind:#06x} is in category {category:#x}, which is reserved for the system (0x0 and 0xD)"
    )]
    Reserved {
        /// The refused kind.
        kind: u16,
        /// Its category.
        category: u8,
    },
    /// Category or type out of range.
    #[error(
        "category {category:#x} or type {type_id:#x} out of range (category 4 bits, type 12 bits)"
    )]
    OutOfRange {
        /// The category given.
        category: u16,
        /// The type given.
        type_id: u16,
    },
}

impl EventKind {
    /// Builds a kind from its parts: any category, since queries may name
    /// the system's kinds too. Appends of the system's categories (0x0 and
    /// 0xD) are refused by the daemon; [`check_client`](Self::check_client)
    /// refuses them up front.
    pub fn new(category: u8, type_id: u16) -> Result<Self, KindError> {
        if category > 0xF || type_id > 0xFFF {
            return Err(KindError::OutOfRange {
                category: category.into(),
                type_id,
            });
        }
        Ok(Self((u16::from(category) << 12) | type_id))
    }
    /// The 4-bit category.
    #[must_use]
    pub const fn category(self) -> u8 {
        (self.0 >> 12) as u8
    }
    /// The 12-bit type.
    #[must_use]
    pub const fn type_id(self) -> u16 {
        self.0 & 0xFFF
    }
    /// True for the system's categories 0x0 and 0xD.
    #[must_use]
    pub const fn is_reserved(self) -> bool {
        matches!(self.category(), 0x0 | 0xD)
    }
    /// Refuses the system's categories.
    pub fn check_client(self) -> Result<Self, KindError> {
        if self.is_reserved() {
            return Err(KindError::Reserved {
                kind: self.0,
                category: self.category(),
            });
        }
        Ok(self)
    }
}

/// The optimistic-concurrency condition an append places on its entity.
///
/// The per-entity clock starts at 0, so `Exact(0)` means "exactly one event",
/// distinct from `NoStream` ("no event at all").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No condition.
    #[default]
    Any,
    /// The entity has no event yet.
    NoStream,
    /// The entity's last event has this clock.
    Exact(u32),
}

/// Which kinds a [`Region`] selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KindFilter {
    /// Every kind.
    #[default]
    Any,
    /// One kind.
    Exact(EventKind),
    /// Every kind of one 4-bit category.
    Category(u8),
}

impl KindFilter {
    /// Does `kind` pass?
    #[must_use]
    pub fn matches(self, kind: EventKind) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(k) => k == kind,
            Self::Category(c) => kind.category() == c,
        }
    }
}

/// A selection of events, as in batpak: entity prefix, exact scope, kind
/// filter and an inclusive per-entity clock range. Unset fields select all.
///
/// `entity_prefix = "user"` selects the entity `user` itself and its
/// descendants `user:…`; a prefix that ends in `:` selects descendants only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// Entity, or ancestor of entities, to select.
    pub entity_prefix: Option<String>,
    /// Exact scope.
    pub scope: Option<String>,
    /// Kind filter.
    pub kind: KindFilter,
    /// Inclusive range of per-entity clocks.
    pub clock_range: Option<(u32, u32)>,
}

impl Region {
    /// Everything.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }
    /// The entity and its `entity:` descendants.
    #[must_use]
    pub fn entity(prefix: impl Into<String>) -> Self {
        Self {
            entity_prefix: Some(prefix.into()),
            ..Self::default()
        }
    }
    /// Restricts to one scope.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
    /// Restricts the kinds.
    #[must_use]
    pub fn with_kind(mut self, kind: KindFilter) -> Self {
        self.kind = kind;
        self
    }
    /// Restricts the per-entity clock range (inclusive). An entity's clocks
    /// run 0, 1, 2, … in its events' order, so the events of an entity from
    /// clock `min` on (those since a snapshot of it) cost a read of each of
    /// them, not of the entity's older events.
    #[must_use]
    pub fn with_clock_range(mut self, min: u32, max: u32) -> Self {
        self.clock_range = Some((min, max));
        self
    }
    /// Does an entity name fall under `entity_prefix`?
    #[must_use]
    pub fn entity_matches(&self, entity: &str) -> bool {
        match &self.entity_prefix {
            None => true,
            Some(p) if p.ends_with(':') => entity.starts_with(p.as_str()),
            Some(p) => {
                entity == p
                    || (entity.len() > p.len()
                        && entity.starts_with(p.as_str())
                        && entity.as_bytes()[p.len()] == b':')
            }
        }
    }
    /// Does one event pass every filter of this region?
    #[must_use]
    pub fn matches(&self, entity: &str, scope: &str, kind: EventKind, clock: u32) -> bool {
        self.entity_matches(entity)
            && self.scope.as_deref().is_none_or(|s| s == scope)
            && self.kind.matches(kind)
            && self
                .clock_range
                .is_none_or(|(lo, hi)| clock >= lo && clock <= hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinate_rules_name_the_problem() {
        assert!(Coordinate::new("user:1", "tenant:a").is_ok());
        assert_eq!(
            Coordinate::new("", "s"),
            Err(CoordinateError::Empty { field: "entity" })
        );
        assert!(matches!(
            Coordinate::new("a", "x".repeat(1025)),
            Err(CoordinateError::TooLong {
                field: "scope",
                len: 1025
            })
        ));
        for bad in ["a/b", "a..b", "a|b", "a=b", "a\0b", "a\nb", "\u{7f}"] {
            let err = Coordinate::new(bad, "s").unwrap_err();
            assert!(
                matches!(
                    err,
                    CoordinateError::Forbidden {
                        field: "entity",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
        assert!(Coordinate::new("x".repeat(1024), "é.ok").is_ok());
    }

    #[test]
    fn every_byte_value_is_judged_by_the_rules() {
        // The table fast path against the rules as written, for every byte
        // at the start, middle and end of a name, and `.` beside each.
        for b in 0u8..=127 {
            let forbidden = b.is_ascii_control() || matches!(b, b'/' | b'|' | b'=');
            let c = char::from(b);
            for name in [format!("{c}ab"), format!("a{c}b"), format!("ab{c}")] {
                assert_eq!(
                    validate_name("entity", &name).is_err(),
                    forbidden,
                    "{name:?}"
                );
            }
            for name in [format!("a.{c}"), format!("{c}.a")] {
                assert_eq!(
                    validate_name("entity", &name).is_err(),
                    forbidden || b == b'.',
                    "{name:?}"
                );
            }
        }
        assert!(validate_name("entity", "a.b.c.").is_ok());
        assert!(validate_name("entity", "ü.ü").is_ok());
    }

    #[test]
    fn kinds_split_and_reserve() {
        let k = EventKind::new(0x3, 0x045).unwrap();
        assert_eq!((k.category(), k.type_id(), k.0), (3, 0x45, 0x3045));
        assert!(EventKind(0x0001).check_client().is_err());
        assert!(EventKind(0xD001).check_client().is_err());
        assert!(EventKind(0x1001).check_client().is_ok());
        assert!(EventKind::new(16, 0).is_err());
        assert!(EventKind::new(1, 0x1000).is_err());
    }

    #[test]
    fn entity_prefix_selects_self_and_descendants_only() {
        let r = Region::entity("user");
        assert!(r.entity_matches("user"));
        assert!(r.entity_matches("user:1"));
        assert!(!r.entity_matches("users"));
        assert!(!r.entity_matches("use"));
        let d = Region::entity("user:");
        assert!(!d.entity_matches("user"));
        assert!(d.entity_matches("user:9"));
    }

    #[test]
    fn event_id_text_round_trips() {
        let id = EventId(0x0192_3456_789a_7bcd_8ef0_1234_5678_9abc);
        let text = id.to_string();
        assert_eq!(text, "01923456-789a-7bcd-8ef0-123456789abc");
        assert_eq!(text.parse::<EventId>().unwrap(), id);
        assert!("xyz".parse::<EventId>().is_err());
    }
}
