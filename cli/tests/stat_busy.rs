//! A daemon at its `max-connections` is running, not stopped: `weir stat`
//! says it refused the connection as busy, and `weir append` waits for a
//! connection to free up instead of failing at once.

mod common;

use anyhow::{Result, ensure};
use common::{APPEND_ONE, daemon, weir};
use std::time::Duration;
use weir::Client;
use weir_tests::temp_root;

#[test]
fn a_daemon_at_its_connection_limit_is_busy_not_stopped() -> Result<()> {
    let root = temp_root()?;
    let d = daemon(root.path(), "max-connections = 2")?;
    let mut held = vec![d.client()?, d.client()?];

    let out = weir(&d.data_dir).arg("stat").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{}: {text}", out.status);
    let row = text
        .lines()
        .find(|l| l.starts_with("daemon "))
        .unwrap_or_default();
    ensure!(
        row.contains("running (pid") && row.contains("refused the connection as busy"),
        "{text}"
    );
    ensure!(
        row.contains("Busy: the daemon serves max-connections = 2"),
        "{text}"
    );
    ensure!(!row.contains("not running"), "{text}");

    let out = weir(&d.data_dir).args(["stat", "--json"]).output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["daemon_running"].is_null(), "{v}");
    ensure!(
        v["daemon_error"]
            .as_str()
            .is_some_and(|e| e.contains("max-connections = 2")),
        "{v}"
    );

    // The append is refused until a connection frees up, then stored.
    let freed = held.pop();
    let free = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop::<Option<Client>>(freed);
    });
    let out = weir(&d.data_dir).args(APPEND_ONE).output()?;
    free.join().expect("the thread freeing a connection");
    ensure!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(held[0].stats()?.appends == 1, "the append was not stored");
    Ok(())
}
