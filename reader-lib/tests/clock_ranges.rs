//! Proves that a query for an entity's clocks from some point on (the
//! events since a snapshot of it) reads the rows from the entity's head down
//! to that point, not its whole chain nor the whole log, and that answers
//! under clock ranges stay those of a filter over every event.

mod fixture;

use fixture::{Ev, Fixture, Res};
use weir::{EventKind, KindFilter, Reader, Region};

const LONG: u32 = 2_000;
const RARE: u16 = 0x1004;

/// `acct` with `LONG` events, `acct:a` and `acct:b` with 600 each, and
/// `other` with 200, interleaved. Kind `RARE` holds `acct`'s clocks
/// 1500-1504, then `other`'s 190-199: a chain whose clocks do not fall.
fn store() -> Res<Fixture> {
    let mut f = Fixture::new()?;
    let mut evs = Vec::new();
    for i in 0..LONG {
        let kind = if (1_500..1_505).contains(&i) {
            RARE
        } else {
            0x1001
        };
        evs.push(Ev::new("acct", "s", kind, b""));
        if i % 10 == 0 {
            let kind = if i >= 1_900 { RARE } else { 0x1001 };
            evs.push(Ev::new("other", "s", kind, b""));
        }
        if i % 10 < 3 {
            evs.push(Ev::new("acct:a", "s", 0x1002, b""));
            evs.push(Ev::new("acct:b", "t", 0x1001, b""));
        }
    }
    for batch in evs.chunks(256) {
        f.append(batch)?;
    }
    f.publish();
    Ok(f)
}

/// The sequences a filter over every written event selects, ascending.
fn model(f: &Fixture, region: &Region) -> Vec<u64> {
    f.written
        .iter()
        .filter_map(|w| w.ev.as_ref().map(|e| (w, e)))
        .filter(|(w, e)| region.matches(&e.entity, &e.scope, EventKind(e.kind), w.clock))
        .map(|(w, _)| w.seq)
        .collect()
}

fn seqs(entries: &[weir::Entry<'_>]) -> Vec<u64> {
    entries.iter().map(weir::Entry::sequence).collect()
}

#[test]
fn events_since_a_clock_read_only_the_rows_above_it() -> Res {
    let f = store()?;
    let r = Reader::open(f.path())?;
    // The entity and its descendants: `acct:a` and `acct:b` reach clock
    // 599 only, so the range holds `acct`'s last ten events.
    let region = Region::entity("acct").with_clock_range(LONG - 10, u32::MAX);
    let snap = r.snapshot();
    let got = seqs(&snap.query(&region)?);
    assert_eq!(got, model(&f, &region));
    assert_eq!(got.len(), 10);
    // `acct`'s rows down to clock LONG - 11 (11) and one row of each
    // descendant (below the range at once); before, the chain's
    // 2,000 rows priced a scan of the whole log instead.
    let (rows, cells) = snap.work();
    assert_eq!((rows, cells), (13, 0), "rows walked, cells scanned");
    assert_eq!(snap.count(&region)?, 10);

    // Paging through it, four at a time.
    let snap = r.snapshot();
    let (mut after, mut paged) = (None, Vec::new());
    loop {
        let page = snap.query_after(&region, after, 4)?;
        let Some(last) = page.last() else { break };
        after = Some(last.sequence());
        paged.extend(seqs(&page));
    }
    assert_eq!(paged, got);
    assert!(snap.work().0 <= 4 * 13, "{:?}", snap.work());
    Ok(())
}

#[test]
fn answers_under_clock_ranges_equal_a_filter() -> Res {
    let f = store()?;
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    let ranges = [
        (0, 0),
        (0, 5),
        (5, 5),
        (595, 605),
        (599, u32::MAX),
        (600, u32::MAX),
        (1_000, 1_010),
        (1_000, u32::MAX),
        (1_500, 1_502),
        (LONG - 1, LONG - 1),
        (LONG, u32::MAX),
        (u32::MAX, u32::MAX),
    ];
    let regions = [
        Region::entity("acct"),
        Region::entity("acct:"),
        Region::entity("acct:a"),
        Region::entity("other"),
        Region::entity("acct").with_scope("t"),
        Region::all().with_scope("s"),
        // Walked down the kind's chain (15 rows), which a clock below the
        // range must not end.
        Region::all().with_kind(KindFilter::Exact(EventKind(RARE))),
        Region::all(),
    ];
    for base in &regions {
        for &(lo, hi) in &ranges {
            let region = base.clone().with_clock_range(lo, hi);
            let want = model(&f, &region);
            assert_eq!(seqs(&snap.query(&region)?), want, "{region:?}");
            assert_eq!(snap.count(&region)?, want.len() as u64, "{region:?}");
            let after = want.get(want.len() / 2).copied();
            let tail: Vec<u64> = want
                .iter()
                .copied()
                .filter(|&s| after.is_none_or(|a| s > a))
                .take(7)
                .collect();
            assert_eq!(
                seqs(&snap.query_after(&region, after, 7)?),
                tail,
                "{region:?} after {after:?}"
            );
        }
    }
    Ok(())
}
