//! [`Reader::verify_chain`]: recomputes an entity's hash chain from its frames.
//!
//! The chain is walked newest first down the rows' `prev entity` links, one
//! event at a time: each event's hash is checked when it is read, and its
//! links (`prev_hash`, clock) once the event before it has been read. Memory
//! stays constant whatever the entity's length (collecting the stream took
//! about 170 bytes per event).
#![forbid(unsafe_code)]

use crate::entry::Entry;
use crate::error::ReadError;
use crate::query::{self, Key, Walk};
use crate::reader::{Reader, Snapshot};
use crate::scan::{CellFilter, EntitySel};
use weir_protocol::KindFilter;
use weir_protocol::hash::event_hash;
use weir_protocol::index::NS_ENTITY;

/// What `verify_chain` found.
#[derive(Debug)]
#[non_exhaustive]
pub struct ChainReport {
    /// Events checked before the first break (all of them if none).
    pub verified: u64,
    /// The first event whose frame does not check out, if any.
    pub first_bad: Option<ChainBreak>,
}

/// The first bad event of a chain.
#[derive(Debug)]
#[non_exhaustive]
pub struct ChainBreak {
    /// Its global sequence.
    pub sequence: u64,
    /// What is wrong.
    pub problem: BreakKind,
}

/// How a chain is broken.
#[derive(Debug)]
#[non_exhaustive]
pub enum BreakKind {
    /// The frame cannot be read or fails its CRC.
    Frame(ReadError),
    /// The frame names another entity.
    Entity,
    /// The recomputed hash differs from the stored `event_hash`.
    Hash,
    /// `prev_hash` is not the predecessor's `event_hash` (zeros for the first event).
    Link,
    /// The clock is not the predecessor's clock + 1 (0 for the first event):
    /// the chain skips events, or two events share a clock (a fork).
    Clock,
}

impl Reader {
    /// Recomputes each visible event of `entity`: its `event_hash` from the
    /// frame, that `prev_hash` equals the previous event's `event_hash`, and
    /// that its clock is the previous event's + 1 (0 for the first).
    /// Reports the oldest bad sequence, and the events before it. The events
    /// are those the entity's chain reaches from its head: a head that names
    /// an older event hides the newer ones (`weir verify` compares the count
    /// with the index rows). Memory does not grow with the entity.
    pub fn verify_chain(&self, entity: &str) -> Result<ChainReport, ReadError> {
        self.snapshot().verify_chain(entity)
    }
}

impl Snapshot<'_> {
    /// [`Reader::verify_chain`] on this snapshot's watermark.
    pub fn verify_chain(&self, entity: &str) -> Result<ChainReport, ReadError> {
        self.usable()?;
        let (view, wm) = (self.view(), self.watermark());
        let Some(name) = view.lookup(NS_ENTITY, entity.as_bytes())? else {
            return Ok(ChainReport {
                verified: 0,
                first_bad: None,
            });
        };
        let (head, _) = name.head();
        // Entries only to read and check frames: the scope name is not used.
        let entry = |row| Entry::with_names(view, row, entity, "");
        let mut down = NewestFirst::default();
        if query::walk(view, wm, Key::Entity(name.id), head, 0, |row| {
            down.visit(&entry(row), entity);
            Ok(true)
        })? == Walk::Done
        {
            return Ok(down.finish());
        }
        // A stale link past `visible`: the rows by a column scan, oldest
        // first, as `stream` falls back.
        let filter = CellFilter {
            kind: KindFilter::Any,
            scope: None,
            entity: EntitySel::One(name.id),
            clock: None,
        };
        let mut up = OldestFirst::default();
        query::scan(
            view,
            wm,
            &filter,
            0,
            |row| Ok(up.visit(&entry(row), entity)),
        )?;
        Ok(up.finish())
    }
}

/// What an event's own frame gives its neighbours (`prev_hash`,
/// `event_hash`, clock), or why it is bad by itself.
type Own = Result<([u8; 32], [u8; 32], u32), BreakKind>;

