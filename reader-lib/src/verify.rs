//! [`Reader::verify_chain`]: recomputes an entity's hash chain from its frames.
#![forbid(unsafe_code)]

use crate::error::ReadError;
use crate::reader::{Reader, Snapshot};
use weir_protocol::hash::event_hash;

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
    /// Recomputes each visible event of `entity`, oldest first: its
    /// `event_hash` from the frame, that `prev_hash` equals the previous
    /// event's `event_hash`, and that its clock is the previous event's + 1
    /// (0 for the first). Reports the first bad sequence. The events are
    /// those the entity's chain reaches from its head: a head that names an
    /// older event hides the newer ones (`weir verify` compares the count
    /// with the index rows).
    pub fn verify_chain(&self, entity: &str) -> Result<ChainReport, ReadError> {
        self.snapshot().verify_chain(entity)
    }
}

impl Snapshot<'_> {
    /// [`Reader::verify_chain`] on this snapshot's watermark.
    pub fn verify_chain(&self, entity: &str) -> Result<ChainReport, ReadError> {
        let mut prev = [0u8; 32];
        let mut clock = Some(0u32);
        let mut verified = 0;
        for e in self.stream(entity)? {
            let sequence = e.sequence();
            let bad = |problem| {
                Ok(ChainReport {
                    verified,
                    first_bad: Some(ChainBreak { sequence, problem }),
                })
            };
            let f = match e.frame() {
                Ok(f) => f,
                Err(err) => return bad(BreakKind::Frame(err)),
            };
            if f.entity != entity.as_bytes() {
                return bad(BreakKind::Entity);
            }
            let h = &f.header;
            let computed = event_hash(&f.hash_input());
            if computed != h.event_hash {
                return bad(BreakKind::Hash);
            }
            if h.prev_hash != prev {
                return bad(BreakKind::Link);
            }
            if clock != Some(h.clock.get()) {
                return bad(BreakKind::Clock);
            }
            prev = h.event_hash;
            clock = h.clock.get().checked_add(1);
            verified += 1;
        }
        Ok(ChainReport {
            verified,
            first_bad: None,
        })
    }
}
