//! `weir tail -f` prints an event that another process appends after it
//! started following (woken by the gate's futex, not by polling); `weir
//! tail -n N` prints N events however fast others append meanwhile.

mod common;

use anyhow::{Context, Result};
use common::{WEIR, daemon, json_lines, weir};
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills and reaps the follower however the test ends.
struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `weir tail -f -n 1 --json ARGS…` on `dir`, and its output lines.
fn follow(
    dir: &std::path::Path,
    args: &[&str],
) -> Result<(Follower, mpsc::Receiver<std::io::Result<String>>)> {
    follow_to(dir, args, Stdio::inherit())
}

/// [`follow`] with its stderr sent to `stderr`.
fn follow_to(
    dir: &std::path::Path,
    args: &[&str],
    stderr: Stdio,
) -> Result<(Follower, mpsc::Receiver<std::io::Result<String>>)> {
    let child = Command::new(WEIR)
        .args(["tail", "-f", "-n", "1", "--json"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("WEIR_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let mut f = Follower(child);
    let stdout = f.0.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((f, rx))
}

/// The next line `follow` printed, as JSON.
fn next(rx: &mpsc::Receiver<std::io::Result<String>>) -> Result<serde_json::Value> {
    let line = rx
        .recv_timeout(Duration::from_secs(15))
        .context("no line from tail -f")??;
    Ok(serde_json::from_str(&line)?)
}

/// `n` events appended through `d`'s client, to entities `tag:0`,
/// `tag:1`, ….
fn add(d: &weir_tests::Daemon, tag: &str, n: usize) -> Result<()> {
    let mut c = d.client()?;
    for i in 0..n {
        c.append_with(weir::AppendRequest {
            entity: format!("{tag}:{i}"),
            scope: "tenant:a".into(),
            kind: 0x1001,
            payload: vec![0x90],
            ..weir::AppendRequest::default()
        })?;
    }
    Ok(())
}

fn append(dir: &std::path::Path, entity: &str) {
    weir(dir)
        .args([
            "append", "--entity", entity, "--scope", "tenant:a", "--kind", "0x1001",
        ])
        .args(["--payload-json", r#"{"hello":"tail"}"#])
        .assert()
        .success();
}

#[test]
fn tail_follow_prints_an_event_appended_by_another_process() -> Result<()> {
    let root = weir_tests::temp_root()?;
    let d = daemon(root.path(), "")?;
    append(&d.data_dir, "before:1");

    let (_f, rx) = follow(&d.data_dir, &["--entity-prefix", "before"])?;
    let next = || next(&rx);
    // History first: once this line is out, tail is following.
    assert_eq!(next()?["entity"], "before:1");
    // Not in the region: must not be printed.
    append(&d.data_dir, "other:1");
    append(&d.data_dir, "before:2");
    let e = next()?;
    assert_eq!(e["entity"], "before:2");
    assert_eq!(e["sequence"], 2);
    assert_eq!(e["payload"]["hello"], "tail");
    Ok(())
}

#[test]
fn tail_prints_exactly_n_events_while_appends_run() -> Result<()> {
    let root = weir_tests::temp_root()?;
    let d = daemon(root.path(), "")?;
    for _ in 0..3 {
        append(&d.data_dir, "busy:0");
    }
    // Another process appends 100k events, pipelined, while tail runs.
    let mut writer = Follower(
        Command::new(WEIR)
            .arg("append")
            .arg("--data-dir")
            .arg(&d.data_dir)
            .env_remove("WEIR_DATA_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?,
    );
    let mut stdin = writer.0.stdin.take().context("no stdin")?;
    let feeder = std::thread::spawn(move || {
        for i in 1..100_000 {
            let line = format!(
                r#"{{"entity":"busy:{}","scope":"tenant:a","kind":"0x1001","payload":{{}}}}"#,
                i % 7
            );
            if writeln!(stdin, "{line}").is_err() {
                break;
            }
        }
    });
    let mut runs = 0;
    while runs < 40 && !feeder.is_finished() {
        let out = weir(&d.data_dir)
            .args(["tail", "-n", "3", "--json"])
            .output()?;
        assert!(out.status.success(), "{out:?}");
        let seqs: Vec<u64> = json_lines(&out.stdout)?
            .iter()
            .map(|e| e["sequence"].as_u64().context("no sequence"))
            .collect::<Result<_>>()?;
        let shown = &seqs[..seqs.len().min(5)];
        assert_eq!(
            seqs.len(),
            3,
            "tail -n 3 printed {} events: {shown:?}…",
            seqs.len()
        );
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        runs += 1;
    }
    assert!(runs >= 10, "only {runs} tails ran while the appends did");
    Ok(())
}

#[test]
fn tail_follow_lets_go_of_the_old_index_after_a_crash_restart() -> Result<()> {
    // A crash restart builds a new index generation; the old one's files
    // are deleted by the daemon, and must not stay mapped (their disk space
    // held) by a long-running `tail -f`.
    let root = weir_tests::temp_root()?;
    let mut d = daemon(root.path(), "")?;
    append(&d.data_dir, "x:1");
    let (f, rx) = follow(&d.data_dir, &[])?;
    let next = || next(&rx);
    assert_eq!(next()?["entity"], "x:1");
    let old = format!("{}/index/gen-00000000/", d.data_dir.display());
    let maps = || std::fs::read_to_string(format!("/proc/{}/maps", f.0.id()));
    assert!(maps()?.contains(&old), "tail maps generation 0 at first");
    d.kill9()?;
    drop(d);
    let d = daemon(root.path(), "")?;
    append(&d.data_dir, "x:2");
    assert_eq!(
        next()?["entity"],
        "x:2",
        "tail follows the restarted daemon"
    );
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while maps()?.contains(&old) {
        assert!(
            std::time::Instant::now() < until,
            "tail -f still maps generation 0 after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    append(&d.data_dir, "x:3");
    assert_eq!(next()?["entity"], "x:3", "and goes on after letting go");
    Ok(())
}

#[test]
fn tail_follow_prints_every_event_of_a_store_replaced_at_the_same_path() -> Result<()> {
    let root = weir_tests::temp_root()?;
    let d = daemon(root.path(), "")?;
    let dir = d.data_dir.clone();
    add(&d, "old", 20)?;
    let err = root.path().join("tail.err");
    let (_f, rx) = follow_to(&dir, &[], std::fs::File::create(&err)?.into())?;
    assert_eq!(next(&rx)?["sequence"], 19);
    // Stop, delete the store, start a new one at the same path.
    let mut d = d;
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    drop(d);
    std::fs::remove_dir_all(&dir)?;
    let d = daemon(root.path(), "")?;
    add(&d, "new", 5)?;
    for i in 0..5 {
        let e = next(&rx)?;
        assert_eq!(
            (&e["sequence"], &e["entity"]),
            (&i.into(), &format!("new:{i}").into())
        );
    }
    let notice = std::fs::read_to_string(&err)?;
    assert!(notice.contains("the store was replaced"), "{notice}");
    Ok(())
}

#[test]
fn tail_follow_says_a_store_was_restored_from_an_older_copy() -> Result<()> {
    let root = weir_tests::temp_root()?;
    let mut d = daemon(root.path(), "")?;
    let dir = d.data_dir.clone();
    let stop = |d: &mut weir_tests::Daemon| {
        d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))
    };
    add(&d, "e", 10)?;
    stop(&mut d)?;
    drop(d);
    let backup = root.path().join("backup");
    weir_tests::copy_dir(&dir, &backup)?;
    let mut d = daemon(root.path(), "")?;
    add(&d, "e", 10)?;
    let err = root.path().join("tail.err");
    let (_f, rx) = follow_to(&dir, &[], std::fs::File::create(&err)?.into())?;
    assert_eq!(next(&rx)?["sequence"], 19);
    // The backup put in place of the store, which goes on from it.
    stop(&mut d)?;
    drop(d);
    std::fs::rename(&dir, root.path().join("old"))?;
    weir_tests::copy_dir(&backup, &dir)?;
    let d = daemon(root.path(), "")?;
    add(&d, "e", 15)?;
    // Where the two histories split is unknown: it follows from 0.
    for i in 0..25 {
        assert_eq!(next(&rx)?["sequence"], i);
    }
    let notice = std::fs::read_to_string(&err)?;
    assert!(
        notice.contains("restored from an older copy") && notice.contains("following from 0"),
        "{notice}"
    );
    assert!(!notice.contains("crash"), "{notice}");
    Ok(())
}
