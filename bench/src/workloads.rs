//! The workloads W1-W8, each written once against `peers::{Writer, Reader}`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::common::{BATCH, Summary, make_event, percentile, summarize};
use crate::harness::{Measured, Opts, Row, check_claim, run_group};
use crate::peers::weir_peer::Daemon;
use crate::peers::{self, Ctx, Peer, WriterModel};
use crate::report::human;
use crate::worker::{
    Job, MANY_PER_CALL, MARK_END, MARK_START, Proc, Role, run_group as run_workers, run_window,
};

/// The read workloads use one store and one reader for both weir columns.
const SAME_READER: &str =
    "n/a: reads do not go through the writer: same store and reader as `weir`";

/// Redis logical databases: 0 holds read stores, 1 scratch for write runs.
const REDIS_READ_DB: u32 = 0;
const REDIS_SCRATCH_DB: u32 = 1;

/// A fresh store for one write cell. For `weir` this starts `weir serve` on it
/// (returned so that the caller verifies and stops it after the cell).
fn scratch(opts: &Opts, peer: Peer, name: &str, durable: bool) -> Result<(Ctx, Option<Daemon>)> {
    let dir = opts.root.join(peer.name()).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut ctx = opts.ctx(peer, dir, durable, REDIS_SCRATCH_DB);
    if peer == Peer::Redis {
        peers::redis::reset(&ctx)?;
        peers::redis::prepare(&ctx)?;
    }
    if peer == Peer::Sqlite {
        // Create the schema and switch to WAL before many processes open it.
        peers::open_writer(&ctx)?.0.finish()?;
    }
    let daemon = if peer == Peer::Weir {
        let d = Daemon::start(&ctx.dir, durable)?;
        ctx.socket = Some(d.socket.clone());
        Some(d)
    } else {
        None
    };
    Ok((ctx, daemon))
}

