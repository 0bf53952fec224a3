//! `Store`: the in-process handle on a running writer. The socket server and
//! in-process users (benchmarks, tests) append through it.

use crate::budget::Hold;
use crate::checkpoint::Checkpointer;
use crate::config::{Config, SyncPolicy};
use crate::error::{AppendError, OpenError};
use crate::gate::GateWriter;
use crate::home::Home;
use crate::ids::{IdGen, WallClock, now_ms, random_u128};
use crate::lock::DirLock;
use crate::proof::Published;
use crate::restore::{RestorePath, RestoreReport, restore};
use crate::stats::Shared;
use crate::storage::{FileStorage, Storage};
use crate::writer::{Cmd, Done, SyncDone, Writer, validate};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weir_protocol::gate::{
    CANCEL_CAPACITY, CANCEL_COUNT_OFF, CANCEL_OVERFLOW_OFF, CANCEL_RANGES_OFF, GATE_LEN,
    GateHeader, PUBLISHED_OFF, STATE_LIVE, STATE_OFF, VISIBLE_OFF, published_durable_only,
    read_id_key,
};
use weir_protocol::locate::IdKey;
use weir_protocol::wire::{AppendRequest, Receipt, ServedDir, Stats};
use zerocopy::FromBytes;

struct Inner {
    tx: Mutex<Option<SyncSender<Cmd>>>,
    closed: AtomicBool,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The thread deleting old index generations (joined at the stop).
    pruner: Mutex<Option<JoinHandle<()>>>,
    report: RestoreReport,
    instance: u128,
    /// The store's latest starts, this one last (for the hello).
    starts: Vec<weir_protocol::starts::Start>,
    /// The data directory's identity (for the hello).
    served: ServedDir,
    /// The data directory as the start found it (`home.rs`).
    home: Home,
    config: Config,
    _lock: DirLock,
}

/// A running writer over one data directory. Cheap to clone; all clones
/// share the writer. Dropping the last clone stops the writer cleanly.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

/// An append [`Store::submit_or_return`] refused, handed back whole.
pub struct Refused {
    /// Why.
    pub error: AppendError,
    /// The events, untouched.
    pub events: Vec<AppendRequest>,
    /// The reply callback, not called.
    pub done: Done,
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error)
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// What the previous instance's gate tells the next start.
struct PreviousGate {
    /// Its index generation (else the newest on disk).
    generation: Option<u64>,
    /// Its cancelled ranges, if they all fit in the gate.
    ranges: Option<Vec<(u64, u64)>>,
    /// The store's id key, kept from gate to gate.
    id_key: Option<IdKey>,
    /// What its words show the log held.
    published: Published,
}

fn previous_gate(data_dir: &Path, sync: SyncPolicy) -> PreviousGate {
    let none = || PreviousGate {
        generation: latest_generation(data_dir),
        ranges: None,
        id_key: None,
        published: Published::default(),
    };
    let Ok(bytes) = std::fs::read(data_dir.join("gate")) else {
        return none();
    };
    let header = (bytes.len() == GATE_LEN)
        .then(|| GateHeader::read_from_prefix(&bytes).ok())
        .flatten();
    let Some((h, _)) = header.filter(|(h, _)| h.crc_ok()) else {
        return none();
    };
    let word = |off: usize| u64::from_le_bytes(bytes[off..off + 8].try_into().expect("8 bytes"));
    let count = word(CANCEL_COUNT_OFF) as usize;
    let ranges = (word(CANCEL_OVERFLOW_OFF) == 0 && count <= CANCEL_CAPACITY).then(|| {
        (0..count)
            .map(|i| {
                (
                    word(CANCEL_RANGES_OFF + i * 16),
                    word(CANCEL_RANGES_OFF + i * 16 + 8),
                )
            })
            .collect()
    });
    PreviousGate {
        generation: Some(h.generation.get()),
        ranges,
        id_key: read_id_key(&bytes),
        published: Published::from_gate(
            word(STATE_OFF),
            word(VISIBLE_OFF),
            word(PUBLISHED_OFF),
            published_durable_only(&bytes),
            sync == SyncPolicy::Always,
        ),
    }
}

