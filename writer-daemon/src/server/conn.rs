//! One connection: credentials, the hello, then requests read as fast as
//! they arrive while a second thread writes the replies in order.

use super::Hub;
use super::auth::{self, Peer};
use super::frames::{FrameError, FrameReader};
use super::replies::{ReplyQueue, write_loop};
use super::session::Session;
use crate::budget::{Hold, Share};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use weir_protocol::fastwire::decode_append_request;
use weir_protocol::limited::{RequestError, decode_request};
use weir_protocol::wire::{
    ClientHello, ErrorCode, HELLO_MAGIC, HelloReply, PROTOCOL_VERSION, ServerHello, WireError,
    decode, write_frame,
};

/// Replies a peer may leave unread beyond the in-flight limit before the
/// connection stops reading from it.
const SLACK: usize = 64;
/// Stack of the reply-writer thread: it only encodes and writes.
const WRITER_STACK: usize = 64 << 10;
/// The largest hello, and the largest frame of a peer that may not append
/// (it can only ping, ask for stats, sync and open or cancel an empty
/// transaction). A hello is under 100 bytes plus the client's name; without
/// this bound every connection could hold `max-frame-bytes` before its
/// hello, whoever its peer.
pub(super) const SMALL_FRAME: u32 = 64 << 10;
/// Frames this small take no bytes from the budget (`budget.rs`): a ping,
/// a stats or sync request, a small append. They are answered even while
/// the budget is full and the writer stalled (`weir stat` in an incident),
/// and their memory stays bounded by the request counts (the writer queue,
/// `max-in-flight-per-connection`): at most 256 bytes each.
const UNBUDGETED_FRAME: u32 = 256;

/// Serves one connection to the end.
pub(super) fn run(hub: &Arc<Hub>, stream: Arc<UnixStream>) {
    let peer = match auth::peer(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials; closing");
            return;
        }
    };
    let (pid, uid) = (peer.pid, peer.uid);
    if let Err(e) = serve(hub, stream, peer) {
        tracing::debug!(pid, uid, error = %e, "connection ended with an i/o error");
    }
}

fn serve(hub: &Arc<Hub>, stream: Arc<UnixStream>, peer: Peer) -> std::io::Result<()> {
    stream.set_write_timeout(Some(hub.timeout))?;
    let mut reader = FrameReader::new(Arc::clone(&stream), SMALL_FRAME, hub.timeout);
    let h = match hello(hub, &mut reader) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::debug!(pid = peer.pid, code = ?e.code, "hello refused");
            hub.store.shared().reject_code(&format!("{:?}", e.code));
            return write_frame(&mut &*stream, &HelloReply::Err(e));
        }
    };
    // The reply writer starts before the hello is answered: a client told
    // Ok must be served, and one the daemon cannot serve now (no thread:
    // the task or memory limit) is told Busy and retries.
    let queue = Arc::new(ReplyQueue::new(hub.max_in_flight + SLACK));
    let spawned = {
        let queue = Arc::clone(&queue);
        let out = Arc::clone(&stream);
        std::thread::Builder::new()
            .name("weir-reply".into())
            .stack_size(WRITER_STACK)
            .spawn(move || write_loop(&queue, out))
    };
    let writer = match spawned {
        Ok(w) => {
            hub.thread_started();
            w
        }
        Err(e) => {
            hub.thread_failed(&e);
            return write_frame(&mut &*stream, &HelloReply::Err(super::busy(&e)));
        }
    };
    if let Err(e) = write_frame(&mut &*stream, &HelloReply::Ok(h)) {
        queue.finish();
        let _ = writer.join();
        return Err(e);
    }
    tracing::debug!(pid = peer.pid, uid = peer.uid, gid = peer.gid, "connected");
    let (pid, uid, gid) = (peer.pid, peer.uid, peer.gid);
    let may_append = hub.policy.may_append(&peer);
    if may_append {
        reader.set_max(hub.max_frame);
    }
    let share = Share::default();
    let mut session = Session::new(hub, peer, Arc::clone(&share));
    let max_batch = hub.store.config().max_batch_events as usize;
    loop {
        // The hold on the frame's bytes, taken before its body is read and
        // once its reply has room: a reader never sits on budget while a
        // peer that does not read its replies blocks it.
        let mut held = None;
        let next = reader.next(&|| queue.outstanding() > 0, &mut |len| {
            held = queue
                .wait_room()
                .then(|| {
                    if len <= UNBUDGETED_FRAME {
                        Some(Hold::unbudgeted(u64::from(len)))
                    } else {
                        hub.budget.admit(&share, u64::from(len))
                    }
                })
                .flatten();
            held.is_some()
        });
        let hold = held.unwrap_or_default();
        let fatal = match next {
            // Appends take the direct decoder; everything else (and
            // anything it declines) goes through serde.
            // A batch over max-batch-events is refused at its header, before
            // any event is decoded.
            Ok(body) => {
                match decode_append_request(body, max_batch)
                    .map_or_else(|| decode_request(body, max_batch), Ok)
                {
                    Ok(req) => {
                        if session.handle(req, hold, &queue) {
                            continue;
                        }
                        break;
                    }
                    Err(RequestError::BatchTooLarge {
                        id: Some(id),
                        events,
                        ..
                    }) => {
                        drop(hold);
                        if session.refuse_batch(id, events, body.len(), &queue) {
                            continue;
                        }
                        break;
                    }
                    Err(e) => WireError::new(
                        ErrorCode::MalformedFrame,
                        format!("the frame is not a msgpack Request: {e}; closing"),
                    )
                    .with("len", body.len()),
                }
            }
            Err(FrameError::Eof | FrameError::Stopped) => break,
            Err(FrameError::Io(e)) => {
                tracing::debug!(pid, error = %e, "read failed");
                break;
            }
            Err(FrameError::Truncated { got }) => WireError::new(
                ErrorCode::MalformedFrame,
                "the connection closed in the middle of a frame",
            )
            .with("received", got),
            Err(FrameError::TooLarge { len }) if !may_append => WireError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "uid {uid} / gid {gid} may not append, and a frame of {len} bytes is more \
                     than such a peer may send ({SMALL_FRAME}); add it to allow-uids or \
                     allow-gids in the daemon's configuration; closing"
                ),
            )
            .with("uid", uid)
            .with("gid", gid)
            .with("len", len)
            .with("max", SMALL_FRAME),
            Err(FrameError::TooLarge { len }) => WireError::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "a frame of {len} bytes exceeds max-frame-bytes = {}; closing",
                    hub.max_frame
                ),
            )
            .with("len", len)
            .with("max", hub.max_frame),
            Err(FrameError::Idle) => WireError::new(
                ErrorCode::Timeout,
                format!("no request for {} ms; closing", hub.timeout.as_millis()),
            ),
            Err(FrameError::Stuck { got }) => WireError::new(
                ErrorCode::Timeout,
                format!(
                    "a frame did not arrive within {} ms; closing",
                    hub.timeout.as_millis()
                ),
            )
            .with("received", got),
        };
        hub.store.shared().reject_code(&format!("{:?}", fatal.code));
        queue.push_ready(0, Err(fatal));
        break;
    }
    queue.finish();
    let _ = writer.join();
    Ok(())
}

