//! Worker processes: the bench binary re-executed with a hidden subcommand, so
//! that clients and readers are real OS processes. Protocol on stdio:
//! worker prints `READY <verified config>`, waits for a line on stdin (GO),
//! runs, prints `DONE <json>`, then closes its store and exits.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{
    BATCH, Event, KINDS, PAYLOAD_LEN, Pool, Rng, id_base, kind_of, make_event, mono_ns,
    page_faults, scope_of,
};
use crate::peers::{self, Ctx, Peer};

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__worker";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Role {
    /// W1: `threads` appenders in this process (client `client`), single
    /// appends; warm-up until the window GO names, then counted within it.
    Append { threads: usize, client: u64 },
    /// W2 / W2b: batches of 256, timed like `Append`. `depth` > 1 keeps
    /// that many batches in flight (`Writer::submit_batch`).
    Batches { client: u64, depth: usize },
    /// W3-W6 on an `n`-event store: open + first answer, then warm-up and
    /// timed phases of `phase_secs` each.
    Query {
        n: u64,
        phase_secs: f64,
        phases: bool,
    },
    /// W8: attach, touch the store, then stay resident until stdin closes.
    Resident { n: u64, kinds: u16, seed: u64 },
    /// W7 reader: wait for events 0..k as they become visible.
    Waiter { k: u64 },
    /// W7 writer: append events 0..k one at a time, `gap_us` apart.
    Pacer { k: u64, gap_us: u64 },
    /// W10: warm up, then `lookups` random gets between two marker syscalls
    /// (the parent traces this process with strace).
    Syscalls {
        n: u64,
        lookups: u64,
        warm_secs: f64,
    },
    /// W9: time opening the store (restore), report what restore did.
    Restore,
    /// W1's socket floor: round trips of 128 bytes to the suite's echo
    /// server at `socket`, timed like `Append` (no store at all).
    Echo { socket: PathBuf },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub ctx: Ctx,
    pub role: Role,
}

/// A running worker, seen from the parent.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    out: BufReader<ChildStdout>,
    inp: Option<ChildStdin>,
}

impl Proc {
    pub fn spawn(job: &Job) -> Result<Proc> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .arg(serde_json::to_string(job)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().context("stdout")?);
        let inp = child.stdin.take();
        Ok(Proc { child, out, inp })
    }

    fn line(&mut self, want: &str) -> Result<String> {
        let mut l = String::new();
        self.out.read_line(&mut l)?;
        let l = l.trim_end();
        if let Some(rest) = l.strip_prefix(want) {
            return Ok(rest.trim_start().to_string());
        }
        if let Some(err) = l.strip_prefix("ERROR") {
            bail!("{}", err.trim());
        }
        bail!("worker said {l:?}, expected {want}")
    }

    /// Wait for READY; returns the configuration the worker read back.
    pub fn ready(&mut self) -> Result<String> {
        self.line("READY")
    }

    pub fn go(&mut self) -> Result<()> {
        self.send(b"go\n")
    }

    /// GO for a timed window: warm up until `t0`, count until `t1` (CLOCK_MONOTONIC ns).
    pub fn go_window(&mut self, t0: u64, t1: u64) -> Result<()> {
        self.send(format!("go {t0} {t1}\n").as_bytes())
    }

    fn send(&mut self, b: &[u8]) -> Result<()> {
        let i = self.inp.as_mut().context("stdin closed")?;
        i.write_all(b)?;
        i.flush()?;
        Ok(())
    }

    pub fn done(&mut self) -> Result<Value> {
        Ok(serde_json::from_str(&self.line("DONE")?)?)
    }

    /// Close stdin (releases a Resident worker) and reap the process.
    pub fn finish(mut self) -> Result<()> {
        drop(self.inp.take());
        let st = self.child.wait()?;
        if !st.success() {
            bail!("worker exited with {st}");
        }
        Ok(())
    }
}

/// Results of one group of workers started together.
#[derive(Debug)]
pub struct GroupRun {
    pub verified: Vec<String>,
    pub wall: Duration,
    pub outputs: Vec<Value>,
}

/// Start all jobs, wait until every one is READY (worker startup and store
/// opening are excluded), then release them at once into a window: each
/// worker works untimed for `warm` (warm-up: preallocation, page faults,
/// caches), then counts what completes within the next `secs`. `wall` is
/// `secs`; the workers report what they did inside the window.
pub fn run_window(jobs: &[Job], warm: Duration, secs: Duration) -> Result<GroupRun> {
    run_released(jobs, Some((warm, secs)))
}

