//! On a file system that fills up, a clean stop still leaves the index files
//! reusable (the next start needs no space for a new index generation), and
//! what fails for lack of space leaves no partial file holding the last
//! free blocks.
//! (The full disks are real tmpfs mounts: skipped where this process may not
//! mount one.)
mod common;
use common::{config, ev};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use weir_daemon::{RestorePath, Store};

/// A tmpfs mounted on a new temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` (the test is skipped) unless this process may mount one.
    fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = nix::unistd::geteuid().is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
                .arg(dir.path())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Self(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Writes `path` until the file system is full.
fn fill_up(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 64 << 10, 4 << 10] {
        while f.write_all(&vec![0xEE; chunk]).is_ok() {}
    }
}

fn keyed(i: u64) -> weir_protocol::wire::AppendRequest {
    weir_protocol::wire::AppendRequest {
        idempotency_key: Some(u128::from(i) + 1),
        ..ev("user:1", 0x1001, &[i as u8; 100])
    }
}

#[test]
fn a_clean_stop_on_a_full_disk_leaves_the_index_files_reusable() {
    let Some(fs) = Tmpfs::mount(96 << 20) else {
        return;
    };
    let dir = fs.path().join("d");
    let cfg = || weir_daemon::Config {
        idempotency_window: 1000,
        ..config(&dir)
    };
    let s = Store::open(cfg()).unwrap();
    let receipts: Vec<_> = (0..10).map(|i| s.append(keyed(i)).unwrap()).collect();
    // What the next start may use, then nothing left.
    std::fs::write(fs.path().join("reserve"), vec![0xEE; 256 << 10]).unwrap();
    fill_up(&fs.path().join("filler"));
    s.shutdown().unwrap();
    drop(s);
    let generation = dir.join("index/gen-00000000");
    let names: Vec<_> = std::fs::read_dir(&generation)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "left over: {names:?}"
    );

    std::fs::remove_file(fs.path().join("reserve")).unwrap();
    let s = Store::open(cfg()).unwrap();
    assert_eq!(
        s.restore_report().path,
        RestorePath::IndexFiles,
        "{:?}",
        s.restore_report().fallback_reason
    );
    assert_eq!(s.stats().visible, 10);
    // The window came back from `idem`: a retry gets its first receipt.
    let again = s.append(keyed(3)).unwrap();
    assert!(again.replayed);
    assert_eq!(again.sequence, receipts[3].sequence);
    s.shutdown().unwrap();
}

/// Every file under `dir`, by name, with the bytes allocated to it.
fn allocated(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().blocks() * 512)
        })
        .collect()
}

#[test]
fn a_clean_stop_allocates_nothing_in_the_index_generation() {
    // Where no tmpfs can be mounted, the same property, seen from the files:
    // the window goes into the blocks the start reserved for it, and no
    // file is made. (Extent-tree blocks that ext4 takes from its reserve
    // when it converts reserved space into written space can still show
    // up in another file's count.)
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = Store::open(weir_daemon::Config {
        idempotency_window: 1000,
        ..config(dir)
    })
    .unwrap();
    for i in 0..10 {
        s.append(keyed(i)).unwrap();
    }
    let generation = dir.join("index/gen-00000000");
    let before = allocated(&generation);
    assert!(before["idem"] >= 24 + 1000 * 80 + 4, "{before:?}");
    s.shutdown().unwrap();
    let after = allocated(&generation);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(after["idem"], before["idem"]);
}

#[test]
fn a_zero_fill_that_fills_the_disk_gives_its_space_back() {
    use weir_daemon::storage::{FileStorage, Storage};
    let Some(fs) = Tmpfs::mount(8 << 20) else {
        return;
    };
    let mut st = FileStorage::new(fs.path()).unwrap();
    st.create(0, 1 << 20, b"HEADER").unwrap();
    std::fs::write(fs.path().join("reserve"), vec![0xEE; 1 << 20]).unwrap();
    fill_up(&fs.path().join("filler"));
    std::fs::remove_file(fs.path().join("reserve")).unwrap();
    // The background fill of the next segment runs out of space half way;
    // the next preparation waits for it (and fails itself).
    st.prepare(1, 4 << 20);
    st.prepare_now(2, 4 << 20);
    let names: Vec<_> = std::fs::read_dir(fs.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["0000000000.seg"]);
    // The rotation's own reservation fails too, and leaves nothing.
    assert!(st.create(1, 4 << 20, b"HEADER").is_err());
    assert!(!fs.path().join("segments/0000000001.tmp").exists());
    // The free megabyte is free again.
    std::fs::write(fs.path().join("reserve"), vec![0xEE; 1 << 20]).unwrap();
}
