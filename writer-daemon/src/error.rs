//! Typed errors of the daemon's operations.

use std::io;
use std::path::PathBuf;
use weir_protocol::wire::{ErrorCode, WireError};
use weir_protocol::{CoordinateError, KindError};

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A configuration value cannot work.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Another daemon holds the data directory.
    #[error("{path} is locked by another weir daemon{}: only one writer may own a data directory", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid recorded by the holder, if readable.
        holder: Option<u32>,
    },
    /// The data directory is writable by everybody.
    #[error(
        "{path} is world-writable (mode {mode:#o}); refusing to serve from it: run `chmod o-w {path}`"
    )]
    InsecureDataDir {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A file on disk is damaged in a way restore cannot skip.
    #[error("{path}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Segment files that the store's own records show existed are gone
    /// (weir never deletes one). Nothing was changed.
    #[error(
        "{dir}: {} missing ({proof}); weir never deletes segments, so starting without {} would lose or renumber stored events. Nothing was changed: restore the missing file(s) from a backup, or move the data directory away to start a new store",
        segment_list(missing),
        if missing.len() == 1 { "it" } else { "them" }
    )]
    MissingSegments {
        /// The `segments` directory.
        dir: PathBuf,
        /// The ids of the missing segments.
        missing: Vec<u64>,
        /// What shows they existed.
        proof: String,
    },
    /// The log lacks events that it is known to have held durably: a frame
    /// is damaged (or the file lost data). Nothing was changed.
    #[error(
        "{path}: {what}; {proof}. Nothing was changed: restore this segment from a backup, or copy the data directory away and inspect it with `weir verify`"
    )]
    DamagedLog {
        /// The segment in which the log stops.
        path: PathBuf,
        /// Where in it, if a frame is at fault.
        offset: Option<u64>,
        /// What is wrong there.
        what: String,
        /// What shows the missing events were durable.
        proof: String,
    },
    /// A rebuild found an event that does not continue its entity's chain
    /// (clock or `prev_hash`): a frame was altered with its checksums
    /// recomputed, or the log holds a fork. New events would continue a
    /// wrong chain. Nothing was changed.
    #[error(
        "{path}: the frame at offset {offset} (sequence {sequence}, entity {entity:?}) {what}, so the entity's chain is broken there and new events would continue a wrong one. Nothing was changed: restore this segment from a backup, or copy the data directory away and inspect it with `weir verify` (if the segments are intact, the index files this start kept may be what is damaged: moving the data directory's `index` away makes the next start rebuild from the segments alone)"
    )]
    BrokenChain {
        /// The segment that holds the frame.
        path: PathBuf,
        /// The frame's offset in it.
        offset: u64,
        /// The frame's sequence.
        sequence: u64,
        /// The entity it names.
        entity: String,
        /// What disagrees with the entity's events before it.
        what: String,
    },
    /// An I/O error, with the path it concerned.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// `0000000001.seg, 0000000002.seg`: the names of segment files (the
/// first 16, then how many in all).
fn segment_list(ids: &[u64]) -> String {
    let names: Vec<String> = ids
        .iter()
        .take(16)
        .map(|&id| crate::storage::segment_file_name(id))
        .collect();
    let more = if ids.len() > 16 {
        format!(" ({} files in all)", ids.len())
    } else {
        String::new()
    };
    format!("{}{more}", names.join(", "))
}

impl OpenError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// The data directory's path names another directory (or nothing) than the
/// one the daemon started on: it was renamed, or replaced (a symlink
/// retargeted), while the daemon ran. The daemon checks this before each
/// file it creates, renames or removes there by path (`home.rs`), writes
/// nothing into the directory now at the path, and stops writing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the data directory {} was moved or replaced while the daemon ran: the path now names another directory, or none. The daemon stopped writing, and nothing was written into the directory now at {}. Stop the daemon and start it again on the directory's new path",
    path.display(),
    path.display()
)]
pub struct DataDirMoved {
    /// The data directory's path as configured.
    pub path: PathBuf,
}

impl DataDirMoved {
    /// The `DataDirMoved` inside `e`, if that is what `e` is.
    #[must_use]
    pub fn of(e: &io::Error) -> Option<&Self> {
        e.get_ref().and_then(|inner| inner.downcast_ref())
    }
}

