//! What a client learns from a refusal over the socket, with the real daemon.

use anyhow::{Result, ensure};
use weir::{AppendRequest, ExpectedVersion};
use weir_tests::{Daemon, Setup, temp_root};

#[test]
fn a_version_conflict_over_the_socket_says_what_it_found() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut c = d.client()?;
    let req = |entity: &str, expected| AppendRequest {
        entity: entity.into(),
        scope: "s".into(),
        kind: 0x1001,
        expected,
        ..AppendRequest::default()
    };
    c.append_with(req("once", ExpectedVersion::NoStream))?;
    let err = c
        .append_with(req("once", ExpectedVersion::NoStream))
        .expect_err("a second first event");
    ensure!(err.found_version() == Some(Some(0)), "{err}");
    let err = c
        .append_with(req("never", ExpectedVersion::Exact(4)))
        .expect_err("a clock on an empty entity");
    ensure!(err.found_version() == Some(None), "{err}");
    Ok(())
}
