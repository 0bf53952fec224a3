//! The display commands (`stream`, `query`, `get`, `tail`) show a msgpack
//! payload whose map keys are not sorted (a client's struct with fields out
//! of alphabetical order) as JSON in its own key order, `msgpack-display`;
//! `export` still writes it as base64, which `append` stores byte for byte.

mod common;

use anyhow::{Result, ensure};
use common::{daemon, json_lines, weir};
use serde_json::json;

/// `{"order": 1, "amount_cents": 5}` as `rmp_serde::to_vec_named` writes
/// `struct Unsorted { order, amount_cents }`.
const UNSORTED: &[u8] = b"\x82\xa5order\x01\xacamount_cents\x05";
/// A msgpack bin: no JSON form.
const BIN: &[u8] = b"\xc4\x02\x01\x02";

#[test]
fn unsorted_msgpack_is_shown_as_json_and_exported_byte_exact() -> Result<()> {
    let root = weir_tests::temp_root()?;
    let d = daemon(root.path(), "")?;
    let dir = d.data_dir.clone();
    for (name, bytes) in [("unsorted", UNSORTED), ("bin", BIN)] {
        let file = root.path().join(name);
        std::fs::write(&file, bytes)?;
        weir(&dir)
            .args([
                "append", "--entity", "order:1", "--scope", "s", "--kind", "0x1001",
            ])
            .arg("--payload-file")
            .arg(&file)
            .arg("--raw")
            .assert()
            .success();
    }

    let out = weir(&dir).args(["stream", "order:1", "--json"]).output()?;
    ensure!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout.clone())?;
    ensure!(
        text.contains(r#""payload":{"order":1,"amount_cents":5}"#),
        "not in the payload's key order: {text}"
    );
    let lines = json_lines(&out.stdout)?;
    ensure!(lines[0]["payload_encoding"] == "msgpack-display", "{text}");
    ensure!(lines[1]["payload_encoding"] == "base64", "{text}");
    ensure!(lines[1]["payload"] == "xAIBAg==", "{text}");

    // The table (a pipe: tab-separated) of query, and tail.
    for args in [&["query"][..], &["tail"]] {
        let out = weir(&dir).args(args).output()?;
        ensure!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout)?;
        let payloads: Vec<_> = text.lines().filter_map(|l| l.rsplit('\t').next()).collect();
        ensure!(
            payloads == [r#"{"order":1,"amount_cents":5}"#, "base64:xAIBAg=="],
            "{args:?}: {text}"
        );
    }

    // export keeps the byte-exact rule.
    let out = weir(&dir).arg("export").output()?;
    ensure!(out.status.success(), "{out:?}");
    let lines = json_lines(&out.stdout)?;
    let exported: Vec<_> = lines
        .iter()
        .map(|e| json!([e["payload_encoding"], e["payload"]]))
        .collect();
    ensure!(
        exported
            == [
                json!(["base64", "gqVvcmRlcgGsYW1vdW50X2NlbnRzBQ=="]),
                json!(["base64", "xAIBAg=="])
            ],
        "{exported:?}"
    );

    // A display line fed to `weir append` is refused, not stored with other
    // bytes (sorted keys); so is an encoding append does not know (a typo
    // would have stored the base64 text as a msgpack string).
    // Without its ids, which this store holds already.
    let mut first = json_lines(text.as_bytes())?.remove(0);
    for key in ["event_id", "correlation_id"] {
        first.as_object_mut().map(|o| o.remove(key));
    }
    let display = first.to_string();
    let bad = display.replace("msgpack-display", "bas64");
    for (line, says) in [
        (display, "weir export"),
        (bad, "is not one weir append reads"),
    ] {
        let out = weir(&dir)
            .args(["append", "--entity", "copy:1", "--scope", "s"])
            .write_stdin(format!("{line}\n"))
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{line} was appended: {err}");
        ensure!(err.contains(says), "{line}: {err}");
    }
    let out = weir(&dir).args(["stream", "copy:1", "--json"]).output()?;
    ensure!(out.stdout.is_empty(), "stored: {out:?}");
    drop(d);
    Ok(())
}
