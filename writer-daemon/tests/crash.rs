//! Crash at every write and sync boundary of a scripted workload: recovery
//! yields a committed prefix that holds every event acknowledged as durable,
//! and no torn frame.
mod common;
use common::{config, ev};
use std::collections::BTreeMap;
use weir_daemon::Store;
use weir_daemon::storage::SimStorage;
use weir_protocol::wire::{AppendRequest, Receipt};

/// The scripted workload: singles and batches over a few entities, each
/// event with an idempotency key so presence can be checked after recovery.
fn script() -> Vec<Vec<AppendRequest>> {
    let mut out = Vec::new();
    let mut key = 1u128;
    for i in 0..24u32 {
        let n = if i % 4 == 3 { 3 } else { 1 };
        let batch = (0..n)
            .map(|j| {
                key += 1;
                let payload = vec![(i * 7 + j) as u8; 300 + (i as usize * 97) % 900];
                AppendRequest {
                    idempotency_key: Some(key),
                    ..ev(
                        &format!("user:{}", (i + j) % 5),
                        0x1001 + (i % 3) as u16,
                        &payload,
                    )
                }
            })
            .collect();
        out.push(batch);
    }
    out
}

struct Run {
    /// The acknowledged appends, as sent, with their receipts.
    acked: Vec<(Vec<AppendRequest>, Vec<Receipt>)>,
    sim: SimStorage,
}

/// Runs the script on fresh simulated storage that dies at op `dead_from`.
fn run(dead_from: Option<u64>) -> (Run, u64) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let store = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    sim.state.lock().unwrap().dead_from = dead_from.map(|d| d + sim.state.lock().unwrap().ops);
    let start_ops = sim.state.lock().unwrap().ops;
    let mut acked = Vec::new();
    for batch in script() {
        match store.append_batch(batch.clone()) {
            Ok(receipts) => {
                assert!(receipts.iter().all(|r| r.durable));
                acked.push((batch, receipts));
            }
            Err(_) => break,
        }
    }
    let ops = sim.state.lock().unwrap().ops - start_ops;
    // The process dies here: no clean shutdown reaches storage.
    sim.state.lock().unwrap().dead_from = Some(0);
    drop(store);
    (Run { acked, sim }, ops)
}

/// Recovers from `image` and checks every acknowledged event is there, once.
/// (Each append is retried as it was sent: a retry replays one append.)
fn check_recovery(
    image: BTreeMap<u64, Vec<u8>>,
    acked: &[(Vec<AppendRequest>, Vec<Receipt>)],
    what: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_with_storage(config(dir.path()), Box::new(SimStorage::from_files(image)))
            .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    for (reqs, receipts) in acked {
        let again = store
            .append_batch(reqs.clone())
            .unwrap_or_else(|e| panic!("{what}: retry failed: {e}"));
        for (again, r) in again.iter().zip(receipts) {
            assert!(
                again.replayed,
                "{what}: acknowledged event {} was lost",
                r.sequence
            );
            assert_eq!(
                (
                    again.sequence,
                    again.event_id,
                    again.event_hash,
                    again.clock
                ),
                (r.sequence, r.event_id, r.event_hash, r.clock),
                "{what}"
            );
        }
    }
    // Chains continue: a new event for each entity links to a recovered head.
    let next = store.append(ev("user:0", 0x1001, b"after")).unwrap();
    assert!(!next.replayed);
    assert!(
        next.sequence >= acked.iter().map(|(r, _)| r.len() as u64).sum(),
        "{what}: sequence {} reused",
        next.sequence
    );
    store.shutdown().unwrap();
}

#[test]
fn every_crash_point_recovers_a_prefix_with_all_acknowledged_events() {
    let (_, total_ops) = run(None);
    assert!(
        total_ops > 30,
        "the script should exercise many storage ops, got {total_ops}"
    );
    for k in 1..=total_ops {
        let (r, _) = run(Some(k));
        let pending = r
            .sim
            .state
            .lock()
            .unwrap()
            .files
            .values()
            .map(|f| f.pending.len())
            .max()
            .unwrap_or(0);
        check_recovery(
            r.sim.crash_image(0, None),
            &r.acked,
            &format!("crash at op {k}, durable only"),
        );
        check_recovery(
            r.sim.crash_image(usize::MAX, None),
            &r.acked,
            &format!("crash at op {k}, all pending writes kept"),
        );
        if pending > 0 {
            for tear in [1, 8, 100, 187] {
                check_recovery(
                    r.sim.crash_image(pending, Some(tear)),
                    &r.acked,
                    &format!("crash at op {k}, last write torn at {tear}"),
                );
            }
        }
    }
}

