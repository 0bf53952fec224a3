//! A pipelined call keeps its window within the in-flight limit the daemon
//! announces in its hello: on a daemon with a small
//! `max-in-flight-per-connection`, no request is refused `TooManyInFlight`.

use anyhow::{Result, ensure};
use weir::{AppendRequest, Reader};
use weir_tests::{Daemon, Setup, temp_root};

#[test]
fn a_burst_over_the_limit_is_never_refused_as_too_many_in_flight() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(
        &Setup::in_dir(root.path())
            .with("sync = \"never\"")
            .with("max-in-flight-per-connection = 4"),
    )?;
    // The default window (256) is far over the limit.
    let mut c = d.client()?;
    let n = 600;
    let reqs = (0..n)
        .map(|i| AppendRequest {
            entity: format!("f:{}", i % 10),
            scope: "s".into(),
            kind: 0x1001,
            payload: vec![1; 16],
            ..AppendRequest::default()
        })
        .collect();
    let got = c.append_pipelined(reqs)?;
    ensure!(got.iter().all(Result::is_ok), "a refusal among the replies");
    // Refused requests are resent, so only the daemon's count tells.
    let refused = c.stats()?.rejected.get("TooManyInFlight").copied();
    ensure!(refused.is_none(), "{refused:?} refused TooManyInFlight");
    // In the order given: nothing was refused and resent after the rest.
    let seqs: Vec<u64> = got.iter().flatten().map(|r| r.sequence).collect();
    ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order");
    ensure!(Reader::open(&d.data_dir)?.visible() == n as u64);
    Ok(())
}