/// The highest-numbered index generation under `data_dir`.
pub fn latest_generation(data_dir: &Path) -> Option<u64> {
    std::fs::read_dir(data_dir.join("index"))
        .ok()?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("gen-")?
                .parse()
                .ok()
        })
        .max()
}

/// Under `sync = never`, segment bytes written between two starts of their
/// writeback (see [`FileStorage::write_behind`]).
const WRITE_BEHIND: u64 = 8 << 20;

/// How segments are written under `sync`: zero-filled ahead unless `never`
/// (it spares frequent syncs the conversion of unwritten extents, and would
/// only double the bytes written otherwise); writeback started every
/// [`WRITE_BEHIND`] bytes only under `never` (the other policies sync).
fn segment_writes(sync: SyncPolicy) -> (bool, Option<u64>) {
    let never = sync == SyncPolicy::Never;
    (!never, never.then_some(WRITE_BEHIND))
}

impl Store {
    /// Opens (creating if needed) the data directory, restores, publishes
    /// the gate and starts the writer.
    pub fn open(config: Config) -> Result<Self, OpenError> {
        // The segment files are touched (leftovers removed) only once the
        // directory lock is held: a second daemon must not disturb the first.
        let (zero_fill, write_behind) = segment_writes(config.sync);
        Self::open_inner(config, |home| {
            let dir = home.path();
            let storage = FileStorage::new(dir).map_err(OpenError::io(dir.join("segments")))?;
            Ok(Box::new(
                storage
                    .zero_fill(zero_fill)
                    .write_behind(write_behind)
                    .home(home.clone()),
            ))
        })
    }

    /// As [`Store::open`], with a storage seam (tests simulate crashes with it).
    pub fn open_with_storage(config: Config, storage: Box<dyn Storage>) -> Result<Self, OpenError> {
        Self::open_inner(config, |_| Ok(storage))
    }

