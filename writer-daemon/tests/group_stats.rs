//! Group-commit counters count only groups that wrote events: refused and
//! replayed requests raise neither `groups` nor the group size histogram.
mod common;
use common::{config, ev};
use weir_daemon::{AppendError, Store};
use weir_protocol::ExpectedVersion;
use weir_protocol::wire::{AppendRequest, Stats};

/// Groups counted, and groups in the size bucket `le = 1`.
fn groups(s: &Stats) -> (u64, u64) {
    (s.groups, s.group_hist.first().map_or(0, |b| b.1))
}

#[test]
fn refused_and_replayed_appends_are_no_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let keyed = AppendRequest {
        idempotency_key: Some(7),
        ..ev("a", 0x1001, b"first")
    };
    store.append(keyed.clone()).unwrap();
    let before = store.stats();
    assert_eq!(groups(&before), (1, 1));
    for _ in 0..10 {
        let err = store
            .append(AppendRequest {
                expected: ExpectedVersion::NoStream,
                ..ev("a", 0x1001, b"again")
            })
            .unwrap_err();
        assert!(
            matches!(err, AppendError::VersionConflict { .. }),
            "{err:?}"
        );
    }
    let replay = store.append(keyed).unwrap();
    assert!(replay.replayed);
    let after = store.stats();
    assert_eq!(groups(&after), (1, 1), "{:?}", after.group_hist);
    assert_eq!(after.appends, 1);
    assert_eq!(after.rejected.get("VersionConflict"), Some(&10));
    store.append(ev("b", 0x1001, b"second")).unwrap();
    assert_eq!(groups(&store.stats()), (2, 2));
}
