//! Shared by the CLI tests: a real daemon (weir-tests' `Daemon`, killed and
//! reaped on drop) on a small configuration, and `weir` commands pointed at
//! its data directory.
#![allow(dead_code)]

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_tests::{Daemon, Setup};

/// The `weir` binary cargo built for these tests.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// One valid append (it needs a running daemon).
pub const APPEND_ONE: [&str; 9] = [
    "append",
    "--entity",
    "a",
    "--scope",
    "b",
    "--kind",
    "0x1001",
    "--payload-json",
    "1",
];

/// Small files, so that a daemon starts fast on a shared 2-core machine.
const SMALL: &str = "segment-max-bytes = 4194304\nchunk-rows-log2 = 10\nmax-payload-bytes = 1048576\nmax-batch-bytes = 1050624";

/// Starts a daemon in `root` (data in `root/data`), with extra TOML lines.
pub fn daemon(root: &Path, extra: &str) -> Result<Daemon> {
    Daemon::start(&Setup::in_dir(root).with(SMALL).with(extra))
}

/// A store that a daemon (in a new temporary root) appended the JSON
/// `lines` to, then stopped with SIGTERM: the root and the data dir.
pub fn stopped_after(lines: String) -> Result<(tempfile::TempDir, PathBuf)> {
    let root = weir_tests::temp_root()?;
    let mut d = daemon(root.path(), "")?;
    let dir = d.data_dir.clone();
    weir(&dir)
        .arg("append")
        .write_stdin(lines)
        .assert()
        .success();
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    Ok((root, dir))
}

/// `weir ARGS…` with `--data-dir` taken from `$WEIR_DATA_DIR = dir`, and
/// no systemd variables leaking in from the test's environment.
pub fn weir(dir: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(WEIR);
    c.env("WEIR_DATA_DIR", dir)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_LOG")
        .timeout(std::time::Duration::from_secs(30));
    c
}

/// Parses every stdout line as JSON.
pub fn json_lines(out: &[u8]) -> Result<Vec<serde_json::Value>> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// stderr as text, asserting it is one line starting `weir: `.
pub fn one_line_error(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err).into_owned();
    assert!(text.starts_with("weir: "), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    text
}
