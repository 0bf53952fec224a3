//! The markdown table, the configuration listing and the JSON file.

use std::fmt::Write as _;

use serde_json::json;

use crate::harness::{Opts, Row};
use crate::peers::{ALL, Peer};

pub(crate) fn human(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell_text(row: &Row, p: Peer) -> String {
    match row.cells.get(p.name()) {
        None => "—".into(),
        Some(c) => match (&c.status, &c.summary) {
            (Some(s), _) => s.replace('|', "/"),
            (None, Some(s)) => format!("{} ({}–{})", human(s.median), human(s.min), human(s.max)),
            (None, None) => "—".into(),
        },
    }
}

fn ratio(row: &Row, of: Peer, p: Peer) -> String {
    match (row.median(of), row.median(p)) {
        (Some(w), Some(x)) if x > 0.0 && w > 0.0 => format!("{w:.2}", w = w / x),
        _ => "n/a".into(),
    }
}

pub fn markdown(opts: &Opts, rows: &[Row], machine: &str) -> String {
    let peers: Vec<Peer> = ALL.into_iter().filter(|p| opts.peers.contains(p)).collect();
    let others: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|p| !matches!(p, Peer::Weir | Peer::WeirInProc))
        .collect();
    // Issue 2 compares the in-process writer with batpak.
    let inproc = peers.contains(&Peer::WeirInProc) && peers.contains(&Peer::Batpak);
    let mut s = String::new();
    let _ = writeln!(s, "{machine}\n");
    let _ = write!(s, "| workload | unit |");
    for p in &peers {
        let _ = write!(s, " {} |", p.label());
    }
    for p in &others {
        let _ = write!(s, " weir/{} |", p.name());
    }
    if inproc {
        let _ = write!(s, " in-process/batpak |");
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---|---|");
    for _ in 0..peers.len() + others.len() + usize::from(inproc) {
        let _ = write!(s, "---|");
    }
    let _ = writeln!(s);
    for r in rows {
        let dir = if r.higher_is_better { "↑" } else { "↓" };
        let _ = write!(s, "| {} {} | {} {dir} |", r.id, r.label, r.unit);
        for p in &peers {
            let _ = write!(s, " {} |", cell_text(r, *p));
        }
        for p in &others {
            let _ = write!(s, " {} |", ratio(r, Peer::Weir, *p));
        }
        if inproc {
            let _ = write!(s, " {} |", ratio(r, Peer::WeirInProc, Peer::Batpak));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "\nCells: median (min–max) of {} runs, peers interleaved A B A B; ↑ higher is better, \
         ↓ lower is better; ratio = weir median / peer median (for ↓ rows below 1 is better); \
         in-process/batpak = weir (in-process) median / batpak median.",
        opts.runs
    );
    let mut notes: Vec<String> = Vec::new();
    for r in rows {
        for n in &r.notes {
            let line = format!("{}: {n}", r.id);
            if !notes.contains(&line) {
                notes.push(line);
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\nNotes:");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(
        s,
        "\nPeer configuration (claimed config is read back from each live store; a row whose read-back differs is refused):"
    );
    for p in &peers {
        let _ = writeln!(
            s,
            "- **{}**: {}. Durable rows: `{}`; W2b: `{}`.",
            p.label(),
            p.describe(),
            p.claim(true),
            p.claim(false)
        );
    }
    s
}

pub fn json(opts: &Opts, rows: &[Row], machine: &str, command: &str) -> serde_json::Value {
    let configs: serde_json::Map<String, serde_json::Value> = opts
        .peers
        .iter()
        .map(|p| {
            (
                p.name().to_string(),
                json!({
                    "describe": p.describe(),
                    "claim_durable": p.claim(true),
                    "claim_non_durable": p.claim(false),
                }),
            )
        })
        .collect();
    json!({
        "machine": machine,
        "command": command,
        "quick": opts.quick,
        "events": opts.events,
        "runs": opts.runs,
        "rows": rows,
        "configs": configs,
    })
}
