//! One group commit: stage each command (validate, sequence, chain, encode),
//! write the frames, sync once, index, publish, reply. Entity chain heads
//! are updated in place as events are staged; an undo log takes them back
//! when a command or the whole group fails.
//!
//! A group never spans segments: a command that does not fit in the current
//! segment ends the group, and the next group starts with the rotation. So
//! a CANCEL frame always lands in the segment of the frames it cancels, and
//! recovery, which reads segments in order, sees it before it could index
//! them.

use super::{Done, Queued, Writer};
use crate::budget::Hold;
use crate::config::SyncPolicy;
use crate::error::AppendError;
use crate::fxhash::{FxHashMap, FxHashSet};
use crate::index::IndexedEvent;
use crate::segments::RotateError;
use crate::state::EntityState;
use std::time::Duration;
use weir_protocol::hash::{EventHasher, HashInput};
use weir_protocol::index::NO_NAME;
use weir_protocol::segment::{EventFrame, encode_cancel, encode_event, frame_len};
use weir_protocol::wire::{AppendRequest, Receipt};
use weir_protocol::{EventId, ExpectedVersion};

/// One event that got a sequence in this group.
struct Pending {
    cmd: usize,
    event: usize,
    receipt: Receipt,
    correlation_id: u128,
    wall_ms: u64,
    /// Which flush of the group buffer carries the frame.
    flush: usize,
    /// Offset of the frame in that buffer.
    offset: u64,
    len: u32,
    batch_end: bool,
    /// The entity's string id, `NO_NAME` while not yet indexed.
    entity_id: u32,
}

pub(super) struct Staged {
    pub(super) events: Vec<AppendRequest>,
    done: Done,
    /// Dropped with the events (see `budget`).
    hold: Hold,
    /// `Some` for a replay of known idempotency keys: nothing is written.
    replay: Option<Vec<Receipt>>,
    /// The replay answers from keys staged earlier in this same group, so
    /// it succeeds or fails with the group.
    replay_in_group: bool,
}

impl Staged {
    /// A command to write (not a replay).
    fn new((events, done, hold): Queued) -> Self {
        Self {
            events,
            done,
            hold,
            replay: None,
            replay_in_group: false,
        }
    }
}

/// Where one flush of the group buffer landed.
struct Flush {
    seg: u64,
    at: u64,
}

/// The previous chain head of an entity an event touched: (command, event, head).
type Undo = (usize, usize, Option<EntityState>);

/// One group's working state. The writer keeps the last group's
/// allocations for the next one ([`Writer::recycle`]).
#[derive(Default)]
pub(crate) struct Group {
    pub(super) staged: Vec<Staged>,
    pending: Vec<Pending>,
    undo: Vec<Undo>,
    /// Keys staged in this group: the receipt and where the event is
    /// (command, event).
    pub(super) keys: FxHashMap<u128, (Receipt, usize, usize)>,
    ids: FxHashSet<u128>,
    buf: Vec<u8>,
    frames: Vec<(u32, u32)>,
    buf_first: u64,
    /// The log position where the group's first frame goes.
    start: (u64, u64),
    flushes: Vec<Flush>,
    failure: Option<String>,
    /// The group stopped before any of its sequences was allocated, on an
    /// error that clears by itself (a file that could not be opened for
    /// want of descriptors or memory): every command is refused with this,
    /// and the writer goes on.
    retry: Option<AppendError>,
    hasher: EventHasher,
}

/// One event's place in its entity's chain, worked out before its hash.
#[derive(Clone, Copy, Default)]
struct Link {
    /// The entity's head before the event.
    state: Option<EntityState>,
    clock: u32,
    prev_hash: [u8; 32],
    event_id: u128,
    correlation_id: u128,
}

fn conflict(index: usize, e: &AppendRequest, state: Option<EntityState>) -> AppendError {
    AppendError::VersionConflict {
        index,
        entity: e.entity.clone(),
        expected: match e.expected {
            ExpectedVersion::NoStream => "none".into(),
            ExpectedVersion::Exact(n) => n.to_string(),
            ExpectedVersion::Any => "any".into(),
        },
        found: state.map_or("none".into(), |s| s.clock.to_string()),
    }
}

