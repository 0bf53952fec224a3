//! The seam between the segment log and the file system. `FileStorage` is
//! the real one; `SimStorage` keeps a "live" and a "durable" image of every
//! file so crash tests can drop or tear whatever was not synced.

use crate::config::SyncMode;
use crate::worker::Worker;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use weir_protocol::index::PAGE;

/// A whole segment's bytes, mapped or owned.
#[derive(Debug)]
pub enum SegmentBytes {
    /// A read-only mapping.
    Mapped(memmap2::Mmap),
    /// A copy.
    Owned(Vec<u8>),
}

impl Deref for SegmentBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// File operations the segment log needs.
pub trait Storage: Send + std::fmt::Debug {
    /// Ids of existing segments, ascending.
    fn list(&self) -> io::Result<Vec<u64>>;
    /// Creates segment `id`: `len` bytes of zeros, then `header` at offset 0;
    /// the file and its directory entry are durable on return.
    fn create(&mut self, id: u64, len: u64, header: &[u8]) -> io::Result<()>;
    /// Writes `data` at `off` of segment `id`.
    fn write_at(&mut self, id: u64, off: u64, data: &[u8]) -> io::Result<()>;
    /// Makes everything written to `id` durable.
    fn sync(&mut self, id: u64, mode: SyncMode) -> io::Result<()>;
    /// Reads the whole segment.
    fn read(&self, id: u64) -> io::Result<SegmentBytes>;
    /// Hint: segment `id` of `len` bytes will be created next.
    fn prepare(&mut self, _id: u64, _len: u64) {}
    /// Like [`prepare`](Self::prepare), but done before returning: for a
    /// segment created when no append waits (the daemon is starting).
    fn prepare_now(&mut self, _id: u64, _len: u64) {}
}

/// Segment file name.
#[must_use]
pub fn segment_file_name(id: u64) -> String {
    format!("{id:010}.seg")
}

/// Real files under `segments/`.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    open: BTreeMap<u64, Arc<File>>,
    preparing: Option<(u64, Prep)>,
    /// Zero-fill new segments (see [`FileStorage::zero_fill`]).
    zero_fill: bool,
    /// When to start writeback (see [`FileStorage::write_behind`]).
    write_behind: WriteBehind,
    /// The thread that starts it.
    writeback: WritebackStarter,
    /// The data directory, checked before each file made in it by path
    /// (see [`FileStorage::home`]).
    home: Option<crate::home::Home>,
}

/// Where a segment's writeback was last started, and how often to start it.
#[derive(Debug, Clone, Copy)]
struct WriteBehind {
    step: Option<u64>,
    /// (segment, offset) up to which writeback was started.
    done: (u64, u64),
}

impl WriteBehind {
    /// After a write of `off..end` to segment `id`: the range whose
    /// writeback to start now, once `step` bytes piled up since the last.
    /// The range ends on a page boundary: the page the next append writes
    /// into is not put under writeback (where the kernel keeps pages under
    /// writeback stable, that append would wait for the disk).
    fn after_write(&mut self, id: u64, off: u64, end: u64) -> Option<(u64, u64)> {
        let step = self.step?;
        if self.done.0 != id {
            self.done = (id, off - off % PAGE as u64);
        }
        let from = self.done.1;
        let end = end - end % PAGE as u64;
        if end < from + step {
            return None;
        }
        self.done.1 = end;
        Some((from, end - from))
    }
}

/// Starts writeback (`sync_file_range`) on a helper thread: submitting the
/// pages to the disk costs the caller the filesystem's writepages work, which
/// the writer would otherwise pay per `step` bytes (4 % of its time in the
/// in-process CPU-ceiling benchmark). When the helper cannot take a range
/// (queue full, thread not started), the caller starts it itself.
#[derive(Debug)]
struct WritebackStarter(Worker<(Arc<File>, u64, u64)>);

/// Ranges that may wait for the writeback thread.
const WRITEBACK_QUEUE: usize = 4;

impl Default for WritebackStarter {
    fn default() -> Self {
        Self(Worker::new("weir-writeback", WRITEBACK_QUEUE, |rx| {
            for (file, from, len) in rx {
                start_writeback(&file, from, len);
            }
        }))
    }
}

