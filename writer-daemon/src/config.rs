//! Daemon configuration: one TOML-backed struct, every field with its default,
//! and `validate()` that names the bad value.

use crate::segments::SegmentLog;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use weir_protocol::model::MAX_NAME_BYTES;
use weir_protocol::segment::{FRAME_HEADER_LEN, SEGMENT_MAX_LEN};
use weir_protocol::wire::{BATCH_ENVELOPE_BYTES, EVENT_WIRE_OVERHEAD};

/// When appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SyncPolicy {
    /// fsync every group before any of its appends is acknowledged. Default.
    #[default]
    Always,
    /// fsync once at least `sync-every-n-events` unsynced events exist.
    EveryNEvents,
    /// fsync when the last sync is older than `sync-interval-ms`.
    IntervalMs,
    /// Never fsync on the append path (only at rotation, `Sync` and shutdown);
    /// writeback of every 8 MiB of a segment is started, not waited for.
    /// New segments are then only reserved (`posix_fallocate`), not
    /// zero-filled first: the fill only makes frequent syncs cheaper.
    Never,
}

/// Which sync call is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// `fdatasync`: data and the metadata needed to read it. Default.
    #[default]
    Data,
    /// `fsync`: data and all metadata.
    All,
}

/// The daemon's configuration. Field names are kebab-case in TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Data directory. Default: `./weir-data`.
    pub data_dir: PathBuf,
    /// Append socket path. Default: `weir.sock` inside `$RUNTIME_DIRECTORY`
    /// when set (systemd), else inside the data directory. At most 107 bytes,
    /// also once made absolute (clients connect to the absolute path); and
    /// when the daemon binds it (not under socket activation), its directory
    /// at most 95 bytes, since the daemon binds it first as
    /// `<directory>/.wb<pid in hex>/s` (up to 12 bytes more than the
    /// directory) and then links it into place.
    pub socket: Option<PathBuf>,
    /// Durability policy. Default: `always`.
    pub sync: SyncPolicy,
    /// `fdatasync` (`data`) or `fsync` (`all`). Default: `data`.
    pub sync_mode: SyncMode,
    /// Events between syncs under `every-n-events`. Default: 1000.
    pub sync_every_n_events: u32,
    /// Milliseconds between syncs under `interval-ms`. Default: 10.
    pub sync_interval_ms: u32,
    /// Segment file size; files are preallocated to it. Between 1 MiB and
    /// 32 GiB (a sealed segment's footer lists every frame with u32
    /// lengths). Default: 256 MiB.
    pub segment_max_bytes: u64,
    /// log2 of rows per index chunk file. Default: 20 (1,048,576 rows, ~154 MiB per chunk).
    pub chunk_rows_log2: u32,
    /// Largest payload in bytes. Default: 16 MiB.
    pub max_payload_bytes: u32,
    /// Most events in one batch. Default: 10,000.
    pub max_batch_events: u32,
    /// Most bytes (payloads and names) in one batch. Default: 32 MiB. A
    /// full batch (`max-batch-events` events of these bytes in all, each
    /// with a 184-byte frame header, up to 7 bytes of padding and a 16-byte
    /// footer entry) must fit in one segment with the segment's header and
    /// seal (about 500 bytes); a larger value is refused at start. It must
    /// also hold one event of `max-payload-bytes` with the longest entity
    /// and scope (1024 bytes each): a smaller value is refused at start.
    pub max_batch_bytes: u64,
    /// Most events the writer commits in one group (one sync). A group
    /// also stops once its requests hold `max-batch-bytes` (it always takes
    /// one), so that a small append is not synced together with hundreds of
    /// MiB queued before it. Default: 8192.
    pub group_commit_max_events: u32,
    /// Requests that may wait for the writer before new ones get `Busy`.
    /// At most 1,048,576 (the queue's slots, 48 bytes each, are allocated at
    /// start). Default: 16,384.
    pub writer_queue_capacity: u32,
    /// Idempotency keys remembered (oldest forgotten first); rebuilt from the log tail on start.
    /// A start that reuses the index files or a crash checkpoint reads back the keys the
    /// last instance kept, so a raised window fills with new keys from then on (a rebuild
    /// fills it from the log at once); a lowered one keeps the newest keys.
    /// 0 turns idempotency off: a retried append is stored again, even in the same group
    /// commit (one request still may not give a key to two of its events). At most 10,000,000
    /// (each key costs about 120 bytes of memory, and 80 in the `idem` file and checkpoints).
    /// Default: 100,000.
    pub idempotency_window: u32,
    /// Most claims held: client-chosen ids the daemon could assign itself
    /// later, which it then never assigns ("Claimed ids" in
    /// `docs/FORMAT.md`; a client that does not try to collide almost never
    /// makes one). A claim is held until the daemon's stamps or the clock
    /// pass it, or the log durably passes its place; each new one rewrites
    /// and syncs the whole claims file (16 bytes a claim), so this also
    /// bounds what one append can make the daemon write. An append whose
    /// ids would make claims past this many is refused with
    /// `InvalidEventId` and nothing of it is stored; appends without such
    /// ids go on. 0 refuses every such id. At most 65,536. Default: 4096.
    pub max_claimed_ids: u32,
    /// Largest wire frame accepted, in bytes. It must hold a full batch
    /// (`max-batch-bytes` plus 99 bytes per event of `max-batch-events`,
    /// plus 28). Default: 64 MiB.
    pub max_frame_bytes: u32,
    /// Requests one connection may have in flight. Default: 1024.
    pub max_in_flight_per_connection: u32,
    /// Most bytes of requests (counted by frame length) the daemon holds
    /// at once: read from the connections and not yet written by the writer
    /// (a transaction's commit counts its staged bytes). Each connection may
    /// hold at most `max-batch-bytes` of it. A request that does not fit
    /// waits unread in its socket until bytes are given back: that
    /// connection is slowed, the others are not. One request always fits a
    /// connection that holds nothing, and a daemon that holds nothing.
    /// Frames of 256 bytes or less (pings, stats, small appends) are not
    /// counted. At least `max-batch-bytes`. Default: 128 MiB (4 ×
    /// `max-batch-bytes`).
    pub max_queued_bytes: u64,
    /// Most bytes (payloads and names) staged in open transactions, all
    /// connections together. Staged events stay in the daemon's memory until
    /// their transaction commits, is cancelled or its connection ends; a
    /// stage past this is refused with `Busy` (and `retry_after_ms`),
    /// nothing of it staged, the transaction left open. At least
    /// `max-batch-bytes`. Default: 128 MiB (4 × `max-batch-bytes`).
    pub max_staged_bytes: u64,
    /// Most concurrent connections. The daemon raises its soft open-file
    /// limit to the hard one at start and serves at most
    /// `limit - 128` connections (each holds one descriptor; 128 stay for
    /// the writer's files), with a warning at start when that is fewer;
    /// connections beyond are refused with `Busy`. A limit that serves
    /// none is refused at start. Default: 4096.
    pub max_connections: u32,
    /// A connection idle (or stuck mid-frame) this long is closed. Default: 300,000 ms.
    pub read_timeout_ms: u32,
    /// uids allowed to append, besides the daemon's own. Default: none.
    pub allow_uids: Vec<u32>,
    /// gids allowed to append, besides the daemon's own. Default: none.
    pub allow_gids: Vec<u32>,
    /// Socket file mode, in octal (`0o660`; a plain `660` is decimal in
    /// TOML). World-writable modes are refused, and so are modes without
    /// owner write (u+w): connecting needs write permission, so the daemon's
    /// own user could not append. Default: 0o660.
    pub socket_mode: u32,
    /// Least time between two crash checkpoints. A crash checkpoint is
    /// taken in the background when an index chunk of `2^chunk-rows-log2`
    /// rows has filled and every frame written so far is durable (under
    /// `sync = never`: after an explicit sync); a start after a crash keeps
    /// the chunks it covers instead of rebuilding them. Minimum 100.
    /// Default: 30,000 ms.
    pub checkpoint_interval_ms: u32,
    /// Log filter when `RUST_LOG` is unset: a level (`off`, `error`, `warn`,
    /// `info`, `debug`, `trace`) or comma-separated `target=level`
    /// directives. Default: `info`.
    pub log_level: String,
    /// Optional Prometheus text listener, `ip:port` or `host:port`, e.g.
    /// `127.0.0.1:9464`. Default: off.
    pub metrics_listen: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("weir-data"),
            socket: None,
            sync: SyncPolicy::Always,
            sync_mode: SyncMode::Data,
            sync_every_n_events: 1000,
            sync_interval_ms: 10,
            segment_max_bytes: 256 << 20,
            chunk_rows_log2: 20,
            max_payload_bytes: 16 << 20,
            max_batch_events: 10_000,
            max_batch_bytes: 32 << 20,
            group_commit_max_events: 8192,
            writer_queue_capacity: 16_384,
            idempotency_window: 100_000,
            max_claimed_ids: 4096,
            max_frame_bytes: 64 << 20,
            max_in_flight_per_connection: 1024,
            max_queued_bytes: 128 << 20,
            max_staged_bytes: 128 << 20,
            max_connections: 4096,
            read_timeout_ms: 300_000,
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            socket_mode: 0o660,
            checkpoint_interval_ms: 30_000,
            log_level: "info".into(),
            metrics_listen: None,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field} = {value}: {reason}")]
