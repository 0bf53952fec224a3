//! A request whose idempotency keys are all known replays only the one
//! append it repeats, whole and in order; in another batch shape it is
//! refused (`IdempotencyBatchMismatch`, wire code `IdempotencyConflict`).
mod common;
use common::{config, ev, one_group_after_the_first};
use weir_daemon::storage::SimStorage;
use weir_daemon::{AppendError, Store};
use weir_protocol::wire::{AppendRequest, ErrorCode};

fn keyed(entity: &str, key: u128) -> AppendRequest {
    AppendRequest {
        idempotency_key: Some(key),
        ..ev(entity, 0x1001, format!("{entity}{key}").as_bytes())
    }
}

/// The refusal of a request in another shape than the append it names:
/// (index, key, sequence, stored batch) of the event that shows it.
fn mismatch(
    r: &Result<impl std::fmt::Debug, AppendError>,
) -> (usize, u128, u64, Option<(u64, u32)>) {
    match r {
        Err(
            e @ AppendError::IdempotencyBatchMismatch {
                index,
                key,
                sequence,
                batch,
                ..
            },
        ) => {
            assert_eq!(e.code(), ErrorCode::IdempotencyConflict);
            (*index, *key, *sequence, *batch)
        }
        other => panic!("not refused for its shape: {other:?}"),
    }
}

#[test]
fn a_known_key_replays_only_the_append_it_was_stored_by() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    let pair = s.append_batch(vec![keyed("a", 1), keyed("b", 2)]).unwrap();
    assert_eq!((pair[0].sequence, pair[1].sequence), (0, 1));
    let k3 = s.append(keyed("c", 3)).unwrap();
    s.append(ev("c", 0x1001, b"in between")).unwrap();
    let k4 = s.append(keyed("d", 4)).unwrap();
    assert_eq!((k3.sequence, k4.sequence), (2, 4));
    // Two singles at adjacent sequences, and a batch of three.
    let k6 = s.append(keyed("f", 6)).unwrap();
    let k7 = s.append(keyed("g", 7)).unwrap();
    assert_eq!((k6.sequence, k7.sequence), (5, 6));
    s.append_batch(vec![keyed("h", 8), keyed("i", 9), keyed("j", 10)])
        .unwrap();
    let check = |s: &Store| {
        // Plain retries replay.
        let again = s.append_batch(vec![keyed("a", 1), keyed("b", 2)]).unwrap();
        assert!(again.iter().all(|r| r.replayed));
        assert_eq!((again[0].sequence, again[1].sequence), (0, 1));
        let again = s.append(keyed("c", 3)).unwrap();
        assert!(again.replayed && again.sequence == 2);
        let again = s
            .append_batch(vec![keyed("h", 8), keyed("i", 9), keyed("j", 10)])
            .unwrap();
        assert_eq!(
            again
                .iter()
                .map(|r| (r.sequence, r.replayed))
                .collect::<Vec<_>>(),
            [(7, true), (8, true), (9, true)]
        );
        // (a) one event of a batch, alone.
        assert_eq!(mismatch(&s.append(keyed("a", 1))), (0, 1, 0, Some((0, 2))));
        // (b) the batch reordered.
        assert_eq!(
            mismatch(&s.append_batch(vec![keyed("b", 2), keyed("a", 1)])),
            (0, 2, 1, Some((0, 2)))
        );
        // (c) two singles as one batch, apart or adjacent.
        assert_eq!(
            mismatch(&s.append_batch(vec![keyed("c", 3), keyed("d", 4)])),
            (0, 3, 2, Some((2, 1)))
        );
        assert_eq!(
            mismatch(&s.append_batch(vec![keyed("f", 6), keyed("g", 7)])),
            (0, 6, 5, Some((5, 1)))
        );
        // A batch cut short.
        assert_eq!(
            mismatch(&s.append_batch(vec![keyed("h", 8), keyed("i", 9)])),
            (0, 8, 7, Some((7, 3)))
        );
        // (d) a known key with a new one: a conflict, as before.
        assert!(matches!(
            s.append_batch(vec![keyed("c", 3), keyed("e", 5)]),
            Err(AppendError::IdempotencyConflict { key: 3 })
        ));
        // (e) keys of a batch and of a single: the first is in place, the
        // second is not.
        assert_eq!(
            mismatch(&s.append_batch(vec![keyed("a", 1), keyed("c", 3)])),
            (1, 3, 2, Some((2, 1)))
        );
    };
    check(&s);
    // After a restart the batches are read back from the frames.
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open(config(dir.path())).unwrap();
    check(&s);
    assert_eq!(
        s.append(ev("z", 0x1001, b"")).unwrap().sequence,
        10,
        "a refused or replayed request wrote something"
    );
}

