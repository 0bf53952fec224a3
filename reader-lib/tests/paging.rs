//! Proves that paging with `query_after` and a small limit reads a dense
//! region about once in all, by scanning from each page's start, instead of
//! walking the region's chain from its head on every page; that a sparse
//! region still takes its chain; and that a region thin after the page's
//! start costs a bounded scan, then its chain.

mod fixture;

use fixture::{Ev, Fixture, Res};
use weir::{Reader, Region, Snapshot};

const EVENTS: u64 = 20_480;
const SCOPES: u64 = 64;

/// `EVENTS` events round-robin over `SCOPES` scopes; every 1,024th is of
/// entity `rare`; scope `burst` has the first 600 and the last 10.
fn store() -> Res<Fixture> {
    let mut f = Fixture::new()?;
    let evs: Vec<Ev> = (0..EVENTS)
        .map(|i| {
            let entity = if i % 1024 == 0 {
                "rare".to_owned()
            } else {
                format!("e:{}", i % 512)
            };
            let scope = if !(600..EVENTS - 10).contains(&i) {
                "burst".to_owned()
            } else {
                format!("s:{}", i % SCOPES)
            };
            Ev::new(&entity, &scope, 0x1001, b"")
        })
        .collect();
    for batch in evs.chunks(256) {
        f.append(batch)?;
    }
    f.publish();
    Ok(f)
}

/// Every page of `region` from `after`, `limit` at a time.
fn page_all(
    snap: &Snapshot<'_>,
    region: &Region,
    after: Option<u64>,
    limit: usize,
) -> Res<Vec<u64>> {
    let (mut all, mut after) = (Vec::new(), after);
    loop {
        let page = snap.query_after(region, after, limit)?;
        assert!(page.len() <= limit);
        let Some(last) = page.last() else {
            return Ok(all);
        };
        after = Some(last.sequence());
        all.extend(page.iter().map(|e| e.sequence()));
    }
}

#[test]
fn paging_a_dense_region_with_a_small_limit_reads_it_about_once() -> Res {
    let f = store()?;
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    let region = Region::all().with_scope("s:7");
    let want: Vec<u64> = (600..EVENTS - 10).filter(|i| i % SCOPES == 7).collect();
    assert_eq!(page_all(&snap, &region, None, 10)?, want);
    // The scope's chain (311 rows, priced under a scan of the store) walked
    // from its head for each of 32 pages reads about 5,000 rows.
    let (rows, cells) = snap.work();
    assert!(rows <= want.len() as u64, "{rows} rows walked");
    assert!(cells <= 2 * EVENTS, "{cells} cells scanned");
    Ok(())
}

#[test]
fn a_sparse_region_takes_its_chain() -> Res {
    let f = store()?;
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    let want: Vec<u64> = (0..EVENTS).step_by(1024).collect();
    assert_eq!(page_all(&snap, &Region::entity("rare"), None, 10)?, want);
    // Pages of 10 from 0 and from the 10th: 20 + 10 rows, no scan.
    assert_eq!(snap.work(), (30, 0));
    Ok(())
}

#[test]
fn a_region_thin_after_the_start_scans_no_more_than_its_chain_costs() -> Res {
    let f = store()?;
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    // `burst` looks dense (610 rows), but has nothing in [600, 20470): the
    // first page finds 5 rows, then scans up to the chain's price (610 rows
    // at 32 cells each) and walks the chain down to where it stopped.
    let region = Region::all().with_scope("burst");
    let want: Vec<u64> = (595..600).chain(EVENTS - 10..EVENTS).collect();
    assert_eq!(page_all(&snap, &region, Some(594), 8)?, want);
    let (rows, cells) = snap.work();
    assert!(cells <= 610 * 32 + 10, "{cells} cells scanned");
    assert!(rows <= 10, "{rows} rows walked");
    Ok(())
}
