//! The writer thread: drains a group of queued appends, validates them,
//! assigns sequences, clocks and hash chains, writes frames, syncs once,
//! indexes, publishes, and replies.

mod group;
mod reclaim;

use crate::budget::Hold;
use crate::checkpoint::CrashCheckpoint;
use crate::config::{Config, SyncPolicy};
use crate::error::AppendError;
use crate::gate::GateWriter;
use crate::ids::{IdGen, WallClock, now_ms};
use crate::index::IndexWriter;
use crate::segments::SegmentLog;
use crate::state::{Entities, IdemWindow};
use crate::stats::Shared;
use crate::storage::SegmentBytes;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use weir_protocol::EventKind;
use weir_protocol::model::validate_name;
use weir_protocol::wire::{AppendRequest, Receipt};

/// Called with the outcome of an append.
pub type Done = Box<dyn FnOnce(Result<Vec<Receipt>, AppendError>) + Send>;
/// An append as the writer takes it: events, reply, hold.
pub(crate) type Queued = (Vec<AppendRequest>, Done, Hold);
/// Reply callback of a sync: the visible watermark once durable.
pub type SyncDone = Box<dyn FnOnce(Result<u64, AppendError>) + Send>;

/// A command for the writer.
pub enum Cmd {
    /// Append events, all or nothing.
    Append {
        /// The events.
        events: Vec<AppendRequest>,
        /// Reply.
        done: Done,
        /// The request's bytes, held against the daemon's budget until the
        /// events are dropped.
        hold: Hold,
    },
    /// Make everything durable.
    Sync {
        /// Reply with the visible watermark.
        done: SyncDone,
    },
    /// Finish the queue, sync, checkpoint, stop.
    Stop {
        /// Reply when stopped.
        done: Box<dyn FnOnce(Result<(), String>) + Send>,
    },
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append { events, .. } => write!(f, "Append({} events)", events.len()),
            Self::Sync { .. } => f.write_str("Sync"),
            Self::Stop { .. } => f.write_str("Stop"),
        }
    }
}

