//! weir-bench: weir against its peers, side by side, one command, one table.
//!
//! `cargo run --release -p weir-bench -- [--quick] [--events N] [--only W1,W3]
//! [--json FILE] [--runs R] [--peers weir,sqlite,...] [--big|--no-big] [--dir D]`

mod common;
mod harness;
mod peers;
mod report;
mod worker;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use harness::{Opts, Row};
use peers::Peer;

const USAGE: &str = "usage: weir-bench [--quick] [--events N] \
[--only W1,W2,W2b,W3,W4,W5,W6,W7,W8,W9,W10] [--json FILE] [--runs R (>=3)] \
[--peers weir,weir-inproc,batpak,sqlite,lmdb,redis] [--big|--no-big] [--dir D]";

fn parse_args(args: &[String]) -> Result<(Opts, Option<PathBuf>)> {
    let mut quick = false;
    let mut events = None;
    let mut only = None;
    let mut json = None;
    let mut runs = 3;
    let mut peers = peers::ALL.to_vec();
    let mut big = None;
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => quick = true,
            "--events" => events = Some(val()?.replace('_', "").parse::<u64>()?),
            "--only" => only = Some(val()?.split(',').map(|s| s.trim().to_string()).collect()),
            "--json" => json = Some(PathBuf::from(val()?)),
            "--runs" => runs = val()?.parse()?,
            "--peers" => {
                peers = val()?
                    .split(',')
                    .map(|s| Peer::parse(s.trim()))
                    .collect::<Result<_>>()?
            }
            "--big" => big = Some(true),
            "--no-big" => big = Some(false),
            "--dir" => dir = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if runs < 3 {
        bail!("--runs must be at least 3");
    }
    let events = events.unwrap_or(if quick { 200_000 } else { 1_000_000 });
    let opts = Opts {
        quick,
        events,
        only,
        json,
        runs,
        peers,
        big: big.unwrap_or(!quick),
        root: PathBuf::new(),
        redis_socket: None,
    };
    Ok((opts, dir))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "Machine: {cpu}, {cores} cores, {}, Linux {}; run {date}",
        mem.replace("MemTotal:", "RAM")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        kernel.trim()
    )
}

/// Stops the suite's redis-server however the run ends.
struct RedisGuard;
impl Drop for RedisGuard {
    fn drop(&mut self) {
        peers::redis::stop_server();
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(worker::SUBCOMMAND) {
        return worker::main(args.get(1).context("worker job")?);
    }
    let (mut opts, dir) = parse_args(&args)?;
    let tmp = match &dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("weir-bench-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new().prefix("weir-bench-").tempdir()?,
    };
    opts.root = tmp.path().to_path_buf();
    let _redis_guard = RedisGuard;
    if opts.peers.contains(&Peer::Weir) {
        match peers::weir_peer::weir_bin() {
            Ok(b) => eprintln!("weir daemon binary: {}", b.display()),
            Err(e) => eprintln!("weir daemon unavailable, its write cells will say so: {e:#}"),
        }
    }
    if opts.peers.contains(&Peer::Redis) {
        match peers::redis::start_server(&opts.root.join("redis-server")) {
            Ok(sock) => opts.redis_socket = Some(sock),
            Err(e) => {
                eprintln!("redis unavailable, its cells will say so: {e:#}");
            }
        }
    }
    let t = Instant::now();
    let command = format!("cargo run --release -p weir-bench -- {}", args.join(" "));
    eprintln!(
        "weir-bench: {command}\n  stores under {}",
        opts.root.display()
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut built = BTreeMap::new();
    let step = |name: &str| eprintln!("[{:>6.1}s] {name}", t.elapsed().as_secs_f64());
    if opts.wants("W1") {
        step("W1");
        workloads::w1(&opts, &mut rows);
    }
    if opts.wants("W2") {
        step("W2");
        workloads::w2(&opts, &mut rows, true);
    }
    if opts.wants("W2b") {
        step("W2b");
        workloads::w2(&opts, &mut rows, false);
    }
    if opts.wants("W7") {
        step("W7");
        workloads::w7(&opts, &mut rows);
    }
    if ["W3", "W4", "W5", "W6"].iter().any(|w| opts.wants(w)) {
        step("W3-W6");
        workloads::w3_to_w6(&opts, &mut built, &mut rows);
    }
    if opts.wants("W10") {
        step("W10");
        workloads::w10(&opts, &mut built, &mut rows);
    }
    if opts.wants("W8") {
        step("W8");
        workloads::w8(&opts, &mut built, &mut rows);
    }
    // Last: it deletes and rebuilds weir's index (other rows read it).
    if opts.wants("W9") {
        step("W9");
        workloads::w9(&opts, &mut built, &mut rows);
    }
    step("done");
    let m = machine();
    let md = report::markdown(&opts, &rows, &m);
    println!("{md}");
    println!("Command: `{command}` ({:.0} s)", t.elapsed().as_secs_f64());
    let js = report::json(&opts, &rows, &m, &command);
    let js_text = serde_json::to_string_pretty(&js)?;
    match &opts.json {
        Some(f) => std::fs::write(f, &js_text)?,
        None => println!("\n```json\n{js_text}\n```"),
    }
    Ok(())
}
