//! `weir stat` run by a user whom the socket's mode refuses (but who may
//! read the store) says the daemon runs and refused it, not that it is not
//! running. Needs root to run `weir stat` as another user (`setpriv`);
//! without root the test says so and passes vacuously.

mod common;

use anyhow::{Context, Result, ensure};
use common::{WEIR, daemon};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use weir_tests::temp_root;

/// `weir ARGS…` as uid/gid 65534 with no supplementary groups.
fn as_nobody(weir: &std::path::Path, data: &std::path::Path, args: &[&str]) -> Result<Output> {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(weir)
        .args(args)
        .env("WEIR_DATA_DIR", data)
        .env_remove("RUST_LOG")
        .output()
        .context("setpriv")
}

#[test]
fn stat_says_a_refusing_socket_is_not_a_stopped_daemon() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run weir stat under another uid");
        return Ok(());
    }
    let root = temp_root()?;
    // nobody must reach the binary and read the store; the socket stays 0660.
    let weir = root.path().join("weir");
    std::fs::copy(WEIR, &weir)?;
    std::fs::set_permissions(&weir, std::fs::Permissions::from_mode(0o755))?;
    let d = daemon(root.path(), "")?;
    std::fs::set_permissions(&d.data_dir, std::fs::Permissions::from_mode(0o755))?;

    let out = as_nobody(&weir, &d.data_dir, &["stat"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{}: {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("daemon "))
        .unwrap_or_default();
    ensure!(
        row.contains("running (pid") && row.contains("its socket refused this user"),
        "{text}"
    );
    ensure!(row.contains("Permission denied"), "{text}");
    ensure!(!row.contains("not running"), "{text}");

    let out = as_nobody(&weir, &d.data_dir, &["stat", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["daemon_running"].is_null(), "{v}");
    ensure!(
        v["daemon_error"]
            .as_str()
            .is_some_and(|e| e.contains("Permission denied")),
        "{v}"
    );
    Ok(())
}
