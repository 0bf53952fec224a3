//! The reader's answers over an index the real writer built equal a plain
//! `Vec` filter of the appended events, for random appends, batches and
//! regions (proptest).
use proptest::prelude::*;
use weir::Reader;
use weir_daemon::{Config, Store, SyncPolicy};
use weir_protocol::wire::AppendRequest;
use weir_protocol::{EventId, EventKind, KindFilter, Region};

#[derive(Debug, Clone)]
struct Ev {
    entity: String,
    scope: String,
    kind: u16,
    payload: Vec<u8>,
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    let entities = prop::sample::select(vec![
        "user", "user:1", "user:2", "user:1:x", "users", "order:9", "o",
    ]);
    let scopes = prop::sample::select(vec!["t:a", "t:b", "t:c"]);
    let kinds = prop::sample::select(vec![0x1001u16, 0x1002, 0x2001, 0x2fff, 0xe000]);
    (
        entities,
        scopes,
        kinds,
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(e, s, k, p)| Ev {
            entity: e.into(),
            scope: s.into(),
            kind: k,
            payload: p,
        })
}

fn region_strategy() -> impl Strategy<Value = Region> {
    let prefix = prop::option::of(prop::sample::select(vec![
        "user", "user:", "user:1", "users", "order", "nobody",
    ]));
    let scope = prop::option::of(prop::sample::select(vec!["t:a", "t:b", "t:z"]));
    let kind = prop_oneof![
        Just(KindFilter::Any),
        prop::sample::select(vec![0x1001u16, 0x2001, 0x3001])
            .prop_map(|k| KindFilter::Exact(EventKind(k))),
        prop::sample::select(vec![1u8, 2, 0xe]).prop_map(KindFilter::Category),
    ];
    let clock = prop::option::of((0u32..4, 0u32..6).prop_map(|(a, b)| (a, a + b)));
    (prefix, scope, kind, clock).prop_map(|(p, s, k, c)| Region {
        entity_prefix: p.map(str::to_owned),
        scope: s.map(str::to_owned),
        kind: k,
        clock_range: c,
    })
}

