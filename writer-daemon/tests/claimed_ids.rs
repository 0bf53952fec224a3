//! A client that knows the store's id key can compute the id the daemon is
//! about to give and append it as its own first. The daemon must then give
//! its event another id, in this run and after a restart, and must refuse a
//! client id equal to one it gave earlier in the same group.
mod common;
use common::ev;
use std::collections::HashSet;
use weir_daemon::claims::CLAIMS_FILE;
use weir_daemon::{AppendError, Config, Store};
use weir_protocol::locate::{IdKey, id_stamp, locate, located_id};
use weir_protocol::segment::{SEGMENT_HEADER_LEN, frame_len};
use weir_protocol::wire::AppendRequest;

/// How far ahead (ms) the guesses reach: the test's appends all happen
/// within this of the first one.
const WINDOW_MS: u64 = 4_000;

fn config(dir: &std::path::Path) -> Config {
    Config {
        segment_max_bytes: 16 << 20,
        max_batch_events: 10_000,
        max_batch_bytes: 4 << 20,
        // A full batch must fit a frame.
        max_frame_bytes: 8 << 20,
        // Room for every guess (two windows of them) at once.
        max_claimed_ids: 1 << 16,
        ..common::config(dir)
    }
}

fn key(dir: &std::path::Path) -> IdKey {
    weir_protocol::gate::read_id_key(&std::fs::read(dir.join("gate")).unwrap()).expect("a key")
}

/// The frame length of `e`.
fn len(e: &AppendRequest) -> u64 {
    frame_len(e.entity.len(), e.scope.len(), e.payload.len()) as u64
}

/// Every id the daemon could give next at `place`, after it gave `last`:
/// the next counter in the same ms, and counter 0 of each later ms.
fn guesses(key: IdKey, last: u128, place: (u64, u64)) -> Vec<u128> {
    let s = id_stamp(last).unwrap();
    let (ms, counter) = (s >> 12, (s & 0xFFF) as u16);
    let mut ids = vec![located_id(key, ms, counter + 1, place.0, place.1).unwrap()];
    ids.extend((1..=WINDOW_MS).map(|d| located_id(key, ms + d, 0, place.0, place.1).unwrap()));
    ids
}

/// A store in a fresh directory holding one daemon-id event: the store,
/// its id key, the last id the daemon gave, and the place of the next frame.
struct Started {
    dir: tempfile::TempDir,
    store: Store,
    key: IdKey,
    last: u128,
    next: (u64, u64),
}

fn start() -> Started {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let key = key(dir.path());
    let first = ev("first", 0x1001, b"x");
    let last = store.append(first.clone()).unwrap().event_id;
    let (seg, off) = locate(key, last).expect("self-locating");
    Started {
        dir,
        store,
        key,
        last,
        next: (seg, off + len(&first)),
    }
}

/// One client event per id, each with that id.
fn clients(ids: &[u128]) -> Vec<AppendRequest> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| client(i, *id))
        .collect()
}

fn client(i: usize, id: u128) -> AppendRequest {
    let mut e = ev(&format!("claimer:{i}"), 0x1001, b"c");
    e.event_id = Some(id);
    e
}

#[test]
fn the_daemon_never_gives_an_id_a_client_claimed_first() {
    let st = start();
    let (dir, s, k, last, (seg, next_off)) = (st.dir, st.store, st.key, st.last, st.next);
    // The client's batch goes right after `first`; the daemon's next frame
    // right after the batch.
    let probe = client(0, 1);
    let n = WINDOW_MS as usize + 1;
    let place = (seg, next_off + n as u64 * len(&probe));
    let claimed = guesses(k, last, place);
    assert_eq!(claimed.len(), n);
    let batch = clients(&claimed);
    let stored = s.append_batch(batch).unwrap();
    assert_eq!(stored.len(), n);
    assert!(
        dir.path().join(CLAIMS_FILE).exists(),
        "the claims were written"
    );
    let r = s.append(ev("daemon", 0x1001, b"d")).unwrap();
    assert!(
        !claimed.contains(&r.event_id),
        "the daemon gave a claimed id"
    );
    assert_eq!(locate(k, r.event_id), Some(place), "still self-locating");
    // It took the stamp right after a claimed one.
    let skipped = id_stamp(r.event_id).unwrap() - 1;
    assert!(claimed.iter().any(|c| id_stamp(*c) == Some(skipped)));
    s.shutdown().unwrap();
}