/// Why an append was refused. Nothing was stored unless the variant says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Invalid entity or scope.
    #[error("event {index}: {source}")]
    InvalidCoordinate {
        /// Position in the request.
        index: usize,
        /// The rule broken.
        source: CoordinateError,
    },
    /// Reserved or invalid kind.
    #[error("event {index}: {source}")]
    InvalidKind {
        /// Position in the request.
        index: usize,
        /// Why.
        source: KindError,
    },
    /// Payload over the limit.
    #[error("event {index}: payload of {len} bytes exceeds max-payload-bytes = {max}")]
    PayloadTooLarge {
        /// Position in the request.
        index: usize,
        /// Its size.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// Batch over a limit.
    #[error(
        "batch of {events} events and {bytes} bytes exceeds the limits ({max_events} events, {max_bytes} bytes)"
    )]
    BatchTooLarge {
        /// Events in it.
        events: usize,
        /// Bytes in it.
        bytes: u64,
        /// Event limit.
        max_events: u32,
        /// Byte limit.
        max_bytes: u64,
    },
    /// A batch with no events.
    #[error("empty batch")]
    EmptyBatch,
    /// The expected version did not hold.
    #[error("event {index}: entity {entity:?}: expected version {expected}, found {found}")]
    VersionConflict {
        /// Position in the request.
        index: usize,
        /// The entity.
        entity: String,
        /// What the request expected.
        expected: String,
        /// What the store holds (`none` or the last clock).
        found: String,
    },
    /// The entity's clock is at its last value (`u32::MAX`): no version is
    /// left for another event of it. Every event of the entity is kept;
    /// append to another entity.
    #[error(
        "event {index}: entity {entity:?} has reached its last version ({}): its clock cannot count another event",
        u32::MAX
    )]
    EntityFull {
        /// Position in the request.
        index: usize,
        /// The entity.
        entity: String,
    },
    /// An idempotency key was reused for a different request: another event
    /// (coordinate, kind, payload, causation, or the event and correlation
    /// ids it names) than the key first stored, or a request mixing known
    /// and new keys; or one request gave the key to two of its events (no
    /// receipt could answer both). A request of known keys in another batch
    /// shape is [`AppendError::IdempotencyBatchMismatch`].
    #[error(
        "idempotency key {key:#034x} was already used by a different request, or by two events of this one"
    )]
    IdempotencyConflict {
        /// The key.
        key: u128,
    },
    /// Every idempotency key of the request is known, but its events are
    /// not one earlier append, whole and in order (another batch shape): a
    /// single event of a stored batch, a stored batch reordered or cut, or
    /// events of several appends. A replay answers one append as it was
    /// sent, so this is refused, with the wire code `IdempotencyConflict`.
    #[error(
        "idempotency key {key:#034x} of event {index} was first stored at sequence {sequence}{}: a retry must resend that append as it was sent (the same events, in order, in one request), not a request of {events} event(s)",
        stored_batch(*batch)
    )]
    IdempotencyBatchMismatch {
        /// Position in the request.
        index: usize,
        /// The key.
        key: u128,
        /// Where the key's event is stored.
        sequence: u64,
        /// The append that stored it: first sequence and events, `None`
        /// when its frame cannot be read back.
        batch: Option<(u64, u32)>,
        /// Events in this request.
        events: usize,
    },
    /// The event id is already stored (or given to an event of an earlier
    /// request), or an earlier event of this request has it too.
    #[error("event {index}: event id {id} {}", match earlier {
        Some(e) => format!("is also given to event {e} of this request"),
        None => "is already stored".into(),
    })]
    DuplicateEventId {
        /// Position in the request.
        index: usize,
        /// The id (UUID text).
        id: String,
        /// The earlier event of the same request (or transaction) with
        /// this id; `None` when another request has it.
        earlier: Option<usize>,
    },
    /// Event id zero.
    #[error("event {index}: event id 0 is not allowed")]
    InvalidEventId {
        /// Position in the request.
        index: usize,
    },
    /// Idempotency key zero: frames store it as "no key", so it could not
    /// be remembered across a crash. Sent with the wire code
    /// `InvalidEventId` (with `index` and `idempotency_key`).
    #[error(
        "event {index}: idempotency key 0 is not allowed (it means \"no key\"): give a nonzero key, or none and the client generates one"
    )]
    InvalidIdempotencyKey {
        /// Position in the request.
        index: usize,
    },
    /// A client-chosen id the daemon could assign itself later (it would be
    /// a claim, "Claimed ids" in `docs/FORMAT.md`) while `max-claimed-ids`
    /// claims are held. Nothing of the request was stored. Sent with the
    /// wire code `InvalidEventId` (with `event_id` and `max_claimed_ids`).
    #[error(
        "event {index}: event id {id} is one the daemon could assign itself later, and \
         max-claimed-ids = {max} such ids are held already: leave the id out (the daemon \
         assigns one) or choose one it cannot assign, such as a random UUIDv4"
    )]
    TooManyClaims {
        /// Position in the request.
        index: usize,
        /// The id (UUID text).
        id: String,
        /// The limit (`max-claimed-ids`).
        max: u32,
    },
    /// Queue full.
    #[error("the writer queue is full ({depth} waiting); retry after {retry_after_ms} ms")]
    Busy {
        /// Requests waiting.
        depth: u64,
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// A file the append needs (the next segment, an index file) could not
    /// be created for a reason that clears by itself: too many open files
    /// (`EMFILE`, `ENFILE`) or no memory (`ENOMEM`). Nothing was stored and
    /// the writer goes on; the next append tries the file again. Sent with
    /// the wire code `Busy` and `retry_after_ms`, which every client
    /// already retries.
    #[error("{cause}; nothing was stored: retry after {retry_after_ms} ms")]
    Unavailable {
        /// The file and the error.
        cause: String,
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// The daemon is stopping.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// A previous I/O failure stopped the writer.
    #[error("the writer stopped after an I/O error and refuses writes until restarted: {cause}")]
    Poisoned {
        /// The original failure.
        cause: String,
    },
    /// The writer stopped while this request was in flight and could not
    /// settle it: its events may or may not be stored. A restart publishes
    /// whatever reached the disk; retry with the same idempotency keys then.
    #[error(
        "the outcome is unknown: {cause}; after a restart, retry with the same idempotency key"
    )]
    OutcomeUnknown {
        /// What failed.
        cause: String,
    },
    /// This request's write failed; its sequences were cancelled.
    #[error("i/o error while appending ({cause}); {}", cancelled(*.start, *.end))]
    Io {
        /// The failure.
        cause: String,
        /// First cancelled sequence.
        start: u64,
        /// End of the cancelled range.
        end: u64,
    },
}

