//! The append socket: a Unix socket server over [`Store`].
//!
//! One thread reads each connection (pipelined requests go to the writer as
//! they arrive) and a second writes its replies in request order. Peer
//! credentials decide who may append; transactions are staged per
//! connection (see `session`). [`serve`] runs the whole daemon lifecycle:
//! restore, listen, `READY=1`, serve until SIGTERM/SIGINT/SIGHUP, drain, stop.

pub mod accept_log;
mod activation;
mod auth;
mod conn;
mod frames;
mod listen;
mod notify;
mod peer_groups;
mod precheck;
mod replies;
mod session;

pub use listen::SOCKET_FILE;

use crate::budget::{Budget, Staging};
use crate::config::Config;
use crate::error::OpenError;
use crate::store::Store;
use auth::Policy;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use sd_notify::NotifyState;
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use weir_protocol::wire::{ErrorCode, HelloReply, WireError, write_frame};

/// Stack of a connection's reading thread. Decoding is depth-limited, so
/// this is ample; small stacks let thousands of connections fit.
const CONN_STACK: usize = 256 << 10;
/// The pause after a failed accept (EMFILE and friends) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long a stop waits for connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(10);
/// Descriptors a served connection holds: its socket, which the reading
/// thread, the reply writer and the drain share (never duplicated).
const FDS_PER_CONNECTION: u64 = 1;
/// Descriptors kept for the writer and the rest of the daemon (about 30 in
/// use while appending: segments, index chunk files being created,
/// checkpoints, the metrics listener), whatever connections take: an
/// append whose new segment or index file cannot be created is refused
/// (`Busy`) until one can.
const FDS_RESERVED: u64 = 128;

/// Why the daemon could not serve or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The store could not open (locked, insecure directory, damaged files…).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The socket passed by systemd is unusable.
    #[error("socket activation: {source}")]
    Activation {
        /// Why.
        source: io::Error,
    },
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The open-file limit leaves no descriptor for a connection.
    #[error(
        "the open-file limit ({nofile}) leaves no room for connections: the daemon keeps \
         {reserved} descriptors for its files and a connection takes {per_connection}; \
         raise it (LimitNOFILE=, ulimit -n) to at least {need}"
    )]
    FileLimit {
        /// RLIMIT_NOFILE in force.
        nofile: u64,
        /// Descriptors kept for the writer.
        reserved: u64,
        /// Descriptors per connection.
        per_connection: u64,
        /// The least limit that serves one connection.
        need: u64,
    },
    /// Another process listens on the socket path.
    #[error("{path} is in use by a running process; stop it or choose another --socket")]
    SocketInUse {
        /// Socket path.
        path: PathBuf,
    },
    /// The socket path names a file that is not a socket.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file the server writes failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {source}")]
    Signals {
        /// The error.
        source: io::Error,
    },
    /// The writer failed while stopping (its last sync or checkpoint).
    #[error("the writer did not stop cleanly: {cause}")]
    Shutdown {
        /// What failed.
        cause: String,
    },
}

/// What every connection shares.
pub(crate) struct Hub {
    store: Store,
    policy: Policy,
    max_frame: u32,
    max_in_flight: usize,
    max_connections: usize,
    /// `max-connections`, or fewer when the open-file limit is lower.
    fd_bound: bool,
    timeout: Duration,
    /// Bytes of requests read and not yet written (`max-queued-bytes`).
    budget: Arc<Budget>,
    /// Bytes staged in open transactions (`max-staged-bytes`).
    staging: Arc<Staging>,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<UnixStream>>>,
    gone: Condvar,
    /// Connection threads that could not be started, logged as a run.
    thread_failures: Mutex<accept_log::AcceptFailures>,
}

