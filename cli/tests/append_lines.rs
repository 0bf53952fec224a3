//! `weir append` from stdin stores or refuses each line on its own, not as
//! an all-or-nothing batch: a refused line in the middle of one `--batch`
//! is reported and the lines around it are stored; `--help` says so.

mod common;

use anyhow::{Result, ensure};
use common::{daemon, json_lines, weir};
use serde_json::json;

#[test]
fn a_refused_line_leaves_the_lines_around_it_stored() -> Result<()> {
    let root = weir_tests::temp_root()?;
    let d = daemon(root.path(), "")?;
    let dir = d.data_dir.clone();
    // Line 2's entity has no event, so its expected clock 5 is a conflict.
    let lines = [
        json!({"entity": "a", "scope": "s", "kind": "0x1001", "payload": 1}),
        json!({"entity": "b", "scope": "s", "kind": "0x1001", "payload": 2, "expect_version": 5}),
        json!({"entity": "c", "scope": "s", "kind": "0x1001", "payload": 3}),
    ]
    .map(|l| l.to_string())
    .join("\n");
    let out = weir(&dir)
        .args(["append", "--batch", "3"])
        .write_stdin(lines)
        .output()?;
    ensure!(out.status.code() == Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        stdout.contains("appended 2 events (0 replayed, 1 failed)"),
        "{stdout}"
    );
    ensure!(
        stderr.contains("line 2: ") && stderr.contains("VersionConflict"),
        "{stderr}"
    );

    let out = weir(&dir).args(["query", "--json"]).output()?;
    ensure!(out.status.success(), "{out:?}");
    let stored: Vec<_> = json_lines(&out.stdout)?
        .iter()
        .map(|e| e["entity"].clone())
        .collect();
    ensure!(stored == [json!("a"), json!("c")], "{stored:?}");

    // The help no longer promises a batch the lines are not.
    let out = weir(&dir).args(["append", "--help"]).output()?;
    let help = String::from_utf8(out.stdout)?;
    ensure!(
        help.contains("stored or refused on its own") && !help.contains("per request batch"),
        "{help}"
    );
    drop(d);
    Ok(())
}