    fn open_inner(
        config: Config,
        storage: impl FnOnce(&Home) -> Result<Box<dyn Storage>, OpenError>,
    ) -> Result<Self, OpenError> {
        config.validate()?;
        let dir = &config.data_dir;
        if dir.exists() && !dir.is_dir() {
            // `create_dir_all` would only say "File exists".
            return Err(OpenError::io(dir)(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        crate::modes::create_dir_all(dir).map_err(OpenError::io(dir))?;
        refuse_world_writable(dir)?;
        let lock = DirLock::acquire(dir)?;
        let served = served_dir(dir).map_err(OpenError::io(dir))?;
        let home = Home::new(dir.clone(), served.dev, served.ino);
        // Before restore: a damaged file stops the start before anything changes.
        let mut claims = crate::claims::Claims::load(dir)
            .map_err(|(path, what)| OpenError::Corrupt { path, what })?;
        claims.set_max(config.max_claimed_ids as usize);
        let storage = storage(&home)?;
        let started = Instant::now();
        let instance = random_u128();
        let previous = previous_gate(dir, config.sync);
        let recorded = crate::state::read_starts(dir);
        // A store keeps its id key (and mask) for life: from the previous
        // gate, or from `starts` if that gate has none (lost, written by a
        // build before the key, or naming a mask this build does not
        // know). A first start draws one; so does a start that finds
        // neither. (Ids made under a lost key are still found, through the
        // index.)
        let id_key = previous
            .id_key
            .or(recorded.id_key)
            .or_else(|| IdKey::from_bytes(random_u128().max(1).to_le_bytes()))
            .expect("a non-zero key");
        // A refused start removes the generation it was building (no gate
        // names it) and its `gate.tmp`: it leaves the files as it found them.
        let fresh = crate::index::generation_dir(dir, previous.generation.map_or(0, |g| g + 1));
        let refused = |e: OpenError| {
            discard_unpublished(dir, &fresh);
            e
        };
        let mut restored = restore(
            &config,
            storage,
            instance,
            previous.generation,
            previous.ranges,
            previous.published,
        )
        .map_err(refused)?;
        let generation = restored.index.generation();
        restored.index.set_home(home.clone());
        let header = GateHeader::new(
            instance,
            generation,
            config.chunk_rows_log2,
            std::process::id(),
            now_ms(),
        );
        let durable_only = config.sync == SyncPolicy::Always;
        let mut gate = GateWriter::prepare(dir, &header, id_key, durable_only)
            .map_err(OpenError::io(dir.join("gate.tmp")))
            .map_err(refused)?;
        // A new file (or a lowered bound) is written now, before the first
        // append.
        let seg_len = restored.log.writing_len();
        claims.use_segment_len(seg_len);
        if claims.dirty() {
            claims
                .settle(id_key, 0, None, seg_len)
                .map_err(OpenError::io(dir.join(crate::claims::CLAIMS_FILE)))
                .map_err(refused)?;
        }
        if restored.report.path == RestorePath::IndexFiles {
            // From now on the reused files change: the clean mark must go.
            // Only now: every step above that needs disk space (claimed-ids,
            // gate.tmp) could still refuse the start, and a refused start
            // must leave the mark, or the next one needs space for a whole
            // new generation.
            let mut cp = <weir_protocol::index::Checkpoint as zerocopy::FromZeros>::new_zeroed();
            cp.watermark = restored.next_seq.into();
            cp.segment_id = restored.log.position().segment_id.into();
            cp.segment_offset = restored.log.position().offset.into();
            cp.max_wall_ms = restored.max_wall_ms.into();
            let g = restored.index.generation();
            restored
                .index
                .checkpoint(cp)
                .map_err(OpenError::io(crate::index::generation_dir(dir, g)))
                .map_err(refused)?;
        }
        // The clean stop writes the idempotency window into these blocks:
        // it must not need free space (a full disk would cost the next
        // start the index files). Past the clean mark: the reused `idem`
        // is no longer trusted. A failure costs only that, later.
        let idem = crate::index::generation_dir(dir, generation).join("idem");
        if let Err(e) = crate::state::reserve_window(&idem, config.idempotency_window as usize) {
            tracing::warn!(error = %e, path = %idem.display(), "could not reserve the idempotency-window file; a stop on a full disk may then not save it, and the next start cannot reuse the index files");
        }
        gate.init(
            restored.next_seq,
            restored.next_seq,
            restored.log.position(),
            &restored.cancelled,
        );
        gate.heartbeat(now_ms());
        // Before readers can see the instance: a subscription that moves to
        // it looks its start up.
        let mut starts =
            crate::state::record_start(dir, id_key, recorded.starts, instance, restored.next_seq);
        starts.drain(
            ..starts
                .len()
                .saturating_sub(weir_protocol::starts::STARTS_IN_HELLO),
        );
        gate.publish(dir, STATE_LIVE)
            .map_err(OpenError::io(dir.join("gate")))
            .map_err(|e| {
                // Once renamed, the new gate names the new generation.
                if dir.join("gate.tmp").exists() {
                    refused(e)
                } else {
                    e
                }
            })?;
        // Off the start's path: unlinking an old generation's files (a few
        // hundred MiB, perhaps still being written back) took seconds here.
        let pruner = {
            let prune = home.clone();
            std::thread::Builder::new()
                .name("weir-prune".into())
                .spawn(move || remove_old_generations(&prune, generation))
                .map_err(|e| {
                    tracing::warn!(error = %e, "no thread to delete old index generations; deleting them now");
                    remove_old_generations(&home, generation);
                })
                .ok()
        };
        let mut report = restored.report;
        report.elapsed = started.elapsed();
        tracing::info!(
            path = report.path.name(),
            entries = report.entries,
            tail_entries = report.tail_entries,
            cancelled = report.cancelled,
            generation,
            elapsed_ms = report.elapsed.as_millis() as u64,
            fallback = report.fallback_reason.as_deref().unwrap_or("-"),
            "restored"
        );
        let shared = Arc::new(Shared::default());
        shared.set_segments(restored.log.segments);
        shared.set_visible(restored.next_seq);
        shared.tick();
        let clock = WallClock::new(restored.max_wall_ms);
        let mut ids = IdGen::new(Some(id_key));
        ids.raise_to(claims.floor());
        // No further than the floors the log and the claims restore: a
        // client may have chosen an id that names its own frame's place.
        let cap = claims.floor().max(clock.last() << 12 | 0xFFF);
        raise_past_log(&mut ids, &restored.index, restored.next_seq, cap);
        let writer = Writer {
            index: restored.index,
            log: restored.log,
            gate,
            next_seq: restored.next_seq,
            entities: restored.entities,
            idem: restored.idem,
            clock,
            ids,
            claims,
            shared: Arc::clone(&shared),
            poisoned: None,
            unsynced_events: 0,
            last_sync: Instant::now(),
            durable_seq: restored.next_seq,
            checkpoints: Checkpointer::new(
                Duration::from_millis(config.checkpoint_interval_ms.into()),
                restored.checkpoint,
                Arc::clone(&shared),
            ),
            config: config.clone(),
            spare: Default::default(),
            reclaim: Default::default(),
            home: home.clone(),
        };
        let (tx, rx) = sync_channel(config.writer_queue_capacity as usize);
        let handle = std::thread::Builder::new()
            .name("weir-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(OpenError::io(dir))?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                closed: AtomicBool::new(false),
                shared,
                writer: Mutex::new(Some(handle)),
                pruner: Mutex::new(pruner),
                report,
                instance,
                starts,
                served,
                home,
                config,
                _lock: lock,
            }),
        })
    }

