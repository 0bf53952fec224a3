//! The bytes of requests read from clients and not yet done with: a
//! daemon-wide budget (`max-queued-bytes`) and a share per connection
//! (`max-batch-bytes`).
//!
//! A connection's reader takes a [`Hold`] on a frame's length after its
//! length prefix and before its body is read; the hold travels with the
//! request to the writer and is dropped with the request's events, once
//! its group is written. A frame that does not fit waits, unread, in the
//! socket: backpressure on that connection only. A frame always fits a
//! connection with nothing held, and a daemon with nothing held, so that
//! one request of any size the limits allow goes through.
//!
//! Taking and giving back are a few atomic operations; the lock and the
//! condition variable are used only while someone waits.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};

/// The daemon-wide budget.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicU64,
    /// The most ever held at once (a gauge for tests and logs).
    peak: AtomicU64,
    /// Times a reader had to wait.
    waits: AtomicU64,
    cap: u64,
    per_connection: u64,
    /// Readers waiting; releases notify only when there are some.
    waiters: AtomicU64,
    /// True once the daemon stops: waiters give up.
    closed: Mutex<bool>,
    freed: Condvar,
}

/// One connection's bytes held.
pub(crate) type Share = Arc<AtomicU64>;

/// Bytes of one request held against the budget until dropped. Requests
/// from in-process callers carry an unbudgeted hold (their size only).
#[derive(Debug, Default)]
pub struct Hold {
    bytes: u64,
    from: Option<(Arc<Budget>, Share)>,
}

impl Hold {
    /// A hold on nothing but a size (in-process appends: the caller waits
    /// for room in the writer queue instead).
    #[must_use]
    pub fn unbudgeted(bytes: u64) -> Self {
        Self { bytes, from: None }
    }

    /// The request's size.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some((budget, share)) = self.from.take() {
            share.fetch_sub(self.bytes, SeqCst);
            budget.release(self.bytes);
        }
    }
}

impl Budget {
    pub(crate) fn new(cap: u64, per_connection: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            cap,
            per_connection,
            waiters: AtomicU64::new(0),
            closed: Mutex::new(false),
            freed: Condvar::new(),
        }
    }

    /// Takes `bytes` for a request of the connection `share`, waiting while
    /// they fit neither it nor the daemon. `None` once the daemon stops.
    pub(crate) fn admit(self: &Arc<Self>, share: &Share, bytes: u64) -> Option<Hold> {
        if !self.try_take(share, bytes) {
            let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
            self.waits.fetch_add(1, Relaxed);
            // SYNC: counted before the check below, so that a release after
            // that check sees a waiter and notifies (it takes the lock we
            // hold until `wait`).
            self.waiters.fetch_add(1, SeqCst);
            let admitted = loop {
                if *closed {
                    break false;
                }
                if self.try_take(share, bytes) {
                    break true;
                }
                closed = self.freed.wait(closed).unwrap_or_else(|p| p.into_inner());
            };
            self.waiters.fetch_sub(1, SeqCst);
            if !admitted {
                return None;
            }
        }
        Some(Hold {
            bytes,
            from: Some((Arc::clone(self), Arc::clone(share))),
        })
    }

    fn try_take(&self, share: &Share, bytes: u64) -> bool {
        let mine = share.load(SeqCst);
        if mine != 0 && mine.saturating_add(bytes) > self.per_connection {
            return false;
        }
        let mut used = self.used.load(SeqCst);
        loop {
            if used != 0 && used.saturating_add(bytes) > self.cap {
                return false;
            }
            match self
                .used
                .compare_exchange_weak(used, used + bytes, SeqCst, Relaxed)
            {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        // Only the connection's reader adds to its share.
        share.fetch_add(bytes, SeqCst);
        self.peak.fetch_max(used + bytes, Relaxed);
        true
    }

    fn release(&self, bytes: u64) {
        // SYNC: given back before `waiters` is read (see `admit`).
        self.used.fetch_sub(bytes, SeqCst);
        if self.waiters.load(SeqCst) > 0 {
            drop(self.closed.lock().unwrap_or_else(|p| p.into_inner()));
            self.freed.notify_all();
        }
    }

    /// Wakes every waiter for good: the daemon stops reading.
    pub(crate) fn close(&self) {
        *self.closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.freed.notify_all();
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// The most bytes held at once since start.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }

    /// Times a reader waited for bytes to be given back.
    pub(crate) fn waits(&self) -> u64 {
        self.waits.load(Relaxed)
    }
}

/// Bytes staged in open transactions, daemon-wide (`max-staged-bytes`).
/// Staging past it is refused, not waited for: staged bytes come back only
/// when their transaction commits, is cancelled or its connection ends.
#[derive(Debug)]
pub(crate) struct Staging {
    used: AtomicU64,
    cap: u64,
}

/// One transaction's staged bytes, given back when dropped.
#[derive(Debug)]
pub(crate) struct StagedHold {
    staging: Arc<Staging>,
    bytes: u64,
}

impl Staging {
    pub(crate) fn new(cap: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            cap,
        }
    }

    /// A hold on nothing yet, for a transaction that begins.
    pub(crate) fn hold(self: &Arc<Self>) -> StagedHold {
        StagedHold {
            staging: Arc::clone(self),
            bytes: 0,
        }
    }

    /// The cap.
    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes staged now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }
}

impl StagedHold {
    /// Takes `more` bytes for the transaction, if they fit.
    pub(crate) fn grow(&mut self, more: u64) -> bool {
        let taken = self
            .staging
            .used
            .fetch_update(SeqCst, Relaxed, |used| {
                used.checked_add(more).filter(|&n| n <= self.staging.cap)
            })
            .is_ok();
        if taken {
            self.bytes += more;
        }
        taken
    }
}

impl Drop for StagedHold {
    fn drop(&mut self) {
        self.staging.used.fetch_sub(self.bytes, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_waits_until_bytes_come_back_and_one_always_fits() {
        let b = Arc::new(Budget::new(100, 60));
        let (x, y) = (Share::default(), Share::default());
        // Larger than both limits, but nothing is held: it fits.
        let big = b.admit(&x, 500).unwrap();
        assert_eq!(b.used(), 500);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let (b, y) = (Arc::clone(&b), Arc::clone(&y));
            std::thread::spawn(move || tx.send(b.admit(&y, 10).map(|h| h.bytes())))
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100))
                .is_err()
        );
        drop(big);
        assert_eq!(rx.recv().unwrap(), Some(10));
        waiter.join().unwrap().unwrap();
        assert_eq!((b.used(), x.load(SeqCst), y.load(SeqCst)), (0, 0, 0));
        // The connection's share: 50 + 20 > 60, another connection fits.
        let a1 = b.admit(&x, 50).unwrap();
        assert!(!b.try_take(&x, 20));
        let other = b.admit(&y, 40).unwrap();
        // The daemon's cap: 90 + 20 > 100.
        assert!(!b.try_take(&Share::default(), 20));
        drop((a1, other));
        assert_eq!(b.peak(), 500);
        // Closing wakes a waiter with nothing.
        let _held = b.admit(&x, 100).unwrap();
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || b.admit(&Share::default(), 1).is_none())
        };
        while b.waiters.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        b.close();
        assert!(waiter.join().unwrap());
    }
}
