//! Suite options, result cells and the A B A B run loop.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::common::{Summary, summarize};
use crate::peers::{Ctx, Peer};

#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    /// Events in the read store (W3-W6, W8).
    pub events: u64,
    pub only: Option<Vec<String>>,
    pub json: Option<PathBuf>,
    pub runs: usize,
    pub peers: Vec<Peer>,
    /// W6 also at 10 × events (full runs).
    pub big: bool,
    pub root: PathBuf,
    pub redis_socket: Option<PathBuf>,
}

impl Opts {
    pub fn wants(&self, w: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x.eq_ignore_ascii_case(w)))
    }

    /// Write cells: (untimed warm-up, timed window).
    pub fn write_window(&self) -> (std::time::Duration, std::time::Duration) {
        use std::time::Duration;
        if self.quick {
            (Duration::from_millis(400), Duration::from_millis(1000))
        } else {
            (Duration::from_secs(1), Duration::from_secs(2))
        }
    }

    /// Longest a read store may take to build before its cells say n/a.
    pub fn build_cap(&self) -> std::time::Duration {
        std::time::Duration::from_secs(if self.quick { 120 } else { 300 })
    }

    pub fn ctx(&self, peer: Peer, dir: PathBuf, durable: bool, redis_db: u32) -> Ctx {
        Ctx {
            peer,
            dir,
            redis_socket: self.redis_socket.clone(),
            redis_db,
            durable,
            socket: None,
        }
    }
}

/// One peer's figures in one row.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub values: Vec<f64>,
    /// Set when the cell has no number: "n/a: why", "REFUSED: why" or "error: why".
    pub status: Option<String>,
    /// Configuration the worker read back from the live store.
    pub verified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub label: String,
    pub unit: String,
    pub higher_is_better: bool,
    pub cells: BTreeMap<String, Cell>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Row {
    pub fn new(id: &str, label: &str, unit: &str, higher_is_better: bool) -> Row {
        Row {
            id: id.into(),
            label: label.into(),
            unit: unit.into(),
            higher_is_better,
            cells: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// The median of `peer`'s cell, if it has one.
    pub fn median(&self, peer: Peer) -> Option<f64> {
        self.cells
            .get(peer.name())
            .and_then(|c| c.summary.as_ref())
            .map(|s| s.median)
    }

    pub fn finalize(&mut self) {
        for c in self.cells.values_mut() {
            c.summary = if c.status.is_none() {
                summarize(&c.values)
            } else {
                None
            };
        }
    }
}

/// What one measurement of one peer returns: one value per row of the group,
/// plus the configuration read back (None: nothing to verify, e.g. a reader).
pub struct Measured {
    pub values: Vec<f64>,
    pub verified: Option<String>,
}

/// Check a worker's read-back configuration against what the row claims.
pub fn check_claim(peer: Peer, durable: bool, verified: &[String]) -> Result<String> {
    let claim = peer.claim(durable);
    for v in verified {
        if *v != claim {
            bail!("REFUSED: row claims `{claim}` but the store reports `{v}`");
        }
    }
    Ok(claim)
}

/// Run `measure` for every peer, interleaved A B A B … for `runs` rounds, and
/// fill the rows of the group (all rows share the peers' statuses).
pub fn run_group(
    opts: &Opts,
    rows: &mut [Row],
    mut measure: impl FnMut(Peer, usize) -> Result<Measured>,
) {
    for row in rows.iter_mut() {
        for p in &opts.peers {
            row.cells.insert(
                p.name().into(),
                Cell {
                    values: vec![],
                    status: None,
                    verified: None,
                    summary: None,
                },
            );
        }
    }
    for run in 0..opts.runs {
        for &p in &opts.peers {
            if rows[0].cells[p.name()].status.is_some() {
                continue;
            }
            let res = measure(p, run);
            for (k, row) in rows.iter_mut().enumerate() {
                let cell = row.cells.get_mut(p.name()).expect("cell");
                match &res {
                    Ok(m) => {
                        cell.values.push(m.values[k]);
                        if m.verified.is_some() {
                            cell.verified.clone_from(&m.verified);
                        }
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        cell.status =
                            Some(if msg.starts_with("n/a") || msg.starts_with("REFUSED") {
                                msg
                            } else {
                                format!("error: {msg}")
                            });
                    }
                }
            }
            if let Err(e) = &res {
                eprintln!("  {} {}: {e:#}", rows[0].id, p.name());
            }
        }
    }
    for row in rows.iter_mut() {
        row.finalize();
    }
}