pub struct ConfigError {
    /// The kebab-case field name.
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// Why it cannot work.
    pub reason: String,
}

fn bad(field: &'static str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl Config {
    /// Defaults with `data_dir` set.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }

    /// Parses TOML; unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Where the socket goes when `socket` is unset.
    #[must_use]
    pub fn socket_path(&self) -> PathBuf {
        if let Some(p) = &self.socket {
            return p.clone();
        }
        match std::env::var_os("RUNTIME_DIRECTORY") {
            Some(rt) if !rt.is_empty() => {
                // systemd may pass several, colon-separated: use the first.
                let first = rt
                    .to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                PathBuf::from(first).join("weir.sock")
            }
            _ => self.data_dir.join("weir.sock"),
        }
    }

    /// Refuses every value that cannot work, naming it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min_seg = 1u64 << 20;
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("data-dir", "\"\"", "must name a directory"));
        }
        if self.segment_max_bytes < min_seg || self.segment_max_bytes > SEGMENT_MAX_LEN {
            return Err(bad(
                "segment-max-bytes",
                self.segment_max_bytes,
                format!(
                    "must be between 1 MiB and 32 GiB ({SEGMENT_MAX_LEN}): a sealed segment's \
                     footer lists every frame with u32 lengths"
                ),
            ));
        }
        if !weir_protocol::index::CHUNK_LOG2_RANGE.contains(&self.chunk_rows_log2) {
            return Err(bad(
                "chunk-rows-log2",
                self.chunk_rows_log2,
                "must be between 10 and 24",
            ));
        }
        if self.max_payload_bytes == 0 {
            return Err(bad("max-payload-bytes", 0, "must be at least 1"));
        }
        let frame_room = self.segment_max_bytes / 2;
        if u64::from(self.max_payload_bytes) + 4096 > frame_room {
            return Err(bad(
                "max-payload-bytes",
                self.max_payload_bytes,
                format!(
                    "must leave a frame within half a segment ({frame_room} bytes); raise segment-max-bytes"
                ),
            ));
        }
        if self.max_batch_events == 0 || self.max_batch_events > 1_000_000 {
            return Err(bad(
                "max-batch-events",
                self.max_batch_events,
                "must be between 1 and 1,000,000",
            ));
        }
        // A full batch, framed (a frame header and up to 7 bytes of padding
        // per event), must fit in an empty segment: a group that does not
        // fit its segment goes to the next, so a larger batch fits nowhere.
        let events = self.max_batch_events as usize;
        let framed = self
            .max_batch_bytes
            .saturating_add(u64::from(self.max_batch_events) * (FRAME_HEADER_LEN as u64 + 7));
        if self.max_batch_bytes == 0
            || !SegmentLog::fits_empty(self.segment_max_bytes, framed, events)
        {
            return Err(bad(
                "max-batch-bytes",
                self.max_batch_bytes,
                format!(
                    "a full batch ({} events, {framed} bytes framed) must fit in one segment \
                     with its header and seal (segment-max-bytes = {}); lower max-batch-bytes \
                     or max-batch-events, or raise segment-max-bytes",
                    self.max_batch_events, self.segment_max_bytes
                ),
            ));
        }
        // `event_bytes` counts an event's payload and both names: one event
        // at max-payload-bytes with the longest names must make a batch,
        // or the advertised payload limit could never be reached.
        let one_event = u64::from(self.max_payload_bytes) + 2 * MAX_NAME_BYTES as u64;
        if self.max_batch_bytes < one_event {
            return Err(bad(
                "max-batch-bytes",
                self.max_batch_bytes,
                format!(
                    "must hold one event of max-payload-bytes = {} with the longest entity \
                     and scope ({MAX_NAME_BYTES} bytes each): at least {one_event}; raise \
                     max-batch-bytes or lower max-payload-bytes",
                    self.max_payload_bytes
                ),
            ));
        }
        if self.group_commit_max_events == 0 {
            return Err(bad("group-commit-max-events", 0, "must be at least 1"));
        }
        if self.writer_queue_capacity == 0 || self.writer_queue_capacity > WRITER_QUEUE_MAX {
            return Err(bad(
                "writer-queue-capacity",
                self.writer_queue_capacity,
                "must be between 1 and 1,048,576 (every slot is allocated at start)",
            ));
        }
        if self.sync == SyncPolicy::EveryNEvents && self.sync_every_n_events == 0 {
            return Err(bad(
                "sync-every-n-events",
                0,
                "must be at least 1 with sync = \"every-n-events\"",
            ));
        }
        if self.sync == SyncPolicy::IntervalMs && self.sync_interval_ms == 0 {
            return Err(bad(
                "sync-interval-ms",
                0,
                "must be at least 1 with sync = \"interval-ms\"",
            ));
        }
        if self.max_frame_bytes < 4096 {
            return Err(bad(
                "max-frame-bytes",
                self.max_frame_bytes,
                "must be at least 4096",
            ));
        }
        if u64::from(self.max_frame_bytes) < u64::from(self.max_payload_bytes) + 4096 {
            return Err(bad(
                "max-frame-bytes",
                self.max_frame_bytes,
                "must exceed max-payload-bytes by at least 4096",
            ));
        }
        // A full batch must fit one frame: a transaction's commit falls back
        // to resending it as one AppendBatch, and a reopened transaction
        // replays what is staged as one.
        let full = self.max_batch_bytes.saturating_add(
            u64::from(self.max_batch_events) * EVENT_WIRE_OVERHEAD + BATCH_ENVELOPE_BYTES,
        );
        if u64::from(self.max_frame_bytes) < full {
            return Err(bad(
                "max-frame-bytes",
                self.max_frame_bytes,
                format!(
                    "must hold a full batch: max-batch-bytes = {} and max-batch-events = {} \
                     take up to {full} bytes on the wire; raise max-frame-bytes or lower \
                     max-batch-bytes",
                    self.max_batch_bytes, self.max_batch_events
                ),
            ));
        }
        if self.max_in_flight_per_connection == 0 {
            return Err(bad("max-in-flight-per-connection", 0, "must be at least 1"));
        }
        if self.max_queued_bytes < self.max_batch_bytes {
            return Err(bad(
                "max-queued-bytes",
                self.max_queued_bytes,
                format!(
                    "must be at least max-batch-bytes = {}: the daemon must be able to hold a \
                     full batch; raise max-queued-bytes or lower max-batch-bytes",
                    self.max_batch_bytes
                ),
            ));
        }
        if self.max_staged_bytes < self.max_batch_bytes {
            return Err(bad(
                "max-staged-bytes",
                self.max_staged_bytes,
                format!(
                    "must be at least max-batch-bytes = {}: a full transaction must be able \
                     to stage; raise max-staged-bytes or lower max-batch-bytes",
                    self.max_batch_bytes
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(bad("max-connections", 0, "must be at least 1"));
        }
        if self.read_timeout_ms < 100 {
            return Err(bad(
                "read-timeout-ms",
                self.read_timeout_ms,
                "must be at least 100",
            ));
        }
        if self.socket_mode > 0o777 || self.socket_mode & 0o002 != 0 {
            return Err(bad(
                "socket-mode",
                format!("{:#o}", self.socket_mode),
                "must be a permission mode (at most 0o777, written in octal: 0o660) \
                 without world write (o+w)",
            ));
        }
        if self.socket_mode & 0o200 == 0 {
            return Err(bad(
                "socket-mode",
                format!("{:#o}", self.socket_mode),
                "must let the owner write (u+w, as in 0o660): connecting to a Unix socket \
                 needs write permission, so not even the daemon's own user could append",
            ));
        }
        if self.checkpoint_interval_ms < 100 {
            return Err(bad(
                "checkpoint-interval-ms",
                self.checkpoint_interval_ms,
                "must be at least 100",
            ));
        }
        if self.idempotency_window > IDEMPOTENCY_WINDOW_MAX {
            return Err(bad(
                "idempotency-window",
                self.idempotency_window,
                "must be at most 10,000,000 (each key is kept in memory and on disk)",
            ));
        }
        if self.max_claimed_ids > MAX_CLAIMED_IDS_MAX {
            return Err(bad(
                "max-claimed-ids",
                self.max_claimed_ids,
                "must be at most 65,536 (every new claim rewrites and syncs the whole \
                 claims file, 16 bytes a claim)",
            ));
        }
        if !is_log_filter(&self.log_level) {
            return Err(bad(
                "log-level",
                format!("{:?}", self.log_level),
                "must be a level (off, error, warn, info, debug, trace) or comma-separated \
                 target=level directives",
            ));
        }
        if let Some(addr) = &self.metrics_listen
            && !is_listen_address(addr)
        {
            return Err(bad(
                "metrics-listen",
                format!("{addr:?}"),
                "must be an address and port to listen on (127.0.0.1:9464, [::1]:9464, \
                 localhost:9464); unset it for no listener",
            ));
        }
        if self.socket.is_some() {
            self.validate_socket()?;
        }
        Ok(())
    }

    /// Refuses an empty socket path, or one too long for a Unix socket: the
    /// one given, or the default in the runtime or data directory. The daemon
    /// checks it before it opens the store (in-process users bind no socket).
    pub fn validate_socket(&self) -> Result<(), ConfigError> {
        let path = self.socket_path();
        if path.as_os_str().is_empty() {
            return Err(bad(
                "socket",
                "\"\"",
                "must name a socket file; unset it for the default",
            ));
        }
        if path.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(bad(
                "socket",
                path.display(),
                "Unix socket paths are limited to 107 bytes: pass a shorter --socket",
            ));
        }
        // Clients connect to the absolute path (`<data-dir>/socket` records
        // it), so a relative path must fit once made absolute too.
        if let Ok(absolute) = std::path::absolute(&path)
            && absolute.as_os_str().len() > SOCKET_PATH_MAX
        {
            return Err(bad(
                "socket",
                path.display(),
                format!(
                    "its absolute path {} is {} bytes ({} as given) and Unix socket paths \
                     are limited to 107 bytes: clients connect to the absolute path; pass a \
                     shorter --socket, or start from a shorter working directory",
                    absolute.display(),
                    absolute.as_os_str().len(),
                    path.as_os_str().len()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a socket the daemon could not bind: it binds
    /// `<parent>/.wb<pid in hex>/s` first, with the widest pid (6 hex
    /// digits) 12 bytes past the directory. Checked before the store opens
    /// when the daemon binds the socket itself; a socket systemd passes is
    /// bound already, and only [`validate_socket`](Self::validate_socket)'s
    /// limits apply to it.
    pub fn validate_bind_path(&self) -> Result<(), ConfigError> {
        let path = self.socket_path();
        let bound = bind_path_len(&path);
        if bound > SOCKET_PATH_MAX {
            return Err(bad(
                "socket",
                path.display(),
                format!(
                    "the daemon binds the socket first in a private directory beside it \
                     ({}/.wb<pid in hex>/s, up to {bound} bytes here) and then links it into \
                     place, and Unix socket paths are limited to 107 bytes: the socket's \
                     directory may be at most {} bytes (this one is {}); pass a --socket in \
                     a shorter directory",
                    bind_parent(&path).display(),
                    SOCKET_PATH_MAX - BIND_DIR_EXTRA,
                    bind_parent(&path).as_os_str().len()
                ),
            ));
        }
        Ok(())
    }
}

/// The longest Unix socket path (`sun_path` holds 108 bytes with its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// What the path the daemon binds (`/.wb<pid in hex>/s`, see
/// `server::listen::bind_with_mode`) adds to the socket's directory, with
/// the widest pid: 6 hex digits (a pid is below `pid_max`, which Linux
/// holds at 2^22 at most).
pub(crate) const BIND_DIR_EXTRA: usize = "/.wb".len() + 6 + "/s".len();

/// The directory in which the daemon binds `path` (`.` for a bare name).
pub(crate) fn bind_parent(path: &std::path::Path) -> &std::path::Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
}

/// The longest path the daemon binds for the socket `path`.
fn bind_path_len(path: &std::path::Path) -> usize {
    bind_parent(path).as_os_str().len() + BIND_DIR_EXTRA
}

/// The largest `writer-queue-capacity`: 48 MiB of slots.
const WRITER_QUEUE_MAX: u32 = 1 << 20;

/// The largest `idempotency-window`.
const IDEMPOTENCY_WINDOW_MAX: u32 = 10_000_000;
/// The largest `max-claimed-ids`: a 1 MiB claims file.
const MAX_CLAIMED_IDS_MAX: u32 = 1 << 16;

/// `ip:port`, or `host:port` with a non-empty host name (resolved when the
/// listener binds): what `TcpListener::bind` can take.
fn is_listen_address(text: &str) -> bool {
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(|c: char| c == ':' || c.is_whitespace())
            && port.parse::<u16>().is_ok()
    })
}

/// A level, or comma-separated `level` and `target=level` directives (the
/// part of `RUST_LOG`'s syntax a configuration file needs; `RUST_LOG`
/// itself takes the rest).
fn is_log_filter(text: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    !text.trim().is_empty()
        && text.split(',').all(|d| match d.rsplit_once('=') {
            Some((target, l)) => !target.trim().is_empty() && level(l),
            None => level(d),
        })
}

#[cfg(test)]
mod tests;
