//! Interned entity and scope names: append-only strings files plus the
//! names table that maps (namespace, name) to a string id.

use crate::mapped::MappedFile;
use crate::namekey::NameMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use weir_protocol::index::{
    FileHeader, NAMES_MAGIC, NAMES_MIN_LOG2, NS_ENTITY, NS_SCOPE, PAGE, STRING_COUNT_OFF,
    STRING_CRC_OFF, STRING_ENTRY_HEADER, STRING_HEAD_OFF, STRINGS_FILE_LEN, STRINGS_FILE_LOG2,
    STRINGS_MAGIC, StringEntry, fingerprint, name_hash, pack_slot, string_crc, unpack_slot,
};
use weir_protocol::{align8, index::META_NAMES_TABLE_OFF, index::META_STRINGS_END_OFF};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The writer's side of the names: files, table, and an in-memory mirror.
#[derive(Debug)]
pub struct Names {
    dir: PathBuf,
    files: Vec<MappedFile>,
    /// Global offset where the next entry goes.
    end: u64,
    table: MappedFile,
    table_no: u64,
    table_log2: u32,
    used: usize,
    /// Entity names (index 0) and scope names (index 1) to string ids.
    ids: [NameMap<u32>; 2],
    /// The next table, while a helper thread builds it.
    growth: Option<Growth>,
    /// The data directory, checked before each file made in `dir` once
    /// the daemon runs (`home.rs`).
    home: Option<crate::home::Home>,
    /// While set, a build waits before it starts (tests).
    #[cfg(test)]
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set: no thread can be started for a build (tests).
    #[cfg(test)]
    no_thread: bool,
}

/// A names table twice the size of the current one, built on a helper
/// thread from the strings below `upto` while the writer goes on interning
/// into the current one (which a reader keeps using until `meta` names the
/// new one): a growth costs the writer the names interned meanwhile, not a
/// hash of every name. The writer waits for it only if the current table
/// reaches three quarters full first.
#[derive(Debug)]
struct Growth {
    /// The names interned since the build began: (hash, id).
    since: Vec<(u64, u32)>,
    build: std::thread::JoinHandle<io::Result<MappedFile>>,
}

fn strings_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("strings-{n:04}"))
}

fn names_path(dir: &Path, t: u64) -> PathBuf {
    dir.join(format!("names-{t:04}"))
}

fn table_len(log2: u32) -> usize {
    PAGE + (8usize << log2)
}

/// A string id's (file, offset in file).
#[must_use]
pub fn locate(id: u32) -> (usize, usize) {
    let global = u64::from(id) * 8;
    (
        (global >> STRINGS_FILE_LOG2) as usize,
        (global & (STRINGS_FILE_LEN as u64 - 1)) as usize,
    )
}

impl Names {
    /// Creates empty names files in a new generation directory.
    pub fn create(dir: &Path, meta: &MappedFile) -> io::Result<Self> {
        let first = new_strings_file(dir, 0)?;
        let table = new_table(dir, 0, NAMES_MIN_LOG2)?;
        let names = Self {
            dir: dir.to_owned(),
            files: vec![first],
            end: PAGE as u64,
            table,
            table_no: 0,
            table_log2: NAMES_MIN_LOG2,
            used: 0,
            ids: Default::default(),
            growth: None,
            home: None,
            #[cfg(test)]
            hold: Default::default(),
            #[cfg(test)]
            no_thread: false,
        };
        names.publish_meta(meta);
        Ok(names)
    }

