//! [`Client`]: appends over the daemon's Unix socket.
//!
//! Every append carries an idempotency key (generated when the caller gives
//! none). When the connection breaks or the daemon answers `ShuttingDown`,
//! the client reconnects with backoff and resends with the same keys, so an
//! append is applied exactly once even if the daemon dies mid-request
//! (within the daemon's `idempotency-window`). A call that gives up with
//! the outcome unknown lists the keys it sent
//! ([`ClientError::unresolved_keys`]). By the time an append returns, the
//! event is visible to every [`Reader`](crate::Reader).
//!
//! ```no_run
//! use weir::{Client, Coordinate, EventKind};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = Client::connect_dir("/var/lib/weir")?;
//! let at = Coordinate::new("user:42", "tenant:a")?;
//! let receipt = client.append(&at, EventKind(0x1001), b"hello")?;
//! println!("stored at {}", receipt.sequence);
//! # Ok(())
//! # }
//! ```

mod conn;
mod error;
mod keys;
mod transaction;
mod unsynced;

pub use error::{ClientError, UNRESOLVED_KEYS_FIELD};
pub use transaction::Transaction;

use conn::{Conn, DirCheck, Failure};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use unsynced::Unsynced;
use weir_protocol::wire::{AppendRequest, ErrorCode, Op, Receipt, Reply, Stats, WireError};
use weir_protocol::{Coordinate, EventKind};

/// Connection and retry settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    retry_for: Duration,
    io_timeout: Duration,
    window: usize,
    name: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(30),
            io_timeout: Duration::from_secs(30),
            window: 256,
            name: format!("weir-client/{}", std::process::id()),
        }
    }
}

impl ClientOptions {
    /// How long a call keeps reconnecting and retrying before it gives up:
    /// no new try starts past it. A try under way is not cut short, so a
    /// call can last longer by the waits of its last try, each bounded by
    /// [`ClientOptions::io_timeout`] (with a daemon that stops answering,
    /// about one `io_timeout`). Default: 30 s.
    /// [`Client::connect`] and [`Client::connect_dir`] fail at once when no
    /// daemon listens ([`ClientError::Disconnected`] with `waited` zero, or
    /// [`ClientError::NotRunning`] when the data directory names no socket);
    /// a daemon that refuses the connection for now (`Busy` at its
    /// `max-connections`, `ShuttingDown`) is tried again after the
    /// `retry_after_ms` it gives, within this budget, then reported as
    /// [`ClientError::Refused`].
    #[must_use]
    pub fn retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }
    /// How long the client waits on the daemon: for a connect to find room
    /// in the daemon's listen backlog (full while it does not accept), for
    /// one write, for the first byte of a reply, and for the whole reply frame once its first
    /// byte came (a daemon sending a byte at a time holds a call no longer).
    /// A daemon that misses it is retried within [`ClientOptions::retry_for`],
    /// then reported as [`ClientError::NotAnswering`]. Signals that
    /// interrupt a wait (`EINTR`) do not make it longer. Default: 30 s.
    #[must_use]
    pub fn io_timeout(mut self, d: Duration) -> Self {
        self.io_timeout = d.max(Duration::from_millis(1));
        self
    }
    /// The most requests the pipelined calls keep in flight. A window
    /// writes its requests before reading any reply, so it must not hold
    /// more than the daemon reads while its replies wait unread: at most
    /// the default `max-in-flight-per-connection` (1024, plus a slack of
    /// 64). A larger window made both sides block on a full socket (the
    /// daemon waiting for its replies to be read, the client for its
    /// requests to be).
    pub const MAX_WINDOW: usize = 1024;

    /// Requests the pipelined calls keep in flight, at least 1 and at most
    /// [`ClientOptions::MAX_WINDOW`] (a larger value is taken as that), and
    /// never more than the daemon's `max-in-flight-per-connection`, which
    /// its hello gives. (A daemon too old to give it answers the requests
    /// over its limit `TooManyInFlight`, and they are resent.) Default: 256.
    #[must_use]
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.clamp(1, Self::MAX_WINDOW);
        self
    }
    /// The name the daemon logs for this client. Default: `weir-client/<pid>`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// Codes after which a request is simply sent again.
fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ShuttingDown | ErrorCode::Busy | ErrorCode::TooManyInFlight
    )
}

