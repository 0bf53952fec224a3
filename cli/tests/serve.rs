//! `weir serve` prints its effective configuration and refuses an unsafe
//! data directory with a readable error. (Being an integration test, this
//! also makes `cargo test --workspace` build the `weir` binary that the
//! weir-tests crate runs.)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

#[test]
fn print_config_shows_flags_over_env() {
    let out = Command::new(WEIR)
        .args(["serve", "--print-config", "--data-dir", "/flag/dir"])
        .env("WEIR_DATA_DIR", "/env/dir")
        .env("WEIR_MAX_CONNECTIONS", "77")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("data-dir = \"/flag/dir\""), "{text}");
    assert!(text.contains("max-connections = 77"), "{text}");
}

#[test]
fn world_writable_data_dir_is_refused_visibly() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(WEIR)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("world-writable"), "{err}");
}
