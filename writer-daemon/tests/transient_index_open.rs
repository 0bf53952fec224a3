//! An index chunk file that cannot be created for want of descriptors
//! (EMFILE) refuses the append that needs it with a retryable error before
//! any of its frames is written; the writer is not poisoned, the retry
//! succeeds once a descriptor is free, and a restart finds every
//! acknowledged event. (One test in this file: it lowers the whole test
//! process's open-file limit.)
mod common;
use common::{config, ev};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::fs::File;
use weir_daemon::{AppendError, Store};
use weir_protocol::wire::{AppendRequest, Receipt};

fn batch(b: u64) -> Vec<AppendRequest> {
    (0..50)
        .map(|i| AppendRequest {
            idempotency_key: Some(u128::from(b * 50 + i) + 1),
            ..ev(&format!("user:{}", i % 7), 0x1001, &[b as u8; 20])
        })
        .collect()
}

/// Takes every descriptor the process may still open: the soft limit goes
/// down to just above the highest open descriptor, and the free ones below
/// are opened. Dropping one of the returned files frees one descriptor.
fn take_every_descriptor() -> Vec<File> {
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, highest + 1, hard).unwrap();
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) => return held,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn an_index_chunk_that_cannot_be_created_refuses_the_append_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    // 1,024 rows to a chunk: batch 20 (sequences 1000..1050) needs chunk 1.
    let s = Store::open(config(dir.path())).unwrap();
    let mut acked: Vec<(Vec<AppendRequest>, Vec<Receipt>)> = Vec::new();
    for b in 0..20 {
        acked.push((batch(b), s.append_batch(batch(b)).unwrap()));
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let mut held = take_every_descriptor();
    let refused = s.append_batch(batch(20));
    assert!(!s.stats().writer_poisoned);
    assert_eq!(s.stats().visible, 1000);
    // One descriptor free: the retry creates the chunk.
    held.pop();
    let retried = s.append_batch(batch(20));
    drop(held);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let err = refused.unwrap_err();
    assert!(
        matches!(&err, AppendError::Unavailable { cause, .. }
            if cause.contains("chunk-000001") && cause.contains("Too many open files")),
        "{err}"
    );
    let retried = retried.unwrap();
    assert_eq!(retried[0].sequence, 1000, "the refused append left a hole");
    acked.push((batch(20), retried));
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open(config(dir.path())).unwrap();
    for (reqs, receipts) in &acked {
        let again = s.append_batch(reqs.clone()).unwrap();
        for (a, r) in again.iter().zip(receipts) {
            assert!(a.replayed, "sequence {} was lost", r.sequence);
            assert_eq!((a.sequence, a.event_hash), (r.sequence, r.event_hash));
        }
    }
    s.shutdown().unwrap();
}