impl WritebackStarter {
    fn start(&mut self, file: Arc<File>, from: u64, len: u64) {
        if let Err((file, from, len)) = self.0.send((file, from, len)) {
            start_writeback(&file, from, len);
        }
    }
}

fn start_writeback(file: &File, from: u64, len: u64) {
    if let Err(e) = crate::writeback::start(file, from, len) {
        // Only a head start: a failure shows up at the next sync.
        tracing::debug!(error = %e, "could not start writeback");
    }
}

/// A zero-filled file being made (or made) for the next segment.
#[derive(Debug)]
enum Prep {
    Running(std::thread::JoinHandle<io::Result<PathBuf>>),
    Ready(PathBuf),
}

impl Prep {
    /// Deletes the prepared file. A fill still running is left to finish on
    /// a thread of its own first, unless `wait`: then this waits for it.
    fn discard(self, wait: bool) {
        match self {
            Self::Ready(p) => {
                let _ = std::fs::remove_file(p);
            }
            Self::Running(h) => {
                let remove = move || {
                    let _ = h.join().ok().and_then(Result::ok).map(std::fs::remove_file);
                };
                if wait {
                    remove();
                } else if let Err(e) = std::thread::Builder::new()
                    .name("weir-prep-discard".into())
                    .spawn(remove)
                {
                    // No thread to spare (the task limit): the fill is
                    // left to finish, and the next start removes its
                    // `.prep` file. Waiting here would stall the writer.
                    tracing::debug!(error = %e, "cannot start a thread to discard a .prep file");
                }
            }
        }
    }
}

impl FileStorage {
    /// Uses (and creates) `segments/` under `data_dir`.
    pub fn new(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join("segments");
        crate::modes::create_dir_all(&dir)?;
        // Leftovers of a preparation that a crash interrupted.
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "prep") {
                std::fs::remove_file(p)?;
            }
        }
        Ok(Self {
            dir,
            open: BTreeMap::new(),
            preparing: None,
            zero_fill: true,
            write_behind: WriteBehind {
                step: None,
                done: (u64::MAX, 0),
            },
            writeback: WritebackStarter::default(),
            home: None,
        })
    }

    /// Creates, renames and opens segment files only while `home` still
    /// names the data directory it named at the start (a renamed data
    /// directory's successor at the old path must not get its segments).
    #[must_use]
    pub fn home(mut self, home: crate::home::Home) -> Self {
        self.home = Some(home);
        self
    }

    fn check_home(&self) -> io::Result<()> {
        self.home.as_ref().map_or(Ok(()), crate::home::Home::check)
    }

    /// Whether new segments are zero-filled before use (the default) or only
    /// `posix_fallocate`d. Zero-filling pays off only where frames are
    /// synced often: it spares each sync the conversion of unwritten
    /// extents. Under `sync = never` it would only double the bytes written.
    #[must_use]
    pub fn zero_fill(mut self, on: bool) -> Self {
        self.zero_fill = on;
        self
    }

    /// Whether writeback of a segment is started every `step` bytes written
    /// (`sync_file_range`, not waited for). For `sync = never`, where nothing
    /// else writes frames back until the kernel's dirty timers: without it a
    /// rotation's sync waited for the whole segment (256 MiB: about 0.25 s
    /// on this machine's disk, every 1M events), stalling every append.
    #[must_use]
    pub fn write_behind(mut self, step: Option<u64>) -> Self {
        self.write_behind.step = step;
        self
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_file_name(id))
    }

    /// Where segment `id` is zero-filled before it is created.
    fn prep_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:010}.prep"))
    }

    fn file(&mut self, id: u64) -> io::Result<&Arc<File>> {
        if !self.open.contains_key(&id) {
            // Only the newest segment is written; close the rest. Opened by
            // path: only in the data directory this daemon started on.
            self.check_home()?;
            self.open.retain(|k, _| *k > id);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(id))?;
            self.open.insert(id, Arc::new(f));
        }
        Ok(&self.open[&id])
    }
}

/// How much of a new segment is zero-filled; the rest is only
/// `posix_fallocate`d. Bounds the writes (and a start's delay) for large
/// `segment-max-bytes`.
pub const ZERO_FILL_MAX: u64 = 1 << 30;

