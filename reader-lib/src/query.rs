//! Query planning and execution over one view and one loaded watermark:
//! chain walks from heads through `prev_*` links, or column scans.
//!
//! Heads and counts are hints: a head may name a row at or past `visible`
//! (followed back, never returned) or, after a crash, a row that is not
//! there. Every row reached through a link is checked (CRC, sequence,
//! chain key). A bad row at or past `visible` means the link is stale: the
//! query falls back to a column scan. A bad row below `visible` is corruption
//! and a typed error.
#![forbid(unsafe_code)]

use crate::error::{Chain, ReadError};
use crate::gate::Watermark;
use crate::prefixes::{PrefixCache, PrefixIds};
use crate::scan::{CellFilter, EntitySel, IdSet};
use crate::view::{Columns, View};
use std::sync::Arc;
use weir_protocol::index::{NS_ENTITY, NS_SCOPE, Row};
use weir_protocol::{KindFilter, Region};

mod by_id;
pub(crate) use by_id::{WARM_GROUP, get, get_warmed, probe_chunks, warm};

/// A chain step costs a random row read; a scan step one column cell.
const CHAIN_COST: u64 = 32;
/// How many times the cells a limited scan is expected to need it is
/// priced at.
const SCAN_MARGIN: u128 = 2;

/// Which chain to walk, and the key its rows must carry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key {
    Entity(u32),
    Scope(u32),
    Kind(u16),
}

impl Key {
    fn chain(self) -> Chain {
        match self {
            Self::Entity(_) => Chain::Entity,
            Self::Scope(_) => Chain::Scope,
            Self::Kind(_) => Chain::Kind,
        }
    }
    fn holds(self, row: &Row) -> bool {
        !row.is_cancelled()
            && match self {
                Self::Entity(id) => row.entity_id.get() == id,
                Self::Scope(id) => row.scope_id.get() == id,
                Self::Kind(k) => row.kind.get() == k,
            }
    }
    fn prev(self, row: &Row) -> u64 {
        match self {
            Self::Entity(_) => row.prev_entity.get(),
            Self::Scope(_) => row.prev_scope.get(),
            Self::Kind(_) => row.prev_kind.get(),
        }
    }
}

/// How a chain walk ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Reached the start of the chain, `from`, or the visitor stopped.
    Done,
    /// A link at or past `visible` led to a row that does not check out.
    Stale,
}

/// Walks a chain from `head` (newest sequence + 1) down to `from`, calling
/// `visit` newest first with each admitted row; `visit` returns `false` to stop.
pub(crate) fn walk<'v>(
    view: &'v View,
    wm: &Watermark,
    key: Key,
    head: u64,
    from: u64,
    mut visit: impl FnMut(&'v Row) -> Result<bool, ReadError>,
) -> Result<Walk, ReadError> {
    let mut link = head;
    while link != 0 {
        let seq = link - 1;
        if seq < from {
            break;
        }
        let published = seq < wm.visible;
        // A row reached from a head or link was written before the Release
        // store we acquired that named it (SYNC in `NameRef::head`/`kind_head`).
        let row = match view.row(seq) {
            Ok(r) => r,
            Err(_) if !published => return Ok(Walk::Stale),
            Err(e) => return Err(e),
        };
        let prev = key.prev(row);
        if !key.holds(row) || prev > seq {
            if !published {
                return Ok(Walk::Stale);
            }
            let what = if key.holds(row) {
                "link does not point backwards"
            } else {
                "row carries another key"
            };
            return Err(ReadError::BrokenLink {
                chain: key.chain(),
                sequence: seq,
                what,
            });
        }
        if let Key::Entity(_) = key {
            // Start fetching the row eight links down (a hint the daemon
            // wrote; the walk below still checks every row it reaches), so
            // that the walk's dependent misses overlap.
            let jump = u64::from(row.entity_jump.get());
            if let Some(down) = seq.checked_sub(jump).filter(|&s| jump != 0 && s >= from) {
                view.prefetch_row(down);
            }
        }
        if wm.admits(seq) && !visit(row)? {
            break;
        }
        link = prev;
    }
    Ok(Walk::Done)
}

