//! Proves the live side: `wait_visible` sleeps on the gate's futex and wakes
//! when another thread publishes, `subscribe` catches up then follows, and a
//! superseded gate (daemon restart) is re-attached without the caller noticing.

mod fixture;

use fixture::{Ev, Fixture, Res};
use std::time::{Duration, Instant};
use weir::{DaemonState, Reader, Region};

#[test]
fn wait_visible_wakes_on_publish_and_times_out_without() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("w", "s", 0x1001, b"0")])?;
    f.publish();
    let r = Reader::open(f.path())?;
    assert!(r.wait_visible(0, Duration::ZERO)?);
    assert!(!r.wait_visible(1, Duration::from_millis(30))?);
    let writer = std::thread::spawn(move || -> Res<Fixture> {
        std::thread::sleep(Duration::from_millis(50));
        f.append(&[Ev::new("w", "s", 0x1001, b"1")])?;
        f.publish();
        Ok(f)
    });
    let start = Instant::now();
    assert!(r.wait_visible(1, Duration::from_secs(30))?);
    // The futex wake, not the 1 s re-check slice, ended the sleep.
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "woke after {:?}",
        start.elapsed()
    );
    let _f = writer.join().map_err(|_| "writer panicked")??;
    assert_eq!(r.stream("w")?.len(), 2);
    Ok(())
}

#[test]
fn subscription_catches_up_then_follows() -> Res {
    let mut f = Fixture::new()?;
    for i in 0..5u8 {
        f.append(&[Ev::new(
            if i % 2 == 0 { "sub:a" } else { "other" },
            "s",
            0x1001,
            &[i],
        )])?;
    }
    f.publish();
    let r = Reader::open(f.path())?;
    let mut sub = r.subscribe(Region::entity("sub"), 1);
    let writer = std::thread::spawn(move || -> Res<Fixture> {
        for i in 5..9u8 {
            std::thread::sleep(Duration::from_millis(10));
            f.append(&[Ev::new(
                if i % 2 == 0 { "sub:b" } else { "other" },
                "s",
                0x1001,
                &[i],
            )])?;
            f.publish();
        }
        Ok(f)
    });
    let mut got = Vec::new();
    while got.len() < 4 {
        let e = sub
            .next_timeout(Duration::from_secs(30))?
            .ok_or("subscription stalled")?;
        got.push((e.sequence(), e.payload()?.to_vec()));
    }
    assert_eq!(
        got,
        vec![(2, vec![2]), (4, vec![4]), (6, vec![6]), (8, vec![8])]
    );
    let _f = writer.join().map_err(|_| "writer panicked")??;
    assert!(sub.next_timeout(Duration::from_millis(20))?.is_none());
    Ok(())
}

#[test]
fn superseded_gate_is_reattached_and_wakes_waiters() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("r", "s", 0x1001, b"0")])?;
    f.publish();
    let r = Reader::open(f.path())?;
    let old = r.status();
    assert_eq!((old.state, old.instance), (DaemonState::Live, 0x1234_5678));
    let before = r.latest("r")?.ok_or("missing")?;
    let writer = std::thread::spawn(move || -> Res<Fixture> {
        std::thread::sleep(Duration::from_millis(50));
        f.supersede(0xABCD)?;
        f.append(&[Ev::new("r", "s", 0x1001, b"1")])?;
        f.publish();
        Ok(f)
    });
    assert!(r.wait_visible(1, Duration::from_secs(30))?);
    let _f = writer.join().map_err(|_| "writer panicked")??;
    let now = r.status();
    assert_eq!(
        (now.state, now.instance, now.visible),
        (DaemonState::Live, 0xABCD, 2)
    );
    assert_eq!(r.stream("r")?.len(), 2);
    // Entries borrowed from the old view stay valid.
    assert_eq!(before.payload()?, b"0");
    Ok(())
}

#[test]
fn a_new_gate_is_used_from_the_first_query_after_its_rename() -> Res {
    // The daemon marks the old gate SUPERSEDED before it renames its own
    // into place. A query in between finds the old instance at the path
    // and answers from the old view; the first query after the rename must
    // use the new gate (no back-off), or a reader could miss an event the
    // new daemon has acknowledged.
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("r", "s", 0x1001, b"0")])?;
    f.publish();
    let r = Reader::open(f.path())?;
    let mut between = None;
    f.supersede_mark_first(0xABCD, || {
        between = Some((r.status().instance, r.stream("r").map(|v| v.len())));
    })?;
    assert_eq!(between.ok_or("not run")?.0, 0x1234_5678);
    f.append(&[Ev::new("r", "s", 0x1001, b"1")])?;
    f.publish();
    assert_eq!(r.stream("r")?.len(), 2, "the first query after the rename");
    assert_eq!(r.status().instance, 0xABCD);
    Ok(())
}

