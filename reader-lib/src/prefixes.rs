//! The entity ids an entity-prefix region matches, kept from query to query:
//! names are only ever added (at the strings end, FORMAT.md), so bringing
//! the ids up to date reads only the entries written since, not every name
//! of the store. A subscription keeps its own ([`PrefixIds`]); plain queries
//! share their view's ([`PrefixCache`]). String ids belong to a generation,
//! so neither is ever used with another view.
//!
//! The ids are kept as an [`IdSet`] (with its bitmap, which a scan's cell
//! filter reads), shared with the queries that use it: a query copies
//! neither the ids nor the bitmap, and new names extend them in place.
#![forbid(unsafe_code)]

use crate::error::ReadError;
use crate::scan::IdSet;
use crate::view::View;
use std::sync::{Arc, Mutex, MutexGuard};
use weir_protocol::Region;
use weir_protocol::index::{NS_ENTITY, PAGE};

/// Prefixes a view's cache keeps.
const CACHED_PREFIXES: usize = 16;
/// What a view's cache keeps in all, in u32s of ids and bitmaps (16 MiB); a
/// prefix whose set is larger is not kept.
const CACHED_IDS: usize = 1 << 22;

/// The ids one prefix matches among the names below `pos`.
#[derive(Debug, Clone)]
struct Matches {
    /// Where the next read of the strings starts.
    pos: u64,
    set: Arc<IdSet>,
}

impl Default for Matches {
    fn default() -> Self {
        Self {
            pos: PAGE as u64,
            set: Arc::default(),
        }
    }
}

/// The ids of the names from `pos` on that `region` matches, and where the
/// next read starts; `read` counts the entity names read.
fn read_from(
    view: &View,
    region: &Region,
    pos: u64,
    read: &mut u64,
) -> Result<(Vec<u32>, u64), ReadError> {
    let mut ids = Vec::new();
    let pos = view.for_each_name_from(NS_ENTITY, pos, |n| {
        *read += 1;
        if std::str::from_utf8(n.name).is_ok_and(|s| region.entity_matches(s)) {
            ids.push(n.id);
        }
        Ok(())
    })?;
    Ok((ids, pos))
}

impl Matches {
    /// Adds `ids` (read from `self.pos` up to `pos`). Copies the set only
    /// if a query still holds it.
    fn extend(&mut self, ids: &[u32], pos: u64) {
        if !ids.is_empty() {
            let set = Arc::make_mut(&mut self.set);
            for &id in ids {
                set.push(id);
            }
        }
        self.pos = pos;
    }
}

/// A subscription's ids, from refill to refill.
#[derive(Debug, Default)]
pub(crate) struct PrefixIds<'v> {
    view: Option<&'v View>,
    matches: Matches,
    /// Entity names read so far (all views), for tests.
    pub(crate) names_read: u64,
    /// Entity heads its refills read, for tests.
    pub(crate) heads_read: u64,
}

impl<'v> PrefixIds<'v> {
    /// Brings the ids up to date with `view` (starting over for another view).
    pub(crate) fn refresh(
        &mut self,
        view: &'v View,
        region: &Region,
    ) -> Result<Arc<IdSet>, ReadError> {
        if !self.view.is_some_and(|v| std::ptr::eq(v, view)) {
            self.view = Some(view);
            self.matches = Matches::default();
        }
        // A failed read adds nothing: the next one starts from `pos` again.
        let (ids, pos) = read_from(view, region, self.matches.pos, &mut self.names_read)?;
        self.matches.extend(&ids, pos);
        Ok(Arc::clone(&self.matches.set))
    }
}

/// A view's ids of the prefixes its plain queries asked for last: at most
/// [`CACHED_PREFIXES`] of them, [`CACHED_IDS`] in all, the least recently
/// used dropped first.
#[derive(Debug, Default)]
pub(crate) struct PrefixCache {
    /// Least recently used first.
    entries: Vec<(String, Matches)>,
    /// Entity names read so far, for tests.
    names_read: u64,
}

impl PrefixCache {
    /// The ids `region`'s entity prefix matches in `view`, whose cache this
    /// is, brought up to date. The names are read without the lock held:
    /// queries of other prefixes do not wait for a first walk over every
    /// name.
    pub(crate) fn ids(
        cache: &Mutex<Self>,
        view: &View,
        region: &Region,
    ) -> Result<Arc<IdSet>, ReadError> {
        let prefix = region.entity_prefix.as_deref().unwrap_or_default();
        let mut matches = {
            let mut this = Self::lock(cache);
            match this.entries.iter().position(|(p, _)| p == prefix) {
                Some(i) => {
                    let entry = this.entries.remove(i);
                    let matches = entry.1.clone();
                    this.entries.push(entry);
                    matches
                }
                None => Matches::default(),
            }
        };
        let mut read = 0;
        let fresh = read_from(view, region, matches.pos, &mut read);
        if fresh.as_ref().is_ok_and(|&(_, pos)| pos == matches.pos) {
            // No name written since: the lock is not taken again.
            return Ok(matches.set);
        }
        let mut this = Self::lock(cache);
        this.names_read += read;
        let (ids, pos) = fresh?;
        let at = this.entries.iter().position(|(p, _)| p == prefix);
        let start = matches.pos;
        match at {
            // Another query has read as far: take its set.
            Some(i) if this.entries[i].1.pos >= pos => {
                return Ok(Arc::clone(&this.entries[i].1.set));
            }
            // The entry as this read found it: extend it in place (the
            // set is copied only if a query still holds it).
            Some(i) if this.entries[i].1.pos == start => {
                drop(matches);
                this.entries[i].1.extend(&ids, pos);
                matches = this.entries[i].1.clone();
                if matches.set.size() > CACHED_IDS {
                    this.entries.remove(i);
                    return Ok(matches.set);
                }
            }
            _ => {
                matches.extend(&ids, pos);
                if matches.set.size() > CACHED_IDS {
                    // Alone over the bound: the others stay.
                    if let Some(i) = at {
                        this.entries.remove(i);
                    }
                    return Ok(matches.set);
                }
                match at {
                    Some(i) => this.entries[i].1 = matches.clone(),
                    None => this.entries.push((prefix.to_owned(), matches.clone())),
                }
            }
        }
        let mut total: usize = this.entries.iter().map(|(_, m)| m.set.size()).sum();
        while this.entries.len() > CACHED_PREFIXES || total > CACHED_IDS {
            total -= this.entries.remove(0).1.set.size();
        }
        Ok(matches.set)
    }

    /// Entity names the view's plain queries have read, for tests.
    pub(crate) fn names_read(cache: &Mutex<Self>) -> u64 {
        Self::lock(cache).names_read
    }

    /// The cache; emptied if a thread panicked while holding it (an entry
    /// may be half brought up to date).
    fn lock(cache: &Mutex<Self>) -> MutexGuard<'_, Self> {
        cache.lock().unwrap_or_else(|poisoned| {
            let mut this = poisoned.into_inner();
            this.entries.clear();
            cache.clear_poison();
            this
        })
    }
}
