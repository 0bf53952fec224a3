//! One connection's requests after the hello: permission checks, the
//! transaction staged in the server, and hand-off to the writer.
//!
//! A transaction lives only in this connection's memory: `Begin` opens it,
//! appends are validated and staged (answered `Staged`), `Commit` submits
//! everything staged as one all-or-nothing batch, `Cancel` or a dropped
//! connection discards it. Nothing staged reaches the writer before
//! `Commit`, so nothing of an unfinished transaction can become visible.

use super::Hub;
use super::auth::Peer;
use super::replies::{Outcome, ReplyQueue};
use crate::budget::{Hold, Share, StagedHold};
use crate::error::AppendError;
use crate::fxhash::{FxHashMap, FxHashSet};
use crate::writer::event_bytes;
use std::sync::Arc;
use weir_protocol::wire::{AppendRequest, ErrorCode, Op, Reply, Request, WireError};

/// The wait a stage refused for want of `max-staged-bytes` is told to take.
const STAGING_RETRY_MS: u64 = 100;

/// Events staged since `Begin`.
#[derive(Debug, Default)]
struct Staged {
    events: Vec<AppendRequest>,
    bytes: u64,
    /// The idempotency keys staged: one the commit's batch would give two
    /// events is refused when staged, not at commit.
    keys: FxHashSet<u128>,
    /// The client-chosen event ids staged, with their events' positions.
    ids: FxHashMap<u128, usize>,
    /// `bytes`, held against `max-staged-bytes` until this is dropped
    /// (commit, cancel, the connection's end).
    hold: Option<StagedHold>,
}

/// Per-connection request state.
pub(super) struct Session<'h> {
    hub: &'h Hub,
    peer: Peer,
    may_append: bool,
    txn: Option<Staged>,
    /// The connection's bytes held against the daemon's budget.
    share: Share,
}

impl<'h> Session<'h> {
    pub(super) fn new(hub: &'h Hub, peer: Peer, share: Share) -> Self {
        Self {
            hub,
            may_append: hub.policy.may_append(&peer),
            peer,
            txn: None,
            share,
        }
    }

    fn reject(&self, e: WireError) -> Outcome {
        self.hub
            .store
            .shared()
            .reject_code(&format!("{:?}", e.code));
        Err(e)
    }