    /// Re-opens the names of an existing generation, up to `strings_end`,
    /// with table `table_no` (both from the trusted checkpoint), and stores
    /// them into `meta`'s words, which carry no CRC and which readers read.
    pub fn open(
        dir: &Path,
        strings_end: u64,
        table_no: u64,
        meta: &MappedFile,
    ) -> io::Result<Self> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let files = open_strings(dir, strings_end)?;
        let head =
            std::fs::read(names_path(dir, table_no)).map(|b| b[..32.min(b.len())].to_vec())?;
        let h = FileHeader::parse(&head, NAMES_MAGIC, None, table_no)
            .map_err(|e| invalid(format!("names-{table_no:04}: {e}")))?;
        let log2 = h.param.get();
        if !(NAMES_MIN_LOG2..=32).contains(&log2) {
            return Err(invalid(format!(
                "names-{table_no:04}: log2 {log2} out of range"
            )));
        }
        let table = MappedFile::open(&names_path(dir, table_no), table_len(log2))?;
        let mut names = Self {
            dir: dir.to_owned(),
            files,
            end: PAGE as u64,
            table,
            table_no,
            table_log2: log2,
            used: 0,
            ids: Default::default(),
            growth: None,
            home: None,
            #[cfg(test)]
            hold: Default::default(),
            #[cfg(test)]
            no_thread: false,
        };
        // Walk the entries to rebuild the in-memory mirror, checking each.
        let mut ids: [NameMap<u32>; 2] = Default::default();
        names.end = walk(&names.files, strings_end, |global, ns, name| {
            ids[slot_of(ns)].insert(name.into(), (global / 8) as u32);
            Ok(())
        })?;
        names.ids = ids;
        names.used = names.ids.iter().map(NameMap::len).sum();
        names.publish_meta(meta);
        Ok(names)
    }

    /// Interns, in order, every name of another generation's strings in
    /// `old_dir` below `strings_end`. Interning is deterministic, so each
    /// name gets the id it had there; returns those ids (an id that comes
    /// out differently is an error).
    pub fn copy_from(
        &mut self,
        old_dir: &Path,
        strings_end: u64,
        meta: &MappedFile,
    ) -> io::Result<crate::fxhash::FxHashSet<u32>> {
        let old = open_strings(old_dir, strings_end)?;
        let mut ids = crate::fxhash::FxHashSet::default();
        walk(&old, strings_end, |global, ns, name| {
            let id = self.intern(ns, name, meta)?;
            if u64::from(id) * 8 != global {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "string entry at {global} was interned again at {}",
                        u64::from(id) * 8
                    ),
                ));
            }
            ids.insert(id);
            Ok(())
        })?;
        Ok(ids)
    }

    /// The id of a known name.
    #[must_use]
    pub fn get(&self, ns: u8, name: &[u8]) -> Option<u32> {
        self.ids[slot_of(ns)].get(name).copied()
    }

    /// Every interned (namespace, name, id).
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8], u32)> {
        let tag = |i: usize| if i == 0 { NS_ENTITY } else { NS_SCOPE };
        self.ids
            .iter()
            .enumerate()
            .flat_map(move |(i, m)| m.iter().map(move |(n, id)| (tag(i), &n[..], *id)))
    }

    /// From now on, creates files only while `home` still names the data
    /// directory it named at the start.
    pub fn set_home(&mut self, home: crate::home::Home) {
        self.home = Some(home);
    }

    fn check_home(&self) -> io::Result<()> {
        self.home.as_ref().map_or(Ok(()), crate::home::Home::check)
    }

    /// Interns a name, writing a new entry if needed. `meta` gets the new end.
    pub fn intern(&mut self, ns: u8, name: &[u8], meta: &MappedFile) -> io::Result<u32> {
        if let Some(id) = self.get(ns, name) {
            return Ok(id);
        }
        let size = align8(STRING_ENTRY_HEADER + name.len());
        let (file, local) = place(self.end, size);
        if file == self.files.len() {
            self.check_home()?;
            self.files.push(new_strings_file(&self.dir, file)?);
        }
        let global = ((file as u64) << STRINGS_FILE_LOG2) | local as u64;
        let id = u32::try_from(global / 8)
            .ok()
            .filter(|id| *id < weir_protocol::index::NO_NAME)
            .ok_or_else(|| io::Error::other("string space exhausted (32 GiB of names)"))?;
        let mut entry = StringEntry::new_zeroed();
        entry.len = (name.len() as u32).into();
        entry.ns = ns;
        entry.crc = string_crc(ns, name).into();
        let f = &self.files[file];
        f.write(local, entry.as_bytes());
        f.write(local + STRING_ENTRY_HEADER, name);
        let slots = 1usize << self.table_log2;
        if self.growth.is_none() && self.used + 1 > slots / 2 && !self.start_growth() {
            // No thread to build it: grow the table here and now.
            self.finish_growth(meta)?;
        }
        if self
            .growth
            .as_ref()
            .is_some_and(|g| g.build.is_finished() || self.used + 1 > slots / 4 * 3)
        {
            self.finish_growth(meta)?;
        }
        let hash = name_hash(ns, name);
        insert_slot(&self.table, self.table_log2, hash, id);
        if let Some(g) = &mut self.growth {
            g.since.push((hash, id));
        }
        self.used += 1;
        self.ids[slot_of(ns)].insert(name.into(), id);
        self.end = global + size as u64;
        self.publish_meta(meta);
        Ok(id)
    }

    /// Starts building the next table from the strings below `self.end`;
    /// false if no thread could be started for it.
    fn start_growth(&mut self) -> bool {
        let (dir, upto, home) = (self.dir.clone(), self.end, self.home.clone());
        let (table_no, log2) = (self.table_no + 1, self.table_log2 + 1);
        #[cfg(test)]
        let hold = self.hold.clone();
        #[cfg(test)]
        if self.no_thread {
            return false;
        }
        let build = std::thread::Builder::new()
            .name("weir-names".into())
            .spawn(move || {
                #[cfg(test)]
                while hold.load(Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                home.as_ref().map_or(Ok(()), crate::home::Home::check)?;
                build_table(&dir, upto, table_no, log2)
            });
        match build {
            Ok(build) => {
                self.growth = Some(Growth {
                    since: Vec::new(),
                    build,
                });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start a thread to grow the names table; growing it on the writer thread");
                false
            }
        }
    }

    /// Takes the next table once it is built (waiting for it if need be),
    /// adds the names interned since, and names it in `meta`. A build that
    /// failed, or could not start, is done again here.
    fn finish_growth(&mut self, meta: &MappedFile) -> io::Result<()> {
        let (table_no, log2) = (self.table_no + 1, self.table_log2 + 1);
        let built = match self.growth.take() {
            Some(g) => match g.build.join() {
                Ok(Ok(table)) => {
                    for &(hash, id) in &g.since {
                        insert_slot(&table, log2, hash, id);
                    }
                    Some(table)
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "building the next names table failed; building it on the writer thread");
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let table = match built {
            Some(t) => t,
            // Here, from every entry written so far (the one being
            // interned is inserted after).
            None => {
                self.check_home()?;
                build_table(&self.dir, self.end, table_no, log2)?
            }
        };
        self.table = table;
        self.table_no = table_no;
        self.table_log2 = log2;
        self.publish_meta(meta);
        Ok(())
    }

    fn publish_meta(&self, meta: &MappedFile) {
        let r = meta.region();
        // SYNC: Release pairs with the reader's Acquire fence after loading
        // these: the entry bytes and the table slots are written before.
        r.atomic_u64(META_NAMES_TABLE_OFF)
            .expect("meta layout")
            .store(self.table_no, Ordering::Release);
        r.atomic_u64(META_STRINGS_END_OFF)
            .expect("meta layout")
            .store(self.end, Ordering::Release);
    }

    /// The current end of the strings and the names table number.
    #[must_use]
    pub fn position(&self) -> (u64, u64) {
        (self.end, self.table_no)
    }

    /// Reads a name's head (newest sequence + 1).
    #[must_use]
    pub fn head(&self, id: u32) -> u64 {
        self.counter(id, STRING_HEAD_OFF).load(Ordering::Relaxed)
    }

    /// Reads a name's count of events.
    #[must_use]
    pub fn count(&self, id: u32) -> u64 {
        self.counter(id, STRING_COUNT_OFF).load(Ordering::Relaxed)
    }

    /// Records `seq` as the newest event of name `id`.
    pub fn bump(&self, id: u32, seq: u64) {
        // SYNC: Release; the row of `seq` was written before (FORMAT.md write order).
        self.counter(id, STRING_HEAD_OFF)
            .store(seq + 1, Ordering::Release);
        let count = self.counter(id, STRING_COUNT_OFF);
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// Sets a name's head and count outright (restore).
    pub fn set(&self, id: u32, head: u64, count: u64) {
        self.counter(id, STRING_HEAD_OFF)
            .store(head, Ordering::Release);
        self.counter(id, STRING_COUNT_OFF)
            .store(count, Ordering::Release);
    }

    fn counter(&self, id: u32, off: usize) -> &std::sync::atomic::AtomicU64 {
        let (file, local) = locate(id);
        self.files[file]
            .region()
            .atomic_u64(local + off)
            .expect("string entry in bounds")
    }

    /// Looks up a name's bytes by id.
    #[must_use]
    pub fn name(&self, id: u32) -> Option<&[u8]> {
        let (file, local) = locate(id);
        let f = self.files.get(file)?;
        let e = StringEntry::read_from_bytes(f.read(local, STRING_ENTRY_HEADER)).ok()?;
        Some(f.read(local + STRING_ENTRY_HEADER, e.len.get() as usize))
    }

    /// The strings files' paths (up to the current end).
    pub fn strings_paths(&self) -> impl Iterator<Item = PathBuf> + '_ {
        (0..self.files.len()).map(|n| strings_path(&self.dir, n))
    }

    /// Every file, for flushing.
    pub fn files(&self) -> impl Iterator<Item = &MappedFile> {
        self.files.iter().chain(std::iter::once(&self.table))
    }
}

/// Maps the strings files of `dir` that hold entries below `strings_end`,
/// checking their headers.
fn open_strings(dir: &Path, strings_end: u64) -> io::Result<Vec<MappedFile>> {
    let nfiles = ((strings_end.max(1) - 1) >> STRINGS_FILE_LOG2) as usize + 1;
    (0..nfiles)
        .map(|n| {
            let f = MappedFile::open(&strings_path(dir, n), STRINGS_FILE_LEN)?;
            FileHeader::parse(f.read(0, 32), STRINGS_MAGIC, Some(0), n as u64).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", f.path().display()),
                )
            })?;
            Ok(f)
        })
        .collect()
}

