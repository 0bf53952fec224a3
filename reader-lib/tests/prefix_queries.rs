//! Proves that a plain entity-prefix query (query, query_after, count) reads
//! only the entity names added since the last query of its prefix, that a
//! view keeps at most 16 prefixes, and that a re-attached reader starts over
//! with the new view, answering as before.

mod fixture;

use fixture::{Ev, Fixture, Res};
use weir::{Reader, Region, Snapshot};

/// A fixture with `names` entities `user:{i}` and one `rare:1`, published.
fn many_names(names: usize) -> Res<Fixture> {
    let mut f = Fixture::new()?;
    let users: Vec<String> = (0..names).map(|i| format!("user:{i}")).collect();
    for chunk in users.chunks(256) {
        let batch: Vec<Ev> = chunk.iter().map(|u| Ev::new(u, "s", 0x1001, b"")).collect();
        f.append(&batch)?;
    }
    f.append(&[Ev::new("rare:1", "s", 0x1001, b"")])?;
    f.publish();
    Ok(f)
}

fn entities(snap: &Snapshot<'_>, region: &Region) -> Res<Vec<String>> {
    Ok(snap
        .query(region)?
        .iter()
        .map(|e| e.entity().to_owned())
        .collect())
}

#[test]
fn a_prefix_query_reads_only_the_names_added_since_the_last_one() -> Res {
    let mut f = many_names(2000)?;
    let r = Reader::open(f.path())?;
    let rare = Region::entity("rare");
    assert_eq!(entities(&r.snapshot(), &rare)?, ["rare:1"]);
    let first = r.snapshot().prefix_names_read();
    assert_eq!(first, 2001);
    for i in 0..10 {
        f.append(&[Ev::new(&format!("other:{i}"), "s", 0x1001, b"")])?;
        f.publish();
        let snap = r.snapshot();
        assert_eq!(entities(&snap, &rare)?, ["rare:1"]);
        assert_eq!(snap.count(&rare)?, 1);
        assert_eq!(snap.query_after(&rare, Some(0), 5)?.len(), 1);
    }
    f.append(&[Ev::new("rare:2", "s", 0x1001, b"x")])?;
    f.publish();
    let snap = r.snapshot();
    assert_eq!(entities(&snap, &rare)?, ["rare:1", "rare:2"]);
    // Every name once (2001 + 10 + 1), not every name on every query (a
    // walk of all names per query reads 64,208).
    assert_eq!(snap.prefix_names_read(), 2012);
    Ok(())
}

#[test]
fn a_view_keeps_sixteen_prefixes_and_a_new_view_starts_over() -> Res {
    let mut f = many_names(500)?;
    let r = Reader::open(f.path())?;
    let read = |r: &Reader, prefix: &str| -> Res<(usize, u64)> {
        let snap = r.snapshot();
        let before = snap.prefix_names_read();
        let n = snap.query(&Region::entity(prefix))?.len();
        Ok((n, snap.prefix_names_read() - before))
    };
    assert_eq!(read(&r, "user")?, (500, 501));
    for i in 1..=15 {
        assert_eq!(read(&r, &format!("user:{i}"))?, (1, 501));
    }
    // Sixteen kept: the first is still there, and reads nothing new.
    assert_eq!(read(&r, "user")?, (500, 0));
    // A seventeenth drops the least recently used one (user:1).
    assert_eq!(read(&r, "rare")?, (1, 501));
    assert_eq!(read(&r, "user:2")?, (1, 0));
    assert_eq!(read(&r, "user:1")?, (1, 501));
    // A restarted daemon: the reader re-attaches, and reads the names of
    // the new view from the start (string ids belong to its generation).
    f.supersede(0xABCD)?;
    f.append(&[Ev::new("rare:2", "s", 0x1001, b"")])?;
    f.publish();
    assert_eq!(read(&r, "rare")?, (2, 502));
    assert_eq!(read(&r, "rare")?, (2, 0));
    Ok(())
}

#[test]
fn readers_and_snapshots_stay_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Reader>();
    send_sync::<Snapshot<'_>>();
}
