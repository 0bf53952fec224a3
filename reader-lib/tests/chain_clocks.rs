//! `verify_chain` requires an entity's clocks to run 0, 1, 2, ... down its
//! chain: a chain whose hashes link but whose clocks skip or repeat one (a
//! fork) is a `Clock` break at the first such event, whether the chain is
//! walked from its head or (the head is stale) scanned.
mod fixture;
use fixture::{Ev, Fixture, Res};
use weir::{BreakKind, Reader};

fn chain_with_next_clock(next: u32) -> Res<(Fixture, u64)> {
    let mut f = Fixture::new()?;
    for i in 0..4u8 {
        f.append(&[
            Ev::new("c0", "s", 0x1001, &[i]),
            Ev::new("c1", "s", 0x1001, &[i]),
        ])?;
    }
    f.set_next_clock("c0", next);
    let bad = f.append(&[Ev::new("c0", "s", 0x1001, b"x")])?[0];
    f.append(&[Ev::new("c0", "s", 0x1001, b"y")])?;
    f.publish();
    Ok((f, bad))
}

#[test]
fn a_skipped_or_repeated_clock_breaks_the_chain() -> Res {
    // Clocks 0..3, then 5 (skipped 4) or 2 (a second 2: a fork).
    for next in [5, 2] {
        let (f, bad) = chain_with_next_clock(next)?;
        let r = Reader::open(f.path())?;
        let report = r.verify_chain("c0")?;
        let b = report.first_bad.ok_or("the clock went unnoticed")?;
        assert_eq!((report.verified, b.sequence), (4, bad), "next clock {next}");
        assert!(matches!(b.problem, BreakKind::Clock), "{:?}", b.problem);
        let other = r.verify_chain("c1")?;
        assert_eq!((other.verified, other.first_bad.is_none()), (4, true));
    }
    let (f, _) = chain_with_next_clock(4)?;
    let report = Reader::open(f.path())?.verify_chain("c0")?;
    assert_eq!((report.verified, report.first_bad.is_none()), (6, true));
    Ok(())
}

#[test]
fn a_stale_head_past_visible_checks_the_same_by_a_scan() -> Res {
    // The walk from a head naming an unwritten row past `visible` is stale;
    // the check goes on oldest first over a column scan, as `stream` does.
    for (next, verified, broken) in [(4, 6, false), (5, 4, true)] {
        let (f, bad) = chain_with_next_clock(next)?;
        f.set_entity_head("c0", f.visible() + 5);
        let report = Reader::open(f.path())?.verify_chain("c0")?;
        assert_eq!(report.verified, verified, "next clock {next}");
        match report.first_bad {
            Some(b) if broken => {
                assert_eq!(b.sequence, bad);
                assert!(matches!(b.problem, BreakKind::Clock), "{:?}", b.problem);
            }
            None if !broken => {}
            other => panic!("next clock {next}: {other:?}"),
        }
    }
    Ok(())
}
