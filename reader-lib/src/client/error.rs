//! [`ClientError`]: why a client call failed, and what its outcome was.

#[cfg(doc)]
use super::{Client, Transaction};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_protocol::wire::{ErrorCode, Receipt, WireError};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting or talking to the socket failed in a way retrying cannot
    /// fix (the socket refuses this user, the data directory does not
    /// exist or cannot be read).
    #[error("{path}: {source}")]
    Io {
        /// The socket, the discovery file or the data directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// [`Client::connect_dir`] found the data directory but no `socket`
    /// file in it: no daemon has published one (none was started there, or
    /// one is still opening the store), or its daemon stopped cleanly. A
    /// daemon started for the directory fixes it. (A daemon that was killed
    /// leaves its `socket` file: connecting then gives
    /// [`ClientError::Disconnected`].)
    #[error(
        "the daemon is not running for {} (it has no `socket` file: no daemon has published \
         one there, or its daemon stopped cleanly)",
        .data_dir.display()
    )]
    NotRunning {
        /// The data directory the client was given.
        data_dir: PathBuf,
    },
    /// The daemon sent something this client does not understand.
    #[error("protocol error: {what}")]
    Protocol {
        /// What was wrong.
        what: String,
    },
    /// The daemon refused the request; [`ClientError::code`] gives the code.
    #[error("the daemon refused the request: {0}")]
    Server(WireError),
    /// The daemon stayed busy past the retry budget.
    #[error("no success within {waited:?}: {last}{}", unresolved(.keys))]
    Timeout {
        /// Time spent retrying.
        waited: Duration,
        /// The last refusal.
        last: String,
        /// See [`ClientError::unresolved_keys`].
        keys: Vec<u128>,
        /// See [`ClientError::answered`].
        answered: Vec<Option<Result<Receipt, WireError>>>,
    },
    /// The daemon accepted the connection but did not answer within the
    /// `io_timeout` (it is stopped, hung or overloaded), on every try within
    /// the retry budget (`waited` zero: the first connect, not retried).
    #[error("{}{}", not_answering(.path, *.timeout, *.waited), unresolved(.keys))]
    NotAnswering {
        /// The socket.
        path: PathBuf,
        /// The `io_timeout` each try had.
        timeout: Duration,
        /// Time spent retrying.
        waited: Duration,
        /// See [`ClientError::unresolved_keys`].
        keys: Vec<u128>,
        /// See [`ClientError::answered`].
        answered: Vec<Option<Result<Receipt, WireError>>>,
    },
    /// The connection broke and no reconnect succeeded within the budget
    /// (`waited` zero: the first connect failed, nothing was retried). A
    /// socket that refuses the connection or does not exist has no daemon
    /// listening: it is not running (killed, or stopped without removing its
    /// socket), or still starting (a daemon listens once its restore is done).
    #[error("{}{}", disconnected(.path, *.waited, .last), unresolved(.keys))]
    Disconnected {
        /// The socket.
        path: PathBuf,
        /// Time spent retrying.
        waited: Duration,
        /// The last failure.
        last: String,
        /// See [`ClientError::unresolved_keys`].
        keys: Vec<u128>,
        /// See [`ClientError::answered`].
        answered: Vec<Option<Result<Receipt, WireError>>>,
    },
    /// The daemon runs but refused the connection for now (`Busy`: it serves
    /// its `max-connections`, or as many as its open-file limit allows;
    /// `ShuttingDown`), on every try within the retry budget (`waited`
    /// zero: `retry_for` left no room for a second try).
    /// [`ClientError::code`] and [`ClientError::wire`] give its refusal.
    #[error("{}{}", refused(.path, *.waited, .error), unresolved(.keys))]
    Refused {
        /// The socket.
        path: PathBuf,
        /// Time spent retrying.
        waited: Duration,
        /// The daemon's last refusal (boxed: it keeps every `ClientError`
        /// small).
        error: Box<WireError>,
        /// See [`ClientError::unresolved_keys`].
        keys: Vec<u128>,
        /// See [`ClientError::answered`].
        answered: Vec<Option<Result<Receipt, WireError>>>,
    },
    /// A request larger than the daemon's `max-frame-bytes` (from its
    /// hello): the client refused it and sent nothing of the call.
    #[error(
        "a request of {len} bytes exceeds the daemon's max-frame-bytes = {max}; it was not sent{}",
        unresolved(.keys)
    )]
    RequestTooLarge {
        /// The request's encoded length.
        len: usize,
        /// The daemon's `max-frame-bytes`.
        max: u32,
        /// Empty, except for a [`Transaction::commit`] whose answer was
        /// lost and whose resend as one batch is this request: the commit
        /// may or may not have been applied (see
        /// [`ClientError::unresolved_keys`]).
        keys: Vec<u128>,
    },
    /// An event the client refused to stage in a transaction while the
    /// daemon was unreachable: it breaks a rule the daemon would refuse it
    /// for (coordinate, reserved kind category, payload over the last
    /// `max-payload-bytes` the daemon announced, event id zero,
    /// idempotency key zero).
    /// [`ClientError::code`] gives the code the daemon would have given.
    #[error("event {index}: {what} (checked by the client: the daemon is unreachable)")]
    InvalidEvent {
        /// Its position in the transaction.
        index: usize,
        /// The daemon's code for the refusal.
        code: ErrorCode,
        /// The rule broken.
        what: String,
    },
    /// A transaction reopened on a new connection (after a reconnect)
    /// replays its staged events, and the daemon refused one of them,
    /// staged earlier while it was unreachable (or accepted by a daemon
    /// that has since restarted with other limits). Every later call of
    /// the transaction meets the same refusal: cancel it.
    #[error(
        "the daemon refused {}, staged earlier, when the transaction was replayed on a new \
         connection: {error}; the transaction cannot commit, cancel it",
        staged_event(*.index)
    )]
    StagedEventRefused {
        /// The refused event's position in the transaction, if the daemon named it.
        index: Option<usize>,
        /// The daemon's refusal.
        error: WireError,
    },
    /// [`Client::connect_dir`] (or a reconnect of its client) reached,
    /// through the socket the data directory's `socket` file names, the
    /// daemon of another data directory: no daemon runs for this one, and
    /// nothing was sent. A copy of a data directory keeps its original's
    /// `socket` file (of a running daemon, of one killed, or of one started
    /// by systemd socket activation, whose socket outlives it). Another
    /// directory is told by its device and inode: a copy has others, a
    /// renamed directory keeps them.
    #[error(
        "the socket {} that {} names is served by the daemon of {} (device {served_dev}, \
         inode {served_ino}), not by the directory now at {} (device {dev}, inode {ino}): a copy \
         of a data directory names its original's socket, and a daemon whose directory was moved \
         or replaced while it ran still serves the old one",
        .socket.display(),
        .data_dir.join("socket").display(),
        .served_dir.display(),
        .data_dir.display()
    )]
    OtherDataDir {
        /// The data directory the client was given.
        data_dir: PathBuf,
        /// Its device (`st_dev`).
        dev: u64,
        /// Its inode (`st_ino`).
        ino: u64,
        /// The socket its `socket` file names.
        socket: PathBuf,
        /// The data directory the daemon there serves, as it resolved it at
        /// its start.
        served_dir: PathBuf,
        /// That directory's device.
        served_dev: u64,
        /// That directory's inode.
        served_ino: u64,
    },
    /// [`Client::sync`] synced the daemon instance it reached, but appends
    /// this client had from an earlier instance with receipts saying "not
    /// durable" were never synced there: that instance is gone (the daemon
    /// restarted), and a crash of it may have lost them (a clean stop
    /// syncs them; the client cannot tell which happened).
    #[error(
        "the daemon restarted before {events} event(s) it had acknowledged as not yet durable \
         (highest sequence {highest_sequence}) were synced: they may be lost, and this sync \
         (visible {visible}) cannot make them durable; check with a Reader that they are stored \
         and append again the missing ones"
    )]
    NotSynced {
        /// How many of this client's events may be lost.
        events: u64,
        /// The highest sequence their receipts gave (after a loss, the new
        /// instance may give it out again, to another event).
        highest_sequence: u64,
        /// The visible watermark the sync returned.
        visible: u64,
    },
}

