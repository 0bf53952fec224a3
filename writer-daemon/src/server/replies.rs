//! Replies in request order. The connection's reader pushes one slot per
//! request, either ready or waiting for the writer; a second thread writes
//! them out in push order, coalescing ready replies into one `write`.

use std::collections::VecDeque;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Condvar, Mutex, MutexGuard};
use weir_protocol::wire::{ErrorCode, Reply, Response, WireError, encode};

/// The outcome of one request, when the writer has answered.
pub(super) type Outcome = Result<Reply, WireError>;

/// One reply owed to the peer.
pub(super) enum Slot {
    /// Known already.
    Ready(Response),
    /// Comes from the writer.
    Waiting {
        /// Request id.
        id: u64,
        /// Where the outcome arrives.
        rx: Receiver<Outcome>,
    },
}

#[derive(Default)]
struct State {
    slots: VecDeque<Slot>,
    /// Pushed and not yet written.
    outstanding: usize,
    /// The reader will push nothing more.
    finished: bool,
    /// Writing failed: the peer is gone or stopped reading.
    broken: bool,
}

/// The queue between a connection's reader and its reply writer.
pub(super) struct ReplyQueue {
    state: Mutex<State>,
    items: Condvar,
    room: Condvar,
    /// Outstanding replies past which the reader stops reading.
    cap: usize,
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

    /// Replies owed.
    pub(super) fn outstanding(&self) -> usize {
        self.lock().outstanding
    }

    /// Queues a reply, waiting while `cap` replies are owed (a peer that
    /// does not read its replies stops being read). False once broken.
    pub(super) fn push(&self, slot: Slot) -> bool {
        let mut s = self.lock();
        while s.outstanding >= self.cap && !s.broken {
            s = self.room.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.broken {
            return false;
        }
        s.slots.push_back(slot);
        s.outstanding += 1;
        drop(s);
        self.items.notify_one();
        true
    }

    /// The reader is done; the writer drains and exits.
    pub(super) fn finish(&self) {
        self.lock().finished = true;
        self.items.notify_one();
    }

    /// Everything queued, waiting for at least one; `None` at the end.
    fn take(&self) -> Option<VecDeque<Slot>> {
        let mut s = self.lock();
        loop {
            if s.broken {
                return None;
            }
            if !s.slots.is_empty() {
                return Some(std::mem::take(&mut s.slots));
            }
            if s.finished {
                return None;
            }
            s = self.items.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn written(&self, n: usize) {
        let mut s = self.lock();
        s.outstanding -= n.min(s.outstanding);
        drop(s);
        self.room.notify_one();
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
pub(super) fn write_loop(queue: &ReplyQueue, mut stream: UnixStream) {
    let mut out = Vec::with_capacity(8 << 10);
    let mut pending = 0usize;
    let mut flush = |out: &mut Vec<u8>, pending: &mut usize| -> bool {
        if out.is_empty() {
            return true;
        }
        let ok = stream.write_all(out).is_ok();
        out.clear();
        queue.written(std::mem::take(pending));
        ok
    };
    let mut failed = false;
    'outer: while let Some(batch) = queue.take() {
        for slot in batch {
            let resp = match slot {
                Slot::Ready(r) => r,
                Slot::Waiting { id, rx } => {
                    let result = match rx.try_recv() {
                        Ok(r) => r,
                        Err(TryRecvError::Disconnected) => Err(gone()),
                        Err(TryRecvError::Empty) => {
                            // Send what is ready before waiting on the writer.
                            if !flush(&mut out, &mut pending) {
                                failed = true;
                                break 'outer;
                            }
                            rx.recv().unwrap_or_else(|_| Err(gone()))
                        }
                    };
                    Response { id, result }
                }
            };
            if encode(&mut out, &resp).is_err() {
                tracing::error!(id = resp.id, "a reply could not be encoded");
                failed = true;
                break 'outer;
            }
            pending += 1;
        }
        if !flush(&mut out, &mut pending) {
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
    use std::sync::Arc;
    use std::sync::mpsc::sync_channel;
    use weir_protocol::wire::read_frame_bytes;

    #[test]
    fn replies_come_out_in_push_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let q = Arc::new(ReplyQueue::new(16));
        let q2 = Arc::clone(&q);
        let t = std::thread::spawn(move || write_loop(&q2, a));
        let (tx1, rx1) = sync_channel(1);
        assert!(q.push(Slot::Waiting { id: 1, rx: rx1 }));
        assert!(q.push(Slot::Ready(Response {
            id: 2,
            result: Ok(Reply::Pong)
        })));
        std::thread::sleep(std::time::Duration::from_millis(20));
        tx1.send(Ok(Reply::Begun)).unwrap();
        q.finish();
        t.join().unwrap();
        let mut body = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..2 {
            read_frame_bytes(&mut b, 1 << 20, &mut body).unwrap();
            ids.push(weir_protocol::wire::decode::<Response>(&body).unwrap().id);
        }
        assert_eq!(ids, [1, 2]);
        assert_eq!(q.outstanding(), 0);
    }
}
