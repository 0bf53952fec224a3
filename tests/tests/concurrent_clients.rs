//! 64 client processes append at once while two reader processes check
//! prefix visibility: every receipt is unique, sequences are dense, and
//! each receipt's event is found with the receipt's sequence and hash.

use anyhow::{Result, ensure};
use std::collections::HashSet;
use weir::{EventId, Reader};
use weir_tests::{Daemon, Setup, collect, hex, spawn_client, temp_root};

const BIN: &str = env!("CARGO_BIN_EXE_weir-test-client");
const CLIENTS: usize = 64;
const EACH: u64 = 25;

#[test]
fn sixty_four_processes_append_concurrently() -> Result<()> {
    let root = temp_root()?;
    let daemon = Daemon::start(&Setup::in_dir(root.path()))?;
    let sock = daemon.socket.to_string_lossy().into_owned();
    let data = daemon.data_dir.to_string_lossy().into_owned();
    let watchers: Vec<_> = (0..2)
        .map(|_| spawn_client(BIN, &["watch", &data, "3000"]))
        .collect::<Result<_>>()?;
    let each = EACH.to_string();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| spawn_client(BIN, &["append", &sock, &format!("c{c}"), &each, "20000"]))
        .collect::<Result<_>>()?;
    let mut receipts = Vec::new();
    for child in clients {
        let (status, lines) = collect(child)?;
        ensure!(status.success(), "a client failed: {status}");
        ensure!(
            lines.len() == EACH as usize,
            "a client printed {} lines",
            lines.len()
        );
        for l in lines {
            ensure!(l.err.is_none(), "append failed: {:?}", l.err);
            receipts.push(l);
        }
    }
    for w in watchers {
        let out = w.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "a reader saw a broken prefix: {text}");
        ensure!(text.starts_with("checks "), "reader said {text}");
    }
    let total = CLIENTS * EACH as usize;
    let seqs: HashSet<u64> = receipts.iter().filter_map(|l| l.seq).collect();
    let ids: HashSet<&String> = receipts.iter().filter_map(|l| l.id.as_ref()).collect();
    ensure!(
        seqs.len() == total && ids.len() == total,
        "receipts are not unique"
    );
    ensure!(
        seqs == (0..total as u64).collect(),
        "sequences are not dense 0..{total}"
    );
    let reader = Reader::open(&daemon.data_dir)?;
    for l in &receipts {
        let id: u128 = l.id.as_deref().unwrap_or("0").parse()?;
        let e = reader.get(EventId(id))?;
        let e = e.ok_or_else(|| anyhow::anyhow!("event {id} not found"))?;
        ensure!(Some(e.sequence()) == l.seq, "sequence differs for {id}");
        ensure!(
            Some(hex(&e.event_hash()?)) == l.hash,
            "hash differs for {id}"
        );
    }
    Ok(())
}
