//! Bad requests get typed errors naming the problem, and lose nothing stored.
mod common;
use common::{config, ev, one_group_after_the_first};
use weir_daemon::storage::SimStorage;
use weir_daemon::{AppendError, OpenError, Store};
use weir_protocol::ExpectedVersion;
use weir_protocol::wire::AppendRequest;

fn with(e: AppendRequest, f: impl FnOnce(&mut AppendRequest)) -> AppendRequest {
    let mut e = e;
    f(&mut e);
    e
}

#[test]
fn expected_versions_distinguish_empty_from_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    let err = s
        .append(with(ev("e", 0x1001, b""), |e| {
            e.expected = ExpectedVersion::Exact(0)
        }))
        .unwrap_err();
    assert!(
        matches!(&err, AppendError::VersionConflict { found, .. } if found == "none"),
        "{err}"
    );
    s.append(with(ev("e", 0x1001, b""), |e| {
        e.expected = ExpectedVersion::NoStream
    }))
    .unwrap();
    let err = s
        .append(with(ev("e", 0x1001, b""), |e| {
            e.expected = ExpectedVersion::NoStream
        }))
        .unwrap_err();
    assert!(
        matches!(&err, AppendError::VersionConflict { found, .. } if found == "0"),
        "{err}"
    );
    let r = s
        .append(with(ev("e", 0x1001, b""), |e| {
            e.expected = ExpectedVersion::Exact(0)
        }))
        .unwrap();
    assert_eq!(r.clock, 1);
    assert!(
        s.append(with(ev("e", 0x1001, b""), |e| e.expected =
            ExpectedVersion::Exact(0)))
            .is_err()
    );
}

#[test]
fn idempotent_retry_returns_the_first_receipt_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    let req = with(ev("e", 0x1001, b"once"), |e| e.idempotency_key = Some(42));
    let first = s.append(req.clone()).unwrap();
    let again = s.append(req.clone()).unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(
        (again.sequence, again.event_id, again.event_hash),
        (first.sequence, first.event_id, first.event_hash)
    );
    assert_eq!(
        s.append(ev("f", 0x1001, b"")).unwrap().sequence,
        first.sequence + 1,
        "the retry wrote something"
    );
    // The window survives a restart.
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open(config(dir.path())).unwrap();
    assert_eq!(s.append(req).unwrap().sequence, first.sequence);
    // A batch mixing a known and an unknown key is a conflict, not a partial replay.
    let mixed = vec![
        with(ev("e", 0x1001, b"once"), |e| e.idempotency_key = Some(42)),
        with(ev("e", 0x1001, b""), |e| e.idempotency_key = Some(43)),
    ];
    assert!(matches!(
        s.append_batch(mixed).unwrap_err(),
        AppendError::IdempotencyConflict { key: 42 }
    ));
    // One request cannot use a key twice: no single receipt answers both.
    let twice = vec![
        with(ev("e", 0x1001, b""), |e| e.idempotency_key = Some(44)),
        with(ev("e", 0x1001, b""), |e| e.idempotency_key = Some(44)),
    ];
    assert!(matches!(
        s.append_batch(twice).unwrap_err(),
        AppendError::IdempotencyConflict { key: 44 }
    ));
}

#[test]
fn a_retried_batch_is_compared_with_events_in_several_segments() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    // 80 events of 30 KiB, one per command: about three 1 MiB segments,
    // each frame at the same offsets in every segment, so that an event read
    // from the wrong segment would still decode (as another event).
    let req = |k: u128| {
        let byte = (k % 251) as u8;
        with(ev(&format!("e{k}"), 0x1001, &[byte; 30 << 10]), |e| {
            // Key 0 is "no key": refused.
            e.idempotency_key = Some(k + 1);
        })
    };
    let first: Vec<_> = (0..80).map(|k| s.append(req(k)).unwrap()).collect();
    let segments = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .count();
    assert!(segments >= 3, "the events fill {segments} segment(s)");
    // Each request names events of different segments, back and forth. It
    // is not one stored append, so it is refused for its shape; but only
    // after every event was found to be the one its key stored: read from
    // the wrong segment, an event would differ (`IdempotencyConflict`).
    for round in 0..10u128 {
        let keys: Vec<u128> = (0..8).map(|j| (round + j * 37) % 80).collect();
        let again = s.append_batch(keys.iter().map(|&k| req(k)).collect());
        assert!(
            matches!(
                again,
                Err(AppendError::IdempotencyBatchMismatch { index: 0, .. })
            ),
            "retry of {keys:?}: {again:?}"
        );
        // Each event alone is the append it repeats.
        for &k in &keys {
            let r = s.append(req(k)).unwrap();
            let f = &first[k as usize];
            assert!(r.replayed, "key {k} was written again");
            assert_eq!(
                (r.sequence, r.event_id),
                (f.sequence, f.event_id),
                "key {k}"
            );
        }
    }
    // A retry that changed one event's payload is refused for it.
    let mut changed: Vec<_> = [3u128, 45, 77].iter().map(|&k| req(k)).collect();
    changed[2].payload[0] ^= 1;
    assert!(matches!(
        s.append_batch(changed).unwrap_err(),
        AppendError::IdempotencyConflict { key: 78 }
    ));
}

