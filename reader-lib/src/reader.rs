//! [`Reader`]: the attached data directory, re-attached after a daemon
//! restart; [`Snapshot`]: one pinned watermark for several queries.
#![forbid(unsafe_code)]

use crate::entry::Entry;
use crate::error::{AttachError, ReadError};
use crate::gate::Watermark;
use crate::lazy::LazyTable;
use crate::located;
use crate::prefixes::{PrefixCache, PrefixIds};
use crate::query;
use crate::view::View;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use weir_protocol::gate::{STATE_LIVE, STATE_STARTING, STATE_STOPPED, STATE_SUPERSEDED};
use weir_protocol::index::{NS_ENTITY, NS_SCOPE, Row};
use weir_protocol::{EventId, Region};

/// Views a reader holds (daemon restarts it attached to since it opened,
/// or since its last `release_old_views`).
const MAX_VIEWS: usize = 1 << 16;
/// Pause between attempts to open a replacement gate that failed to open
/// (a damaged file); a gate that is simply not in place yet is retried at
/// the next query.
const RETRY: Duration = Duration::from_millis(10);
/// How often a reader looks for a gate replaced without its own being
/// marked superseded (one `stat`): while its gate says stopped (at every
/// 64th query of a thread, at most this often), and while it waits for
/// events.
const REPLACED_CHECK_MS: u64 = 100;

/// Lock-free, read-only access to a weir data directory, from any process.
///
/// Every query loads the gate's `visible` watermark and cancelled ranges
/// once, answers from the mapped index and segments, and returns only
/// events published below that watermark. Queries take no lock and make no
/// syscall once the files they touch are mapped (each is mapped on first use).
/// (An entity-prefix region's query takes its view's cache of matching ids,
/// a mutex of this process, twice for a moment; never while reading the store.)
///
/// A daemon restart is invisible: when the gate says it was superseded, the
/// next query opens the new gate and switches to it once it validates; until
/// then answers come from the last view. Every view stays mapped until the
/// `Reader` drops, so entries borrowed from an old view stay valid.
///
/// [`Entry`](crate::Entry), [`Snapshot`] and [`Subscription`](crate::Subscription)
/// borrow the `Reader`: a thread that consumes a subscription for good opens its
/// own `Reader` (cheap: O(1) in the number of events), or runs in a
/// `std::thread::scope` that the `Reader` outlives.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    views: LazyTable<View>,
    current: AtomicU64,
    /// Serialises re-attaching; holds the state of the last attempt.
    attach: Mutex<Attach>,
    /// When the reader was opened, and ms after it when the gate file may
    /// next be checked for a replacement (`follow_replaced`).
    born: Instant,
    next_replaced_check: AtomicU64,
    /// Gates opened by re-attach attempts (for tests).
    reattach_opens: AtomicU64,
}

/// What the last re-attach attempt left.
#[derive(Debug)]
struct Attach {
    /// The earliest time of the next attempt.
    next_try: Instant,
    /// Why it could not open the gate in place of the current view's, if
    /// that is why it failed: until an attempt succeeds, queries fail with
    /// this rather than answer from the old view.
    failed: Option<Arc<AttachError>>,
}

/// The daemon's state as its gate shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaemonState {
    /// Restoring; `visible` may still be 0.
    Starting,
    /// Serving (or killed: see the heartbeat).
    Live,
    /// Stopped cleanly; the store is final until a daemon starts again.
    Stopped,
    /// A newer instance replaced this gate; the reader re-attaches.
    Superseded,
    /// A value this build does not know.
    Unknown(u64),
}

/// What the current gate says, for `stat`-like tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Daemon state.
    pub state: DaemonState,
    /// Daemon instance id.
    pub instance: u128,
    /// Which store the daemon serves: the same value from instance to
    /// instance of one store (a hash of its id key, which every start
    /// carries over), another for a store deleted and created anew at the
    /// same path (or forked from a copy). `None` for a gate of a build
    /// before 2026-11-28, which holds no id key.
    pub store: Option<u64>,
    /// Index generation.
    pub generation: u64,
    /// Daemon pid (informational).
    pub pid: u32,
    /// Exclusive visibility watermark.
    pub visible: u64,
    /// Last heartbeat, ms since the Unix epoch (stale when the daemon was killed).
    pub heartbeat_ms: u64,
}

