//! One connection to the daemon: the hello, pipelined requests written in
//! one go, responses read in order.

use super::{ClientError, ClientOptions};
use serde::Serialize;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_protocol::fastwire::{decode_receipts_response, encode_append_request};
use weir_protocol::wire::{
    ClientHello, ErrorCode, HELLO_MAGIC, HelloReply, Op, PROTOCOL_VERSION, Response, ServerHello,
    WireError, decode, encode, read_frame_bytes,
};

/// Largest response frame accepted (a batch of a million receipts fits).
const MAX_REPLY: u32 = 256 << 20;

/// How an exchange failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The connection is gone or the daemon is restarting: reconnect and
    /// resend (idempotency keys make that safe).
    Transient(String),
    /// The daemon refused the connection for now (`Busy` at its connection
    /// limit, `ShuttingDown`, `Timeout`): it runs. Retried after its
    /// `retry_after_ms`, and reported with its code when the budget ends.
    Refused(WireError),
    /// The daemon accepted the connection but did not answer (or read)
    /// within `io_timeout`: it is stopped, hung or overloaded. Retried like
    /// `Transient`, but reported as such when the budget ends.
    NoAnswer,
    /// Retrying cannot help.
    Fatal(ClientError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            // What a socket timeout reports.
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Self::NoAnswer,
            _ => Self::Transient(e.to_string()),
        }
    }
}

/// A request borrowing its op: encodes exactly like `Request`.
#[derive(Serialize)]
struct RequestRef<'a> {
    id: u64,
    op: &'a Op,
}

/// The data directory a client found its socket through: the daemon there
/// must serve the directory at that path, as it is at each connect (a
/// store put back from a backup at the same path is another directory,
/// and its daemon the right one).
#[derive(Debug, Clone)]
pub(super) struct DirCheck {
    pub(super) dir: PathBuf,
}

impl DirCheck {
    /// Refuses a daemon that says it serves another directory than the one
    /// at `self.dir` now (one that does not say is taken at its word: older
    /// daemons). A directory that cannot be looked at (being put back) is
    /// a transient failure.
    fn check(&self, socket: &Path, hello: &ServerHello) -> Result<(), Failure> {
        use std::os::unix::ffi::OsStringExt;
        use std::os::unix::fs::MetadataExt;
        let Some(served) = &hello.data_dir else {
            return Ok(());
        };
        let meta = std::fs::metadata(&self.dir)
            .map_err(|e| Failure::Transient(format!("{}: {e}", self.dir.display())))?;
        if (served.dev, served.ino) == (meta.dev(), meta.ino()) {
            return Ok(());
        }
        Err(Failure::Fatal(ClientError::OtherDataDir {
            data_dir: self.dir.clone(),
            dev: meta.dev(),
            ino: meta.ino(),
            socket: socket.to_path_buf(),
            served_dir: PathBuf::from(std::ffi::OsString::from_vec(served.path.clone())),
            served_dev: served.dev,
            served_ino: served.ino,
        }))
    }
}

pub(super) struct Conn {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    out: Vec<u8>,
    body: Vec<u8>,
    timeout: Duration,
    next_id: u64,
    /// The process that opened the connection: a forked child inherits the
    /// socket, and two processes on one conversation would take each
    /// other's replies.
    pub(super) pid: u32,
    pub(super) hello: ServerHello,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("instance", &self.hello.instance)
            .finish_non_exhaustive()
    }
}

fn transient_code(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ShuttingDown | ErrorCode::Busy | ErrorCode::Timeout
    )
}