#[test]
fn a_group_that_fills_its_segment_and_fails_its_sync_leaves_a_store_that_goes_on() {
    // A group that exactly fills what a segment has left, whose sync then
    // fails, is cancelled by a CANCEL frame after it: the segment must still
    // have room for that frame and for its seal, or every later rotation
    // fails (and the store is stuck after every restart). The last group's
    // size sweeps across the point where it stops fitting.
    for last in (23_904..24_480).step_by(24) {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimStorage::default();
        let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
        let mut acked = Vec::new();
        for i in 0..17u128 {
            let req = AppendRequest {
                idempotency_key: Some(i + 1),
                ..ev("e", 0x1001, &[1; 60_000])
            };
            acked.push((req.clone(), s.append(req).unwrap()));
        }
        let ops = sim.state.lock().unwrap().ops;
        sim.state.lock().unwrap().fail_at = Some(ops + 2);
        assert!(
            s.append(ev("e", 0x1001, &vec![2; last])).is_err(),
            "{last}: the failed write or sync was reported"
        );
        let image = sim.crash_image(usize::MAX, None);
        drop(s);
        let d = tempfile::tempdir().unwrap();
        let s = Store::open_with_storage(config(d.path()), Box::new(SimStorage::from_files(image)))
            .unwrap();
        let report = s.restore_report().clone();
        assert_eq!(
            report.entries + report.tail_entries,
            17,
            "{last}: only the acknowledged events are live: {report:?}"
        );
        let r = s.append(ev("after", 0x1001, b"x"));
        assert!(
            r.is_ok(),
            "{last}: the restarted store takes appends: {r:?}"
        );
        for (req, rc) in &acked {
            let again = s.append(req.clone()).unwrap();
            assert_eq!(
                (again.sequence, again.replayed),
                (rc.sequence, true),
                "{last}"
            );
        }
        s.shutdown().unwrap();
    }
}

#[test]
fn a_power_loss_that_keeps_a_later_frame_and_loses_an_earlier_one_never_brings_it_back() {
    // Writeback keeps no order: a power loss can keep the page of a later
    // unsynced frame (y) and lose an earlier one's (x). The restart sees the
    // log end where x was; were writing to go on there, a frame as long as
    // x's (z) would end where y begins, and every later scan would read y on
    // after it, as the event after z: an event the log had lost, back under
    // a sequence of its own (found by the power-loss hunt).
    let keyed = |key: u128, entity: &str, payload: &[u8]| AppendRequest {
        idempotency_key: Some(key),
        ..ev(entity, 0x1001, payload)
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let never = weir_daemon::Config {
        sync: weir_daemon::SyncPolicy::Never,
        ..config(dir.path())
    };
    let s = Store::open_with_storage(never, Box::new(sim.clone())).unwrap();
    s.append(keyed(1, "base", b"b0")).unwrap();
    s.append(keyed(2, "x", &[7; 9000])).unwrap();
    let y = keyed(3, "y", b"kept");
    s.append(y.clone()).unwrap();
    sim.state.lock().unwrap().dead_from = Some(0);
    drop(s);
    let pending = sim.state.lock().unwrap().files[&0].pending.len();
    assert_eq!(pending, 3, "one write per append");
    let image = sim.crash_image_keeping(|i| i != 1);

    // The restart has b0 only; z takes sequence 1, durably.
    let d2 = tempfile::tempdir().unwrap();
    let sim2 = SimStorage::from_files(image);
    let s = Store::open_with_storage(config(d2.path()), Box::new(sim2.clone())).unwrap();
    let z = s.append(keyed(4, "x", &[9; 9000])).unwrap();
    assert_eq!((z.sequence, z.replayed), (1, false));
    sim2.state.lock().unwrap().dead_from = Some(0);
    drop(s);

    // Every later start holds b0 and z, and y is no event of the store.
    let d3 = tempfile::tempdir().unwrap();
    let s = Store::open_with_storage(
        config(d3.path()),
        Box::new(SimStorage::from_files(sim2.crash_image(0, None))),
    )
    .unwrap();
    let report = s.restore_report().clone();
    assert_eq!(report.entries + report.tail_entries, 2, "{report:?}");
    let again = s.append(y).unwrap();
    assert_eq!(
        (again.sequence, again.replayed),
        (2, false),
        "y was lost in the power loss and is stored now"
    );
    s.shutdown().unwrap();
}