/// The zero-fill's write size: one x86-64 huge page. Each write (at a
/// multiple of it) lets the page cache hold that range as one 2 MiB folio
/// where the kernel and file system support large folios (ext4 on Linux
/// 6.16+; when a 2 MiB allocation fails the kernel takes smaller folios),
/// and a reader's mapping, which the kernel places on a 2 MiB
/// boundary, then maps it with one page-table entry (`FilePmdMapped` in
/// `smaps`): random lookups in other processes miss the TLB far less.
/// Writes of 1 MiB left 1 MiB folios, mapped 4 KiB at a time.
const FILL_CHUNK: usize = 2 << 20;

/// Creates `path` of `len` bytes whose first `min(len, zero_up_to)` bytes are
/// written zeros (blocks allocated and written, so later overwrites sync
/// without metadata changes; in [`FILL_CHUNK`] writes) and the rest
/// reserved with `posix_fallocate`, then syncs it. A fill that fails
/// removes its file: on a full disk the part written would hold the last
/// free blocks (which the index needs to grow).
fn zero_fill(path: &Path, len: u64, zero_up_to: u64) -> io::Result<()> {
    // Readable too: `crate::modes::fallocate`.
    let mut f = crate::modes::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let filled = write_zeros(&mut f, len.min(zero_up_to))
        .and_then(|()| {
            if len > zero_up_to {
                crate::modes::fallocate(&f, len)?;
            }
            Ok(())
        })
        .and_then(|()| f.sync_all());
    if filled.is_err() {
        let _ = std::fs::remove_file(path);
    }
    filled
}