/// Reads and checks the hello. `Ok(None)`: the peer left without one.
fn hello(hub: &Hub, reader: &mut FrameReader) -> Result<Option<ServerHello>, WireError> {
    let body = match reader.next(&|| false, &mut |_| true) {
        Ok(b) => b,
        Err(FrameError::Eof | FrameError::Stopped | FrameError::Io(_)) => return Ok(None),
        Err(FrameError::TooLarge { len }) => {
            return Err(WireError::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "a hello of {len} bytes exceeds the {SMALL_FRAME} bytes a hello may take \
                     (is the client's name that long?); is this a weir client?"
                ),
            )
            .with("len", len)
            .with("max", SMALL_FRAME));
        }
        Err(FrameError::Truncated { got }) => {
            return Err(
                WireError::new(ErrorCode::MalformedFrame, "the hello was cut short")
                    .with("received", got),
            );
        }
        Err(FrameError::Idle | FrameError::Stuck { .. }) => {
            return Err(WireError::new(
                ErrorCode::Timeout,
                "no hello within read-timeout-ms",
            ));
        }
    };
    let h: ClientHello = decode(body).map_err(|e| {
        WireError::new(
            ErrorCode::BadHello,
            format!("the first frame must be a ClientHello: {e}"),
        )
    })?;
    if h.magic != HELLO_MAGIC {
        return Err(WireError::new(
            ErrorCode::BadHello,
            "the hello's magic is not \"weir\"",
        ));
    }
    if !h.versions.contains(&PROTOCOL_VERSION) {
        let offered: Vec<String> = h.versions.iter().map(u16::to_string).collect();
        return Err(WireError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "this daemon speaks protocol version {PROTOCOL_VERSION}; the client offered [{}]",
                offered.join(", ")
            ),
        )
        .with("supported", PROTOCOL_VERSION)
        .with("offered", offered.join(",")));
    }
    let c = hub.store.config();
    Ok(Some(ServerHello {
        version: PROTOCOL_VERSION,
        instance: hub.store.instance(),
        max_frame: hub.max_frame,
        max_payload: c.max_payload_bytes,
        max_batch_events: c.max_batch_events,
        max_batch_bytes: c.max_batch_bytes,
        max_in_flight: Some(c.max_in_flight_per_connection),
        starts: hub.store.recent_starts().to_vec(),
        data_dir: Some(hub.store.served_dir().clone()),
    }))
}