/// Start all jobs, wait until every one is READY, release them at once and
/// time until the last DONE. Worker startup and store opening are excluded.
pub fn run_group(jobs: &[Job]) -> Result<GroupRun> {
    run_released(jobs, None)
}

/// Spawns `jobs`, waits for every READY, releases them (into a window, or
/// with a plain GO), collects every DONE and reaps the workers (killed if
/// anything failed).
fn run_released(jobs: &[Job], window: Option<(Duration, Duration)>) -> Result<GroupRun> {
    let mut procs = Vec::with_capacity(jobs.len());
    let res = (|| {
        for j in jobs {
            procs.push(Proc::spawn(j)?);
        }
        let mut verified = Vec::new();
        for p in &mut procs {
            verified.push(p.ready()?);
        }
        let started = Instant::now();
        match window {
            Some((warm, secs)) => {
                let t0 = mono_ns() + warm.as_nanos() as u64;
                let t1 = t0 + secs.as_nanos() as u64;
                for p in &mut procs {
                    p.go_window(t0, t1)?;
                }
            }
            None => {
                for p in &mut procs {
                    p.go()?;
                }
            }
        }
        let mut outputs = Vec::new();
        for p in &mut procs {
            outputs.push(p.done()?);
        }
        Ok(GroupRun {
            verified,
            wall: window.map_or_else(|| started.elapsed(), |(_, secs)| secs),
            outputs,
        })
    })();
    for mut p in procs {
        if res.is_err() {
            let _ = p.child.kill();
        }
        let _ = p.finish();
    }
    res
}

/// Entry point of a worker process.
pub fn main(arg: &str) -> Result<()> {
    let job: Job = serde_json::from_str(arg)?;
    let out = std::io::stdout();
    match run(&job) {
        Ok(()) => Ok(()),
        Err(e) => {
            let mut o = out.lock();
            writeln!(o, "ERROR {}", format!("{e:#}").replace('\n', " "))?;
            o.flush()?;
            std::process::exit(1);
        }
    }
}

fn say(word: &str, rest: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{word} {rest}")?;
    o.flush()?;
    Ok(())
}

fn wait_go() -> Result<()> {
    let mut l = String::new();
    std::io::stdin().read_line(&mut l)?;
    Ok(())
}

/// Wait for a windowed GO; returns (t0, t1).
fn wait_window() -> Result<(u64, u64)> {
    let mut l = String::new();
    std::io::stdin().read_line(&mut l)?;
    let mut w = l.split_whitespace().skip(1).map(str::parse::<u64>);
    match (w.next(), w.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
        _ => bail!("expected `go t0 t1`, got {l:?}"),
    }
}

fn events(base: u64, n: u64) -> Vec<Event> {
    (base..base + n).map(make_event).collect()
}

fn run(job: &Job) -> Result<()> {
    let ctx = &job.ctx;
    match job.role {
        Role::Append { threads, client } => append(ctx, threads, client),
        Role::Echo { ref socket } => echo(socket),
        Role::Batches { client, depth } => {
            let (mut w, verified) = peers::open_writer(ctx)?;
            let mut pool = Pool::new();
            say("READY", &verified)?;
            let (t0, t1) = wait_window()?;
            let mut i = id_base(client, 0);
            let (count, lat) = in_window(t0, t1, || {
                let acked = if depth > 1 {
                    w.submit_batch(pool.batch(i), depth)?
                } else {
                    w.append_batch(pool.batch(i))?;
                    BATCH as u64
                };
                i += BATCH as u64;
                Ok(acked)
            })?;
            w.drain()?;
            say(
                "DONE",
                &json!({ "count": count, "lat_us": lat }).to_string(),
            )?;
            w.finish()
        }
        Role::Query {
            n,
            phase_secs,
            phases,
        } => query(ctx, n, phase_secs, phases),
        Role::Resident { n, kinds, seed } => {
            let mut r = peers::open_reader(ctx, n)?;
            let mut rng = Rng::new(seed);
            for _ in 0..10_000 {
                r.get(rng.below(n))?;
            }
            for _ in 0..100 {
                r.stream(&crate::common::entity_of(rng.below(n)))?;
            }
            for k in 1..=kinds.min(KINDS) {
                r.count_kind(k)?;
            }
            say("READY", "")?;
            wait_go()?;
            say("DONE", "{}")
        }
        Role::Waiter { k } => {
            let mut r = peers::open_reader(ctx, 0)?;
            say("READY", "")?;
            wait_go()?;
            let mut seen = Vec::new();
            let mut last = None;
            while last.is_none_or(|l| l + 1 < k) {
                match r.wait_next(last, Duration::from_secs(10))? {
                    Some(i) => {
                        seen.push((i, mono_ns()));
                        last = Some(i);
                    }
                    None => bail!("W7 waiter timed out after event {last:?}"),
                }
            }
            say("DONE", &json!({ "seen": seen }).to_string())
        }
        Role::Pacer { k, gap_us } => {
            let (mut w, verified) = peers::open_writer(ctx)?;
            let evs = events(0, k);
            say("READY", &verified)?;
            wait_go()?;
            std::thread::sleep(Duration::from_millis(50));
            let mut acks = Vec::with_capacity(k as usize);
            for ev in &evs {
                w.append(ev)?;
                acks.push(mono_ns());
                std::thread::sleep(Duration::from_micros(gap_us));
            }
            say("DONE", &json!({ "acks": acks }).to_string())?;
            w.finish()
        }
        Role::Syscalls {
            n,
            lookups,
            warm_secs,
        } => syscalls(ctx, n, lookups, warm_secs),
        Role::Restore => restore(ctx),
    }
}

