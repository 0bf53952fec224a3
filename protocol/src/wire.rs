//! The append socket's messages: length-prefixed frames with msgpack bodies.
//!
//! Every frame is `len: u32 LE` then `len` bytes of rmp-serde. The first
//! frame from a client is [`ClientHello`]; the server answers [`ServerHello`]
//! or an error and closes. Afterwards the client sends [`Request`]s, each
//! with an id, and receives one [`Response`] per request, in request order.

use crate::model::ExpectedVersion;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

mod code;
mod request;

/// Magic carried by the hello, so a stray connection is told apart from a client.
pub const HELLO_MAGIC: [u8; 4] = *b"weir";
/// Protocol versions this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Default largest frame either side accepts.
pub const DEFAULT_MAX_FRAME: u32 = 64 << 20;

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// [`HELLO_MAGIC`].
    pub magic: [u8; 4],
    /// Versions the client speaks, preferred first.
    pub versions: Vec<u16>,
    /// A free-form client name for logs.
    pub client: String,
}

/// The server's answer to a good hello. Sent as a map of field names (an
/// array before `max_in_flight`): every build reads a struct from either and
/// skips names it does not know, so fields can be added to this one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerHello {
    /// Chosen version.
    pub version: u16,
    /// Daemon instance id.
    #[serde(with = "crate::bin128")]
    pub instance: u128,
    /// Largest frame the server accepts.
    pub max_frame: u32,
    /// Largest payload accepted.
    pub max_payload: u32,
    /// Most events in one batch.
    pub max_batch_events: u32,
    /// Most bytes (payloads and names) in one batch.
    pub max_batch_bytes: u64,
    /// Most requests in flight on one connection: more are refused
    /// `TooManyInFlight`. `None` from a daemon that does not say (older
    /// ones send the six fields above as an array).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// The store's latest daemon starts (at most
    /// [`crate::starts::STARTS_IN_HELLO`], the newest, this one, last): with
    /// them a client tells which of the events an earlier instance
    /// acknowledged without syncing outlived its stop. Empty from a daemon
    /// that does not say.
    #[serde(default)]
    pub starts: Vec<crate::starts::Start>,
    /// The data directory the daemon serves, as it found it at its start:
    /// a client that found the socket through a data directory's `socket`
    /// file checks that it reached that directory's daemon (a copy of a
    /// data directory names its original's socket). `None` from a daemon
    /// that does not say.
    #[serde(default)]
    pub data_dir: Option<ServedDir>,
}

/// The identity of the data directory a daemon serves: its `st_dev` and
/// `st_ino`, which a copy does not share and a rename keeps. Sent as an
/// array `[dev, ino, path]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedDir {
    /// The directory's `st_dev`.
    pub dev: u64,
    /// The directory's `st_ino`.
    pub ino: u64,
    /// Its path as the daemon resolved it at its start (the bytes of a Unix
    /// path), for messages only: it may have moved since.
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
}

impl Serialize for ServerHello {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let n = 6
            + usize::from(self.max_in_flight.is_some())
            + usize::from(!self.starts.is_empty())
            + usize::from(self.data_dir.is_some());
        let mut m = s.serialize_map(Some(n))?;
        m.serialize_entry("version", &self.version)?;
        // A u128 is written as crate::bin128 writes it: a 16-byte bin.
        m.serialize_entry("instance", &self.instance)?;
        m.serialize_entry("max_frame", &self.max_frame)?;
        m.serialize_entry("max_payload", &self.max_payload)?;
        m.serialize_entry("max_batch_events", &self.max_batch_events)?;
        m.serialize_entry("max_batch_bytes", &self.max_batch_bytes)?;
        if let Some(n) = self.max_in_flight {
            m.serialize_entry("max_in_flight", &n)?;
        }
        if !self.starts.is_empty() {
            m.serialize_entry("starts", &self.starts)?;
        }
        if let Some(d) = &self.data_dir {
            m.serialize_entry("data_dir", d)?;
        }
        m.end()
    }
}