/// True on every 64th call on this thread: a counter in thread-local
/// storage, no shared cache line written.
/// [`Reader::get`] in `view`, at the gate's current watermark: a
/// self-locating id needs no snapshot (one frame, checked against the
/// watermark in place); anything else goes through the index.
fn get_now(view: &View, id: EventId) -> Result<Option<Entry<'_>>, ReadError> {
    if let Some(e) = located::get_now(view, id.0) {
        return Ok(Some(e));
    }
    Snapshot::get_indexed(view, &view.gate.watermark(), id)
}

fn every_64th_call() -> bool {
    thread_local!(static CALLS: std::cell::Cell<u8> = const { std::cell::Cell::new(0) });
    CALLS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n % 64 == 0
    })
}

impl Reader {
    /// Attaches to the data directory `dir`: maps and validates `gate` and
    /// the index generation's `meta`. O(1) in the number of events; works
    /// whether the daemon runs, stopped, or was killed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, AttachError> {
        Self::open_with_max_views(dir, MAX_VIEWS)
    }

    /// [`open`](Self::open), holding at most `max_views` views (at least
    /// 1) rather than 65,536. For tests.
    #[doc(hidden)]
    pub fn open_with_max_views(
        dir: impl AsRef<Path>,
        max_views: usize,
    ) -> Result<Self, AttachError> {
        let dir = dir.as_ref().to_owned();
        let view = View::open(&dir)?;
        let views = LazyTable::new(max_views.max(1));
        let _ = views.get_or_try_init::<()>(0, || Ok(view));
        Ok(Self {
            dir,
            views,
            current: AtomicU64::new(0),
            attach: Mutex::new(Attach {
                next_try: Instant::now(),
                failed: None,
            }),
            born: Instant::now(),
            next_replaced_check: AtomicU64::new(0),
            reattach_opens: AtomicU64::new(0),
        })
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The current view: one atomic load, plus one for the gate's state.
    /// The last view if the new instance's gate is in place but cannot be
    /// attached (for `status`, `visible` and waits; queries fail then:
    /// see [`snapshot`](Self::snapshot)).
    pub(crate) fn view(&self) -> &View {
        let i = self.current.load(Ordering::Acquire);
        self.current_view_at(i).unwrap_or_else(|_| self.slot(i))
    }

    /// The view in slot `i` or the one it moved to, or why the gate of
    /// the instance that superseded it cannot be attached.
    fn current_view_at(&self, i: u64) -> Result<&View, Arc<AttachError>> {
        let v = self.slot(i);
        match v.gate.state() {
            STATE_SUPERSEDED => self.reattach(i, v),
            // A daemon that starts marks the gate it replaces; a gate put in
            // place otherwise (a store deleted and created anew) is found by
            // its inode, looked at now and then: every 64th query of a
            // thread reads the clock (reading it on every query cost a
            // lookup on a stopped store 10 %).
            STATE_STOPPED if every_64th_call() => Ok(self.follow_replaced(i, v)),
            _ => Ok(v),
        }
    }

    /// The view in slot `i` (`current`, loaded with Acquire by the caller).
    fn slot(&self, i: u64) -> &View {
        // Slot `i` was filled before `current` was set to `i` (Release in
        // `reattach`), and slot 0 in `open`; `OnceLock::get` acquires it.
        let Some(v) = self.views.get(i).or_else(|| self.views.get(0)) else {
            unreachable!("slot 0 is filled by Reader::open")
        };
        v
    }

    /// Re-attaches if the data directory's gate is another file than the
    /// one `v` mapped; looks at most every [`REPLACED_CHECK_MS`].
    #[cold]
    fn follow_replaced<'a>(&'a self, i: u64, v: &'a View) -> &'a View {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let due = self.next_replaced_check.load(Ordering::Relaxed);
        let mine = now >= due
            && self
                .next_replaced_check
                .compare_exchange(
                    due,
                    now.saturating_add(REPLACED_CHECK_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if mine && v.gate_replaced() {
            // A store replaced at the path (not superseded): its old view
            // still answers consistently until the new one attaches.
            self.reattach(i, v).unwrap_or(v)
        } else {
            v
        }
    }

    /// After a query on `failed` could not open or map a file: the view to
    /// answer from instead, if the reader is on another one now or the gate
    /// was replaced (looked at now, whatever `failed`'s gate says: a killed
    /// daemon's still says live, and a store deleted with its files gives
    /// only errors).
    #[cold]
    fn after_attach_error<'a>(&'a self, failed: &View) -> Option<&'a View> {
        let i = self.current.load(Ordering::Acquire);
        let v = self.slot(i);
        if !std::ptr::eq(v, failed) {
            return Some(v);
        }
        if !v.gate_replaced() {
            return None;
        }
        let now = self.reattach(i, v).ok()?;
        (!std::ptr::eq(now, v)).then_some(now)
    }

    /// `run` on a snapshot of the current view; once more on the new view
    /// if it failed to open or map a file of a store replaced meanwhile
    /// ([`after_attach_error`](Self::after_attach_error)).
    fn retried<'a, T>(
        &'a self,
        run: impl Fn(&Snapshot<'a>) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let snap = self.snapshot();
        match run(&snap) {
            Err(ReadError::Attach(e)) => match self.after_attach_error(snap.view) {
                Some(v) => run(&Snapshot::of(v)),
                None => Err(ReadError::Attach(e)),
            },
            r => r,
        }
    }

    /// [`follow_replaced`](Self::follow_replaced) whatever the gate's state
    /// says: for waiters, whom a killed daemon's gate (still "live") would
    /// otherwise keep on a replaced store for good.
    pub(crate) fn poll_replaced(&self) {
        let i = self.current.load(Ordering::Acquire);
        if let Some(v) = self.views.get(i) {
            self.follow_replaced(i, v);
        }
    }

    /// Slow path after a supersede: open the new gate and switch once it is
    /// past STARTING. A caller that finds another thread re-attaching waits
    /// for it (well under a millisecond) rather than answer from the old
    /// view, which could miss an event the new daemon has acknowledged.
    /// For the same reason, when another gate is in place but cannot be
    /// attached (no descriptor or mapping left, a damaged file), this is
    /// the error rather than the old view; while none is in place yet, the
    /// old view is still right.
    #[cold]
    fn reattach<'a>(&'a self, i: u64, old: &'a View) -> Result<&'a View, Arc<AttachError>> {
        let mut last = self.attach.lock().unwrap_or_else(PoisonError::into_inner);
        let cur = self.current.load(Ordering::Acquire);
        if cur != i {
            return Ok(self.views.get(cur).unwrap_or(old));
        }
        let candidate = match self.views.get(i + 1) {
            Some(c) => c,
            None => {
                if Instant::now() < last.next_try {
                    return last.failed.clone().map_or(Ok(old), Err);
                }
                // The daemon marks the old gate before it renames its own
                // into place: until then the path names the old gate, and
                // a `stat` says so without the open, mmap and flock of a
                // view (a start that died between the two would otherwise
                // cost every query those). No back-off: the first query
                // after the rename must see the new gate, or it could
                // answer from the old view after the new daemon went live.
                if !old.gate_replaced() {
                    last.failed = None;
                    return Ok(old);
                }
                self.reattach_opens.fetch_add(1, Ordering::Relaxed);
                match View::open(&self.dir) {
                    Ok(v) if v.gate.header.instance != old.gate.header.instance => {
                        last.failed = None;
                        match self.views.get_or_try_init::<()>(i + 1, || Ok(v)) {
                            Some(Ok(c)) => c,
                            // The table is full: the old view could miss
                            // what the new daemon acknowledged.
                            _ => {
                                last.next_try = Instant::now() + RETRY;
                                let limit = usize::try_from(i + 1).unwrap_or(usize::MAX);
                                let e = Arc::new(AttachError::TooManyViews { limit });
                                last.failed = Some(Arc::clone(&e));
                                return Err(e);
                            }
                        }
                    }
                    // The same instance (a gate put back in place of a
                    // copy of itself): nothing to switch to.
                    Ok(_) => {
                        last.failed = None;
                        return Ok(old);
                    }
                    // Another gate is in place (the `stat` above takes no
                    // descriptor, so this holds under EMFILE too).
                    Err(e) => {
                        last.next_try = Instant::now() + RETRY;
                        let e = Arc::new(e);
                        last.failed = Some(Arc::clone(&e));
                        return Err(e);
                    }
                }
            }
        };
        if candidate.gate.state() == STATE_STARTING {
            return Ok(old);
        }
        // SYNC: pairs with the Acquire load in `view`; slot i + 1 is filled.
        self.current.store(i + 1, Ordering::Release);
        Ok(candidate)
    }

    /// Unmaps what this reader still maps of the daemon instances it has
    /// moved past (their gates, index files and segments); returns how many
    /// such views it dropped. A reader keeps every view it attached to until
    /// it drops, so that entries borrowed from an old one stay valid; after
    /// a daemon restart that built a new index generation (a crash, a
    /// rebuild), the old generation's files, which the daemon deletes, keep
    /// their disk space until then (about 220 MiB per generation at the
    /// defaults). A long-lived reader calls this now and then, e.g. when
    /// [`status`](Self::status)`().instance` changes; `&mut self` makes sure
    /// that nothing borrowed from the reader is alive.
    ///
    /// A reader holds at most 65,536 views: one that attached that many
    /// without releasing fails its queries with
    /// [`AttachError::TooManyViews`] (in [`ReadError::Reattach`]) until
    /// this is called.
    pub fn release_old_views(&mut self) -> usize {
        let current = *self.current.get_mut();
        // The current view moves to slot 0: the next restart's takes 1.
        let dropped = self.views.keep_only(current);
        *self.current.get_mut() = 0;
        *self
            .attach
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Attach {
            next_try: Instant::now(),
            failed: None,
        };
        dropped
    }

    /// Gates this reader opened trying to re-attach. For tests.
    #[doc(hidden)]
    #[must_use]
    pub fn reattach_opens(&self) -> u64 {
        self.reattach_opens.load(Ordering::Relaxed)
    }

    /// Pins the current watermark (and view) for several queries.
    #[must_use]
    ///
    /// If the daemon was superseded and the new instance's gate cannot be
    /// attached, the snapshot pins the last view but its queries fail with
    /// [`ReadError::Reattach`]: the new daemon may have acknowledged
    /// events the last view does not show.
    pub fn snapshot(&self) -> Snapshot<'_> {
        let i = self.current.load(Ordering::Acquire);
        match self.current_view_at(i) {
            Ok(v) => Snapshot::of(v),
            Err(e) => Snapshot {
                refused: Some(e),
                ..Snapshot::of(self.slot(i))
            },
        }
    }

    /// The current `visible` watermark: sequences below it are published.
    #[must_use]
    pub fn visible(&self) -> u64 {
        self.view().gate.visible()
    }

    /// What the current gate says about the daemon.
    #[must_use]
    pub fn status(&self) -> Status {
        let v = self.view();
        let h = &v.gate.header;
        let state = match v.gate.state() {
            STATE_STARTING => DaemonState::Starting,
            STATE_LIVE => DaemonState::Live,
            STATE_STOPPED => DaemonState::Stopped,
            STATE_SUPERSEDED => DaemonState::Superseded,
            s => DaemonState::Unknown(s),
        };
        Status {
            state,
            instance: u128::from_le_bytes(h.instance),
            store: v.gate.store,
            generation: h.generation.get(),
            pid: h.pid.get(),
            visible: v.gate.visible(),
            heartbeat_ms: v.gate.heartbeat_ms(),
        }
    }

    /// The event with this id, if visible.
    ///
    /// A `get` that finds its event does not look for a replaced store
    /// (that takes a `stat`; a loop of lookups makes no syscall). On a
    /// stopped store one that finds nothing, or fails, does, at most every
    /// 100 ms; one that cannot open or map a file does whatever the gate
    /// says (a replaced store's files are gone). Either asks the new store
    /// if there is one.
    pub fn get(&self, id: EventId) -> Result<Option<Entry<'_>>, ReadError> {
        let i = self.current.load(Ordering::Acquire);
        let view = self.view_for_get(i).map_err(ReadError::Reattach)?;
        let found = get_now(view, id);
        let now = match found {
            Ok(Some(_)) => return found,
            Err(ReadError::Attach(_)) => self.after_attach_error(view),
            _ if view.gate.state() == STATE_STOPPED => {
                let now = self.follow_replaced(i, view);
                (!std::ptr::eq(now, view)).then_some(now)
            }
            _ => None,
        };
        match now {
            Some(now) => get_now(now, id),
            None => found,
        }
    }

    /// [`view`](Self::view) without the replaced-store check of a stopped
    /// gate, for [`get`](Self::get), which makes it only on a miss.
    fn view_for_get(&self, i: u64) -> Result<&View, Arc<AttachError>> {
        let v = self.slot(i);
        if v.gate.state() == STATE_SUPERSEDED {
            return self.reattach(i, v);
        }
        Ok(v)
    }
    /// [`get`](Self::get) for each of `ids`, answers in the same order, all
    /// from one snapshot. Faster than `get` in a loop when the ids are spread
    /// over a store larger than the CPU cache: for 32 lookups at a time it
    /// prefetches the id slots, then the rows, then the name entries and the
    /// first bytes of the frames, step by step, so that their cache misses
    /// overlap, and reads each row once (≈ 2.9× `get` on a 1M-event store here).
    pub fn get_many(&self, ids: &[EventId]) -> Result<Vec<Option<Entry<'_>>>, ReadError> {
        self.retried(|s| s.get_many(ids))
    }
    /// The entity's newest visible event.
    pub fn latest(&self, entity: &str) -> Result<Option<Entry<'_>>, ReadError> {
        self.retried(|s| s.latest(entity))
    }
    /// The entity's visible events, oldest first.
    pub fn stream(&self, entity: &str) -> Result<Vec<Entry<'_>>, ReadError> {
        self.retried(|s| s.stream(entity))
    }
    /// The entity's visible events with sequence > `after_seq`, oldest first.
    pub fn stream_since(&self, entity: &str, after_seq: u64) -> Result<Vec<Entry<'_>>, ReadError> {
        self.retried(|s| s.stream_since(entity, after_seq))
    }
    /// The visible events `region` selects, in global sequence order.
    pub fn query(&self, region: &Region) -> Result<Vec<Entry<'_>>, ReadError> {
        self.retried(|s| s.query(region))
    }
    /// One page of [`query`](Self::query): the first `limit` events with
    /// sequence > `after_seq` (all sequences for `None`). Pass the last
    /// sequence of a page to get the next one.
    pub fn query_after(
        &self,
        region: &Region,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry<'_>>, ReadError> {
        self.retried(|s| s.query_after(region, after_seq, limit))
    }
    /// How many visible events `region` selects, by column scans where it can.
    pub fn count(&self, region: &Region) -> Result<u64, ReadError> {
        self.retried(|s| s.count(region))
    }
}

