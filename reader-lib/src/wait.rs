//! Waiting for new events: [`Reader::wait_visible`] sleeps on the gate's
//! futex word; [`Subscription`] catches up with paged queries, then follows.
#![forbid(unsafe_code)]

use crate::cursor::{Cursor, Origin};
use crate::entry::Entry;
use crate::error::ReadError;
use crate::map::futex_wait;
use crate::prefixes::PrefixIds;
use crate::reader::{Reader, Snapshot};
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
/// Events fetched by the first catch-up page.
const PAGE: usize = 1024;
/// Largest catch-up page: a page that came back full doubles the next one,
/// up to this. A page of a region read through its chains walks every row
/// above its start (the chains run newest first), so fixed pages made a
/// catch-up quadratic in the region's size; doubling pages walk the rest of
/// the chain O(log n + n / MAX_PAGE) times, and hold at most this many
/// entries.
const MAX_PAGE: usize = 16 * 1024;

impl Reader {
    /// Waits until `visible > seq` (the event `seq` is published) or
    /// `timeout` passes; returns whether it is published. Sleeps on the
    /// gate's futex word, which the daemon bumps after every publish and every
    /// state change; follows a daemon restart.
    ///
    /// `seq` counts in whichever store the reader is attached to when the
    /// call returns: if the store is deleted and created anew at the same
    /// path meanwhile, or restarts without an unsynced tail (see
    /// [`Resumed`]), `true` speaks of the new store's event `seq`. A caller
    /// that follows events across restarts uses a [`Subscription`], which
    /// tells these cases apart, or compares [`Status::store`](crate::Status::store).
    pub fn wait_visible(&self, seq: u64, timeout: Duration) -> Result<bool, ReadError> {
        self.wait_published(seq, timeout, None)
    }

    /// [`wait_visible`](Self::wait_visible); also returns `true` as soon as
    /// the reader's view is another daemon instance than `instance`.
    fn wait_published(
        &self,
        seq: u64,
        timeout: Duration,
        instance: Option<[u8; 16]>,
    ) -> Result<bool, ReadError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.poll_replaced();
            let view = self.view();
            if instance.is_some_and(|i| i != view.gate.header.instance) {
                return Ok(true);
            }
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

    /// Follows the events `region` selects, from sequence `from_seq` (of
    /// the store the reader is attached to now) on: first everything
    /// already visible, then new events as they are published. The
    /// iterator blocks while there is nothing new. Follows daemon restarts
    /// and a store replaced at the same path: see [`Resumed`].
    #[must_use]
    pub fn subscribe(&self, region: Region, from_seq: u64) -> Subscription<'_> {
        let view = self.view();
        self.resume(region, Cursor::at(view, from_seq, view.gate.visible()))
    }

    /// [`subscribe`](Self::subscribe) from where another subscription
    /// stood ([`Subscription::cursor`]) or from a snapshot's watermark
    /// ([`Snapshot::cursor`]): if the reader has moved to another daemon
    /// instance since, the position is carried over as [`Resumed`] says.
    /// So a subscription can be dropped (e.g. to call
    /// [`release_old_views`](Self::release_old_views)) and taken up again,
    /// in this process or, from a cursor saved with
    /// [`Cursor::to_bytes`] or serde, in another: a cursor of another
    /// daemon instance than the reader's is carried over at the first
    /// refill, as if the subscription had lived on.
    #[must_use]
    pub fn resume(&self, region: Region, cursor: Cursor) -> Subscription<'_> {
        Subscription {
            reader: self,
            region,
            next: cursor.position,
            origin: cursor.origin,
            seen: cursor.seen,
            resumed: None,
            names: PrefixIds::default(),
            failed: false,
            buf: VecDeque::new(),
            page: PAGE,
            refills: 0,
        }
    }
}

impl Snapshot<'_> {
    /// A [`Cursor`] at this snapshot's watermark, for
    /// [`Reader::resume`]: the first event published after it on.
    #[must_use]
    pub fn cursor(&self) -> Cursor {
        Cursor::at(self.view(), self.visible(), self.visible())
    }
}