#[test]
fn claims_outlive_a_restart() {
    let st = start();
    let (dir, s, k, last, (seg, next_off)) = (st.dir, st.store, st.key, st.last, st.next);
    // After the restart the daemon writes either on in this segment or at
    // the head of the next: claim both places.
    let probe = client(0, 1);
    let n = 2 * (WINDOW_MS as usize + 1);
    let places = [
        (seg, next_off + n as u64 * len(&probe)),
        (seg + 1, SEGMENT_HEADER_LEN as u64),
    ];
    let claimed: Vec<u128> = places.iter().flat_map(|p| guesses(k, last, *p)).collect();
    assert_eq!(claimed.len(), n);
    let batch = clients(&claimed);
    s.append_batch(batch).unwrap();
    s.shutdown().unwrap();
    drop(s);

    let s = Store::open(config(dir.path())).unwrap();
    let r = s.append(ev("daemon", 0x1001, b"d")).unwrap();
    assert!(
        !claimed.contains(&r.event_id),
        "the restarted daemon gave a claimed id"
    );
    let at = locate(k, r.event_id).unwrap();
    assert!(
        places.contains(&at),
        "written at {at:?}, claimed {places:?}"
    );
    // It took the stamp right after a claimed one (the claim mattered).
    let skipped = id_stamp(r.event_id).unwrap() - 1;
    assert!(claimed.iter().any(|c| id_stamp(*c) == Some(skipped)));
    s.shutdown().unwrap();
}

#[test]
fn a_client_id_equal_to_one_the_group_gave_is_refused() {
    let st = start();
    let (_dir, s, k, last, (seg, next_off)) = (st.dir, st.store, st.key, st.last, st.next);
    // One batch: a daemon-id event, then client ids guessing its id (its
    // place is known; its stamp is one of the guesses).
    let daemon = ev("daemon", 0x1001, b"d");
    let place = (seg, next_off);
    let mut batch = vec![daemon.clone()];
    batch.extend(clients(&guesses(k, last, place)));
    let err = s.append_batch(batch).unwrap_err();
    assert!(
        matches!(err, AppendError::DuplicateEventId { .. }),
        "{err:?}"
    );
    // The same guesses at a place the daemon's event does not take are
    // stored: the refusal was the collision, nothing else.
    let mut batch = vec![daemon];
    batch.extend(clients(&guesses(k, last, (seg, place.1 + 8))));
    let rs = s.append_batch(batch).unwrap();
    let ids: HashSet<u128> = rs.iter().map(|r| r.event_id).collect();
    assert_eq!(ids.len(), rs.len(), "every id distinct");
    s.shutdown().unwrap();
}

#[test]
fn a_start_gives_stamps_only_above_the_claims_floor() {
    // A floor a day ahead of the clock (as a clock set back would leave
    // it): the daemon's ids must still come after it.
    let st = start();
    let (dir, s, k, last) = (st.dir, st.store, st.key, st.last);
    s.shutdown().unwrap();
    drop(s);
    let ahead = (id_stamp(last).unwrap() >> 12) + 86_400_000;
    // A claim the daemon passed, forgotten at that floor.
    let mut c = weir_daemon::claims::Claims::load(dir.path()).unwrap();
    let passed = located_id(k, ahead, 4, 0, 1 << 19).unwrap();
    assert!(c.note(k, passed, 0, (0, 0), 16 << 20).unwrap());
    c.settle(k, ahead << 12 | 5, Some((0, 0)), 16 << 20)
        .unwrap();
    assert!(c.is_empty() && c.floor() == ahead << 12 | 5);
    let s = Store::open(config(dir.path())).unwrap();
    let r = s.append(ev("next", 0x1001, b"y")).unwrap();
    assert!(
        id_stamp(r.event_id).unwrap() > ahead << 12 | 5,
        "a stamp at or below the floor was given"
    );
    s.shutdown().unwrap();
}