/// After a cell: read the daemon's configuration back (print-config + live
/// Stats), stop it with SIGTERM (a non-zero exit is an error), remove the store.
/// Returns the verified configuration for `weir`, None for the others.
fn end_cell(ctx: &Ctx, daemon: Option<Daemon>) -> Result<Option<String>> {
    let res = match daemon {
        None => Ok(None),
        Some(d) => {
            let v = d.verify();
            let stopped = d.stop();
            match (v, stopped) {
                (Ok((v, detail)), Ok(())) => {
                    eprintln!("    weir serve ({}): {detail}", ctx.dir.display());
                    Ok(Some(v))
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
    };
    let _ = std::fs::remove_dir_all(&ctx.dir);
    let _ = std::fs::remove_file(ctx.dir.with_extension("toml"));
    if ctx.peer == Peer::Redis {
        let _ = peers::redis::reset(ctx);
    }
    res
}

fn lat_of(outputs: &[Value]) -> Vec<f64> {
    outputs
        .iter()
        .filter_map(|o| o["lat_us"].as_array())
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

fn counted(outputs: &[Value]) -> Result<u64> {
    outputs
        .iter()
        .map(|o| o["count"].as_u64().context("worker output lacks count"))
        .sum()
}

/// W1: durable single appends from `clients` client processes, in a timed
/// window after a warm-up.
pub fn w1(opts: &Opts, out: &mut Vec<Row>) {
    let (warm, secs) = opts.write_window();
    for clients in [1usize, 8, 64] {
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
            Row::new(
                "W1",
                &format!(
                    "p99 latency / one fdatasync (median, measured before the cell), {clients} client(s)"
                ),
                "×",
                false,
            ),
        ];
        let mut fsyncs = Vec::new();
        run_group(opts, &mut rows, |peer, run| {
            let fsync_us = fdatasync_median_us(&opts.root)?;
            fsyncs.push(fsync_us);
            let (ctx, daemon) = scratch(opts, peer, &format!("w1-{clients}-{run}"), true)?;
            let jobs: Vec<Job> = match peer.writer_model() {
                WriterModel::SingleProcess => vec![Job {
                    ctx: ctx.clone(),
                    role: Role::Append {
                        threads: clients,
                        client: 0,
                    },
                }],
                WriterModel::MultiProcess => (0..clients as u64)
                    .map(|c| Job {
                        ctx: ctx.clone(),
                        role: Role::Append {
                            threads: 1,
                            client: c,
                        },
                    })
                    .collect(),
            };
            let g = run_window(&jobs, warm, secs);
            let d = end_cell(&ctx, daemon);
            let g = g?;
            let verified = d?.map_or_else(|| g.verified.clone(), |v| vec![v]);
            let claim = check_claim(peer, true, &verified)?;
            let mut lat = lat_of(&g.outputs);
            let rate = counted(&g.outputs)? as f64 / g.wall.as_secs_f64();
            let p99 = percentile(&mut lat, 99.0);
            Ok(Measured {
                values: vec![rate, p99, p99 / fsync_us],
                verified: Some(claim),
            })
        });
        let fsync = summarize(&fsyncs);
        if let Some(f) = &fsync {
            rows[2].notes.push(format!(
                "one fdatasync: 4 KiB written in sequence into a preallocated 64 MiB file on the \
                 stores' filesystem, then fdatasync, 2000 times just before each cell (the daemon's \
                 pattern: it appends into preallocated segments); medians {:.0}-{:.0} µs over \
                 this row's cells. Issue 4's goal: p99 at 64 clients ≤ 3 fdatasync times",
                f.min, f.max
            ));
        }
        match echo_floor(opts, clients, warm, secs) {
            Ok(floor) => {
                let fsync = fsync.map_or(f64::NAN, |f| f.median);
                rows[2].notes.push(format!(
                    "socket floor, {clients} client(s): a do-nothing echo server (one thread per \
                     connection, no store, no fsync) over a unix socket, 128-byte request and \
                     answer, the same client processes and window: {} ({}-{}) round trips/s, \
                     p50 {:.0} µs, p99 {:.0} µs = {:.2} × this row's median fdatasync ({fsync:.0} µs); \
                     no server can answer faster than this here",
                    human(floor.rate.median),
                    human(floor.rate.min),
                    human(floor.rate.max),
                    floor.p50,
                    floor.p99,
                    floor.p99 / fsync
                ));
            }
            Err(e) => rows[2]
                .notes
                .push(format!("socket floor, {clients} client(s): error: {e:#}")),
        }
        for r in &mut rows {
            r.notes.push(format!(
                "each cell: {:.1} s warm-up (not timed), then events acknowledged within {:.1} s; \
                 weir: one `weir::Client` per client process against `weir serve`; \
                 weir (in-process), batpak: threads in one process (batpak admits one process per dir)",
                warm.as_secs_f64(),
                secs.as_secs_f64()
            ));
        }
        out.extend(rows);
    }
}

/// What a server that does nothing answers over a unix socket on this
/// machine: `clients` processes in the W1 window against an echo server.
struct Floor {
    /// Round trips per second over the runs.
    rate: Summary,
    /// Median over the runs of the p50 and p99 latency, µs.
    p50: f64,
    p99: f64,
}

fn echo_floor(opts: &Opts, clients: usize, warm: Duration, secs: Duration) -> Result<Floor> {
    use crate::worker::ECHO_BYTES;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    let socket = opts.root.join("echo.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    listener.set_nonblocking(true)?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        std::thread::spawn(move || {
                            let mut b = [0u8; ECHO_BYTES];
                            while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let ctx = opts.ctx(Peer::Weir, opts.root.clone(), false, REDIS_SCRATCH_DB);
    let jobs: Vec<Job> = (0..clients)
        .map(|_| Job {
            ctx: ctx.clone(),
            role: Role::Echo {
                socket: socket.clone(),
            },
        })
        .collect();
    // (round trips/s, p50, p99) per run.
    let runs: Result<Vec<(f64, f64, f64)>> = (0..opts.runs)
        .map(|_| {
            let g = run_window(&jobs, warm, secs)?;
            let mut lat = lat_of(&g.outputs);
            let rate = counted(&g.outputs)? as f64 / g.wall.as_secs_f64();
            Ok((rate, percentile(&mut lat, 50.0), percentile(&mut lat, 99.0)))
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let _ = std::fs::remove_file(&socket);
    let runs = runs?;
    let of = |f: fn(&(f64, f64, f64)) -> f64| {
        summarize(&runs.iter().map(f).collect::<Vec<_>>()).context("no runs")
    };
    Ok(Floor {
        rate: of(|r| r.0)?,
        p50: of(|r| r.1)?.median,
        p99: of(|r| r.2)?.median,
    })
}

/// Median time of one `fdatasync` after a 4 KiB sequential write into a
/// preallocated file under `root` (2000 samples), in µs.
fn fdatasync_median_us(root: &Path) -> Result<f64> {
    use std::io::{Seek, SeekFrom, Write};
    const FILE: u64 = 64 << 20;
    let path = root.join("fdatasync-probe");
    let mut f = std::fs::File::create(&path)?;
    // Written once, so later writes overwrite allocated blocks.
    let block = vec![0u8; 1 << 20];
    for _ in 0..FILE >> 20 {
        f.write_all(&block)?;
    }
    f.sync_all()?;
    f.seek(SeekFrom::Start(0))?;
    let page = vec![7u8; 4096];
    let mut us = Vec::with_capacity(2000);
    for i in 0..2000u64 {
        if (i * 4096) % FILE == 0 {
            f.seek(SeekFrom::Start(0))?;
        }
        f.write_all(&page)?;
        let t = Instant::now();
        f.sync_data()?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(percentile(&mut us, 50.0))
}

/// W2 (durable) and W2b (durability off): batches of 256 from one client.
pub fn w2(opts: &Opts, out: &mut Vec<Row>, durable: bool) {
    let (warm, secs) = opts.write_window();
    let (id, label) = if durable {
        ("W2", "durable batches of 256, 1 client")
    } else {
        ("W2b", "batches of 256, durability off (CPU ceiling)")
    };
    let mut rows = [Row::new(id, label, "events/s", true)];
    run_group(opts, &mut rows, |peer, run| {
        let (ctx, daemon) = scratch(opts, peer, &format!("{id}-{run}"), durable)?;
        let g = run_window(
            &[Job {
                ctx: ctx.clone(),
                role: Role::Batches {
                    client: 0,
                    // The CPU ceiling keeps two batches in flight where the
                    // peer can queue one (weir in-process, batpak): the
                    // producer builds the next batch while the store writes.
                    depth: if durable { 1 } else { 2 },
                },
            }],
            warm,
            secs,
        );
        let d = end_cell(&ctx, daemon);
        let g = g?;
        let verified = d?.map_or_else(|| g.verified.clone(), |v| vec![v]);
        let claim = check_claim(peer, durable, &verified)?;
        Ok(Measured {
            values: vec![counted(&g.outputs)? as f64 / g.wall.as_secs_f64()],
            verified: Some(claim),
        })
    });
    rows[0].notes.push(format!(
        "{:.1} s warm-up, then {:.1} s timed; weir: `weir::Client::append_batch` over the socket",
        warm.as_secs_f64(),
        secs.as_secs_f64()
    ));
    if !durable {
        rows[0].notes.push(
            "two batches in flight where the peer can queue one (weir in-process \
             `Store::submit`, batpak `submit_batch`): the producer builds the next batch \
             while the store writes this one; weir's writer takes whatever is queued into \
             one group (both batches, when the second arrived in time), batpak's W2b \
             configuration (group_commit_max_batch = 1: more needs an idempotency key per \
             event) one batch per write; the socket client and the other peers append one \
             batch at a time"
                .into(),
        );
    }
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
    if peer == Peer::WeirInProc {
        bail!("{SAME_READER}");
    }
    if peer == Peer::Batpak && n > opts.events {
        bail!(
            "n/a: batpak is not built at {n} events: it rebuilds its whole index on every open \
             (issue 2 measured ~7.7 s per 1M events; this run's 1M figure is in W6/W9), i.e. \
             tens of seconds to minutes per run at 10M, too long for the 30-min budget"
        );
    }
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
    let cap = opts.build_cap();
    eprintln!("  building {} store of {n} events ...", peer.name());
    // weir's read stores are written by the daemon's writer in-process
    // (durable batches, default config): the same files `weir serve` writes. The
    // daemon assigns the ids (self-locating, as for any client that sends
    // none); they are saved beside the store for the readers.
    let (mut w, _) = if peer == Peer::Weir {
        peers::weir_peer::open_read_builder(&ctx)?
    } else {
        peers::open_writer(&ctx)?
    };
    let mut i = 0;
    while i < n {
        let m = (n - i).min(BATCH as u64);
        let evs: Vec<_> = (i..i + m).map(make_event).collect();
        w.append_batch(&evs)?;
        i += m;
        if i % (1 << 16) == 0 && t.elapsed() > cap {
            drop(w);
            bail!(
                "n/a: building the {n}-event store passed the {} s cap at {i} events",
                cap.as_secs()
            );
        }
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
        Row::new(
            "W5b",
            &format!("count of one kind in one scope over {n} events"),
            "counts/s",
            true,
        ),
        Row::new(
            "W5b",
            &format!("entries covered per second by that count ({n} × counts/s)"),
            "entries/s",
            true,
        ),
    ];
    let phase = if opts.quick { 1.0 } else { 2.0 };
    let mut scoped_na = BTreeMap::new();
    let mut floors = Vec::new();
    let mut many = Vec::new();
    let mut faults = BTreeMap::new();
    run_group(opts, &mut rows, |peer, _run| {
        let ctx = read_store(opts, built, peer, n)?;
        warm_cache(&ctx.dir);
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
        // Peers without the scoped count report why; their cell says n/a.
        let scoped = o["scoped_counts_per_s"].as_f64().unwrap_or(f64::NAN);
        if let Some(e) = o["scoped_counts_error"].as_str() {
            scoped_na.insert(peer, e.to_owned());
        }
        floors.extend(o["floor_lookups_per_s"].as_f64());
        many.extend(o["many_lookups_per_s"].as_f64());
        note_faults(&mut faults, peer, o);
        Ok(Measured {
            values: vec![
                f("lookups_per_s")?,
                f("stream_events_per_s")?,
                f("counts_per_s")?,
                f("open_first_ms")?,
                scoped,
                scoped * n as f64,
            ],
            verified: None,
        })
    });
    for (peer, why) in scoped_na {
        for r in &mut rows[4..] {
            if let Some(c) = r.cells.get_mut(peer.name())
                && c.status.is_none()
            {
                c.status = Some(if why.starts_with("n/a") {
                    why.clone()
                } else {
                    format!("n/a: {why}")
                });
                c.summary = None;
            }
        }
    }
    let lmdb = rows[0].median(Peer::Lmdb).unwrap_or(f64::NAN);
    if let Some(m) = summarize(&many) {
        rows[0].notes.push(format!(
            "weir's batch lookup, `Reader::get_many` with {MANY_PER_CALL} random ids per call \
             (payloads read and CRC-checked; in weir's reader process, after its single \
             lookups): {} ({}-{}) lookups/s = {:.2} × weir's single `get`, {:.2} × LMDB's \
             median (LMDB has no batch lookup; its cell is one `get` per id)",
            human(m.median),
            human(m.min),
            human(m.max),
            m.median / rows[0].median(Peer::Weir).unwrap_or(f64::NAN),
            m.median / lmdb
        ));
    }
    match summarize(&floors) {
        Some(floor) => {
            rows[0].notes.push(format!(
                "payload floor (in weir's reader process, right after its lookups): an oracle that \
                 already holds a pointer to every payload in the mapped segments, in a random \
                 order laid out in sequence, and per lookup only reads the payload and CRC-checks \
                 it: {} ({}-{}) lookups/s = {:.2} × LMDB's median; no index that reads payloads \
                 from files larger than the CPU cache can look up faster than this here",
                human(floor.median),
                human(floor.min),
                human(floor.max),
                floor.median / lmdb
            ));
        }
        None => rows[0]
            .notes
            .push("payload floor: not measured (weir's cell failed or was not run)".into()),
    }
    rows[4].notes.push(
        "checked against the expected count; weir plans it as a column scan over every entry \
         (the scope's and the kind's chains are longer than the store divided by the chain cost); \
         SQLite: `count(*) WHERE kind = ? AND scope = ?` on its (kind, seq) index; LMDB: the kind \
         index, then each record's scope"
            .into(),
    );
    rows[5].notes.push(
        "issue 3's \"scan rate ≥ 200M entries/s per core wherever it scans\": the reader is one \
         thread, so this is per core"
            .into(),
    );
    rows[3].notes.push(faults_note(&faults));
    for r in &mut rows {
        r.notes.push(format!(
            "reader in its own process; page cache warm (built just before); W3-W5: each \
             phase {phase} s timed after a {} s untimed warm-up; W6 is the first answer (no warm-up)",
            phase / 5.0
        ));
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
        let mut faults = BTreeMap::new();
        run_group(opts, &mut rows, |peer, _run| {
            let ctx = read_store(opts, built, peer, big)?;
            warm_cache(&ctx.dir);
            let g = run_workers(&[Job {
                ctx,
                role: Role::Query {
                    n: big,
                    phase_secs: 0.0,
                    phases: false,
                },
            }])?;
            note_faults(&mut faults, peer, &g.outputs[0]);
            Ok(Measured {
                values: vec![
                    g.outputs[0]["open_first_ms"]
                        .as_f64()
                        .context("open_first_ms")?,
                ],
                verified: None,
            })
        });
        rows[0].notes.push(faults_note(&faults));
        out.extend(rows);
    }
}

/// Keeps the page faults a W6 worker counted in its open + first lookup.
fn note_faults(faults: &mut BTreeMap<Peer, Vec<(u64, u64)>>, peer: Peer, o: &serde_json::Value) {
    if let (Some(minor), Some(major)) = (
        o["open_first_minflt"].as_u64(),
        o["open_first_majflt"].as_u64(),
    ) {
        faults.entry(peer).or_default().push((minor, major));
    }
}

/// W6's page faults per peer: the median of the minor ones (a page already in
/// the page cache, mapped on first touch) and the sum of the major ones (read
/// from disk) over the runs.
fn faults_note(faults: &BTreeMap<Peer, Vec<(u64, u64)>>) -> String {
    let per_peer: Vec<String> = faults
        .iter()
        .map(|(peer, runs)| {
            let mut minor: Vec<u64> = runs.iter().map(|r| r.0).collect();
            minor.sort_unstable();
            let major: u64 = runs.iter().map(|r| r.1).sum();
            format!(
                "{} {} minor, {major} major",
                peer.name(),
                minor[minor.len() / 2]
            )
        })
        .collect();
    format!(
        "page faults in the open + first lookup (median minor, total major over the runs): {}. \
         A major fault is a disk read: this VM runs DAMON, which pages out file pages that no \
         process maps after about a minute without access (a running `weir serve` maps its \
         index); the untimed read of all the store's files before each run is there to undo that",
        per_peer.join("; ")
    )
}

/// W7: visibility latency, writer ack -> woken reader in another process.
pub fn w7(opts: &Opts, out: &mut Vec<Row>) {
    let k: u64 = if opts.quick { 400 } else { 1_500 };
    // The first fifth is warm-up, left out of the percentiles.
    let skip = k / 5;
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
        let (ctx, daemon) = scratch(opts, peer, &format!("w7-{run}"), true)?;
        let res = (|| -> Result<(String, Vec<f64>)> {
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
            let acks: Vec<f64> = acks["acks"]
                .as_array()
                .context("acks")?
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            let mut lat = Vec::new();
            for s in seen["seen"].as_array().context("seen")? {
                let i = s[0].as_u64().context("i")?;
                let t = s[1].as_f64().context("t")?;
                if i < skip {
                    continue;
                }
                // Signed: negative when the reader woke before the writer had its ack.
                lat.push((t - acks[i as usize]) / 1e3);
            }
            Ok((verified, lat))
        })();
        let d = end_cell(&ctx, daemon);
        let (verified, mut lat) = res?;
        let verified = d?.unwrap_or(verified);
        let claim = check_claim(peer, true, &[verified])?;
        Ok(Measured {
            values: vec![percentile(&mut lat, 50.0), percentile(&mut lat, 99.0)],
            verified: Some(claim),
        })
    });
    for r in &mut rows {
        r.notes.push(format!(
            "{k} events 2 ms apart, the first {skip} (warm-up) left out; weir: a `weir::Client` \
                 process appends through `weir serve`, the reader waits in wait_visible (futex); \
                 weir (in-process): the writer Store in the appending process; \
                 sqlite, lmdb: the reader polls every 100 µs (no cross-process wakeup); \
                 redis: XREAD BLOCK; negative = the reader woke before the writer had its ack"
        ));
    }
    out.extend(rows);
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: u32) -> Result<f64> {
    rollup_kib(pid, &["Pss:"])
}

/// Sum of some `/proc/PID/smaps_rollup` fields, in KiB.
fn rollup_kib(pid: u32, keys: &[&str]) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let mut total = 0.0;
    let mut found = 0;
    for line in s.lines() {
        for k in keys {
            if let Some(v) = line.strip_prefix(k) {
                total += v.trim().trim_end_matches("kB").trim().parse::<f64>()?;
                found += 1;
            }
        }
    }
    if found != keys.len() {
        bail!("smaps_rollup of {pid} lacks one of {keys:?}");
    }
    Ok(total)
}

/// Read every file of a store once (untimed) so that W6 finds the page cache
/// warm for every peer alike: after the 10M builds the files of the stores
/// built first may have been evicted, which made W6 a disk benchmark.
fn warm_cache(p: &Path) {
    use std::io::Read as _;
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return;
    };
    if md.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                warm_cache(&e.path());
            }
        }
    } else if md.is_file()
        && let Ok(mut f) = std::fs::File::open(p)
    {
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    }
}

