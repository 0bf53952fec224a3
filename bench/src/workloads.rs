//! The workloads W1-W8, each written once against `peers::{Writer, Reader}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::common::{BATCH, make_event, percentile};
use crate::harness::{Measured, Opts, Row, check_claim, run_group};
use crate::peers::{self, Ctx, Peer, WriterModel};
use crate::worker::{Job, Proc, Role, run_group as run_workers};

/// Redis logical databases: 0 holds read stores, 1 scratch for write runs.
const REDIS_READ_DB: u32 = 0;
const REDIS_SCRATCH_DB: u32 = 1;

fn scratch(opts: &Opts, peer: Peer, name: &str, durable: bool) -> Result<Ctx> {
    let dir = opts.root.join(peer.name()).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let ctx = opts.ctx(peer, dir, durable, REDIS_SCRATCH_DB);
    if peer == Peer::Redis {
        peers::redis::reset(&ctx)?;
        peers::redis::prepare(&ctx)?;
    }
    if peer == Peer::Sqlite {
        // Create the schema and switch to WAL before many processes open it.
        peers::open_writer(&ctx)?.0.finish()?;
    }
    Ok(ctx)
}

fn cleanup(ctx: &Ctx) {
    let _ = std::fs::remove_dir_all(&ctx.dir);
    if ctx.peer == Peer::Redis {
        let _ = peers::redis::reset(ctx);
    }
}

