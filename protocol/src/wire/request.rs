//! Building an [`AppendRequest`]: the event and what the request carries
//! with it, as `Client::append` and `Client::append_msgpack` build theirs.

use super::AppendRequest;
use crate::model::{Coordinate, EventId, EventKind, ExpectedVersion};
use serde::Serialize;

impl AppendRequest {
    /// An event of `kind` at `at` with an opaque `payload`, as
    /// `Client::append` sends it: no condition, and the ids and idempotency
    /// key left to the client and daemon until set.
    #[must_use]
    pub fn new(at: &Coordinate, kind: EventKind, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            entity: at.entity().to_owned(),
            scope: at.scope().to_owned(),
            kind: kind.0,
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// [`new`](Self::new) with `value` serialized as msgpack with named
    /// fields: the bytes `Client::append_msgpack` stores, which
    /// `Entry::payload_as` decodes.
    pub fn msgpack<T: Serialize + ?Sized>(
        at: &Coordinate,
        kind: EventKind,
        value: &T,
    ) -> Result<Self, rmp_serde::encode::Error> {
        Ok(Self::new(at, kind, rmp_serde::to_vec_named(value)?))
    }

    /// Appends only if the entity's version is `expected`; otherwise the
    /// daemon refuses it with `VersionConflict`.
    #[must_use]
    pub fn with_expected(mut self, expected: ExpectedVersion) -> Self {
        self.expected = expected;
        self
    }

    /// The idempotency key (the client generates one if unset): set it to
    /// know it before the call, so that a resend after a crash of your own
    /// process stores the event at most once.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: u128) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// The event's id (the daemon assigns a UUIDv7 if unset).
    #[must_use]
    pub fn with_event_id(mut self, id: EventId) -> Self {
        self.event_id = Some(id.0);
        self
    }

    /// The correlation id (the event's own id if unset).
    #[must_use]
    pub fn with_correlation_id(mut self, id: EventId) -> Self {
        self.correlation_id = Some(id.0);
        self
    }

    /// The id of the event that caused this one.
    #[must_use]
    pub fn with_causation_id(mut self, id: EventId) -> Self {
        self.causation_id = Some(id.0);
        self
    }
}
