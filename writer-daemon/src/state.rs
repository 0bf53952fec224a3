//! The writer's in-memory state that restore rebuilds: per-entity chain
//! heads and the idempotency window.

use crate::fxhash::FxHashMap;
use std::collections::VecDeque;
use weir_protocol::wire::Receipt;

/// The newest event of one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityState {
    /// Its clock.
    pub clock: u32,
    /// Its event_hash (the next event's prev_hash).
    pub hash: [u8; 32],
    /// Its name's string id in the index, so that indexing its next event
    /// need not look the name up again; `NO_NAME` until its first event is
    /// indexed.
    pub entity_id: u32,
}

/// Remembered idempotency keys, oldest forgotten first.
#[derive(Debug, Default)]
pub struct IdemWindow {
    cap: usize,
    map: FxHashMap<u128, Receipt>,
    /// Keys in the order they were stored, each with the sequence it was
    /// stored at. A key stored again (a rebuild meeting a key that had left
    /// a smaller window) is pushed again and its older entry goes stale
    /// (its sequence is no longer the map's): stale entries are skipped, and
    /// dropped when they reach the front or outnumber the window.
    order: VecDeque<(u128, u64)>,
}

impl IdemWindow {
    /// A window of `cap` keys.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            map: FxHashMap::with_capacity_and_hasher(cap.min(1 << 16), Default::default()),
            order: VecDeque::new(),
        }
    }

    /// The receipt recorded for `key`.
    #[must_use]
    pub fn get(&self, key: u128) -> Option<&Receipt> {
        self.map.get(&key)
    }

    /// Records a key as the newest (the oldest is forgotten past the
    /// capacity). A key recorded before at another sequence, stored again
    /// after it left a smaller window, moves to the newest place.
    pub fn insert(&mut self, key: u128, receipt: Receipt) {
        use std::collections::hash_map::Entry;
        if self.cap == 0 {
            return;
        }
        let seq = receipt.sequence;
        if let Some(old) = self.map.insert(key, receipt)
            && old.sequence == seq
        {
            return;
        }
        self.order.push_back((key, seq));
        while self.map.len() > self.cap {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if let Entry::Occupied(e) = self.map.entry(old)
                && e.get().sequence == at
            {
                e.remove();
            }
        }
        // Every key has one live entry; the rest are stale. Dropping them
        // once they outnumber the window keeps `order` within twice it, at
        // O(1) amortized.
        if self.order.len() - self.map.len() > self.cap {
            let map = &self.map;
            self.order.retain(|&(k, at)| live(map, k, at));
        }
    }

    /// Forgets a key (a failed group takes its keys back).
    pub fn remove(&mut self, key: u128) {
        if self.map.remove(&key).is_some() {
            self.order.retain(|(k, _)| *k != key);
        }
    }

    /// Every (key, receipt), oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u128, &Receipt)> {
        self.order.iter().filter_map(|&(k, at)| {
            self.map
                .get(&k)
                .filter(|r| r.sequence == at)
                .map(|r| (k, r))
        })
    }

    /// Keys remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Nothing remembered?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Is `(key, at)` the entry of `key`'s current receipt (not a stale one)?
fn live(map: &FxHashMap<u128, Receipt>, key: u128, at: u64) -> bool {
    map.get(&key).is_some_and(|r| r.sequence == at)
}

/// Magic of the idempotency-window file (`index/gen-{g}/idem`).
pub const IDEM_MAGIC: [u8; 8] = *b"WEIRIDEM";
/// Its layout version.
pub const IDEM_VERSION: u32 = 1;
/// Bytes per entry: key (16), event id (16), sequence (8), clock (4),
/// reserved (4), event hash (32).
pub const IDEM_ENTRY_LEN: usize = 80;

/// Appends one window entry ([`IDEM_ENTRY_LEN`] bytes) to `buf`.
pub(crate) fn put_entry(buf: &mut Vec<u8>, key: u128, r: &Receipt) {
    buf.extend_from_slice(&key.to_le_bytes());
    buf.extend_from_slice(&r.event_id.to_le_bytes());
    buf.extend_from_slice(&r.sequence.to_le_bytes());
    buf.extend_from_slice(&r.clock.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&r.event_hash);
}

/// Reads one window entry written by [`put_entry`].
pub(crate) fn entry_at(e: &[u8]) -> (u128, Receipt) {
    let key = u128::from_le_bytes(e[..16].try_into().expect("16 bytes"));
    let receipt = Receipt {
        event_id: u128::from_le_bytes(e[16..32].try_into().expect("16 bytes")),
        sequence: u64::from_le_bytes(e[32..40].try_into().expect("8 bytes")),
        clock: u32::from_le_bytes(e[40..44].try_into().expect("4 bytes")),
        event_hash: e[48..80].try_into().expect("32 bytes"),
        durable: true,
        replayed: true,
    };
    (key, receipt)
}