impl Conn {
    /// Connects and says hello; with `dir`, refuses a daemon serving
    /// another data directory.
    pub(super) fn open(
        path: &Path,
        opts: &ClientOptions,
        dir: Option<&DirCheck>,
    ) -> Result<Self, Failure> {
        let mut stream = connect(path, opts.io_timeout).map_err(|e| match e.kind() {
            // The error names no path: the `ClientError` names it once.
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => Failure::Transient(format!(
                "{e}: no daemon is listening (not running, or still starting: a daemon listens \
                 once its restore is done)"
            )),
            // The daemon's listen backlog stayed full for the whole timeout:
            // it is not accepting (stopped, hung or overloaded).
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::NoAnswer,
            _ => Failure::Fatal(ClientError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        })?;
        stream.set_read_timeout(Some(opts.io_timeout))?;
        stream.set_write_timeout(Some(opts.io_timeout))?;
        let mut hello = Vec::with_capacity(256);
        let sent = encode(
            &mut hello,
            &ClientHello {
                magic: HELLO_MAGIC,
                versions: vec![PROTOCOL_VERSION],
                client: opts.name.clone(),
            },
        )
        .map_err(io::Error::other)
        .and_then(|()| write_all(&mut stream, opts.io_timeout, &hello));
        // A daemon refusing the connection writes why and closes without
        // reading: a hello written after that fails, but the refusal is
        // still in this socket's receive buffer.
        let closed = match sent {
            Err(e) if closed_by_peer(&e) => Some(e),
            other => other.map(|()| None)?,
        };
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut body = Vec::new();
        if let Err(f) = read(&mut reader, opts.io_timeout, &mut body) {
            // Nothing was pending: the write's error says what happened.
            return Err(closed.map_or(f, Failure::from));
        }
        let reply: HelloReply = decode(&body).map_err(|e| {
            Failure::Fatal(ClientError::Protocol {
                what: format!("the hello reply does not decode: {e}"),
            })
        })?;
        let hello = match reply {
            HelloReply::Ok(h) => h,
            HelloReply::Err(e) if transient_code(e.code) => return Err(Failure::Refused(e)),
            HelloReply::Err(e) => return Err(Failure::Fatal(ClientError::Server(e))),
        };
        if let Some(dir) = dir {
            dir.check(path, &hello)?;
        }
        Ok(Self {
            stream,
            reader,
            out: Vec::with_capacity(4096),
            body,
            timeout: opts.io_timeout,
            next_id: 1,
            pid: std::process::id(),
            hello,
        })
    }

    /// Writes `ops` in one go; returns the first id (ids are consecutive).
    pub(super) fn send<'a>(&mut self, ops: impl Iterator<Item = &'a Op>) -> Result<u64, Failure> {
        let first = self.next_id;
        self.out.clear();
        for op in ops {
            let start = self.out.len();
            // Appends take the direct encoder (the same bytes serde writes).
            self.out.extend_from_slice(&[0; 4]);
            if encode_append_request(&mut self.out, self.next_id, op) {
                let len = (self.out.len() - start - 4) as u32;
                self.out[start..start + 4].copy_from_slice(&len.to_le_bytes());
            } else {
                self.out.truncate(start);
                encode(
                    &mut self.out,
                    &RequestRef {
                        id: self.next_id,
                        op,
                    },
                )
                .map_err(|e| {
                    Failure::Fatal(ClientError::Protocol {
                        what: e.to_string(),
                    })
                })?;
            }
            let len = self.out.len() - start - 4;
            if len > self.hello.max_frame as usize {
                // Refused here, before anything of `ops` is written.
                return Err(Failure::Fatal(ClientError::RequestTooLarge {
                    len,
                    max: self.hello.max_frame,
                    keys: Vec::new(),
                }));
            }
            self.next_id += 1;
        }
        if let Err(e) = write_all(&mut self.stream, self.timeout, &self.out) {
            return Err(if closed_by_peer(&e) {
                self.pending_refusal().unwrap_or_else(|| e.into())
            } else {
                e.into()
            });
        }
        Ok(first)
    }

    /// After a write failed because the daemon closed the connection: the
    /// connection-level error (id 0) it wrote before closing, if one is
    /// waiting to be read.
    fn pending_refusal(&mut self) -> Option<Failure> {
        read(&mut self.reader, self.timeout, &mut self.body).ok()?;
        let r: Response = decode(&self.body).ok()?;
        match r.result {
            Err(e) if r.id == 0 && transient_code(e.code) => {
                Some(Failure::Transient(e.to_string()))
            }
            Err(e) if r.id == 0 => Some(Failure::Fatal(ClientError::Server(e))),
            // A reply to a request of a partly written window: the failed
            // write is what to report (the rest is unanswered).
            _ => None,
        }
    }

    /// Reads the response to request `id`.
    pub(super) fn recv(
        &mut self,
        id: u64,
    ) -> Result<Result<weir_protocol::wire::Reply, WireError>, Failure> {
        read(&mut self.reader, self.timeout, &mut self.body)?;
        // Receipts take the direct decoder; anything else goes through serde.
        let r: Response = decode_receipts_response(&self.body)
            .map_or_else(|| decode(&self.body), Ok)
            .map_err(|e| {
                Failure::Fatal(ClientError::Protocol {
                    what: format!("a response does not decode: {e}"),
                })
            })?;
        if r.id == id {
            return Ok(r.result);
        }
        match r.result {
            // A connection-level error: the daemon closes after it.
            Err(e) if r.id == 0 && transient_code(e.code) => Err(Failure::Transient(e.to_string())),
            Err(e) if r.id == 0 => Err(Failure::Fatal(ClientError::Server(e))),
            _ => Err(Failure::Fatal(ClientError::Protocol {
                what: format!("expected the response to request {id}, got {}", r.id),
            })),
        }
    }
}

