//! The entity ids an entity-prefix region matches, kept from query to query:
//! names are only ever added (at the strings end, FORMAT.md), so bringing
//! the ids up to date reads only the entries written since, not every name
//! of the store. A subscription keeps its own ([`PrefixIds`]); plain queries
//! share their view's ([`PrefixCache`]). String ids belong to a generation,
//! so neither is ever used with another view.
#![forbid(unsafe_code)]

use crate::error::ReadError;
use crate::view::View;
use std::sync::{Mutex, MutexGuard};
use weir_protocol::Region;
use weir_protocol::index::{NS_ENTITY, PAGE};

/// Prefixes a view's cache keeps.
const CACHED_PREFIXES: usize = 16;
/// Ids a view's cache keeps in all (16 MiB); a prefix matching more is not
/// kept.
const CACHED_IDS: usize = 1 << 22;

/// The ids one prefix matches among the names below `pos`.
#[derive(Debug, Clone)]
struct Matches {
    /// Where the next read of the strings starts.
    pos: u64,
    ids: Vec<u32>,
}

impl Default for Matches {
    fn default() -> Self {
        Self {
            pos: PAGE as u64,
            ids: Vec::new(),
        }
    }
}

impl Matches {
    /// Adds the matching names written since the last call; `read` counts
    /// the entity names read.
    fn refresh(&mut self, view: &View, region: &Region, read: &mut u64) -> Result<(), ReadError> {
        let before = self.ids.len();
        let ids = &mut self.ids;
        let pos = view.for_each_name_from(NS_ENTITY, self.pos, |n| {
            *read += 1;
            if std::str::from_utf8(n.name).is_ok_and(|s| region.entity_matches(s)) {
                ids.push(n.id);
            }
            Ok(())
        });
        match pos {
            Ok(pos) => self.pos = pos,
            // Read again from `pos` next time: drop what this read added.
            Err(e) => {
                self.ids.truncate(before);
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A subscription's ids, from refill to refill.
#[derive(Debug, Default)]
pub(crate) struct PrefixIds<'v> {
    view: Option<&'v View>,
    matches: Matches,
    /// Entity names read so far (all views), for tests.
    pub(crate) names_read: u64,
}

impl<'v> PrefixIds<'v> {
    /// Brings the ids up to date with `view` (starting over for another view).
    pub(crate) fn refresh(&mut self, view: &'v View, region: &Region) -> Result<&[u32], ReadError> {
        if !self.view.is_some_and(|v| std::ptr::eq(v, view)) {
            self.view = Some(view);
            self.matches = Matches::default();
        }
        self.matches.refresh(view, region, &mut self.names_read)?;
        Ok(&self.matches.ids)
    }
}

/// A view's ids of the prefixes its plain queries asked for last: at most
/// [`CACHED_PREFIXES`] of them, [`CACHED_IDS`] ids in all, the least
/// recently used dropped first.
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
    ) -> Result<Vec<u32>, ReadError> {
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
        let refreshed = matches.refresh(view, region, &mut read);
        let mut this = Self::lock(cache);
        this.names_read += read;
        refreshed?;
        // Keep what this read, unless another query has read further (or
        // it alone is over the bound: then the others stay).
        let at = this.entries.iter().position(|(p, _)| p == prefix);
        match at {
            Some(i) if this.entries[i].1.pos >= matches.pos => return Ok(matches.ids),
            _ if matches.ids.len() > CACHED_IDS => {
                if let Some(i) = at {
                    this.entries.remove(i);
                }
                return Ok(matches.ids);
            }
            Some(i) => this.entries[i].1 = matches.clone(),
            None => this.entries.push((prefix.to_owned(), matches.clone())),
        }
        let mut total: usize = this.entries.iter().map(|(_, m)| m.ids.len()).sum();
        while this.entries.len() > CACHED_PREFIXES || total > CACHED_IDS {
            total -= this.entries.remove(0).1.ids.len();
        }
        Ok(matches.ids)
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