#[test]
fn a_key_sent_again_with_another_event_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    let req = with(ev("e", 0x1001, b"once"), |e| {
        e.idempotency_key = Some(42);
        e.causation_id = Some(7);
    });
    let first = s.append(req.clone()).unwrap();
    let others = [
        with(req.clone(), |e| e.payload = b"twice".to_vec()),
        with(req.clone(), |e| e.entity = "f".into()),
        with(req.clone(), |e| e.scope = "other".into()),
        with(req.clone(), |e| e.kind = 0x1002),
        with(req.clone(), |e| e.causation_id = None),
        with(req.clone(), |e| e.event_id = Some(first.event_id + 1)),
        with(req.clone(), |e| e.correlation_id = Some(9)),
    ];
    let check = |s: &Store| {
        for (i, other) in others.iter().enumerate() {
            assert!(
                matches!(
                    s.append(other.clone()),
                    Err(AppendError::IdempotencyConflict { key: 42 })
                ),
                "variant {i} was taken for a retry"
            );
        }
        // Naming the id and correlation the first attempt got is the same request.
        let named = with(req.clone(), |e| {
            e.event_id = Some(first.event_id);
            e.correlation_id = Some(first.event_id);
        });
        let again = s.append(named).unwrap();
        assert!(again.replayed);
        assert_eq!(again.sequence, first.sequence);
    };
    check(&s);
    // After a restart the first event is read back from its segment.
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open(config(dir.path())).unwrap();
    check(&s);
    assert_eq!(
        s.append(ev("g", 0x1001, b"")).unwrap().sequence,
        first.sequence + 1,
        "a refused retry wrote something"
    );
}

#[test]
fn a_key_sent_twice_into_one_group_is_compared_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    let keyed = |payload: &[u8]| with(ev("x", 0x1001, payload), |e| e.idempotency_key = Some(5));
    let out = one_group_after_the_first(
        &s,
        &sim,
        vec![
            vec![ev("a", 0x1001, b"a")],
            vec![keyed(b"one")],
            vec![keyed(b"two")],
            vec![keyed(b"one")],
        ],
    );
    let first = out[1].as_ref().unwrap()[0];
    assert!(
        matches!(out[2], Err(AppendError::IdempotencyConflict { key: 5 })),
        "{:?}",
        out[2]
    );
    let again = out[3].as_ref().unwrap()[0];
    assert!(again.replayed && again.sequence == first.sequence);
}

#[test]
fn a_batch_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    s.append(ev("a", 0x1001, b"")).unwrap();
    let batch = vec![
        ev("b", 0x1001, b""),
        with(ev("a", 0x1001, b""), |e| {
            e.expected = ExpectedVersion::NoStream
        }),
    ];
    assert!(matches!(
        s.append_batch(batch).unwrap_err(),
        AppendError::VersionConflict { .. }
    ));
    // Nothing of the batch was stored: `b` is still empty and the sequence did not move.
    let r = s
        .append(with(ev("b", 0x1001, b""), |e| {
            e.expected = ExpectedVersion::NoStream
        }))
        .unwrap();
    assert_eq!(r.sequence, 1);
}