/// The writer's state.
pub struct Writer {
    pub(crate) config: Config,
    pub(crate) index: IndexWriter,
    pub(crate) log: SegmentLog,
    pub(crate) gate: GateWriter,
    pub(crate) next_seq: u64,
    pub(crate) entities: Entities,
    pub(crate) idem: IdemWindow,
    pub(crate) clock: WallClock,
    pub(crate) ids: IdGen,
    /// Client-chosen ids the writer must not give (`claims.rs`).
    pub(crate) claims: crate::claims::Claims,
    pub(crate) shared: Arc<Shared>,
    pub(crate) poisoned: Option<String>,
    pub(crate) unsynced_events: u64,
    pub(crate) last_sync: Instant,
    /// Every frame of a sequence below this is durable.
    pub(crate) durable_seq: u64,
    pub(crate) checkpoints: crate::checkpoint::Checkpointer,
    /// The last committed group's buffers, cleared, for the next one.
    pub(crate) spare: group::Group,
    /// Frees committed requests off the writer thread.
    pub(crate) reclaim: reclaim::Reclaimer,
    /// The data directory as the start found it: checked before each file
    /// the writer creates, renames or removes there by path (`home.rs`).
    pub(crate) home: crate::home::Home,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("next_seq", &self.next_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Runs until `Stop` (or until every sender is gone).
    pub fn run(mut self, rx: &Receiver<Cmd>) {
        let tick = Duration::from_millis(250);
        loop {
            let first = match rx.recv_timeout(self.wait_time(tick)) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.stop();
                    return;
                }
            };
            // A group stops at group-commit-max-events or at max-batch-bytes
            // of requests: a small append must not wait for the write and
            // sync of hundreds of MiB queued before it.
            let (mut events, mut bytes) = group_weight(&first);
            let mut group = vec![first];
            while events < self.config.group_commit_max_events as usize
                && bytes < self.config.max_batch_bytes
            {
                match rx.try_recv() {
                    Ok(c) => {
                        let (n, b) = group_weight(&c);
                        events += n;
                        bytes += b;
                        group.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.shared.dequeued(group.len() as u64);
            let mut appends = Vec::new();
            let mut stop = None;
            for cmd in group {
                match cmd {
                    Cmd::Append { events, done, hold } => appends.push((events, done, hold)),
                    Cmd::Sync { done } => {
                        self.process(std::mem::take(&mut appends));
                        let synced = self.sync_now().map(|()| self.next_seq);
                        if synced.is_ok() {
                            // Every frame is durable now: a checkpoint may be due.
                            self.maybe_checkpoint();
                        }
                        done(synced);
                    }
                    Cmd::Stop { done } => stop = Some(done),
                }
            }
            self.process(appends);
            if let Some(done) = stop {
                // Drain what was queued behind the stop, then stop.
                let mut rest = Vec::new();
                while let Ok(c) = rx.try_recv() {
                    match c {
                        Cmd::Append { events, done, hold } => rest.push((events, done, hold)),
                        Cmd::Sync { done } => done(Err(AppendError::ShuttingDown)),
                        Cmd::Stop { done } => done(Ok(())),
                    }
                }
                self.process(rest);
                done(self.stop());
                return;
            }
            self.shared.tick();
        }
    }

    fn wait_time(&self, tick: Duration) -> Duration {
        if self.config.sync == SyncPolicy::IntervalMs && self.log.has_unsynced() {
            let interval = Duration::from_millis(self.config.sync_interval_ms.into());
            return interval.saturating_sub(self.last_sync.elapsed()).min(tick);
        }
        tick
    }

    /// Forgets the claims the writer can no longer give (see `claims.rs`),
    /// writes the claims file if it changed, and gives only stamps above
    /// its floor from then on.
    pub(crate) fn settle_claims(&mut self) -> std::io::Result<()> {
        let Some(key) = self.ids.key() else {
            return Ok(());
        };
        // The file is rewritten by path (a `stat` per settle: at most one
        // per group with claims, or per idle tick while claims are held).
        self.home.check()?;
        // Stamps up to the newest given, or before this ms, are given no
        // more once they are the floor.
        let given = self
            .ids
            .last_stamp()
            .max((now_ms() << 12).saturating_sub(1));
        // Places are passed only once the frames past them are durable.
        let pos = self.log.position();
        let durable = (!self.log.has_unsynced()).then_some((pos.segment_id, pos.offset));
        let seg_len = self.log.writing_len();
        // First: the claims at or below `given` leave memory even if the
        // file cannot be written, and must not be given in this run.
        self.ids.raise_to(given);
        self.claims.settle(key, given, durable, seg_len)
    }

    fn idle(&mut self) {
        if !self.claims.is_empty()
            && let Err(e) = self.settle_claims()
        {
            if crate::error::DataDirMoved::of(&e).is_none() {
                tracing::warn!(error = %e, "could not rewrite claimed-ids; kept as it was");
            } else if self.poisoned.is_none() {
                self.poison(e.to_string());
            }
        }
        let now = now_ms();
        self.gate.heartbeat(now);
        self.shared.tick();
        if self.config.sync == SyncPolicy::IntervalMs
            && self.log.has_unsynced()
            && self.last_sync.elapsed()
                >= Duration::from_millis(self.config.sync_interval_ms.into())
        {
            let _ = self.sync_now();
        }
        self.maybe_checkpoint();
    }

    /// The crash checkpoint this instance could write now: the sealed
    /// chunks whose frames are all durable, with the idempotency window's
    /// entries below them.
    fn checkpoint_at(&self) -> Option<(CrashCheckpoint, Vec<std::path::PathBuf>)> {
        let watermark = self.checkpoint_watermark();
        // Only while every written frame is durable: the idempotency window
        // then holds no key that a crash could take back, so its entries
        // below the watermark plus the log's keys above are the window a
        // full rebuild makes.
        if watermark <= self.checkpoints.covered()
            || self.durable_seq != self.next_seq
            || self.poisoned.is_some()
        {
            return None;
        }
        let cp = CrashCheckpoint::at(&self.index, watermark, self.clock.last(), &self.idem);
        let files = self
            .index
            .checkpoint_files(self.checkpoints.covered(), watermark);
        Some((cp, files))
    }

    /// The end of the sealed chunks whose frames are all durable.
    fn checkpoint_watermark(&self) -> u64 {
        let rows = self.index.geometry().rows() as u64;
        self.index.sealed_rows().min(self.durable_seq / rows * rows)
    }

    /// Starts a crash checkpoint in the background when one is due.
    pub(crate) fn maybe_checkpoint(&mut self) {
        if !self.checkpoints.due(self.checkpoint_watermark()) {
            return;
        }
        if let Some((cp, files)) = self.checkpoint_at() {
            // Written by path into the generation directory: a moved data
            // directory stops the writer; a `stat` that fails otherwise (a
            // parent's permissions changed for a moment, EIO) skips this
            // checkpoint, as a failed checkpoint does, and the next tick
            // tries again.
            if let Err(e) = self.home.check() {
                if crate::error::DataDirMoved::of(&e).is_some() {
                    self.poison(e.to_string());
                } else {
                    tracing::warn!(error = %e, "no crash checkpoint this time");
                }
                return;
            }
            let dir = self.index.dir().to_owned();
            self.checkpoints.start(cp, files, dir);
        }
    }

    fn sync_now(&mut self) -> Result<(), AppendError> {
        if let Some(cause) = &self.poisoned {
            return Err(AppendError::Poisoned {
                cause: cause.clone(),
            });
        }
        let t = Instant::now();
        if self.log.has_unsynced() {
            if let Err(e) = self.log.sync(self.config.sync_mode) {
                return Err(self.poison(format!("fsync failed: {e}")));
            }
            self.shared.fsynced(t.elapsed());
        }
        self.unsynced_events = 0;
        self.last_sync = Instant::now();
        self.durable_seq = self.next_seq;
        Ok(())
    }

    fn poison(&mut self, cause: String) -> AppendError {
        tracing::error!(%cause, "writer poisoned: refusing writes until restarted");
        self.poisoned = Some(cause.clone());
        self.shared.set_poisoned();
        AppendError::Poisoned { cause }
    }

    fn stop(&mut self) -> Result<(), String> {
        let synced = self.sync_now();
        // Every file below is written by path: none into a directory that
        // is not this store's. The next start on the moved directory takes
        // its crash checkpoint or rebuilds, as after a crash.
        let home = self.home.check();
        if let Err(e) = &home {
            tracing::error!(error = %e, "the clean stop writes none of its files (idempotency window, checkpoints)");
        }
        let saved = match &home {
            Ok(()) => {
                let idem_path =
                    crate::index::generation_dir(&self.config.data_dir, self.index.generation())
                        .join("idem");
                crate::state::save_window(&idem_path, &self.idem)
            }
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        if home.is_ok()
            && let Err(e) = &saved
        {
            tracing::warn!(error = %e, "could not save the idempotency window; the next start cannot reuse the index files (it takes the crash checkpoint or rebuilds)");
        }
        self.checkpoints.finish();
        if synced.is_ok()
            && home.is_ok()
            && let Some((cp, files)) = self.checkpoint_at()
        {
            let dir = self.index.dir().to_owned();
            self.checkpoints.write_now(&cp, &files, &dir);
        }
        if synced.is_ok() && saved.is_ok() && self.poisoned.is_none() {
            let mut cp = <weir_protocol::index::Checkpoint as zerocopy::FromZeros>::new_zeroed();
            cp.watermark = self.next_seq.into();
            cp.segment_id = self.log.position().segment_id.into();
            cp.segment_offset = self.log.position().offset.into();
            // The largest wall_ms written (FORMAT.md), as the crash
            // checkpoint records it: the wall clock at the stop may have
            // jumped ahead of every event, and would become the next
            // start's floor.
            cp.max_wall_ms = self.clock.last().into();
            cp.clean = 1.into();
            if let Err(e) = self.index.checkpoint(cp) {
                tracing::warn!(error = %e, "could not write the clean-stop checkpoint; the next start cannot reuse the index files (it takes the crash checkpoint or rebuilds)");
            }
        }
        // STOPPED tells the next start that every sequence below `visible`
        // is durable (`proof.rs`). A writer that could not sync (poisoned,
        // or the stop's own sync failed) under a policy that publishes
        // before syncing leaves the gate LIVE, as a crash would: the next
        // start may then drop that tail, instead of refusing the log as
        // damaged after a power loss.
        let visible = self.gate.visible();
        if synced.is_ok() || self.durable_seq >= visible {
            self.gate.set_state(weir_protocol::gate::STATE_STOPPED);
        } else {
            tracing::warn!(
                durable = self.durable_seq,
                visible,
                "published events may not be durable: the gate stays LIVE, and the next start treats this stop as a crash"
            );
        }
        home.map_err(|e| e.to_string())?;
        synced.map_err(|e| e.to_string())
    }
}

/// The wait an append refused as [`AppendError::Unavailable`] is told to take.
const RETRY_AFTER_MS: u64 = 100;

/// Does `e` clear by itself: too many open files (the process's or the
/// system's) or no memory for a mapping? A create that fails so has written
/// nothing, and the same create may work a moment later.
pub(crate) fn transient(e: &std::io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOMEM))
}

/// The refusal of a group stopped by a transient error (`cause` names the
/// file).
fn unavailable(cause: &impl std::fmt::Display) -> AppendError {
    AppendError::Unavailable {
        cause: cause.to_string(),
        retry_after_ms: RETRY_AFTER_MS,
    }
}

/// What an event counts against `max-batch-bytes`: its payload and names.
pub(crate) fn event_bytes(e: &AppendRequest) -> u64 {
    (e.payload.len() + e.entity.len() + e.scope.len()) as u64
}

/// Checks one command against the limits and rules that need no writer
/// state. [`crate::Store`] runs it on the submitting thread, before the
/// command is queued, so the writer thread never spends time on it.
/// Returns the bytes the events count against `max-batch-bytes`.
pub(crate) fn validate(c: &Config, events: &[AppendRequest]) -> Result<u64, AppendError> {
    if events.is_empty() {
        return Err(AppendError::EmptyBatch);
    }
    // Each event's own limits first: an event whose payload alone is too
    // large is refused as that, not as a batch.
    for (index, e) in events.iter().enumerate() {
        check_event(index, e, c.max_payload_bytes)?;
    }
    let bytes: u64 = events.iter().map(event_bytes).sum();
    if events.len() > c.max_batch_events as usize || bytes > c.max_batch_bytes {
        return Err(AppendError::BatchTooLarge {
            events: events.len(),
            bytes,
            max_events: c.max_batch_events,
            max_bytes: c.max_batch_bytes,
        });
    }
    if events.len() > 1 {
        let mut keys = crate::fxhash::FxHashSet::default();
        for k in events.iter().filter_map(|e| e.idempotency_key) {
            if !keys.insert(k) {
                // One request, two events, one key: no receipt could answer both.
                return Err(AppendError::IdempotencyConflict { key: k });
            }
        }
    }
    Ok(bytes)
}

impl Writer {
    /// Checks idempotency keys: all known → replay; some known → conflict;
    /// a known key sent with another event → conflict. A replay must be
    /// exactly one stored append, whole and in order (the same batch shape):
    /// otherwise its receipts would come from several appends, or answer
    /// part of one. The flag says whether any receipt came from this very
    /// group (then it shares the group's fate: it is not durable, or even
    /// stored, yet).
    pub(super) fn replay(
        &self,
        events: &[AppendRequest],
        g: &group::Group,
    ) -> Result<Option<(Vec<Receipt>, bool)>, AppendError> {
        // A window of 0 turns idempotency off: no key is known, not even
        // one staged earlier in this group (`stage` keeps none then).
        if self.config.idempotency_window == 0 {
            return Ok(None);
        }
        // Each known key's receipt, with the batch it was stored in
        // (first sequence, events) when that can be read back.
        let mut known: Vec<(Receipt, Option<(u64, u32)>)> = Vec::new();
        let mut from_group = false;
        let mut first_known = None;
        // The segment the last stored event was read from (see `with_event`).
        let mut mapped = None;
        for e in events {
            let Some(key) = e.idempotency_key else {
                continue;
            };
            let same = if let Some(r) = self.idem.get(key) {
                let (same, batch) = self.stored_event_is(&mut mapped, r.sequence, e);
                known.push((*r, batch));
                same
            } else if let Some(&(r, cmd, event)) = g.keys.get(&key) {
                from_group = true;
                let staged = &g.staged[cmd].events;
                known.push((r, Some((r.sequence - event as u64, staged.len() as u32))));
                let first = &staged[event];
                asks_for(
                    e,
                    &Stored {
                        entity: first.entity.as_bytes(),
                        scope: first.scope.as_bytes(),
                        kind: first.kind,
                        payload: &first.payload,
                        event_id: r.event_id,
                        correlation_id: first.correlation_id.unwrap_or(r.event_id),
                        causation_id: first.causation_id,
                    },
                )
            } else {
                continue;
            };
            if !same {
                return Err(AppendError::IdempotencyConflict { key });
            }
            first_known.get_or_insert(key);
        }
        match first_known {
            None => Ok(None),
            Some(key) if known.len() < events.len() => {
                Err(AppendError::IdempotencyConflict { key })
            }
            Some(_) => {
                check_shape(events, &known)?;
                Ok(Some((
                    known
                        .into_iter()
                        .map(|(r, _)| Receipt {
                            replayed: true,
                            ..r
                        })
                        .collect(),
                    from_group,
                )))
            }
        }
    }

