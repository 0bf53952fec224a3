//! A loom model of the publish/read protocol (threads stand in for the
//! daemon and reader processes): the writer writes rows, then stores
//! `visible` with Release; a reader loads it Relaxed + fence(Acquire) and must
//! never see an unwritten row. Also the seqlock of the cancelled ranges: a
//! reader that accepts a copy never sees a torn pair.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p weir --test loom_publish --release`
#![allow(unexpected_cfgs)] // `loom` is set by RUSTFLAGS, not by a feature.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering, fence};
use loom::thread;

const ROWS: usize = 2;

struct Shared {
    rows: [UnsafeCell<u64>; ROWS],
    visible: AtomicU64,
}

// SAFETY (model only): rows are written before `visible` covers them and
// read only below it; loom checks exactly that claim.
unsafe impl Sync for Shared {}

#[test]
fn readers_never_see_unwritten_rows() {
    loom::model(|| {
        let s = Arc::new(Shared {
            rows: [UnsafeCell::new(0), UnsafeCell::new(0)],
            visible: AtomicU64::new(0),
        });
        let w = s.clone();
        let writer = thread::spawn(move || {
            for i in 0..ROWS {
                // SAFETY: row i is not yet published; no reader touches it.
                w.rows[i].with_mut(|p| unsafe { *p = i as u64 + 100 });
                // SYNC: Release publish, as the daemon's store of `visible`.
                w.visible.store(i as u64 + 1, Ordering::Release);
            }
        });
        let r = s.clone();
        let reader = thread::spawn(move || {
            // Relaxed load + fence(Acquire): all a read-only mapping allows.
            let v = r.visible.load(Ordering::Relaxed);
            // SYNC: pairs with the writer's Release store of `visible`.
            fence(Ordering::Acquire);
            for i in 0..v as usize {
                // SAFETY: row i < visible is published and never rewritten.
                let row = r.rows[i].with(|p| unsafe { *p });
                assert_eq!(row, i as u64 + 100, "saw an unwritten row below visible");
            }
        });
        writer.join().unwrap();
        reader.join().unwrap();
    });
}

#[test]
fn seqlock_readers_never_accept_a_torn_range() {
    loom::model(|| {
        let seq = Arc::new(AtomicU64::new(0));
        let range = Arc::new((AtomicU64::new(10), AtomicU64::new(20)));
        let (ws, wr) = (seq.clone(), range.clone());
        let writer = thread::spawn(move || {
            ws.store(1, Ordering::Relaxed);
            fence(Ordering::Release);
            wr.0.store(30, Ordering::Relaxed);
            wr.1.store(40, Ordering::Relaxed);
            // SYNC: Release makes the new pair visible with the even counter.
            ws.store(2, Ordering::Release);
        });
        let reader = thread::spawn(move || {
            let before = seq.load(Ordering::Relaxed);
            // SYNC: pairs with the writer's Release of the even counter.
            fence(Ordering::Acquire);
            let pair = (
                range.0.load(Ordering::Relaxed),
                range.1.load(Ordering::Relaxed),
            );
            // SYNC: orders the pair loads before the counter re-check.
            fence(Ordering::Acquire);
            let after = seq.load(Ordering::Relaxed);
            if before % 2 == 0 && before == after {
                assert!(pair == (10, 20) || pair == (30, 40), "torn range {pair:?}");
            }
        });
        writer.join().unwrap();
        reader.join().unwrap();
    });
}