/// Allocated bytes (st_blocks) of the files under `p`.
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| allocated(&e.path())).sum())
            .unwrap_or(0)
    } else {
        md.blocks() * 512
    }
}

/// The index (weir) or database files (peers) a reader maps, in bytes.
fn index_bytes(ctx: &Ctx) -> Option<u64> {
    match ctx.peer {
        Peer::Weir | Peer::WeirInProc => Some(allocated(&ctx.dir.join("index"))),
        Peer::Sqlite | Peer::Lmdb => {
            Some(allocated(&ctx.dir) - allocated(&ctx.dir.join("bench-build")))
        }
        Peer::Batpak | Peer::Redis => None,
    }
}

/// W8: PSS per reader process with 16 readers attached to the read store
/// (at `events`, and at 10× in full runs).
pub fn w8(opts: &Opts, built: &mut BTreeMap<(Peer, u64), Result<Ctx, String>>, out: &mut Vec<Row>) {
    let mut sizes = vec![opts.events];
    if opts.big {
        sizes.push(opts.events * 10);
    }
    for n in sizes {
        // At 10× each reader counts one kind instead of all eight (a SQLite
        // count of 10M rows × 8 × 16 processes alone would take minutes).
        let kinds = if n > opts.events { 1 } else { 8 };
        let mut rows = [
            Row::new(
                "W8",
                &format!("PSS per reader, 16 reader processes, {n} events"),
                "MiB",
                false,
            ),
            Row::new(
                "W8",
                &format!("PSS per reader / index (or DB) size, {n} events"),
                "%",
                false,
            ),
            Row::new(
                "W8",
                &format!("private memory per reader (Private_Clean + Private_Dirty), {n} events"),
                "MiB",
                false,
            ),
            Row::new(
                "W8",
                &format!(
                    "extra PSS per added reader, (ΣPSS of 16 readers − PSS of 1 alone) / 15, {n} events"
                ),
                "MiB",
                false,
            ),
            Row::new(
                "W8",
                &format!("extra PSS per added reader / index (or DB) size, {n} events"),
                "%",
                false,
            ),
        ];
        let mut server_notes = Vec::new();
        let mut size_notes = Vec::new();
        run_group(opts, &mut rows, |peer, _run| {
            if peer == Peer::Batpak {
                bail!("n/a: batpak admits one process per dir (open_read_only takes its lock)");
            }
            let ctx = read_store(opts, built, peer, n)?;
            let mut procs = Vec::new();
            let res = (|| {
                // Each reader has its own picks (seed), so that together
                // they touch more of the store than one does alone.
                let spawn = |i: u64| {
                    Proc::spawn(&Job {
                        ctx: ctx.clone(),
                        role: Role::Resident {
                            n,
                            kinds,
                            seed: 7 + i,
                        },
                    })
                };
                // One reader alone first: what the store costs one process.
                procs.push(spawn(0)?);
                procs[0].ready()?;
                let alone = pss_kib(procs[0].child.id())?;
                for i in 1..16 {
                    procs.push(spawn(i)?);
                }
                for p in &mut procs[1..] {
                    p.ready()?;
                }
                let mut total = 0.0;
                let mut private = 0.0;
                for p in &procs {
                    total += pss_kib(p.child.id())?;
                    private += rollup_kib(p.child.id(), &["Private_Clean:", "Private_Dirty:"])?;
                }
                if let Some(pid) = peers::server_pid(&ctx) {
                    server_notes.push(format!(
                        "{}: the server process holds the data, PSS {:.0} MiB (not counted per reader)",
                        peer.name(),
                        pss_kib(pid)? / 1024.0
                    ));
                }
                let per = total / 16.0 / 1024.0;
                let extra = (total - alone) / 15.0 / 1024.0;
                let index = index_bytes(&ctx).filter(|&b| b > 0);
                let of_index = |mib: f64| {
                    index.map_or(f64::NAN, |b| mib * (1 << 20) as f64 / b as f64 * 100.0)
                };
                if let Some(b) = index {
                    size_notes.push(format!(
                        "{}: index/DB files {:.0} MiB allocated",
                        peer.name(),
                        b as f64 / (1 << 20) as f64
                    ));
                }
                Ok(Measured {
                    values: vec![
                        per,
                        of_index(per),
                        private / 16.0 / 1024.0,
                        extra,
                        of_index(extra),
                    ],
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
        // A peer without a file size (Redis keeps the data in its server).
        for r in [1, 4] {
            if let Some(c) = rows[r].cells.get_mut(Peer::Redis.name())
                && c.status.is_none()
            {
                c.status = Some(
                    "n/a: the data lives in the server process, not in files readers map".into(),
                );
                c.summary = None;
            }
        }
        server_notes.sort();
        server_notes.dedup_by(|a, b| a.split(',').next() == b.split(',').next());
        size_notes.sort();
        size_notes.dedup();
        rows[0].notes.extend(server_notes);
        rows[1].notes.extend(size_notes);
        rows[0].notes.push(format!(
            "each reader ran 10k lookups, 100 streams and {kinds} kind count(s) before measuring, \
             each with its own random picks (seed 7 + reader number)"
        ));
        rows[1].notes.push(
            "index size: weir, allocated bytes of index/; sqlite, lmdb: their database files \
             (issue 3's goal is on the extra-PSS rows below). PSS splits each shared page among the \
             processes mapping it, and a fault on a \
             cached file maps more than one page (fault-around; on this 6.18 kernel whole large \
             folios: touching one byte per 2 MiB of a cached 256 MiB file mapped all of it), so \
             PSS here is (pages mapped by any reader)/16 + private pages"
                .into(),
        );
        rows[2].notes.push(
            "what one more reader costs on its own: its private pages (heap, stacks, private copies), \
             not the shared file pages"
                .into(),
        );
        rows[3].notes.push(
            "reader 1 runs alone first and its PSS is read; then 15 more start and the PSS of all 16 \
             is summed. ΣPSS counts every mapped page once in all (PSS splits a shared page among \
             its mappers), so the growth per added reader is its private pages plus the pages of \
             the store that it mapped and no reader before it had: the memory one more reader \
             adds. A reader that decoded the index into its heap would add the whole index here"
                .into(),
        );
        rows[4].notes.push(
            "issue 3's goal, \"extra proportional memory (PSS) per reader ≤ 1 % of the index size\", \
             read as the growth of ΣPSS per added reader (previous row) over the index size"
                .into(),
        );
        out.extend(rows);
    }
}

/// W10: syscalls made by a reader during a loop of 100k point lookups,
/// counted with strace between two marker syscalls (see README).
pub fn w10(
    opts: &Opts,
    built: &mut BTreeMap<(Peer, u64), Result<Ctx, String>>,
    out: &mut Vec<Row>,
) {
    let n = opts.events;
    const WEIR_LOOKUPS: u64 = 100_000;
    const PEER_LOOKUPS: u64 = 10_000;
    let mut rows = [Row::new(
        "W10",
        &format!("syscalls in a loop of 100k point lookups (strace), {n} events"),
        "syscalls",
        false,
    )];
    if let Err(e) = ensure_strace() {
        eprintln!("  strace unavailable: {e:#}");
    }
    let warm = if opts.quick { 0.3 } else { 1.0 };
    let mut names: BTreeMap<Peer, String> = BTreeMap::new();
    let mut loop_ms: BTreeMap<Peer, f64> = BTreeMap::new();
    run_group(opts, &mut rows, |peer, run| {
        let ctx = read_store(opts, built, peer, n)?;
        let lookups = if peer == Peer::Weir {
            WEIR_LOOKUPS
        } else {
            PEER_LOOKUPS
        };
        let log = opts.root.join(format!("strace-{}-{run}.log", peer.name()));
        let (count, by_name, ms) = strace_loop(&ctx, n, lookups, warm, &log)?;
        let _ = std::fs::remove_file(&log);
        names.insert(peer, by_name);
        loop_ms.insert(peer, ms);
        Ok(Measured {
            values: vec![count as f64 * (WEIR_LOOKUPS / lookups) as f64],
            verified: None,
        })
    });
    rows[0].notes.push(format!(
        "the reader process warms up ({warm} s of lookups), says READY; the suite attaches \
         `strace -f -p PID` (all threads) and waits for strace's `attached` line, then releases \
         the loop; the worker brackets the loop with two marker syscalls (access(\"{MARK_START}\"), \
         access(\"{MARK_END}\")) and the suite counts the syscall lines between them in the log \
         (resumed halves and signal lines not counted). weir: 100k lookups; peers: {PEER_LOOKUPS} \
         lookups (tracing their syscalls slows them ~100×), count × 10"
    ));
    for (p, s) in names {
        rows[0].notes.push(format!(
            "{}: {s} (loop under strace: {:.0} ms)",
            p.name(),
            loop_ms.get(&p).copied().unwrap_or(f64::NAN)
        ));
    }
    out.extend(rows);
}

fn ensure_strace() -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", "command -v strace"])
        .stdout(Stdio::null())
        .status()?
        .success();
    if found {
        return Ok(());
    }
    eprintln!("strace missing: apt-get install -y strace");
    let ok = Command::new("sh")
        .args([
            "-c",
            "(apt-get install -y -q strace || (apt-get update -q && apt-get install -y -q strace)) >/dev/null",
        ])
        .status()?
        .success();
    if !ok {
        bail!("could not install strace with apt-get");
    }
    Ok(())
}

/// Run a Syscalls worker under strace; returns (syscalls in the loop, a
/// summary by name, loop ms).
fn strace_loop(
    ctx: &Ctx,
    n: u64,
    lookups: u64,
    warm: f64,
    log: &Path,
) -> Result<(u64, String, f64)> {
    let mut w = Proc::spawn(&Job {
        ctx: ctx.clone(),
        role: Role::Syscalls {
            n,
            lookups,
            warm_secs: warm,
        },
    })?;
    let res = (|| {
        w.ready()?;
        let mut st = Command::new("strace")
            .args(["-f", "-o"])
            .arg(log)
            .args(["-p", &w.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("n/a: strace not available")?;
        let mut err = BufReader::new(st.stderr.take().context("strace stderr")?);
        let mut line = String::new();
        err.read_line(&mut line)?;
        if !line.contains("attached") {
            let _ = st.kill();
            let _ = st.wait();
            bail!("n/a: strace could not attach: {}", line.trim());
        }
        // Drain strace's stderr in the background (it may report more threads).
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        w.go()?;
        let out = w.done()?;
        Ok((st, out))
    })();
    let (mut st, out) = match res {
        Ok(x) => x,
        Err(e) => {
            let _ = w.child.kill();
            let _ = w.finish();
            return Err(e);
        }
    };
    w.finish()?;
    st.wait()?;
    let text = std::fs::read_to_string(log)?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(MARK_START))
        .context("no start marker in the strace log")?;
    let end = lines
        .iter()
        .position(|l| l.contains(MARK_END))
        .context("no end marker in the strace log")?;
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = 0;
    for l in &lines[start + 1..end] {
        // "PID  name(args) = ret"; skip "<... name resumed>" halves and signals.
        let body = l
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        if body.starts_with("<...") || body.starts_with("---") || body.starts_with("+++") {
            continue;
        }
        let name = body.split('(').next().unwrap_or("?").to_string();
        count += 1;
        *by.entry(name).or_default() += 1;
    }
    let summary = if by.is_empty() {
        "no syscalls".to_string()
    } else {
        let mut v: Vec<_> = by.into_iter().collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.1));
        v.iter()
            .take(5)
            .map(|(k, c)| format!("{k}×{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ms = out["loop_ms"].as_f64().unwrap_or(f64::NAN);
    Ok((count, summary, ms))
}

/// Zero (or put back) the 64-byte trailer at the end of every segment file.
fn trailers(dir: &Path, saved: &mut Vec<(PathBuf, Vec<u8>)>, zero: bool) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    if !zero {
        for (p, b) in saved.drain(..) {
            let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
            f.seek(SeekFrom::End(-64))?;
            f.write_all(&b)?;
            f.sync_data()?;
        }
        return Ok(());
    }
    for e in std::fs::read_dir(dir.join("segments"))? {
        let p = e?.path();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)?;
        if f.metadata()?.len() < 64 {
            continue;
        }
        let mut b = vec![0u8; 64];
        f.seek(SeekFrom::End(-64))?;
        f.read_exact(&mut b)?;
        f.seek(SeekFrom::End(-64))?;
        f.write_all(&[0u8; 64])?;
        f.sync_data()?;
        saved.push((p, b));
    }
    Ok(())
}

/// Leaves the newest index generation as a crash would for the restore:
/// without the clean stop's idempotency window the index files are not
/// reused, so the start takes the crash checkpoint (which the clean stop
/// left) and replays the log past it.
fn crash_after_checkpoint(dir: &std::path::Path, n: u64) -> Result<()> {
    let g = weir_daemon::store::latest_generation(dir).context("no index generation")?;
    if weir_daemon::checkpoint::watermark_in(dir, g).is_none() {
        bail!(
            "n/a: no crash checkpoint: {n} events fill no index chunk of 2^20 rows \
             (the checkpoint path keeps sealed chunks; see the 10M row)"
        );
    }
    std::fs::remove_file(weir_daemon::index::generation_dir(dir, g).join("idem"))?;
    Ok(())
}

/// W9: cold start by restore path. The weir read store is opened with
/// `Store::open` (what `weir serve` runs before READY) in a fresh process,
/// after: a clean stop (index files); a simulated crash (the clean stop's
/// `idem` deleted: the crash checkpoint's chunks kept, the rest replayed);
/// deleting `index/` (sealed segments rebuilt from their footers, the tail
/// scanned); deleting `index/` and zeroing every segment's trailer (frame
/// scan). batpak: `Store::open` on its store of the same events. Runs last:
/// it rewrites weir's index.
pub fn w9(opts: &Opts, built: &mut BTreeMap<(Peer, u64), Result<Ctx, String>>, out: &mut Vec<Row>) {
    let mut sizes = vec![opts.events];
    if opts.big {
        sizes.push(opts.events * 10);
    }
    for n in sizes {
        let mut batpak_vals: Vec<f64> = Vec::new();
        let mut batpak_err: Option<String> = None;
        for path in ["index-files", "checkpoint", "footers", "frame-scan"] {
            let mut rows = [Row::new(
                "W9",
                &format!("cold start (Store::open), restore path {path}, {n} events"),
                "ms",
                false,
            )];
            let mut reports = Vec::new();
            let mut saved = Vec::new();
            run_group(opts, &mut rows, |peer, run| match peer {
                Peer::Weir => {
                    let ctx = read_store(opts, built, peer, n)?;
                    let segments = std::fs::read_dir(ctx.dir.join("segments"))?.count();
                    if path == "footers" && segments < 2 {
                        bail!(
                            "n/a: no sealed segment: {n} events fit in one 256 MiB segment \
                             (the footers path needs a rotated segment; see the 1M/10M rows)"
                        );
                    }
                    if path == "checkpoint" {
                        crash_after_checkpoint(&ctx.dir, n)?;
                    }
                    if path == "footers" || path == "frame-scan" {
                        let idx = ctx.dir.join("index");
                        if idx.exists() {
                            std::fs::remove_dir_all(&idx)?;
                        }
                    }
                    if path == "frame-scan" {
                        trailers(&ctx.dir, &mut saved, true)?;
                    }
                    let g = run_workers(&[Job {
                        ctx: ctx.clone(),
                        role: Role::Restore,
                    }]);
                    if path == "frame-scan" {
                        trailers(&ctx.dir, &mut saved, false)?;
                    }
                    let o = g?.outputs.remove(0);
                    let got = o["path"].as_str().unwrap_or("?");
                    if got != path {
                        bail!(
                            "REFUSED: row claims restore path {path} but the store reports {got} ({})",
                            o["fallback"]
                        );
                    }
                    reports.push(format!(
                        "weir {path} at {n}: {} entries by that path + {} tail entries scanned, \
                         restore report {:.0} ms",
                        o["entries"],
                        o["tail_entries"],
                        o["report_ms"].as_f64().unwrap_or(f64::NAN)
                    ));
                    Ok(Measured {
                        values: vec![o["open_ms"].as_f64().context("open_ms")?],
                        verified: Some(path.into()),
                    })
                }
                Peer::Batpak => {
                    if path != "index-files" {
                        // One restore path: measured once (in the index-files row).
                        if let Some(e) = &batpak_err {
                            bail!("{e}");
                        }
                        return batpak_vals
                            .get(run)
                            .map(|v| Measured {
                                values: vec![*v],
                                verified: None,
                            })
                            .context("n/a: batpak not measured");
                    }
                    let r = (|| {
                        let ctx = read_store(opts, built, peer, n)?;
                        let g = run_workers(&[Job {
                            ctx,
                            role: Role::Restore,
                        }])?;
                        g.outputs[0]["open_ms"].as_f64().context("open_ms")
                    })();
                    match r {
                        Ok(v) => {
                            batpak_vals.push(v);
                            Ok(Measured {
                                values: vec![v],
                                verified: None,
                            })
                        }
                        Err(e) => {
                            batpak_err = Some(format!("{e:#}"));
                            Err(e)
                        }
                    }
                }
                Peer::WeirInProc => bail!("n/a: the same Store::open as `weir`"),
                Peer::Sqlite | Peer::Lmdb => bail!(
                    "n/a: no restore step (opening maps the B-tree; see W6 for open + first lookup)"
                ),
                Peer::Redis => bail!(
                    "n/a: a restart replays the AOF into memory; not measured (server kept running)"
                ),
            });
            reports.sort();
            reports.dedup_by(|a, b| a.split(':').next() == b.split(':').next());
            rows[0].notes.extend(reports);
            rows[0].notes.push(
                "weir: Store::open in a fresh process (what `weir serve` does before READY), page \
                 cache warm; checkpoint = the clean stop's idem file deleted (the index files are \
                 not reused, the crash checkpoint's sealed chunks are kept, the rest replayed), \
                 n/a without a sealed chunk; footers = index/ deleted; frame-scan = index/ \
                 deleted and every segment's last 64 bytes (trailer) zeroed, put back afterwards; \
                 the row is refused unless restore_report() names the path; batpak: Store::open \
                 of its store of the same events, one path, so the same figures in every row"
                    .into(),
            );
            out.extend(rows);
        }
    }
}
