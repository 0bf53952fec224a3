//! How long single appends wait while the store's entity count grows: one
//! in-process writer (`sync = never`), one new entity per append, each
//! append timed. The writer's stalls show as the slowest appends, and at
//! which append they fell (a table that grows with the entities stalls at
//! powers of two).
//!
//! `cargo run --release -p weir-bench --bin weir-stalls -- [appends]`
//! (default 1,200,000; a temporary store on the current directory's
//! filesystem).

use anyhow::{Context, Result};
use std::time::Instant;
use weir_daemon::{Config, Store, SyncPolicy};
use weir_protocol::wire::AppendRequest;

fn main() -> Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().context("appends: a number")?,
        None => 1_200_000,
    };
    anyhow::ensure!(n >= 1_000, "at least 1000 appends, for the percentiles");
    let dir = tempfile::tempdir_in(".")?;
    let mut config = Config::new(dir.path());
    config.sync = SyncPolicy::Never;
    let store = Store::open(config)?;
    let mut waits: Vec<(f64, usize)> = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        store.append_batch(vec![AppendRequest {
            entity: format!("e:{i}"),
            scope: "s".into(),
            kind: 0x1001,
            payload: vec![0; 16],
            ..AppendRequest::default()
        }])?;
        waits.push((t.elapsed().as_secs_f64() * 1e6, i));
    }
    let secs = start.elapsed().as_secs_f64();
    waits.sort_by(|a, b| b.0.total_cmp(&a.0));
    let at = |q: f64| waits[((n as f64) * (1.0 - q)) as usize].0;
    println!(
        "{n} appends of new entities in {secs:.1} s; p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.0} µs, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(0.999),
        waits[0].0 / 1e3
    );
    println!("slowest:");
    for (us, i) in waits.iter().take(10) {
        println!("  {:8.1} ms at append {i}", us / 1e3);
    }
    Ok(())
}