/// A syscall that does nothing and is easy to find in an strace log.
fn marker(name: &std::ffi::CStr) {
    // SAFETY: access(2) with a valid NUL-terminated path; the result is ignored.
    unsafe { libc::access(name.as_ptr(), libc::F_OK) };
}

pub const MARK_START: &str = "/weir-bench-loop-start";
pub const MARK_END: &str = "/weir-bench-loop-end";

fn syscalls(ctx: &Ctx, n: u64, lookups: u64, warm_secs: f64) -> Result<()> {
    let mut r = peers::open_reader(ctx, n)?;
    if ctx.peer == Peer::Weir {
        // As for W3: the ids, shuffled, loaded before the loop, so that the
        // loop is lookups by id only (finding event i's id is a query).
        peers::weir_peer::preload_ids(ctx)?;
    }
    let mut rng = Rng::new(0x5EED ^ mono_ns());
    // Warm-up: the first touches of the mapped files fault pages in (those
    // faults are not syscalls, but lazily opened files would be).
    let warm = Duration::from_secs_f64(warm_secs);
    let t = Instant::now();
    while t.elapsed() < warm {
        for _ in 0..256 {
            r.get(rng.below(n))?;
        }
    }
    let picks: Vec<u64> = (0..lookups).map(|_| rng.below(n)).collect();
    say("READY", "")?;
    wait_go()?;
    let mut bytes = 0usize;
    marker(c"/weir-bench-loop-start");
    let t = Instant::now();
    for &i in &picks {
        bytes += r.get(i)?;
    }
    let el = t.elapsed();
    marker(c"/weir-bench-loop-end");
    if bytes < PAYLOAD_LEN * picks.len() {
        bail!("short payloads in the syscall loop");
    }
    say(
        "DONE",
        &json!({ "lookups": lookups, "loop_ms": el.as_secs_f64() * 1e3 }).to_string(),
    )
}

fn restore(ctx: &Ctx) -> Result<()> {
    say("READY", "")?;
    wait_go()?;
    match ctx.peer {
        Peer::Weir | Peer::WeirInProc => {
            let cfg = weir_daemon::config::Config::new(&ctx.dir);
            let t = Instant::now();
            let store = weir_daemon::store::Store::open(cfg)
                .map_err(|e| anyhow::anyhow!("weir open: {e:?}"))?;
            let el = t.elapsed();
            let rep = store.restore_report().clone();
            say(
                "DONE",
                &json!({
                    "open_ms": el.as_secs_f64() * 1e3,
                    "path": rep.path.name(),
                    "entries": rep.entries,
                    "tail_entries": rep.tail_entries,
                    "report_ms": rep.elapsed.as_secs_f64() * 1e3,
                    "fallback": rep.fallback_reason,
                })
                .to_string(),
            )?;
            store
                .shutdown()
                .map_err(|e| anyhow::anyhow!("weir shutdown: {e}"))
        }
        Peer::Batpak => {
            let t = Instant::now();
            let (w, _) = peers::batpak_peer::open_batpak(ctx, false)?;
            let el = t.elapsed();
            say(
                "DONE",
                &json!({ "open_ms": el.as_secs_f64() * 1e3, "path": "open" }).to_string(),
            )?;
            peers::Writer::finish(Box::new(w))
        }
        p => bail!("n/a: no restore step for {}", p.name()),
    }
}

/// An appender thread's handle back, with its count and per-append
/// latencies (µs) inside the window.
type AppenderDone = (Box<dyn peers::Writer>, u64, Vec<u32>);