impl Writer {
    pub(super) fn process(&mut self, mut cmds: Vec<Queued>) {
        while !cmds.is_empty() {
            cmds = self.process_group(cmds);
        }
    }

    /// Commits one group; returns the commands that belong to the next one.
    fn process_group(&mut self, cmds: Vec<Queued>) -> Vec<Queued> {
        if let Some(cause) = &self.poisoned {
            for (_, done, _) in cmds {
                let e = AppendError::Poisoned {
                    cause: cause.clone(),
                };
                self.shared.rejected(&e);
                done(Err(e));
            }
            return Vec::new();
        }
        let group_first = self.next_seq;
        // Sized once for the whole group: growing these maps event by event
        // rehashed them several times per group. One pass over the events:
        // (events, with keys, with ids, frame bytes).
        let (events, keyed, named, frame_bytes) =
            cmds.iter()
                .flat_map(|(evs, _, _)| evs)
                .fold((0, 0, 0, 0), |(n, k, i, b), e| {
                    (
                        n + 1,
                        k + usize::from(e.idempotency_key.is_some()),
                        i + usize::from(e.event_id.is_some()),
                        b + frame_len(e.entity.len(), e.scope.len(), e.payload.len()),
                    )
                });
        let mut g = std::mem::take(&mut self.spare);
        g.buf_first = group_first;
        let pos = self.log.position();
        g.start = (pos.segment_id, pos.offset);
        // The whole group is encoded before it is written; past the cap the
        // buffer grows as needed.
        g.buf.reserve(frame_bytes.min(16 << 20));
        g.pending.reserve(events);
        g.undo.reserve(events);
        g.keys.reserve(keyed);
        g.ids.reserve(named);
        let mut rest = Vec::new();
        let mut cmds = cmds.into_iter();
        for cmd in cmds.by_ref() {
            if let Some(deferred) = self.stage(&mut g, cmd) {
                rest.push(deferred);
                break;
            }
            if g.failure.is_some() || g.retry.is_some() {
                break;
            }
        }
        rest.extend(cmds);
        if g.failure.is_some() || g.retry.is_some() {
            // Whatever was not staged is refused with the group's error (a
            // retry's too: one attempt per group, the rest would fail the
            // same way).
            g.staged.extend(rest.drain(..).map(Staged::new));
        }
        if let Some(err) = g.retry.take() {
            self.retry_later(g, &err);
            return Vec::new();
        }
        if g.failure.is_none()
            && self.claims.dirty()
            && let Err(e) = self.settle_claims()
        {
            // Written before the frames: no start may lose a claim whose
            // event survived.
            g.failure = Some(format!("could not write claimed-ids: {e}"));
        }
        if g.failure.is_none()
            && let Err(e) = self.flush(&mut g, self.next_seq)
        {
            g.failure = Some(format!("write failed: {e}"));
        }
        if let Some(cause) = g.failure.take() {
            self.fail_group(group_first, cause, g);
            return rest;
        }
        let fresh = g.pending.len() as u64;
        self.unsynced_events += fresh;
        let must_sync = match self.config.sync {
            SyncPolicy::Always => true,
            SyncPolicy::EveryNEvents => {
                self.unsynced_events >= u64::from(self.config.sync_every_n_events)
            }
            SyncPolicy::IntervalMs => {
                self.last_sync.elapsed()
                    >= Duration::from_millis(self.config.sync_interval_ms.into())
            }
            SyncPolicy::Never => false,
        };
        if must_sync
            && fresh > 0
            && let Err(e) = self.sync_now()
        {
            // Not durable, not published: cancel the group's sequences
            // durably if the disk still lets us, and tell every client.
            self.fail_group(group_first, e.to_string(), g);
            return rest;
        }
        let durable = !self.log.has_unsynced();
        if durable {
            self.durable_seq = self.next_seq;
        }
        if let Err(e) = self.index_pending(&g) {
            // The frames are durable but cannot be published: a restart
            // rebuilds the index and publishes them.
            let cause = format!("index write failed: {e}");
            self.poison(cause.clone());
            for s in g.staged {
                let e = AppendError::OutcomeUnknown {
                    cause: cause.clone(),
                };
                self.shared.rejected(&e);
                (s.done)(Err(e));
            }
            return rest;
        }
        self.gate
            .publish_visible(self.next_seq, self.log.position());
        self.index.seal_through(self.next_seq);
        let mut receipts: Vec<Vec<Receipt>> = g
            .staged
            .iter()
            .map(|s| Vec::with_capacity(s.events.len()))
            .collect();
        let mut bytes = 0u64;
        for p in &g.pending {
            let r = Receipt {
                durable,
                ..p.receipt
            };
            let e = &g.staged[p.cmd].events[p.event];
            if let Some(k) = e.idempotency_key {
                self.idem.insert(k, r);
            }
            bytes += super::event_bytes(e);
            receipts[p.cmd].push(r);
        }
        self.shared.committed(fresh, bytes, self.next_seq);
        let mut spent = Vec::with_capacity(g.staged.len());
        for (s, r) in g.staged.drain(..).zip(receipts) {
            // The events go first, then their hold (a tuple drops in order).
            spent.push((s.events, s.hold));
            let answer = match s.replay {
                // A replay says whether its event is durable now, not when
                // it was first stored (a sync may have come in between);
                // one of this group's own events is as durable as they are.
                Some(r) => r
                    .into_iter()
                    .map(|r| Receipt {
                        durable: r.sequence < self.durable_seq,
                        ..r
                    })
                    .collect(),
                None => r,
            };
            (s.done)(Ok(answer));
        }
        self.reclaim.free(spent);
        self.recycle(g);
        self.maybe_checkpoint();
        rest
    }