    /// Whether the stored event `seq` is what `e` asks for, and the batch
    /// it was stored in (first sequence, events). When it cannot be read
    /// back (a damaged file), the key's receipt stands, as it did before
    /// retries were compared, and the batch is unknown.
    fn stored_event_is(
        &self,
        mapped: &mut Option<(u64, SegmentBytes)>,
        seq: u64,
        e: &AppendRequest,
    ) -> (bool, Option<(u64, u32)>) {
        let Some(row) = self.index.row(seq) else {
            return (true, None);
        };
        let checked = self.log.with_event(
            mapped,
            u64::from(row.segment_id.get()),
            row.frame_offset.get(),
            |f| {
                let same = asks_for(
                    e,
                    &Stored {
                        entity: f.entity,
                        scope: f.scope,
                        kind: f.header.kind.get(),
                        payload: f.payload,
                        event_id: f.header.event_id(),
                        correlation_id: f.header.correlation_id(),
                        causation_id: f.header.causation_id(),
                    },
                );
                (
                    same,
                    Some((f.header.batch_first.get(), f.header.batch_len.get())),
                )
            },
        );
        checked.unwrap_or_else(|err| {
            tracing::warn!(%err, seq, "cannot read back the event of a retried idempotency key; replaying its receipt");
            (true, None)
        })
    }
}

/// A request whose keys are all known replays only if its events are one
/// stored batch (or one event stored alone), whole and in order: event `i`
/// at sequence `s + i` of the batch of `events.len()` events from `s`. A
/// batch that cannot be read back is taken as the sequences show it.
fn check_shape(
    events: &[AppendRequest],
    known: &[(Receipt, Option<(u64, u32)>)],
) -> Result<(), AppendError> {
    let first = known[0].0.sequence;
    let shape = Some((first, events.len() as u32));
    for (index, (e, (r, batch))) in events.iter().zip(known).enumerate() {
        if r.sequence != first + index as u64 || batch.is_some_and(|b| Some(b) != shape) {
            return Err(AppendError::IdempotencyBatchMismatch {
                index,
                key: e.idempotency_key.expect("every event is keyed"),
                sequence: r.sequence,
                batch: *batch,
                events: events.len(),
            });
        }
    }
    Ok(())
}

/// The event a key first stored, as a retry is compared with it.
struct Stored<'a> {
    entity: &'a [u8],
    scope: &'a [u8],
    kind: u16,
    payload: &'a [u8],
    event_id: u128,
    correlation_id: u128,
    causation_id: Option<u128>,
}

