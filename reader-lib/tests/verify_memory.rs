//! `verify_chain` checks an entity in memory that does not grow with its
//! length: the peak heap of a check of 40,000 events is that of 10,000
//! (it collected the whole stream, about 170 bytes per event, before).
//! Alone in its binary: the counting allocator sees the whole process.
mod fixture;
use fixture::{Ev, Fixture, Res};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use weir::Reader;

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; only counters are
// kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(l) };
        let now = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) };
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak heap above the start of a second `verify_chain` of an entity of
/// `events` events (the first maps the files).
fn peak(events: usize) -> Res<usize> {
    let mut f = Fixture::new()?;
    for _ in 0..events / 1000 {
        f.append(&vec![Ev::new("e", "s", 0x1001, b""); 1000])?;
    }
    f.publish();
    let r = Reader::open(f.path())?;
    let first = r.verify_chain("e")?;
    assert_eq!(
        (first.verified, first.first_bad.is_none()),
        (events as u64, true)
    );
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let again = r.verify_chain("e")?;
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert_eq!(again.verified, events as u64);
    Ok(peak)
}

#[test]
fn verify_chain_memory_does_not_grow_with_the_entity() -> Res {
    let (small, large) = (peak(10_000)?, peak(40_000)?);
    assert!(
        large <= small + 4096 && large < 64 << 10,
        "peak heap {small} bytes for 10,000 events, {large} for 40,000"
    );
    Ok(())
}
