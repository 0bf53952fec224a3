//! Proves prefix visibility: a query sees exactly the sequences below the
//! `visible` it loaded, minus cancelled ranges and tombstones, through every
//! access path (id, entity chain, scope/kind chains, column scans), and a
//! snapshot keeps its watermark while the writer publishes more.

mod fixture;

use fixture::{Ev, Fixture, Res, id_of};
use weir::{EventId, EventKind, KindFilter, Reader, Region};

fn seqs(v: &[weir::Entry<'_>]) -> Vec<u64> {
    v.iter().map(weir::Entry::sequence).collect()
}

/// `get_many` of the ids of sequences `0..n` (plus an id never used), as
/// the sequence each answer names.
fn many(r: &Reader, n: u64) -> Result<Vec<Option<u64>>, weir::ReadError> {
    let mut ids: Vec<EventId> = (0..n).map(|i| EventId(id_of(i))).collect();
    ids.push(EventId(id_of(999)));
    Ok(r.get_many(&ids)?
        .iter()
        .map(|e| e.as_ref().map(weir::Entry::sequence))
        .collect())
}

#[test]
fn rows_at_or_past_visible_are_invisible_everywhere() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[
        Ev::new("user:1", "t:a", 0x1001, b"one"),
        Ev::new("user:2", "t:a", 0x1002, b"two"),
    ])?;
    f.publish();
    // Written (rows, heads, slots) but not published.
    f.append(&[Ev::new("user:1", "t:a", 0x1001, b"three")])?;
    let r = Reader::open(f.path())?;
    assert_eq!(r.visible(), 2);
    assert!(
        r.get(EventId(id_of(2)))?.is_none(),
        "unpublished id must not be found"
    );
    assert_eq!(r.get(EventId(id_of(1)))?.map(|e| e.sequence()), Some(1));
    assert_eq!(many(&r, 3)?, [Some(0), Some(1), None, None]);
    assert_eq!(seqs(&r.stream("user:1")?), vec![0]);
    assert_eq!(r.latest("user:1")?.map(|e| e.sequence()), Some(0));
    assert_eq!(seqs(&r.query(&Region::all())?), vec![0, 1]);
    assert_eq!(
        seqs(&r.query(&Region::all().with_scope("t:a"))?),
        vec![0, 1]
    );
    let k = Region::all().with_kind(KindFilter::Exact(EventKind(0x1001)));
    assert_eq!(seqs(&r.query(&k)?), vec![0]);
    assert_eq!(r.count(&Region::all())?, 2);
    assert_eq!(r.count(&k)?, 1);
    f.publish();
    assert_eq!(seqs(&r.stream("user:1")?), vec![0, 2]);
    assert_eq!(r.count(&k)?, 2);
    Ok(())
}

#[test]
fn cancelled_ranges_and_tombstones_are_excluded() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("a", "s", 0x1001, b"0")])?;
    f.cancel(3)?;
    f.append(&[
        Ev::new("a", "s", 0x1001, b"4"),
        Ev::new("b", "s", 0xD001, b"5"),
    ])?;
    f.publish();
    let r = Reader::open(f.path())?;
    assert_eq!(r.snapshot().cancelled()?, &[(1, 4)]);
    assert_eq!(seqs(&r.query(&Region::all())?), vec![0, 4, 5]);
    assert_eq!(r.count(&Region::all())?, 3);
    // Category 0xD would match a tombstone's kind 0xDFFF: it must not count.
    assert_eq!(
        r.count(&Region::all().with_kind(KindFilter::Category(0xD)))?,
        1
    );
    assert_eq!(
        seqs(&r.query(&Region::all().with_kind(KindFilter::Category(0xD)))?),
        vec![5]
    );
    assert_eq!(seqs(&r.stream("a")?), vec![0, 4]);
    assert!(r.get(EventId(id_of(2)))?.is_none());
    assert_eq!(
        many(&r, 6)?,
        [Some(0), None, None, None, Some(4), Some(5), None]
    );
    Ok(())
}

#[test]
fn gate_ranges_hide_rows_even_without_tombstones() -> Res {
    let mut f = Fixture::new()?;
    let evs: Vec<Ev> = (0..6).map(|i| Ev::new("c", "s", 0x1001, &[i])).collect();
    f.append(&evs)?;
    f.cancel_range(2, 4);
    f.publish();
    let r = Reader::open(f.path())?;
    let want = vec![0, 1, 4, 5];
    assert_eq!(seqs(&r.stream("c")?), want);
    assert_eq!(seqs(&r.query(&Region::all())?), want);
    assert_eq!(seqs(&r.query(&Region::entity("c").with_scope("s"))?), want);
    assert_eq!(r.count(&Region::all())?, 4);
    assert_eq!(
        r.count(&Region::all().with_kind(KindFilter::Exact(EventKind(0x1001))))?,
        4
    );
    assert!(r.get(EventId(id_of(3)))?.is_none());
    assert_eq!(
        many(&r, 6)?,
        [Some(0), Some(1), None, None, Some(4), Some(5), None]
    );
    Ok(())
}

