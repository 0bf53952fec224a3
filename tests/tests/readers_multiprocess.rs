//! Readers in other processes see exactly a prefix of the log while appends
//! and batches run, see every acknowledged append at once, survive the death
//! of other readers, and re-attach by themselves when the daemon is killed
//! and restarted.
use anyhow::{Result, ensure};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir::{Coordinate, EventKind};
use weir_protocol::wire::AppendRequest;
use weir_tests::{Daemon, Setup, temp_root};

const READER: &str = env!("CARGO_BIN_EXE_weir-test-reader");

fn reader(args: &[&str]) -> Result<std::process::Child> {
    Ok(Command::new(READER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

fn batch(i: u64, n: u64) -> Vec<AppendRequest> {
    (0..n)
        .map(|j| AppendRequest {
            entity: format!("user:{}", (i * 7 + j) % 13),
            scope: "t".into(),
            kind: 0x1001,
            payload: vec![1; 64],
            ..AppendRequest::default()
        })
        .collect()
}

#[test]
fn readers_see_only_prefixes_while_appends_and_batches_run() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()).with("sync = \"never\""))?;
    let data = d.data_dir.to_string_lossy().into_owned();
    let watchers: Vec<_> = (0..3)
        .map(|_| reader(&["prefix", &data, "2500"]))
        .collect::<Result<_>>()?;
    let mut client = d.client()?;
    let until = Instant::now() + Duration::from_millis(2000);
    let mut i = 0;
    while Instant::now() < until {
        client.append_batch(batch(i, 1 + i % 17))?;
        i += 1;
    }
    for w in watchers {
        let out = w.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "watcher failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        let checks: u64 = text.trim().strip_prefix("checks ").unwrap_or("0").parse()?;
        ensure!(checks > 10, "the watcher checked only {checks} snapshots");
    }
    ensure!(i > 50, "only {i} batches were appended");
    Ok(())
}

#[test]
fn a_receipt_means_another_process_sees_the_event() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()))?;
    let mut client = d.client()?;
    client.ping()?;
    let mut r = reader(&["lookup", &d.data_dir.to_string_lossy()])?;
    let mut stdin = r.stdin.take().expect("piped");
    let mut answers = BufReader::new(r.stdout.take().expect("piped")).lines();
    let at = Coordinate::new("account:1", "t")?;
    for i in 0..200u32 {
        let receipt = client.append(&at, EventKind(0x1001), &i.to_le_bytes())?;
        writeln!(
            stdin,
            "{} {}",
            weir::EventId(receipt.event_id),
            receipt.sequence
        )?;
        stdin.flush()?;
        let answer = answers.next().transpose()?.unwrap_or_default();
        ensure!(
            answer == "found",
            "append {i} (sequence {}) was {answer} in another process",
            receipt.sequence
        );
    }
    drop(stdin);
    ensure!(r.wait()?.success());
    Ok(())
}

#[test]
fn killing_readers_disturbs_neither_the_daemon_nor_other_readers() -> Result<()> {
    let root = temp_root()?;
    let d = Daemon::start(&Setup::in_dir(root.path()).with("sync = \"never\""))?;
    let data = d.data_dir.to_string_lossy().into_owned();
    let mut victims: Vec<_> = (0..6)
        .map(|_| reader(&["prefix", &data, "5000"]))
        .collect::<Result<_>>()?;
    let survivor = reader(&["prefix", &data, "2000"])?;
    let mut client = d.client()?;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..400u64 {
        client.append_batch(batch(i, 1 + i % 5))?;
        if i % 60 == 30 && !victims.is_empty() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut v = victims.remove((x % victims.len() as u64) as usize);
            let killed = v.kill(); // SIGKILL at an arbitrary point of its query loop
            v.wait()?;
            killed?;
        }
    }
    for mut v in victims {
        let killed = v.kill();
        v.wait()?;
        killed?;
    }
    let out = survivor.wait_with_output()?;
    ensure!(
        out.status.success(),
        "survivor: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon still appends, and a fresh reader still checks out.
    client.append_batch(batch(1, 3))?;
    let fresh = reader(&["prefix", &data, "200"])?.wait_with_output()?;
    ensure!(
        fresh.status.success(),
        "fresh reader: {}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    Ok(())
}

#[test]
fn a_long_lived_reader_follows_across_a_daemon_kill_and_restart() -> Result<()> {
    let root = temp_root()?;
    let setup = Setup::in_dir(root.path());
    let mut d = Daemon::start(&setup)?;
    let mut follower = reader(&["follow", &d.data_dir.to_string_lossy(), "120", "30"])?;
    let mut seen = BufReader::new(follower.stdout.take().expect("piped")).lines();
    let mut client = d.client()?;
    for i in 0..60 {
        client.append_batch(batch(i, 1))?;
    }
    for want in 0..60u64 {
        ensure!(
            seen.next().transpose()?.as_deref() == Some(want.to_string().as_str()),
            "before the kill, at {want}"
        );
    }
    d.kill9()?;
    drop(client);
    let d2 = Daemon::start(&setup)?;
    let mut client = d2.client()?;
    for i in 60..120 {
        client.append_batch(batch(i, 1))?;
    }
    for want in 60..120u64 {
        let got = seen.next().transpose()?;
        ensure!(
            got.as_deref() == Some(want.to_string().as_str()),
            "after the restart: wanted {want}, got {got:?}"
        );
    }
    let status = follower.wait()?;
    ensure!(status.success(), "the follower exited with {status}");
    Ok(())
}
