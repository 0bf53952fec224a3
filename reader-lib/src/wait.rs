//! Waiting for new events: [`Reader::wait_visible`] sleeps on the gate's
//! futex word; [`Subscription`] catches up with paged queries, then follows.
#![forbid(unsafe_code)]

use crate::entry::Entry;
use crate::error::ReadError;
use crate::map::futex_wait;
use crate::reader::Reader;
use std::collections::VecDeque;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};
use weir_protocol::Region;
use weir_protocol::gate::STATE_SUPERSEDED;

/// Longest single futex sleep: a killed daemon never wakes us, and a
/// superseded gate is not bumped again, so the state is re-checked this often.
const SLICE: Duration = Duration::from_secs(1);
/// Sleep slice while a superseded gate waits for its replacement to go live.
const SUPERSEDED_SLICE: Duration = Duration::from_millis(10);
/// Events fetched per catch-up page.
const PAGE: usize = 1024;

impl Reader {
    /// Waits until `visible > seq` (the event `seq` is published) or
    /// `timeout` passes; returns whether it is published. Sleeps on the
    /// gate's futex word, which the daemon bumps after every publish and every
    /// state change; follows a daemon restart.
    pub fn wait_visible(&self, seq: u64, timeout: Duration) -> Result<bool, ReadError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.poll_replaced();
            let view = self.view();
            let Some(futex) = view.gate.futex() else {
                return Ok(view.gate.visible() > seq);
            };
            let word = futex.load(Ordering::Relaxed);
            // SYNC: orders the futex word load before the `visible` load, so
            // a publish after this point changes the word and FUTEX_WAIT
            // returns at once instead of missing the wake.
            fence(Ordering::Acquire);
            if view.gate.visible() > seq {
                return Ok(true);
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d <= now => return Ok(false),
                Some(d) => d - now,
                None => Duration::MAX,
            };
            let slice = if view.gate.state() == STATE_SUPERSEDED {
                SUPERSEDED_SLICE
            } else {
                SLICE
            };
            futex_wait(futex, word, left.min(slice)).map_err(|errno| ReadError::Futex { errno })?;
        }
    }

    /// Follows the events `region` selects, from sequence `from_seq` on:
    /// first everything already visible, then new events as they are
    /// published. The iterator blocks while there is nothing new.
    #[must_use]
    pub fn subscribe(&self, region: Region, from_seq: u64) -> Subscription<'_> {
        Subscription {
            reader: self,
            region,
            next: from_seq,
            buf: VecDeque::new(),
        }
    }
}

/// A live feed of the events of a region, in sequence order. See
/// [`Reader::subscribe`].
#[derive(Debug)]
pub struct Subscription<'r> {
    reader: &'r Reader,
    region: Region,
    next: u64,
    buf: VecDeque<Entry<'r>>,
}

impl<'r> Subscription<'r> {
    /// The next sequence this subscription will consider.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.buf.front().map_or(self.next, Entry::sequence)
    }

    /// The next event, waiting at most `timeout` for one; `Ok(None)` on timeout.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Entry<'r>>, ReadError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Ok(Some(e));
            }
            let snap = self.reader.snapshot();
            if snap.visible() > self.next {
                let page = snap.query_from(&self.region, self.next, PAGE)?;
                self.next = match page.last() {
                    Some(last) if page.len() == PAGE => last.sequence() + 1,
                    _ => snap.visible(),
                };
                self.buf.extend(page);
                continue;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() || !self.reader.wait_visible(self.next, left)? {
                return Ok(None);
            }
        }
    }
}

impl<'r> Iterator for Subscription<'r> {
    type Item = Result<Entry<'r>, ReadError>;

    /// Blocks until the next event (never returns `None`).
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
