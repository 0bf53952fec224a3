//! The systemd units load cleanly (`systemd-analyze verify`), the service's
//! hardening rates 2.0 or lower (`systemd-analyze security --offline=yes`),
//! and the sysusers/tmpfiles snippets apply to a scratch root.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Copies the units into a scratch directory with `ExecStart=` pointing at
/// the binary cargo built: `verify` checks that the executable exists, and
/// /usr/bin/weir (the install path the unit documents) is not there on a
/// build machine. Everything else in the units is tested as shipped.
fn patched_units(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let service = std::fs::read_to_string(systemd_dir().join("weir.service"))?;
    assert!(
        service.contains("ExecStart=/usr/bin/weir serve"),
        "{service}"
    );
    let service = service.replace("ExecStart=/usr/bin/weir", &format!("ExecStart={WEIR}"));
    let s = dir.join("weir.service");
    std::fs::write(&s, service)?;
    let k = dir.join("weir.socket");
    std::fs::copy(systemd_dir().join("weir.socket"), &k)?;
    Ok((s, k))
}

#[test]
fn units_verify_and_service_exposure_is_at_most_2() -> Result<()> {
    if !have("systemd-analyze") {
        eprintln!("skipped: systemd-analyze is not installed");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let (service, socket) = patched_units(tmp.path())?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&service)
        .arg(&socket)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{err}"
    );
    assert!(!err.contains("weir.s"), "warnings about our units:\n{err}");

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&service)
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let score = exposure(&text)?;
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
    Ok(())
}

/// The number on the "Overall exposure level for weir.service: 0.5 SAFE" line.
fn exposure(text: &str) -> Result<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| format!("no exposure line in:\n{text}"))?;
    let after = line.split(':').next_back().unwrap_or_default();
    let num = after
        .split_whitespace()
        .next()
        .with_context(|| format!("no number in {line:?}"))?;
    Ok(num.parse()?)
}

#[test]
fn sysusers_and_tmpfiles_apply_to_a_scratch_root() -> Result<()> {
    if !have("systemd-sysusers") || !have("systemd-tmpfiles") {
        eprintln!("skipped: systemd-sysusers or systemd-tmpfiles is not installed");
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: creating files owned by `weir` needs root");
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    std::fs::create_dir(root.path().join("etc"))?;
    let run = |tool: &str, file: &str, extra: &[&str]| -> Result<()> {
        let out = Command::new(tool)
            .args(extra)
            .arg(format!("--root={}", root.path().display()))
            .arg(systemd_dir().join(file))
            .output()?;
        if !out.status.success() {
            bail!("{tool} {file}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run("systemd-sysusers", "weir.sysusers", &[])?;
    run("systemd-tmpfiles", "weir.tmpfiles", &["--create"])?;
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd"))?;
    assert!(passwd.starts_with("weir:"), "{passwd}");
    use std::os::unix::fs::MetadataExt;
    for dir in ["var/lib/weir", "run/weir"] {
        let m = std::fs::metadata(root.path().join(dir))?;
        assert_eq!(m.mode() & 0o777, 0o750, "{dir}");
        assert_ne!(m.uid(), 0, "{dir} should belong to weir");
    }
    Ok(())
}

#[test]
fn exposure_line_parses() -> Result<()> {
    let line = "→ Overall exposure level for weir.service: 0.5 SAFE 😀";
    assert!((exposure(line)? - 0.5).abs() < 1e-9);
    assert!(exposure("nothing here").is_err());
    Ok(())
}
