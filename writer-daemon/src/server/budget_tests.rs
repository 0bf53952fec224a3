//! The daemon holds at most `max-queued-bytes` of requests, and one
//! connection at most `max-batch-bytes`, however many large appends its
//! connections pipeline; a connection waiting for bytes slows only itself.
//! Open transactions stage at most `max-staged-bytes` in all.

use super::{Hub, conn};
use crate::config::{Config, SyncPolicy};
use crate::storage::SimStorage;
use crate::store::Store;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_protocol::wire::{
    AppendRequest, ClientHello, HELLO_MAGIC, HelloReply, Op, PROTOCOL_VERSION, Reply, Request,
    Response, decode, encode, read_frame_bytes, write_frame,
};

const KIB: u64 = 1 << 10;

fn config(dir: &std::path::Path) -> Config {
    Config {
        segment_max_bytes: 4 << 20,
        chunk_rows_log2: 10,
        max_payload_bytes: 60 << 10,
        max_batch_bytes: 64 * KIB,
        max_batch_events: 16,
        max_frame_bytes: 1 << 20,
        max_queued_bytes: 256 * KIB,
        max_staged_bytes: 128 * KIB,
        sync: SyncPolicy::Always,
        ..Config::new(dir)
    }
}

fn ev(entity: &str, payload: usize) -> AppendRequest {
    AppendRequest {
        entity: entity.into(),
        scope: "tenant:a".into(),
        kind: 0x1001,
        payload: vec![7; payload],
        ..AppendRequest::default()
    }
}

/// A connection served by `hub` on a thread, past its hello.
fn connect(hub: &Arc<Hub>) -> UnixStream {
    let (client, server) = UnixStream::pair().unwrap();
    let hub = Arc::clone(hub);
    std::thread::spawn(move || conn::run(&hub, Arc::new(server)));
    let hello = ClientHello {
        magic: HELLO_MAGIC,
        versions: vec![PROTOCOL_VERSION],
        client: "budget-test".into(),
    };
    write_frame(&mut &client, &hello).unwrap();
    let mut buf = Vec::new();
    read_frame_bytes(&mut &client, 1 << 20, &mut buf).unwrap();
    assert!(matches!(
        decode::<HelloReply>(&buf).unwrap(),
        HelloReply::Ok(_)
    ));
    client
}

fn replies(s: &UnixStream, n: usize) -> Vec<Response> {
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            read_frame_bytes(&mut &*s, 1 << 20, &mut buf).unwrap();
            decode::<Response>(&buf).unwrap()
        })
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A store on simulated storage whose writer stops inside the first
/// group's write (until `sim` resumes it), and a hub serving it.
fn paused(dir: &std::path::Path) -> (SimStorage, Store, Arc<Hub>) {
    let sim = SimStorage::default();
    let store = Store::open_with_storage(config(dir), Box::new(sim.clone())).unwrap();
    let hub = Arc::new(Hub::new(store.clone(), 64));
    {
        let mut st = sim.state.lock().unwrap();
        st.pause_at = Some(st.ops + 1);
    }
    (sim, store, hub)
}

#[test]
fn pipelined_large_appends_are_held_within_the_budget_and_all_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, store, hub) = paused(dir.path());
    // Six connections pipeline 5 appends of 60 KiB each: 1.8 MiB in all.
    let (conns, per_conn, payload) = (6, 5, 60 << 10);
    let mut frame = 0;
    let mut senders = Vec::new();
    let attackers: Vec<UnixStream> = (0..conns).map(|_| connect(&hub)).collect();
    for (c, s) in attackers.iter().enumerate() {
        let mut out = Vec::new();
        for i in 0..per_conn {
            let op = Op::AppendBatch(vec![ev(&format!("big:{c}"), payload)]);
            let start = out.len();
            encode(&mut out, &Request { id: i + 1, op }).unwrap();
            frame = (out.len() - start - 4) as u64;
        }
        let mut s = s.try_clone().unwrap();
        senders.push(std::thread::spawn(move || s.write_all(&out).unwrap()));
    }
    sim.wait_paused();
    // Four frames fit 256 KiB, the fifth not: two connections wait for
    // the daemon, the four others for their own share (64 KiB).
    wait_until("every reader waiting", || {
        hub.budget.waits() >= conns as u64
    });
    assert_eq!(hub.budget.used(), 4 * frame);
    // A small append (1 KiB: above the unbudgeted 256 bytes) on another
    // connection is admitted meanwhile.
    let victim = connect(&hub);
    write_frame(
        &mut &victim,
        &Request {
            id: 1,
            op: Op::Append(ev("small", 1024)),
        },
    )
    .unwrap();
    wait_until("the small append admitted", || {
        hub.budget.used() > 4 * frame
    });
    sim.release();
    let r = replies(&victim, 1);
    assert!(matches!(r[0].result, Ok(Reply::Appended(_))), "{r:?}");
    for s in &attackers {
        for r in replies(s, per_conn as usize) {
            assert!(
                matches!(r.result, Ok(Reply::Batch(ref v)) if v.len() == 1),
                "{r:?}"
            );
        }
    }
    for t in senders {
        t.join().unwrap();
    }
    // Everything stored, nothing refused, and every byte given back.
    let stats = store.stats();
    assert_eq!(stats.appends, conns as u64 * per_conn + 1);
    assert!(stats.rejected.is_empty(), "{:?}", stats.rejected);
    wait_until("every byte given back", || hub.budget.used() == 0);
    let peak = hub.budget.peak();
    assert!(
        peak <= 256 * KIB,
        "{peak} bytes held at once, over max-queued-bytes"
    );
}