/// One pinned watermark: every query on a snapshot sees the same events,
/// whatever the daemon publishes meanwhile.
#[derive(Debug)]
pub struct Snapshot<'r> {
    view: &'r View,
    wm: Watermark,
    /// Every cancelled range, built on the first [`cancelled`](Self::cancelled)
    /// call when the gate's range slots overflowed.
    all_cancelled: OnceLock<Vec<(u64, u64)>>,
    /// What its queries read ([`work`](Self::work)), for tests.
    rows_walked: AtomicU64,
    cells_scanned: AtomicU64,
    heads_read: AtomicU64,
    /// Why the view of the instance that superseded `view` could not be
    /// attached: every query fails with it.
    refused: Option<Arc<AttachError>>,
}

impl<'r> Snapshot<'r> {
    /// A snapshot of `view` at its gate's current watermark.
    fn of(view: &'r View) -> Self {
        Self {
            view,
            wm: view.gate.watermark(),
            all_cancelled: OnceLock::new(),
            rows_walked: AtomicU64::new(0),
            cells_scanned: AtomicU64::new(0),
            heads_read: AtomicU64::new(0),
            refused: None,
        }
    }

    /// `Ok` unless the snapshot was taken when the new instance's gate
    /// could not be attached.
    pub(crate) fn usable(&self) -> Result<(), ReadError> {
        match &self.refused {
            None => Ok(()),
            Some(e) => Err(ReadError::Reattach(Arc::clone(e))),
        }
    }

