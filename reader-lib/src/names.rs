//! Interned names: string entries (`strings-{n:04}`) and the names table
//! (`names-{t:04}`) that maps (namespace, name) to a string id.
#![forbid(unsafe_code)]

use crate::error::ReadError;
use crate::view::{NAMES_OK_BLOCK_LOG2, View, le32};
use std::sync::atomic::{AtomicU64, Ordering, fence};
use weir_protocol::align8;
use weir_protocol::index::{
    PAGE, STRING_COUNT_OFF, STRING_CRC_OFF, STRING_ENTRY_HEADER, STRING_HEAD_OFF, STRINGS_FILE_LEN,
    STRINGS_FILE_LOG2, fingerprint, name_hash, string_crc, unpack_slot,
};

/// One checked string entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameRef<'a> {
    /// String id (global offset / 8).
    pub(crate) id: u32,
    /// Namespace tag.
    pub(crate) ns: u8,
    /// Name bytes.
    pub(crate) name: &'a [u8],
    head: &'a AtomicU64,
    count: &'a AtomicU64,
}

impl NameRef<'_> {
    /// (head, count): newest sequence + 1 with this name and the number of
    /// events; both may be ahead of the caller's `visible`.
    pub(crate) fn head(&self) -> (u64, u64) {
        let (h, c) = (
            self.head.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed),
        );
        // SYNC: pairs with the daemon's Release stores of heads and counts,
        // made after the rows they name were written (write order step 2).
        fence(Ordering::Acquire);
        (h, c)
    }
}

/// (strings file, offset in it) of the entry at global offset `pos`.
fn string_place(pos: u64) -> (u64, usize) {
    (
        pos >> STRINGS_FILE_LOG2,
        (pos & (STRINGS_FILE_LEN as u64 - 1)) as usize,
    )
}

fn corrupt(string_id: u64, what: &'static str) -> ReadError {
    ReadError::CorruptString { string_id, what }
}

impl View {
    fn names_ok_word(&self, pos: u64) -> Option<(&AtomicU64, u64)> {
        let i = pos >> NAMES_OK_BLOCK_LOG2;
        let block = match self.names_ok.get(i) {
            Some(b) => b,
            None => self
                .names_ok
                .get_or_try_init::<()>(i, || Ok((0..512).map(|_| AtomicU64::new(0)).collect()))?
                .ok()?,
        };
        let bit = (pos >> 3) & ((1 << (NAMES_OK_BLOCK_LOG2 - 3)) - 1);
        Some((block.get((bit / 64) as usize)?, 1 << (bit % 64)))
    }

    /// Has the entry at `pos` passed its checksum in this view before?
    fn name_checked(&self, pos: u64) -> bool {
        self.names_ok_word(pos)
            .is_some_and(|(w, m)| w.load(Ordering::Relaxed) & m != 0)
    }

    fn mark_name_checked(&self, pos: u64) {
        if let Some((w, m)) = self.names_ok_word(pos) {
            w.fetch_or(m, Ordering::Relaxed);
        }
    }