#[test]
fn one_connection_holds_at_most_max_batch_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, store, hub) = paused(dir.path());
    let s = connect(&hub);
    // 40 KiB each: one fits the connection's 64 KiB, two do not.
    let mut out = Vec::new();
    for i in 0..4 {
        let op = Op::AppendBatch(vec![ev("big", 40 << 10)]);
        encode(&mut out, &Request { id: i + 1, op }).unwrap();
    }
    let sender = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&out).unwrap())
    };
    sim.wait_paused();
    wait_until("the reader waiting", || hub.budget.waits() >= 1);
    let held = hub.budget.used();
    assert!(held > 40 * KIB && held <= 64 * KIB, "{held} bytes held");
    sim.release();
    for r in replies(&s, 4) {
        assert!(matches!(r.result, Ok(Reply::Batch(_))), "{r:?}");
    }
    sender.join().unwrap();
    assert_eq!(store.stats().appends, 4);
}

/// Sends `ops` on `s` (ids from 1) and returns their outcomes.
fn call(s: &UnixStream, ops: Vec<Op>) -> Vec<Result<Reply, weir_protocol::wire::WireError>> {
    let n = ops.len();
    for (i, op) in ops.into_iter().enumerate() {
        write_frame(
            &mut &*s,
            &Request {
                id: i as u64 + 1,
                op,
            },
        )
        .unwrap();
    }
    replies(s, n).into_iter().map(|r| r.result).collect()
}

#[test]
fn staging_past_max_staged_bytes_is_refused_busy_until_a_transaction_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let hub = Arc::new(Hub::new(store.clone(), 64));
    let stage = |entity: &str| Op::Append(ev(entity, 60 << 10));
    // Two transactions stage 60 KiB each: 120 of the 128 KiB.
    let (a, b, c) = (connect(&hub), connect(&hub), connect(&hub));
    for (s, name) in [(&a, "a"), (&b, "b")] {
        let r = call(s, vec![Op::Begin, stage(name)]);
        assert!(matches!(r[1], Ok(Reply::Staged { staged: 1 })), "{r:?}");
    }
    // A third is refused, retryably; nothing of it is staged.
    let r = call(&c, vec![Op::Begin, stage("c")]);
    let e = r[1].as_ref().unwrap_err();
    assert_eq!(e.code, weir_protocol::wire::ErrorCode::Busy, "{e:?}");
    assert!(e.fields.contains_key("retry_after_ms"), "{e:?}");
    assert!(e.message.contains("max-staged-bytes"), "{e:?}");
    // Cancelling gives the bytes back: the retry is staged.
    assert!(matches!(
        call(&a, vec![Op::Cancel])[0],
        Ok(Reply::Cancelled { dropped: 1 })
    ));
    let r = call(&c, vec![stage("c")]);
    assert!(matches!(r[0], Ok(Reply::Staged { staged: 1 })), "{r:?}");
    // So does a connection that ends mid-transaction.
    drop(b);
    wait_until("b's staged bytes given back", || {
        hub.staging.used() < 100 * KIB
    });
    let r = call(&a, vec![Op::Begin, stage("a2")]);
    assert!(matches!(r[1], Ok(Reply::Staged { staged: 1 })), "{r:?}");
    // And a commit: only c's event is stored.
    let r = call(&c, vec![Op::Commit]);
    assert!(
        matches!(r[0], Ok(Reply::Batch(ref v)) if v.len() == 1),
        "{r:?}"
    );
    let r = call(&a, vec![Op::Cancel]);
    assert!(r[0].is_ok(), "{r:?}");
    // (A commit's staged bytes are given back once it is queued, which
    // may be just after its reply.)
    wait_until("every staged byte given back", || hub.staging.used() == 0);
    let stats = store.stats();
    assert_eq!(stats.appends, 1);
    assert_eq!(stats.rejected.get("Busy"), Some(&1));
}

/// While the budget is full to the byte and the writer stalled, a ping and
/// a stats request on another connection are answered at once (`weir stat`
/// in an incident); before, they waited for bytes like a large append.
#[test]
fn pings_and_stats_are_answered_while_the_budget_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, _store, hub) = paused(dir.path());
    // A batch whose frame body is exactly 64 KiB.
    let batch = |entity: &str| {
        let mut second = 30 << 10;
        loop {
            let op = Op::AppendBatch(vec![ev(entity, 32 << 10), ev(entity, second)]);
            let mut out = Vec::new();
            encode(&mut out, &Request { id: 1, op }).unwrap();
            let body = out.len() as u64 - 4;
            if body == 64 * KIB {
                return out;
            }
            second = (second as u64 + 64 * KIB - body) as usize;
        }
    };
    // Four connections hold the whole 256 KiB; the writer stops in the
    // first group.
    let full: Vec<UnixStream> = (0..4).map(|_| connect(&hub)).collect();
    for (i, s) in full.iter().enumerate() {
        (&*s).write_all(&batch(&format!("big:{i}"))).unwrap();
    }
    sim.wait_paused();
    wait_until("the budget full", || hub.budget.used() == 256 * KIB);
    let probe = connect(&hub);
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for (id, op) in [(1, Op::Ping), (2, Op::Stats)] {
        write_frame(&mut &probe, &Request { id, op }).unwrap();
    }
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..2 {
        read_frame_bytes(&mut &probe, 1 << 20, &mut buf)
            .expect("an answer while the budget is full");
        answers.push(decode::<Response>(&buf).unwrap().result);
    }
    assert!(matches!(answers[0], Ok(Reply::Pong)), "{answers:?}");
    assert!(matches!(answers[1], Ok(Reply::Stats(_))), "{answers:?}");
    assert_eq!(hub.budget.used(), 256 * KIB);
    sim.release();
    for s in &full {
        let r = replies(s, 1);
        assert!(matches!(r[0].result, Ok(Reply::Batch(_))), "{r:?}");
    }
}