#[test]
fn a_refusal_in_a_batch_names_the_event() {
    const FRESH: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0002;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    let stored = s.append(ev("a", 0x1001, b"")).unwrap().event_id;
    let ided = |id: u128| with(ev("b", 0x1001, b""), |e| e.event_id = Some(id));
    let plain = || ev("b", 0x1001, b"");

    let err = s
        .append_batch(vec![plain(), ided(FRESH), plain(), ided(FRESH)])
        .unwrap_err();
    assert_eq!(
        err,
        AppendError::DuplicateEventId {
            index: 3,
            id: weir_protocol::EventId(FRESH).to_string(),
            earlier: Some(1),
        }
    );
    assert!(err.to_string().contains("also given to event 1"), "{err}");
    let wire = err.to_wire();
    assert_eq!(wire.fields.get("index").map(String::as_str), Some("3"));
    assert_eq!(
        wire.fields.get("earlier_index").map(String::as_str),
        Some("1")
    );

    let err = s.append_batch(vec![plain(), ided(stored)]).unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::DuplicateEventId {
                index: 1,
                earlier: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("is already stored"), "{err}");
    assert!(!err.to_wire().fields.contains_key("earlier_index"));

    let err = s
        .append_batch(vec![
            plain(),
            with(ev("a", 0x1001, b""), |e| {
                e.expected = ExpectedVersion::Exact(0)
            }),
            with(ev("a", 0x1001, b""), |e| {
                e.expected = ExpectedVersion::Exact(0)
            }),
        ])
        .unwrap_err();
    assert!(
        matches!(err, AppendError::VersionConflict { index: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_wire().fields.get("index").map(String::as_str),
        Some("2")
    );
}

#[test]
fn a_refused_batch_gives_back_every_event_id_it_staged() {
    // The writer checks, links and hashes a batch in windows of eight
    // events; a refusal in the second window must free the ids that both
    // windows staged for the rest of the group, and a duplicate inside one
    // window must be caught. The storage pauses inside the first append's
    // sync while the other three queue, so that they share one group.
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let s = Store::open_with_storage(config(dir.path()), Box::new(sim.clone())).unwrap();
    let ided = |i: u128, entity: &str| with(ev(entity, 0x1001, b""), |e| e.event_id = Some(i));
    let mut refused: Vec<_> = (1..=20).map(|i| ided(i, &format!("u{i}"))).collect();
    refused[12].expected = ExpectedVersion::Exact(5);
    let twice = vec![ided(50, "x"), ided(51, "y"), ided(50, "z")];
    let mut again: Vec<_> = (1..=20).map(|i| ided(i, &format!("u{i}"))).collect();
    again.extend([ided(50, "x"), ided(51, "y")]);
    let out = one_group_after_the_first(
        &s,
        &sim,
        vec![vec![ev("first", 0x1001, b"")], refused, twice, again],
    );
    assert!(out[0].is_ok(), "{:?}", out[0]);
    assert!(
        matches!(out[1], Err(AppendError::VersionConflict { .. })),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(out[2], Err(AppendError::DuplicateEventId { .. })),
        "{:?}",
        out[2]
    );
    let rs = out[3]
        .as_ref()
        .expect("the ids the refused batches staged are free");
    assert_eq!(rs.len(), 22);
    assert_eq!(
        rs[0].sequence, 1,
        "nothing of the refused batches was stored"
    );
    assert!(matches!(
        s.append(ided(7, "u7")).unwrap_err(),
        AppendError::DuplicateEventId { .. }
    ));
}

#[test]
fn invalid_requests_are_typed() {
    const FRESH: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0001;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    let ok = s.append(ev("keep", 0x1001, b"kept")).unwrap();
    let id = ok.event_id;
    type Case = (Vec<AppendRequest>, fn(&AppendError) -> bool);
    let cases: Vec<Case> = vec![
        (vec![ev("a/b", 0x1001, b"")], |e| {
            matches!(e, AppendError::InvalidCoordinate { index: 0, .. })
        }),
        (
            vec![with(ev("a", 0x1001, b""), |e| e.scope = String::new())],
            |e| matches!(e, AppendError::InvalidCoordinate { .. }),
        ),
        (vec![ev("a", 0x0001, b"")], |e| {
            matches!(e, AppendError::InvalidKind { .. })
        }),
        (vec![ev("a", 0xD001, b"")], |e| {
            matches!(e, AppendError::InvalidKind { .. })
        }),
        (vec![ev("a", 0x1001, &vec![0; (64 << 10) + 1])], |e| {
            matches!(e, AppendError::PayloadTooLarge { .. })
        }),
        // Over max-batch-bytes too: the payload is what is refused.
        (vec![ev("a", 0x1001, &vec![0; (256 << 10) + 1])], |e| {
            matches!(e, AppendError::PayloadTooLarge { index: 0, .. })
        }),
        ((0..65).map(|_| ev("a", 0x1001, b"")).collect(), |e| {
            matches!(e, AppendError::BatchTooLarge { events: 65, .. })
        }),
        (vec![], |e| matches!(e, AppendError::EmptyBatch)),
        (
            vec![with(ev("a", 0x1001, b""), |e| e.event_id = Some(0))],
            |e| matches!(e, AppendError::InvalidEventId { .. }),
        ),
        (
            vec![with(ev("a", 0x1001, b""), |e| e.event_id = Some(id))],
            |e| matches!(e, AppendError::DuplicateEventId { .. }),
        ),
        (
            (0..2)
                .map(|_| with(ev("a", 0x1001, b""), |e| e.event_id = Some(FRESH)))
                .collect(),
            |e| matches!(e, AppendError::DuplicateEventId { .. }),
        ),
        (vec![ev("ok", 0x1001, b""), ev("bad\n", 0x1001, b"")], |e| {
            matches!(e, AppendError::InvalidCoordinate { index: 1, .. })
        }),
    ];
    for (i, (batch, is)) in cases.into_iter().enumerate() {
        let err = s.append_batch(batch).unwrap_err();
        assert!(is(&err), "case {i}: {err:?}");
        assert!(!err.to_string().is_empty());
        assert_eq!(err.to_wire().code, err.code());
    }
    // Nothing was lost or consumed: the next append follows the kept one.
    assert_eq!(
        s.append(ev("keep", 0x1001, b"")).unwrap().sequence,
        ok.sequence + 1
    );
    let (stats_rejected, _) = (s.stats().rejected.values().sum::<u64>(), ());
    assert!(stats_rejected >= 10);
    // The refused batch with a repeated id consumed nothing: the id is free.
    let fresh = s
        .append(with(ev("a", 0x1001, b""), |e| e.event_id = Some(FRESH)))
        .unwrap();
    assert_eq!(fresh.event_id, FRESH);
}

#[test]
fn a_second_writer_on_the_same_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(config(dir.path())).unwrap();
    let err = Store::open(config(dir.path())).unwrap_err();
    assert!(
        matches!(&err, OpenError::Locked { holder: Some(pid), .. } if *pid == std::process::id()),
        "{err}"
    );
    assert!(err.to_string().contains("locked by another weir daemon"));
}

#[test]
fn a_refused_second_writer_leaves_the_first_ones_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(config(dir.path())).unwrap();
    // What the first writer's background preparation of its next segment
    // looks like on disk; a starting writer deletes such leftovers.
    let prep = dir.path().join("segments").join("0000000009.prep");
    std::fs::write(&prep, b"zeros").unwrap();
    assert!(matches!(
        Store::open(config(dir.path())).unwrap_err(),
        OpenError::Locked { .. }
    ));
    assert!(
        prep.exists(),
        "the refused writer removed the first one's file"
    );
}

