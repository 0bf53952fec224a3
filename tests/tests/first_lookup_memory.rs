//! `Reader::open` and a first lookup allocate little: every page a new
//! process writes for the first time is a page fault, and these are paid on
//! every process's first answer (issue 3: open + first lookup ≤ 0.5 ms). The
//! reader's lazily filled tables once wrote ≈ 700 KB here (≈ 200 faults).
//! Only the test thread's allocations between the two flags are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use weir::{EventId, Reader};
mod common;
use common::small_chunk_store;
use weir_protocol::wire::AppendRequest;

/// Counts the bytes allocated through it by a thread that set `COUNTING`.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (no destructor, no
    /// allocation on first use: safe to read inside the allocator).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn open_and_a_first_lookup_allocate_a_few_kilobytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = small_chunk_store(dir);
    let batch = (0..3000)
        .map(|i| AppendRequest {
            entity: format!("user:{}", i % 97),
            scope: format!("tenant:{}", i % 5),
            kind: 0x1001,
            payload: vec![7; 100],
            ..AppendRequest::default()
        })
        .collect();
    let receipts = store.append_batch(batch).unwrap();
    store.shutdown().unwrap();

    COUNTING.with(|c| c.set(true));
    let r = Reader::open(dir).unwrap();
    let e = r.get(EventId(receipts[1234].event_id)).unwrap().unwrap();
    assert_eq!(e.payload().unwrap(), &[7u8; 100]);
    COUNTING.with(|c| c.set(false));
    assert_eq!(e.entity(), format!("user:{}", 1234 % 97));
    let used = ALLOCATED.load(Ordering::Relaxed);
    eprintln!("open + first lookup allocated {used} bytes");
    assert!(
        used < 24 << 10,
        "open + first lookup allocated {used} bytes"
    );
}