fn own(e: &Entry<'_>, entity: &str) -> Own {
    let f = e.frame().map_err(BreakKind::Frame)?;
    if f.entity != entity.as_bytes() {
        return Err(BreakKind::Entity);
    }
    let h = &f.header;
    if event_hash(&f.hash_input()) != h.event_hash {
        return Err(BreakKind::Hash);
    }
    Ok((h.prev_hash, h.event_hash, h.clock.get()))
}

/// Does an event (its `prev_hash` and clock) continue `before`, the
/// `event_hash` and clock of the entity's event before it (`None`: it is
/// the first)?
fn link(prev_hash: &[u8; 32], clock: u32, before: Option<([u8; 32], u32)>) -> Option<BreakKind> {
    let (hash, next) = before.map_or(([0; 32], Some(0)), |(h, c)| (h, c.checked_add(1)));
    if *prev_hash != hash {
        Some(BreakKind::Link)
    } else if next != Some(clock) {
        Some(BreakKind::Clock)
    } else {
        None
    }
}

/// The newest-first check: an event's links are settled once the event
/// before it is read, and each break found is older than the last.
#[derive(Default)]
struct NewestFirst {
    /// Events read.
    seen: u64,
    /// The last event read (its sequence, its place counted from the
    /// newest, its own check), waiting for the one before it.
    newer: Option<(u64, u64, Own)>,
    /// The oldest break so far, with its place counted from the newest.
    oldest_bad: Option<(u64, ChainBreak)>,
}

impl NewestFirst {
    fn visit(&mut self, e: &Entry<'_>, entity: &str) {
        let checked = own(e, entity);
        let before = match &checked {
            Ok((_, hash, clock)) => Some(Some((*hash, *clock))),
            // Itself the older break: the newer event's links do not count.
            Err(_) => None,
        };
        self.settle(before);
        self.newer = Some((e.sequence(), self.seen, checked));
        self.seen += 1;
    }

    /// Settles the waiting event against the one before it (`None`: that
    /// one is bad itself; `Some(None)`: there is none).
    fn settle(&mut self, before: Option<Option<([u8; 32], u32)>>) {
        let Some((sequence, place, checked)) = self.newer.take() else {
            return;
        };
        let problem = match (checked, before) {
            (Err(kind), _) => Some(kind),
            (Ok(_), None) => None,
            (Ok((prev_hash, _, clock)), Some(before)) => link(&prev_hash, clock, before),
        };
        if let Some(problem) = problem {
            self.oldest_bad = Some((place, ChainBreak { sequence, problem }));
        }
    }

    fn finish(mut self) -> ChainReport {
        self.settle(Some(None));
        match self.oldest_bad {
            Some((place, b)) => ChainReport {
                verified: self.seen - 1 - place,
                first_bad: Some(b),
            },
            None => ChainReport {
                verified: self.seen,
                first_bad: None,
            },
        }
    }
}

/// The oldest-first check, which stops at the first break.
#[derive(Default)]
struct OldestFirst {
    verified: u64,
    before: Option<([u8; 32], u32)>,
    first_bad: Option<ChainBreak>,
}

impl OldestFirst {
    /// Checks the next event; `false` once the chain is broken.
    fn visit(&mut self, e: &Entry<'_>, entity: &str) -> bool {
        let problem = match own(e, entity) {
            Err(kind) => Some(kind),
            Ok((prev_hash, hash, clock)) => {
                let p = link(&prev_hash, clock, self.before);
                self.before = Some((hash, clock));
                p
            }
        };
        if let Some(problem) = problem {
            self.first_bad = Some(ChainBreak {
                sequence: e.sequence(),
                problem,
            });
            return false;
        }
        self.verified += 1;
        true
    }

    fn finish(self) -> ChainReport {
        ChainReport {
            verified: self.verified,
            first_bad: self.first_bad,
        }
    }
}