#[test]
fn stale_head_past_visible_walks_back_to_the_newest_visible_row() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[
        Ev::new("e", "s", 0x1001, b"0"),
        Ev::new("e", "s", 0x1001, b"1"),
    ])?;
    f.publish();
    f.append(&[Ev::new("e", "s", 0x1001, b"2")])?;
    let r = Reader::open(f.path())?;
    assert_eq!(r.latest("e")?.map(|e| e.sequence()), Some(1));
    // A head past visible that names a row never written (crash leftover):
    // the reader must not trust it, and must still answer from a scan.
    f.set_entity_head("e", 900);
    assert_eq!(seqs(&r.stream("e")?), vec![0, 1]);
    assert_eq!(r.latest("e")?.map(|e| e.sequence()), Some(1));
    assert_eq!(seqs(&r.query(&Region::entity("e"))?), vec![0, 1]);
    // A stale head below visible pointing at another entity's row is corruption.
    f.append(&[Ev::new("x", "s", 0x1001, b"3")])?;
    f.publish();
    f.set_entity_head("e", 4);
    assert!(matches!(
        r.stream("e"),
        Err(weir::ReadError::BrokenLink { sequence: 3, .. })
    ));
    Ok(())
}

#[test]
fn entries_expose_header_payload_and_chain() -> Res {
    let mut f = Fixture::new()?;
    let payload = rmp_serde::to_vec(&("hello", 42u32))?;
    f.append(&[
        Ev::new("user:9", "t:b", 0x2003, &payload),
        Ev::new("user:9", "t:b", 0x2003, b"\x91\x01"),
    ])?;
    f.publish();
    let r = Reader::open(f.path())?;
    let e = r.get(EventId(id_of(0)))?.ok_or("missing")?;
    assert_eq!(
        (e.entity(), e.scope(), e.kind(), e.clock()),
        ("user:9", "t:b", EventKind(0x2003), 0)
    );
    assert_eq!(e.payload()?, &payload[..]);
    assert_eq!(e.payload_as::<(String, u32)>()?, ("hello".to_owned(), 42));
    assert_eq!(e.prev_hash()?, [0; 32]);
    let second = r.latest("user:9")?.ok_or("missing")?;
    assert_eq!(second.clock(), 1);
    assert_eq!(second.prev_hash()?, e.event_hash()?);
    assert!(matches!(
        second.payload_as::<String>(),
        Err(weir::ReadError::Decode { sequence: 1, .. })
    ));
    let report = r.verify_chain("user:9")?;
    assert_eq!(report.verified, 2);
    assert!(report.first_bad.is_none());
    Ok(())
}

#[test]
fn snapshot_pins_its_watermark() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("p", "s", 0x1001, b"0")])?;
    f.publish();
    let r = Reader::open(f.path())?;
    let snap = r.snapshot();
    f.append(&[Ev::new("p", "s", 0x1001, b"1")])?;
    f.cancel(2)?;
    f.publish();
    assert_eq!(snap.visible(), 1);
    assert_eq!(seqs(&snap.stream("p")?), vec![0]);
    assert_eq!(snap.count(&Region::all())?, 1);
    assert!(snap.cancelled()?.is_empty());
    assert_eq!(seqs(&r.stream("p")?), vec![0, 1]);
    assert_eq!(r.snapshot().cancelled()?, &[(2, 4)]);
    Ok(())
}

#[test]
fn paging_and_stream_since_follow_global_order() -> Res {
    let mut f = Fixture::new()?;
    for i in 0..2500u32 {
        let e = format!("acct:{}", i % 7);
        f.append(&[Ev::new(
            &e,
            if i % 2 == 0 { "even" } else { "odd" },
            0x1000 + (i % 3) as u16,
            &i.to_le_bytes(),
        )])?;
    }
    f.publish();
    let r = Reader::open(f.path())?;
    let region = Region::entity("acct").with_scope("even");
    let all = seqs(&r.query(&region)?);
    assert_eq!(all.len(), 1250);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = r.query_after(&region, after, 100)?;
        let Some(last) = page.last() else { break };
        after = Some(last.sequence());
        paged.extend(seqs(&page));
    }
    assert_eq!(paged, all);
    let since = seqs(&r.stream_since("acct:3", 2000)?);
    assert!(since.iter().all(|s| *s > 2000 && s % 7 == 3));
    assert_eq!(since.len(), (2001..2500).filter(|s| s % 7 == 3).count());
    assert_eq!(
        r.count(&Region::entity("acct:3"))?,
        (0..2500).filter(|s| s % 7 == 3).count() as u64
    );
    Ok(())
}

#[test]
fn names_read_back_as_written_ascii_or_not() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[
        Ev::new("käse:1", "überall", 0x1001, b"one"),
        Ev::new("user:1", "t:a", 0x1001, b"two"),
        Ev::new("käse:1", "t:a", 0x1001, b"three"),
    ])?;
    f.publish();
    let r = Reader::open(f.path())?;
    let names =
        |e: Option<weir::Entry<'_>>| e.map(|e| (e.entity().to_owned(), e.scope().to_owned()));
    assert_eq!(
        names(r.get(EventId(id_of(0)))?),
        Some(("käse:1".into(), "überall".into()))
    );
    assert_eq!(
        names(r.get(EventId(id_of(1)))?),
        Some(("user:1".into(), "t:a".into()))
    );
    let many: Vec<_> = r
        .get_many(&[EventId(id_of(2)), EventId(id_of(0))])?
        .into_iter()
        .map(names)
        .collect();
    assert_eq!(
        many,
        [
            Some(("käse:1".into(), "t:a".into())),
            Some(("käse:1".into(), "überall".into()))
        ]
    );
    assert_eq!(seqs(&r.stream("käse:1")?), vec![0, 2]);
    assert_eq!(
        seqs(&r.query(&Region::all().with_scope("überall"))?),
        vec![0]
    );
    Ok(())
}