/// Writes `buf` to `path` through a temporary file that is synced and
/// renamed over it; the directory is synced too, so the new name is durable.
/// A temporary file that fails is removed: on a full disk it would hold the
/// last free blocks.
pub(crate) fn write_synced(path: &std::path::Path, buf: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = crate::modes::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Name of the file that records each start's `visible` (`docs/FORMAT.md`,
/// "Starts").
pub const STARTS_FILE: &str = "starts";

/// What `<dir>/starts` holds; empty if it is missing, unreadable or damaged
/// (logged: the start then writes a new one).
pub(crate) fn read_starts(dir: &std::path::Path) -> weir_protocol::starts::Starts {
    let path = dir.join(STARTS_FILE);
    let empty = weir_protocol::starts::Starts {
        id_key: None,
        starts: Vec::new(),
    };
    match std::fs::read(&path) {
        Ok(b) => weir_protocol::starts::decode(&b).unwrap_or_else(|what| {
            tracing::warn!(path = %path.display(), what, "the starts file is damaged; writing a new one");
            empty
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => empty,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not read the starts file; writing a new one");
            empty
        }
    }
}

/// Writes `<dir>/starts` (whole, synced, renamed) with the store's `id_key`
/// and `earlier` starts followed by this one. Failing costs only precision:
/// a subscription that cannot find every start since its instance takes the
/// new instance's `visible` as the lowest, as builds before the file did,
/// and a start after a build that kept no id key draws a new one. So a
/// failure is logged, not a refused start.
/// Returns the starts (this one last), as far as the file holds them.
pub(crate) fn record_start(
    dir: &std::path::Path,
    id_key: weir_protocol::locate::IdKey,
    mut earlier: Vec<weir_protocol::starts::Start>,
    instance: u128,
    visible: u64,
) -> Vec<weir_protocol::starts::Start> {
    let path = dir.join(STARTS_FILE);
    earlier.push(weir_protocol::starts::Start { instance, visible });
    if let Err(e) = write_synced(&path, &weir_protocol::starts::encode(id_key, &earlier)) {
        tracing::warn!(path = %path.display(), error = %e, "could not record this start; subscriptions moving to this instance may not see an unsynced tail that a crash lost");
    }
    earlier
}

/// Bytes of an `idem` file with room for `cap` entries.
#[must_use]
pub fn window_file_len(cap: usize) -> u64 {
    (24 + cap * IDEM_ENTRY_LEN + 4) as u64
}

/// Reserves the blocks of the `idem` file at `path` (created if missing,
/// never shrunk) for a window of `cap` keys, so that the clean stop writes
/// the window in place without allocating: on a full disk a stop that
/// could not save it would cost the next start its index files. A failed
/// reservation gives back what it allocated.
pub fn reserve_window(path: &std::path::Path, cap: usize) -> std::io::Result<()> {
    // Readable too: `crate::modes::fallocate`.
    let f = crate::modes::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let had = f.metadata()?.len();
    let want = window_file_len(cap);
    if let Err(e) = crate::modes::fallocate(&f, want.max(had)) {
        if had == 0 {
            let _ = std::fs::remove_file(path);
        } else {
            let _ = f.set_len(had);
        }
        return Err(e);
    }
    Ok(())
}

/// Writes the window, oldest first, over the start of the `idem` file at
/// `path` ([`reserve_window`] reserved its blocks) and syncs it: the next
/// clean start reads it back instead of scanning. The caller writes the
/// clean-stop checkpoint only after this succeeded: until then the file
/// may be torn, and no start trusts it.
pub fn save_window(path: &std::path::Path, w: &IdemWindow) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(24 + w.len() * IDEM_ENTRY_LEN + 4);
    buf.extend_from_slice(&IDEM_MAGIC);
    buf.extend_from_slice(&IDEM_VERSION.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&(w.len() as u64).to_le_bytes());
    for (k, r) in w.iter() {
        put_entry(&mut buf, k, r);
    }
    let crc = weir_protocol::crc32(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let f = crate::modes::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &buf, 0)?;
    f.sync_all()?;
    // Its name, if the reservation at start made it, must be durable too.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a window written by [`save_window`]; `Err` names what is wrong.
/// Only the window's bytes are read, not the rest of the reservation.
pub fn load_window(path: &std::path::Path, cap: usize) -> Result<IdemWindow, String> {
    use std::io::Read;
    let bad = |what: &str| format!("{}: {what}", path.display());
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut head = [0u8; 24];
    if len < 28 || f.read_exact(&mut head).is_err() || head[..8] != IDEM_MAGIC {
        return Err(bad("not an idempotency-window file"));
    }
    if u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) != IDEM_VERSION {
        return Err(bad("unsupported version"));
    }
    let n = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
    let body = n
        .checked_mul(IDEM_ENTRY_LEN as u64)
        .and_then(|x| x.checked_add(24))
        .filter(|b| b.checked_add(4).is_some_and(|end| end <= len))
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| bad("count past the end of the file"))?;
    let mut b = head.to_vec();
    b.resize(body + 4, 0);
    f.read_exact(&mut b[24..]).map_err(io)?;
    let stored = u32::from_le_bytes(b[body..].try_into().expect("4 bytes"));
    if weir_protocol::crc32(&b[..body]) != stored {
        return Err(bad("checksum mismatch"));
    }
    let mut w = IdemWindow::new(cap);
    for e in b[24..body].chunks_exact(IDEM_ENTRY_LEN) {
        let (key, receipt) = entry_at(e);
        w.insert(key, receipt);
    }
    Ok(w)
}