    /// Keeps a committed group's allocations for the next group, so that a
    /// steady stream of groups allocates nothing here; an unusually large
    /// group's are let go instead of being held for ever.
    fn recycle(&mut self, mut g: Group) {
        const KEEP_BYTES: usize = 4 << 20;
        const KEEP_EVENTS: usize = 1 << 14;
        if g.buf.capacity() > KEEP_BYTES || g.pending.capacity() > KEEP_EVENTS {
            return;
        }
        g.staged.clear();
        g.pending.clear();
        g.undo.clear();
        g.keys.clear();
        g.ids.clear();
        g.buf.clear();
        g.frames.clear();
        g.flushes.clear();
        g.failure = None;
        g.retry = None;
        self.spare = g;
    }

    fn reject(&self, done: Done, e: AppendError) {
        self.shared.rejected(&e);
        done(Err(e));
    }

    /// Stages one command: on success its frames are in `g.buf` and its
    /// chain heads applied (with undo entries); on refusal it is answered.
    /// A command that needs a new segment while this group already holds
    /// frames is handed back, to start the next group.
    fn stage(&mut self, g: &mut Group, (events, done, hold): Queued) -> Option<Queued> {
        // `events` passed `validate` on the submitting thread (see `Store`).
        match self.replay(&events, g) {
            Err(e) => {
                self.reject(done, e);
                return None;
            }
            Ok(Some((receipts, in_group))) => {
                g.staged.push(Staged {
                    events,
                    done,
                    hold,
                    replay: Some(receipts),
                    replay_in_group: in_group,
                });
                return None;
            }
            Ok(None) => {}
        }
        let first = self.next_seq;
        let n = events.len();
        let bytes: usize = events
            .iter()
            .map(|e| frame_len(e.entity.len(), e.scope.len(), e.payload.len()))
            .sum();
        if !self.log.fits(g.buf.len() + bytes, g.frames.len() + n) {
            if !g.pending.is_empty() {
                return Some((events, done, hold));
            }
            if !self.log.fits_new(bytes, n) {
                // Not even a new segment could take it: the configuration's
                // batch limits keep this from happening (`Config::validate`).
                self.reject(
                    done,
                    AppendError::BatchTooLarge {
                        events: n,
                        bytes: events.iter().map(super::event_bytes).sum(),
                        max_events: self.config.max_batch_events,
                        max_bytes: self.config.max_batch_bytes,
                    },
                );
                return None;
            }
            if let Err(e) = self.log.rotate(first, self.config.sync_mode) {
                g.staged.push(Staged::new((events, done, hold)));
                match &e {
                    // Sealed, and nothing else written: the next group
                    // tries the create again.
                    RotateError::Create { source, .. } if super::transient(source) => {
                        g.retry = Some(super::unavailable(&e));
                    }
                    _ => g.failure = Some(format!("segment rotation failed: {e}")),
                }
                return None;
            }
            self.shared.set_segments(self.log.segments);
            let pos = self.log.position();
            g.start = (pos.segment_id, pos.offset);
        }
        // Every index file the command's rows go into exists before any of
        // its sequences is allocated: indexing runs after the frames are
        // written, where a file that cannot be created would stop the writer.
        if let Err((path, e)) = self.index.reserve(first + n as u64) {
            if !g.pending.is_empty() {
                // The group so far needs no new file: it goes on without
                // this command, which starts the next group and tries again.
                return Some((events, done, hold));
            }
            let transient = super::transient(&e);
            g.staged.push(Staged::new((events, done, hold)));
            let cause = format!("cannot create index file {}: {e}", path.display());
            if transient {
                g.retry = Some(super::unavailable(&cause));
            } else {
                g.failure = Some(cause);
            }
            return None;
        }
        let cmd = g.staged.len();
        g.staged.push(Staged::new((events, done, hold)));
        let (buf_mark, frames_mark, pending_mark, undo_mark) =
            (g.buf.len(), g.frames.len(), g.pending.len(), g.undo.len());
        let events = &g.staged[cmd].events;
        let mut refused = None;
        // One wall time for the whole command: the clock is read once per
        // command, not once per event (it only has millisecond resolution).
        let wall_ms = self.clock.now();
        // Events are taken in windows of up to `LANES` with distinct
        // entities: each window's checks and chain links first, then its
        // hashes in one pass of the vector unit (`EventHasher`), then its
        // frames and heads. (Distinct entities: no event of a window links
        // to the hash of another.)
        const LANES: usize = EventHasher::LANES;
        // The buffer goes to the log at `at` (a command that needs a new
        // segment was rotated for above), so each frame's place is known
        // here: daemon-assigned ids carry it.
        let at = self.log.position();
        // Claims this command's client ids made (taken back if it is refused).
        let mut claimed = Vec::new();
        let mut i = 0;
        'windows: while i < n {
            // The window: up to `LANES` events of distinct entities. Their
            // heads are looked up back to back, so that the misses on the
            // entity table overlap instead of following one another.
            let mut size = 0;
            while size < LANES && i + size < n {
                let key = events[i + size].entity.as_bytes();
                if events[i..i + size]
                    .iter()
                    .any(|o| o.entity.as_bytes() == key)
                {
                    break;
                }
                size += 1;
            }
            let mut states = [None; LANES];
            for (s, e) in states.iter_mut().zip(&events[i..i + size]) {
                *s = self.entities.get(e.entity.as_bytes()).copied();
            }
            let mut links = [Link::default(); LANES];
            let mut w = 0;
            let mut frame_at = at.offset + g.buf.len() as u64;
            while w < size {
                let e = &events[i + w];
                let state = states[w];
                let ok = match e.expected {
                    ExpectedVersion::Any => true,
                    ExpectedVersion::NoStream => state.is_none(),
                    ExpectedVersion::Exact(n) => state.is_some_and(|s| s.clock == n),
                };
                if !ok {
                    refused = Some((i + w, conflict(i + w, e, state)));
                    break 'windows;
                }
                // Checked before the event's id is noted, so a refusal here
                // has nothing of this event to take back.
                let Some(clock) = state.map_or(Some(0), |s| s.clock.checked_add(1)) else {
                    let index = i + w;
                    refused = Some((
                        index,
                        AppendError::EntityFull {
                            index,
                            entity: e.entity.clone(),
                        },
                    ));
                    break 'windows;
                };
                // `g.ids` holds the client-chosen ids staged in this group,
                // this command's earlier events included (taken back below
                // if the command is refused).
                if let Some(id) = e.event_id {
                    let here = (at.segment_id, frame_at);
                    if g.ids.contains(&id)
                        || self.index.find_id(id, self.next_seq).is_some()
                        || self.given_in_group(g, &links[..w], id, here)
                    {
                        let index = i + w;
                        let earlier = events[..index].iter().position(|o| o.event_id == Some(id));
                        refused = Some((
                            index,
                            AppendError::DuplicateEventId {
                                index,
                                id: EventId(id).to_string(),
                                earlier,
                            },
                        ));
                        break 'windows;
                    }
                    if let Some(key) = self.ids.key() {
                        // An id the daemon may give later: never give it.
                        let seg_len = self.log.writing_len();
                        match self.claims.note(key, id, wall_ms, here, seg_len) {
                            Ok(true) => claimed.push(id),
                            Ok(false) => {}
                            Err(full) => {
                                let index = i + w;
                                refused = Some((
                                    index,
                                    AppendError::TooManyClaims {
                                        index,
                                        id: EventId(id).to_string(),
                                        max: u32::try_from(full.max).unwrap_or(u32::MAX),
                                    },
                                ));
                                break 'windows;
                            }
                        }
                    }
                    g.ids.insert(id);
                }
                let event_id = match e.event_id {
                    Some(id) => id,
                    None => loop {
                        let id = self.ids.next(wall_ms, at.segment_id, frame_at);
                        let taken = (!self.claims.is_empty() && self.claims.contains(id))
                            || (frame_at >= self.claims.bound()
                                && (g.ids.contains(&id)
                                    || self.index.find_id(id, self.next_seq).is_some()));
                        if !taken {
                            break id;
                        }
                        // Claimed by a client: take the next stamp.
                    },
                };
                frame_at += frame_len(e.entity.len(), e.scope.len(), e.payload.len()) as u64;
                links[w] = Link {
                    state,
                    clock,
                    prev_hash: state.map_or([0; 32], |s| s.hash),
                    event_id,
                    correlation_id: e.correlation_id.unwrap_or(event_id),
                };
                w += 1;
            }
            let inputs: [HashInput<'_>; LANES] = std::array::from_fn(|k| {
                let e = &events[i + k.min(w - 1)];
                let l = &links[k];
                HashInput {
                    event_id: l.event_id,
                    correlation_id: l.correlation_id,
                    causation_id: e.causation_id,
                    kind: e.kind,
                    clock: l.clock,
                    wall_ms,
                    entity: e.entity.as_bytes(),
                    scope: e.scope.as_bytes(),
                    prev_hash: l.prev_hash,
                    payload: &e.payload,
                }
            });
            let mut hashes = [[0u8; 32]; LANES];
            g.hasher.hash_all(&inputs[..w], &mut hashes);
            for (k, (l, hash)) in links.iter().zip(hashes).take(w).enumerate() {
                let i = i + k;
                let e = &events[i];
                let key = e.entity.as_bytes();
                let seq = first + i as u64;
                let offset = g.buf.len() as u64;
                debug_assert!(
                    e.event_id.is_some()
                        || at.segment_id >= weir_protocol::locate::LOCATED_SEGMENTS
                        || self
                            .ids
                            .locate(l.event_id)
                            .is_none_or(|p| p == (at.segment_id, at.offset + offset)),
                    "a daemon-assigned id names its frame's place"
                );
                let len = encode_event(
                    &mut g.buf,
                    &EventFrame {
                        sequence: seq,
                        batch_first: first,
                        batch_len: n as u32,
                        batch_end: i + 1 == n,
                        kind: e.kind,
                        clock: l.clock,
                        event_id: l.event_id,
                        correlation_id: l.correlation_id,
                        causation_id: e.causation_id,
                        idempotency_key: e.idempotency_key,
                        wall_ms,
                        entity: key,
                        scope: e.scope.as_bytes(),
                        payload: &e.payload,
                        prev_hash: l.prev_hash,
                        event_hash: hash,
                    },
                );
                let crc = u32::from_le_bytes(
                    g.buf[offset as usize + 4..offset as usize + 8]
                        .try_into()
                        .expect("4 bytes"),
                );
                g.frames.push((len as u32, crc));
                g.undo.push((cmd, i, l.state));
                let entity_id = l.state.map_or(NO_NAME, |s| s.entity_id);
                let head = EntityState {
                    clock: l.clock,
                    hash,
                    entity_id,
                };
                match self.entities.get_mut(key) {
                    Some(s) => *s = head,
                    None => {
                        self.entities.insert(key.into(), head);
                    }
                }
                let receipt = Receipt {
                    event_id: l.event_id,
                    sequence: seq,
                    clock: l.clock,
                    event_hash: hash,
                    durable: false,
                    replayed: false,
                };
                g.pending.push(Pending {
                    cmd,
                    event: i,
                    receipt,
                    correlation_id: l.correlation_id,
                    wall_ms,
                    flush: g.flushes.len(),
                    offset,
                    len: len as u32,
                    batch_end: i + 1 == n,
                    entity_id,
                });
            }
            i += w;
        }
        if let Some((at, err)) = refused {
            // Take back the ids this command's events before `at` put in
            // `g.ids` (each passed the check, so it was not there before),
            // and the claims they made (none of them is stored).
            for e in &events[..at] {
                if let Some(id) = e.event_id {
                    g.ids.remove(&id);
                }
            }
            for id in claimed {
                self.claims.forget(id);
            }
            g.buf.truncate(buf_mark);
            g.frames.truncate(frames_mark);
            g.pending.truncate(pending_mark);
            self.undo_to(g, undo_mark);
            let s = g.staged.pop().expect("just pushed");
            self.reject(s.done, err);
            return None;
        }
        // With a window of 0 no key is remembered, in the group either.
        if self.config.idempotency_window > 0 {
            for p in &g.pending[pending_mark..] {
                let e = &g.staged[cmd].events[p.event];
                if let Some(k) = e.idempotency_key {
                    g.keys.insert(k, (p.receipt, p.cmd, p.event));
                }
            }
        }
        self.next_seq += n as u64;
        self.gate.set_allocated(self.next_seq);
        None
    }

    /// Did this group give `id` to one of its events already (`links`: the
    /// window being staged)? Those are not in the index yet. Only an id that
    /// decodes to a place this group wrote, from `g.start` up to `here` (the
    /// next frame's), can be one, so the search is skipped for every other
    /// id.
    fn given_in_group(&self, g: &Group, links: &[Link], id: u128, here: (u64, u64)) -> bool {
        let Some(key) = self.ids.key() else {
            return false;
        };
        let Some((segment, offset)) = weir_protocol::locate::locate(key, id) else {
            return false;
        };
        (g.start..here).contains(&(segment, offset))
            && (g.pending.iter().any(|p| p.receipt.event_id == id)
                || links.iter().any(|l| l.event_id == id))
    }

    /// Takes chain heads back to what they were before undo entry `mark`.
    fn undo_to(&mut self, g: &mut Group, mark: usize) {
        for (cmd, event, prev) in g.undo.drain(mark..).rev() {
            let key = g.staged[cmd].events[event].entity.as_bytes();
            match prev {
                Some(p) => {
                    if let Some(s) = self.entities.get_mut(key) {
                        *s = p;
                    }
                }
                None => {
                    self.entities.remove(key);
                }
            }
        }
    }

    /// Writes the buffered frames (from `g.buf_first` up to `end`) to the log.
    fn flush(&mut self, g: &mut Group, end: u64) -> std::io::Result<()> {
        if g.buf.is_empty() {
            return Ok(());
        }
        let seg = self.log.position().segment_id;
        let at = self.log.append(&g.buf, &g.frames, g.buf_first, end)?;
        g.flushes.push(Flush { seg, at });
        g.buf.clear();
        g.frames.clear();
        Ok(())
    }

    fn index_pending(&mut self, g: &Group) -> std::io::Result<()> {
        // How many events ahead the id slots are fetched: enough to overlap
        // the misses, few enough that the lines are still cached when used.
        const AHEAD: usize = 8;
        for p in g.pending.iter().take(AHEAD) {
            self.index
                .prefetch_id_slot(p.receipt.sequence, p.receipt.event_id);
        }
        for (k, p) in g.pending.iter().enumerate() {
            if let Some(q) = g.pending.get(k + AHEAD) {
                self.index
                    .prefetch_id_slot(q.receipt.sequence, q.receipt.event_id);
            }
            let e = &g.staged[p.cmd].events[p.event];
            let f = &g.flushes[p.flush];
            let entity_id = self.index.put_event(&IndexedEvent {
                seq: p.receipt.sequence,
                event_id: p.receipt.event_id,
                correlation_id: p.correlation_id,
                causation_id: e.causation_id,
                wall_ms: p.wall_ms,
                entity: e.entity.as_bytes(),
                entity_id: (p.entity_id != NO_NAME).then_some(p.entity_id),
                scope: e.scope.as_bytes(),
                kind: e.kind,
                clock: p.receipt.clock,
                segment_id: f.seg as u32,
                frame_offset: f.at + p.offset,
                frame_len: p.len,
                batch_end: p.batch_end,
            })?;
            if p.entity_id == NO_NAME
                && let Some(s) = self.entities.get_mut(e.entity.as_bytes())
            {
                // The entity's first indexed event: later ones skip the name.
                s.entity_id = entity_id;
            }
        }
        Ok(())
    }

    /// The group stopped, before any sequence was allocated or byte written,
    /// on an error that clears by itself: every command gets `err` (a
    /// replay of an earlier group's receipts still holds), nothing is
    /// poisoned, and the next group tries again.
    fn retry_later(&mut self, mut g: Group, err: &AppendError) {
        debug_assert!(g.pending.is_empty() && g.undo.is_empty() && self.next_seq == g.buf_first);
        tracing::warn!(%err, "append group refused for now");
        for s in g.staged.drain(..) {
            match s.replay {
                Some(r) if !s.replay_in_group => {
                    let r = r
                        .into_iter()
                        .map(|r| Receipt {
                            durable: r.sequence < self.durable_seq,
                            ..r
                        })
                        .collect();
                    (s.done)(Ok(r));
                }
                _ => self.reject(s.done, err.clone()),
            }
        }
        self.recycle(g);
    }

    /// A write failed midway: cancel every sequence this group reserved,
    /// make the cancellation durable, publish past it, reply, and poison.
    fn fail_group(&mut self, first: u64, cause: String, mut g: Group) {
        let end = self.next_seq;
        tracing::error!(%cause, first, end, "append group failed; cancelling its sequences");
        self.undo_to(&mut g, 0);
        let mut durable_cancel = Ok(());
        if end > first {
            let mut buf = Vec::new();
            encode_cancel(&mut buf, first, (end - first) as u32);
            let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
            // The cancel frame goes where the failed write began (over bytes
            // never published), or after the group's frames if their sync
            // failed; `SegmentLog::fits` kept room for it either way.
            durable_cancel = self
                .log
                .append(&buf, &[(buf.len() as u32, crc)], first, end)
                .and_then(|_| self.log.sync(self.config.sync_mode));
            if durable_cancel.is_ok() {
                for seq in first..end {
                    if self.index.put_tombstone(seq).is_err() {
                        break;
                    }
                }
                self.gate.cancel(first, end);
                self.gate.publish_visible(end, self.log.position());
            }
        }
        let err = match durable_cancel {
            Ok(()) => AppendError::Io {
                cause: cause.clone(),
                start: first,
                end,
            },
            Err(e) => AppendError::OutcomeUnknown {
                cause: format!("{cause}; the cancellation could not be made durable either: {e}"),
            },
        };
        self.poison(cause);
        for s in g.staged {
            match s.replay {
                // Only receipts of earlier, published groups still hold.
                Some(r) if !s.replay_in_group => (s.done)(Ok(r)),
                _ => {
                    self.shared.rejected(&err);
                    (s.done)(Err(err.clone()));
                }
            }
        }
    }
}