    fn sender(&self) -> Result<SyncSender<Cmd>, AppendError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(AppendError::ShuttingDown);
        }
        self.inner
            .tx
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .ok_or(AppendError::ShuttingDown)
    }

    /// Queues an append without waiting; `done` gets the outcome. A full
    /// queue is refused at once with [`AppendError::Busy`].
    pub fn submit(&self, events: Vec<AppendRequest>, done: Done) -> Result<(), AppendError> {
        self.submit_or_return(events, done).map_err(|r| r.error)
    }

    /// [`submit`](Self::submit), but a refused command comes back whole
    /// with the error: `done`, so that the caller can answer through it,
    /// and the events, so that it can keep them (a transaction whose commit
    /// is refused as `Busy` stays open).
    #[allow(
        clippy::result_large_err,
        reason = "the command itself comes back; refusals are rare and not boxed for it"
    )]
    pub fn submit_or_return(&self, events: Vec<AppendRequest>, done: Done) -> Result<(), Refused> {
        self.submit_held(events, done, None)
    }

    /// [`submit_or_return`](Self::submit_or_return) with the hold the
    /// server took on the request's bytes (see `budget`): kept until the
    /// writer is done with the events, given back at once when refused.
    #[allow(
        clippy::result_large_err,
        reason = "the command itself comes back; refusals are rare and not boxed for it"
    )]
    pub(crate) fn submit_held(
        &self,
        events: Vec<AppendRequest>,
        done: Done,
        hold: Option<Hold>,
    ) -> Result<(), Refused> {
        let bytes = match self.check(&events) {
            Ok(bytes) => bytes,
            Err(error) => {
                return Err(Refused {
                    error,
                    events,
                    done,
                });
            }
        };
        let hold = hold.unwrap_or_else(|| Hold::unbudgeted(bytes));
        self.enqueue(Cmd::Append { events, done, hold }, false)
            .map_err(|(error, cmd)| match cmd {
                Cmd::Append { events, done, .. } => Refused {
                    error,
                    events,
                    done,
                },
                Cmd::Sync { .. } | Cmd::Stop { .. } => unreachable!("an append came back"),
            })
    }

    /// Sends `cmd` to the writer, counted in the queue depth (the writer
    /// discounts every command it takes). With `wait` the caller waits for
    /// room (in-process callers); without, a full queue is `Busy`. A
    /// refused command comes back with the error.
    #[allow(
        clippy::result_large_err,
        reason = "the command itself comes back; refusals are rare and not boxed for it"
    )]
    fn enqueue(&self, cmd: Cmd, wait: bool) -> Result<(), (AppendError, Cmd)> {
        let tx = match self.sender() {
            Ok(tx) => tx,
            Err(e) => return Err((e, cmd)),
        };
        self.inner.shared.enqueued();
        let sent = if wait {
            tx.send(cmd).map_err(|e| TrySendError::Disconnected(e.0))
        } else {
            tx.try_send(cmd)
        };
        sent.map_err(|refused| {
            self.inner.shared.dequeued(1);
            match refused {
                TrySendError::Full(cmd) => {
                    let e = AppendError::Busy {
                        depth: self.inner.shared.queue_depth(),
                        retry_after_ms: 5,
                    };
                    self.inner.shared.rejected(&e);
                    (e, cmd)
                }
                TrySendError::Disconnected(cmd) => (AppendError::ShuttingDown, cmd),
            }
        })
    }

    /// Validates a command on the caller's thread (the writer trusts it).
    fn check(&self, events: &[AppendRequest]) -> Result<u64, AppendError> {
        validate(&self.inner.config, events).inspect_err(|e| self.inner.shared.rejected(e))
    }

    fn call(&self, events: Vec<AppendRequest>) -> Result<Vec<Receipt>, AppendError> {
        let hold = Hold::unbudgeted(self.check(&events)?);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        // In-process callers wait for room instead of getting Busy.
        self.enqueue(Cmd::Append { events, done, hold }, true)
            .map_err(|(e, _)| e)?;
        rx.recv().map_err(|_| AppendError::ShuttingDown)?
    }

    /// Appends one event; returns once it is visible (and durable, per policy).
    pub fn append(&self, req: AppendRequest) -> Result<Receipt, AppendError> {
        self.call(vec![req]).map(|mut v| v.remove(0))
    }

    /// Appends a batch, all or nothing.
    pub fn append_batch(&self, reqs: Vec<AppendRequest>) -> Result<Vec<Receipt>, AppendError> {
        self.call(reqs)
    }

    /// Queues a sync without waiting: `done` gets the visible watermark
    /// once everything queued before it is durable. A refused sync (queue
    /// full: `Busy`; stopping) hands `done` back with the error.
    pub fn submit_sync(&self, done: SyncDone) -> Result<(), (AppendError, SyncDone)> {
        self.enqueue(Cmd::Sync { done }, false)
            .map_err(|(e, cmd)| match cmd {
                Cmd::Sync { done } => (e, done),
                Cmd::Append { .. } | Cmd::Stop { .. } => unreachable!("a sync came back"),
            })
    }

    /// Makes everything appended so far durable; returns the visible watermark.
    pub fn sync(&self) -> Result<u64, AppendError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let done: SyncDone = Box::new(move |r| drop(tx.send(r)));
        self.enqueue(Cmd::Sync { done }, true).map_err(|(e, _)| e)?;
        rx.recv().map_err(|_| AppendError::ShuttingDown)?
    }

    /// Statistics.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut s = self.inner.shared.snapshot();
        s.instance = self.inner.instance;
        s.restore_path = self.inner.report.path.name().into();
        s.restore_entries = self.inner.report.entries + self.inner.report.tail_entries;
        s.restore_ms = self.inner.report.elapsed.as_millis() as u64;
        s.index_bytes = dir_bytes(&self.inner.config.data_dir.join("index"));
        s
    }

    /// Shared counters (for the server and metrics).
    #[must_use]
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// How restore went.
    #[must_use]
    pub fn restore_report(&self) -> &RestoreReport {
        &self.inner.report
    }

    /// This instance's id.
    #[must_use]
    pub fn instance(&self) -> u128 {
        self.inner.instance
    }

    /// The store's latest starts, at most
    /// [`STARTS_IN_HELLO`](weir_protocol::starts::STARTS_IN_HELLO), this
    /// one last: each instance and the `visible` it started with.
    #[must_use]
    pub fn recent_starts(&self) -> &[weir_protocol::starts::Start] {
        &self.inner.starts
    }

    /// The data directory's identity as this instance found it at its
    /// start (its hello gives it).
    #[must_use]
    pub fn served_dir(&self) -> &ServedDir {
        &self.inner.served
    }

    /// The data directory as this instance found it at its start: what
    /// the daemon removes there by path is checked against it.
    #[must_use]
    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Stops accepting, finishes the queue, syncs, writes the clean-stop
    /// checkpoint, marks the gate STOPPED and joins the writer.
    pub fn shutdown(&self) -> Result<(), String> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let tx = self.inner.tx.lock().ok().and_then(|mut g| g.take());
        let writer = self.inner.writer.lock().ok().and_then(|mut g| g.take());
        let stopped = stop_writer(tx, writer);
        join_pruner(self.inner.pruner.lock().ok().and_then(|mut g| g.take()));
        stopped
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let tx = self.tx.get_mut().ok().and_then(Option::take);
            let writer = self.writer.get_mut().ok().and_then(Option::take);
            let _ = stop_writer(tx, writer);
        }
        join_pruner(self.pruner.get_mut().ok().and_then(Option::take));
    }
}