/// Runs `op` back to back until one ends after `t1` (CLOCK_MONOTONIC ns);
/// returns what ended inside [`t0`, `t1`]: the events each `op` reports
/// acknowledged, and each op's duration in µs (with batches in flight, that
/// is submit + wait for an earlier batch, not one batch's latency; no row
/// reports it then). What ends before `t0` is warm-up.
fn in_window(t0: u64, t1: u64, mut op: impl FnMut() -> Result<u64>) -> Result<(u64, Vec<u32>)> {
    let (mut count, mut lat) = (0u64, Vec::new());
    loop {
        let st = mono_ns();
        let acked = op()?;
        let e = mono_ns();
        if e >= t0 {
            if e > t1 {
                return Ok((count, lat));
            }
            count += acked;
            lat.push(((e - st) / 1000) as u32);
        }
    }
}

/// One echo client: a 128-byte request, a 128-byte answer, one at a time.
fn echo(socket: &Path) -> Result<()> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connect {}", socket.display()))?;
    let (req, mut ans) = ([7u8; ECHO_BYTES], [0u8; ECHO_BYTES]);
    say("READY", "")?;
    let (t0, t1) = wait_window()?;
    let (count, lat) = in_window(t0, t1, || {
        s.write_all(&req)?;
        s.read_exact(&mut ans)?;
        Ok(1)
    })?;
    say(
        "DONE",
        &json!({ "count": count, "lat_us": lat }).to_string(),
    )
}

/// Size of one echo request and answer (about one `Append` frame).
pub const ECHO_BYTES: usize = 128;