/// Did a write fail because the peer closed its end (having maybe written
/// why before it did)?
fn closed_by_peer(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)
}

/// Connects to the socket at `path`, waiting at most `timeout` for room in
/// its listen backlog. `UnixStream::connect` waits there for ever: a stopped
/// daemon whose backlog is full would hold the call. On Linux `SO_SNDTIMEO`
/// bounds that wait, which then fails with `EAGAIN` (a non-blocking connect
/// would fail at once instead of waiting for room). A signal ends the wait
/// with `EINTR` (with or without `SA_RESTART`): the connect is tried again,
/// on a fresh socket (the interrupted one may still be queued), for what is
/// left of `timeout`, and fails with `TimedOut` when nothing is.
fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
    use nix::sys::time::{TimeVal, TimeValLike};
    use std::os::fd::AsRawFd;
    let addr = UnixAddr::new(path)?;
    let deadline = Instant::now() + timeout;
    let mut wait = timeout;
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // At least 1 µs: zero would mean no timeout.
        let us = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX).max(1);
        socket::setsockopt(&fd, sockopt::SendTimeout, &TimeVal::microseconds(us))?;
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(UnixStream::from(fd)),
            Err(Errno::EINTR) => wait = left(deadline)?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads one reply frame. Its first byte may take `timeout`; once it came,
/// the whole frame must arrive within `timeout` (a peer sending a byte at a
/// time does not hold the call for longer).
fn read(
    reader: &mut BufReader<UnixStream>,
    timeout: Duration,
    body: &mut Vec<u8>,
) -> Result<(), Failure> {
    let mut r = FrameDeadline {
        r: reader,
        timeout,
        deadline: Instant::now() + timeout,
        begun: false,
        shortened: false,
    };
    let got = read_frame_bytes(&mut r, MAX_REPLY, body);
    if r.shortened {
        r.r.get_ref().set_read_timeout(Some(timeout))?;
    }
    got.map_err(|e| match e {
        weir_protocol::wire::FrameReadError::Io(e) => e.into(),
        other => Failure::Fatal(ClientError::Protocol {
            what: other.to_string(),
        }),
    })
}

/// What is left until `deadline`, or `TimedOut` when nothing is (a socket
/// timeout of zero would mean no timeout).
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// A reader that ends a wait at its deadline. A signal makes a socket read
/// fail with `EINTR` (with or without `SA_RESTART`, once a timeout is set),
/// and a retry would wait the socket's whole timeout again: signals more
/// frequent than it would hold the call for ever. So the read timeout is
/// cut to what is left before each retry, and before each read that needs
/// the socket once the frame's first byte came.
struct FrameDeadline<'a> {
    r: &'a mut BufReader<UnixStream>,
    timeout: Duration,
    /// The first byte's deadline (`timeout` after the wait began), then,
    /// once it came, the whole frame's.
    deadline: Instant,
    /// The frame's first byte came.
    begun: bool,
    /// The socket's read timeout was cut (and must be put back).
    shortened: bool,
}

impl FrameDeadline<'_> {
    fn cut(&mut self) -> io::Result<()> {
        self.r
            .get_ref()
            .set_read_timeout(Some(left(self.deadline)?))?;
        self.shortened = true;
        Ok(())
    }
}

impl Read for FrameDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.begun && self.r.buffer().is_empty() {
                self.cut()?;
            }
            match self.r.read(buf) {
                Ok(n) => {
                    if n > 0 && !self.begun {
                        self.begun = true;
                        self.deadline = Instant::now() + self.timeout;
                    }
                    return Ok(n);
                }
                // Before the first byte the socket's timeout is `timeout`,
                // which the first try takes as is (no syscall).
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    if !self.begun {
                        self.cut()?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes all of `buf`; each write may wait `timeout` for room in the
/// socket's buffer (the socket's write timeout, which `write_all` of std
/// would restart at every `EINTR`). After a signal the timeout is cut to
/// what is left of that wait, and put back for the next wait and at the end.
fn write_all(stream: &mut UnixStream, timeout: Duration, buf: &[u8]) -> io::Result<()> {
    let mut shortened = false;
    let wrote = write_all_until(stream, timeout, buf, &mut shortened);
    if shortened {
        stream.set_write_timeout(Some(timeout))?;
    }
    wrote
}

fn write_all_until(
    stream: &mut UnixStream,
    timeout: Duration,
    mut buf: &[u8],
    shortened: &mut bool,
) -> io::Result<()> {
    while !buf.is_empty() {
        let deadline = Instant::now() + timeout;
        if *shortened {
            stream.set_write_timeout(Some(timeout))?;
            *shortened = false;
        }
        loop {
            match stream.write(buf) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    stream.set_write_timeout(Some(left(deadline)?))?;
                    *shortened = true;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
