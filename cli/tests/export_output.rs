//! `weir export -o FILE` replaces FILE only with a complete export: an
//! export that fails on a damaged frame leaves the previous FILE as it was
//! and no temporary file beside it; `-o /dev/null` still works.

mod common;

use anyhow::{Context, Result, ensure};
use common::{stopped_after, weir};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The files in `dir`, sorted.
fn names(dir: &Path) -> Result<Vec<String>> {
    let mut v = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}

#[test]
fn a_failed_export_leaves_the_previous_file() -> Result<()> {
    let (root, dir) = stopped_after(
        (0..20)
            .map(|i| {
                format!("{{\"entity\":\"e:{i}\",\"scope\":\"s\",\"kind\":4097,\"payload\":{i}}}\n")
            })
            .collect(),
    )?;

    let out_dir = root.path().join("out");
    std::fs::create_dir(&out_dir)?;
    let backup = out_dir.join("backup.jsonl");
    weir(&dir)
        .args(["export", "-o"])
        .arg(&backup)
        .assert()
        .success();
    let good = std::fs::read(&backup)?;
    ensure!(good.iter().filter(|b| **b == b'\n').count() == 20);
    weir(&dir)
        .args(["export", "-o", "/dev/null"])
        .assert()
        .success();

    // Flip the last payload byte of the first frame (right after the 64-byte
    // segment header; entity and scope lengths at 112 and 114 of its 184-byte
    // header, payload length at 108): its CRC no longer matches.
    let seg = std::fs::read_dir(dir.join("segments"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .context("no segment")?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)?;
    let mut head = [0u8; 184];
    f.read_exact_at(&mut head, 64)?;
    let u16_at = |i: usize| usize::from(u16::from_le_bytes([head[i], head[i + 1]]));
    let payload = u32::from_le_bytes(head[108..112].try_into()?) as usize;
    let at = 64 + (184 + u16_at(112) + u16_at(114) + payload - 1) as u64;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at)?;
    f.write_all_at(&[b[0] ^ 0x01], at)?;

    weir(&dir)
        .args(["export", "-o"])
        .arg(&backup)
        .assert()
        .code(1);
    ensure!(
        std::fs::read(&backup)? == good,
        "the failed export changed the previous one"
    );
    ensure!(
        names(&out_dir)? == ["backup.jsonl"],
        "{:?}",
        names(&out_dir)?
    );
    Ok(())
}