/// Calls `f(global offset, namespace, name)` for every entry of `files`
/// below `strings_end`, in order, checking each; returns where the walk
/// ended.
fn walk(
    files: &[MappedFile],
    strings_end: u64,
    mut f: impl FnMut(u64, u8, &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut global = PAGE as u64;
    while global < strings_end {
        let (file, local) = (
            (global >> STRINGS_FILE_LOG2) as usize,
            (global as usize) & (STRINGS_FILE_LEN - 1),
        );
        let m = files
            .get(file)
            .ok_or_else(|| invalid(format!("strings end {strings_end} is past the files")))?;
        if local < PAGE {
            // Exactly at a file boundary: entries start after the header page.
            global = ((file as u64) << STRINGS_FILE_LOG2) | PAGE as u64;
            continue;
        }
        if local + STRING_ENTRY_HEADER > STRINGS_FILE_LEN {
            global = ((file as u64) + 1) << STRINGS_FILE_LOG2 | PAGE as u64;
            continue;
        }
        // Only the entry's fixed fields: its head and count words change
        // while a helper thread walks (`build_table`).
        let fixed = m.read(local, 8);
        let len = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]) as usize;
        let ns = fixed[4];
        let crc = m.read(local + STRING_CRC_OFF, 4);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if len == 0 {
            // An entry never starts here: the rest of the file was skipped.
            global = ((file as u64) + 1) << STRINGS_FILE_LOG2 | PAGE as u64;
            continue;
        }
        if local + STRING_ENTRY_HEADER + len > STRINGS_FILE_LEN {
            return Err(invalid(format!(
                "string entry at {global} overruns its file"
            )));
        }
        let name = m.read(local + STRING_ENTRY_HEADER, len);
        if string_crc(ns, name) != crc {
            return Err(invalid(format!(
                "string entry at {global} fails its checksum"
            )));
        }
        f(global, ns, name)?;
        global += align8(STRING_ENTRY_HEADER + len) as u64;
    }
    Ok(global)
}