/// A store of small files: 1 MiB segments, 1024-row chunks, batches of at
/// most `batch_events` events, no fsync.
fn small(dir: &std::path::Path, batch_events: u32) -> Config {
    Config {
        sync: SyncPolicy::Never,
        segment_max_bytes: 1 << 20,
        chunk_rows_log2: 10,
        max_payload_bytes: 4096,
        max_batch_bytes: 64 << 10,
        max_batch_events: batch_events,
        max_frame_bytes: 1 << 20,
        ..Config::new(dir)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn mapped_answers_equal_the_model(
        batches in prop::collection::vec(prop::collection::vec(ev_strategy(), 1..6), 1..40),
        regions in prop::collection::vec(region_strategy(), 8),
        page in 1usize..7,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(small(dir.path(), 64)).unwrap();
        // (sequence, event, clock, id)
        let mut model: Vec<(u64, Ev, u32, u128)> = Vec::new();
        for b in &batches {
            let reqs = b.iter().map(|e| AppendRequest {
                entity: e.entity.clone(), scope: e.scope.clone(), kind: e.kind, payload: e.payload.clone(), ..AppendRequest::default()
            }).collect();
            for (r, e) in store.append_batch(reqs).unwrap().into_iter().zip(b) {
                model.push((r.sequence, e.clone(), r.clock, r.event_id));
            }
        }
        let reader = Reader::open(dir.path()).unwrap();
        prop_assert_eq!(reader.visible(), model.len() as u64);
        for region in &regions {
            let want: Vec<u64> = model.iter()
                .filter(|(_, e, c, _)| region.matches(&e.entity, &e.scope, EventKind(e.kind), *c))
                .map(|(s, ..)| *s).collect();
            let got: Vec<u64> = reader.query(region).unwrap().iter().map(|e| e.sequence()).collect();
            prop_assert_eq!(&got, &want, "query {:?}", region);
            prop_assert_eq!(reader.count(region).unwrap(), want.len() as u64, "count {:?}", region);
            // Paging in global order reassembles the same answer.
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let p = reader.query_after(region, after, page).unwrap();
                if p.is_empty() { break; }
                after = Some(p.last().unwrap().sequence());
                paged.extend(p.iter().map(|e| e.sequence()));
            }
            prop_assert_eq!(&paged, &want, "paged {:?}", region);
        }
        for (seq, e, clock, id) in model.iter().step_by(3) {
            let got = reader.get(EventId(*id)).unwrap().expect("every appended id is found");
            prop_assert_eq!((got.sequence(), got.clock(), got.entity(), got.scope()), (*seq, *clock, e.entity.as_str(), e.scope.as_str()));
            prop_assert_eq!(got.payload().unwrap(), &e.payload[..]);
        }
        // Many at once: every id newest first, an unknown id after every
        // third, across several of get_many's groups; answers in order.
        let mut ids = Vec::new();
        let mut want = Vec::new();
        for (k, (seq, e, _, id)) in model.iter().rev().enumerate() {
            ids.push(EventId(*id));
            want.push(Some((*seq, e.payload.clone())));
            if k % 3 == 0 {
                ids.push(EventId(id ^ (1 << 100)));
                want.push(None);
            }
        }
        let got: Vec<Option<(u64, Vec<u8>)>> = reader.get_many(&ids).unwrap().iter()
            .map(|e| e.as_ref().map(|e| (e.sequence(), e.payload().unwrap().to_vec())))
            .collect();
        prop_assert_eq!(got, want);
        for entity in ["user", "user:1", "users", "order:9", "o", "none"] {
            let want: Vec<u64> = model.iter().filter(|(_, e, ..)| e.entity == entity).map(|(s, ..)| *s).collect();
            let got: Vec<u64> = reader.stream(entity).unwrap().iter().map(|e| e.sequence()).collect();
            prop_assert_eq!(&got, &want, "stream {}", entity);
            prop_assert_eq!(reader.latest(entity).unwrap().map(|e| e.sequence()), want.last().copied());
            if want.len() > 1 {
                let since: Vec<u64> = reader.stream_since(entity, want[0]).unwrap().iter().map(|e| e.sequence()).collect();
                prop_assert_eq!(&since, &want[1..].to_vec());
            }
            let report = reader.verify_chain(entity).unwrap();
            prop_assert!(report.first_bad.is_none(), "{:?}", report);
        }
        store.shutdown().unwrap();
    }
}

/// `get_many` over a store of several chunks (two sealed, one filling, 1024
/// rows each): every id, in a scrambled order with unknown ids among them,
/// answers as `get` does, and names its own event.
#[test]
fn get_many_answers_across_chunks_as_get_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path(), 100)).unwrap();
    let mut ids = Vec::new();
    for b in 0..25u32 {
        let reqs = (0..100u32)
            .map(|i| AppendRequest {
                entity: format!("user:{}", (b * 100 + i) % 37),
                scope: "s".into(),
                kind: 0x1001,
                payload: (b * 100 + i).to_le_bytes().to_vec(),
                ..AppendRequest::default()
            })
            .collect();
        ids.extend(
            store
                .append_batch(reqs)
                .unwrap()
                .iter()
                .map(|r| EventId(r.event_id)),
        );
    }
    let reader = Reader::open(dir.path()).unwrap();
    assert_eq!(reader.visible(), 2500);
    let mut asked: Vec<EventId> = (0..ids.len()).map(|i| ids[(i * 977) % ids.len()]).collect();
    for k in (0..asked.len()).step_by(7) {
        asked.insert(k, EventId(ids[k].0 ^ (1 << 90)));
    }
    let many = reader.get_many(&asked).unwrap();
    assert_eq!(many.len(), asked.len());
    let mut found = 0;
    for (id, got) in asked.iter().zip(&many) {
        let one = reader.get(*id).unwrap();
        assert_eq!(
            got.as_ref().map(|e| e.sequence()),
            one.as_ref().map(|e| e.sequence())
        );
        if let Some(e) = got {
            assert_eq!(e.event_id(), *id);
            assert_eq!(
                e.payload().unwrap(),
                &(e.sequence() as u32).to_le_bytes()[..]
            );
            found += 1;
        }
    }
    assert_eq!(found, 2500);
    store.shutdown().unwrap();
}