/// One event to append.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppendRequest {
    /// Entity.
    pub entity: String,
    /// Scope.
    pub scope: String,
    /// Kind (categories 0x0 and 0xD are refused).
    pub kind: u16,
    /// Opaque payload, msgpack by convention.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Client-chosen event id; the daemon assigns a UUIDv7 when `None`.
    #[serde(default, with = "crate::bin128::opt")]
    pub event_id: Option<u128>,
    /// Correlation id; defaults to the event id.
    #[serde(default, with = "crate::bin128::opt")]
    pub correlation_id: Option<u128>,
    /// Causation id.
    #[serde(default, with = "crate::bin128::opt")]
    pub causation_id: Option<u128>,
    /// A retried append with the same key returns the first receipt and writes nothing;
    /// the key sent with another event (coordinate, kind, payload, causation, or ids it
    /// names) is refused with `IdempotencyConflict`, and so is a request of known keys
    /// that is not the append they were stored by, whole and in order (another batch
    /// shape).
    #[serde(default, with = "crate::bin128::opt")]
    pub idempotency_key: Option<u128>,
    /// Optimistic-concurrency condition on the entity.
    pub expected: ExpectedVersion,
}

/// Proof that an event is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Event id.
    #[serde(with = "crate::bin128")]
    pub event_id: u128,
    /// Global sequence.
    pub sequence: u64,
    /// Per-entity clock.
    pub clock: u32,
    /// The event's hash (msgpack bin 32 on the wire).
    #[serde(with = "serde_bytes")]
    pub event_hash: [u8; 32],
    /// Was it fsynced before this receipt was sent?
    pub durable: bool,
    /// Is this the receipt of an earlier append with the same idempotency key?
    pub replayed: bool,
}

/// A request operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Append one event (or stage it, inside a transaction).
    Append(AppendRequest),
    /// Append several events, all or nothing.
    AppendBatch(Vec<AppendRequest>),
    /// Open a transaction on this connection.
    Begin,
    /// Append everything staged since `Begin`, all or nothing, visible together.
    Commit,
    /// Drop everything staged since `Begin`.
    Cancel,
    /// fsync everything appended so far (for `sync` policies other than `always`).
    Sync,
    /// Daemon statistics.
    Stats,
    /// Liveness.
    Ping,
}

/// A request: an id chosen by the client, echoed in the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Request id.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// Daemon statistics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Instance id.
    #[serde(with = "crate::bin128")]
    pub instance: u128,
    /// Next sequence to allocate.
    pub allocated: u64,
    /// Visibility watermark.
    pub visible: u64,
    /// Events appended since start.
    pub appends: u64,
    /// Payload and name bytes appended since start.
    pub bytes: u64,
    /// Groups committed since start.
    pub groups: u64,
    /// fsyncs since start.
    pub fsyncs: u64,
    /// Requests waiting for the writer.
    pub queue_depth: u64,
    /// Open connections.
    pub connections: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of index files.
    pub index_bytes: u64,
    /// Restore path taken at start.
    pub restore_path: String,
    /// Events restored at start.
    pub restore_entries: u64,
    /// Milliseconds the restore took.
    pub restore_ms: u64,
    /// Rejected requests by reason code.
    pub rejected: BTreeMap<String, u64>,
    /// fsync latency histogram: (upper bound µs, count), cumulative-free.
    pub fsync_hist_us: Vec<(u64, u64)>,
    /// Group size histogram: (upper bound events, count).
    pub group_hist: Vec<(u64, u64)>,
    /// The writer refuses every write until the daemon restarts (a write or
    /// fsync failed). Last, and sent only when true: a healthy daemon's
    /// `Stats` is the array older clients decode.
    #[serde(default, skip_serializing_if = "is_false")]
    pub writer_poisoned: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
fn is_false(b: &bool) -> bool {
    !*b
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// One receipt.
    Appended(Receipt),
    /// Receipts of a batch or commit, in order.
    Batch(Vec<Receipt>),
    /// Inside a transaction: the event was staged; receipts come with `Commit`.
    Staged {
        /// Events staged so far.
        staged: u32,
    },
    /// A transaction began.
    Begun,
    /// A transaction was cancelled.
    Cancelled {
        /// Events dropped.
        dropped: u32,
    },
    /// Everything appended so far is durable.
    Synced {
        /// Visibility watermark at the sync.
        visible: u64,
    },
    /// Statistics.
    Stats(Box<Stats>),
    /// Answer to `Ping`.
    Pong,
}