fn lat_of(outputs: &[Value]) -> Vec<f64> {
    outputs
        .iter()
        .filter_map(|o| o["lat_us"].as_array())
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

/// W1: durable single appends from `clients` client processes.
pub fn w1(opts: &Opts, out: &mut Vec<Row>) {
    for clients in [1usize, 8, 64] {
        let total: u64 = if opts.quick { 400 } else { 2_000 };
        let per = (total / clients as u64).max(if opts.quick { 8 } else { 40 });
        let mut rows = [
            Row::new(
                "W1",
                &format!("durable single appends, {clients} client(s)"),
                "events/s",
                true,
            ),
            Row::new(
                "W1",
                &format!("durable append p99 latency, {clients} client(s)"),
                "µs",
                false,
            ),
        ];
        run_group(opts, &mut rows, |peer, run| {
            let ctx = scratch(opts, peer, &format!("w1-{clients}-{run}"), true)?;
            let jobs: Vec<Job> = match peer.writer_model() {
                WriterModel::SingleProcess => vec![Job {
                    ctx: ctx.clone(),
                    role: Role::Append {
                        threads: clients,
                        per_thread: per,
                        base: 0,
                    },
                }],
                WriterModel::MultiProcess => (0..clients as u64)
                    .map(|c| Job {
                        ctx: ctx.clone(),
                        role: Role::Append {
                            threads: 1,
                            per_thread: per,
                            base: c * per,
                        },
                    })
                    .collect(),
            };
            let g = run_workers(&jobs);
            cleanup(&ctx);
            let g = g?;
            let claim = check_claim(peer, true, &g.verified)?;
            let mut lat = lat_of(&g.outputs);
            let rate = (per * clients as u64) as f64 / g.wall.as_secs_f64();
            Ok(Measured {
                values: vec![rate, percentile(&mut lat, 99.0)],
                verified: Some(claim),
            })
        });
        for r in &mut rows {
            if clients > 1 {
                r.notes
                    .push("batpak: threads in one process (it admits one process per dir); weir: threads over the in-process Store (socket Client not wired yet)".into());
            }
        }
        out.extend(rows);
    }
}

/// W2 (durable) and W2b (durability off): batches of 256 from one client.
pub fn w2(opts: &Opts, out: &mut Vec<Row>, durable: bool) {
    let batches: u64 = match (opts.quick, durable) {
        (true, true) => 100,
        (true, false) => 400,
        (false, true) => 200,
        (false, false) => 2_000,
    };
    let (id, label) = if durable {
        ("W2", "durable batches of 256, 1 client")
    } else {
        ("W2b", "batches of 256, durability off (CPU ceiling)")
    };
    let mut rows = [Row::new(id, label, "events/s", true)];
    run_group(opts, &mut rows, |peer, run| {
        let ctx = scratch(opts, peer, &format!("{id}-{run}"), durable)?;
        let n = batches * BATCH as u64;
        let g = run_workers(&[Job {
            ctx: ctx.clone(),
            role: Role::Batches { events: n, base: 0 },
        }]);
        cleanup(&ctx);
        let g = g?;
        let claim = check_claim(peer, durable, &g.verified)?;
        Ok(Measured {
            values: vec![n as f64 / g.wall.as_secs_f64()],
            verified: Some(claim),
        })
    });
    out.extend(rows);
}

/// Build (once) the read store of `n` events for `peer`; returns its context.
pub fn read_store(
    opts: &Opts,
    built: &mut BTreeMap<(Peer, u64), Result<Ctx, String>>,
    peer: Peer,
    n: u64,
) -> Result<Ctx> {
    if let Some(r) = built.get(&(peer, n)) {
        return r.clone().map_err(|e| anyhow::anyhow!(e));
    }
    let r = build(opts, peer, n).map_err(|e| format!("{e:#}"));
    built.insert((peer, n), r.clone());
    r.map_err(|e| anyhow::anyhow!(e))
}

fn build(opts: &Opts, peer: Peer, n: u64) -> Result<Ctx> {
    let dir: PathBuf = opts.root.join(peer.name()).join(format!("read-{n}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench-build"), b"")?;
    // Redis keeps one read store per server: db 0 for the main size, db 2 for 10×.
    let db = if n == opts.events { REDIS_READ_DB } else { 2 };
    let mut ctx = opts.ctx(peer, dir, false, db);
    if peer == Peer::Redis {
        peers::redis::reset(&ctx)?;
        peers::redis::prepare(&ctx)?;
    }
    let t = Instant::now();
    eprintln!("  building {} store of {n} events ...", peer.name());
    let (mut w, _) = peers::open_writer(&ctx)?;
    let mut i = 0;
    while i < n {
        let m = (n - i).min(BATCH as u64);
        let evs: Vec<_> = (i..i + m).map(make_event).collect();
        w.append_batch(&evs)?;
        i += m;
    }
    w.finish()?;
    eprintln!(
        "  built {} store of {n} events in {:.1} s",
        peer.name(),
        t.elapsed().as_secs_f64()
    );
    ctx.durable = true;
    Ok(ctx)
}

/// W3-W6: one reader process per run: open + first lookup (W6), then
/// lookups (W3), entity streams (W4) and kind counts (W5).
pub fn w3_to_w6(
    opts: &Opts,
    built: &mut BTreeMap<(Peer, u64), Result<Ctx, String>>,
    out: &mut Vec<Row>,
) {
    let n = opts.events;
    let per = n / 10_000;
    let mut rows = [
        Row::new(
            "W3",
            &format!("point lookup by random id, {n} events"),
            "lookups/s",
            true,
        ),
        Row::new(
            "W4",
            &format!("one entity's stream (~{per} events)"),
            "events/s",
            true,
        ),
        Row::new(
            "W5",
            &format!("count of one kind over {n} events"),
            "counts/s",
            true,
        ),
        Row::new(
            "W6",
            &format!("open + first lookup, {n} events"),
            "ms",
            false,
        ),
    ];
    let phase = if opts.quick { 0.5 } else { 2.0 };
    run_group(opts, &mut rows, |peer, _run| {
        let ctx = read_store(opts, built, peer, n)?;
        let g = run_workers(&[Job {
            ctx,
            role: Role::Query {
                n,
                phase_secs: phase,
                phases: true,
            },
        }])?;
        let o = &g.outputs[0];
        let f = |k: &str| o[k].as_f64().with_context(|| format!("missing {k}"));
        Ok(Measured {
            values: vec![
                f("lookups_per_s")?,
                f("stream_events_per_s")?,
                f("counts_per_s")?,
                f("open_first_ms")?,
            ],
            verified: None,
        })
    });
    for r in &mut rows {
        r.notes
            .push("reader in its own process; page cache warm (built just before)".into());
    }
    out.extend(rows);
    if opts.big {
        let big = n * 10;
        let mut rows = [Row::new(
            "W6",
            &format!("open + first lookup, {big} events"),
            "ms",
            false,
        )];
        run_group(opts, &mut rows, |peer, _run| {
            let ctx = read_store(opts, built, peer, big)?;
            let g = run_workers(&[Job {
                ctx,
                role: Role::Query {
                    n: big,
                    phase_secs: 0.0,
                    phases: false,
                },
            }])?;
            Ok(Measured {
                values: vec![
                    g.outputs[0]["open_first_ms"]
                        .as_f64()
                        .context("open_first_ms")?,
                ],
                verified: None,
            })
        });
        out.extend(rows);
    }
}

/// W7: visibility latency, writer ack -> woken reader in another process.
pub fn w7(opts: &Opts, out: &mut Vec<Row>) {
    let k: u64 = if opts.quick { 200 } else { 1_000 };
    let mut rows = [
        Row::new(
            "W7",
            "visibility latency p50, ack -> woken reader",
            "µs",
            false,
        ),
        Row::new(
            "W7",
            "visibility latency p99, ack -> woken reader",
            "µs",
            false,
        ),
    ];
    run_group(opts, &mut rows, |peer, run| {
        if peer == Peer::Batpak {
            bail!("n/a: batpak is single-process; no reader in another process");
        }
        let ctx = scratch(opts, peer, &format!("w7-{run}"), true)?;
        let res = (|| {
            // Writer first (it creates the store), then the reader.
            let mut pacer = Proc::spawn(&Job {
                ctx: ctx.clone(),
                role: Role::Pacer { k, gap_us: 2_000 },
            })?;
            let verified = pacer.ready()?;
            let mut waiter = Proc::spawn(&Job {
                ctx: ctx.clone(),
                role: Role::Waiter { k },
            })?;
            waiter.ready()?;
            waiter.go()?;
            pacer.go()?;
            let acks = pacer.done()?;
            let seen = waiter.done()?;
            pacer.finish()?;
            waiter.finish()?;
            let claim = check_claim(peer, true, &[verified])?;
            let acks: Vec<f64> = acks["acks"]
                .as_array()
                .context("acks")?
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            let mut lat = Vec::new();
            for s in seen["seen"].as_array().context("seen")? {
                let i = s[0].as_u64().context("i")? as usize;
                let t = s[1].as_f64().context("t")?;
                // Signed: negative when the reader woke before the writer had its ack.
                lat.push((t - acks[i]) / 1e3);
            }
            Ok(Measured {
                values: vec![percentile(&mut lat, 50.0), percentile(&mut lat, 99.0)],
                verified: Some(claim),
            })
        })();
        cleanup(&ctx);
        res
    });
    for r in &mut rows {
        r.notes.push(
            "sqlite, lmdb: the reader polls every 100 µs (no cross-process wakeup); \
             redis: XREAD BLOCK; negative = the reader woke before the writer had its ack"
                .into(),
        );
    }
    out.extend(rows);
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("Pss:") {
            return Ok(v.trim().trim_end_matches("kB").trim().parse()?);
        }
    }
    bail!("no Pss line for {pid}")
}