/// Scans the columns over `[from, visible)` minus the cancelled ranges,
/// calling `visit` in sequence order with each row `filter` admits; `visit`
/// returns `false` to stop.
pub(crate) fn scan<'v>(
    view: &'v View,
    wm: &Watermark,
    filter: &CellFilter,
    from: u64,
    visit: impl FnMut(&'v Row) -> Result<bool, ReadError>,
) -> Result<(), ReadError> {
    scan_to(view, wm, filter, from, wm.visible, visit).map(drop)
}

/// [`scan`] over `[from, min(to, visible))`; returns the cells it looked at.
fn scan_to<'v>(
    view: &'v View,
    wm: &Watermark,
    filter: &CellFilter,
    from: u64,
    to: u64,
    mut visit: impl FnMut(&'v Row) -> Result<bool, ReadError>,
) -> Result<u64, ReadError> {
    let mut cells = 0;
    chunk_windows(view, wm, from, to, |base, start, cols| {
        let n = cols.kinds.len();
        for i in start..n {
            if !filter.cell(
                cols.kinds[i].get(),
                cols.scopes[i].get(),
                cols.entities[i].get(),
            ) {
                continue;
            }
            let seq = base + i as u64;
            let row = view.row(seq)?;
            if row.is_cancelled()
                || !filter.cell(row.kind.get(), row.scope_id.get(), row.entity_id.get())
            {
                return Err(ReadError::CorruptRow {
                    sequence: seq,
                    what: "columns disagree with the row",
                });
            }
            if clock_ok(filter, row) && !visit(row)? {
                cells += (i + 1 - start) as u64;
                return Ok(false);
            }
        }
        cells += (n - start) as u64;
        Ok(true)
    })?;
    Ok(cells)
}

/// Walks `[from, min(to, visible))` minus the cancelled ranges one chunk at
/// a time: `f(base, start, cols)` gets the chunk's first sequence, the first
/// cell to look at, and the columns up to the window's end; it returns
/// `false` to stop.
fn chunk_windows(
    view: &View,
    wm: &Watermark,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, usize, &Columns<'_>) -> Result<bool, ReadError>,
) -> Result<(), ReadError> {
    let log2 = view.geo.log2;
    for (lo, hi) in wm.open_runs(from, to.min(wm.visible)) {
        let mut s = lo;
        while s < hi {
            let base = (s >> log2) << log2;
            let end = hi.min(base + (1 << log2));
            let cols = view.columns(s >> log2, (end - base) as usize)?;
            if !f(base, (s - base) as usize, &cols)? {
                return Ok(());
            }
            s = end;
        }
    }
    Ok(())
}

fn clock_ok(filter: &CellFilter, row: &Row) -> bool {
    filter
        .clock
        .is_none_or(|(lo, hi)| (lo..=hi).contains(&row.clock.get()))
}

/// Is `row`, reached down `key`'s chain, below the filter's clock range,
/// and so every row after it on that chain? An entity's clock falls by one
/// per row down its chain (FORMAT.md, the row's clock), so its walk ends
/// at the range's low end; other chains interleave entities and do not.
fn below_clocks(key: Key, filter: &CellFilter, row: &Row) -> bool {
    matches!(key, Key::Entity(_)) && filter.clock.is_some_and(|(lo, _)| row.clock.get() < lo)
}

/// The rows of an entity's chain of `count` rows that a walk under the
/// filter's clock range reads: those from the head down to the range's low
/// end (clocks run 0 to `count - 1`; `count` is a hint).
fn entity_rows(filter: &CellFilter, count: u64) -> u64 {
    match filter.clock {
        Some((lo, _)) => count
            .saturating_sub(u64::from(lo))
            .saturating_add(1)
            .min(count),
        None => count,
    }
}

/// Counts what `scan` would visit, with the vectorised kernels when the
/// filter needs no row (no clock range).
pub(crate) fn scan_count(
    view: &View,
    wm: &Watermark,
    filter: &CellFilter,
    from: u64,
) -> Result<u64, ReadError> {
    if filter.clock.is_some() {
        let mut n = 0;
        scan(view, wm, filter, from, |_| {
            n += 1;
            Ok(true)
        })?;
        return Ok(n);
    }
    let mut total = 0;
    chunk_windows(view, wm, from, wm.visible, |_, i, cols| {
        total += filter.count(&cols.kinds[i..], &cols.scopes[i..], &cols.entities[i..]);
        Ok(true)
    })?;
    Ok(total)
}

