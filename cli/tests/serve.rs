//! `weir serve` prints its effective configuration and refuses an unsafe
//! data directory with a readable error. (Being an integration test, this
//! also makes `cargo test --workspace` build the `weir` binary that the
//! weir-tests crate runs.)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// `weir serve --data-dir DIR`, run to its exit (the cases here refuse to
/// start), with no systemd runtime directory leaking in.
fn serve_on(dir: &std::path::Path) -> std::process::Output {
    Command::new(WEIR)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .unwrap()
}

#[test]
fn print_config_shows_flags_over_env() {
    let out = Command::new(WEIR)
        .args(["serve", "--print-config", "--data-dir", "/flag/dir"])
        .env("WEIR_DATA_DIR", "/env/dir")
        .env("WEIR_MAX_CONNECTIONS", "77")
        .env("WEIR_MAX_CONECTIONS", "78")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("data-dir = \"/flag/dir\""), "{text}");
    assert!(text.contains("max-connections = 77"), "{text}");
    assert!(
        text.contains("# ignored: WEIR_MAX_CONECTIONS is not a configuration variable"),
        "{text}"
    );
}

#[test]
fn print_config_refuses_an_empty_metrics_listen() {
    let out = Command::new(WEIR)
        .args(["serve", "--print-config", "--data-dir", "/flag/dir"])
        .env("WEIR_METRICS_LISTEN", "")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("metrics-listen"), "{err}");
}

#[test]
fn world_writable_data_dir_is_refused_visibly() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = serve_on(&data);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("world-writable"), "{err}");
}

#[test]
fn a_socket_path_too_long_is_refused_before_the_store_is_created() {
    let root = tempfile::tempdir().unwrap();
    // The default socket goes in the data directory: 120 bytes of name.
    let data = root.path().join("d".repeat(120));
    let out = serve_on(&data);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("socket") && err.contains("107 bytes"), "{err}");
    assert!(!data.exists(), "a store was created before the refusal");
}

#[test]
fn a_data_dir_that_is_a_file_gets_one_plain_message() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("file");
    std::fs::write(&file, b"kept").unwrap();
    let out = serve_on(&file);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!("weir: {}: not a directory", file.display())
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"kept");
}

#[test]
fn a_data_dir_or_socket_that_is_not_utf8_is_refused_by_name() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    // `café d` in Latin-1: not UTF-8.
    let path = OsStr::from_bytes(b"/tmp/weir-not-utf8/caf\xe9 d");
    let serve = |args: &[&OsStr], env: Option<&str>| {
        let mut c = Command::new(WEIR);
        c.args(["serve", "--print-config"])
            .args(args)
            .env_remove("WEIR_DATA_DIR")
            .env_remove("WEIR_SOCKET")
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUNTIME_DIRECTORY");
        if let Some(var) = env {
            c.env(var, path);
        }
        c.output().unwrap()
    };
    let cases: [(&[&OsStr], Option<&str>, &str); 4] = [
        (&[OsStr::new("--data-dir"), path], None, "--data-dir"),
        (&[OsStr::new("--socket"), path], None, "--socket"),
        (&[], Some("WEIR_DATA_DIR"), "WEIR_DATA_DIR"),
        (&[], Some("STATE_DIRECTORY"), "STATE_DIRECTORY"),
    ];
    for (args, env, name) in cases {
        let out = serve(args, env);
        let err = String::from_utf8_lossy(&out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {text}{err}");
        assert!(
            err.contains(&format!("{name} is not valid UTF-8")),
            "{name}: {err}"
        );
        assert!(text.is_empty(), "{name}: printed {text}");
    }
}