/// Writes `len` zero bytes to `out` from its start: whole [`FILL_CHUNK`]s,
/// each at a multiple of it, then the remainder.
fn write_zeros(out: &mut impl Write, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; FILL_CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

impl Storage for FileStorage {
    fn list(&self) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if name == segment_file_name(id) {
                ids.push(id);
            } else {
                // `7.seg`, `00000000001.seg`: not a name the daemon gives, so
                // not a segment it reads or counts (it would open another file).
                tracing::warn!(
                    file = %self.dir.join(&*name).display(),
                    "ignoring a file whose name is not a segment's (10 digits, then .seg)"
                );
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn create(&mut self, id: u64, len: u64, header: &[u8]) -> io::Result<()> {
        // Before anything is created, renamed or removed by path (a
        // prepared file left behind goes with the next start's cleanup).
        self.check_home()?;
        let prepared = match self.preparing.take() {
            Some((pid, Prep::Ready(p))) if pid == id => Some(p),
            Some((pid, Prep::Running(h))) if pid == id && h.is_finished() => {
                h.join().ok().and_then(Result::ok)
            }
            Some((_, prep)) => {
                // Not ready, or for another id: appends wait on this
                // rotation, so a running fill is not waited for; this
                // segment is only fallocated (below).
                prep.discard(false);
                None
            }
            None => None,
        };
        let tmp = self.dir.join(format!("{id:010}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let made = (|| -> io::Result<File> {
            match prepared {
                Some(p) if std::fs::metadata(&p).is_ok_and(|m| m.len() == len) => {
                    std::fs::rename(p, &tmp)?;
                }
                other => {
                    if let Some(p) = other {
                        let _ = std::fs::remove_file(p);
                    }
                    let f = crate::modes::options()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&tmp)?;
                    crate::modes::fallocate(&f, len)?;
                }
            }
            let f = OpenOptions::new().read(true).write(true).open(&tmp)?;
            f.write_all_at(header, 0)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path(id))?;
            Ok(f)
        })();
        // Not a segment yet (nothing names it): a partial reservation on a
        // full disk would only hold the last free blocks.
        let f = made.inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        crate::gate::sync_dir(&self.dir)?;
        // Appends go to the new segment from now on; the previous one may
        // still be synced (a group that spans the rotation) or sealed. Older
        // files are closed: a descriptor per segment of the store would run
        // into the open-file limit (reopened by `file` if ever needed).
        self.open.retain(|k, _| k.saturating_add(1) >= id);
        self.open.insert(id, Arc::new(f));
        Ok(())
    }

    fn write_at(&mut self, id: u64, off: u64, data: &[u8]) -> io::Result<()> {
        self.file(id)?.write_all_at(data, off)?;
        let due = self
            .write_behind
            .after_write(id, off, off + data.len() as u64);
        if let Some((from, len)) = due {
            let file = Arc::clone(self.file(id)?);
            self.writeback.start(file, from, len);
        }
        Ok(())
    }

    fn sync(&mut self, id: u64, mode: SyncMode) -> io::Result<()> {
        let f = self.file(id)?;
        match mode {
            SyncMode::Data => f.sync_data(),
            SyncMode::All => f.sync_all(),
        }
    }

    fn read(&self, id: u64) -> io::Result<SegmentBytes> {
        // Mapped by path (an idempotent retry reads its first answer back):
        // never another store's segment at the path the data dir had.
        self.check_home()?;
        crate::mapped::map_read_only(&self.path(id)).map(SegmentBytes::Mapped)
    }

    fn prepare(&mut self, id: u64, len: u64) {
        if !self.zero_fill {
            return;
        }
        if self.preparing.as_ref().is_some_and(|(p, _)| *p == id) {
            return;
        }
        if self.check_home().is_err() {
            // `create` reports it.
            return;
        }
        let path = self.prep_path(id);
        let handle = std::thread::Builder::new()
            .name("weir-prep".into())
            .spawn(move || {
                zero_fill(&path, len, ZERO_FILL_MAX)
                    .inspect_err(|e| {
                        // `create` falls back to `posix_fallocate`, which
                        // reports a full disk itself.
                        tracing::warn!(error = %e, segment = id, "could not zero-fill the next segment");
                    })
                    .map(|()| path)
            });
        if let Ok(h) = handle {
            self.preparing = Some((id, Prep::Running(h)));
        }
    }

    fn prepare_now(&mut self, id: u64, len: u64) {
        if !self.zero_fill || self.check_home().is_err() {
            return;
        }
        if let Some((_, prep)) = self.preparing.take() {
            // Waited for: a fill for this id must not delete the new file.
            prep.discard(true);
        }
        let path = self.prep_path(id);
        let _ = std::fs::remove_file(&path);
        match zero_fill(&path, len, ZERO_FILL_MAX) {
            Ok(()) => self.preparing = Some((id, Prep::Ready(path))),
            Err(e) => {
                // `create` falls back to `posix_fallocate`, which reports a
                // full disk itself. (`zero_fill` removed its file.)
                tracing::warn!(error = %e, segment = id, "could not zero-fill a new segment");
            }
        }
    }
}

/// One simulated file: what the process sees and what survived the last sync.
#[derive(Debug, Clone, Default)]
pub struct SimFile {
    /// Bytes as written.
    pub live: Vec<u8>,
    /// Bytes as of the last sync.
    pub durable: Vec<u8>,
    /// Writes since the last sync: (offset, bytes), in order.
    pub pending: Vec<(u64, Vec<u8>)>,
}

/// Shared state of a [`SimStorage`], inspectable by tests.
#[derive(Debug, Default)]
pub struct SimState {
    /// Files by segment id (created files are durable at once).
    pub files: BTreeMap<u64, SimFile>,
    /// Count of write and sync calls so far.
    pub ops: u64,
    /// Fail the op with this number (create, write or sync) with EIO.
    pub fail_at: Option<u64>,
    /// Fail every op from this number on: the process is "dead".
    pub dead_from: Option<u64>,
    /// Stop inside the op with this number until [`SimStorage::release`].
    pub pause_at: Option<u64>,
    /// Fail the next create of this segment with this errno, once (as
    /// `EMFILE` fails an open while the process is out of descriptors).
    pub fail_create: Option<(u64, i32)>,
    /// Segment ids passed to `prepare_now`, in order, each with whether
    /// that segment existed already.
    pub prepared_now: Vec<(u64, bool)>,
}

/// A pause point: (reached, released).
type Pause = (Mutex<(bool, bool)>, std::sync::Condvar);

/// In-memory storage with separate live and durable images.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    /// Shared with the test.
    pub state: Arc<Mutex<SimState>>,
    pause: Arc<Pause>,
}