/// A region resolved against the names: the cell filter, and the cheapest
/// chains that could answer it (none if no chain can), with their heads.
///
/// An entity prefix's chains (one per matching entity) are not among them
/// until [`resolve`](Plan::resolve) reads their heads: a query that the
/// number of matching entities alone prices for a scan never reads them.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) filter: CellFilter,
    chains: Vec<(Key, u64)>,
    /// The rows on `chains`: the sum of their names' counts. A hint: it may
    /// count unpublished rows, and rows the region does not select.
    rows: u64,
    /// The entity prefix's ids, if their chains may undercut `chains`.
    entities: Option<Arc<IdSet>>,
}

impl Plan {
    /// What walking the chains down to `from` costs, in column cells.
    fn chain_cost(&self, from: u64) -> u64 {
        if self.chains.is_empty() {
            u64::MAX
        } else if self.chains.iter().all(|&(_, head)| head <= from) {
            // Their newest rows lie below `from`: nothing to walk.
            0
        } else {
            self.rows.saturating_mul(CHAIN_COST)
        }
    }

    /// The cells a scan is expected to look at before it finds `limit`
    /// rows, at the density the chains' count gives (an upper bound of the
    /// region's: hence the margin).
    fn expected_cells(&self, visible: u64, limit: usize) -> u64 {
        if self.chains.is_empty() {
            return u64::MAX;
        }
        expected_cells(self.rows, visible, limit)
    }

    /// The plan with the entity prefix's chains read (one head per entity)
    /// and weighed against the others, as [`plan`] did before they were
    /// left unread: the first of equals, the entities' considered first.
    fn resolve(&self, view: &View, work: &mut Work) -> Result<Self, ReadError> {
        let mut plan = Self {
            filter: self.filter.clone(),
            chains: self.chains.clone(),
            rows: self.rows,
            entities: None,
        };
        let Some(set) = &self.entities else {
            return Ok(plan);
        };
        let mut chains = Vec::with_capacity(set.ids().len());
        let mut rows = 0u64;
        for &id in set.ids() {
            let (head, count) = view.string(id, NS_ENTITY)?.head();
            chains.push((Key::Entity(id), head));
            rows = rows.saturating_add(entity_rows(&self.filter, count));
        }
        work.heads += set.ids().len() as u64;
        if plan.chains.is_empty() || rows <= plan.rows {
            plan.chains = chains;
            plan.rows = rows;
        }
        Ok(plan)
    }
}

/// The cells a scan is expected to look at before it finds `limit` of
/// `rows` spread over `visible` (see [`Plan::expected_cells`]).
fn expected_cells(rows: u64, visible: u64, limit: usize) -> u64 {
    let cells = limit as u128 * u128::from(visible) * SCAN_MARGIN / u128::from(rows.max(1));
    u64::try_from(cells).unwrap_or(u64::MAX)
}

/// What an entity prefix's chains cost at least, unread: a head read per
/// entity, a random read as a chain step is.
fn heads_cost(set: &IdSet) -> u64 {
    (set.ids().len() as u64).saturating_mul(CHAIN_COST)
}

/// What queries read, for tests: rows reached through chains, column
/// cells scanned, entity heads read to plan.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Work {
    pub(crate) rows: u64,
    pub(crate) cells: u64,
    pub(crate) heads: u64,
}

/// Resolves `region`; `None` when a name it needs does not exist (empty answer).
pub(crate) fn plan(view: &View, region: &Region) -> Result<Option<Plan>, ReadError> {
    plan_with(view, region, None)
}

