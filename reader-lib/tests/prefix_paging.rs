//! Proves that a page, a count or a subscription's refill over an entity
//! prefix that matches many entities costs the cells it scans, not a head
//! read per matching entity: the work per call does not grow with the
//! number of entities, while a prefix of few entities still weighs their
//! chains, and the answers stay those of a scan.

mod fixture;

use fixture::{Ev, Fixture, Res};
use std::time::Duration;
use weir::{Reader, Region};

/// `entities` entities `u:{i}`, one event each, then `rare` (one event).
/// (The fixture's names table holds 16,384 names.)
fn store(entities: usize) -> Res<Fixture> {
    let mut f = Fixture::new()?;
    let evs: Vec<Ev> = (0..entities)
        .map(|i| Ev::new(&format!("u:{i}"), "s", 0x1001, b""))
        .chain([Ev::new("rare", "s", 0x1001, b"")])
        .collect();
    for batch in evs.chunks(256) {
        f.append(batch)?;
    }
    f.publish();
    Ok(f)
}

/// (pages, heads read, cells scanned) paging `u` 100 at a time, checking
/// that the pages hold every `u` event in order.
fn page_through(f: &Fixture, entities: u64) -> Res<(u64, u64, u64)> {
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    let region = Region::entity("u");
    let (mut after, mut next, mut pages) = (None, 0, 0);
    loop {
        let page = snap.query_after(&region, after, 100)?;
        let Some(last) = page.last() else { break };
        for e in &page {
            assert_eq!(e.sequence(), next);
            next += 1;
        }
        after = Some(last.sequence());
        pages += 1;
    }
    assert_eq!(next, entities);
    assert_eq!(snap.count(&region)?, entities);
    Ok((pages, snap.heads_read(), snap.work().1))
}

#[test]
fn paging_a_prefix_of_many_entities_reads_no_head_per_entity() -> Res {
    let (pages, heads, cells) = page_through(&store(600)?, 600)?;
    assert_eq!(pages, 6);
    // A head per entity for every page and the count read 4,800 heads.
    assert_eq!(heads, 0, "{heads} heads read");
    assert!(cells <= 601, "{cells} cells scanned");
    let (pages, heads, cells) = page_through(&store(6_000)?, 6_000)?;
    assert_eq!(pages, 60);
    // 372,000 before.
    assert_eq!(heads, 0, "{heads} heads read");
    assert!(cells <= 6_001, "{cells} cells scanned");
    // A prefix of one entity still takes its chain.
    let f = store(600)?;
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    let rare = snap.query_after(&Region::entity("rare"), None, 10)?;
    assert_eq!(rare.iter().map(|e| e.sequence()).collect::<Vec<_>>(), [600]);
    assert_eq!((snap.heads_read(), snap.work()), (1, (1, 0)));
    Ok(())
}

#[test]
fn a_prefix_subscription_refill_scans_the_new_cells_only() -> Res {
    for entities in [600, 6_000] {
        let mut f = store(entities)?;
        let r = Reader::open(f.path())?;
        let mut sub = r.subscribe(Region::entity("u"), r.visible());
        assert!(sub.next_timeout(Duration::ZERO)?.is_none());
        for i in 0..10 {
            f.append(&[
                Ev::new("other", "s", 0x1001, b""),
                Ev::new("u:0", "s", 0x1001, b""),
            ])?;
            f.publish();
            let e = sub.next_timeout(Duration::ZERO)?.ok_or("the new event")?;
            assert_eq!(e.sequence(), entities as u64 + 2 + 2 * i);
        }
        // A head per entity per refill read 6,000 (60,000) before.
        assert_eq!(sub.heads_read(), 0, "{entities} entities");
    }
    Ok(())
}

#[test]
fn a_prefix_thin_after_the_start_scans_as_far_as_its_heads_cost_then_walks() -> Res {
    // 40 entities `p:{i}`, 2,000 other events, the 40 again.
    let mut f = Fixture::new()?;
    let p: Vec<Ev> = (0..40)
        .map(|i| Ev::new(&format!("p:{i}"), "s", 0x1001, b""))
        .collect();
    f.append(&p)?;
    for _ in 0..8 {
        f.append(&vec![Ev::new("other", "s", 0x1001, b""); 250])?;
    }
    f.append(&p)?;
    f.publish();
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    let page = snap.query_after(&Region::entity("p"), Some(39), 10)?;
    let want: Vec<u64> = (2_040..2_050).collect();
    assert_eq!(page.iter().map(|e| e.sequence()).collect::<Vec<_>>(), want);
    // The heads (40 × 32 cells) priced over a scan for 10 rows at one per
    // entity: a scan of 1,280 cells found none, so the heads were read.
    assert_eq!(snap.heads_read(), 40);
    Ok(())
}