    /// The view the snapshot answers from.
    pub(crate) fn view(&self) -> &'r View {
        self.view
    }
    /// The pinned watermark.
    pub(crate) fn watermark(&self) -> &Watermark {
        &self.wm
    }
    /// The pinned watermark: sequences below it (and not cancelled) are visible.
    #[must_use]
    pub fn visible(&self) -> u64 {
        self.wm.visible
    }
    /// Every cancelled range `[start, end)` below the pinned watermark,
    /// sorted and merged. Usually the ranges loaded with the watermark; when
    /// more were cancelled than the gate holds (or the gate's ranges could
    /// not be read), the rest come from the tombstone rows, in one scan of
    /// the index's entity column on the first call (kept for later calls).
    ///
    /// A range the daemon cancelled before it published past it (a failed
    /// write's) ends at the watermark here.
    pub fn cancelled(&self) -> Result<&[(u64, u64)], ReadError> {
        self.usable()?;
        if let Some(all) = self.all_cancelled.get() {
            return Ok(all);
        }
        let visible = self.wm.visible;
        let below = |r: &[(u64, u64)]| {
            r.iter()
                .filter(|&&(start, _)| start < visible)
                .map(|&(start, end)| (start, end.min(visible)))
                .collect::<Vec<_>>()
        };
        let all = if self.wm.overflow {
            below(&crate::cancelled::complete(self.view, &self.wm)?)
        } else {
            below(self.wm.cancelled())
        };
        Ok(self.all_cancelled.get_or_init(|| all))
    }

    fn entries(&self, rows: Vec<&'r Row>) -> Result<Vec<Entry<'r>>, ReadError> {
        // Neighbouring rows mostly share their coordinate (a stream always
        // shares the entity): names never change once written, so the last
        // pair looked up is reused while the ids match.
        let mut last_ids = None;
        let mut names = ("", "");
        rows.into_iter()
            .map(|r| {
                let ids = (r.entity_id.get(), r.scope_id.get());
                if last_ids != Some(ids) {
                    names = (
                        self.view.name(ids.0, NS_ENTITY)?,
                        self.view.name(ids.1, NS_SCOPE)?,
                    );
                    last_ids = Some(ids);
                }
                Ok(Entry::with_names(self.view, r, names.0, names.1))
            })
            .collect()
    }

    /// See [`Reader::get`].
    pub fn get(&self, id: EventId) -> Result<Option<Entry<'r>>, ReadError> {
        self.usable()?;
        if let Some(e) = located::get(self.view, &self.wm, id.0) {
            return Ok(Some(e));
        }
        Self::get_indexed(self.view, &self.wm, id)
    }
    /// [`get`](Self::get) through the index only.
    fn get_indexed(
        view: &'r View,
        wm: &Watermark,
        id: EventId,
    ) -> Result<Option<Entry<'r>>, ReadError> {
        query::get(view, wm, id.0)?
            .map(|r| {
                // The frame is usually read next (payload, hashes): start
                // fetching it now, so that its cache misses overlap the name
                // lookups of `Entry::new`. (`get_many` has fetched it already.)
                view.prefetch_frame(r);
                Entry::new(view, r)
            })
            .transpose()
    }
    /// See [`Reader::get_many`].
    pub fn get_many(&self, ids: &[EventId]) -> Result<Vec<Option<Entry<'r>>>, ReadError> {
        self.usable()?;
        let mut out = Vec::with_capacity(ids.len());
        let chunks = query::probe_chunks(self.view, &self.wm)?;
        let mut rest = Vec::with_capacity(query::WARM_GROUP);
        for ids in ids.chunks(query::WARM_GROUP) {
            // Self-locating ids first: fetch all their frames, then read
            // them; the others go through the index, warmed as a group.
            let mut places = [None; query::WARM_GROUP];
            for (p, id) in places.iter_mut().zip(ids) {
                *p = located::place(self.view, id.0);
                if let Some(at) = *p {
                    located::prefetch(self.view, at);
                }
            }
            let published = self.view.gate.published();
            let start = out.len();
            rest.clear();
            for (&id, p) in ids.iter().zip(places) {
                let e = p.and_then(|at| located::get_at(self.view, &self.wm, published, id.0, at));
                if e.is_none() {
                    rest.push(id);
                }
                out.push(e);
            }
            if rest.is_empty() {
                continue;
            }
            let hints = query::warm(self.view, &self.wm, &chunks, &rest);
            let misses = out[start..].iter_mut().filter(|e| e.is_none());
            for ((slot, &id), hint) in misses.zip(&rest).zip(hints) {
                let row = match hint {
                    Some(seq) => query::get_warmed(self.view, &self.wm, id.0, seq)?,
                    None => query::get(self.view, &self.wm, id.0)?,
                };
                *slot = row.map(|r| Entry::new(self.view, r)).transpose()?;
            }
        }
        Ok(out)
    }
    /// See [`Reader::latest`].
    pub fn latest(&self, entity: &str) -> Result<Option<Entry<'r>>, ReadError> {
        self.usable()?;
        query::latest(self.view, &self.wm, entity)?
            .map(|r| Entry::new(self.view, r))
            .transpose()
    }
    /// See [`Reader::stream`].
    pub fn stream(&self, entity: &str) -> Result<Vec<Entry<'r>>, ReadError> {
        self.usable()?;
        self.entries(query::stream(self.view, &self.wm, entity, 0)?)
    }
    /// See [`Reader::stream_since`].
    pub fn stream_since(&self, entity: &str, after_seq: u64) -> Result<Vec<Entry<'r>>, ReadError> {
        self.usable()?;
        let Some(from) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.entries(query::stream(self.view, &self.wm, entity, from)?)
    }
    /// See [`Reader::query`].
    pub fn query(&self, region: &Region) -> Result<Vec<Entry<'r>>, ReadError> {
        self.query_from(region, 0, usize::MAX)
    }
    /// See [`Reader::query_after`].
    pub fn query_after(
        &self,
        region: &Region,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry<'r>>, ReadError> {
        match after_seq.map_or(Some(0), |s| s.checked_add(1)) {
            Some(from) => self.query_from(region, from, limit),
            None => Ok(Vec::new()),
        }
    }
    /// Events with sequence ≥ `from`, at most `limit`.
    pub(crate) fn query_from(
        &self,
        region: &Region,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Entry<'r>>, ReadError> {
        self.query_from_with(region, from, limit, None)
    }
    /// [`query_from`](Self::query_from), an entity-prefix region's ids
    /// taken from (and kept in) `known`.
    pub(crate) fn query_from_with(
        &self,
        region: &Region,
        from: u64,
        limit: usize,
        mut known: Option<&mut PrefixIds<'r>>,
    ) -> Result<Vec<Entry<'r>>, ReadError> {
        self.usable()?;
        let Some(plan) = query::plan_with(self.view, region, known.as_deref_mut())? else {
            return Ok(Vec::new());
        };
        let mut work = query::Work::default();
        let rows = query::select(self.view, &self.wm, &plan, from, limit, &mut work);
        if let Some(known) = known {
            known.heads_read += work.heads;
        }
        self.add_work(work);
        self.entries(rows?)
    }
    /// See [`Reader::count`].
    pub fn count(&self, region: &Region) -> Result<u64, ReadError> {
        self.usable()?;
        let Some(plan) = query::plan(self.view, region)? else {
            return Ok(0);
        };
        let mut work = query::Work::default();
        let n = query::count(self.view, &self.wm, &plan, &mut work);
        self.add_work(work);
        n
    }

    fn add_work(&self, work: query::Work) {
        self.rows_walked.fetch_add(work.rows, Ordering::Relaxed);
        self.cells_scanned.fetch_add(work.cells, Ordering::Relaxed);
        self.heads_read.fetch_add(work.heads, Ordering::Relaxed);
    }

    /// Entity names read to resolve entity-prefix regions by the plain
    /// queries (and counts) of every snapshot of this one's daemon instance:
    /// each reads only the names added since the last query of its prefix.
    /// For tests.
    #[doc(hidden)]
    #[must_use]
    pub fn prefix_names_read(&self) -> u64 {
        PrefixCache::names_read(&self.view.prefixes)
    }

    /// Rows this snapshot's queries read through chains, and column cells
    /// they scanned (counts and streams not included). For tests.
    #[doc(hidden)]
    #[must_use]
    pub fn work(&self) -> (u64, u64) {
        (
            self.rows_walked.load(Ordering::Relaxed),
            self.cells_scanned.load(Ordering::Relaxed),
        )
    }

    /// Entity heads this snapshot's queries and counts read to plan an
    /// entity-prefix region (one per matching entity, when they weigh its
    /// chains). For tests.
    #[doc(hidden)]
    #[must_use]
    pub fn heads_read(&self) -> u64 {
        self.heads_read.load(Ordering::Relaxed)
    }
}
