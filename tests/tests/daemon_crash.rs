//! kill -9 of the daemon while clients append with automatic idempotency
//! keys: the clients reconnect to the restarted daemon and resend, and
//! every append that returned Ok is stored exactly once.

use anyhow::{Result, ensure};
use std::collections::HashMap;
use std::time::Duration;
use weir::Reader;
use weir_tests::{Daemon, Setup, collect, spawn_client, temp_root};

const BIN: &str = env!("CARGO_BIN_EXE_weir-test-client");
const CLIENTS: usize = 8;
const EACH: u64 = 2000;

#[test]
fn appends_survive_a_daemon_kill_exactly_once() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path());
    let mut d = Daemon::start(&setup)?;
    let sock = d.socket.to_string_lossy().into_owned();
    let each = EACH.to_string();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| spawn_client(BIN, &["append", &sock, &format!("k{c}"), &each, "20000"]))
        .collect::<Result<_>>()?;
    // Kill once a good part is stored, while the rest is in flight.
    let watch = Reader::open(&setup.data_dir)?;
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while watch.visible() < 1000 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    d.kill9()?;
    drop(watch);
    let before = Reader::open(&setup.data_dir)?.visible();
    std::thread::sleep(Duration::from_millis(200));
    let d = Daemon::start(&setup)?;
    let mut all = Vec::new();
    for c in clients {
        let (status, lines) = collect(c)?;
        ensure!(status.success());
        ensure!(lines.len() == EACH as usize, "a client gave up early");
        all.push(lines);
    }
    ensure!(
        before > 0 && before < (CLIENTS as u64 * EACH),
        "the kill did not land mid-run (visible {before})"
    );
    let reader = Reader::open(&d.data_dir)?;
    for (c, lines) in all.iter().enumerate() {
        let entity = format!("k{c}");
        let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
        for e in reader.stream(&entity)? {
            *seen.entry(e.payload()?.to_vec()).or_default() += 1;
        }
        for l in lines {
            ensure!(
                l.err.is_none(),
                "append {entity}:{} failed: {:?}",
                l.i,
                l.err
            );
            let n = seen.get(format!("{entity}:{}", l.i).as_bytes()).copied();
            ensure!(n == Some(1), "{entity}:{} stored {n:?} times", l.i);
        }
        ensure!(seen.values().all(|&n| n == 1), "duplicates in {entity}");
    }
    Ok(())
}
