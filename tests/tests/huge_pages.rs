//! Segments are mapped for huge pages (FORMAT.md, "Media assumptions"): the
//! daemon's read-only mappings (restore, replays) and every reader's ask the
//! kernel (`MADV_HUGEPAGE`) to bring pages that are not cached in as 2 MiB
//! folios, so that a store read back after a reboot is mapped as a freshly
//! zero-filled one is, one page-table entry per 2 MiB. Readers ask while the
//! store fits in half their memory, or as `WEIR_HUGE_PAGES` says.
mod common;
use common::vm_flags;
use std::path::Path;
use weir::{EventId, Reader};
use weir_daemon::storage::{FileStorage, Storage};
use weir_daemon::{Config, Store, SyncPolicy};
use weir_protocol::wire::AppendRequest;

/// Without transparent huge pages the kernel refuses the advice: nothing to
/// check (the test says so and passes).
fn has_thp() -> bool {
    let thp = Path::new("/sys/kernel/mm/transparent_hugepage").exists();
    if !thp {
        eprintln!("skipped: this kernel has no transparent huge pages");
    }
    thp
}

/// Whether a `VmFlags` line has `hg`: the mapping was advised `MADV_HUGEPAGE`.
fn has_hg(flags: &str) -> bool {
    flags.split_whitespace().any(|f| f == "hg")
}

fn assert_advised(file: &Path) {
    let flags = vm_flags(file);
    assert_eq!(
        flags.len(),
        1,
        "one mapping of {}: {flags:?}",
        file.display()
    );
    assert!(
        has_hg(&flags[0]),
        "{} is mapped without MADV_HUGEPAGE: {flags:?}",
        file.display()
    );
}

#[test]
fn the_daemon_maps_segments_for_huge_pages() {
    if !has_thp() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::new(tmp.path()).unwrap();
    storage.create(0, 4 << 20, b"segment header").unwrap();
    let bytes = storage.read(0).unwrap();
    assert_eq!(&bytes[..14], b"segment header");
    assert_advised(&tmp.path().join("segments").join("0000000000.seg"));
}

/// A store in `dir` holding one event with a 100-byte payload of 7s, the
/// daemon stopped; returns the event's id. Its segments are 4 MiB, so that
/// `auto` asks for huge pages under any memory limit above 8 MiB.
fn one_event_store(dir: &Path) -> u128 {
    let store = Store::open(Config {
        sync: SyncPolicy::Never,
        segment_max_bytes: 4 << 20,
        max_payload_bytes: 1 << 20,
        max_batch_bytes: (1 << 20) + 2048,
        ..Config::new(dir)
    })
    .unwrap();
    let receipt = store
        .append(AppendRequest {
            entity: "user:1".into(),
            scope: "tenant:a".into(),
            kind: 0x1001,
            payload: vec![7; 100],
            ..AppendRequest::default()
        })
        .unwrap();
    store.shutdown().unwrap();
    receipt.event_id
}

/// The variables that hand [`reader_in_a_child`] its store and event id.
const CHILD_DIR: &str = "WEIR_TEST_HUGE_PAGES_DIR";
const CHILD_ID: &str = "WEIR_TEST_HUGE_PAGES_ID";

/// A helper for [`readers_follow_the_huge_pages_setting`], which runs it in
/// a child process (the setting is read from the environment, once per
/// process): opens the store, reads the event and prints the segment
/// mapping's flags, or the error `Reader::open` gave, each on a line of its
/// own.
#[test]
#[ignore = "a helper, run in a child process by readers_follow_the_huge_pages_setting"]
fn reader_in_a_child() {
    let (Some(dir), Some(id)) = (std::env::var_os(CHILD_DIR), std::env::var_os(CHILD_ID)) else {
        eprintln!("nothing to do: run by readers_follow_the_huge_pages_setting");
        return;
    };
    let id: u128 = id.to_str().unwrap().parse().unwrap();
    let reader = match Reader::open(&dir) {
        Ok(r) => r,
        Err(e) => {
            println!("\nOPEN ERROR: {e}");
            return;
        }
    };
    let e = reader.get(EventId(id)).unwrap().unwrap();
    assert_eq!(e.payload().unwrap(), &[7; 100][..]);
    let flags = vm_flags(&Path::new(&dir).join("segments").join("0000000000.seg"));
    println!("\nFLAGS: {}", flags.join(" | "));
}

#[test]
fn readers_follow_the_huge_pages_setting() {
    if !has_thp() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let id = one_event_store(tmp.path());
    // `None`: the variable unset.
    let child = |setting: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--ignored", "--exact", "reader_in_a_child", "--nocapture"])
            .env(CHILD_DIR, tmp.path())
            .env(CHILD_ID, id.to_string());
        match setting {
            Some(s) => cmd.env(weir::HUGE_PAGES_ENV, s),
            None => cmd.env_remove(weir::HUGE_PAGES_ENV),
        };
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "child with {setting:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = |marker: &str| {
            stdout
                .lines()
                .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.to_owned()))
        };
        (line("FLAGS: "), line("OPEN ERROR: "))
    };
    let (never, _) = child(Some("never"));
    let never = never.expect("the child read the event");
    assert!(!has_hg(&never), "`never` still advised: {never}");
    // A store of one 4 MiB segment fits in half of any memory a test runs in.
    for setting in [None, Some(""), Some("auto"), Some("always")] {
        let (flags, _) = child(setting);
        let flags = flags.expect("the child read the event");
        assert!(has_hg(&flags), "{setting:?} did not advise: {flags}");
    }
    let (flags, error) = child(Some("sometimes"));
    assert_eq!(flags, None, "a bad setting opened the store");
    assert_eq!(
        error.as_deref(),
        Some(
            "environment variable WEIR_HUGE_PAGES is \"sometimes\"; expected auto, always or never"
        )
    );
}