/// Whether `e`, sent again with the key of `first`, asks for the same
/// event: coordinate, kind, payload and causation alike, and the event and
/// correlation ids it names (if any) those `first` got.
fn asks_for(e: &AppendRequest, first: &Stored<'_>) -> bool {
    e.entity.as_bytes() == first.entity
        && e.scope.as_bytes() == first.scope
        && e.kind == first.kind
        && e.payload == first.payload
        && e.causation_id == first.causation_id
        && e.event_id.is_none_or(|id| id == first.event_id)
        && e.correlation_id.unwrap_or(first.event_id) == first.correlation_id
}

/// The checks every event passes before it is staged: coordinate, kind,
/// payload size, event id, idempotency key. The server runs them too, when a transaction
/// stages an event, so a bad event is refused when appended, not at commit.
pub fn check_event(index: usize, e: &AppendRequest, max_payload: u32) -> Result<(), AppendError> {
    validate_name("entity", &e.entity)
        .map_err(|source| AppendError::InvalidCoordinate { index, source })?;
    validate_name("scope", &e.scope)
        .map_err(|source| AppendError::InvalidCoordinate { index, source })?;
    EventKind(e.kind)
        .check_client()
        .map_err(|source| AppendError::InvalidKind { index, source })?;
    if e.payload.len() > max_payload as usize {
        return Err(AppendError::PayloadTooLarge {
            index,
            len: e.payload.len(),
            max: max_payload,
        });
    }
    if e.event_id == Some(0) {
        return Err(AppendError::InvalidEventId { index });
    }
    // A frame stores key 0 as "no key": a rebuild would not see it, so a
    // retry after a crash would be stored again.
    if e.idempotency_key == Some(0) {
        return Err(AppendError::InvalidIdempotencyKey { index });
    }
    Ok(())
}

/// A command's events and bytes, as a group counts them.
fn group_weight(c: &Cmd) -> (usize, u64) {
    match c {
        Cmd::Append { events, hold, .. } => (events.len(), hold.bytes()),
        _ => (1, 0),
    }
}
