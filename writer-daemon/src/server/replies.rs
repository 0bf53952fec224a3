//! Replies in request order. The connection's reader reserves one slot
//! per request; the slot is completed by whoever answers it (the reader
//! itself for immediate answers, the writer thread for appends and
//! syncs), and a second thread writes completed slots out in
//! reservation order, coalescing them into one `write`.
//!
//! The reply thread sleeps until the oldest slot is complete, and only a
//! completion of that slot wakes it: it is not woken for requests still
//! with the writer, and no notify is issued when nobody waits (each one
//! costs a futex call).

use std::collections::VecDeque;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use weir_protocol::wire::{ErrorCode, Reply, Response, WireError, encode};

/// The outcome of one request, when it has been answered.
pub(super) type Outcome = Result<Reply, WireError>;

/// One reply owed to the peer.
struct Entry {
    id: u64,
    outcome: Option<Outcome>,
}

#[derive(Default)]
struct State {
    slots: VecDeque<Entry>,
    /// Reservation number of `slots[0]`.
    base: u64,
    /// Reserved and not yet taken for writing.
    outstanding: usize,
    /// The reader will reserve nothing more.
    finished: bool,
    /// Writing failed: the peer is gone or stopped reading.
    broken: bool,
    /// The reply thread waits for the oldest slot.
    writer_waits: bool,
    /// The reader waits for room.
    reader_waits: bool,
}

/// The queue between a connection's reader and its reply writer.
pub(super) struct ReplyQueue {
    state: Mutex<State>,
    items: Condvar,
    room: Condvar,
    /// Outstanding replies past which the reader stops reading.
    cap: usize,
}

/// The right (and duty) to complete one reserved slot. Dropping it
/// unanswered (the writer stopped before answering) answers the request with
/// a retryable error, so the connection never waits forever.
pub(super) struct Completer {
    queue: Arc<ReplyQueue>,
    seq: u64,
    done: bool,
}

impl Completer {
    /// Answers the request.
    pub(super) fn complete(mut self, outcome: Outcome) {
        self.fill(outcome);
    }

