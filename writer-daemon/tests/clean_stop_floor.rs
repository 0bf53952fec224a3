//! Proves that a clean stop records as the next start's wall-clock floor
//! the largest wall_ms written, not the clock at the stop (which a step of
//! the system clock may have put ahead of every event).
mod common;
use common::{config, ev};
use weir_daemon::Store;
use weir_daemon::index::IndexWriter;

#[test]
fn a_clean_stop_records_the_newest_events_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let r = store.append(ev("user:1", 0x1001, b"a")).unwrap();
    // A daemon-assigned id's top 48 bits are its event's wall_ms.
    let wall_ms = (r.event_id >> 80) as u64;
    // The stop comes later than the event: the clock at the stop is not
    // what was written.
    std::thread::sleep(std::time::Duration::from_millis(50));
    store.shutdown().unwrap();
    drop(store);
    let (cp, _) = IndexWriter::read_checkpoint(dir.path(), 0)
        .unwrap()
        .expect("a clean-stop checkpoint");
    assert_eq!(cp.clean.get(), 1);
    assert_eq!(cp.max_wall_ms.get(), wall_ms);
}
