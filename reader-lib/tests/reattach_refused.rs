//! A reader whose daemon was superseded, and which cannot attach the new
//! instance's gate in place of its own (no descriptor left, a damaged
//! file), fails its queries with `ReadError::Reattach` rather than answer
//! from the old view; once the gate can be attached, it answers from it.

mod fixture;

use fixture::{Ev, Fixture, Res, id_of};
use std::time::{Duration, Instant};
use weir::{DaemonState, EventId, ReadError, Reader, Region};

fn refused<T: std::fmt::Debug>(r: Result<T, ReadError>) -> bool {
    matches!(r, Err(ReadError::Reattach(_)))
}

#[test]
fn queries_fail_while_the_new_gate_cannot_be_attached() -> Res {
    let mut f = Fixture::new()?;
    f.append(&[Ev::new("r", "s", 0x1001, b"0")])?;
    f.publish();
    let r = Reader::open(f.path())?;
    assert_eq!(r.stream("r")?.len(), 1);
    f.supersede(0xABCD)?;
    // The new gate is in place but cannot be attached.
    let magic: [u8; 8] = f.gate[..8].try_into()?;
    f.gate[..8].copy_from_slice(b"NOTAGATE");
    f.append(&[Ev::new("r", "s", 0x1001, b"1")])?;
    f.publish();
    let err = r.query(&Region::all()).map(|v| v.len());
    assert!(matches!(err, Err(ReadError::Reattach(_))), "query: {err:?}");
    let msg = err.err().ok_or("no error")?.to_string();
    assert!(msg.contains("gate has magic"), "{msg}");
    assert!(refused(r.get(EventId(id_of(1)))), "get of the new event");
    assert!(refused(r.get(EventId(id_of(0)))), "get of an old event");
    assert!(refused(r.latest("r")), "latest");
    assert!(refused(r.count(&Region::all())), "count");
    assert!(refused(r.snapshot().stream("r")), "a snapshot's query");
    let mut sub = r.subscribe(Region::all(), 0);
    assert!(refused(sub.next_timeout(Duration::ZERO)), "a subscription");
    assert_eq!(r.status().state, DaemonState::Superseded);
    // Repaired: a later query attaches it (after the 10 ms back-off).
    f.gate[..8].copy_from_slice(&magic);
    let until = Instant::now() + Duration::from_secs(10);
    let n = loop {
        match r.stream("r") {
            Ok(v) => break v.len(),
            Err(ReadError::Reattach(_)) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    assert_eq!(n, 2);
    assert_eq!(r.status().instance, 0xABCD);
    assert!(r.get(EventId(id_of(1)))?.is_some());
    Ok(())
}