    /// The entry at global offset `pos` (8-aligned), checked; `Ok(None)` for
    /// an all-zero header, which ends a file's entries.
    fn entry_at(&self, pos: u64) -> Result<Option<NameRef<'_>>, ReadError> {
        let id = pos / 8;
        let (file, off) = string_place(pos);
        if off < PAGE || !pos.is_multiple_of(8) {
            return Err(corrupt(id, "offset inside a header page or misaligned"));
        }
        let map = self.strings_file(file)?;
        // Only the words the daemon never changes are read as bytes: the
        // head and count (bytes 8..24) are atomics it keeps storing to, read
        // below through `atomic_u64`.
        let fixed = map
            .published(off, 8)
            .ok_or_else(|| corrupt(id, "entry header past the file end"))?;
        let tail = map
            .published(off + STRING_CRC_OFF, 4)
            .ok_or_else(|| corrupt(id, "entry header past the file end"))?;
        let (len, ns, crc) = (le32(&fixed[..4]) as usize, fixed[4], le32(tail));
        if len == 0 && ns == 0 {
            return Ok(None);
        }
        let name = map
            .published(off + STRING_ENTRY_HEADER, len)
            .ok_or_else(|| corrupt(id, "name runs past the file end"))?;
        if !self.name_checked(pos) {
            if string_crc(ns, name) != crc {
                return Err(corrupt(id, "checksum mismatch"));
            }
            self.mark_name_checked(pos);
        }
        let head = map
            .atomic_u64(off + STRING_HEAD_OFF)
            .ok_or_else(|| corrupt(id, "head out of bounds"))?;
        let count = map
            .atomic_u64(off + STRING_COUNT_OFF)
            .ok_or_else(|| corrupt(id, "count out of bounds"))?;
        let id = u32::try_from(id).map_err(|_| corrupt(id, "string id beyond 32 bits"))?;
        Ok(Some(NameRef {
            id,
            ns,
            name,
            head,
            count,
        }))
    }

    /// Asks the CPU to fetch the header of string id `id`'s entry (for
    /// [`crate::query::warm`]; nothing is read or checked).
    pub(crate) fn prefetch_string(&self, id: u32) {
        let (file, off) = string_place(u64::from(id) * 8);
        if let Ok(m) = self.strings_file(file) {
            m.prefetch(off);
        }
    }

    /// The entry of string id `id`, which a published row named (so it was
    /// written before the row). `ns` is the namespace the row's field implies.
    pub(crate) fn string(&self, id: u32, ns: u8) -> Result<NameRef<'_>, ReadError> {
        let e = self
            .entry_at(u64::from(id) * 8)?
            .ok_or_else(|| corrupt(id.into(), "empty entry"))?;
        if e.ns != ns {
            return Err(corrupt(
                id.into(),
                "namespace differs from the field naming it",
            ));
        }
        Ok(e)
    }

    /// The name of string id `id` as text.
    pub(crate) fn name(&self, id: u32, ns: u8) -> Result<&str, ReadError> {
        let name = self.string(id, ns)?.name;
        match crate::map::ascii_str(name) {
            Some(text) => Ok(text),
            None => std::str::from_utf8(name).map_err(|_| corrupt(id.into(), "name is not UTF-8")),
        }
    }

    /// Looks (`ns`, `name`) up in the current names table.
    pub(crate) fn lookup(&self, ns: u8, name: &[u8]) -> Result<Option<NameRef<'_>>, ReadError> {
        let table = self.names_table()?;
        let hash = name_hash(ns, name);
        let slots = 1u64 << table.log2;
        let fp = fingerprint(hash);
        let mut i = hash & (slots - 1);
        for _ in 0..slots {
            let off = PAGE + 8 * i as usize;
            let slot = table
                .map
                .atomic_u64(off)
                .map_or(0, |a| a.load(Ordering::Relaxed));
            if slot == 0 {
                return Ok(None);
            }
            let Some((sid, sfp)) = unpack_slot(slot) else {
                return Err(corrupt(0, "names slot with an empty id field"));
            };
            if sfp == fp {
                // SYNC: pairs with the daemon's Release store of this slot,
                // made after it wrote the string entry.
                fence(Ordering::Acquire);
                let sid = u32::try_from(sid)
                    .map_err(|_| corrupt(sid as u64, "slot names an id beyond 32 bits"))?;
                let e = self.string(sid, ns)?;
                if e.name == name {
                    return Ok(Some(e));
                }
            }
            i = (i + 1) & (slots - 1);
        }
        Ok(None)
    }

    /// Calls `f` for every entry of namespace `ns` from global offset `pos`
    /// (a value this returned before, or the first entry's, `PAGE`) up to
    /// the strings end loaded now, in id order. Returns where the next call
    /// starts (entries are only ever added, at the strings end).
    pub(crate) fn for_each_name_from<'v>(
        &'v self,
        ns: u8,
        mut pos: u64,
        mut f: impl FnMut(NameRef<'v>) -> Result<(), ReadError>,
    ) -> Result<u64, ReadError> {
        let end = self.strings_end();
        let file_len = STRINGS_FILE_LEN as u64;
        while pos < end {
            let next_file = ((pos >> STRINGS_FILE_LOG2) + 1) << STRINGS_FILE_LOG2;
            if (pos & (file_len - 1)) < PAGE as u64 {
                // Exactly at a file boundary: entries start after the header page.
                pos = (pos & !(file_len - 1)) + PAGE as u64;
                continue;
            }
            if (pos & (file_len - 1)) as usize + STRING_ENTRY_HEADER > STRINGS_FILE_LEN {
                pos = next_file + PAGE as u64;
                continue;
            }
            match self.entry_at(pos)? {
                None => pos = next_file + PAGE as u64,
                Some(e) => {
                    pos += align8(STRING_ENTRY_HEADER + e.name.len()) as u64;
                    if e.ns == ns {
                        f(e)?;
                    }
                }
            }
        }
        Ok(pos)
    }
}