#[test]
fn a_world_writable_data_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(
        Store::open(config(dir.path())).unwrap_err(),
        OpenError::InsecureDataDir { mode: 0o777, .. }
    ));
}

#[test]
fn a_world_writable_directory_inside_the_data_dir_is_refused() {
    // Anyone could delete or replace segments or index files there.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    s.append(ev("e", 0x1001, b"x")).unwrap();
    s.shutdown().unwrap();
    drop(s);
    let generation = std::fs::read_dir(dir.path().join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for sub in [
        dir.path().join("segments"),
        dir.path().join("index"),
        generation,
    ] {
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        match Store::open(config(dir.path())) {
            Err(OpenError::InsecureDataDir { path, mode: 0o777 }) => assert_eq!(path, sub),
            other => panic!("{}: {other:?}", sub.display()),
        }
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let s = Store::open(config(dir.path())).unwrap();
    assert_eq!(
        s.restore_report().entries + s.restore_report().tail_entries,
        1
    );
    s.shutdown().unwrap();
}

#[test]
fn a_data_dir_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"kept").unwrap();
    let err = Store::open(config(&file)).unwrap_err();
    assert!(
        matches!(&err, OpenError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotADirectory),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"kept");
}

#[test]
fn bad_config_values_are_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("never-created");
    let err = Store::open(weir_daemon::Config {
        chunk_rows_log2: 3,
        ..config(&sub)
    })
    .unwrap_err();
    assert!(err.to_string().contains("chunk-rows-log2"), "{err}");
    assert!(!sub.exists());
}

