//! A daemon at its `max-connections` runs: a client refused `Busy` tries
//! again after the daemon's `retry_after_ms` within its `retry_for`, takes a
//! connection freed meanwhile, and when the budget ends reports the
//! daemon's refusal (`ClientError::Refused`, code `Busy`), not a daemon gone.
use anyhow::{Result, ensure};
use std::time::Duration;
use weir::{Client, ClientError, ClientOptions, ErrorCode};
use weir_tests::{Daemon, Setup, temp_root};

fn full_daemon(root: &std::path::Path) -> Result<(Daemon, Vec<Client>)> {
    let d = Daemon::start(&Setup::in_dir(root).with("max-connections = 2"))?;
    let held = vec![d.client()?, d.client()?];
    Ok((d, held))
}

#[test]
fn a_full_daemon_is_retried_then_reported_with_its_refusal() -> Result<()> {
    let root = temp_root()?;
    let (d, mut held) = full_daemon(root.path())?;
    let opts = ClientOptions::default().retry_for(Duration::from_secs(1));
    let err = Client::connect_with(&d.socket, opts).expect_err("the daemon is full");
    ensure!(
        matches!(err, ClientError::Refused { .. }),
        "not the daemon's refusal: {err:?}"
    );
    ensure!(err.code() == Some(ErrorCode::Busy), "{err}");
    ensure!(
        err.to_string().contains("max-connections = 2") && err.to_string().contains("retried"),
        "{err}"
    );
    // Every try reached the daemon (each refusal is counted).
    let stats = held[0].stats()?;
    let refused = stats.rejected.get("TooManyConnections").copied();
    ensure!(refused.is_some_and(|n| n >= 2), "{refused:?} refusals");
    drop(held);
    Ok(())
}

#[test]
fn a_connection_freed_during_the_retry_is_taken() -> Result<()> {
    let root = temp_root()?;
    let (d, mut held) = full_daemon(root.path())?;
    let freed = held.pop();
    let free = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(freed);
    });
    let opts = ClientOptions::default().retry_for(Duration::from_secs(8));
    let mut c = Client::connect_with(&d.socket, opts)?;
    c.ping()?;
    free.join().expect("the thread freeing a connection");
    drop(held);
    Ok(())
}
