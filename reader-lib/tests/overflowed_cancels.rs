//! Proves that a snapshot's cancelled ranges are complete when more ranges
//! were cancelled than the gate's slots hold: the rest come from the
//! tombstone rows, and queries still hide every cancelled sequence.

mod fixture;

use fixture::{Ev, Fixture, Res};
use weir::{Reader, Region};
use weir_protocol::gate::CANCEL_CAPACITY;

/// Ranges past the gate's: enough that the events span two index chunks.
const EXTRA: u64 = 200;

#[test]
fn cancelled_ranges_past_the_gates_slots_come_from_tombstones() -> Res {
    let mut f = Fixture::new()?;
    let mut want = Vec::new();
    // One kept event, then a cancelled range of 1 or 2: ranges never touch,
    // so the gate holds the first CANCEL_CAPACITY of them and sets overflow.
    for i in 0..EXTRA + CANCEL_CAPACITY as u64 {
        f.append(&[Ev::new("a", "s", 0x1001, b"kept")])?;
        let (first, n) = f.cancel(1 + i % 2)?;
        want.push((first, first + n));
    }
    f.append(&[Ev::new("a", "s", 0x1001, b"last")])?;
    f.publish();
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    assert_eq!(snap.cancelled()?, want.as_slice());
    // A second call answers the same (kept from the first).
    assert_eq!(snap.cancelled()?.len(), CANCEL_CAPACITY + EXTRA as usize);
    let kept = snap.query(&Region::all())?;
    assert_eq!(kept.len(), CANCEL_CAPACITY + EXTRA as usize + 1);
    assert!(
        kept.iter()
            .all(|e| !want.iter().any(|&(s, e2)| (s..e2).contains(&e.sequence())))
    );
    Ok(())
}

#[test]
fn a_range_cancelled_past_the_watermark_ends_at_it() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("a", "s", 0x1001, b"kept")])?;
    f.publish();
    // A failed write's range is stored before `visible` passes it: a
    // snapshot between the two sees it reach past its watermark.
    assert_eq!(f.cancel(3)?, (1, 3));
    let r = Reader::open(f.path())?;
    assert_eq!(r.snapshot().visible(), 1);
    assert!(r.snapshot().cancelled()?.is_empty());
    f.set_visible(3);
    let snap = r.snapshot();
    assert_eq!(snap.cancelled()?, &[(1, 3)]);
    Ok(())
}
