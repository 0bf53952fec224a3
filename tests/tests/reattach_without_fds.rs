//! A reader in a process out of file descriptors, whose daemon restarted,
//! does not answer from the old daemon's view once the new one has
//! acknowledged an append: its queries fail with `ReadError::Reattach`
//! (naming the file and errno) until descriptors are free again. (Alone in
//! its test binary: it uses up the process's descriptors.)

use anyhow::{Result, ensure};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::time::Duration;
use weir::{Coordinate, EventId, EventKind, ReadError, Reader, Region};
use weir_tests::{Daemon, SMALL_STORE, Setup, temp_root};

#[test]
fn a_reader_without_descriptors_refuses_to_answer_from_the_superseded_view() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path()).with(SMALL_STORE);
    let mut d = Daemon::start(&setup)?;
    let mut c = d.client()?;
    let e = Coordinate::new("a", "s")?;
    for _ in 0..10 {
        c.append(&e, EventKind::new(1, 1)?, b"x")?;
    }
    let reader = Reader::open(&setup.data_dir)?;
    ensure!(reader.query(&Region::all())?.len() == 10);
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    drop(d);
    let d = Daemon::start(&setup)?;
    let mut c = d.client()?;
    // The process runs out of descriptors (a low limit keeps this quick).
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, soft.min(256), hard)?;
    let mut hold = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hold.push(f);
    }
    let r = c.append(&e, EventKind::new(1, 1)?, b"y")?;
    let q = reader.query(&Region::all()).map(|v| v.len());
    let g = reader.get(EventId(r.event_id)).map(|o| o.is_some());
    drop(hold);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
    match &q {
        Err(ReadError::Reattach(e)) => {
            let msg = e.to_string();
            ensure!(
                msg.contains("gate") && msg.contains("Too many open files"),
                "{msg}"
            );
        }
        other => anyhow::bail!("query after the ack of sequence {}: {other:?}", r.sequence),
    }
    ensure!(
        matches!(g, Err(ReadError::Reattach(_))),
        "get of the new event: {g:?}"
    );
    // With descriptors back (after the 10 ms back-off), the new view answers.
    weir_tests::wait_for("the reader to attach the new gate", || {
        Ok(reader.query(&Region::all()).is_ok_and(|v| v.len() == 11))
    })?;
    ensure!(reader.get(EventId(r.event_id))?.is_some());
    Ok(())
}
