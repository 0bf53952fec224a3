//! A pipelined call with a window far over the daemon's in-flight limit
//! stores every event: the client never has more requests outstanding than
//! the daemon reads while its replies wait unread.

use anyhow::{Result, ensure};
use std::time::Duration;
use weir::{AppendRequest, ClientOptions, Reader};
use weir_tests::{Daemon, Setup, temp_root};

#[test]
fn a_window_over_the_in_flight_limit_does_not_deadlock() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()).with("sync = \"never\""))?;
    // The window asked for: all events in one go. The daemon stopped
    // reading at 1024 + 64 unread replies; once the client's socket held
    // its other replies, both sides waited on a full socket.
    let n = 20_000;
    let o = ClientOptions::default()
        .window(n)
        .io_timeout(Duration::from_secs(2))
        .retry_for(Duration::from_secs(5));
    let mut c = weir::Client::connect_with(&d.socket, o)?;
    let reqs = (0..n)
        .map(|i| AppendRequest {
            entity: format!("w:{}", i % 100),
            scope: "s".into(),
            kind: 0x1001,
            payload: vec![7; 256],
            ..AppendRequest::default()
        })
        .collect();
    let got = c.append_pipelined(reqs)?;
    ensure!(got.len() == n);
    ensure!(got.iter().all(Result::is_ok), "a refusal among the replies");
    ensure!(Reader::open(&d.data_dir)?.visible() == n as u64);
    Ok(())
}
