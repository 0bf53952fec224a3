//! A reader process for the multi-process tests. Modes:
//!
//! - `prefix DATA_DIR MILLIS`: for MILLIS, repeatedly takes a snapshot and
//!   checks that its answer is exactly the sequences below `visible` (no gap,
//!   nothing past it), that `visible` sits on a batch boundary, and that each
//!   entity's clocks are dense; prints `checks N` or exits 1 naming the
//!   violation.
//! - `lookup DATA_DIR`: reads `ID SEQ` lines from stdin and answers each
//!   with `found` or `missing` (read-your-writes from another process).
//! - `follow DATA_DIR N SECS`: subscribes from sequence 0 and prints each
//!   sequence as it becomes visible, until N were seen (exit 0) or SECS
//!   passed (exit 1).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};
use weir::{EventId, Reader, Region};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let code = match arg(0).as_str() {
        "prefix" => prefix(&arg(1), arg(2).parse().unwrap_or(1000)),
        "lookup" => lookup(&arg(1)),
        "follow" => follow(
            &arg(1),
            arg(2).parse().unwrap_or(1),
            arg(3).parse().unwrap_or(20),
        ),
        other => {
            eprintln!("unknown mode {other:?}");
            2
        }
    };
    std::process::exit(code);
}

fn open(dir: &str) -> Reader {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match Reader::open(dir) {
            Ok(r) => return r,
            Err(e) if Instant::now() > until => {
                eprintln!("open: {e}");
                std::process::exit(1);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn prefix(dir: &str, millis: u64) -> i32 {
    let reader = open(dir);
    let until = Instant::now() + Duration::from_millis(millis);
    let mut checks = 0u64;
    while Instant::now() < until {
        let snap = reader.snapshot();
        let w = snap.visible();
        let all = match snap.query(&Region::all()) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("query: {e}");
                return 1;
            }
        };
        let seqs: Vec<u64> = all.iter().map(|e| e.sequence()).collect();
        if seqs.len() as u64 != w || seqs.iter().enumerate().any(|(i, s)| *s != i as u64) {
            eprintln!(
                "not a prefix: visible {w}, got {} events, first gap near {:?}",
                seqs.len(),
                seqs.iter().enumerate().find(|(i, s)| **s != *i as u64)
            );
            return 1;
        }
        if let Some(last) = all.last()
            && !last.is_batch_end()
        {
            eprintln!(
                "part of a batch is visible: sequence {} is not a batch end, visible {w}",
                last.sequence()
            );
            return 1;
        }
        let mut clocks: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
        for e in &all {
            let next = clocks.entry(e.entity()).or_insert(0);
            if e.clock() != *next {
                eprintln!(
                    "entity {} jumps from clock {} to {}",
                    e.entity(),
                    *next,
                    e.clock()
                );
                return 1;
            }
            *next += 1;
        }
        checks += 1;
    }
    println!("checks {checks}");
    0
}

fn lookup(dir: &str) -> i32 {
    let reader = open(dir);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return 1 };
        let mut parts = line.split_whitespace();
        let (Some(id), Some(seq)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(id), Ok(seq)) = (id.parse::<EventId>(), seq.parse::<u64>()) else {
            return 2;
        };
        let answer = match reader.get(id) {
            Ok(Some(e)) if e.sequence() == seq => "found",
            Ok(Some(_)) => "wrong-sequence",
            Ok(None) => "missing",
            Err(_) => "error",
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
    }
    0
}

fn follow(dir: &str, n: u64, secs: u64) -> i32 {
    let reader = open(dir);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sub = reader.subscribe(Region::all(), 0);
    let mut out = std::io::stdout().lock();
    let mut seen = 0;
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("saw {seen} of {n} events before the deadline");
            return 1;
        }
        match sub.next_timeout(left.min(Duration::from_millis(500))) {
            Ok(Some(e)) => {
                let _ = writeln!(out, "{}", e.sequence());
                let _ = out.flush();
                seen += 1;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("subscribe: {e}");
                return 1;
            }
        }
    }
    0
}