/// The field of an `OutcomeUnknown` [`WireError`] in which the client lists
/// the request's idempotency keys (32 hex digits each, comma-separated).
pub const UNRESOLVED_KEYS_FIELD: &str = "idempotency_keys";

fn unresolved(keys: &[u128]) -> String {
    match keys.len() {
        0 => String::new(),
        n => format!(
            "; {n} event(s) sent may or may not be stored: resend them with the same idempotency keys"
        ),
    }
}

fn staged_event(index: Option<usize>) -> String {
    index.map_or_else(
        || "the staged events".to_owned(),
        |i| format!("staged event {i}"),
    )
}

fn not_answering(path: &Path, timeout: Duration, waited: Duration) -> String {
    let mut s = format!(
        "the daemon at {} did not answer within {timeout:?}",
        path.display()
    );
    if !waited.is_zero() {
        s += &format!("; retried for {waited:?}");
    }
    s
}

fn refused(path: &Path, waited: Duration, error: &WireError) -> String {
    let mut s = format!(
        "the daemon at {} refused the connection: {error}",
        path.display()
    );
    if !waited.is_zero() {
        s += &format!("; retried for {waited:?}");
    }
    s
}

fn disconnected(path: &Path, waited: Duration, last: &str) -> String {
    if waited.is_zero() {
        format!("cannot connect to {}: {last}", path.display())
    } else {
        format!(
            "disconnected from {}; no reconnect within {waited:?}: {last}",
            path.display()
        )
    }
}