/// [`plan`], with the ids of an entity-prefix region taken from `known`
/// (brought up to date) instead of the view's cache.
pub(crate) fn plan_with<'v>(
    view: &'v View,
    region: &Region,
    known: Option<&mut PrefixIds<'v>>,
) -> Result<Option<Plan>, ReadError> {
    let scope = match &region.scope {
        None => None,
        Some(s) => match view.lookup(NS_SCOPE, s.as_bytes())? {
            None => return Ok(None),
            Some(n) => Some(n),
        },
    };
    let mut entities = None;
    let entity = match &region.entity_prefix {
        None => EntitySel::Any,
        Some(_) => {
            let set = match known {
                Some(known) => known.refresh(view, region)?,
                None => PrefixCache::ids(&view.prefixes, view, region)?,
            };
            if set.ids().is_empty() {
                return Ok(None);
            }
            let sel = EntitySel::of(&set);
            entities = Some(set);
            sel
        }
    };
    let filter = CellFilter {
        kind: region.kind,
        scope: scope.map(|s| s.id),
        entity,
        clock: region.clock_range,
    };
    // The cheapest chains (the first of equals); whether to walk them or
    // scan depends on where a query starts and how many rows it wants.
    let mut best: Option<(u64, Vec<(Key, u64)>)> = None;
    let mut consider = |rows: u64, chains: Vec<(Key, u64)>| {
        if best.as_ref().is_none_or(|b| rows < b.0) {
            best = Some((rows, chains));
        }
    };
    if let Some(s) = scope {
        let (head, count) = s.head();
        consider(count, vec![(Key::Scope(s.id), head)]);
    }
    if let KindFilter::Exact(k) = region.kind {
        let (head, count) = view.kind_head(k.0)?;
        consider(count, vec![(Key::Kind(k.0), head)]);
    }
    let (rows, chains) = best.unwrap_or_default();
    // Each entity's chain holds one row at least (a name is written with
    // its first event; counts are hints, and this only prices): the
    // entities' chains cannot undercut chains of no more rows than there
    // are entities.
    if !chains.is_empty()
        && entities
            .as_ref()
            .is_some_and(|s| s.ids().len() as u64 >= rows)
    {
        entities = None;
    }
    Ok(Some(Plan {
        filter,
        chains,
        rows,
        entities,
    }))
}

