//! Worker processes: the bench binary re-executed with a hidden subcommand, so
//! that clients and readers are real OS processes. Protocol on stdio:
//! worker prints `READY <verified config>`, waits for a line on stdin (GO),
//! runs, prints `DONE <json>`, then closes its store and exits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{BATCH, Event, KINDS, PAYLOAD_LEN, Rng, kind_of, make_event, mono_ns};
use crate::peers::{self, Ctx, Peer};

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__worker";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Role {
    /// W1: `threads` appenders in this process, `per_thread` single appends each.
    Append {
        threads: usize,
        per_thread: u64,
        base: u64,
    },
    /// W2 / W2b: batches of 256.
    Batches { events: u64, base: u64 },
    /// W3-W6 on an `n`-event store: open + first answer, then timed phases.
    Query {
        n: u64,
        phase_secs: f64,
        phases: bool,
    },
    /// W8: attach, touch the store, then stay resident until stdin closes.
    Resident { n: u64 },
    /// W7 reader: wait for events 0..k as they become visible.
    Waiter { k: u64 },
    /// W7 writer: append events 0..k one at a time, `gap_us` apart.
    Pacer { k: u64, gap_us: u64 },
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
        let i = self.inp.as_mut().context("stdin closed")?;
        i.write_all(b"go\n")?;
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

/// Start all jobs, wait until every one is READY, release them at once and
/// time until the last DONE. Worker startup and store opening are excluded.
pub fn run_group(jobs: &[Job]) -> Result<GroupRun> {
    let mut procs = Vec::with_capacity(jobs.len());
    for j in jobs {
        procs.push(Proc::spawn(j)?);
    }
    let res = (|| {
        let mut verified = Vec::new();
        for p in &mut procs {
            verified.push(p.ready()?);
        }
        let t0 = Instant::now();
        for p in &mut procs {
            p.go()?;
        }
        let mut outputs = Vec::new();
        for p in &mut procs {
            outputs.push(p.done()?);
        }
        Ok(GroupRun {
            verified,
            wall: t0.elapsed(),
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

fn events(base: u64, n: u64) -> Vec<Event> {
    (base..base + n).map(make_event).collect()
}

fn run(job: &Job) -> Result<()> {
    let ctx = &job.ctx;
    match job.role {
        Role::Append {
            threads,
            per_thread,
            base,
        } => append(ctx, threads, per_thread, base),
        Role::Batches { events: n, base } => {
            let (mut w, verified) = peers::open_writer(ctx)?;
            let evs = events(base, n);
            say("READY", &verified)?;
            wait_go()?;
            for chunk in evs.chunks(BATCH) {
                w.append_batch(chunk)?;
            }
            say("DONE", &json!({}).to_string())?;
            w.finish()
        }
        Role::Query {
            n,
            phase_secs,
            phases,
        } => query(ctx, n, phase_secs, phases),
        Role::Resident { n } => {
            let mut r = peers::open_reader(ctx, n)?;
            let mut rng = Rng::new(7);
            for _ in 0..10_000 {
                r.get(rng.below(n))?;
            }
            for _ in 0..100 {
                r.stream(&crate::common::entity_of(rng.below(n)))?;
            }
            for k in 1..=KINDS {
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
    }
}

/// An appender thread's handle back, with its per-append latencies (µs).
type AppenderDone = (Box<dyn peers::Writer>, Vec<u32>);

fn append(ctx: &Ctx, threads: usize, per_thread: u64, base: u64) -> Result<()> {
    let mut writers: Vec<Box<dyn peers::Writer>> = Vec::new();
    let verified = if ctx.peer == Peer::Weir {
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
    let batches: Vec<Vec<Event>> = (0..threads as u64)
        .map(|t| events(base + t * per_thread, per_thread))
        .collect();
    say("READY", &verified)?;
    wait_go()?;
    let results: Vec<Result<AppenderDone>> = std::thread::scope(|s| {
        let hs: Vec<_> = writers
            .into_iter()
            .zip(&batches)
            .map(|(mut w, evs)| {
                s.spawn(move || -> Result<_> {
                    let mut lat = Vec::with_capacity(evs.len());
                    for ev in evs {
                        let t = Instant::now();
                        w.append(ev)?;
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                    Ok((w, lat))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("appender panicked")))
            .collect()
    });
    let mut lat = Vec::new();
    let mut ws = Vec::new();
    for r in results {
        let (w, l) = r?;
        lat.extend(l);
        ws.push(w);
    }
    say("DONE", &json!({ "lat_us": lat }).to_string())?;
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
    say("READY", "")?;
    wait_go()?;
    let t0 = Instant::now();
    let mut r = peers::open_reader(ctx, n)?;
    let len = r.get(rng.below(n))?;
    let open_first = t0.elapsed();
    if len < PAYLOAD_LEN {
        bail!("payload of {len} bytes, expected {PAYLOAD_LEN}");
    }
    let mut out = json!({ "open_first_ms": open_first.as_secs_f64() * 1e3 });
    if phases {
        let phase = Duration::from_secs_f64(phase_secs);
        for _ in 0..2000 {
            r.get(rng.below(n))?;
        }
        // W3: random point lookups.
        let (ops, el) = timed(phase, 256, || r.get(rng.below(n)).map(|_| ()))?;
        out["lookups_per_s"] = json!(ops as f64 / el);
        // W4: one entity's stream; checked against the expected length.
        let mut read = 0u64;
        let (ops, el) = timed(phase, 1, || {
            let e = rng.below(10_000.min(n));
            let want = n / 10_000 + u64::from(e < n % 10_000);
            let got = r.stream(&format!("user:{e}"))? as u64;
            if got != want {
                bail!("stream user:{e}: {got} events, expected {want}");
            }
            read += got;
            Ok(())
        })?;
        out["stream_events_per_s"] = json!(read as f64 / el);
        out["streams_per_s"] = json!(ops as f64 / el);
        // W5: count of one kind over the whole store; checked.
        let mut want = [0u64; KINDS as usize + 1];
        for i in 0..n {
            want[usize::from(kind_of(i))] += 1;
        }
        let (ops, el) = timed(phase, 1, || {
            let k = rng.below(u64::from(KINDS)) as u16 + 1;
            let got = r.count_kind(k)?;
            if got != want[usize::from(k)] {
                bail!("count kind {k}: {got}, expected {}", want[usize::from(k)]);
            }
            Ok(())
        })?;
        out["counts_per_s"] = json!(ops as f64 / el);
    }
    say("DONE", &out.to_string())
}

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