#[test]
fn a_damaged_claims_file_stops_the_start_and_loses_nothing() {
    let Started { dir, store: s, .. } = start();
    s.shutdown().unwrap();
    drop(s);
    let path = dir.path().join(CLAIMS_FILE);
    std::fs::write(&path, b"WEIRCLAM but short").unwrap();
    match Store::open(config(dir.path())) {
        Err(weir_daemon::OpenError::Corrupt { path: p, what }) => {
            assert_eq!(p, path);
            assert!(what.contains("shorter than a header"), "{what}");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    std::fs::remove_file(&path).unwrap();
    let s = Store::open(config(dir.path())).unwrap();
    let r1 = s.append(ev("first", 0x1001, b"y")).unwrap();
    assert_eq!(r1.sequence, 1, "the stored event is still there");
    assert_eq!(r1.clock, 1);
    s.shutdown().unwrap();
}

#[test]
fn a_refused_command_leaves_no_claim() {
    let st = start();
    let (dir, s, k, (seg, next_off)) = (st.dir, st.store, st.key, st.next);
    let ahead = located_id(
        k,
        weir_daemon::ids::now_ms() + 60_000,
        0,
        seg,
        next_off + 4096,
    )
    .unwrap();
    let mut conflict = ev("nobody", 0x1001, b"");
    conflict.expected = weir_protocol::ExpectedVersion::Exact(5);
    let err = s
        .append_batch(vec![client(0, ahead), conflict])
        .unwrap_err();
    assert!(
        matches!(err, AppendError::VersionConflict { .. }),
        "{err:?}"
    );
    s.append(ev("after", 0x1001, b"")).unwrap();
    s.shutdown().unwrap();
    drop(s);
    let c = weir_daemon::claims::Claims::load(dir.path()).unwrap();
    assert!(!c.contains(ahead), "a refused event's claim was kept");
    // The same id, stored, is a claim.
    let s = Store::open(config(dir.path())).unwrap();
    s.append(client(0, ahead)).unwrap();
    s.shutdown().unwrap();
    drop(s);
    let c = weir_daemon::claims::Claims::load(dir.path()).unwrap();
    assert!(c.contains(ahead));
}

#[test]
fn ids_stay_unique_after_segments_grow() {
    // Client ids stored while segments were 1 MiB name a place 2 MiB into
    // the next segment: no claim then. Segments then grow to 4 MiB and the
    // daemon reaches that place: it must still not give one of them.
    let small = |dir: &std::path::Path| Config {
        segment_max_bytes: 1 << 20,
        ..common::config(dir)
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(small(dir.path())).unwrap();
    let k = key(dir.path());
    let last = s.append(ev("first", 0x1001, b"x")).unwrap().event_id;
    let place = (locate(k, last).unwrap().0 + 1, 2 << 20);
    let guessed = guesses(k, last, place);
    for chunk in guessed.chunks(64) {
        s.append_batch(clients(chunk)).unwrap();
    }
    s.shutdown().unwrap();
    drop(s);
    let c = weir_daemon::claims::Claims::load(dir.path()).unwrap();
    assert_eq!(c.len(), 0, "past the segment length then: no claims");

    let s = Store::open(Config {
        segment_max_bytes: 4 << 20,
        ..small(dir.path())
    })
    .unwrap();
    // Fill up to the place: on to the next segment, then to 2 MiB into it.
    let filler = |payload: usize| ev("filler", 0x1001, &vec![7; payload]);
    let mut at = (0, 0);
    while at.0 < place.0 {
        let e = filler(60 << 10);
        let r = s.append(e.clone()).unwrap();
        let (seg, off) = locate(k, r.event_id).unwrap();
        at = (seg, off + len(&e));
    }
    let fixed = len(&filler(0));
    while at.1 < place.1 {
        let room = place.1 - at.1;
        let payload = if room >= fixed + (60 << 10) {
            60 << 10
        } else {
            (room - fixed) as usize
        };
        let e = filler(payload);
        let r = s.append(e.clone()).unwrap();
        let (seg, off) = locate(k, r.event_id).unwrap();
        at = (seg, off + len(&e));
    }
    assert_eq!(at, place, "filled exactly to the place");
    std::thread::sleep(std::time::Duration::from_millis(3)); // a fresh ms: counter 0
    let r = s.append(ev("daemon", 0x1001, b"d")).unwrap();
    assert_eq!(locate(k, r.event_id), Some(place));
    assert!(
        !guessed.contains(&r.event_id),
        "the daemon gave a stored client id"
    );
    let skipped = id_stamp(r.event_id).unwrap() - 1;
    assert!(
        guessed.iter().any(|c| id_stamp(*c) == Some(skipped)),
        "the stored id mattered"
    );
    s.shutdown().unwrap();
}

#[test]
fn a_place_passed_by_frames_not_yet_durable_stays_claimed() {
    // Under `sync = never` the frames past a claim's place may be lost in a
    // crash, and the log would then write there again: the claim must stay.
    let dir = tempfile::tempdir().unwrap();
    let never = Config {
        sync: weir_daemon::SyncPolicy::Never,
        ..config(dir.path())
    };
    let s = Store::open(never).unwrap();
    let k = key(dir.path());
    let first = ev("first", 0x1001, b"x");
    let last = s.append(first.clone()).unwrap().event_id;
    let (seg, off) = locate(k, last).unwrap();
    let soon = weir_daemon::ids::now_ms() + 60_000;
    // A claim on the frame right after the claiming event's own.
    let own = client(0, 1);
    let place = off + len(&first) + len(&own);
    let claim = located_id(k, soon, 0, seg, place).unwrap();
    s.append(client(0, claim)).unwrap();
    for i in 0..3 {
        s.append(ev(&format!("past{i}"), 0x1001, b"p")).unwrap();
    }
    // Another claim makes the writer rewrite the file: the first must stay.
    let other = located_id(k, soon, 1, seg + 3, 64).unwrap();
    s.append(client(1, other)).unwrap();
    s.shutdown().unwrap();
    drop(s);
    let c = weir_daemon::claims::Claims::load(dir.path()).unwrap();
    assert!(c.contains(other), "the second claim was written");
    assert!(
        c.contains(claim),
        "a claim passed by frames not yet durable was forgotten"
    );
}

#[test]
fn claims_past_max_claimed_ids_are_refused_and_nothing_stored_is_lost() {
    // A client that reads the key can make claims that are never forgotten:
    // stamped near the end of time, at a place the log will not reach.
    // Past `max-claimed-ids` such ids are refused; the claims held keep
    // working, here and after restarts.
    let near = WINDOW_MS + 1;
    let far: u16 = 3;
    let capped = |dir: &std::path::Path, max: u64| Config {
        max_claimed_ids: max as u32,
        ..config(dir)
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(capped(dir.path(), near + u64::from(far))).unwrap();
    let k = key(dir.path());
    let first = ev("first", 0x1001, b"x");
    let last = s.append(first.clone()).unwrap().event_id;
    let (seg, off) = locate(k, last).unwrap();
    let forever = |counter| located_id(k, (1 << 48) - 2, counter, (1 << 22) - 1, 4096).unwrap();
    // Under the limit: the far claims (a batch of two, then one), then
    // every id the daemon could give its next frame, which goes right
    // after them. The daemon gives none of them.
    let held: Vec<u128> = (0..far).map(forever).collect();
    s.append_batch(clients(&held[..2])).unwrap();
    s.append(client(2, held[2])).unwrap();
    let probe = client(0, 1);
    let at = off + len(&first) + u64::from(far) * len(&probe);
    let place = (seg, at + near * len(&probe));
    let claimed = guesses(k, last, place);
    s.append_batch(clients(&claimed)).unwrap();
    let r = s.append(ev("daemon", 0x1001, b"d")).unwrap();
    assert_eq!(locate(k, r.event_id), Some(place));
    assert!(!claimed.contains(&r.event_id), "the daemon gave a claim");
    let skipped = id_stamp(r.event_id).unwrap() - 1;
    assert!(claimed.iter().any(|c| id_stamp(*c) == Some(skipped)));
    let mut next_seq = r.sequence + 1;
    let daemon_place = (seg, place.1 + len(&ev("daemon", 0x1001, b"d")));
    s.shutdown().unwrap();
    drop(s);

    // A start with a limit the far claims alone fill (the near ones the
    // clock has not passed yet are kept too).
    let s = Store::open(capped(dir.path(), u64::from(far))).unwrap();
    // One more claim is refused, with the batch it came in: nothing of
    // the batch is stored.
    let extra = forever(far);
    let batch = vec![ev("plain", 0x1001, b"p"), client(1, extra)];
    let err = s.append_batch(batch).unwrap_err();
    match &err {
        AppendError::TooManyClaims { index: 1, id, max } => {
            assert_eq!(*max, u32::from(far));
            assert_eq!(*id, weir_protocol::EventId(extra).to_string());
        }
        other => panic!("expected TooManyClaims, got {other:?}"),
    }
    assert_eq!(err.code(), weir_protocol::wire::ErrorCode::InvalidEventId);
    let wire = err.to_wire();
    assert_eq!(wire.fields.get("index").map(String::as_str), Some("1"));
    assert_eq!(
        wire.fields.get("max_claimed_ids").map(String::as_str),
        Some("3")
    );
    assert!(err.to_string().contains("max-claimed-ids = 3"), "{err}");
    // Ids that are no claims are still taken: a UUIDv4, and a UUIDv7 at a
    // place the log has passed. So are appends without ids.
    let v4 = 0x0123_4567_89ab_4def_8123_4567_89ab_cdef_u128;
    let passed = located_id(k, (1 << 48) - 2, 0, seg, off).unwrap();
    let rs = s
        .append_batch(vec![
            client(0, v4),
            client(1, passed),
            ev("plain", 0x1001, b"p"),
        ])
        .unwrap();
    assert_eq!(
        rs[0].sequence, next_seq,
        "the refused batch took no sequence"
    );
    next_seq += 3;
    assert!(locate(k, rs[2].event_id).is_some_and(|p| p >= daemon_place));
    s.shutdown().unwrap();
    drop(s);
    let c = weir_daemon::claims::Claims::load(dir.path()).unwrap();
    assert!(held.iter().all(|id| c.contains(*id)), "a claim was lost");
    assert!(!c.contains(extra), "the refused claim was kept");

    // Another start: every event is there (each client id is a duplicate,
    // the next sequence follows them), and the limit still holds.
    let s = Store::open(capped(dir.path(), u64::from(far))).unwrap();
    for id in held.iter().chain(&claimed).chain([&v4, &passed]) {
        let err = s.append(client(9, *id)).unwrap_err();
        assert!(
            matches!(err, AppendError::DuplicateEventId { .. }),
            "{err:?}"
        );
    }
    let err = s.append(client(9, extra)).unwrap_err();
    assert!(matches!(err, AppendError::TooManyClaims { .. }), "{err:?}");
    assert_eq!(
        s.append(ev("after", 0x1001, b"a")).unwrap().sequence,
        next_seq
    );
    s.shutdown().unwrap();
    drop(s);

    // Raised, the limit takes the claim.
    let s = Store::open(capped(dir.path(), near + u64::from(far) + 1)).unwrap();
    s.append(client(9, extra)).unwrap();
    s.shutdown().unwrap();
}

#[test]
fn a_claim_past_the_limit_refuses_its_command_only() {
    let dir = tempfile::tempdir().unwrap();
    let sim = weir_daemon::storage::SimStorage::default();
    let one = Config {
        max_claimed_ids: 1,
        ..config(dir.path())
    };
    let s = Store::open_with_storage(one, Box::new(sim.clone())).unwrap();
    let k = key(dir.path());
    let forever = |counter| located_id(k, (1 << 48) - 2, counter, (1 << 22) - 1, 64).unwrap();
    s.append(client(0, forever(0))).unwrap();
    // One group: the commands around the refused one are stored, one after
    // the other.
    let v4 = 0x0123_4567_89ab_4def_8123_4567_89ab_cdef_u128;
    let out = common::one_group_after_the_first(
        &s,
        &sim,
        vec![
            vec![ev("a", 0x1001, b"a")],
            vec![ev("b", 0x1001, b"b"), client(1, forever(1))],
            vec![client(2, v4)],
            vec![ev("b", 0x1001, b"b")],
        ],
    );
    assert!(
        matches!(
            out[1],
            Err(AppendError::TooManyClaims {
                index: 1,
                max: 1,
                ..
            })
        ),
        "{:?}",
        out[1]
    );
    let seqs: Vec<u64> = [&out[0], &out[2], &out[3]]
        .iter()
        .map(|o| o.as_ref().unwrap()[0].sequence)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(
        out[3].as_ref().unwrap()[0].clock,
        0,
        "`b`'s refused event was not kept"
    );
    s.shutdown().unwrap();
}
