//! Idle connections cannot take the descriptors the writer needs: under a low
//! open-file limit the daemon refuses connections beyond what the limit
//! leaves (saying why), and appends that open new segments and index chunk
//! files go on succeeding. The writer itself holds a bounded number of
//! descriptors, whatever the number of segments.
use anyhow::{Result, ensure};
use std::time::Duration;
use weir::{Client, ClientOptions};
use weir_protocol::wire::AppendRequest;
use weir_tests::{Daemon, Setup, temp_root};

/// Small segments and chunks: every few batches open a new file.
const SMALL: &str = "segment-max-bytes = 2097152\nsync = \"never\"\nchunk-rows-log2 = 10\n\
                     max-payload-bytes = 65536\nmax-batch-bytes = 524288\n\
                     max-batch-events = 1000\nmax-frame-bytes = 1048576\n\
                     max-connections = 1000";

#[test]
fn idle_connections_leave_the_writer_its_descriptors() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()).with(SMALL).with_nofile(300))?;
    let mut client = d.client()?;
    let quick = ClientOptions::default()
        .retry_for(Duration::ZERO)
        .io_timeout(Duration::from_millis(500));
    // Connect until the daemon takes no more (it would accept 1,000).
    let mut idle = Vec::new();
    let mut refusal = None;
    for _ in 0..400 {
        match Client::connect_with(&d.socket, quick.clone()) {
            Ok(c) => idle.push(c),
            Err(e) => {
                refusal = Some(e.to_string());
                break;
            }
        }
    }
    for b in 0..40u64 {
        let batch = (0..1000u64)
            .map(|i| AppendRequest {
                entity: format!("e:{}", i % 50),
                scope: "s".into(),
                kind: 0x1001,
                payload: vec![b as u8; 200],
                idempotency_key: Some(u128::from(b * 1000 + i) + 1),
                ..AppendRequest::default()
            })
            .collect();
        client.append_batch(batch)?;
    }
    let stats = client.stats()?;
    ensure!(!stats.writer_poisoned, "{}", d.log_text());
    ensure!(stats.visible == 40_000, "visible {}", stats.visible);
    ensure!(stats.segments > 4, "{} segments", stats.segments);
    // The writer keeps the segment it appends to and the one before open,
    // not one descriptor per segment of the store.
    let open_segments = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.extension().is_some_and(|x| x == "seg"))
        .count();
    ensure!(
        open_segments <= 2,
        "{open_segments} segment files open for {} segments",
        stats.segments
    );
    let refusal = refusal.unwrap_or_default();
    ensure!(
        refusal.contains("open-file limit"),
        "{} idle connections taken; the next one: {refusal:?}",
        idle.len()
    );
    // 300 - 128 reserved, one descriptor per connection (the client
    // connected first is one of them).
    ensure!(idle.len() == 171, "{} idle connections", idle.len());
    drop(idle);
    Ok(())
}
