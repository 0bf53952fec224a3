//! A replayed receipt says whether its event is durable when the replay is
//! answered, not when the event was first stored.
mod common;
use common::{config, ev};
use weir_daemon::{Config, Store, SyncPolicy};
use weir_protocol::wire::AppendRequest;

fn keyed(key: u128, payload: &[u8]) -> AppendRequest {
    AppendRequest {
        idempotency_key: Some(key),
        ..ev("acct", 0x1001, payload)
    }
}

#[test]
fn a_replay_after_a_sync_says_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(Config {
        sync: SyncPolicy::Never,
        ..config(dir.path())
    })
    .unwrap();
    let first = s.append(keyed(5, b"one")).unwrap();
    assert!(!first.durable, "sync = never acknowledged a durable append");
    let before = s.append(keyed(5, b"one")).unwrap();
    assert!(before.replayed && !before.durable, "{before:?}");
    s.sync().unwrap();
    let after = s.append(keyed(5, b"one")).unwrap();
    assert!(after.replayed, "{after:?}");
    assert!(after.durable, "replayed after a sync, still not durable");
    assert_eq!(after.sequence, first.sequence);
    // A batch replays the same way.
    let batch = vec![keyed(6, b"two"), keyed(7, b"three")];
    assert!(
        s.append_batch(batch.clone())
            .unwrap()
            .iter()
            .all(|r| !r.durable)
    );
    s.sync().unwrap();
    let again = s.append_batch(batch).unwrap();
    assert!(again.iter().all(|r| r.replayed && r.durable), "{again:?}");
}