/// Stable error codes, sent by name (a msgpack string). Never renamed; new
/// codes are added at the end. A code this build does not know (sent by a
/// newer daemon) decodes as [`ErrorCode::Unknown`], its name kept in the
/// [`WireError`]'s field [`UNKNOWN_CODE_FIELD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame could not be decoded.
    MalformedFrame,
    /// The frame is larger than the limit.
    FrameTooLarge,
    /// No common protocol version.
    UnsupportedVersion,
    /// The first frame was not a hello.
    BadHello,
    /// Invalid entity or scope.
    InvalidCoordinate,
    /// Kind reserved for the system or out of range.
    InvalidKind,
    /// Payload larger than the limit.
    PayloadTooLarge,
    /// Batch over the count or byte limit.
    BatchTooLarge,
    /// Empty batch.
    EmptyBatch,
    /// Expected version did not hold.
    VersionConflict,
    /// Idempotency key reused for a different request: another batch shape
    /// (not the one append the keys were stored by, whole and in order; the
    /// fields then name the event's `index`, its stored `sequence`, and
    /// `batch_first`/`batch_len` of that append), or another event than the
    /// one the key first stored.
    IdempotencyConflict,
    /// Event id already stored.
    DuplicateEventId,
    /// Event id zero, idempotency key zero (fields `index` and
    /// `idempotency_key`: a frame stores key 0 as "no key"), or a client id
    /// that would make a claim past the daemon's `max-claimed-ids` (fields
    /// `index`, `event_id`, `max_claimed_ids`).
    InvalidEventId,
    /// The writer queue is full; retry after the given time.
    Busy,
    /// Too many requests in flight on this connection.
    TooManyInFlight,
    /// The peer's uid/gid may not append.
    PermissionDenied,
    /// Transaction operation out of order (commit without begin, nested begin).
    TransactionState,
    /// The daemon is stopping.
    ShuttingDown,
    /// The writer hit an I/O error and refuses writes until restarted.
    WriterPoisoned,
    /// An I/O error on this request.
    Io,
    /// Idle or slow client timed out.
    Timeout,
    /// Anything else.
    Internal,
    /// The writer stopped mid-request: the events may or may not be stored;
    /// retry with the same idempotency keys after a restart.
    OutcomeUnknown,
    /// The entity's clock is at `u32::MAX`: it can take no more events
    /// (fields `index`, `entity`). Clients built before it cannot decode
    /// this code (nor the response carrying it).
    EntityFull,
    /// Not sent by a daemon: a code this build does not know, from a newer
    /// daemon. The error's message is the daemon's; its name is in the
    /// field [`UNKNOWN_CODE_FIELD`].
    Unknown,
}

/// The field in which a decoded [`WireError`] with [`ErrorCode::Unknown`]
/// keeps the code's name (or `#` and its index) as sent. Daemons send no
/// field of this name.
pub const UNKNOWN_CODE_FIELD: &str = "code";

/// A typed error: a stable code, a sentence, structured fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(from = "code::WireErrorRepr")]
#[error("{}: {message}", self.code_name())]
pub struct WireError {
    /// Stable code.
    pub code: ErrorCode,
    /// A sentence a user can act on.
    pub message: String,
    /// Structured details (e.g. `entity`, `expected`, `found`, `retry_after_ms`).
    pub fields: BTreeMap<String, String>,
}

impl WireError {
    /// An error without fields.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: BTreeMap::new(),
        }
    }
    /// Adds a field.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.fields.insert(key.to_owned(), value.to_string());
        self
    }
    /// The code's name as the daemon sent it (for [`ErrorCode::Unknown`],
    /// the name this build does not know).
    #[must_use]
    pub fn code_name(&self) -> &str {
        match self.code {
            ErrorCode::Unknown => self
                .fields
                .get(UNKNOWN_CODE_FIELD)
                .map_or("Unknown", String::as_str),
            code => code.name(),
        }
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request id it answers (0 for connection-level errors).
    pub id: u64,
    /// The outcome.
    pub result: Result<Reply, WireError>,
}

/// The server's answer to the hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted.
    Ok(ServerHello),
    /// Refused; the server closes after sending this.
    Err(WireError),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameReadError {
    /// The length prefix exceeds the limit; nothing was allocated.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// The body is not valid msgpack of the expected shape.
    #[error("malformed frame body: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The stream failed or ended.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Encodes `msg` as one frame (length prefix included) onto `out`.
pub fn encode<T: Serialize>(out: &mut Vec<u8>, msg: &T) -> Result<(), rmp_serde::encode::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write(out, msg)?;
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Writes one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    encode(&mut buf, msg).map_err(io::Error::other)?;
    w.write_all(&buf)
}

