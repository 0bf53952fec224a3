//! A subscription carried over to a new daemon instance of its store goes
//! on from the right sequence and says why (`Resumed`): a position the old
//! instance never published cannot have been lost.

use anyhow::{Result, ensure};
use std::time::Duration;
use weir::{Reader, Region, Resumed};
use weir_tests::{
    Daemon, SMALL_STORE, Setup, append_numbered as append, copy_dir, drain, stop_cleanly as stop,
    temp_root,
};

#[test]
fn a_subscription_started_ahead_goes_on_from_its_position_after_a_clean_restart() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    append(&d, 10)?;
    let reader = Reader::open(&setup.data_dir)?;
    ensure!(reader.visible() == 10);
    let mut sub = reader.subscribe(Region::all(), 15);
    ensure!(sub.next_timeout(Duration::from_millis(20))?.is_none());
    stop(&mut d)?;
    drop(d);
    let d = Daemon::start(&setup)?;
    append(&d, 10)?;
    let got = drain(&mut sub)?;
    ensure!(got == (15..20).collect::<Vec<_>>(), "delivered {got:?}");
    let resumed = sub.take_resumed();
    ensure!(resumed == Some(Resumed::Restarted), "{resumed:?}");
    Ok(())
}

#[test]
fn a_subscription_says_the_store_was_restored_from_an_older_copy() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let backup = root.path().join("backup");
    let mut d = Daemon::start(&setup)?;
    append(&d, 10)?;
    stop(&mut d)?;
    drop(d);
    copy_dir(&setup.data_dir, &backup)?;
    let mut d = Daemon::start(&setup)?;
    append(&d, 10)?;
    let reader = Reader::open(&setup.data_dir)?;
    let mut sub = reader.subscribe(Region::all(), 0);
    ensure!(drain(&mut sub)? == (0..20).collect::<Vec<_>>());
    // The backup put in place of the store: same id key, but its `starts`
    // never saw the instance the subscription followed.
    stop(&mut d)?;
    drop(d);
    std::fs::rename(&setup.data_dir, root.path().join("old"))?;
    copy_dir(&backup, &setup.data_dir)?;
    let d = Daemon::start(&setup)?;
    append(&d, 15)?;
    let got = drain(&mut sub)?;
    // Where the histories split is unknown: from the lowest start.
    ensure!(got == (0..25).collect::<Vec<_>>(), "delivered {got:?}");
    let resumed = sub.take_resumed();
    ensure!(
        resumed
            == Some(Resumed::Restored {
                visible: 0,
                position: 20
            }),
        "{resumed:?}"
    );
    Ok(())
}