fn append(ctx: &Ctx, threads: usize, client: u64) -> Result<()> {
    let mut writers: Vec<Box<dyn peers::Writer>> = Vec::new();
    let verified = if ctx.peer == Peer::WeirInProc {
        let (w, v) = peers::weir_peer::open_weir(ctx)?;
        for _ in 1..threads {
            writers.push(Box::new(w.clone_handle()));
        }
        writers.insert(0, Box::new(w));
        v
    } else if ctx.peer == Peer::Batpak {
        let (w, v) = peers::batpak_peer::open_batpak(ctx, false)?;
        for _ in 1..threads {
            writers.push(Box::new(w.clone_handle()));
        }
        writers.insert(0, Box::new(w));
        v
    } else {
        if threads != 1 {
            bail!("one connection per process for {}", ctx.peer.name());
        }
        let (w, v) = peers::open_writer(ctx)?;
        writers.push(w);
        v
    };
    say("READY", &verified)?;
    let (t0, t1) = wait_window()?;
    let results: Vec<Result<AppenderDone>> = std::thread::scope(|s| {
        let hs: Vec<_> = writers
            .into_iter()
            .enumerate()
            .map(|(t, mut w)| {
                s.spawn(move || -> Result<_> {
                    let mut pool = Pool::new();
                    let mut i = id_base(client, t as u64);
                    let (count, lat) = in_window(t0, t1, || {
                        w.append(pool.one(i))?;
                        i += 1;
                        Ok(1)
                    })?;
                    Ok((w, count, lat))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("appender panicked")))
            .collect()
    });
    let mut lat = Vec::new();
    let mut ws = Vec::new();
    let mut count = 0;
    for r in results {
        let (w, c, l) = r?;
        count += c;
        lat.extend(l);
        ws.push(w);
    }
    say(
        "DONE",
        &json!({ "count": count, "lat_us": lat }).to_string(),
    )?;
    // Close the last handle last (batpak closes when the final clone goes).
    while let Some(w) = ws.pop() {
        if ws.is_empty() {
            w.finish()?;
        } else {
            drop(w);
        }
    }
    Ok(())
}

fn query(ctx: &Ctx, n: u64, phase_secs: f64, phases: bool) -> Result<()> {
    let mut rng = Rng::new(0xC0FFEE ^ mono_ns());
    if ctx.peer == Peer::Weir {
        // Untimed: the id of one random event of the store (the daemon gave
        // the ids); the list of all of them is loaded after the first lookup.
        peers::weir_peer::first_id(ctx, &mut rng)?;
    }
    say("READY", "")?;
    wait_go()?;
    let faults = page_faults();
    let t0 = Instant::now();
    let mut r = peers::open_reader(ctx, n)?;
    let len = r.get(rng.below(n))?;
    let open_first = t0.elapsed();
    let faults_after = page_faults();
    if len < PAYLOAD_LEN {
        bail!("payload of {len} bytes, expected {PAYLOAD_LEN}");
    }
    let mut out = json!({
        "open_first_ms": open_first.as_secs_f64() * 1e3,
        "open_first_minflt": faults_after.0.saturating_sub(faults.0),
        "open_first_majflt": faults_after.1.saturating_sub(faults.1),
    });
    if phases {
        if ctx.peer == Peer::Weir {
            // Untimed, as a peer's ids are computed: every id, shuffled.
            peers::weir_peer::preload_ids(ctx)?;
        }
        let phase = Duration::from_secs_f64(phase_secs);
        // Each phase starts with an untimed warm-up of a fifth of a phase.
        let warm = phase / 5;
        // W3: random point lookups.
        timed(warm, 256, || r.get(rng.below(n)).map(|_| ()))?;
        let (ops, el) = timed(phase, 256, || r.get(rng.below(n)).map(|_| ()))?;
        out["lookups_per_s"] = json!(ops as f64 / el);
        // W3's floor: what no index can beat (weir only; see the row's note).
        let floor = r.payload_floor(&mut |step| rate(warm, phase, 256, step))?;
        if let Some(rate) = floor {
            out["floor_lookups_per_s"] = json!(rate);
        }
        // W3 through a batch API (weir's `get_many`), where a peer has one.
        let many = r.batched_lookups(n, MANY_PER_CALL, &mut |step| rate(warm, phase, 4, step))?;
        if let Some(rate) = many {
            out["many_lookups_per_s"] = json!(rate);
        }
        // W4: one entity's stream; checked against the expected length.
        let mut read = 0u64;
        let mut stream = |read: &mut u64| -> Result<()> {
            let e = rng.below(10_000.min(n));
            let want = n / 10_000 + u64::from(e < n % 10_000);
            let got = r.stream(&format!("user:{e}"))? as u64;
            if got != want {
                bail!("stream user:{e}: {got} events, expected {want}");
            }
            *read += got;
            Ok(())
        };
        timed(warm, 1, || stream(&mut 0))?;
        let (ops, el) = timed(phase, 1, || stream(&mut read))?;
        out["stream_events_per_s"] = json!(read as f64 / el);
        out["streams_per_s"] = json!(ops as f64 / el);
        // W5: count of one kind over the whole store; checked.
        let mut want = [0u64; KINDS as usize + 1];
        for i in 0..n {
            want[usize::from(kind_of(i))] += 1;
        }
        let mut count = || -> Result<()> {
            let k = rng.below(u64::from(KINDS)) as u16 + 1;
            let got = r.count_kind(k)?;
            if got != want[usize::from(k)] {
                bail!("count kind {k}: {got}, expected {}", want[usize::from(k)]);
            }
            Ok(())
        };
        timed(warm, 1, &mut count)?;
        let (ops, el) = timed(phase, 1, &mut count)?;
        out["counts_per_s"] = json!(ops as f64 / el);
        // W5b: count of one kind in one scope: a scan; checked.
        let mut want = BTreeMap::new();
        for i in 0..n {
            *want.entry((kind_of(i), scope_of(i))).or_insert(0u64) += 1;
        }
        let mut scoped = || -> Result<()> {
            let i = rng.below(n);
            let (k, sc) = (kind_of(i), scope_of(i));
            let got = r.count_kind_in_scope(k, &sc)?;
            let expected = want[&(k, sc.clone())];
            if got != expected {
                bail!("count kind {k} in {sc}: {got}, expected {expected}");
            }
            Ok(())
        };
        match timed(warm, 1, &mut scoped) {
            Ok(_) => {
                let (ops, el) = timed(phase, 1, &mut scoped)?;
                out["scoped_counts_per_s"] = json!(ops as f64 / el);
            }
            Err(e) => out["scoped_counts_error"] = json!(format!("{e:#}")),
        }
    }
    say("DONE", &out.to_string())
}

/// Runs `step` untimed for `warm`, then for `phase`; returns steps/s.
fn rate(
    warm: Duration,
    phase: Duration,
    round: u64,
    step: &mut dyn FnMut() -> Result<()>,
) -> Result<f64> {
    timed(warm, round, &mut *step)?;
    let (ops, el) = timed(phase, round, step)?;
    Ok(ops as f64 / el)
}

/// Ids per call of W3's batched lookups.
pub const MANY_PER_CALL: usize = 64;

/// Run `f` in rounds of `round` calls until `phase` has passed (at least one
/// round); returns (calls, seconds).
fn timed(phase: Duration, round: u64, mut f: impl FnMut() -> Result<()>) -> Result<(u64, f64)> {
    let t = Instant::now();
    let mut ops = 0;
    loop {
        for _ in 0..round {
            f()?;
        }
        ops += round;
        if t.elapsed() >= phase {
            return Ok((ops, t.elapsed().as_secs_f64()));
        }
    }
}