/// Reads one frame body into `buf`, refusing lengths over `max` before
/// allocating. The buffer grows with the bytes that arrive, not with the
/// length announced: a prefix alone costs nothing.
pub fn read_frame_bytes<R: Read>(
    r: &mut R,
    max: u32,
    buf: &mut Vec<u8>,
) -> Result<(), FrameReadError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(FrameReadError::TooLarge { len, max });
    }
    buf.clear();
    r.take(u64::from(len)).read_to_end(buf)?;
    if buf.len() < len as usize {
        return Err(FrameReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the frame ended after {} of {len} bytes", buf.len()),
        )));
    }
    Ok(())
}

/// Nesting depth allowed in a frame body. Our messages nest less than 8
/// deep; the limit keeps a crafted body from recursing through the stack of
/// a small thread (rmp-serde's own limit, 1024, overflows a 2 MiB stack).
pub const MAX_DEPTH: usize = 32;

/// Most bytes one event of an `AppendBatch` takes on the wire besides its
/// payload, entity and scope bytes (what counts against `max-batch-bytes`):
/// its array header (1), the entity's and scope's string headers (3 each,
/// names being at most [`MAX_NAME_BYTES`](crate::model::MAX_NAME_BYTES)),
/// the kind (3), the payload's bin header (5), four 16-byte ids as bins
/// (18 each) and `{"Exact": u32}` (12).
pub const EVENT_WIRE_OVERHEAD: u64 = 99;

/// Most bytes of an `AppendBatch` request's frame body besides its events:
/// `[id, {"AppendBatch": [...]}]` with a `u64` id and an array32 header. A
/// full batch's body is at most `max-batch-bytes + max-batch-events ×`
/// [`EVENT_WIRE_OVERHEAD`] `+` this.
pub const BATCH_ENVELOPE_BYTES: u64 = 28;

/// Decodes a frame body with a nesting limit ([`MAX_DEPTH`]); the message
/// must take the whole body (bytes after it make the frame malformed).
/// Both ends decode with it: a hostile peer can crash neither.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    decode_seed(body, std::marker::PhantomData::<T>)
}