fn join_pruner(pruner: Option<JoinHandle<()>>) {
    if let Some(p) = pruner
        && p.join().is_err()
    {
        tracing::warn!("the thread deleting old index generations panicked");
    }
}

/// Apparent size of the files under `dir` (recursively); 0 if unreadable.
/// A file with several names (index chunks a checkpoint restart hard-linked
/// into the next generation) counts once.
pub fn dir_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return 0;
        };
        rd.filter_map(Result::ok)
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path(), seen),
                Ok(m) if seen.insert((m.dev(), m.ino())) => m.len(),
                _ => 0,
            })
            .sum()
    }
    walk(dir, &mut std::collections::HashSet::new())
}

/// After a refused start: removes the generation `fresh` it was building
/// and `gate.tmp`, neither of which a gate names.
/// Refuses a data directory, or a directory of the store's in it
/// (`segments/`, `index/` and its generations), that any user may write:
/// anyone could then delete or replace the store's files.
/// `dir`'s device and inode, which a copy of the directory does not share
/// and a rename keeps, and its resolved path.
fn served_dir(dir: &Path) -> std::io::Result<ServedDir> {
    use std::os::unix::ffi::OsStringExt;
    let meta = std::fs::metadata(dir)?;
    let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(ServedDir {
        dev: meta.dev(),
        ino: meta.ino(),
        path: path.into_os_string().into_vec(),
    })
}