impl SimStorage {
    /// Storage starting from the given durable files.
    #[must_use]
    pub fn from_files(files: BTreeMap<u64, Vec<u8>>) -> Self {
        let files = files
            .into_iter()
            .map(|(id, b)| {
                (
                    id,
                    SimFile {
                        live: b.clone(),
                        durable: b,
                        pending: Vec::new(),
                    },
                )
            })
            .collect();
        Self {
            state: Arc::new(Mutex::new(SimState {
                files,
                ..SimState::default()
            })),
            pause: Arc::default(),
        }
    }

    /// What a power loss leaves: each file's durable image plus the first
    /// `keep` pending writes of every file, the last of them cut to `tear`
    /// bytes when given.
    #[must_use]
    pub fn crash_image(&self, keep: usize, tear: Option<usize>) -> BTreeMap<u64, Vec<u8>> {
        self.image(|i, pending, data| {
            let n = keep.min(pending);
            match tear {
                _ if i >= n => None,
                Some(t) if i + 1 == n => Some(&data[..t.min(data.len())]),
                _ => Some(data),
            }
        })
    }

    /// What a power loss leaves when writeback reached some pending writes
    /// and not others, in no order: each file's durable image plus the
    /// pending writes (numbered per file from 0, in the order written) that
    /// `keep` picks.
    #[must_use]
    pub fn crash_image_keeping(&self, keep: impl Fn(usize) -> bool) -> BTreeMap<u64, Vec<u8>> {
        self.image(|i, _, data| keep(i).then_some(data))
    }