impl ClientError {
    /// The daemon's error code, for [`ClientError::Server`],
    /// [`ClientError::Refused`] and [`ClientError::StagedEventRefused`]; for
    /// [`ClientError::InvalidEvent`], the code the daemon would have given.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server(e) | Self::StagedEventRefused { error: e, .. } => Some(e.code),
            Self::Refused { error, .. } => Some(error.code),
            Self::InvalidEvent { code, .. } => Some(*code),
            _ => None,
        }
    }
    /// For a `VersionConflict` refusal, the entity's version the daemon
    /// found: `Some(None)` if it had no event yet, `Some(Some(n))` if its
    /// last clock was `n` (retry with `ExpectedVersion::Exact(n)` after
    /// re-reading). `None` for any other error.
    #[must_use]
    pub fn found_version(&self) -> Option<Option<u32>> {
        let e = self
            .wire()
            .filter(|e| e.code == ErrorCode::VersionConflict)?;
        match e.fields.get("found")?.as_str() {
            "none" => Some(None),
            n => n.parse().ok().map(Some),
        }
    }
    /// The idempotency keys of the events this call may or may not have
    /// stored: the daemon answered `OutcomeUnknown`, or the call gave up
    /// (`Timeout`, `NotAnswering`, `Disconnected`, `Refused`) after sending them on a
    /// connection that then gave no answer, or a transaction's commit got
    /// no answer and its resend could not be completed (then also with
    /// `RequestTooLarge`). Resending the same events with
    /// these keys (`AppendRequest::idempotency_key`, in the same order)
    /// stores each at most once, within the daemon's `idempotency-window`.
    /// Empty when every event's outcome is known (e.g. refused, or never
    /// sent). For keys the client generated, this is the only place they
    /// show. A pipelined call's known outcomes are in
    /// [`ClientError::answered`].
    #[must_use]
    pub fn unresolved_keys(&self) -> Vec<u128> {
        match self {
            Self::Timeout { keys, .. }
            | Self::NotAnswering { keys, .. }
            | Self::Disconnected { keys, .. }
            | Self::Refused { keys, .. }
            | Self::RequestTooLarge { keys, .. } => keys.clone(),
            Self::Server(e) if e.code == ErrorCode::OutcomeUnknown => e
                .fields
                .get(UNRESOLVED_KEYS_FIELD)
                .map(|v| {
                    v.split(',')
                        .filter_map(|k| u128::from_str_radix(k, 16).ok())
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
    /// What a [`Client::append_pipelined`] that gave up (`Timeout`,
    /// `NotAnswering`, `Disconnected`, `Refused`) had been answered: one
    /// entry per event, in request order. `Some(Ok(receipt))`: the event is
    /// stored. `Some(Err(e))`: the daemon answered with a refusal (nothing
    /// stored), or `OutcomeUnknown` (its key is in the error's
    /// [`UNRESOLVED_KEYS_FIELD`](super::UNRESOLVED_KEYS_FIELD)). `None`: no
    /// answer came: the event is among [`ClientError::unresolved_keys`] if
    /// it was sent, else it was never sent and is not stored. Empty when no
    /// event was answered, and for every other call and error.
    #[must_use]
    pub fn answered(&self) -> &[Option<Result<Receipt, WireError>>] {
        match self {
            Self::Timeout { answered, .. }
            | Self::NotAnswering { answered, .. }
            | Self::Disconnected { answered, .. }
            | Self::Refused { answered, .. } => answered,
            _ => &[],
        }
    }
    /// Whether the same call may succeed later, unchanged, once a daemon
    /// runs (again) or has room: [`ClientError::NotRunning`],
    /// [`ClientError::Disconnected`], [`ClientError::NotAnswering`],
    /// [`ClientError::Refused`], [`ClientError::Timeout`], and a
    /// [`ClientError::Server`] refusal whose code is about the daemon's
    /// state, not the request (`Busy`, `TooManyInFlight`, `ShuttingDown`,
    /// `Timeout`, `OutcomeUnknown`). Resend with the
    /// [`ClientError::unresolved_keys`] the error gives, so that nothing is
    /// stored twice. `false` for everything else: the request, the path,
    /// this user's permissions or the daemon's version must change first
    /// (`Io`, `Protocol`, `OtherDataDir`, `RequestTooLarge`, `InvalidEvent`,
    /// `StagedEventRefused`, `NotSynced`, any other refusal).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NotRunning { .. }
            | Self::Disconnected { .. }
            | Self::NotAnswering { .. }
            | Self::Refused { .. }
            | Self::Timeout { .. } => true,
            Self::Server(e) => matches!(
                e.code,
                ErrorCode::Busy
                    | ErrorCode::TooManyInFlight
                    | ErrorCode::ShuttingDown
                    | ErrorCode::Timeout
                    | ErrorCode::OutcomeUnknown
            ),
            _ => false,
        }
    }
    /// The daemon's typed error, for [`ClientError::Server`] and
    /// [`ClientError::Refused`].
    #[must_use]
    pub fn wire(&self) -> Option<&WireError> {
        match self {
            Self::Server(e) => Some(e),
            Self::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}