fn refuse_world_writable(dir: &Path) -> Result<(), OpenError> {
    let index = dir.join("index");
    let generations = std::fs::read_dir(&index)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path());
    let dirs = [dir.to_path_buf(), dir.join("segments"), index.clone()];
    for d in dirs.into_iter().chain(generations) {
        let meta = match std::fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(OpenError::io(&d)(e)),
        };
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 {
            return Err(OpenError::InsecureDataDir {
                path: d,
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

fn discard_unpublished(data_dir: &Path, fresh: &Path) {
    for r in [
        std::fs::remove_dir_all(fresh),
        std::fs::remove_file(data_dir.join("gate.tmp")),
    ] {
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "could not remove what a refused start built");
        }
    }
}

/// Removes index generations older than `keep - 1`, and any newer than
/// `keep` (built by a start that never published them). The previous one
/// stays until the next start: readers of the last instance map its files
/// lazily (a pinned snapshot may still need a file it has not opened yet).
/// An older one that a reader's view still holds (a shared `flock` on its
/// directory) stays too, until a start finds it free. Unlinking never
/// invalidates a mapping that exists.
fn remove_old_generations(home: &Home, keep: u64) {
    let Ok(rd) = std::fs::read_dir(home.path().join("index")) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(g) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if g + 1 >= keep && g <= keep {
            continue;
        }
        // Held exclusively while it is deleted, so that a reader attaching
        // meanwhile gets no lock (and fails on the missing files) rather
        // than a lock on a directory being emptied.
        let _lock = match lock_generation(&e.path()) {
            Ok(lock) => lock,
            Err(nix::errno::Errno::EWOULDBLOCK) => {
                tracing::info!(
                    generation = g,
                    "a reader still uses an old index generation; it is left for a later start"
                );
                continue;
            }
            Err(errno) => {
                tracing::warn!(generation = g, error = %errno, "could not lock an old index generation");
                continue;
            }
        };
        // By path: never in a directory that has taken the store's place.
        if let Err(err) = home.check() {
            tracing::warn!(error = %err, "old index generations are left in place");
            return;
        }
        if let Err(err) = std::fs::remove_dir_all(e.path()) {
            tracing::warn!(generation = g, error = %err, "could not remove an old index generation");
        }
    }
}