/// Rows of `plan` with sequence ≥ `from`, ascending, at most `limit`.
///
/// A chain walk reads every row of the chains above `from`, whatever the
/// limit (they run newest first); a scan stops at its `limit`th row. So a
/// scan is priced at the cells it is expected to look at, at most
/// `visible - from`. When that undercuts the chains, the scan goes on for
/// as many cells as the chains cost at most, and only a scan that has not
/// found `limit` rows by then (a region thinner around `from` than on
/// average) walks the chains down to where it stopped. So a page costs at
/// most about twice what the chains cost, and paging through a dense region
/// costs about one scan of it, not a walk of its chains per page.
///
/// An entity prefix's chains are priced first at their heads alone (every
/// chain the plan could take costs at least that), against a scan expected
/// to find `limit` rows at one per matching entity: when that already favours
/// the scan, it runs as far as the heads would cost, without reading them,
/// and they are read only if it stops short. So a page or a subscription's
/// refill over a prefix of many entities costs the cells it scans, not a
/// head per entity.
pub(crate) fn select<'v>(
    view: &'v View,
    wm: &Watermark,
    plan: &Plan,
    mut from: u64,
    limit: usize,
    work: &mut Work,
) -> Result<Vec<&'v Row>, ReadError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    // When the chains would cost `cost` and that is at least the cells a
    // scan is `expected` to need (or the rest of the log), scans as far as
    // `cost` from `from`: true when that filled the page or reached
    // `visible`.
    let filter = &plan.filter;
    let scan_first =
        |from: &mut u64, cost: u64, expected: u64, out: &mut Vec<&'v Row>, work: &mut Work| {
            let span = wm.visible.saturating_sub(*from);
            if cost < expected.min(span) {
                return Ok(false);
            }
            let to = from.saturating_add(cost.min(span));
            work.cells += scan_to(view, wm, filter, *from, to, |row| {
                out.push(row);
                Ok(out.len() < limit)
            })?;
            *from = to;
            Ok::<_, ReadError>(out.len() == limit || to >= wm.visible)
        };
    let resolved;
    let plan = match &plan.entities {
        None => plan,
        Some(set) => {
            let n = set.ids().len() as u64;
            let expected = expected_cells(n, wm.visible, limit);
            if scan_first(&mut from, heads_cost(set), expected, &mut out, work)? {
                return Ok(out);
            }
            resolved = plan.resolve(view, work)?;
            &resolved
        }
    };
    let (cost, expected) = (
        plan.chain_cost(from),
        plan.expected_cells(wm.visible, limit - out.len()),
    );
    if scan_first(&mut from, cost, expected, &mut out, work)? {
        return Ok(out);
    }
    let mut found = Vec::new();
    let mut stale = false;
    for &(key, head) in &plan.chains {
        let w = walk(view, wm, key, head, from, |row| {
            work.rows += 1;
            if plan
                .filter
                .cell(row.kind.get(), row.scope_id.get(), row.entity_id.get())
                && clock_ok(&plan.filter, row)
            {
                found.push(row);
            }
            Ok(!below_clocks(key, &plan.filter, row))
        })?;
        if w == Walk::Stale {
            stale = true;
            break;
        }
    }
    if !stale {
        found.sort_unstable_by_key(|r| r.sequence.get());
        found.truncate(limit - out.len());
        out.append(&mut found);
        return Ok(out);
    }
    work.cells += scan_to(view, wm, &plan.filter, from, wm.visible, |row| {
        out.push(row);
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

/// How many rows `select` would return without a limit.
pub(crate) fn count(
    view: &View,
    wm: &Watermark,
    plan: &Plan,
    work: &mut Work,
) -> Result<u64, ReadError> {
    if let Some(set) = &plan.entities {
        // As in `select`: the heads alone cost more than the scan.
        if heads_cost(set) >= wm.visible {
            return scan_count(view, wm, &plan.filter, 0);
        }
        return count(view, wm, &plan.resolve(view, work)?, work);
    }
    if plan.chain_cost(0) < wm.visible {
        Ok(select(view, wm, plan, 0, usize::MAX, work)?.len() as u64)
    } else {
        scan_count(view, wm, &plan.filter, 0)
    }
}

/// The entity's rows with sequence ≥ `from`, ascending.
pub(crate) fn stream<'v>(
    view: &'v View,
    wm: &Watermark,
    entity: &str,
    from: u64,
) -> Result<Vec<&'v Row>, ReadError> {
    let Some(name) = view.lookup(NS_ENTITY, entity.as_bytes())? else {
        return Ok(Vec::new());
    };
    let (head, count) = name.head();
    // The entity's event count, as a capacity hint (it may be ahead of
    // `visible`, and count rows below `from`; a damaged one is clamped):
    // growing the vector row by row was a tenth of a stream's instructions,
    // in `realloc` copies.
    let hint = count.min(wm.visible.saturating_sub(from)).min(1 << 16);
    let mut out = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    if walk(view, wm, Key::Entity(name.id), head, from, |row| {
        // Start fetching the frame (payloads are usually read next): the
        // walk's next row is a dependent miss anyway, so the frames' misses
        // overlap it instead of following it.
        view.prefetch_frame(row);
        out.push(row);
        Ok(true)
    })? == Walk::Stale
    {
        out.clear();
        let filter = CellFilter {
            kind: KindFilter::Any,
            scope: None,
            entity: EntitySel::One(name.id),
            clock: None,
        };
        scan(view, wm, &filter, from, |row| {
            out.push(row);
            Ok(true)
        })?;
        return Ok(out);
    }
    out.reverse();
    Ok(out)
}

/// The entity's newest admitted row.
pub(crate) fn latest<'v>(
    view: &'v View,
    wm: &Watermark,
    entity: &str,
) -> Result<Option<&'v Row>, ReadError> {
    let Some(name) = view.lookup(NS_ENTITY, entity.as_bytes())? else {
        return Ok(None);
    };
    let (head, _) = name.head();
    let mut found = None;
    if walk(view, wm, Key::Entity(name.id), head, 0, |row| {
        found = Some(row);
        Ok(false)
    })? == Walk::Stale
    {
        return Ok(stream(view, wm, entity, 0)?.pop());
    }
    Ok(found)
}