#[test]
fn a_gate_marked_but_not_replaced_opens_nothing_per_query() -> Res {
    // A daemon start marked this gate, then died before its rename: every
    // query must not open (map, lock) the gate at the path again, which is
    // still this one; the first query after a rename uses the new gate.
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("r", "s", 0x1001, b"0")])?;
    f.publish();
    let r = Reader::open(f.path())?;
    f.set_state(weir_protocol::gate::STATE_SUPERSEDED);
    for _ in 0..100 {
        assert!(r.latest("r")?.is_some());
    }
    assert!(!r.wait_visible(1, Duration::from_millis(30))?);
    assert_eq!(r.reattach_opens(), 0);
    f.supersede(0xABCD)?;
    f.append(&[Ev::new("r", "s", 0x1001, b"1")])?;
    f.publish();
    assert_eq!(r.stream("r")?.len(), 2, "the first query after the rename");
    assert_eq!((r.status().instance, r.reattach_opens()), (0xABCD, 1));
    Ok(())
}

#[test]
fn stopped_or_killed_daemon_leaves_a_readable_store() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("k", "s", 0x1001, b"0")])?;
    f.publish();
    // Killed: state stays LIVE, heartbeat is stale (0 here).
    let r = Reader::open(f.path())?;
    assert_eq!(r.status().heartbeat_ms, 0);
    assert_eq!(r.stream("k")?.len(), 1);
    f.set_state(weir_protocol::gate::STATE_STOPPED);
    let r = Reader::open(f.path())?;
    assert_eq!(r.status().state, DaemonState::Stopped);
    assert_eq!(r.count(&Region::all())?, 1);
    Ok(())
}

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

#[test]
fn a_prefix_subscription_reads_only_the_names_added_since_its_last_refill() -> Res {
    let mut f = many_names(2000)?;
    let r = Reader::open(f.path())?;
    let mut sub = r.subscribe(Region::entity("rare"), r.visible());
    for i in 0..10 {
        f.append(&[Ev::new(&format!("other:{i}"), "s", 0x1001, b"")])?;
        f.publish();
        assert!(sub.next_timeout(Duration::ZERO)?.is_none());
    }
    f.append(&[Ev::new("rare:2", "s", 0x1001, b"x")])?;
    f.publish();
    let e = sub
        .next_timeout(Duration::ZERO)?
        .ok_or("rare:2 not delivered")?;
    assert_eq!(e.entity(), "rare:2");
    // Every name once (2001 + 10 + 1), not every name on every refill.
    assert!(sub.names_read() <= 2012, "read {} names", sub.names_read());
    Ok(())
}

#[test]
fn next_timeout_returns_by_its_deadline_while_other_events_keep_arriving() -> Res {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    // A region of many names: a refill costs milliseconds (one head per
    // name), longer than the publishers' pace.
    let mut f = many_names(12_000)?;
    let from = f.visible();
    // Written now, published one at a time below: none is in the region.
    for _ in 0..20_000 / 256 {
        let batch: Vec<Ev> = (0..256)
            .map(|_| Ev::new("other", "s", 0x1001, b""))
            .collect();
        f.append(&batch)?;
    }
    let r = Reader::open(f.path())?;
    let (end, f) = (f.next, Arc::new(f));
    let (done, at) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(from)),
    );
    // Two publishers, so that one being descheduled leaves no gap.
    let publishers: Vec<_> = (0..2)
        .map(|_| {
            let (f, done, at) = (f.clone(), done.clone(), at.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    let v = at.fetch_add(1, Ordering::Relaxed) + 1;
                    if v > end {
                        break;
                    }
                    f.raise_visible(v);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();
    let mut sub = r.subscribe(Region::entity("user"), from);
    let start = Instant::now();
    let got = sub.next_timeout(Duration::from_millis(50))?;
    let took = start.elapsed();
    done.store(true, Ordering::Release);
    for p in publishers {
        p.join().map_err(|_| "publisher panicked")?;
    }
    assert!(got.is_none());
    // The publishers go on for 2 s or more; a generous bound for 50 ms.
    assert!(
        took < Duration::from_secs(1),
        "next_timeout(50 ms) took {took:?}"
    );
    Ok(())
}

#[test]
fn a_catch_up_reads_the_store_in_growing_pages() -> Res {
    // A page read through the region's chains walks every row above its
    // start: 1024-event pages made a catch-up quadratic in the region's size
    // (5.7 s for 300k events of one scope in a 10M store). Pages now double
    // while they come back full.
    let f = many_names(8_000)?;
    let r = Reader::open(f.path())?;
    let mut sub = r.subscribe(Region::all(), 0);
    let mut next = 0;
    while let Some(e) = sub.next_timeout(Duration::ZERO)? {
        assert_eq!(e.sequence(), next);
        next += 1;
    }
    assert_eq!(next, 8_001);
    // 1k + 2k + 4k + 8k pages cover it (8 fixed pages before).
    assert!(sub.refills() <= 4, "{} refills", sub.refills());
    Ok(())
}