/// Per-entity state, keyed by entity name.
pub type Entities = crate::namekey::NameMap<EntityState>;

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: u64) -> Receipt {
        Receipt {
            event_id: 1,
            sequence: seq,
            clock: 0,
            event_hash: [0; 32],
            durable: true,
            replayed: false,
        }
    }

    #[test]
    fn window_files_round_trip_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("idem");
        reserve_window(&p, 3).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), window_file_len(3));
        let mut w = IdemWindow::new(3);
        for k in 1..=5u128 {
            w.insert(
                k,
                Receipt {
                    event_hash: [k as u8; 32],
                    ..r(k as u64)
                },
            );
        }
        save_window(&p, &w).unwrap();
        let back = load_window(&p, 3).unwrap();
        assert_eq!(
            back.iter()
                .map(|(k, r)| (k, r.sequence))
                .collect::<Vec<_>>(),
            vec![(3, 3), (4, 4), (5, 5)]
        );
        assert_eq!(back.get(4).unwrap().event_hash, [4; 32]);
        // Written in place: a smaller window leaves the older bytes after
        // its checksum, which are not read.
        let mut small = IdemWindow::new(3);
        small.insert(9, r(9));
        save_window(&p, &small).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), window_file_len(3));
        let back = load_window(&p, 3).unwrap();
        assert_eq!(back.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![9]);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(load_window(&p, 3).unwrap_err().contains("checksum"));
        // A count past the end of the file.
        bytes[16] = 200;
        std::fs::write(&p, &bytes).unwrap();
        assert!(load_window(&p, 3).unwrap_err().contains("past the end"));
        std::fs::write(&p, b"junk").unwrap();
        assert!(load_window(&p, 3).is_err());
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way: the rename fails once the file is written.
        let p = dir.path().join("claimed-ids");
        std::fs::create_dir_all(p.join("x")).unwrap();
        assert!(write_synced(&p, &[7; 4096]).is_err());
        assert!(!dir.path().join("claimed-ids.tmp").exists());
    }

    #[test]
    fn window_forgets_the_oldest() {
        let mut w = IdemWindow::new(2);
        w.insert(1, r(1));
        w.insert(2, r(2));
        w.insert(3, r(3));
        assert!(w.get(1).is_none());
        assert_eq!(w.get(3).unwrap().sequence, 3);
        w.remove(3);
        assert!(w.get(3).is_none());
        assert_eq!(w.len(), 1);
    }

    /// A key stored again (a rebuild or checkpoint replay with a window
    /// larger than the one it left) is the newest: it is forgotten after the
    /// keys stored before it, not at its first place.
    #[test]
    fn a_key_stored_again_moves_to_the_newest_place() {
        let mut w = IdemWindow::new(4);
        for (k, seq) in [(1, 0), (2, 1), (3, 2), (1, 3), (4, 4)] {
            w.insert(k, r(seq));
        }
        let keys = |w: &IdemWindow| w.iter().map(|(k, r)| (k, r.sequence)).collect::<Vec<_>>();
        assert_eq!(keys(&w), [(2, 1), (3, 2), (1, 3), (4, 4)]);
        w.insert(5, r(5));
        assert!(w.get(2).is_none(), "the oldest key goes first");
        assert_eq!(w.get(1).unwrap().sequence, 3);
        assert_eq!(keys(&w), [(3, 2), (1, 3), (4, 4), (5, 5)]);
        // The same receipt again changes nothing.
        w.insert(3, r(2));
        assert_eq!(keys(&w), [(3, 2), (1, 3), (4, 4), (5, 5)]);
        // One key stored again and again: stale entries stay bounded, and
        // the window still forgets oldest first.
        for seq in 6..1000 {
            w.insert(9, r(seq));
        }
        assert!(w.order.len() <= 2 * 4, "{}", w.order.len());
        assert_eq!(keys(&w), [(1, 3), (4, 4), (5, 5), (9, 999)]);
        w.insert(6, r(1000));
        assert_eq!(keys(&w), [(4, 4), (5, 5), (9, 999), (6, 1000)]);
        w.remove(9);
        assert_eq!(keys(&w), [(4, 4), (5, 5), (6, 1000)]);
    }
}
