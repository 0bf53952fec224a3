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