/// An exclusive, non-blocking `flock` on the generation directory `path`:
/// `EWOULDBLOCK` while a reader's view holds it shared.
fn lock_generation(
    path: &Path,
) -> Result<nix::fcntl::Flock<std::os::fd::OwnedFd>, nix::errno::Errno> {
    use nix::fcntl::{Flock, FlockArg, OFlag};
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())?;
    Flock::lock(fd, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| errno)
}

/// Sends `Stop` (the writer finishes its queue, syncs and checkpoints),
/// waits for its answer and joins the writer thread.
fn stop_writer(tx: Option<SyncSender<Cmd>>, writer: Option<JoinHandle<()>>) -> Result<(), String> {
    let mut result = Ok(());
    if let Some(tx) = tx {
        let (rtx, rrx) = std::sync::mpsc::sync_channel(1);
        let done = Box::new(move |r| drop(rtx.send(r)));
        if tx.send(Cmd::Stop { done }).is_ok() {
            result = rrx.recv().unwrap_or(Ok(()));
        }
    }
    if let Some(h) = writer {
        let _ = h.join();
    }
    result
}

/// Raises `ids` past the newest id an earlier instance assigned (the last
/// self-locating id among the log's newest rows): one instance's ids
/// increase, and a new instance's go on after them even when its wall clock
/// stands behind the log's (a clock set back across a restart), where its
/// first ids used to repeat the last stamps. At most to `cap`.
fn raise_past_log(ids: &mut IdGen, index: &crate::index::IndexWriter, end: u64, cap: u64) {
    /// Rows looked back over for one (client-chosen ids are skipped).
    const LOOK_BACK: u64 = 64;
    // The daemon's own: the id names the place of the row's frame (a
    // client's id locates elsewhere, or is a claim the daemon skipped).
    let newest = (end.saturating_sub(LOOK_BACK)..end)
        .rev()
        .filter_map(|seq| index.row(seq))
        .filter(|row| !row.is_cancelled())
        .find(|row| {
            ids.locate(row.id()) == Some((u64::from(row.segment_id.get()), row.frame_offset.get()))
        })
        .map(|row| row.id());
    if let Some(stamp) = newest.and_then(weir_protocol::locate::id_stamp) {
        ids.raise_to(stamp.min(cap));
    }
}

#[cfg(test)]
mod tests {
    use super::{SyncPolicy, WRITE_BEHIND, dir_bytes, segment_writes};

    #[test]
    fn only_sync_never_writes_behind_and_only_it_skips_the_zero_fill() {
        assert_eq!(
            segment_writes(SyncPolicy::Never),
            (false, Some(WRITE_BEHIND))
        );
        for p in [
            SyncPolicy::Always,
            SyncPolicy::EveryNEvents,
            SyncPolicy::IntervalMs,
        ] {
            assert_eq!(segment_writes(p), (true, None), "{p:?}");
        }
    }

    #[test]
    fn dir_bytes_counts_a_hard_linked_file_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), [1u8; 100]).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/c"), [2u8; 50]).unwrap();
        assert_eq!(dir_bytes(d.path()), 150);
        std::fs::hard_link(d.path().join("a"), d.path().join("sub/b")).unwrap();
        assert_eq!(dir_bytes(d.path()), 150);
        assert_eq!(dir_bytes(&d.path().join("missing")), 0);
    }
}