/// Where an entry of `size` bytes goes when the strings end at global
/// offset `end`: (file, offset in file). Entries never straddle files and
/// never overlap a file's header page, also when `end` falls exactly on a
/// file boundary.
fn place(end: u64, size: usize) -> (usize, usize) {
    let (file, local) = (
        (end >> STRINGS_FILE_LOG2) as usize,
        (end as usize) & (STRINGS_FILE_LEN - 1),
    );
    if local < PAGE {
        (file, PAGE)
    } else if local + size > STRINGS_FILE_LEN {
        (file + 1, PAGE)
    } else {
        (file, local)
    }
}

/// Which of the two maps holds a namespace.
fn slot_of(ns: u8) -> usize {
    usize::from(ns != NS_ENTITY)
}

fn new_strings_file(dir: &Path, n: usize) -> io::Result<MappedFile> {
    let f = MappedFile::create(&strings_path(dir, n), STRINGS_FILE_LEN)?;
    f.write(0, FileHeader::new(STRINGS_MAGIC, 0, n as u64).as_bytes());
    Ok(f)
}

impl Drop for Names {
    /// Lets a build in progress finish: its file is never named by `meta`,
    /// and the next build of that number replaces it.
    fn drop(&mut self) {
        if let Some(g) = self.growth.take() {
            let _ = g.build.join();
        }
    }
}

