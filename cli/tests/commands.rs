//! Every client subcommand against a real daemon: what it prints, that
//! `--json` parses, the metrics listener, and the exit status and one-line
//! message of usage errors (2), a missing data dir and a stopped daemon (1).

mod common;

use anyhow::Result;
use common::{APPEND_ONE, WEIR, daemon, json_lines, one_line_error, weir};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn http_get(port: u16) -> Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

#[test]
fn subcommands_against_a_running_then_stopped_daemon() -> Result<()> {
    let root = weir_tests::temp_root()?;
    let port = free_port()?;
    let mut d = daemon(
        root.path(),
        &format!("metrics-listen = \"127.0.0.1:{port}\""),
    )?;
    let dir = d.data_dir.clone();

    // One event from flags; the receipt as JSON.
    let out = weir(&dir)
        .args([
            "append", "--entity", "user:1", "--scope", "tenant:a", "--kind", "0x1001",
        ])
        .args(["--payload-json", r#"{"name":"ada"}"#, "--json"])
        .assert()
        .success();
    let r = &json_lines(&out.get_output().stdout)?[0];
    assert_eq!(r["sequence"], 0);
    let id0 = r["event_id"].as_str().unwrap_or_default().to_owned();

    // Idempotency key: the retry returns the first receipt.
    let keyed = |payload: &str| {
        weir(&dir)
            .args([
                "append", "--entity", "user:1", "--scope", "tenant:a", "--kind", "4098",
            ])
            .args([
                "--payload-json",
                payload,
                "--idempotency-key",
                "order-7",
                "--json",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    let first = json_lines(&keyed("1"))?.remove(0);
    let again = json_lines(&keyed("1"))?.remove(0);
    assert_eq!(first["sequence"], again["sequence"]);
    assert_eq!(again["replayed"], true);

    // A failed condition: exit 1, one line naming it.
    let out = weir(&dir)
        .args([
            "append", "--entity", "user:1", "--scope", "tenant:a", "--kind", "0x1001",
        ])
        .args(["--payload-json", "2", "--expect-version", "none"])
        .assert()
        .code(1);
    let err = one_line_error(&out.get_output().stderr);
    assert!(err.contains("VersionConflict"), "{err}");

    // A raw payload file is shown as base64.
    let raw = root.path().join("raw.bin");
    std::fs::write(&raw, b"\xff\x00raw")?;
    weir(&dir)
        .args([
            "append", "--entity", "blob:1", "--scope", "tenant:b", "--kind", "0x2001",
        ])
        .arg("--payload-file")
        .arg(&raw)
        .arg("--raw")
        .assert()
        .success()
        .stdout(predicates::str::contains("sequence 2"));

    // JSON lines on stdin, in batches; a plain summary.
    let lines = (0..5)
        .map(|i| json!({"entity": format!("user:{}", 2 + i % 2), "scope": "tenant:b", "kind": "0x1003", "payload": {"i": i}}).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    weir(&dir)
        .args(["append", "--batch", "2"])
        .write_stdin(lines)
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "appended 5 events (0 replayed, 0 failed)",
        ));

    // get: by id, table and JSON.
    weir(&dir)
        .args(["get", &id0])
        .assert()
        .success()
        .stdout(predicates::str::contains(r#"{"name":"ada"}"#));
    let out = weir(&dir).args(["get", &id0, "--json"]).assert().success();
    let e = &json_lines(&out.get_output().stdout)?[0];
    assert_eq!(e["entity"], "user:1");
    assert_eq!(e["kind"], "0x1001");
    assert_eq!(e["payload"], json!({"name": "ada"}));
    assert_eq!(e["payload_encoding"], "msgpack");
    let out = weir(&dir)
        .args(["get", "00000000-0000-7000-8000-000000000001"])
        .assert()
        .code(1);
    assert!(one_line_error(&out.get_output().stderr).contains("no visible event"));
    // A malformed id is a usage error.
    weir(&dir).args(["get", "not-an-id"]).assert().code(2);
    // A reader setting it does not take: exit 1, one line naming it.
    let out = weir(&dir)
        .env("WEIR_HUGE_PAGES", "sometimes")
        .args(["get", &id0])
        .assert()
        .code(1);
    let err = one_line_error(&out.get_output().stderr);
    assert!(err.contains("WEIR_HUGE_PAGES is \"sometimes\""), "{err}");

    // stream: oldest first, --since.
    let out = weir(&dir)
        .args(["stream", "user:2", "--json"])
        .assert()
        .success();
    let s = json_lines(&out.get_output().stdout)?;
    assert_eq!(
        s.iter()
            .map(|e| e["payload"]["i"].clone())
            .collect::<Vec<_>>(),
        [json!(0), json!(2), json!(4)]
    );
    let after = s[0]["sequence"].as_u64().unwrap_or_default();
    let out = weir(&dir)
        .args(["stream", "user:2", "--json", "--since", &after.to_string()])
        .assert()
        .success();
    assert_eq!(json_lines(&out.get_output().stdout)?.len(), 2);

    // query: region flags, --after, --limit; pipes get tab-separated lines.
    let q = |args: &[&str]| -> Result<Vec<Value>> {
        let out = weir(&dir)
            .arg("query")
            .args(args)
            .arg("--json")
            .assert()
            .success();
        json_lines(&out.get_output().stdout)
    };
    assert_eq!(q(&[])?.len(), 8);
    assert_eq!(q(&["--category", "1"])?.len(), 7);
    let blobs = q(&["--kind", "0x2001"])?;
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0]["payload_encoding"], "base64");
    assert_eq!(blobs[0]["payload"], "/wByYXc=");
    assert_eq!(
        q(&["--entity-prefix", "user", "--scope", "tenant:a"])?.len(),
        2
    );
    // --clock: user:2's events have clocks 0, 1, 2 (payloads 0, 2, 4).
    let payloads = |args: &[&str]| -> Result<Vec<Value>> {
        let mut all = vec!["--entity-prefix", "user:2"];
        all.extend_from_slice(args);
        Ok(q(&all)?.iter().map(|e| e["payload"]["i"].clone()).collect())
    };
    assert_eq!(payloads(&["--clock", "1.."])?, [json!(2), json!(4)]);
    assert_eq!(payloads(&["--clock", "1"])?, [json!(2)]);
    assert_eq!(payloads(&["--clock", "..0"])?, [json!(0)]);
    assert_eq!(payloads(&["--clock", "3.."])?, Vec::<Value>::new());
    let page = q(&["--after", "3", "--limit", "2"])?;
    assert_eq!(
        page.iter()
            .map(|e| e["sequence"].clone())
            .collect::<Vec<_>>(),
        [json!(4), json!(5)]
    );
    let out = weir(&dir)
        .args(["query", "--limit", "1"])
        .assert()
        .success();
    let line = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(line.trim_end().split('\t').count(), 8, "{line}");

    // stat: daemon counters while it runs.
    let out = weir(&dir).args(["stat", "--json"]).assert().success();
    let st = &json_lines(&out.get_output().stdout)?[0];
    assert_eq!(st["daemon_running"], true);
    assert_eq!(st["visible"], 8);
    assert_eq!(st["events"], 8);
    assert_eq!(st["daemon"]["appends"], 8);
    assert_eq!(st["daemon"]["rejected"]["VersionConflict"], 1);
    weir(&dir)
        .arg("stat")
        .assert()
        .success()
        .stdout(predicates::str::contains("queue depth"));
    let out = weir(&dir).args(["stat", "--prometheus"]).assert().success();
    let prom = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for needle in [
        "weir_up 1\n",
        "weir_appends_total 8\n",
        "weir_visible_watermark 8\n",
        "weir_rejected_total{reason=\"VersionConflict\"} 1\n",
        "weir_fsync_duration_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(prom.contains(needle), "{needle} missing:\n{prom}");
    }
    let http = http_get(port)?;
    assert!(http.starts_with("HTTP/1.1 200"), "{http}");
    assert!(http.contains("weir_appends_total 8\n"), "{http}");

    // export: JSON lines with hashes, to a file.
    let file = root.path().join("out.jsonl");
    weir(&dir)
        .args([
            "export",
            "--format",
            "jsonl",
            "--entity-prefix",
            "user:1",
            "-o",
        ])
        .arg(&file)
        .assert()
        .success();
    let ex = json_lines(&std::fs::read(&file)?)?;
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1]["prev_hash"], ex[0]["event_hash"]);

    // Stopped daemon: reads still work, append says it is not running.
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20))?;
    assert_eq!(q(&[])?.len(), 8);
    let out = weir(&dir).arg("stat").assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("not running"));
    let out = weir(&dir).args(["stat", "--json"]).assert().success();
    assert_eq!(
        json_lines(&out.get_output().stdout)?[0]["daemon_running"],
        false
    );
    let out = weir(&dir).args(APPEND_ONE).assert().code(1);
    assert!(one_line_error(&out.get_output().stderr).contains("daemon is not running"));
    Ok(())
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["query", "--bogus"][..],
        &["query", "--kind", "0x1001", "--category", "1"],
        &["query", "--kind", "0x10000"],
        &["get"],
        &["query", "--entity-prefix", ""],
        &["query", "--clock", "3..1"],
        &["export", "--clock", "0x1_0000_0000"],
        &["append", "--payload-json", "1"],
        &["append", "--idempotency-key", "k"],
        &["export", "--format", "csv"],
        &["frobnicate"],
    ] {
        let out = assert_cmd::Command::new(WEIR).args(args).assert().code(2);
        assert!(!out.get_output().stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn missing_data_dir_exits_1_with_one_line() -> Result<()> {
    let root = tempfile::tempdir()?;
    let gone = root.path().join("nope");
    for args in [
        &["query"][..],
        &["stat"],
        &["verify"],
        &["tail"],
        &APPEND_ONE,
    ] {
        let out = weir(&gone).args(args).assert().code(1);
        let err = one_line_error(&out.get_output().stderr);
        assert!(err.contains("no data directory"), "{args:?}: {err}");
    }
    // A directory that no daemon ever served.
    let out = weir(root.path()).arg("query").assert().code(1);
    assert!(one_line_error(&out.get_output().stderr).contains("not a weir data directory"));
    // --data-dir wins over $WEIR_DATA_DIR.
    let out = weir(root.path())
        .args(["stat", "--data-dir"])
        .arg(&gone)
        .assert()
        .code(1);
    assert!(one_line_error(&out.get_output().stderr).contains("nope"));
    Ok(())
}

#[test]
fn an_export_appends_back_with_its_ids_once() -> Result<()> {
    let (a_root, b_root) = (weir_tests::temp_root()?, weir_tests::temp_root()?);
    let a = daemon(a_root.path(), "")?;
    for payload in [r#"{"n":1}"#, r#"{"n":2}"#] {
        weir(&a.data_dir)
            .args([
                "append", "--entity", "user:1", "--scope", "s", "--kind", "0x1001",
            ])
            .args(["--payload-json", payload])
            .assert()
            .success();
    }
    let out = weir(&a.data_dir).arg("export").assert().success();
    let export = out.get_output().stdout.clone();
    let b = daemon(b_root.path(), "")?;
    weir(&b.data_dir)
        .arg("append")
        .write_stdin(export.clone())
        .assert()
        .success();
    // Ids, correlation ids and payloads come back; sequence, clock and
    // time are the new store's.
    let fields = |dir: &std::path::Path| -> Result<Vec<Value>> {
        let out = weir(dir).args(["export"]).assert().success();
        Ok(json_lines(&out.get_output().stdout)?
            .into_iter()
            .map(|e| json!([e["event_id"], e["correlation_id"], e["payload"], e["clock"]]))
            .collect())
    };
    let restored = fields(&b.data_dir)?;
    assert_eq!(restored, fields(&a.data_dir)?);
    assert_eq!(restored.len(), 2);
    // The same export again: every event refused as a duplicate id.
    let out = weir(&b.data_dir)
        .arg("append")
        .write_stdin(export)
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("DuplicateEventId"), "{err}");
    assert_eq!(fields(&b.data_dir)?.len(), 2);
    Ok(())
}
