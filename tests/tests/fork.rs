//! A process that forks while it holds a `Client` or a `Reader`: the child
//! gets its own connection (two processes on one conversation would take
//! each other's replies), and the child's copy of a `Reader` going away
//! does not release the parent's locks on the index generation it reads.

use anyhow::{Context, Result, bail, ensure};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use weir::{Coordinate, EventKind, Reader, Region};
use weir_tests::{Daemon, Setup, temp_root};

/// Runs `child` in a forked child, which writes what it returns (or its
/// error) to a file; returns that text once the child has exited.
fn in_child(root: &std::path::Path, child: impl FnOnce() -> Result<String>) -> Result<String> {
    let out = root.join(format!("child-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&out);
    // SAFETY: the child only runs `child` (which allocates and makes system
    // calls; glibc's malloc is fork-safe, and no lock of this test is held
    // across the fork) and then `_exit`s without running the parent's
    // destructors or atexit handlers.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let said = child().unwrap_or_else(|e| format!("error: {e:#}"));
            let code = i32::from(std::fs::write(&out, said).is_err());
            // SAFETY: ends the child at once, as a forked child must.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(_, 0) => std::fs::read_to_string(&out).context("the child's report"),
            other => bail!("the child ended with {other:?}"),
        },
    }
}

#[test]
fn a_forked_child_gets_its_own_connection() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut c = d.client()?;
    let at = Coordinate::new("parent", "s")?;
    c.append(&at, EventKind(0x1001), b"before the fork")?;
    ensure!(c.stats()?.connections == 1);
    let said = in_child(root.path(), || {
        let at = Coordinate::new("child", "s")?;
        let r = c.append(&at, EventKind(0x1001), b"from the child")?;
        // The parent's connection stays open beside the child's own.
        let conns = c.stats()?.connections;
        Ok(format!("seq {} conns {conns}", r.sequence))
    })?;
    ensure!(
        said == "seq 1 conns 2",
        "the child appended on its parent's connection: {said}"
    );
    // The parent's conversation goes on where it was.
    let r = c.append(&at, EventKind(0x1001), b"after the fork")?;
    ensure!(r.sequence == 2, "{r:?}");
    let reader = Reader::open(&d.data_dir)?;
    ensure!(reader.stream("child")?.len() == 1);
    ensure!(reader.stream("parent")?.len() == 2);
    Ok(())
}

#[test]
fn a_forked_child_dropping_its_reader_keeps_the_parents_generation_locked() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut c = d.client()?;
    c.append(&Coordinate::new("a", "s")?, EventKind(0x1001), b"x")?;
    let reader = Reader::open(&d.data_dir)?;
    ensure!(reader.query(&Region::entity("a"))?.len() == 1);
    let generation = d.data_dir.join("index").join("gen-00000000");
    // An exclusive lock is what a daemon start takes before it deletes an
    // old generation.
    let locked_by_readers = || -> Result<bool> {
        let dir = std::fs::File::open(&generation)?;
        Ok(dir.try_lock().is_err())
    };
    ensure!(
        locked_by_readers()?,
        "the reader holds no lock on its generation"
    );
    let mut slot = Some(reader);
    let said = in_child(root.path(), || {
        // The child's copy only: the parent's stays in its own `slot`.
        drop(slot.take());
        Ok("dropped".to_owned())
    })?;
    ensure!(said == "dropped", "{said}");
    ensure!(
        locked_by_readers()?,
        "the child's drop of its copy released the parent's lock on {}",
        generation.display()
    );
    ensure!(slot.is_some());
    Ok(())
}

/// A transaction begun before a fork goes on in the child as after a
/// reconnect: its `Begin` and staged events are replayed on the child's own
/// connection, nothing is visible before the child commits, and the commit
/// stores both events. (The child's first append had gone out as a plain
/// append on its new connection, visible at once, and the commit then found
/// no transaction.)
#[test]
fn a_forked_child_goes_on_with_an_inherited_transaction() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut c = d.client()?;
    let at = Coordinate::new("txn", "s")?;
    let mut txn = c.transaction();
    txn.append(&at, EventKind(0x1001), b"staged by the parent")?;
    let data = d.data_dir.clone();
    let said = in_child(root.path(), move || {
        txn.append(&at, EventKind(0x1001), b"staged by the child")?;
        let before = Reader::open(&data)?.stream("txn")?.len();
        let receipts = txn.commit()?;
        let after = Reader::open(&data)?.stream("txn")?.len();
        Ok(format!(
            "before {before} committed {} after {after}",
            receipts.len()
        ))
    })?;
    ensure!(
        said == "before 0 committed 2 after 2",
        "the child's transaction: {said}"
    );
    let reader = Reader::open(&d.data_dir)?;
    let payloads: Vec<Vec<u8>> = reader
        .stream("txn")?
        .iter()
        .map(|e| e.payload().map(<[u8]>::to_vec))
        .collect::<Result<_, _>>()?;
    ensure!(
        payloads == [&b"staged by the parent"[..], &b"staged by the child"[..]],
        "{payloads:?}"
    );
    Ok(())
}