#[test]
fn the_idempotency_window_is_the_same_after_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = weir_daemon::Config {
        idempotency_window: 10,
        ..config(dir.path())
    };
    let s = Store::open(cfg.clone()).unwrap();
    let keyed = |k: u128| with(ev("k", 0x1001, b""), |e| e.idempotency_key = Some(k));
    let first = s.append(keyed(1)).unwrap();
    for k in 2..=10 {
        s.append(keyed(k)).unwrap();
    }
    // Many unkeyed events after them: the window is counted in keys, not events.
    for _ in 0..30 {
        s.append(ev("u", 0x1001, b"")).unwrap();
    }
    assert!(s.append(keyed(1)).unwrap().replayed);
    s.shutdown().unwrap();
    drop(s);
    let s = Store::open(cfg).unwrap();
    assert_eq!(
        s.restore_report().path,
        weir_daemon::RestorePath::IndexFiles
    );
    let again = s.append(keyed(1)).unwrap();
    assert!(again.replayed, "key 1 was forgotten by the restart");
    assert_eq!(again.sequence, first.sequence);
    // Key 11 pushes key 1 out, exactly as it would have without the restart.
    s.append(keyed(11)).unwrap();
    assert!(!s.append(keyed(1)).unwrap().replayed);
}

#[test]
fn a_window_of_zero_keys_turns_idempotency_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(weir_daemon::Config {
        idempotency_window: 0,
        ..config(dir.path())
    })
    .unwrap();
    let keyed = with(ev("k", 0x1001, b"x"), |e| e.idempotency_key = Some(1));
    let first = s.append(keyed.clone()).unwrap();
    let again = s.append(keyed).unwrap();
    assert!(!again.replayed);
    assert_eq!(
        again.sequence,
        first.sequence + 1,
        "the retry was not stored"
    );
}

#[test]
fn the_largest_batch_the_configuration_admits_fits_in_a_segment() {
    // Few, large events: each frame's header and padding, the footer
    // entries and the segment's own header and seal must all fit, or the
    // rotation writes past the segment's end (readers then refuse it).
    for events in [3usize, 5, 8] {
        let dir = tempfile::tempdir().unwrap();
        let base = weir_daemon::Config {
            max_payload_bytes: 500 << 10,
            max_batch_events: events as u32,
            ..config(dir.path())
        };
        let admits = |bytes: u64| {
            weir_daemon::Config {
                max_batch_bytes: bytes,
                ..base.clone()
            }
            .validate()
        };
        // The largest max-batch-bytes the configuration accepts.
        let (mut lo, mut hi) = (1u64, base.segment_max_bytes);
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if admits(mid).is_ok() {
                lo = mid
            } else {
                hi = mid
            }
        }
        let err = admits(lo + 1).unwrap_err();
        assert_eq!(err.field, "max-batch-bytes", "{err}");
        let cfg = weir_daemon::Config {
            max_batch_bytes: lo,
            ..base.clone()
        };
        let s = Store::open(cfg.clone()).unwrap();
        s.append(ev("first", 0x1001, b"x")).unwrap();
        // A batch of exactly `lo` bytes (names and payloads), payloads a
        // multiple of 8 so that frames carry the most padding.
        let names = "e".len() + "tenant:a".len();
        let each = ((lo as usize / events - names) / 8 * 8).min(500 << 10);
        let mut batch: Vec<_> = (0..events)
            .map(|i| AppendRequest {
                idempotency_key: Some(i as u128 + 1),
                ..ev("e", 0x1001, &vec![i as u8; each])
            })
            .collect();
        let last = lo as usize - (events - 1) * (each + names) - names;
        batch[events - 1].payload = vec![9; last];
        assert!(
            last <= 500 << 10,
            "{events}: the last payload is within the limit"
        );
        let receipts = s.append_batch(batch.clone()).unwrap();
        s.append(ev("after", 0x1001, b"y")).unwrap();
        s.shutdown().unwrap();
        drop(s);
        for f in std::fs::read_dir(dir.path().join("segments")).unwrap() {
            let f = f.unwrap();
            assert_eq!(
                f.metadata().unwrap().len(),
                cfg.segment_max_bytes,
                "{events}: {:?} keeps its length",
                f.file_name()
            );
        }
        // A rebuild from the log finds every event, and each key replays
        // its receipt from the stored frame.
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        std::fs::remove_file(dir.path().join("gate")).unwrap();
        let s = Store::open(cfg).unwrap();
        let r = s.restore_report().clone();
        assert_eq!(
            r.entries + r.tail_entries,
            events as u64 + 2,
            "{events}: {r:?}"
        );
        let again = s.append_batch(batch).unwrap();
        let seqs =
            |v: &[weir_protocol::wire::Receipt]| v.iter().map(|r| r.sequence).collect::<Vec<_>>();
        assert_eq!(seqs(&again), seqs(&receipts), "{events}");
        assert!(again.iter().all(|r| r.replayed), "{events}");
        s.shutdown().unwrap();
    }
}