/// Builds table `t` of `2^log2` slots from the names of `dir`'s strings
/// below `upto`, on a helper thread (or the writer's, when no build could
/// run there): it maps the strings files itself and
/// reads of each entry only what is never written again (FORMAT.md: the
/// writer appends entries past the end, and changes only their head and
/// count words, which `walk` does not read).
fn build_table(dir: &Path, upto: u64, t: u64, log2: u32) -> io::Result<MappedFile> {
    let files = open_strings(dir, upto)?;
    let table = new_table(dir, t, log2)?;
    let walked = walk(&files, upto, |global, ns, name| {
        insert_slot(&table, log2, name_hash(ns, name), (global / 8) as u32);
        Ok(())
    });
    match walked {
        Ok(_) => Ok(table),
        Err(e) => {
            drop(table);
            let _ = std::fs::remove_file(names_path(dir, t));
            Err(e)
        }
    }
}

fn new_table(dir: &Path, t: u64, log2: u32) -> io::Result<MappedFile> {
    // A table numbered past the one `meta` names was never published (a
    // stop or crash while it was being built): no reader has mapped it.
    match std::fs::remove_file(names_path(dir, t)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let f = MappedFile::create(&names_path(dir, t), table_len(log2))?;
    f.write(0, FileHeader::new(NAMES_MAGIC, log2, t).as_bytes());
    Ok(f)
}

fn insert_slot(table: &MappedFile, log2: u32, hash: u64, id: u32) {
    let mask = (1usize << log2) - 1;
    let mut i = (hash as usize) & mask;
    loop {
        let slot = table
            .region()
            .atomic_u64(PAGE + i * 8)
            .expect("slot in bounds");
        if slot.load(Ordering::Relaxed) == 0 {
            // SYNC: Release; the string entry was written before.
            slot.store(pack_slot(id as usize, hash), Ordering::Release);
            return;
        }
        debug_assert_ne!(
            unpack_slot(slot.load(Ordering::Relaxed)),
            Some((id as usize, fingerprint(hash)))
        );
        i = (i + 1) & mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names in a temporary directory, with a meta file for the table number.
    fn fresh() -> (tempfile::TempDir, Names, MappedFile) {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = MappedFile::create(&dir.path().join("meta"), PAGE).expect("meta");
        let names = Names::create(dir.path(), &meta).expect("names");
        (dir, names, meta)
    }

    fn name(i: usize) -> Vec<u8> {
        format!("user:{i}").into_bytes()
    }

    /// The id the current table gives `name`, probed as a reader does.
    fn probe(names: &Names, ns: u8, name: &[u8]) -> Option<u32> {
        let hash = name_hash(ns, name);
        let mask = (1usize << names.table_log2) - 1;
        let mut i = (hash as usize) & mask;
        loop {
            let slot = names.table.region().atomic_u64(PAGE + i * 8)?;
            let (id, fp) = unpack_slot(slot.load(Ordering::Acquire))?;
            if fp == fingerprint(hash) && names.name(id as u32) == Some(name) {
                return Some(id as u32);
            }
            i = (i + 1) & mask;
        }
    }

    fn all_found(names: &Names, n: usize) {
        for i in 0..n {
            let id = names.get(NS_ENTITY, &name(i));
            assert!(id.is_some(), "{i} interned");
            assert_eq!(
                probe(names, NS_ENTITY, &name(i)),
                id,
                "{i} in table {}",
                names.table_no
            );
        }
    }

    #[test]
    fn a_growth_builds_the_next_table_while_interning_goes_on() {
        let (_dir, mut names, meta) = fresh();
        let slots = 1usize << NAMES_MIN_LOG2;
        names.hold.store(true, Ordering::Release);
        // Half full: the build starts, held; interning goes on into the
        // current table up to three quarters, which readers keep using.
        for i in 0..slots / 4 * 3 {
            names.intern(NS_ENTITY, &name(i), &meta).expect("intern");
        }
        assert!(names.growth.is_some(), "a build is under way");
        assert_eq!(names.position().1, 0, "still table 0");
        all_found(&names, slots / 4 * 3);
        // Let it finish; the next name takes it, with the names interned
        // since it began.
        names.hold.store(false, Ordering::Release);
        while !names.growth.as_ref().is_some_and(|g| g.build.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        names
            .intern(NS_ENTITY, &name(slots), &meta)
            .expect("intern");
        assert_eq!(
            (names.position().1, names.table_log2),
            (1, NAMES_MIN_LOG2 + 1)
        );
        assert!(names.growth.is_none());
        all_found(&names, slots / 4 * 3);
        assert!(probe(&names, NS_ENTITY, &name(slots)).is_some());
        let r = meta.region();
        assert_eq!(
            r.atomic_u64(META_NAMES_TABLE_OFF)
                .map(|a| a.load(Ordering::Acquire)),
            Some(1)
        );
    }

    #[test]
    fn a_build_not_done_at_three_quarters_is_waited_for() {
        let (_dir, mut names, meta) = fresh();
        let slots = 1usize << NAMES_MIN_LOG2;
        names.hold.store(true, Ordering::Release);
        let hold = names.hold.clone();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            hold.store(false, Ordering::Release);
        });
        // Past three quarters the writer waits for the build rather than
        // fill the current table further.
        for i in 0..=slots / 4 * 3 {
            names.intern(NS_ENTITY, &name(i), &meta).expect("intern");
        }
        release.join().expect("release");
        assert_eq!(names.position().1, 1);
        assert!(names.used <= (1 << names.table_log2) / 2);
        all_found(&names, slots / 4 * 3 + 1);
    }

    #[test]
    fn without_a_thread_the_table_grows_on_the_writer() {
        let (_dir, mut names, meta) = fresh();
        names.no_thread = true;
        let n = (1usize << NAMES_MIN_LOG2) / 4 * 3 + 1;
        for i in 0..n {
            names.intern(NS_ENTITY, &name(i), &meta).expect("intern");
        }
        // Grown at half full, on this thread (before, it retried the
        // thread at every name and never grew, until the table was full).
        assert_eq!(names.position().1, 1);
        assert!(names.used <= (1 << names.table_log2) / 2);
        all_found(&names, n);
    }

    #[test]
    fn a_table_left_by_an_unfinished_build_is_replaced() {
        let (dir, mut names, meta) = fresh();
        // A stop while table 1 was being built leaves its file, never
        // named in `meta`: the next build of table 1 replaces it.
        std::fs::write(names_path(dir.path(), 1), b"left by a stop").expect("write");
        for i in 0..(1usize << NAMES_MIN_LOG2) {
            names.intern(NS_ENTITY, &name(i), &meta).expect("intern");
        }
        while names.growth.is_some() {
            names.intern(NS_SCOPE, b"s", &meta).expect("intern");
            std::thread::sleep(std::time::Duration::from_millis(1));
            names.finish_growth(&meta).expect("finish");
        }
        assert_eq!(names.position().1, 1);
        all_found(&names, 1 << NAMES_MIN_LOG2);
    }

    #[test]
    fn entries_never_overlap_a_header_page_or_straddle_files() {
        let len = STRINGS_FILE_LEN as u64;
        assert_eq!(place(PAGE as u64, 48), (0, PAGE));
        // Exactly full: the next entry starts after file 1's header page.
        assert_eq!(place(len, 48), (1, PAGE));
        assert_eq!(place(len - 48, 48), (0, STRINGS_FILE_LEN - 48));
        assert_eq!(place(len - 40, 48), (1, PAGE));
        assert_eq!(place(3 * len, 1064), (3, PAGE));
        for end in [len - 8, len, len + 8, 2 * len - 32] {
            let (file, local) = place(end, 48);
            assert!(
                local >= PAGE && local + 48 <= STRINGS_FILE_LEN,
                "end {end}: {file}/{local}"
            );
        }
    }
}