    /// Each file's durable image with the bytes `pick` returns for each of
    /// its pending writes (given its number, the file's count of pending
    /// writes and its bytes) written over it at the write's offset.
    fn image(
        &self,
        pick: impl for<'a> Fn(usize, usize, &'a [u8]) -> Option<&'a [u8]>,
    ) -> BTreeMap<u64, Vec<u8>> {
        let st = self.state.lock().expect("sim lock");
        st.files
            .iter()
            .map(|(id, f)| {
                let mut img = f.durable.clone();
                for (i, (off, data)) in f.pending.iter().enumerate() {
                    if let Some(data) = pick(i, f.pending.len(), data) {
                        let off = *off as usize;
                        img[off..off + data.len()].copy_from_slice(data);
                    }
                }
                (*id, img)
            })
            .collect()
    }

    /// Blocks until the storage has paused at `pause_at`.
    pub fn wait_paused(&self) {
        let (m, cv) = &*self.pause;
        let mut g = m.lock().expect("pause lock");
        while !g.0 {
            g = cv.wait(g).expect("pause lock");
        }
    }

    /// Lets the paused op continue.
    pub fn release(&self) {
        let (m, cv) = &*self.pause;
        m.lock().expect("pause lock").1 = true;
        cv.notify_all();
    }

    fn op(&self) -> io::Result<std::sync::MutexGuard<'_, SimState>> {
        let mut st = self.state.lock().expect("sim lock");
        st.ops += 1;
        if st.pause_at == Some(st.ops) {
            drop(st);
            let (m, cv) = &*self.pause;
            let mut g = m.lock().expect("pause lock");
            g.0 = true;
            cv.notify_all();
            while !g.1 {
                g = cv.wait(g).expect("pause lock");
            }
            drop(g);
            st = self.state.lock().expect("sim lock");
        }
        if st.fail_at == Some(st.ops) || st.dead_from.is_some_and(|d| st.ops >= d) {
            return Err(io::Error::from_raw_os_error(nix::libc::EIO));
        }
        Ok(st)
    }
}

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<u64>> {
        Ok(self
            .state
            .lock()
            .expect("sim lock")
            .files
            .keys()
            .copied()
            .collect())
    }

    fn create(&mut self, id: u64, len: u64, header: &[u8]) -> io::Result<()> {
        let mut st = self.op()?;
        if let Some((_, errno)) = st.fail_create.take_if(|(f, _)| *f == id) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let mut bytes = vec![0u8; len as usize];
        bytes[..header.len()].copy_from_slice(header);
        st.files.insert(
            id,
            SimFile {
                live: bytes.clone(),
                durable: bytes,
                pending: Vec::new(),
            },
        );
        Ok(())
    }

    fn write_at(&mut self, id: u64, off: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.op()?;
        let f = st
            .files
            .get_mut(&id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let end = off as usize + data.len();
        if end > f.live.len() {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
        }
        f.live[off as usize..end].copy_from_slice(data);
        f.pending.push((off, data.to_vec()));
        Ok(())
    }

    fn sync(&mut self, id: u64, _mode: SyncMode) -> io::Result<()> {
        let mut st = self.op()?;
        let f = st
            .files
            .get_mut(&id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        f.durable.clone_from(&f.live);
        f.pending.clear();
        Ok(())
    }

    fn read(&self, id: u64) -> io::Result<SegmentBytes> {
        let st = self.state.lock().expect("sim lock");
        let f = st
            .files
            .get(&id)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(SegmentBytes::Owned(f.live.clone()))
    }

    fn prepare_now(&mut self, id: u64, _len: u64) {
        let mut st = self.state.lock().expect("sim lock");
        let exists = st.files.contains_key(&id);
        st.prepared_now.push((id, exists));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A `FileStorage` in a new temporary directory, and its `segments/`.
    fn storage() -> (tempfile::TempDir, FileStorage, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let st = FileStorage::new(tmp.path()).expect("storage");
        let dir = tmp.path().join("segments");
        (tmp, st, dir)
    }

    #[test]
    fn create_takes_the_segment_prepared_now() {
        let (_tmp, mut st, dir) = storage();
        st.prepare_now(0, 1 << 20);
        assert_eq!(names(&dir), ["0000000000.prep"]);
        let prep = std::fs::read(dir.join("0000000000.prep")).expect("read prep");
        assert_eq!(prep.len(), 1 << 20);
        assert!(prep.iter().all(|&b| b == 0));
        // Mark the prepared file, to tell it from a fresh one below.
        OpenOptions::new()
            .write(true)
            .open(dir.join("0000000000.prep"))
            .and_then(|f| f.write_all_at(&[0xAB], (1 << 20) - 1))
            .expect("mark");
        st.create(0, 1 << 20, b"HEADER").expect("create");
        // The prepared file became the segment: nothing is left over.
        assert_eq!(names(&dir), ["0000000000.seg"]);
        let bytes = std::fs::read(dir.join("0000000000.seg")).expect("read");
        assert_eq!(bytes.len(), 1 << 20);
        assert_eq!(&bytes[..6], b"HEADER");
        assert_eq!(bytes[(1 << 20) - 1], 0xAB);
    }

    #[test]
    fn without_zero_fill_segments_are_only_reserved() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut st = FileStorage::new(tmp.path())
            .expect("storage")
            .zero_fill(false);
        let dir = tmp.path().join("segments");
        st.prepare_now(0, 1 << 20);
        st.prepare(1, 1 << 20);
        assert!(st.preparing.is_none(), "no fill started");
        assert_eq!(names(&dir), Vec::<String>::new());
        st.create(0, 1 << 20, b"HEADER").expect("create");
        assert_eq!(names(&dir), ["0000000000.seg"]);
        let m = std::fs::metadata(dir.join("0000000000.seg")).expect("stat");
        assert_eq!(m.len(), 1 << 20);
        assert!(m.blocks() * 512 >= 1 << 20, "{} blocks", m.blocks());
        assert_eq!(
            &std::fs::read(dir.join("0000000000.seg")).expect("read")[..6],
            b"HEADER"
        );
    }

    #[test]
    fn zero_fill_writes_up_to_its_bound_and_reserves_the_rest() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        zero_fill(&path, 4 << 20, 1 << 20).expect("fill");
        let m = std::fs::metadata(&path).expect("stat");
        assert_eq!(m.len(), 4 << 20);
        // Reserved in full, not sparse past the written part.
        assert!(m.blocks() * 512 >= 4 << 20, "{} blocks", m.blocks());
        assert!(std::fs::read(&path).expect("read").iter().all(|&b| b == 0));
    }

    #[test]
    fn zeros_are_written_in_huge_page_chunks() {
        // What the page cache makes of each write is its folio: 2 MiB
        // writes at multiples of 2 MiB let it hold PMD-mappable folios.
        struct Calls(Vec<usize>);
        impl Write for Calls {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                assert!(buf.iter().all(|&b| b == 0));
                self.0.push(buf.len());
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut calls = Calls(Vec::new());
        write_zeros(&mut calls, (5 << 20) + 100).expect("write");
        assert_eq!(calls.0, [2 << 20, 2 << 20, (1 << 20) + 100]);
    }

    #[test]
    fn a_failed_fill_or_reservation_leaves_no_file() {
        // Past any file system's largest file: the reservation fails (EFBIG
        // or ENOSPC) after the zeros were written, as a full disk fails it.
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("0000000001.prep");
        assert!(zero_fill(&path, 1 << 62, 1 << 20).is_err());
        assert!(!path.exists());
        // A rotation whose own reservation fails leaves no `.tmp`.
        let (_tmp, mut st, dir) = storage();
        assert!(st.create(1, 1 << 62, b"H").is_err());
        assert_eq!(names(&dir), Vec::<String>::new());
    }

    #[test]
    fn a_segment_prepared_for_another_id_or_size_is_discarded() {
        let (_tmp, mut st, dir) = storage();
        st.prepare_now(7, 1 << 16);
        st.prepare_now(8, 1 << 16);
        assert_eq!(names(&dir), ["0000000008.prep"]);
        st.prepare_now(1, 1 << 12);
        st.create(1, 1 << 16, b"H").expect("create");
        assert_eq!(names(&dir), ["0000000001.seg"]);
        st.prepare_now(9, 1 << 16);
        st.create(0, 1 << 16, b"H").expect("create");
        assert_eq!(names(&dir), ["0000000000.seg", "0000000001.seg"]);
        assert_eq!(
            std::fs::metadata(dir.join("0000000000.seg"))
                .expect("stat")
                .len(),
            1 << 16
        );
    }

    #[test]
    fn writeback_starts_every_step_and_anew_in_each_segment() {
        // Steps of 2 pages; ranges run from and to page boundaries, never
        // into the page the next append writes.
        let p = PAGE as u64;
        let mut wb = WriteBehind {
            step: Some(2 * p),
            done: (u64::MAX, 0),
        };
        // Segment 3 from its header on: nothing until two whole pages piled up.
        assert_eq!(wb.after_write(3, 64, p + 100), None);
        assert_eq!(wb.after_write(3, p + 100, 2 * p + 7), Some((0, 2 * p)));
        assert_eq!(wb.after_write(3, 2 * p + 7, 4 * p - 1), None);
        assert_eq!(
            wb.after_write(3, 4 * p - 1, 4 * p + 9),
            Some((2 * p, 2 * p))
        );
        assert_eq!(
            wb.after_write(3, 4 * p + 9, 9 * p + 5),
            Some((4 * p, 5 * p))
        );
        // The next segment starts its own count where it is first written.
        assert_eq!(wb.after_write(4, 64, 80), None);
        assert_eq!(wb.after_write(4, 80, 2 * p), Some((0, 2 * p)));
        // Off (any policy but `never`): never.
        let mut off = WriteBehind {
            step: None,
            done: (u64::MAX, 0),
        };
        assert_eq!(off.after_write(3, 0, 1 << 30), None);
    }

    #[test]
    fn writing_with_write_behind_keeps_every_byte() {
        // Starting writeback must not change what the file holds.
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut st = FileStorage::new(tmp.path())
            .expect("storage")
            .zero_fill(false)
            .write_behind(Some(4096));
        st.create(0, 1 << 20, b"HEAD").expect("create");
        let mut want = vec![0u8; 1 << 20];
        want[..4].copy_from_slice(b"HEAD");
        for k in 0..200u64 {
            let data = vec![k as u8; 1000];
            let off = 4 + k * 1000;
            st.write_at(0, off, &data).expect("write");
            want[off as usize..off as usize + 1000].copy_from_slice(&data);
        }
        let got =
            std::fs::read(tmp.path().join("segments").join(segment_file_name(0))).expect("read");
        assert_eq!(got, want);
    }
}
