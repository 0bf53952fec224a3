//! The writer thread: drains a group of queued appends, validates them,
//! assigns sequences, clocks and hash chains, writes frames, syncs once,
//! indexes, publishes, and replies.

use crate::config::{Config, SyncPolicy};
use crate::error::AppendError;
use crate::gate::GateWriter;
use crate::ids::{IdGen, WallClock, now_ms};
use crate::index::{IndexWriter, IndexedEvent};
use crate::segments::SegmentLog;
use crate::state::{Entities, EntityState, IdemWindow};
use crate::stats::Shared;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use weir_protocol::hash::{HashInput, event_hash};
use weir_protocol::model::validate_name;
use weir_protocol::segment::{EventFrame, encode_cancel, encode_event, frame_len};
use weir_protocol::wire::{AppendRequest, Receipt};
use weir_protocol::{EventId, EventKind, ExpectedVersion};

/// Called with the outcome of an append.
pub type Done = Box<dyn FnOnce(Result<Vec<Receipt>, AppendError>) + Send>;

/// A command for the writer.
pub enum Cmd {
    /// Append events, all or nothing.
    Append {
        /// The events.
        events: Vec<AppendRequest>,
        /// Reply.
        done: Done,
    },
    /// Make everything durable.
    Sync {
        /// Reply with the visible watermark.
        done: Box<dyn FnOnce(Result<u64, AppendError>) + Send>,
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
}

struct Staged {
    events: Vec<AppendRequest>,
    done: Done,
    /// Receipts to send: fresh ones are filled from `Pending` after publish.
    replay: Option<Vec<Receipt>>,
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
    pub(crate) shared: Arc<Shared>,
    pub(crate) poisoned: Option<String>,
    pub(crate) unsynced_events: u64,
    pub(crate) last_sync: Instant,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("next_seq", &self.next_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Where one flush of the group buffer landed.
struct Flush {
    seg: u64,
    at: u64,
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
            let mut group = vec![first];
            let mut events = group_events(&group[0]);
            while events < self.config.group_commit_max_events as usize {
                match rx.try_recv() {
                    Ok(c) => {
                        events += group_events(&c);
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
                    Cmd::Append { events, done } => appends.push((events, done)),
                    Cmd::Sync { done } => {
                        self.process(std::mem::take(&mut appends));
                        done(self.sync_now().map(|()| self.next_seq));
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
                        Cmd::Append { events, done } => rest.push((events, done)),
                        Cmd::Sync { done } => done(Err(AppendError::ShuttingDown)),
                        Cmd::Stop { done } => done(Ok(())),
                    }
                }
                self.process(rest);
                done(self.stop());
                return;
            }
            self.shared.tick(now_ms());
        }
    }

    fn wait_time(&self, tick: Duration) -> Duration {
        if self.config.sync == SyncPolicy::IntervalMs && self.log.has_unsynced() {
            let interval = Duration::from_millis(self.config.sync_interval_ms.into());
            return interval.saturating_sub(self.last_sync.elapsed()).min(tick);
        }
        tick
    }

    fn idle(&mut self) {
        let now = now_ms();
        self.gate.heartbeat(now);
        self.shared.tick(now);
        if self.config.sync == SyncPolicy::IntervalMs
            && self.log.has_unsynced()
            && self.last_sync.elapsed()
                >= Duration::from_millis(self.config.sync_interval_ms.into())
        {
            let _ = self.sync_now();
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
        Ok(())
    }

    fn poison(&mut self, cause: String) -> AppendError {
        tracing::error!(%cause, "writer poisoned: refusing writes until restarted");
        self.poisoned = Some(cause.clone());
        AppendError::Poisoned { cause }
    }

    fn stop(&mut self) -> Result<(), String> {
        let synced = self.sync_now();
        if synced.is_ok() && self.poisoned.is_none() {
            let mut cp = <weir_protocol::index::Checkpoint as zerocopy::FromZeros>::new_zeroed();
            cp.watermark = self.next_seq.into();
            cp.segment_id = self.log.position().segment_id.into();
            cp.segment_offset = self.log.position().offset.into();
            cp.max_wall_ms = self.clock.now().into();
            cp.clean = 1.into();
            if let Err(e) = self.index.checkpoint(cp) {
                tracing::warn!(error = %e, "could not write the clean-stop checkpoint; the next start rebuilds the index");
            }
        }
        self.gate.set_state(weir_protocol::gate::STATE_STOPPED);
        synced.map_err(|e| e.to_string())
    }

    /// Validates one request's events against the limits.
    fn validate(&self, events: &[AppendRequest]) -> Result<(), AppendError> {
        let c = &self.config;
        if events.is_empty() {
            return Err(AppendError::EmptyBatch);
        }
        let bytes: u64 = events
            .iter()
            .map(|e| (e.payload.len() + e.entity.len() + e.scope.len()) as u64)
            .sum();
        if events.len() > c.max_batch_events as usize || bytes > c.max_batch_bytes {
            return Err(AppendError::BatchTooLarge {
                events: events.len(),
                bytes,
                max_events: c.max_batch_events,
                max_bytes: c.max_batch_bytes,
            });
        }
        for (index, e) in events.iter().enumerate() {
            validate_name("entity", &e.entity)
                .map_err(|source| AppendError::InvalidCoordinate { index, source })?;
            validate_name("scope", &e.scope)
                .map_err(|source| AppendError::InvalidCoordinate { index, source })?;
            EventKind(e.kind)
                .check_client()
                .map_err(|source| AppendError::InvalidKind { index, source })?;
            if e.payload.len() > c.max_payload_bytes as usize {
                return Err(AppendError::PayloadTooLarge {
                    index,
                    len: e.payload.len(),
                    max: c.max_payload_bytes,
                });
            }
            if e.event_id == Some(0) {
                return Err(AppendError::InvalidEventId { index });
            }
        }
        Ok(())
    }

    /// Checks idempotency keys: all known → replay; some known → conflict.
    fn replay(
        &self,
        events: &[AppendRequest],
        group_keys: &HashMap<u128, Receipt>,
    ) -> Result<Option<Vec<Receipt>>, AppendError> {
        let keys: Vec<Option<u128>> = events.iter().map(|e| e.idempotency_key).collect();
        let found: Vec<Option<Receipt>> = keys
            .iter()
            .map(|k| {
                k.and_then(|k| {
                    self.idem
                        .get(k)
                        .copied()
                        .or_else(|| group_keys.get(&k).copied())
                })
            })
            .collect();
        let known = found.iter().filter(|f| f.is_some()).count();
        if known == 0 {
            return Ok(None);
        }
        if known < events.len() {
            let key = keys
                .iter()
                .zip(&found)
                .find(|(_, f)| f.is_some())
                .and_then(|(k, _)| *k)
                .unwrap_or(0);
            return Err(AppendError::IdempotencyConflict { key });
        }
        Ok(Some(
            found
                .into_iter()
                .flatten()
                .map(|r| Receipt {
                    replayed: true,
                    ..r
                })
                .collect(),
        ))
    }

    fn process(&mut self, cmds: Vec<(Vec<AppendRequest>, Done)>) {
        if cmds.is_empty() {
            return;
        }
        if let Some(cause) = &self.poisoned {
            for (_, done) in cmds {
                done(Err(AppendError::Poisoned {
                    cause: cause.clone(),
                }));
            }
            return;
        }
        let group_first = self.next_seq;
        let mut overlay: HashMap<Box<[u8]>, EntityState> = HashMap::new();
        let mut group_keys: HashMap<u128, Receipt> = HashMap::new();
        let mut group_ids: HashSet<u128> = HashSet::new();
        let mut staged: Vec<Staged> = Vec::with_capacity(cmds.len());
        let mut pending: Vec<Pending> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
        let mut frames: Vec<(u32, u32)> = Vec::new();
        let mut buf_first = group_first;
        let mut flushes: Vec<Flush> = Vec::new();
        let mut failure: Option<String> = None;

        for (events, done) in cmds {
            if let Err(e) = self.validate(&events) {
                self.shared.rejected(&e);
                done(Err(e));
                continue;
            }
            match self.replay(&events, &group_keys) {
                Err(e) => {
                    self.shared.rejected(&e);
                    done(Err(e));
                    continue;
                }
                Ok(Some(receipts)) => {
                    staged.push(Staged {
                        events,
                        done,
                        replay: Some(receipts),
                    });
                    continue;
                }
                Ok(None) => {}
            }
            // Expected versions and duplicate ids, against the store plus this group.
            let mut conflict = None;
            let mut local: HashMap<&[u8], Option<EntityState>> = HashMap::new();
            for (i, e) in events.iter().enumerate() {
                let key = e.entity.as_bytes();
                let state = *local.entry(key).or_insert_with(|| {
                    overlay.get(key).or_else(|| self.entities.get(key)).copied()
                });
                let ok = match e.expected {
                    ExpectedVersion::Any => true,
                    ExpectedVersion::NoStream => state.is_none(),
                    ExpectedVersion::Exact(n) => state.is_some_and(|s| s.clock == n),
                };
                if !ok {
                    conflict = Some(AppendError::VersionConflict {
                        entity: e.entity.clone(),
                        expected: match e.expected {
                            ExpectedVersion::NoStream => "none".into(),
                            ExpectedVersion::Exact(n) => n.to_string(),
                            ExpectedVersion::Any => "any".into(),
                        },
                        found: state.map_or("none".into(), |s| s.clock.to_string()),
                    });
                    break;
                }
                if let Some(id) = e.event_id {
                    let dup = group_ids.contains(&id)
                        || events[..i].iter().any(|o| o.event_id == Some(id))
                        || self.index.find_id(id, self.next_seq).is_some();
                    if dup {
                        conflict = Some(AppendError::DuplicateEventId {
                            id: EventId(id).to_string(),
                        });
                        break;
                    }
                }
                local.insert(
                    key,
                    Some(EntityState {
                        clock: state.map_or(0, |s| s.clock + 1),
                        hash: [0; 32],
                    }),
                );
            }
            if let Some(e) = conflict {
                self.shared.rejected(&e);
                done(Err(e));
                continue;
            }
            // Assign sequences, clocks, chains; encode frames.
            let cmd = staged.len();
            let first = self.next_seq;
            let n = events.len();
            let bytes: usize = events
                .iter()
                .map(|e| frame_len(e.entity.len(), e.scope.len(), e.payload.len()))
                .sum();
            if !self.log.fits(buf.len() + bytes, frames.len() + n) {
                if let Err(e) = self.flush(&mut buf, &mut frames, buf_first, first, &mut flushes) {
                    failure = Some(format!("write failed: {e}"));
                    staged.push(Staged {
                        events,
                        done,
                        replay: Some(Vec::new()),
                    });
                    break;
                }
                if let Err(e) = self.log.rotate(first, self.config.sync_mode) {
                    failure = Some(format!("segment rotation failed: {e}"));
                    staged.push(Staged {
                        events,
                        done,
                        replay: Some(Vec::new()),
                    });
                    break;
                }
                self.shared.set_segments(self.log.segments);
                buf_first = first;
            }
            for (i, e) in events.iter().enumerate() {
                let seq = first + i as u64;
                let key = e.entity.as_bytes();
                let prev = overlay.get(key).or_else(|| self.entities.get(key)).copied();
                let clock = prev.map_or(0, |s| s.clock + 1);
                let prev_hash = prev.map_or([0; 32], |s| s.hash);
                let wall_ms = self.clock.now();
                let event_id = e.event_id.unwrap_or_else(|| self.ids.next(wall_ms));
                let correlation_id = e.correlation_id.unwrap_or(event_id);
                let hash = event_hash(&HashInput {
                    event_id,
                    correlation_id,
                    causation_id: e.causation_id,
                    kind: e.kind,
                    clock,
                    wall_ms,
                    entity: key,
                    scope: e.scope.as_bytes(),
                    prev_hash,
                    payload: &e.payload,
                });
                let offset = buf.len() as u64;
                let len = encode_event(
                    &mut buf,
                    &EventFrame {
                        sequence: seq,
                        batch_first: first,
                        batch_len: n as u32,
                        batch_end: i + 1 == n,
                        kind: e.kind,
                        clock,
                        event_id,
                        correlation_id,
                        causation_id: e.causation_id,
                        idempotency_key: e.idempotency_key,
                        wall_ms,
                        entity: key,
                        scope: e.scope.as_bytes(),
                        payload: &e.payload,
                        prev_hash,
                        event_hash: hash,
                    },
                );
                let crc = u32::from_le_bytes(
                    buf[offset as usize + 4..offset as usize + 8]
                        .try_into()
                        .expect("4 bytes"),
                );
                frames.push((len as u32, crc));
                overlay.insert(key.into(), EntityState { clock, hash });
                if e.event_id.is_some() {
                    group_ids.insert(event_id);
                }
                let receipt = Receipt {
                    event_id,
                    sequence: seq,
                    clock,
                    event_hash: hash,
                    durable: false,
                    replayed: false,
                };
                if let Some(k) = e.idempotency_key {
                    group_keys.insert(k, receipt);
                }
                pending.push(Pending {
                    cmd,
                    event: i,
                    receipt,
                    correlation_id,
                    wall_ms,
                    flush: flushes.len(),
                    offset,
                    len: len as u32,
                    batch_end: i + 1 == n,
                });
            }
            self.next_seq += n as u64;
            self.gate.set_allocated(self.next_seq);
            staged.push(Staged {
                events,
                done,
                replay: None,
            });
        }
        if failure.is_none()
            && let Err(e) = self.flush(
                &mut buf,
                &mut frames,
                buf_first,
                self.next_seq,
                &mut flushes,
            )
        {
            failure = Some(format!("write failed: {e}"));
        }
        if let Some(cause) = failure {
            self.fail_group(group_first, cause, staged);
            return;
        }
        // Durability per policy.
        let fresh = pending.len() as u64;
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
        let durable = if must_sync && fresh > 0 {
            if let Err(e) = self.sync_now() {
                for s in staged {
                    (s.done)(Err(e.clone()));
                }
                return;
            }
            true
        } else {
            !self.log.has_unsynced()
        };
        // Index, then publish.
        if let Err(e) = self.index_pending(&staged, &pending, &flushes) {
            let err = self.poison(format!("index write failed: {e}"));
            for s in staged {
                (s.done)(Err(err.clone()));
            }
            return;
        }
        self.gate.publish_visible(self.next_seq);
        self.index.seal_through(self.next_seq);
        for (k, v) in overlay {
            self.entities.insert(k, v);
        }
        let mut receipts: Vec<Vec<Receipt>> = staged
            .iter()
            .map(|s| Vec::with_capacity(s.events.len()))
            .collect();
        for p in &pending {
            let r = Receipt {
                durable,
                ..p.receipt
            };
            if let Some(k) = staged[p.cmd].events[p.event].idempotency_key {
                self.idem.insert(k, r);
            }
            receipts[p.cmd].push(r);
        }
        let bytes: u64 = staged
            .iter()
            .filter(|s| s.replay.is_none())
            .flat_map(|s| s.events.iter())
            .map(|e| (e.payload.len() + e.entity.len() + e.scope.len()) as u64)
            .sum();
        self.shared.committed(fresh, bytes, self.next_seq);
        for (s, r) in staged.into_iter().zip(receipts) {
            (s.done)(Ok(s.replay.unwrap_or(r)));
        }
    }

    /// Writes the buffered frames (covering `first..end`) to the log.
    fn flush(
        &mut self,
        buf: &mut Vec<u8>,
        frames: &mut Vec<(u32, u32)>,
        first: u64,
        end: u64,
        flushes: &mut Vec<Flush>,
    ) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let seg = self.log.position().segment_id;
        let at = self.log.append(buf, frames, first, end)?;
        flushes.push(Flush { seg, at });
        buf.clear();
        frames.clear();
        Ok(())
    }
}

impl Writer {
    fn index_pending(
        &mut self,
        staged: &[Staged],
        pending: &[Pending],
        flushes: &[Flush],
    ) -> std::io::Result<()> {
        for p in pending {
            let e = &staged[p.cmd].events[p.event];
            let f = &flushes[p.flush];
            self.index.put_event(&IndexedEvent {
                seq: p.receipt.sequence,
                event_id: p.receipt.event_id,
                correlation_id: p.correlation_id,
                causation_id: e.causation_id,
                wall_ms: p.wall_ms,
                entity: e.entity.as_bytes(),
                scope: e.scope.as_bytes(),
                kind: e.kind,
                clock: p.receipt.clock,
                segment_id: f.seg as u32,
                frame_offset: f.at + p.offset,
                frame_len: p.len,
                batch_end: p.batch_end,
            })?;
        }
        Ok(())
    }

    /// A write failed midway: cancel every sequence this group reserved,
    /// make the cancellation durable, publish past it, reply, and poison.
    fn fail_group(&mut self, first: u64, cause: String, staged: Vec<Staged>) {
        let end = self.next_seq;
        tracing::error!(%cause, first, end, "append group failed; cancelling its sequences");
        let mut durable_cancel = Ok(());
        if end > first {
            let mut buf = Vec::new();
            encode_cancel(&mut buf, first, (end - first) as u32);
            let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
            // The cancel frame goes where the failed write began, over bytes
            // that were never published.
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
                self.gate.publish_visible(end);
            }
        }
        let err = match durable_cancel {
            Ok(()) => AppendError::Io {
                cause: cause.clone(),
                start: first,
                end,
            },
            Err(e) => AppendError::Poisoned {
                cause: format!("{cause}; the cancellation could not be made durable either: {e}"),
            },
        };
        self.poison(cause);
        for s in staged {
            match s.replay {
                Some(r) if !r.is_empty() => (s.done)(Ok(r)),
                _ => (s.done)(Err(err.clone())),
            }
        }
    }
}

fn group_events(c: &Cmd) -> usize {
    match c {
        Cmd::Append { events, .. } => events.len(),
        _ => 1,
    }
}