fn retry_after(e: &WireError) -> Duration {
    let ms = e
        .fields
        .get("retry_after_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5u64);
    Duration::from_millis(ms.clamp(1, 1000))
}

/// A connection to the daemon's append socket. Its calls take `&mut self`:
/// give each thread its own `Client` (or share one behind a `Mutex`).
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    opts: ClientOptions,
    /// The data directory the socket was found through (`connect_dir`):
    /// every connection checks that its daemon serves the directory at
    /// that path as it is then.
    dir: Option<DirCheck>,
    conn: Option<Conn>,
    /// Bumped on every new connection (transactions notice a reconnect).
    generation: u64,
    /// Non-durable receipts since the last sync, per instance.
    unsynced: Unsynced,
    /// The last `max-payload-bytes` a daemon announced (its hello).
    max_payload: u32,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::connect_with(path, ClientOptions::default())
    }

    /// Connects to the daemon serving `data_dir` (it records its socket in
    /// `<data_dir>/socket`). The daemon's hello names the directory it
    /// serves (its device and inode): a daemon serving another directory
    /// (as the socket named in a copy of a data directory leads to its
    /// original's) is refused with [`ClientError::OtherDataDir`], at this
    /// connect and at every reconnect, each against the directory at that
    /// path then (so a store put back from a backup at the same path is
    /// reached through its own daemon). A daemon too old to name its
    /// directory is not checked.
    pub fn connect_dir(data_dir: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::connect_dir_with(data_dir, ClientOptions::default())
    }

    /// [`Client::connect_dir`] with options.
    pub fn connect_dir_with(
        data_dir: impl AsRef<Path>,
        opts: ClientOptions,
    ) -> Result<Self, ClientError> {
        let data_dir = data_dir.as_ref();
        let file = data_dir.join("socket");
        let text = std::fs::read_to_string(&file).map_err(|source| {
            if source.kind() != std::io::ErrorKind::NotFound {
                return ClientError::Io { path: file, source };
            }
            // No `socket` file: no daemon runs for a directory that exists;
            // one that does not is a wrong path, not a stopped daemon.
            match std::fs::metadata(data_dir) {
                Ok(m) if m.is_dir() => ClientError::NotRunning {
                    data_dir: data_dir.to_path_buf(),
                },
                Ok(_) => ClientError::Io {
                    path: data_dir.to_path_buf(),
                    source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
                },
                Err(source) => ClientError::Io {
                    path: data_dir.to_path_buf(),
                    source,
                },
            }
        })?;
        let dir = DirCheck {
            dir: data_dir.to_path_buf(),
        };
        Self::connect_checked(text.trim_end_matches('\n'), opts, Some(dir))
    }

    /// [`Client::connect`] with options.
    pub fn connect_with(path: impl AsRef<Path>, opts: ClientOptions) -> Result<Self, ClientError> {
        Self::connect_checked(path, opts, None)
    }

    fn connect_checked(
        path: impl AsRef<Path>,
        opts: ClientOptions,
        dir: Option<DirCheck>,
    ) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        let started = Instant::now();
        let mut retried = false;
        let conn = loop {
            let failed = match Conn::open(&path, &opts, dir.as_ref()) {
                Ok(conn) => break conn,
                Err(f) => f,
            };
            return Err(match failed {
                // The daemon runs and asked to be tried again later.
                Failure::Refused(error) => {
                    let wait = retry_after(&error);
                    if started.elapsed() + wait <= opts.retry_for {
                        std::thread::sleep(wait);
                        retried = true;
                        continue;
                    }
                    ClientError::Refused {
                        path,
                        // Zero: refused at the only try.
                        waited: if retried {
                            started.elapsed()
                        } else {
                            Duration::ZERO
                        },
                        error: Box::new(error),
                        keys: Vec::new(),
                        answered: Vec::new(),
                    }
                }
                Failure::Fatal(e) => e,
                Failure::Transient(last) => ClientError::Disconnected {
                    path,
                    waited: Duration::ZERO,
                    last,
                    keys: Vec::new(),
                    answered: Vec::new(),
                },
                Failure::NoAnswer => ClientError::NotAnswering {
                    path,
                    timeout: opts.io_timeout,
                    waited: Duration::ZERO,
                    keys: Vec::new(),
                    answered: Vec::new(),
                },
            });
        };
        Ok(Self {
            path,
            opts,
            dir,
            max_payload: conn.hello.max_payload,
            conn: Some(conn),
            generation: 1,
            unsynced: Unsynced::default(),
        })
    }

    /// The socket path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current daemon instance's id (changes when the daemon restarts).
    #[must_use]
    pub fn instance(&self) -> Option<u128> {
        self.conn.as_ref().map(|c| c.hello.instance)
    }

    /// In a forked child, lets go of the parent's connection: it is the
    /// parent's conversation. Its descriptors are closed (no shutdown: the
    /// parent's stay open and in use), and the generation moves on, so that
    /// a transaction begun on it replays its `Begin` and staged events on
    /// the child's own connection. A [`Transaction`] calls it before it
    /// asks whether its server-side transaction is still open.
    pub(crate) fn forget_if_forked(&mut self) {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.pid != std::process::id())
        {
            self.conn = None;
            self.generation += 1;
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, Failure> {
        self.forget_if_forked();
        if self.conn.is_none() {
            let conn = Conn::open(&self.path, &self.opts, self.dir.as_ref())?;
            self.max_payload = conn.hello.max_payload;
            self.conn = Some(conn);
            self.generation += 1;
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Appends one event and returns once it is visible (and durable under
    /// the daemon's sync policy).
    pub fn append(
        &mut self,
        at: &Coordinate,
        kind: EventKind,
        payload: &[u8],
    ) -> Result<Receipt, ClientError> {
        self.append_with(AppendRequest::new(at, kind, payload))
    }

    /// Appends a value serialized as msgpack (named fields), which
    /// `Entry::payload_as` decodes.
    pub fn append_msgpack<T: Serialize + ?Sized>(
        &mut self,
        at: &Coordinate,
        kind: EventKind,
        value: &T,
    ) -> Result<Receipt, ClientError> {
        self.append_with(msgpack(at, kind, value)?)
    }

    /// Appends one fully specified event (idempotency key, expected
    /// version, ids), built with [`AppendRequest::new`] or
    /// [`AppendRequest::msgpack`] and their `with_…` setters. A key is
    /// generated when `req` has none.
    pub fn append_with(&mut self, mut req: AppendRequest) -> Result<Receipt, ClientError> {
        keyed(&mut req);
        match self.exchange(vec![Op::Append(req)])?.remove(0) {
            Ok(Reply::Appended(r)) => Ok(r),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(ClientError::Server(e)),
        }
    }

    /// Appends a batch, all or nothing: its events become visible together.
    pub fn append_batch(
        &mut self,
        mut reqs: Vec<AppendRequest>,
    ) -> Result<Vec<Receipt>, ClientError> {
        reqs.iter_mut().for_each(keyed);
        match self.exchange(vec![Op::AppendBatch(reqs)])?.remove(0) {
            Ok(Reply::Batch(r)) => Ok(r),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(ClientError::Server(e)),
        }
    }

    /// Appends many events as separate requests, pipelined: up to the
    /// window's worth ([`ClientOptions::window`], at most
    /// [`ClientOptions::MAX_WINDOW`]) are written before replies are read. Each event
    /// succeeds or fails on its own; the outer error means the connection
    /// could not be kept. The events answered before it are not lost with
    /// it: [`ClientError::answered`] gives their receipts (they are stored)
    /// and refusals, [`ClientError::unresolved_keys`] those sent but not
    /// answered; the rest were not sent.
    ///
    /// Order: the events are stored in the order given unless the daemon
    /// refuses one for a while (`Busy`: its writer queue is full;
    /// `TooManyInFlight`: more than `max-in-flight-per-connection` requests
    /// outstanding, which the window stays under unless the daemon is too
    /// old to announce its limit). The
    /// requests behind a refused one are already on their way and are
    /// stored, and the refused one is resent after them. Where order
    /// matters under such load, use `ClientOptions::window(1)` or
    /// [`append_batch`](Self::append_batch).
    pub fn append_pipelined(
        &mut self,
        mut reqs: Vec<AppendRequest>,
    ) -> Result<Vec<Result<Receipt, ClientError>>, ClientError> {
        reqs.iter_mut().for_each(keyed);
        let ops = reqs.into_iter().map(Op::Append).collect();
        Ok(self
            .exchange(ops)?
            .into_iter()
            .map(|r| match r {
                Ok(Reply::Appended(r)) => Ok(r),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(ClientError::Server(e)),
            })
            .collect())
    }

    /// Makes everything appended so far durable; returns the visible watermark.
    ///
    /// Like every call, it reconnects when the connection broke, possibly
    /// to a restarted daemon. If this client appended events since its last
    /// sync whose receipts said "not durable" (`Receipt::durable` false:
    /// the daemon's `sync` policy is not `always`) and they went to an
    /// earlier daemon instance than the one this sync reached, that
    /// instance can no longer sync them and a crash of it may have lost
    /// them. The daemon's hello lists its latest starts, each with the
    /// `visible` it began with: events below the lowest of those since their
    /// instance outlived it (a clean stop syncs everything; a crash keeps a
    /// prefix), and the sync returns `Ok` for them. Otherwise (some were at
    /// or above it, or their instance is older than the starts the hello
    /// lists, or the daemon lists none) it fails with
    /// [`ClientError::NotSynced`] (how many may be lost, the highest
    /// sequence) rather than return `Ok`. It reports them once; everything
    /// appended to the current instance is synced either way.
    pub fn sync(&mut self) -> Result<u64, ClientError> {
        let visible = match self.exchange(vec![Op::Sync])?.remove(0) {
            Ok(Reply::Synced { visible }) => visible,
            Ok(other) => return Err(unexpected(&other)),
            Err(e) => return Err(ClientError::Server(e)),
        };
        // The connection that answered is kept after a success.
        let now = self.instance().unwrap_or_default();
        let starts = self.conn.as_ref().map_or(&[][..], |c| &c.hello.starts[..]);
        match self.unsynced.synced_on(now, starts) {
            Some(lost) => Err(ClientError::NotSynced {
                events: lost.events,
                highest_sequence: lost.highest,
                visible,
            }),
            None => Ok(visible),
        }
    }

    /// The daemon's statistics.
    pub fn stats(&mut self) -> Result<Stats, ClientError> {
        match self.exchange(vec![Op::Stats])?.remove(0) {
            Ok(Reply::Stats(s)) => Ok(*s),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(ClientError::Server(e)),
        }
    }

    /// A round trip; returns how long it took.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        let t = Instant::now();
        match self.exchange(vec![Op::Ping])?.remove(0) {
            Ok(Reply::Pong) => Ok(t.elapsed()),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(ClientError::Server(e)),
        }
    }

    /// Starts a transaction: its events become visible together at
    /// [`Transaction::commit`], or never.
    pub fn transaction(&mut self) -> Transaction<'_> {
        Transaction::new(self)
    }

    /// Sends independent, idempotent requests and collects one answer each,
    /// reconnecting and resending what is unanswered (or answered
    /// `Busy`/`ShuttingDown`/`TooManyInFlight`) until the retry budget ends.
    fn exchange(&mut self, ops: Vec<Op>) -> Result<Vec<Result<Reply, WireError>>, ClientError> {
        let started = Instant::now();
        let mut out: Vec<Option<Result<Reply, WireError>>> = vec![None; ops.len()];
        // Sent on a connection that then gave no answer to it: stored or not.
        let mut unsettled = vec![false; ops.len()];
        let mut backoff = Duration::from_millis(5);
        let mut silent = false;
        loop {
            let todo: Vec<usize> = (0..ops.len()).filter(|&i| out[i].is_none()).collect();
            if todo.is_empty() {
                return Ok(out
                    .into_iter()
                    .zip(&ops)
                    .map(|(r, op)| match r.expect("all answered") {
                        Err(e) if e.code == ErrorCode::OutcomeUnknown => {
                            Err(with_keys(e, op_keys(op)))
                        }
                        r => r,
                    })
                    .collect());
            }
            // `refused`: this try's connection was refused for now (the daemon runs).
            let (wait, last, refused) = match self.attempt(&ops, &todo, &mut out, &mut unsettled) {
                Ok(None) => continue,
                Ok(Some((wait, e))) => (wait, e.to_string(), None),
                Err(Failure::Fatal(e)) => {
                    self.conn = None;
                    return Err(e);
                }
                Err(Failure::Refused(e)) => {
                    self.conn = None;
                    silent = false;
                    (retry_after(&e), e.to_string(), Some(e))
                }
                Err(f @ (Failure::Transient(_) | Failure::NoAnswer)) => {
                    self.conn = None;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                    silent = matches!(f, Failure::NoAnswer);
                    let last = match f {
                        Failure::Transient(last) => last,
                        _ => "no answer".to_owned(),
                    };
                    (backoff, last, None)
                }
            };
            let waited = started.elapsed();
            if waited + wait > self.opts.retry_for {
                let keys = (0..ops.len())
                    .filter(|&i| out[i].is_none() && unsettled[i])
                    .flat_map(|i| op_keys(&ops[i]))
                    .collect();
                let answered = answered(out, &ops);
                let busy_only = self.conn.is_some();
                return Err(if busy_only {
                    ClientError::Timeout {
                        waited,
                        last,
                        keys,
                        answered,
                    }
                } else if let Some(error) = refused {
                    ClientError::Refused {
                        path: self.path.clone(),
                        waited,
                        error: Box::new(error),
                        keys,
                        answered,
                    }
                } else if silent {
                    ClientError::NotAnswering {
                        path: self.path.clone(),
                        timeout: self.opts.io_timeout,
                        waited,
                        keys,
                        answered,
                    }
                } else {
                    ClientError::Disconnected {
                        path: self.path.clone(),
                        waited,
                        last,
                        keys,
                        answered,
                    }
                });
            }
            std::thread::sleep(wait);
        }
    }

    /// One pass over `todo` on one connection, a window at a time. Returns
    /// the wait the daemon asked for when some answers were retryable.
    /// Requests sent but left unanswered when the connection fails are
    /// marked in `unsettled`.
    fn attempt(
        &mut self,
        ops: &[Op],
        todo: &[usize],
        out: &mut [Option<Result<Reply, WireError>>],
        unsettled: &mut [bool],
    ) -> Result<Option<(Duration, WireError)>, Failure> {
        self.conn()?;
        let conn = self.conn.as_mut().expect("just connected");
        // Each window's replies are all read before the next is sent, and
        // the daemon counts a reply out before this side can read it: a
        // window within its limit is never refused TooManyInFlight.
        let window = conn.hello.max_in_flight.map_or(self.opts.window, |max| {
            self.opts.window.min((max as usize).max(1))
        });
        let unsynced = &mut self.unsynced;
        let instance = conn.hello.instance;
        let mut again = None;
        for chunk in todo.chunks(window) {
            // A failed send may have written part of the chunk.
            let mut answered = 0;
            let r = (|| {
                let first = conn.send(chunk.iter().map(|&i| &ops[i]))?;
                for (k, &i) in chunk.iter().enumerate() {
                    let reply = conn.recv(first + k as u64)?;
                    answered = k + 1;
                    match reply {
                        Err(e) if retryable(e.code) => {
                            let shutting = e.code == ErrorCode::ShuttingDown;
                            again = Some((retry_after(&e), e));
                            if shutting {
                                return Ok(true);
                            }
                        }
                        r => {
                            unsynced.note(instance, &r);
                            out[i] = Some(r);
                        }
                    }
                }
                Ok(false)
            })();
            match r {
                Ok(false) => {}
                Ok(true) => {
                    // The daemon is stopping: the next try reconnects. The
                    // requests behind the refused one are not answered.
                    for &i in &chunk[answered..] {
                        unsettled[i] = true;
                    }
                    self.conn = None;
                    return Ok(again);
                }
                Err(f) => {
                    for &i in &chunk[answered..] {
                        unsettled[i] = true;
                    }
                    return Err(f);
                }
            }
        }
        Ok(again)
    }

    /// Sends `ops` on one connection as a unit and returns every answer.
    fn unit_once(&mut self, ops: &[Op]) -> Result<Vec<Result<Reply, WireError>>, Failure> {
        let conn = self.conn()?;
        let first = conn.send(ops.iter())?;
        let replies: Vec<_> = (0..ops.len())
            .map(|k| conn.recv(first + k as u64))
            .collect::<Result<_, _>>()?;
        let instance = conn.hello.instance;
        for r in &replies {
            self.unsynced.note(instance, r);
        }
        Ok(replies)
    }
}

/// The idempotency keys an append or batch carries (every one has a key by
/// the time it is sent).
fn op_keys(op: &Op) -> Vec<u128> {
    match op {
        Op::Append(r) => r.idempotency_key.into_iter().collect(),
        Op::AppendBatch(v) => v.iter().filter_map(|r| r.idempotency_key).collect(),
        _ => Vec::new(),
    }
}

/// The appends a call that gives up had answered (see
/// [`ClientError::answered`]): empty when none was.
fn answered(
    out: Vec<Option<Result<Reply, WireError>>>,
    ops: &[Op],
) -> Vec<Option<Result<Receipt, WireError>>> {
    if out.iter().all(Option::is_none) {
        return Vec::new();
    }
    out.into_iter()
        .zip(ops)
        .map(|(r, op)| match r? {
            Ok(Reply::Appended(r)) => Some(Ok(r)),
            Err(e) if e.code == ErrorCode::OutcomeUnknown => Some(Err(with_keys(e, op_keys(op)))),
            Err(e) => Some(Err(e)),
            Ok(_) => None,
        })
        .collect()
}

/// `e` (an `OutcomeUnknown` answer) with the request's keys in its
/// [`UNRESOLVED_KEYS_FIELD`].
fn with_keys(e: WireError, keys: Vec<u128>) -> WireError {
    if keys.is_empty() {
        return e;
    }
    let list: Vec<String> = keys.iter().map(|k| format!("{k:032x}")).collect();
    e.with(UNRESOLVED_KEYS_FIELD, list.join(","))
}

/// `e` with `keys` as its unresolved keys (for the variants that carry them).
fn with_unresolved(mut e: ClientError, keys: Vec<u128>) -> ClientError {
    if let ClientError::Timeout { keys: k, .. }
    | ClientError::NotAnswering { keys: k, .. }
    | ClientError::Disconnected { keys: k, .. }
    | ClientError::Refused { keys: k, .. }
    | ClientError::RequestTooLarge { keys: k, .. } = &mut e
    {
        *k = keys;
    }
    e
}

/// A fresh idempotency key, as the client generates for an append that
/// carries none: set it yourself when you want to know it before the call
/// (e.g. to log it), so that a retry after a crash of your own process
/// stores the event at most once.
#[must_use]
pub fn new_idempotency_key() -> u128 {
    keys::new_key()
}

fn keyed(req: &mut AppendRequest) {
    if req.idempotency_key.is_none() {
        req.idempotency_key = Some(new_idempotency_key());
    }
}

fn unexpected(r: &Reply) -> ClientError {
    ClientError::Protocol {
        what: format!("unexpected reply {r:?}"),
    }
}

/// [`AppendRequest::msgpack`], its error as the client's.
fn msgpack<T: Serialize + ?Sized>(
    at: &Coordinate,
    kind: EventKind,
    value: &T,
) -> Result<AppendRequest, ClientError> {
    AppendRequest::msgpack(at, kind, value).map_err(|e| ClientError::Protocol {
        what: format!("cannot encode the payload: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_conflict_says_what_it_found() {
        let conflict = |found: &str| {
            ClientError::Server(
                WireError::new(ErrorCode::VersionConflict, "conflict").with("found", found),
            )
        };
        assert_eq!(conflict("none").found_version(), Some(None));
        assert_eq!(conflict("3").found_version(), Some(Some(3)));
        let other = ClientError::Server(WireError::new(ErrorCode::Busy, "busy").with("found", "3"));
        assert_eq!(other.found_version(), None);
    }

    #[test]
    fn a_failed_first_connect_is_not_called_a_reconnect() {
        let e = |waited| ClientError::Disconnected {
            path: PathBuf::from("/d/weir.sock"),
            waited,
            last: "Connection refused".into(),
            keys: Vec::new(),
            answered: Vec::new(),
        };
        assert_eq!(
            e(Duration::ZERO).to_string(),
            "cannot connect to /d/weir.sock: Connection refused"
        );
        assert_eq!(
            e(Duration::from_secs(2)).to_string(),
            "disconnected from /d/weir.sock; no reconnect within 2s: Connection refused"
        );
    }
}