impl Hub {
    fn new(store: Store, max_connections: u64) -> Self {
        let c = store.config().clone();
        Self {
            policy: Policy::new(&c.allow_uids, &c.allow_gids),
            max_frame: c.max_frame_bytes,
            max_in_flight: c.max_in_flight_per_connection as usize,
            max_connections: max_connections as usize,
            fd_bound: max_connections < u64::from(c.max_connections),
            timeout: Duration::from_millis(c.read_timeout_ms.into()),
            budget: Arc::new(Budget::new(c.max_queued_bytes, c.max_batch_bytes)),
            staging: Arc::new(Staging::new(c.max_staged_bytes)),
            next_id: AtomicU64::new(1),
            conns: Mutex::default(),
            gone: Condvar::new(),
            thread_failures: Mutex::new(accept_log::AcceptFailures::threads()),
            store,
        }
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<UnixStream>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a thread for a new connection, or refuses it with a reason.
    fn accept(self: &Arc<Self>, stream: UnixStream) {
        let _ = stream.set_nonblocking(false);
        let stream = Arc::new(stream);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = self.conns();
            if conns.len() >= self.max_connections {
                drop(conns);
                let why = if self.fd_bound {
                    format!(
                        "the daemon serves {} connections already, as many as its open-file \
                         limit allows (LimitNOFILE=)",
                        self.max_connections
                    )
                } else {
                    format!(
                        "the daemon serves max-connections = {} already",
                        self.max_connections
                    )
                };
                refuse(
                    &stream,
                    WireError::new(ErrorCode::Busy, why).with("retry_after_ms", 100),
                );
                self.store.shared().reject_code("TooManyConnections");
                return;
            }
            conns.insert(id, Arc::clone(&stream));
        }
        self.store.shared().connection(true);
        let hub = Arc::clone(self);
        let keep = Arc::clone(&stream);
        let spawned = std::thread::Builder::new()
            .name("weir-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                conn::run(&hub, stream);
                hub.closed(id);
            });
        match spawned {
            Ok(_) => self.thread_started(),
            Err(e) => {
                self.thread_failed(&e);
                self.closed(id);
                refuse(&keep, busy(&e));
            }
        }
    }

    /// A connection's thread started: ends a run of failures.
    fn thread_started(&self) {
        let mut f = self
            .thread_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f.accepted();
    }

    /// A connection's thread could not be started (the task or memory limit):
    /// the connection is refused `Busy`, and a run of these logs once a minute.
    fn thread_failed(&self, e: &io::Error) {
        let mut f = self
            .thread_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f.failed(e, Instant::now());
        self.store.shared().reject_code("Busy");
    }

    fn closed(&self, id: u64) {
        if self.conns().remove(&id).is_some() {
            self.store.shared().connection(false);
        }
        self.gone.notify_all();
    }

    /// Stops reading every connection (each finishes what it read, writes
    /// its replies and closes), then waits for them up to `DRAIN`.
    fn drain(&self) {
        // A reader waiting for bytes stops waiting (it reads nothing more).
        self.budget.close();
        for s in self.conns().values() {
            let _ = s.shutdown(Shutdown::Read);
        }
        let until = Instant::now() + DRAIN;
        let mut conns = self.conns();
        while !conns.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    open = conns.len(),
                    "connections did not finish in time; closing them"
                );
                for s in conns.values() {
                    let _ = s.shutdown(Shutdown::Both);
                }
                break;
            }
            conns = self
                .gone
                .wait_timeout(conns, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn busy(e: &io::Error) -> WireError {
    WireError::new(
        ErrorCode::Busy,
        format!("the daemon cannot take a connection now: {e}"),
    )
    .with("retry_after_ms", 100)
}

/// Tells a connection we will not serve why, without waiting on it.
fn refuse(stream: &UnixStream, e: WireError) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = write_frame(&mut &*stream, &HelloReply::Err(e));
}

/// The listening socket systemd passed (socket activation), taken by
/// [`take_inherited`] before the process opens a descriptor or starts a
/// thread; `None` inside when none was passed.
#[derive(Debug)]
pub struct Inherited(Option<(UnixListener, PathBuf)>);

