//! Helpers shared by the tests that write a store in-process.
#![allow(dead_code)]

use weir_daemon::{Config, Store, SyncPolicy};

/// An in-process store in `dir` with 1024-row index chunks (so that a few
/// thousand events fill several) and no fsync.
pub fn small_chunk_store(dir: &std::path::Path) -> Store {
    Store::open(Config {
        sync: SyncPolicy::Never,
        chunk_rows_log2: 10,
        ..Config::new(dir)
    })
    .unwrap()
}

/// The names of the files under `dir` that this process maps read-only
/// and shared (a reader's mappings; the in-process writer maps its files
/// read-write), sorted, each once.
pub fn mapped_read_only(dir: &std::path::Path) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.to_str().unwrap();
    let mut names: Vec<String> = maps
        .lines()
        .filter(|l| l.contains(dir) && l.split_whitespace().nth(1) == Some("r--s"))
        .filter_map(|l| l.rsplit('/').next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The `VmFlags` line of every mapping of `file` in this process
/// (`/proc/self/smaps`), e.g. `"rd mr me ms hg"`.
pub fn vm_flags(file: &std::path::Path) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    // smaps names the file by its resolved path (a TMPDIR may be a symlink).
    let file = file.canonicalize().unwrap();
    let name = file.to_str().unwrap();
    // A mapping's first line starts with its address range, `start-end` in hex.
    let is_header = |line: &str| {
        let range = line.split_whitespace().next().unwrap_or_default();
        range.split_once('-').is_some_and(|(a, b)| {
            u64::from_str_radix(a, 16).is_ok() && u64::from_str_radix(b, 16).is_ok()
        })
    };
    let mut out = Vec::new();
    let mut ours = false;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if ours {
                out.push(flags.trim().to_owned());
            }
        } else if is_header(line) {
            ours = line.ends_with(name);
        }
    }
    out
}
