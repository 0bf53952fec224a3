//! Proves query semantics: for random appends, batches, cancels, partial
//! publishes and regions, every mapped answer equals a straightforward
//! filter over a `Vec` model of what was published.

mod fixture;

use fixture::{Ev, Fixture, Written};
use proptest::prelude::*;
use weir::{EventKind, KindFilter, Reader, Region};
use weir_protocol::index::NS_ENTITY;

#[derive(Debug, Clone)]
enum Op {
    Batch(Vec<(usize, usize, u16)>),
    Cancel(u64),
    /// Cancels the last n sequences in the gate only, rows left as written.
    CancelTail(u64),
    Publish,
    /// Events no region names, between the others: regions get thin
    /// stretches, where a limited scan may stop short and walk chains.
    Filler(usize),
}

const ENTITIES: [&str; 7] = [
    "user", "user:1", "user:2", "user:1:x", "users", "order:1", "o",
];
const SCOPES: [&str; 3] = ["t:a", "t:b", "t:c"];
const KINDS: [u16; 4] = [0x1001, 0x1002, 0x2001, 0xD001];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..ENTITIES.len(), 0..SCOPES.len(), 0..KINDS.len() as u16), 1..6).prop_map(Op::Batch),
        1 => (1..4u64).prop_map(Op::Cancel),
        1 => (1..3u64).prop_map(Op::CancelTail),
        2 => Just(Op::Publish),
        1 => (1..700usize).prop_map(Op::Filler),
    ]
}

fn region() -> impl Strategy<Value = Region> {
    let prefix = prop_oneof![
        Just(None),
        (0..ENTITIES.len()).prop_map(|i| Some(ENTITIES[i].to_owned())),
        Just(Some("user:".to_owned())),
        Just(Some("nobody".to_owned()))
    ];
    let scope = prop_oneof![
        Just(None),
        (0..SCOPES.len()).prop_map(|i| Some(SCOPES[i].to_owned())),
        Just(Some("t:z".to_owned()))
    ];
    let kind = prop_oneof![
        Just(KindFilter::Any),
        (0..KINDS.len()).prop_map(|i| KindFilter::Exact(EventKind(KINDS[i]))),
        prop_oneof![Just(1u8), Just(2), Just(0xD)].prop_map(KindFilter::Category),
    ];
    let clock = prop_oneof![
        Just(None),
        (0..4u32, 0..4u32).prop_map(|(a, b)| Some((a.min(b), a.max(b))))
    ];
    (prefix, scope, kind, clock).prop_map(|(entity_prefix, scope, kind, clock_range)| Region {
        entity_prefix,
        scope,
        kind,
        clock_range,
    })
}

fn model(written: &[Written], visible: u64, r: &Region) -> Vec<u64> {
    written
        .iter()
        .filter(|w| w.seq < visible)
        .filter_map(|w| w.ev.as_ref().map(|e| (w, e)))
        .filter(|(w, e)| r.matches(&e.entity, &e.scope, EventKind(e.kind), w.clock))
        .map(|(w, _)| w.seq)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn mapped_answers_equal_the_model(ops in prop::collection::vec(op(), 1..40), regions in prop::collection::vec(region(), 1..8), page in 1usize..5, filler in any::<bool>(), located in any::<bool>(), frames_ahead in any::<bool>(), stale_head in prop::option::of(0..ENTITIES.len())) {
        // `located`: ids name their frames' places, as daemon-assigned ids
        // do, so `get` reads frames first (and must still hide cancelled
        // and unpublished events).
        let mut f = if located { Fixture::new_located() } else { Fixture::new() }.unwrap();
        if filler {
            // Many events no region names: chains become cheaper than scans
            // for the planner, and the store spans two chunks.
            let evs: Vec<Ev> = (0..1100).map(|_| Ev::new("filler", "filler", 0x3FFF, b"")).collect();
            f.append(&evs).unwrap();
            f.publish();
        }
        for op in &ops {
            match op {
                Op::Batch(evs) => {
                    let evs: Vec<Ev> = evs.iter().map(|&(e, s, k)| Ev::new(ENTITIES[e], SCOPES[s], KINDS[k as usize], b"p")).collect();
                    f.append(&evs).unwrap();
                }
                Op::Cancel(n) => { f.cancel(*n).unwrap(); }
                Op::CancelTail(n) => {
                    let start = f.next.saturating_sub(*n).max(f.visible());
                    f.cancel_range(start, f.next);
                }
                Op::Publish => f.publish(),
                Op::Filler(n) => {
                    f.append(&vec![Ev::new("filler", "filler", 0x3FFF, b""); *n]).unwrap();
                }
            }
        }
        if located && frames_ahead {
            // Frames past `visible` are written and published by place.
            f.publish_frames();
        }
        if let Some(e) = stale_head.filter(|&e| f.string_id(NS_ENTITY, ENTITIES[e]).is_some()) {
            // A head past `visible` that names a row never written (a crash
            // leftover): walks of that entity fall back to scans.
            f.set_entity_head(ENTITIES[e], f.next + 900);
        }
        let r = Reader::open(f.path()).unwrap();
        let snap = r.snapshot();
        let visible = snap.visible();
        prop_assert_eq!(visible, f.visible());
        for region in &regions {
            let want = model(&f.written, visible, region);
            let got: Vec<u64> = snap.query(region).unwrap().iter().map(|e| e.sequence()).collect();
            prop_assert_eq!(&got, &want, "query {:?}", region);
            prop_assert_eq!(snap.count(region).unwrap(), want.len() as u64, "count {:?}", region);
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let p = snap.query_after(region, after, page).unwrap();
                prop_assert!(p.len() <= page, "page of {} {:?}", p.len(), region);
                let Some(last) = p.last() else { break };
                after = Some(last.sequence());
                paged.extend(p.iter().map(|e| e.sequence()));
            }
            prop_assert_eq!(&paged, &want, "paged {:?}", region);
        }
        for entity in ENTITIES {
            let want = model(&f.written, visible, &Region { entity_prefix: Some(entity.to_owned()), ..Region::default() });
            let want: Vec<u64> = want.into_iter().filter(|s| f.written[*s as usize].ev.as_ref().is_some_and(|e| e.entity == entity)).collect();
            let got: Vec<u64> = snap.stream(entity).unwrap().iter().map(|e| e.sequence()).collect();
            prop_assert_eq!(&got, &want, "stream {}", entity);
            prop_assert_eq!(snap.latest(entity).unwrap().map(|e| e.sequence()), want.last().copied());
        }
        for w in &f.written {
            let id = weir::EventId(w.id);
            let want = (w.seq < visible && w.ev.is_some()).then_some(w.seq);
            let got = snap.get(id).unwrap().map(|e| e.sequence());
            prop_assert_eq!(got, want, "snapshot get {}", w.seq);
            // The reader's own `get` takes no snapshot for a located id.
            let got = r.get(id).unwrap().map(|e| e.sequence());
            prop_assert_eq!(got, want, "get {}", w.seq);
        }
    }
}
