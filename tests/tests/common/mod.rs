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