/// How a [`Subscription`] went on when the reader moved to another daemon
/// instance ([`Subscription::take_resumed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resumed {
    /// The same store restarted with every sequence it had published: the
    /// subscription goes on from its position.
    Restarted,
    /// The same store restarted without the sequences from `visible` on
    /// (an unsynced tail lost in a crash under a `sync` policy other than
    /// `always`); new events get those sequences, and the subscription
    /// goes on from `visible` (it had delivered events up to `position`).
    TailLost {
        /// The first sequence given again: the lowest `visible` a daemon
        /// instance started with since the subscription's (the `starts`
        /// file), or the new instance's current `visible` if lower.
        visible: u64,
        /// The subscription's position in the old instance.
        position: u64,
    },
    /// The same store, but its `starts` file has no record of the
    /// subscription's instance and is not full enough to have dropped it:
    /// the store was put back from an older copy (a backup of the files),
    /// or its start history was lost. Where its history and the
    /// subscription's split is unknown, so the subscription goes on from
    /// `visible`, the lowest start the file shows (or the new instance's
    /// current `visible` if lower), as for [`TailLost`](Self::TailLost):
    /// events it delivered may come again.
    Restored {
        /// The first sequence delivered again.
        visible: u64,
        /// The subscription's position in the old instance.
        position: u64,
    },
    /// Another store at the same path (deleted and created anew, or a copy
    /// put in its place: another id key): its sequences count anew, and
    /// the subscription starts from sequence 0 of the new store.
    Replaced {
        /// The subscription's position in the old store.
        position: u64,
    },
}

/// A live feed of the events of a region, in sequence order. See
/// [`Reader::subscribe`].
///
/// When the reader moves to another daemon instance, the position is
/// carried over as [`Resumed`] says: from where it stood if the same store
/// restarted, from the lowest `visible` an instance started with since if
/// that is lower than both the position and the old instance's `visible`
/// when the subscription last looked (a lost unsynced tail: a position
/// past what the old instance had published lost nothing; the same, as
/// [`Resumed::Restored`], if the `starts` file has no record of the old
/// instance: a store put back from an older copy), from 0 if the store was
/// replaced. Stores are told apart by their
/// id key ([`Status::store`](crate::Status::store)); a gate of a build
/// before 2026-11-28 has none, and is taken for the same store.
#[derive(Debug)]
pub struct Subscription<'r> {
    reader: &'r Reader,
    region: Region,
    next: u64,
    /// The instance `next` counts in (that of the last refill).
    origin: Origin,
    /// Its `visible` at the last refill (or when the subscription began):
    /// every event delivered from it lies below. A position past it was
    /// never published by that instance, so no crash can have lost it.
    seen: u64,
    resumed: Option<Resumed>,
    /// The entity ids of an entity-prefix region, kept from refill to refill.
    names: PrefixIds<'r>,
    /// The iterator yielded an error and has ended.
    failed: bool,
    buf: VecDeque<Entry<'r>>,
    /// Events the next refill asks for: [`PAGE`], doubled while pages come
    /// back full, up to [`MAX_PAGE`].
    page: usize,
    /// Refills that queried the store (for tests).
    refills: u64,
}

impl<'r> Subscription<'r> {
    /// The next sequence this subscription will consider (in the store of
    /// the events it delivered last).
    #[must_use]
    pub fn position(&self) -> u64 {
        self.buf.front().map_or(self.next, Entry::sequence)
    }

    /// The position and the store it counts in, to take the subscription
    /// up again with [`Reader::resume`].
    #[must_use]
    pub fn cursor(&self) -> Cursor {
        Cursor {
            position: self.position(),
            origin: self.origin,
            seen: self.seen,
        }
    }

    /// How the subscription went on the last time the reader moved to
    /// another daemon instance, if it has since the previous call. Events
    /// buffered before the move are delivered first, so this is `Some`
    /// when the first event of the new instance is (or would be) next.
    pub fn take_resumed(&mut self) -> Option<Resumed> {
        self.resumed.take()
    }

    /// Entity names read to resolve an entity-prefix region, over the
    /// subscription's life: each refill reads only the names added since the
    /// previous one (and all of them again after a move to another daemon
    /// instance). For tests.
    #[doc(hidden)]
    #[must_use]
    pub fn names_read(&self) -> u64 {
        self.names.names_read
    }

    /// Entity heads its refills read to plan an entity-prefix region (one
    /// per matching entity, when they weigh its chains). For tests.
    #[doc(hidden)]
    #[must_use]
    pub fn heads_read(&self) -> u64 {
        self.names.heads_read
    }

    /// Pages read from the store so far (each a query over the region from
    /// the position on). For tests.
    #[doc(hidden)]
    #[must_use]
    pub fn refills(&self) -> u64 {
        self.refills
    }

    /// Carries the position over to the instance `to`, whose `visible` is
    /// `visible` (the buffer is empty). The lowest sequence given again is
    /// the lowest `visible` an instance started with since the one the
    /// position counts in (the `starts` file; the new `visible` if that is
    /// lower or the file cannot be read): the new instance may have appended
    /// past the position by now. Only sequences the old instance had
    /// published when the subscription last looked (`seen`) can have been
    /// lost: a position past them (a subscription started ahead) goes on.
    fn switch(&mut self, to: Origin, visible: u64) {
        let position = self.next;
        let since = u128::from_le_bytes(self.origin.instance);
        let starts = starts_since(self.reader.data_dir(), since);
        let lowest = starts
            .and_then(|s| s.lowest)
            .map_or(visible, |s| s.min(visible));
        let resumed = match (self.origin.store, to.store) {
            (Some(a), Some(b)) if a != b => {
                self.next = 0;
                Resumed::Replaced { position }
            }
            _ if lowest < position.min(self.seen) => {
                self.next = lowest;
                if starts.is_some_and(|s| s.unlisted) {
                    Resumed::Restored {
                        visible: lowest,
                        position,
                    }
                } else {
                    Resumed::TailLost {
                        visible: lowest,
                        position,
                    }
                }
            }
            _ => Resumed::Restarted,
        };
        self.origin = to;
        self.seen = visible;
        self.resumed = Some(resumed);
    }