    fn fill(&mut self, outcome: Outcome) {
        self.done = true;
        let q = &self.queue;
        let mut s = q.lock();
        if s.broken {
            return;
        }
        let Some(at) = self.seq.checked_sub(s.base) else {
            return;
        };
        if let Some(e) = s.slots.get_mut(at as usize) {
            e.outcome = Some(outcome);
        }
        if at == 0 && s.writer_waits {
            s.writer_waits = false;
            drop(s);
            q.items.notify_one();
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if !self.done {
            self.fill(Err(gone()));
        }
    }
}

impl ReplyQueue {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            state: Mutex::default(),
            items: Condvar::new(),
            room: Condvar::new(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replies owed: reserved and not yet taken by the reply thread.
    pub(super) fn outstanding(&self) -> usize {
        self.lock().outstanding
    }

    /// Reserves the next reply (for request `id`), waiting while `cap`
    /// replies are owed (a peer that does not read its replies stops being
    /// read). `None` once broken.
    pub(super) fn reserve(self: &Arc<Self>, id: u64) -> Option<Completer> {
        let mut s = self.lock();
        while s.outstanding >= self.cap && !s.broken {
            s.reader_waits = true;
            s = self.room.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.broken {
            return None;
        }
        s.slots.push_back(Entry { id, outcome: None });
        s.outstanding += 1;
        let seq = s.base + s.slots.len() as u64 - 1;
        Some(Completer {
            queue: Arc::clone(self),
            seq,
            done: false,
        })
    }

    /// Waits until one more reply fits (see [`reserve`](Self::reserve)).
    /// False once broken.
    pub(super) fn wait_room(&self) -> bool {
        let mut s = self.lock();
        while s.outstanding >= self.cap && !s.broken {
            s.reader_waits = true;
            s = self.room.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        !s.broken
    }

    /// Queues an answer known now. False once broken.
    pub(super) fn push_ready(self: &Arc<Self>, id: u64, outcome: Outcome) -> bool {
        match self.reserve(id) {
            Some(c) => {
                c.complete(outcome);
                true
            }
            None => false,
        }
    }

    /// The reader is done; the writer drains and exits.
    pub(super) fn finish(&self) {
        self.lock().finished = true;
        self.items.notify_one();
    }

    /// The completed replies at the front, waiting for at least one; `None`
    /// at the end.
    fn take(&self) -> Option<Vec<Response>> {
        let mut s = self.lock();
        loop {
            if s.broken {
                return None;
            }
            let ready = s.slots.iter().take_while(|e| e.outcome.is_some()).count();
            if ready > 0 {
                s.base += ready as u64;
                let out = s
                    .slots
                    .drain(..ready)
                    .filter_map(|e| e.outcome.map(|result| Response { id: e.id, result }))
                    .collect();
                // No longer owed once taken: the peer may read the first of
                // them while the `write` of the rest still blocks, and send
                // its next request. Counting them until the whole `write`
                // returned refused that request as one too many in flight.
                s.outstanding -= ready.min(s.outstanding);
                if s.reader_waits {
                    s.reader_waits = false;
                    drop(s);
                    self.room.notify_one();
                }
                return Some(out);
            }
            if s.finished && s.slots.is_empty() {
                return None;
            }
            s.writer_waits = true;
            s = self.items.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn break_off(&self) {
        self.lock().broken = true;
        self.room.notify_all();
        self.items.notify_all();
    }
}

fn gone() -> WireError {
    WireError::new(
        ErrorCode::ShuttingDown,
        "the writer stopped before answering; retry with the same idempotency key",
    )
}

/// Writes replies until the reader finishes and all are written, or the
/// peer stops taking them. On failure the socket is shut down so that the
/// reader wakes up too.
pub(super) fn write_loop(queue: &ReplyQueue, stream: Arc<UnixStream>) {
    let mut out = Vec::with_capacity(8 << 10);
    let mut failed = false;
    'outer: while let Some(batch) = queue.take() {
        for resp in batch {
            if encode(&mut out, &resp).is_err() {
                tracing::error!(id = resp.id, "a reply could not be encoded");
                failed = true;
                break 'outer;
            }
        }
        let ok = (&*stream).write_all(&out).is_ok();
        out.clear();
        if !ok {
            failed = true;
            break;
        }
    }
    let clean = {
        let s = queue.lock();
        !s.broken && s.finished
    };
    if failed || !clean {
        queue.break_off();
        let _ = stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weir_protocol::wire::read_frame_bytes;

    fn read_replies(b: &mut UnixStream, n: usize) -> Vec<Response> {
        let mut body = Vec::new();
        (0..n)
            .map(|_| {
                read_frame_bytes(b, 1 << 20, &mut body).unwrap();
                weir_protocol::wire::decode::<Response>(&body).unwrap()
            })
            .collect()
    }

    fn read_ids(b: &mut UnixStream, n: usize) -> Vec<u64> {
        read_replies(b, n).into_iter().map(|r| r.id).collect()
    }

    /// A queue of `cap` with its reply thread writing to the returned socket.
    fn started(cap: usize) -> (Arc<ReplyQueue>, UnixStream, std::thread::JoinHandle<()>) {
        let (a, b) = UnixStream::pair().unwrap();
        let q = Arc::new(ReplyQueue::new(cap));
        let q2 = Arc::clone(&q);
        (
            q,
            b,
            std::thread::spawn(move || write_loop(&q2, Arc::new(a))),
        )
    }

    #[test]
    fn replies_come_out_in_reservation_order() {
        let (q, mut b, t) = started(16);
        let first = q.reserve(1).unwrap();
        assert!(q.push_ready(2, Ok(Reply::Pong)));
        let third = q.reserve(3).unwrap();
        // The later answers wait for the first.
        third.complete(Ok(Reply::Begun));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(q.outstanding(), 3);
        first.complete(Ok(Reply::Begun));
        q.finish();
        t.join().unwrap();
        assert_eq!(read_ids(&mut b, 3), [1, 2, 3]);
        assert_eq!(q.outstanding(), 0);
    }

    #[test]
    fn an_unanswered_slot_is_answered_when_its_completer_is_dropped() {
        let (q, mut b, t) = started(16);
        let c = q.reserve(7).unwrap();
        // The writer thread goes away with the request.
        std::thread::spawn(move || drop(c)).join().unwrap();
        q.finish();
        t.join().unwrap();
        let r = read_replies(&mut b, 1).remove(0);
        assert_eq!(r.id, 7);
        assert_eq!(r.result.unwrap_err().code, ErrorCode::ShuttingDown);
    }

    #[test]
    fn a_reply_the_peer_has_read_is_not_counted_while_later_ones_are_written() {
        let (q, mut b, t) = started(16);
        let first = q.reserve(1).unwrap();
        let second = q.reserve(2).unwrap();
        // Far larger than the socket's buffer: its `write` blocks until the
        // peer reads it, after the first reply of the same batch.
        let big = WireError::new(ErrorCode::Internal, "x".repeat(16 << 20));
        second.complete(Err(big));
        first.complete(Ok(Reply::Pong));
        assert_eq!(read_ids(&mut b, 1), [1]);
        // The peer has one request in flight (the second); the daemon's
        // in-flight check must not count more.
        assert_eq!(q.outstanding(), 0);
        let mut body = Vec::new();
        read_frame_bytes(&mut b, 32 << 20, &mut body).unwrap();
        let r = weir_protocol::wire::decode::<Response>(&body).unwrap();
        assert_eq!(r.id, 2);
        q.finish();
        t.join().unwrap();
    }

    #[test]
    fn a_full_queue_holds_the_reader_until_replies_are_taken() {
        let (q, mut b, t) = started(2);
        let held: Vec<_> = (0..2).map(|i| q.reserve(i).unwrap()).collect();
        let q3 = Arc::clone(&q);
        let blocked = std::thread::spawn(move || q3.push_ready(9, Ok(Reply::Pong)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!blocked.is_finished(), "the reader should wait for room");
        for c in held {
            c.complete(Ok(Reply::Pong));
        }
        assert!(blocked.join().unwrap());
        q.finish();
        t.join().unwrap();
        assert_eq!(read_ids(&mut b, 3), [0, 1, 9]);
    }
}