#[test]
fn a_key_of_the_same_group_replays_only_its_append_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    let out = one_group_after_the_first(
        &s,
        &sim,
        vec![
            vec![ev("x", 0x1001, b"x")],
            vec![keyed("a", 1), keyed("b", 2)],
            vec![keyed("a", 1)],
            vec![keyed("b", 2), keyed("a", 1)],
            vec![keyed("c", 3)],
            vec![keyed("a", 1), keyed("b", 2)],
            vec![keyed("c", 3)],
            vec![keyed("b", 2), keyed("c", 3)],
        ],
    );
    let pair = out[1].as_ref().unwrap();
    assert_eq!((pair[0].sequence, pair[1].sequence), (1, 2));
    assert_eq!(mismatch(&out[2]), (0, 1, 1, Some((1, 2))));
    assert_eq!(mismatch(&out[3]), (0, 2, 2, Some((1, 2))));
    let again = out[5].as_ref().unwrap();
    assert!(again.iter().all(|r| r.replayed));
    assert_eq!((again[0].sequence, again[1].sequence), (1, 2));
    let single = out[6].as_ref().unwrap();
    assert!(single[0].replayed && single[0].sequence == 3);
    // Adjacent sequences 2 and 3, but of two appends.
    assert_eq!(mismatch(&out[7]), (0, 2, 2, Some((1, 2))));
}

#[test]
fn a_shape_refusal_names_the_stored_append_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    s.append_batch(vec![keyed("a", 1), keyed("b", 2)]).unwrap();
    let e = s.append(keyed("b", 2)).unwrap_err();
    let w = e.to_wire();
    assert_eq!(w.code, ErrorCode::IdempotencyConflict);
    let field = |k: &str| w.fields.get(k).map(String::as_str);
    assert_eq!(
        (
            field("index"),
            field("sequence"),
            field("batch_first"),
            field("batch_len"),
            field("events")
        ),
        (Some("0"), Some("1"), Some("0"), Some("2"), Some("1"))
    );
    assert!(
        w.message.contains("by a batch of 2 events from sequence 0"),
        "{}",
        w.message
    );
}

#[test]
fn a_batch_partly_forgotten_by_the_window_is_refused_and_wholly_forgotten_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(weir_daemon::Config {
        idempotency_window: 3,
        ..config(dir.path())
    })
    .unwrap();
    let batch = || vec![keyed("a", 1), keyed("b", 2)];
    s.append_batch(batch()).unwrap();
    s.append(keyed("c", 3)).unwrap();
    s.append(keyed("d", 4)).unwrap();
    // Key 1 has left the window, key 2 has not: the daemon can no longer
    // show that the batch was stored whole, so the retry is refused.
    assert!(matches!(
        s.append_batch(batch()),
        Err(AppendError::IdempotencyConflict { key: 2 })
    ));
    // Once both have left it, the batch is stored again.
    s.append(keyed("e", 5)).unwrap();
    let again = s.append_batch(batch()).unwrap();
    assert_eq!(
        again
            .iter()
            .map(|r| (r.sequence, r.replayed))
            .collect::<Vec<_>>(),
        [(5, false), (6, false)]
    );
}