/// Key 0 is "no key" in a frame, so a rebuild could not remember it: it is
/// refused (with the event's index), not remembered only while the daemon runs.
#[test]
fn idempotency_key_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    let zero = with(ev("z", 0x1001, b"pay"), |e| e.idempotency_key = Some(0));
    let err = s.append(zero.clone()).unwrap_err();
    assert!(
        matches!(err, AppendError::InvalidIdempotencyKey { index: 0 }),
        "{err:?}"
    );
    let wire = err.to_wire();
    assert_eq!(wire.code, weir_protocol::wire::ErrorCode::InvalidEventId);
    assert_eq!(
        wire.fields.get("idempotency_key").map(String::as_str),
        Some("0")
    );
    let keyed = with(ev("z", 0x1001, b"ok"), |e| e.idempotency_key = Some(5));
    let err = s.append_batch(vec![keyed.clone(), zero]).unwrap_err();
    assert!(
        matches!(err, AppendError::InvalidIdempotencyKey { index: 1 }),
        "{err:?}"
    );
    // Nothing of either was stored.
    assert_eq!(s.append(keyed).unwrap().sequence, 0);
}

/// A key stored again after it left a small window is, for a rebuild with
/// a larger window, the newer of its two events: the window forgets it
/// after the keys stored before it, not at its first place.
#[test]
fn a_rebuild_keeps_a_key_stored_again_at_its_newest_place() {
    let dir = tempfile::tempdir().unwrap();
    let window = |n| weir_daemon::Config {
        idempotency_window: n,
        ..config(dir.path())
    };
    let keyed = |k: u128, p: &[u8]| with(ev("k", 0x1001, p), |e| e.idempotency_key = Some(k));
    let s = Store::open(window(2)).unwrap();
    s.append(keyed(1, b"first")).unwrap();
    s.append(keyed(2, b"2")).unwrap();
    s.append(keyed(3, b"3")).unwrap();
    // Key 1 has left the window of 2: stored again, at sequence 3.
    let again = s.append(keyed(1, b"second")).unwrap();
    assert_eq!((again.sequence, again.replayed), (3, false));
    s.shutdown().unwrap();
    drop(s);
    // Without the index files the start rebuilds the window from the log.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let s = Store::open(window(4)).unwrap();
    assert_ne!(
        s.restore_report().path,
        weir_daemon::RestorePath::IndexFiles
    );
    s.append(keyed(4, b"4")).unwrap();
    s.append(keyed(5, b"5")).unwrap();
    // The newest four keys by store order: 3, 1 (sequence 3), 4, 5.
    let retry = s.append(keyed(1, b"second")).unwrap();
    assert!(retry.replayed, "key 1 was forgotten before older keys");
    assert_eq!(retry.sequence, 3);
    let two = s.append(keyed(2, b"2")).unwrap();
    assert!(!two.replayed, "key 2, the oldest, is the one forgotten");
}

/// Window 0 turns idempotency off inside one group commit too: a key sent
/// again in the same group is stored again, with any payload.
#[test]
fn a_window_of_zero_keys_remembers_nothing_within_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::default();
    let s = Store::open_with_storage(
        weir_daemon::Config {
            idempotency_window: 0,
            ..config(dir.path())
        },
        Box::new(sim.clone()),
    )
    .unwrap();
    let keyed = |p: &[u8]| with(ev("k", 0x1001, p), |e| e.idempotency_key = Some(5));
    let out = one_group_after_the_first(
        &s,
        &sim,
        vec![
            vec![ev("x", 0x1001, b"x")],
            vec![keyed(b"1")],
            vec![keyed(b"1")],
            vec![keyed(b"2")],
        ],
    );
    let got: Vec<_> = out
        .iter()
        .map(|r| r.as_ref().map(|r| (r[0].sequence, r[0].replayed)))
        .collect();
    assert_eq!(
        got[1..],
        [Ok((1, false)), Ok((2, false)), Ok((3, false))],
        "{out:?}"
    );
}