/// Takes the socket systemd passed, if `LISTEN_PID` names this process.
/// Call it first thing, before anything opens a descriptor that could take
/// fd 3 (a log socket, a metrics listener) or starts a thread (it unsets
/// `LISTEN_PID` and `LISTEN_FDS`): `weir serve` does, before its logging
/// and its metrics listener start.
pub fn take_inherited() -> Result<Inherited, ServeError> {
    activation::inherited_listener()
        .map(Inherited)
        .map_err(|source| ServeError::Activation { source })
}

/// Runs the daemon until SIGTERM, SIGINT or SIGHUP, then stops it cleanly: no new
/// connections, requests already read are answered, the writer drains,
/// syncs and writes its clean-stop checkpoint, the socket file goes away.
/// Takes the socket systemd passed first ([`take_inherited`]); a process
/// that opened descriptors or started threads before calls
/// [`serve_inherited`] with the one it took first instead.
pub fn serve(config: Config) -> Result<(), ServeError> {
    serve_inherited(config, take_inherited()?)
}

/// [`serve`] with the socket [`take_inherited`] took.
pub fn serve_inherited(config: Config, inherited: Inherited) -> Result<(), ServeError> {
    let inherited = inherited.0;
    let nofile = listen::raise_nofile_limit();
    let max_connections = connection_limit(u64::from(config.max_connections), nofile)?;
    if max_connections < u64::from(config.max_connections) {
        tracing::warn!(
            nofile,
            max_connections = config.max_connections,
            serving = max_connections,
            "the open-file limit serves fewer connections than max-connections; raise LimitNOFILE"
        );
    }
    let (mut signals, sig_tx) =
        UnixStream::pair().map_err(|source| ServeError::Signals { source })?;
    // SIGHUP too: a `weir serve &` whose terminal closes stops cleanly
    // instead of dying like a crash. (No reload: nothing is re-read.)
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        let tx = sig_tx
            .try_clone()
            .map_err(|source| ServeError::Signals { source })?;
        signal_hook::low_level::pipe::register(sig, tx)
            .map_err(|source| ServeError::Signals { source })?;
    }
    if inherited.is_none() {
        // Before the store is opened (and a new one created, or a crashed
        // one restored): a path `bind` would refuse is better refused first.
        config.validate_socket().map_err(OpenError::from)?;
        config.validate_bind_path().map_err(OpenError::from)?;
        precheck::socket_path(&config.socket_path(), &config.data_dir)?;
    }
    notify::notify(&[NotifyState::Status("restoring the index")]);
    let starting = notify::keep_starting();
    let store = Store::open(config);
    drop(starting);
    let store = store?;
    let result = run(&store, &mut signals, inherited, max_connections);
    let stopped = store
        .shutdown()
        .map_err(|cause| ServeError::Shutdown { cause });
    if let Ok(listening) = &result {
        cleanup(&store, listening);
    }
    tracing::info!("stopped");
    result.and(stopped)
}

/// Listens and serves until a signal; returns what to clean up.
fn run(
    store: &Store,
    signals: &mut UnixStream,
    inherited: Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>,
    max_connections: u64,
) -> Result<listen::Listening, ServeError> {
    let listening = listen::open(store.config(), inherited)?;
    listen::record_path(&store.config().data_dir, &listening.path)?;
    let hub = Arc::new(Hub::new(store.clone(), max_connections));
    let r = store.restore_report();
    let status = format!(
        "serving on {} ({} events restored via {})",
        listening.path.display(),
        r.entries + r.tail_entries,
        r.path.name()
    );
    let config = store.config();
    let data_dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
    tracing::info!(
        socket = %listening.path.display(),
        data_dir = %data_dir.display(),
        sync = ?config.sync,
        max_connections,
        "ready"
    );
    notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let stop = Arc::new(AtomicBool::new(false));
    let watchdog = notify::start_watchdog(Arc::clone(store.shared()), Arc::clone(&stop));
    let accepted = accept_loop(&hub, &listening.listener, signals);
    notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    tracing::info!(
        connections = hub.conns().len(),
        peak_queued_bytes = hub.budget.peak(),
        budget_waits = hub.budget.waits(),
        "stopping: finishing requests in flight"
    );
    hub.drain();
    stop.store(true, Ordering::Release);
    if let Some(w) = watchdog {
        w.thread().unpark();
        let _ = w.join();
    }
    if let Err(e) = accepted {
        cleanup(store, &listening);
        return Err(e);
    }
    Ok(listening)
}