/// W8: PSS per reader process with 16 readers attached to the read store.
pub fn w8(opts: &Opts, built: &mut BTreeMap<(Peer, u64), Result<Ctx, String>>, out: &mut Vec<Row>) {
    let n = opts.events;
    let mut rows = [Row::new(
        "W8",
        &format!("PSS per reader, 16 reader processes, {n} events"),
        "MiB",
        false,
    )];
    let mut server_notes = Vec::new();
    run_group(opts, &mut rows, |peer, _run| {
        if peer == Peer::Batpak {
            bail!("n/a: batpak admits one process per dir (open_read_only takes its lock)");
        }
        let ctx = read_store(opts, built, peer, n)?;
        let mut procs = Vec::new();
        let res = (|| {
            for _ in 0..16 {
                procs.push(Proc::spawn(&Job {
                    ctx: ctx.clone(),
                    role: Role::Resident { n },
                })?);
            }
            for p in &mut procs {
                p.ready()?;
            }
            let mut total = 0.0;
            for p in &procs {
                total += pss_kib(p.child.id())?;
            }
            if let Some(pid) = peers::server_pid(&ctx) {
                server_notes.push(format!(
                    "{}: the server process holds the data, PSS {:.0} MiB (not counted per reader)",
                    peer.name(),
                    pss_kib(pid)? / 1024.0
                ));
            }
            Ok(Measured {
                values: vec![total / 16.0 / 1024.0],
                verified: None,
            })
        })();
        for mut p in procs {
            let _ = p.go();
            let _ = p.done();
            let _ = p.finish();
        }
        res
    });
    server_notes.dedup_by(|a, b| a.split(',').next() == b.split(',').next());
    rows[0].notes.extend(server_notes);
    rows[0]
        .notes
        .push("each reader ran 10k lookups, 100 streams and 8 counts before measuring".into());
    out.extend(rows);
}