    /// The next event, waiting at most `timeout` for one; `Ok(None)` on timeout.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Entry<'r>>, ReadError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Ok(Some(e));
            }
            let snap = self.reader.snapshot();
            let at = Cursor::at(snap.view(), 0, 0).origin;
            if at != self.origin {
                self.switch(at, snap.visible());
            }
            let left = || match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if snap.visible() > self.next {
                let limit = self.page;
                let page =
                    snap.query_from_with(&self.region, self.next, limit, Some(&mut self.names))?;
                self.refills += 1;
                self.seen = snap.visible();
                (self.next, self.page) = match page.last() {
                    Some(last) if page.len() == limit => {
                        (last.sequence() + 1, (limit * 2).min(MAX_PAGE))
                    }
                    _ => (snap.visible(), PAGE),
                };
                self.buf.extend(page);
                // Events outside the region may keep arriving faster than
                // refills: the deadline holds all the same.
                if self.buf.is_empty() && left().is_zero() {
                    return Ok(None);
                }
                continue;
            }
            let left = left();
            let instance = Some(self.origin.instance);
            if left.is_zero() || !self.reader.wait_published(self.next, left, instance)? {
                return Ok(None);
            }
        }
    }
}

impl<'r> Iterator for Subscription<'r> {
    type Item = Result<Entry<'r>, ReadError>;

    /// Blocks until the next event. A read error is yielded once, and then
    /// the iteration ends (`None`): the error would only come again, and a
    /// loop that skips errors would spin. [`next_timeout`](Subscription::next_timeout)
    /// still tries again, from the same position.
    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// What the `starts` file of the store at `dir` says of the starts after
/// `instance`.
#[derive(Debug, Clone, Copy)]
struct StartsSince {
    /// The lowest `visible` an instance started with after `instance`
    /// (`weir_protocol::starts::lowest_since`), `None` if no later start.
    lowest: Option<u64>,
    /// `instance` has no record, and the file holds fewer than it keeps
    /// (`STARTS_KEPT`), so none was dropped: the file's history is not the
    /// one `instance` belongs to (restored from an older copy, or lost).
    unlisted: bool,
}

/// [`StartsSince`] from `dir/starts`; `None` if the file is missing,
/// unreadable or damaged.
fn starts_since(dir: &std::path::Path, instance: u128) -> Option<StartsSince> {
    use weir_protocol::starts::{STARTS_KEPT, decode, lowest_after, lowest_since};
    let bytes = std::fs::read(dir.join("starts")).ok()?;
    let starts = decode(&bytes).ok()?.starts;
    Some(StartsSince {
        lowest: lowest_since(&starts, instance),
        unlisted: lowest_after(&starts, instance).is_none() && starts.len() < STARTS_KEPT,
    })
}

#[cfg(test)]
mod tests {
    use super::starts_since;
    use weir_protocol::locate::{IdKey, IdMask};
    use weir_protocol::starts::{STARTS_KEPT, Start, encode};

    #[test]
    fn an_instance_is_unlisted_only_when_no_record_was_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = IdKey::from_bytes([7; 16])
            .expect("key")
            .with_mask(IdMask::SipHash);
        let write = |n: u128| {
            let starts: Vec<_> = (1..=n)
                .map(|i| Start {
                    instance: i,
                    visible: 10 + i as u64,
                })
                .collect();
            std::fs::write(dir.path().join("starts"), encode(key, &starts)).expect("write");
        };
        write(3);
        let listed = starts_since(dir.path(), 2).expect("read");
        assert_eq!((listed.lowest, listed.unlisted), (Some(13), false));
        let missing = starts_since(dir.path(), 99).expect("read");
        assert_eq!((missing.lowest, missing.unlisted), (Some(11), true));
        // A full file may have dropped the instance: not evidence of a copy.
        write(STARTS_KEPT as u128);
        let dropped = starts_since(dir.path(), 1 << 64).expect("read");
        assert_eq!((dropped.lowest, dropped.unlisted), (Some(11), false));
        std::fs::remove_file(dir.path().join("starts")).expect("remove");
        assert!(starts_since(dir.path(), 2).is_none());
    }
}