fn accept_loop(
    hub: &Arc<Hub>,
    listener: &UnixListener,
    signals: &mut UnixStream,
) -> Result<(), ServeError> {
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Activation { source })?;
    let mut failures = accept_log::AcceptFailures::new("socket", ACCEPT_BACKOFF);
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll failed; stopping");
                return Ok(());
            }
        }
        let signalled = fds[1].revents().is_some_and(|r| !r.is_empty());
        if signalled {
            let mut b = [0u8; 16];
            let _ = signals.read(&mut b);
            tracing::info!("signal received");
            return Ok(());
        }
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    failures.accepted();
                    hub.accept(s);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if accept_log::retry_at_once(&e) => {}
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    failures.failed(&e, Instant::now());
                    std::thread::sleep(ACCEPT_BACKOFF);
                    break;
                }
            }
        }
    }
}

/// The connections served at once: `max-connections`, or fewer when the
/// open-file limit (`nofile`, 0 if unknown) would leave the writer less than
/// [`FDS_RESERVED`] descriptors. Refuses a limit that serves none.
fn connection_limit(max_connections: u64, nofile: u64) -> Result<u64, ServeError> {
    if nofile == 0 {
        return Ok(max_connections);
    }
    let fit = nofile.saturating_sub(FDS_RESERVED) / FDS_PER_CONNECTION;
    if fit == 0 {
        return Err(ServeError::FileLimit {
            nofile,
            reserved: FDS_RESERVED,
            per_connection: FDS_PER_CONNECTION,
            need: FDS_RESERVED + FDS_PER_CONNECTION,
        });
    }
    Ok(max_connections.min(fit))
}

/// Removes the socket and the discovery file when we bound the socket. A
/// socket systemd passed stays in place across restarts (clients queue on it
/// until the next daemon accepts), so the discovery file naming it stays too.
fn cleanup(store: &Store, l: &listen::Listening) {
    if !l.owned {
        return;
    }
    // Both go by path: in a data directory moved while the daemon ran,
    // the path names another directory (perhaps another store's files).
    let moved = store.home().check().err();
    if let Some(e) = &moved {
        tracing::error!(error = %e, "the socket's discovery file is left in place");
    }
    if moved.is_some() && l.path.starts_with(&store.config().data_dir) {
        tracing::warn!(socket = %l.path.display(), "the socket file is left in place");
    } else if let Err(e) = std::fs::remove_file(&l.path) {
        tracing::warn!(socket = %l.path.display(), error = %e, "could not remove the socket file");
    }
    if moved.is_none() {
        let _ = std::fs::remove_file(store.config().data_dir.join(SOCKET_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_bounds_the_connections() {
        assert_eq!(connection_limit(4096, 65536).unwrap(), 4096);
        assert_eq!(connection_limit(1000, 300).unwrap(), 172);
        assert_eq!(connection_limit(1000, 0).unwrap(), 1000);
        assert!(matches!(
            connection_limit(1000, 128),
            Err(ServeError::FileLimit { need: 129, .. })
        ));
        assert_eq!(connection_limit(1000, 129).unwrap(), 1);
    }
}

#[cfg(test)]
mod budget_tests;
