//! A subscription's cursor saved (as bytes or through serde) while the
//! daemon runs, and taken up by a reader that never saw the old instance,
//! as after a restart of the projection's own process: it goes on from its
//! position in the same store, and says `Replaced` for another store at the
//! same path instead of waiting for sequences the new store has not reached.

use anyhow::{Result, ensure};
use std::time::Duration;
use weir::{Cursor, CursorError, Reader, Region, Resumed};
use weir_tests::{
    Daemon, SMALL_STORE, Setup, append_numbered as append, drain, stop_cleanly as stop, temp_root,
};

/// A cursor after the first `n` events of a fresh reader, saved both ways.
fn saved_after(setup: &Setup, n: usize) -> Result<([u8; 52], String)> {
    let reader = Reader::open(&setup.data_dir)?;
    let mut sub = reader.subscribe(Region::all(), 0);
    for _ in 0..n {
        ensure!(sub.next_timeout(Duration::from_secs(5))?.is_some());
    }
    let c = sub.cursor();
    Ok((c.to_bytes(), serde_json::to_string(&c)?))
}

#[test]
fn a_saved_cursor_goes_on_from_its_position_in_the_same_store() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    append(&d, 5)?;
    let (bytes, json) = saved_after(&setup, 3)?;
    // The same daemon instance: nothing to carry over.
    let reader = Reader::open(&setup.data_dir)?;
    let mut sub = reader.resume(Region::all(), Cursor::from_bytes(&bytes)?);
    ensure!(drain(&mut sub)? == [3, 4]);
    ensure!(sub.take_resumed().is_none());
    drop(sub);
    drop(reader);
    stop(&mut d)?;
    drop(d);
    let d = Daemon::start(&setup)?;
    append(&d, 3)?;
    for cursor in [Cursor::from_bytes(&bytes)?, serde_json::from_str(&json)?] {
        let reader = Reader::open(&setup.data_dir)?;
        let mut sub = reader.resume(Region::all(), cursor);
        let got = drain(&mut sub)?;
        ensure!(got == (3..8).collect::<Vec<_>>(), "delivered {got:?}");
        let resumed = sub.take_resumed();
        ensure!(resumed == Some(Resumed::Restarted), "{resumed:?}");
    }
    Ok(())
}

#[test]
fn a_saved_cursor_says_the_store_was_replaced_at_its_path() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    append(&d, 5)?;
    let (bytes, json) = saved_after(&setup, 5)?;
    stop(&mut d)?;
    drop(d);
    std::fs::remove_dir_all(&setup.data_dir)?;
    let d = Daemon::start(&setup)?;
    append(&d, 3)?;
    for cursor in [Cursor::from_bytes(&bytes)?, serde_json::from_str(&json)?] {
        let reader = Reader::open(&setup.data_dir)?;
        let mut sub = reader.resume(Region::all(), cursor);
        // Position 5 of the old store is not the new store's: from its 0.
        let got = drain(&mut sub)?;
        ensure!(got == [0, 1, 2], "delivered {got:?}");
        let resumed = sub.take_resumed();
        ensure!(
            resumed == Some(Resumed::Replaced { position: 5 }),
            "{resumed:?}"
        );
    }
    Ok(())
}

#[test]
fn a_damaged_saved_cursor_is_a_typed_error() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let d = Daemon::start(&setup)?;
    append(&d, 2)?;
    let (bytes, json) = saved_after(&setup, 1)?;
    let short = Cursor::from_bytes(&bytes[..20]);
    ensure!(
        matches!(
            short,
            Err(CursorError::Length {
                expected: 52,
                found: 20
            })
        ),
        "{short:?}"
    );
    let mut flipped = bytes;
    flipped[30] ^= 1;
    let bad = Cursor::from_bytes(&flipped);
    ensure!(matches!(bad, Err(CursorError::Checksum { .. })), "{bad:?}");
    let e: weir::Error = Cursor::from_bytes(b"").expect_err("empty").into();
    ensure!(e.to_string().contains("cut short"), "{e}");
    let newer = json.replace("\"version\":1", "\"version\":2");
    ensure!(newer != json, "{json}");
    let refused = serde_json::from_str::<Cursor>(&newer).expect_err("newer");
    ensure!(refused.to_string().contains("version 2"), "{refused}");
    ensure!(serde_json::from_str::<Cursor>(&json[..json.len() / 2]).is_err());
    Ok(())
}