    fn denied(&self) -> Outcome {
        self.reject(
            WireError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "uid {} / gid {} may not append; add it to allow-uids or allow-gids in the daemon's configuration",
                    self.peer.uid, self.peer.gid
                ),
            )
            .with("uid", self.peer.uid)
            .with("gid", self.peer.gid),
        )
    }

    fn txn_state(&self, msg: &str) -> Outcome {
        self.reject(WireError::new(ErrorCode::TransactionState, msg))
    }

    /// Handles one request, `hold` on its frame's bytes; false when the
    /// connection should close. The hold goes to the writer with an
    /// append, and is given back here for anything else.
    pub(super) fn handle(&mut self, req: Request, hold: Hold, q: &Arc<ReplyQueue>) -> bool {
        let id = req.id;
        let ready = |result: Outcome| q.push_ready(id, result);
        match req.op {
            Op::Ping => ready(Ok(Reply::Pong)),
            Op::Stats => ready(Ok(Reply::Stats(Box::new(self.hub.store.stats())))),
            Op::Begin if self.txn.is_some() => {
                ready(self.txn_state("a transaction is already open on this connection"))
            }
            Op::Begin => {
                self.txn = Some(Staged {
                    hold: Some(self.hub.staging.hold()),
                    ..Staged::default()
                });
                ready(Ok(Reply::Begun))
            }
            Op::Cancel => match self.txn.take() {
                Some(t) => {
                    let dropped = t.events.len() as u32;
                    // Its staged bytes are given back before the reply.
                    drop(t);
                    ready(Ok(Reply::Cancelled { dropped }))
                }
                None => ready(self.txn_state("cancel without an open transaction")),
            },
            Op::Append(_) | Op::AppendBatch(_) | Op::Commit if !self.may_append => {
                ready(self.denied())
            }
            Op::Append(e) if self.txn.is_some() => ready(self.stage(vec![e])),
            Op::AppendBatch(v) if self.txn.is_some() => ready(self.stage(v)),
            Op::Append(e) => self.submit(id, vec![e], true, q, hold).0,
            Op::AppendBatch(v) => self.submit(id, v, false, q, hold).0,
            Op::Commit => match self.txn.take() {
                None => ready(self.txn_state("commit without an open transaction")),
                Some(t) if t.events.is_empty() => ready(Ok(Reply::Batch(Vec::new()))),
                Some(t) => {
                    // Given back first: the commit's own bytes must not
                    // keep the connection's share from taking the batch's.
                    drop(hold);
                    self.commit(id, t, q)
                }
            },
            Op::Sync => self.sync(id, q),
        }
    }

    /// Answers a batch the decoder refused at its header for announcing
    /// `events` (more than max-batch-events): the same error the store
    /// gives, with the frame's length for `bytes` (its events were never
    /// decoded to count theirs).
    pub(super) fn refuse_batch(
        &self,
        id: u64,
        events: usize,
        frame_bytes: usize,
        q: &Arc<ReplyQueue>,
    ) -> bool {
        if !self.may_append {
            return q.push_ready(id, self.denied());
        }
        let c = self.hub.store.config();
        let e = AppendError::BatchTooLarge {
            events,
            bytes: frame_bytes as u64,
            max_events: c.max_batch_events,
            max_bytes: c.max_batch_bytes,
        };
        q.push_ready(id, self.reject(e.to_wire()))
    }

    /// Validates and stages events inside the open transaction. A refused
    /// event is not staged; the transaction stays open.
    fn stage(&mut self, events: Vec<AppendRequest>) -> Outcome {
        let c = self.hub.store.config();
        let Some(t) = self.txn.as_ref() else {
            return self.txn_state("no open transaction");
        };
        if events.is_empty() {
            return self.reject(AppendError::EmptyBatch.to_wire());
        }
        // Each event's own limits before the transaction's totals, as in
        // `writer::validate`.
        for (i, e) in events.iter().enumerate() {
            if let Err(err) = crate::writer::check_event(t.events.len() + i, e, c.max_payload_bytes)
            {
                return self.reject(err.to_wire());
            }
        }
        let count = t.events.len() + events.len();
        let bytes = t.bytes + events.iter().map(event_bytes).sum::<u64>();
        if count > c.max_batch_events as usize || bytes > c.max_batch_bytes {
            return self.reject(
                AppendError::BatchTooLarge {
                    events: count,
                    bytes,
                    max_events: c.max_batch_events,
                    max_bytes: c.max_batch_bytes,
                }
                .to_wire(),
            );
        }
        // The keys and ids of this request, checked against those staged
        // before and against each other.
        let mut keys = FxHashSet::default();
        let mut ids = FxHashMap::default();
        for (i, e) in events.iter().enumerate() {
            let index = t.events.len() + i;
            if let Some(key) = e.idempotency_key
                && (t.keys.contains(&key) || !keys.insert(key))
            {
                return self.reject(AppendError::IdempotencyConflict { key }.to_wire());
            }
            if let Some(id) = e.event_id {
                if let Some(&earlier) = t.ids.get(&id).or_else(|| ids.get(&id)) {
                    let err = AppendError::DuplicateEventId {
                        index,
                        id: weir_protocol::EventId(id).to_string(),
                        earlier: Some(earlier),
                    };
                    return self.reject(err.to_wire());
                }
                ids.insert(id, index);
            }
        }
        let t = self.txn.as_mut().expect("checked above");
        let more = bytes - t.bytes;
        if !t.hold.as_mut().is_some_and(|h| h.grow(more)) {
            return self.staging_full(more);
        }
        t.events.extend(events);
        t.bytes = bytes;
        t.keys.extend(keys);
        t.ids.extend(ids);
        Ok(Reply::Staged {
            staged: t.events.len() as u32,
        })
    }

    /// Refuses a stage past `max-staged-bytes`: retryable, as every client
    /// retries `Busy`; not waited for, since staged bytes come back only
    /// when transactions end.
    fn staging_full(&self, more: u64) -> Outcome {
        let staging = &self.hub.staging;
        self.reject(
            WireError::new(
                ErrorCode::Busy,
                format!(
                    "the daemon holds {} bytes of open transactions and max-staged-bytes = {} \
                     leaves no room for {more} more; nothing of this request was staged, the \
                     transaction stays open: retry later, or commit or cancel transactions",
                    staging.used(),
                    staging.cap()
                ),
            )
            .with("staged_bytes", staging.used())
            .with("max_staged_bytes", staging.cap())
            .with("retry_after_ms", STAGING_RETRY_MS),
        )
    }

    /// Submits what is staged as one batch. A refusal that invites a retry
    /// (too many in flight, writer queue full, stopping) leaves the
    /// transaction open with everything staged: the retried `Commit` finds
    /// it, and appends pipelined behind the refused one are still staged,
    /// not written on their own.
    fn commit(&mut self, id: u64, mut t: Staged, q: &Arc<ReplyQueue>) -> bool {
        // The batch takes its bytes from the budget like any append (it may
        // wait); a daemon that stops refuses it, keeping the transaction.
        let Some(hold) = self.hub.budget.admit(&self.share, t.bytes) else {
            let open = q.push_ready(id, self.reject(AppendError::ShuttingDown.to_wire()));
            self.txn = Some(t);
            return open;
        };
        let events = std::mem::take(&mut t.events);
        let (open, back) = self.submit(id, events, false, q, hold);
        if let Some((code, events)) = back
            && matches!(
                code,
                ErrorCode::TooManyInFlight | ErrorCode::Busy | ErrorCode::ShuttingDown
            )
        {
            t.events = events;
            self.txn = Some(t);
        }
        open
    }

    /// Hands events to the writer; the reply waits in order. Returns false
    /// when the connection should close, and the events with the error's
    /// code when they were refused before reaching the writer.
    fn submit(
        &self,
        id: u64,
        events: Vec<AppendRequest>,
        single: bool,
        q: &Arc<ReplyQueue>,
        hold: Hold,
    ) -> (bool, Option<(ErrorCode, Vec<AppendRequest>)>) {
        if q.outstanding() >= self.hub.max_in_flight {
            let e = WireError::new(
                ErrorCode::TooManyInFlight,
                format!(
                    "more than {} requests in flight on this connection; wait for replies before sending more",
                    self.hub.max_in_flight
                ),
            )
            .with("max_in_flight", self.hub.max_in_flight)
            .with("retry_after_ms", 1);
            let result = self.reject(e);
            let open = q.push_ready(id, result);
            return (open, Some((ErrorCode::TooManyInFlight, events)));
        }
        // The slot is reserved first, so that the writer can complete it
        // as soon as it has the answer.
        let Some(slot) = q.reserve(id) else {
            return (false, None);
        };
        let done: crate::writer::Done = Box::new(move |r: Result<Vec<_>, AppendError>| {
            let out = match r {
                Ok(v) if single => v.into_iter().next().map(Reply::Appended).ok_or_else(|| {
                    WireError::new(ErrorCode::Internal, "the writer returned no receipt")
                }),
                Ok(v) => Ok(Reply::Batch(v)),
                Err(e) => Err(e.to_wire()),
            };
            slot.complete(out);
        });
        match self.hub.store.submit_held(events, done, Some(hold)) {
            Ok(()) => (true, None),
            Err(r) => {
                let code = r.error.code();
                (r.done)(Err(r.error));
                (true, Some((code, r.events)))
            }
        }
    }

    /// `Sync` is queued behind the appends before it; the writer answers
    /// the reserved slot once they are durable.
    fn sync(&self, id: u64, q: &Arc<ReplyQueue>) -> bool {
        let Some(slot) = q.reserve(id) else {
            return false;
        };
        let done: crate::writer::SyncDone = Box::new(move |r: Result<u64, AppendError>| {
            slot.complete(
                r.map(|visible| Reply::Synced { visible })
                    .map_err(|e| e.to_wire()),
            );
        });
        if let Err((e, done)) = self.hub.store.submit_sync(done) {
            done(Err(e));
        }
        true
    }
}