/// [`decode`] with a seed.
pub(crate) fn decode_seed<'de, S: DeserializeSeed<'de>>(
    body: &[u8],
    seed: S,
) -> Result<S::Value, rmp_serde::decode::Error> {
    // A reader over the slice reads no further than the message, so what
    // is left of the slice afterwards is what follows it.
    let mut rest = body;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_DEPTH);
    let value = seed.deserialize(&mut de)?;
    let rest = rest.len();
    if rest > 0 {
        return Err(rmp_serde::decode::Error::Syntax(format!(
            "{rest} bytes after the message"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_healthy_daemon_keep_the_older_layout() {
        // 17 fields, as every build before `writer_poisoned` sent and reads.
        let healthy = rmp_serde::to_vec(&Stats::default()).unwrap();
        assert_eq!(&healthy[..3], &[0xdc, 0, 17]);
        let back: Stats = decode(&healthy).unwrap();
        assert!(!back.writer_poisoned);
        let poisoned = Stats {
            writer_poisoned: true,
            ..Stats::default()
        };
        let bytes = rmp_serde::to_vec(&poisoned).unwrap();
        assert_eq!(&bytes[..3], &[0xdc, 0, 18]);
        assert_eq!(decode::<Stats>(&bytes).unwrap(), poisoned);
    }

    /// `ServerHello` as every build before `max_in_flight` had it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OlderServerHello {
        version: u16,
        #[serde(with = "crate::bin128")]
        instance: u128,
        max_frame: u32,
        max_payload: u32,
        max_batch_events: u32,
        max_batch_bytes: u64,
    }

    #[test]
    fn the_hello_is_read_by_older_clients_and_from_older_daemons() {
        let hello = ServerHello {
            version: 1,
            instance: u128::MAX - 7,
            max_frame: 64 << 20,
            max_payload: 1 << 20,
            max_batch_events: 1 << 16,
            max_batch_bytes: 1 << 30,
            max_in_flight: Some(8),
            starts: vec![
                crate::starts::Start {
                    instance: 3,
                    visible: 40,
                },
                crate::starts::Start {
                    instance: u128::MAX - 7,
                    visible: 12,
                },
            ],
            data_dir: Some(ServedDir {
                dev: 2049,
                ino: u64::MAX - 1,
                path: b"/var/lib/weir".to_vec(),
            }),
        };
        let older = OlderServerHello {
            version: 1,
            instance: u128::MAX - 7,
            max_frame: 64 << 20,
            max_payload: 1 << 20,
            max_batch_events: 1 << 16,
            max_batch_bytes: 1 << 30,
        };
        let bytes = rmp_serde::to_vec(&hello).unwrap();
        assert_eq!(bytes[0], 0x89, "a map of 9");
        assert_eq!(decode::<OlderServerHello>(&bytes).unwrap(), older);
        assert_eq!(decode::<ServerHello>(&bytes).unwrap(), hello);
        // An older daemon's: an array of 6, which says nothing of the limit.
        let bytes = rmp_serde::to_vec(&older).unwrap();
        assert_eq!(bytes[0], 0x96);
        let read = decode::<ServerHello>(&bytes).unwrap();
        assert_eq!(read.max_in_flight, None);
        assert_eq!(
            read,
            ServerHello {
                max_in_flight: None,
                starts: Vec::new(),
                data_dir: None,
                ..hello
            }
        );
    }

    #[test]
    fn a_full_batch_fits_its_computed_bound_exactly() {
        // Every field at its widest: names at the limit, a bin32 payload,
        // all ids set, Exact with a 5-byte u32; a u64 id and an array32.
        let name = "n".repeat(crate::model::MAX_NAME_BYTES);
        let widest = AppendRequest {
            entity: name.clone(),
            scope: name,
            kind: 0xffff,
            payload: vec![1; 1 << 16],
            event_id: Some(u128::MAX),
            correlation_id: Some(u128::MAX),
            causation_id: Some(u128::MAX),
            idempotency_key: Some(u128::MAX),
            expected: ExpectedVersion::Exact(u32::MAX),
        };
        let names_and_payload = (2 * crate::model::MAX_NAME_BYTES + (1 << 16)) as u64;
        let one = rmp_serde::to_vec(&widest).unwrap().len() as u64;
        assert_eq!(one - names_and_payload, EVENT_WIRE_OVERHEAD);
        let small = AppendRequest {
            payload: vec![1],
            ..widest.clone()
        };
        let events = 1 << 16;
        let mut batch = vec![small; events - 1];
        batch.push(widest);
        let mut frame = Vec::new();
        encode(
            &mut frame,
            &Request {
                id: u64::MAX,
                op: Op::AppendBatch(batch),
            },
        )
        .unwrap();
        let n = events as u64;
        // What counts against max-batch-bytes: every name, the payloads.
        let counted = n * 2 * crate::model::MAX_NAME_BYTES as u64 + (1 << 16) + (n - 1);
        let body = frame.len() as u64 - 4;
        // A 1-byte payload's bin header takes 2 bytes, not the bound's 5.
        let slack = (n - 1) * 3;
        assert_eq!(
            body + slack,
            counted + n * EVENT_WIRE_OVERHEAD + BATCH_ENVELOPE_BYTES
        );
    }

    #[test]
    fn messages_round_trip() {
        let req = Request {
            id: 7,
            op: Op::AppendBatch(vec![AppendRequest {
                entity: "user:1".into(),
                scope: "t".into(),
                kind: 0x1001,
                payload: vec![1, 2, 3],
                event_id: Some(u128::MAX - 1),
                correlation_id: None,
                causation_id: Some(3),
                idempotency_key: Some(1 << 100),
                expected: ExpectedVersion::Exact(4),
            }]),
        };
        let mut buf = Vec::new();
        encode(&mut buf, &req).unwrap();
        let mut body = Vec::new();
        read_frame_bytes(&mut buf.as_slice(), DEFAULT_MAX_FRAME, &mut body).unwrap();
        assert_eq!(decode::<Request>(&body).unwrap(), req);
        let resp = Response {
            id: 7,
            result: Err(WireError::new(ErrorCode::Busy, "queue full").with("retry_after_ms", 5)),
        };
        buf.clear();
        encode(&mut buf, &resp).unwrap();
        read_frame_bytes(&mut buf.as_slice(), DEFAULT_MAX_FRAME, &mut body).unwrap();
        assert_eq!(decode::<Response>(&body).unwrap(), resp);
    }

    /// `body` with its one 16-byte bin (`c4 10` and the bytes) replaced by `with`.
    fn swap_u128(body: &[u8], with: &[u8]) -> Vec<u8> {
        let at = body.windows(2).position(|w| w == [0xc4, 0x10]).unwrap();
        assert!(!body[at + 2..].windows(2).any(|w| w == [0xc4, 0x10]));
        [&body[..at], with, &body[at + 18..]].concat()
    }

    #[test]
    fn a_u128_is_only_a_16_byte_bin() {
        let req = Request {
            id: 1,
            op: Op::Append(AppendRequest {
                entity: "e".into(),
                scope: "s".into(),
                kind: 0x1001,
                event_id: Some(0x0102),
                ..AppendRequest::default()
            }),
        };
        let mut buf = Vec::new();
        encode(&mut buf, &req).unwrap();
        let body = &buf[4..];
        let mut wide = vec![0xc5, 0x00, 0x10];
        wide.extend_from_slice(&0x0102u128.to_be_bytes());
        assert_eq!(decode::<Request>(&swap_u128(body, &wide)).unwrap(), req);
        // -1 (it wrapped to u128::MAX), 0x0102 as an integer, 15 bytes.
        for bad in [
            &[0xff][..],
            &[0xcd, 0x01, 0x02],
            &[0xc4, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2],
        ] {
            assert!(
                decode::<Request>(&swap_u128(body, bad)).is_err(),
                "{bad:x?}"
            );
        }
        let resp = Response {
            id: 1,
            result: Ok(Reply::Appended(Receipt {
                event_id: 7,
                sequence: 1,
                clock: 1,
                event_hash: [0; 32],
                durable: true,
                replayed: false,
            })),
        };
        buf.clear();
        encode(&mut buf, &resp).unwrap();
        assert_eq!(decode::<Response>(&buf[4..]).unwrap(), resp);
        assert!(decode::<Response>(&swap_u128(&buf[4..], &[0x07])).is_err());
    }

    #[test]
    fn oversized_length_is_refused_before_reading() {
        let bytes = u32::MAX.to_le_bytes();
        let mut body = Vec::new();
        let err = read_frame_bytes(&mut &bytes[..], 1024, &mut body).unwrap_err();
        assert!(matches!(
            err,
            FrameReadError::TooLarge {
                len: u32::MAX,
                max: 1024
            }
        ));
        assert!(body.capacity() < 1024);
    }

    #[test]
    fn bytes_after_the_message_make_the_frame_malformed() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            &Request {
                id: 1,
                op: Op::Ping,
            },
        )
        .unwrap();
        let body = buf[4..].to_vec();
        assert!(decode::<Request>(&body).is_ok());
        let mut longer = body.clone();
        longer.extend_from_slice(&[0xc1, 0xff, 0x00, 0x42]);
        let e = decode::<Request>(&longer).unwrap_err();
        assert!(e.to_string().contains("4 bytes after the message"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        // 100,000 nested one-element arrays, skipped (as serde skips an
        // unknown field's value) on a 128 KiB stack.
        let mut body = vec![0x91u8; 100_000];
        body.push(0xc0);
        let refused = std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || decode::<serde::de::IgnoredAny>(&body).is_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(refused);
    }

    #[test]
    fn a_length_prefix_alone_costs_no_memory() {
        // 200 MiB announced, 3 bytes sent.
        let mut bytes = (200u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0x92, 0x01, 0x81]);
        let mut body = Vec::new();
        let err = read_frame_bytes(&mut bytes.as_slice(), 256 << 20, &mut body).unwrap_err();
        assert!(
            matches!(&err, FrameReadError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        assert!(body.capacity() < 1 << 20, "{} bytes held", body.capacity());
    }

    #[test]
    fn wrong_shape_is_a_decode_error() {
        let mut buf = Vec::new();
        encode(&mut buf, &("not", "a", "request")).unwrap();
        assert!(decode::<Request>(&buf[4..]).is_err());
    }
}