/// The append an idempotency key's event was stored by, as
/// `IdempotencyBatchMismatch` names it.
fn stored_batch(batch: Option<(u64, u32)>) -> String {
    match batch {
        Some((_, 1)) => ", alone".to_owned(),
        Some((first, len)) => format!(" by a batch of {len} events from sequence {first}"),
        None => String::new(),
    }
}

/// What an `Io` refusal cancelled: `start..end`, which a failure before any
/// sequence was reserved leaves empty.
fn cancelled(start: u64, end: u64) -> String {
    if end > start {
        format!("sequences {start}..{end} were cancelled")
    } else {
        "no sequence was reserved, so none was cancelled".to_owned()
    }
}

impl AppendError {
    /// The stable wire code.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidCoordinate { .. } => ErrorCode::InvalidCoordinate,
            Self::InvalidKind { .. } => ErrorCode::InvalidKind,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            Self::EmptyBatch => ErrorCode::EmptyBatch,
            Self::VersionConflict { .. } => ErrorCode::VersionConflict,
            Self::EntityFull { .. } => ErrorCode::EntityFull,
            Self::IdempotencyConflict { .. } | Self::IdempotencyBatchMismatch { .. } => {
                ErrorCode::IdempotencyConflict
            }
            Self::DuplicateEventId { .. } => ErrorCode::DuplicateEventId,
            Self::InvalidEventId { .. }
            | Self::InvalidIdempotencyKey { .. }
            | Self::TooManyClaims { .. } => ErrorCode::InvalidEventId,
            Self::Busy { .. } | Self::Unavailable { .. } => ErrorCode::Busy,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Poisoned { .. } => ErrorCode::WriterPoisoned,
            Self::Io { .. } => ErrorCode::Io,
            Self::OutcomeUnknown { .. } => ErrorCode::OutcomeUnknown,
        }
    }

    /// The error as sent over the socket, with structured fields.
    #[must_use]
    pub fn to_wire(&self) -> WireError {
        let e = WireError::new(self.code(), self.to_string());
        match self {
            Self::InvalidCoordinate { index, .. }
            | Self::InvalidKind { index, .. }
            | Self::InvalidEventId { index } => e.with("index", index),
            Self::InvalidIdempotencyKey { index } => {
                e.with("index", index).with("idempotency_key", 0)
            }
            Self::PayloadTooLarge { index, len, max } => {
                e.with("index", index).with("len", len).with("max", max)
            }
            Self::BatchTooLarge {
                events,
                bytes,
                max_events,
                max_bytes,
            } => e
                .with("events", events)
                .with("bytes", bytes)
                .with("max_events", max_events)
                .with("max_bytes", max_bytes),
            Self::VersionConflict {
                index,
                entity,
                expected,
                found,
            } => e
                .with("index", index)
                .with("entity", entity)
                .with("expected", expected)
                .with("found", found),
            Self::EntityFull { index, entity } => e.with("index", index).with("entity", entity),
            Self::IdempotencyConflict { key } => e.with("key", format!("{key:#034x}")),
            Self::IdempotencyBatchMismatch {
                index,
                key,
                sequence,
                batch,
                events,
            } => {
                let e = e
                    .with("index", index)
                    .with("key", format!("{key:#034x}"))
                    .with("sequence", sequence)
                    .with("events", events);
                match batch {
                    Some((first, len)) => e.with("batch_first", first).with("batch_len", len),
                    None => e,
                }
            }
            Self::TooManyClaims { index, id, max } => e
                .with("index", index)
                .with("event_id", id)
                .with("max_claimed_ids", max),
            Self::DuplicateEventId { index, id, earlier } => {
                let e = e.with("index", index).with("event_id", id);
                match earlier {
                    Some(earlier) => e.with("earlier_index", earlier),
                    None => e,
                }
            }
            Self::Busy {
                depth,
                retry_after_ms,
            } => e
                .with("queue_depth", depth)
                .with("retry_after_ms", retry_after_ms),
            Self::Unavailable { retry_after_ms, .. } => e.with("retry_after_ms", retry_after_ms),
            Self::Io { start, end, .. } => {
                e.with("cancelled_start", start).with("cancelled_end", end)
            }
            Self::EmptyBatch
            | Self::ShuttingDown
            | Self::Poisoned { .. }
            | Self::OutcomeUnknown { .. } => e,
        }
    }
}
