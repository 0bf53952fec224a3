//! weir itself, two ways:
//!
//! - `weir` ([`Peer::Weir`](super::Peer::Weir)): the real daemon. The suite
//!   runs `target/release/weir serve --data-dir D --socket D/weir.sock --config
//!   F` for each write cell ([`Daemon`]), every client process talks to it
//!   through `weir::Client::connect(socket)`, and the daemon is stopped with
//!   SIGTERM (and reaped) after the cell. Its configuration is read back twice:
//!   `weir serve --print-config` with the same flags, and the live daemon's
//!   `Stats` (durable rows: fsyncs > 0, and every receipt a client gets must
//!   say `durable`; `sync = never` rows: fewer fsyncs than groups).
//! - `weir-inproc` ([`Peer::WeirInProc`](super::Peer::WeirInProc)): the same
//!   writer (`weir_daemon::store::Store`) linked into the benchmark process, no
//!   socket: issue 2's in-process writer throughput against batpak.
//!
//! Readers are `weir::Reader` (mmap) in their own processes either way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use weir::{Client, ClientOptions, EventId, EventKind, KindFilter, Region};
use weir_daemon::config::{Config, SyncPolicy};
use weir_daemon::store::Store;
use weir_protocol::wire::AppendRequest;

use super::{Ctx, Reader, Timer, Writer};
use crate::common::{Event, IdsRecorder, Rng, read_ids, read_random_id};

pub const DESCRIBE_DAEMON: &str = "the real daemon, `target/release/weir serve --data-dir D \
--socket D/weir.sock --config F` started by the suite for every write cell and stopped (SIGTERM, \
reaped) after it; F sets sync = \"always\" (the default: fdatasync before the ack, group commit) \
for durable rows and sync = \"never\" for W2b, everything else default (256 MiB preallocated \
segments); every client is its own OS process with one `weir::Client::connect(socket)` \
(append / append_batch, automatic idempotency keys, event ids assigned by the daemon); configuration \
read back with `weir serve --print-config` and from the live daemon's Stats (durable rows: \
fsyncs > 0, and every receipt must carry durable = true; sync = never: fsyncs < groups); \
read workloads: weir::Reader (mmap) in their own processes on a store the in-process writer \
built with the default config (sync = always: zero-filled segments), in batches of 256 (ids \
assigned by the daemon, as for a client that sends none: self-locating), W7 via \
wait_visible (futex) while a Client appends through the daemon";

pub const DESCRIBE: &str = "weir_daemon::Store (the daemon's writer thread, group commit, \
fdatasync) linked into the benchmark process, no socket; sync=always for durable rows, \
sync=never for W2b; event ids assigned by the writer (as batpak assigns its own); multi-client W1 rows run threads over one Store; \
read rows are the same reader on the same store as `weir` (not repeated)";

pub fn claim(durable: bool) -> String {
    format!("sync={}", if durable { "Always" } else { "Never" })
}

/// What the daemon rows claim, as [`Daemon::verify`] reads it back.
pub fn claim_daemon(durable: bool) -> String {
    if durable {
        "sync=always fsyncs>0".into()
    } else {
        "sync=never fsyncs<groups".into()
    }
}

/// Path of the `weir` binary: next to this benchmark binary (the same
/// `target/release`), built with `cargo build --release -p weir-cli` first so
/// that it is current.
pub fn weir_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_bin().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("{e}"))
}

fn locate_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let bin = dir.join("weir");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace")?;
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace)
        .args(["build", "-q", "-p", "weir-cli"])
        .stdin(Stdio::null());
    if profile == "release" {
        cmd.arg("--release");
    }
    match cmd.status() {
        Ok(st) if st.success() => {}
        Ok(st) => eprintln!("cargo build -p weir-cli: {st}; using {}", bin.display()),
        Err(e) => eprintln!("cargo unavailable ({e}); using {}", bin.display()),
    }
    if !bin.exists() {
        bail!(
            "n/a: {} not found (cargo build --release -p weir-cli)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A `weir serve` process the suite started for one cell.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    /// `sync` as `weir serve --print-config` reports it.
    sync: String,
}

impl Daemon {
    /// Start `weir serve` on `dir` (created empty by the caller) with
    /// `sync = always` (durable) or `never`, and wait until it answers a ping.
    pub fn start(dir: &Path, durable: bool) -> Result<Daemon> {
        let bin = weir_bin()?;
        let socket = dir.join("weir.sock");
        let config = dir.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "sync = \"{}\"\nlog-level = \"warn\"\n",
                if durable { "always" } else { "never" }
            ),
        )?;
        let args = |c: &mut Command| {
            c.arg("serve")
                .arg("--data-dir")
                .arg(dir)
                .arg("--socket")
                .arg(&socket)
                .arg("--config")
                .arg(&config)
                .env_remove("WEIR_CONFIG")
                .env_remove("WEIR_SYNC")
                .env_remove("RUST_LOG");
        };
        let mut pc = Command::new(&bin);
        args(&mut pc);
        let out = pc.arg("--print-config").output()?;
        if !out.status.success() {
            bail!(
                "weir serve --print-config: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let sync = text
            .lines()
            .find_map(|l| l.strip_prefix("sync = "))
            .map(|v| v.trim().trim_matches('"').to_string())
            .context("print-config has no sync line")?;
        let mut c = Command::new(&bin);
        args(&mut c);
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start weir serve")?;
        let mut d = Daemon {
            child: Some(child),
            socket,
            sync,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                d.child = None;
                bail!("weir serve exited at start with {st}");
            }
            if d.socket.exists()
                && let Ok(mut cl) = Client::connect_with(&d.socket, quick_opts())
                && cl.ping().is_ok()
            {
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!("weir serve did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The configuration read back: `sync` from `--print-config`, and from the
    /// live daemon's Stats that durable rows were fsynced (`fsyncs > 0`; every
    /// receipt is also checked for `durable` by the clients) and that
    /// `sync = never` rows were not fsynced per group (`fsyncs < groups`).
    /// Also returns a one-line summary of the daemon's counters.
    pub fn verify(&self) -> Result<(String, String)> {
        let mut c = Client::connect_with(&self.socket, quick_opts())?;
        let s = c.stats()?;
        if s.groups == 0 {
            bail!("the daemon committed no group");
        }
        let check = if self.sync == "always" {
            if s.fsyncs > 0 { "fsyncs>0" } else { "fsyncs=0" }
        } else if s.fsyncs < s.groups {
            "fsyncs<groups"
        } else {
            "fsyncs>=groups"
        };
        let rejected: u64 = s.rejected.values().sum();
        let detail = format!(
            "{} events in {} groups ({:.1} events/group), {} fsyncs, {} rejected",
            s.appends,
            s.groups,
            s.appends as f64 / s.groups as f64,
            s.fsyncs,
            rejected
        );
        Ok((format!("sync={} {check}", self.sync), detail))
    }

    /// SIGTERM, then wait for a clean exit (status 0).
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait()? {
                if !st.success() {
                    bail!("weir serve exited with {st} after SIGTERM");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("weir serve did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn quick_opts() -> ClientOptions {
    ClientOptions::default()
        .retry_for(Duration::from_secs(2))
        .io_timeout(Duration::from_secs(10))
}

/// One `weir::Client` connection (one per client process).
pub struct ClientWriter {
    c: Client,
    durable: bool,
}

impl ClientWriter {
    /// Durable rows: every receipt must say `durable`.
    fn check(&self, r: &weir::Receipt) -> Result<()> {
        if self.durable && !r.durable {
            bail!(
                "REFUSED: durable row, but the daemon acknowledged seq {} as not durable",
                r.sequence
            );
        }
        Ok(())
    }
}

impl Writer for ClientWriter {
    fn append(&mut self, ev: &Event) -> Result<()> {
        let r = self
            .c
            .append_with(request(ev))
            .map_err(|e| anyhow!("weir Client append: {e}"))?;
        self.check(&r)
    }

    fn append_batch(&mut self, evs: &[Event]) -> Result<()> {
        let rs = self
            .c
            .append_batch(evs.iter().map(request).collect())
            .map_err(|e| anyhow!("weir Client append_batch: {e}"))?;
        if rs.len() != evs.len() {
            bail!(
                "weir Client append_batch: {} receipts for {}",
                rs.len(),
                evs.len()
            );
        }
        rs.iter().try_for_each(|r| self.check(r))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// Worker side: connect to the daemon the suite started. The configuration
/// is verified by the parent (it owns the daemon), so this returns a marker.
pub fn open_client(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    let sock = ctx
        .socket
        .as_ref()
        .context("no weir socket (daemon not started)")?;
    let c = Client::connect(sock).map_err(|e| anyhow!("weir Client::connect: {e}"))?;
    Ok((
        Box::new(ClientWriter {
            c,
            durable: ctx.durable,
        }),
        "client".into(),
    ))
}

/// weir kinds: category 0x1, type 1..=8 (0x0 and 0xD are reserved).
fn kind(k: u16) -> u16 {
    0x1000 | k
}

/// No event id: the daemon assigns one (self-locating), as for any client
/// that sends none, and as batpak assigns its own.
fn request(ev: &Event) -> AppendRequest {
    AppendRequest {
        entity: ev.entity.clone(),
        scope: ev.scope.clone(),
        kind: kind(ev.kind),
        payload: ev.payload.clone(),
        ..AppendRequest::default()
    }
}

pub struct WeirWriter {
    store: Store,
    /// Outcomes of submitted batches (events acknowledged, or the error).
    acks: Acks,
    in_flight: usize,
    /// Read-store builds: where the ids the daemon assigned go, in
    /// sequence order ([`IDS_FILE`](crate::common::IDS_FILE)).
    assigned: Option<IdsRecorder>,
}

type Ack = Result<usize, String>;
type Acks = (mpsc::Sender<Ack>, mpsc::Receiver<Ack>);

impl WeirWriter {
    fn new(store: Store) -> Self {
        WeirWriter {
            store,
            acks: mpsc::channel(),
            in_flight: 0,
            assigned: None,
        }
    }

    pub fn clone_handle(&self) -> WeirWriter {
        WeirWriter::new(self.store.clone())
    }
}

impl Writer for WeirWriter {
    fn append(&mut self, ev: &Event) -> Result<()> {
        self.store
            .append(request(ev))
            .map_err(|e| anyhow!("weir append: {e:?}"))?;
        Ok(())
    }

    fn append_batch(&mut self, evs: &[Event]) -> Result<()> {
        let receipts = self
            .store
            .append_batch(evs.iter().map(request).collect())
            .map_err(|e| anyhow!("weir append_batch: {e:?}"))?;
        if let Some(ids) = &mut self.assigned {
            ids.record(receipts.iter().map(|r| r.event_id))?;
        }
        Ok(())
    }

    fn queue_batch(&mut self, evs: &[Event]) -> Result<bool> {
        let tx = self.acks.0.clone();
        self.store
            .submit(
                evs.iter().map(request).collect(),
                Box::new(move |r| {
                    let _ = tx.send(r.map(|v| v.len()).map_err(|e| format!("{e:?}")));
                }),
            )
            .map_err(|e| anyhow!("weir submit: {e:?}"))?;
        self.in_flight += 1;
        Ok(true)
    }

    fn queued(&self) -> usize {
        self.in_flight
    }

    fn wait_oldest(&mut self) -> Result<u64> {
        let n = self
            .acks
            .1
            .recv()
            .map_err(|_| anyhow!("weir submit: the writer dropped a reply"))?
            .map_err(|e| anyhow!("weir submit: {e}"))?;
        self.in_flight -= 1;
        Ok(n as u64)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.store
            .shutdown()
            .map_err(|e| anyhow!("weir shutdown: {e}"))?;
        match self.assigned {
            Some(ids) => ids.finish(),
            None => Ok(()),
        }
    }
}

/// A writer for building a read store: `finish` saves the ids the daemon
/// assigned to [`IDS_FILE`](crate::common::IDS_FILE). The store is written
/// as `weir serve` writes it by default (sync = always), so that readers
/// find the segments' pages as its users' readers do: zero-filled first,
/// hence cached in 2 MiB folios (FORMAT.md, "Media assumptions").
/// Under `never` the page cache would hold small folios instead, and
/// lookups would run ≈ 20 % slower (bench/README, "Segments in 2 MiB folios").
pub fn open_read_builder(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    let (mut w, v) = open_weir(&Ctx {
        durable: true,
        ..ctx.clone()
    })?;
    w.assigned = Some(IdsRecorder::create(&ctx.dir)?);
    Ok((Box::new(w), v))
}

/// The read store's ids, shuffled, loaded before a timed phase by
/// [`preload_ids`]: lookups then take them in this order (a random order,
/// laid out in sequence, so that picking the next id costs no cache miss,
/// as a peer's computed id costs none).
static PRELOADED: std::sync::OnceLock<Vec<u128>> = std::sync::OnceLock::new();

/// The id a first lookup (W6) takes, read by [`first_id`] before the
/// timed open: one id, so that the process holds no list while it opens.
static FIRST: std::sync::Mutex<Option<u128>> = std::sync::Mutex::new(None);

/// Reads (untimed) the id of a random event of the weir read store at
/// `ctx.dir` for the next lookup: 16 bytes of [`IDS_FILE`](crate::common::IDS_FILE).
pub fn first_id(ctx: &Ctx, rng: &mut Rng) -> Result<()> {
    let id = read_random_id(&ctx.dir, rng)?;
    *FIRST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id);
    Ok(())
}

/// Loads (untimed) the ids of the weir read store at `ctx.dir`.
pub fn preload_ids(ctx: &Ctx) -> Result<()> {
    let mut ids = read_ids(&ctx.dir)?;
    Rng::new(0x1D5 ^ ids.len() as u64).shuffle(&mut ids);
    let _ = PRELOADED.set(ids);
    Ok(())
}

pub fn open_weir(ctx: &Ctx) -> Result<(WeirWriter, String)> {
    let mut cfg = Config::new(&ctx.dir);
    cfg.sync = if ctx.durable {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    let store = Store::open(cfg).map_err(|e| anyhow!("weir open: {e:?}"))?;
    let verified = format!("sync={:?}", store.config().sync);
    Ok((WeirWriter::new(store), verified))
}

pub fn open_writer(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    let (w, v) = open_weir(ctx)?;
    Ok((Box::new(w), v))
}

struct WeirReader {
    r: weir::Reader,
    /// The id [`first_id`] read, for the first lookup only.
    first: Option<u128>,
    /// Where the next lookup takes its id from [`PRELOADED`].
    next: usize,
}

pub fn open_reader(ctx: &Ctx, _n: u64) -> Result<Box<dyn Reader>> {
    let r = weir::Reader::open(&ctx.dir).map_err(|e| anyhow!("weir Reader::open: {e:?}"))?;
    // Taken once here: a lock per lookup would put two locked instructions
    // (full memory barriers) between consecutive timed lookups.
    let first = FIRST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    Ok(Box::new(WeirReader { r, first, next: 0 }))
}

impl WeirReader {
    /// The id of a random event: the one [`first_id`] read, once; then
    /// the next preloaded one if the ids were preloaded (timed lookups);
    /// else the id of event `i` (sequence `i`), read from the index.
    fn id(&mut self, i: u64) -> Result<EventId> {
        if let Some(id) = self.first.take() {
            return Ok(EventId(id));
        }
        if let Some(ids) = PRELOADED.get().filter(|v| !v.is_empty()) {
            // No division: a 64-bit `%` per lookup costs more than the rest
            // of picking the id.
            self.next += 1;
            if self.next >= ids.len() {
                self.next = 0;
            }
            return Ok(EventId(ids[self.next]));
        }
        let page = self
            .r
            .query_after(&Region::all(), i.checked_sub(1), 1)
            .map_err(|e| anyhow!("weir query_after: {e:?}"))?;
        Ok(page
            .first()
            .context("weir: no event at that sequence")?
            .event_id())
    }
}

impl Reader for WeirReader {
    fn get(&mut self, i: u64) -> Result<usize> {
        let id = self.id(i)?;
        let e = self
            .r
            .get(id)
            .map_err(|e| anyhow!("weir get: {e:?}"))?
            .context("weir: id not found")?;
        Ok(e.payload().map_err(|e| anyhow!("{e:?}"))?.len())
    }

    fn stream(&mut self, entity: &str) -> Result<usize> {
        let mut n = 0;
        for e in self.r.stream(entity).map_err(|e| anyhow!("{e:?}"))? {
            n += usize::from(!e.payload().map_err(|e| anyhow!("{e:?}"))?.is_empty());
        }
        Ok(n)
    }

    fn count_kind(&mut self, k: u16) -> Result<u64> {
        let region = Region::all().with_kind(KindFilter::Exact(EventKind(kind(k))));
        self.r.count(&region).map_err(|e| anyhow!("{e:?}"))
    }

    fn count_kind_in_scope(&mut self, k: u16, scope: &str) -> Result<u64> {
        let region = Region::all()
            .with_scope(scope)
            .with_kind(KindFilter::Exact(EventKind(kind(k))));
        self.r.count(&region).map_err(|e| anyhow!("{e:?}"))
    }

    fn wait_next(&mut self, after: Option<u64>, timeout: Duration) -> Result<Option<u64>> {
        // Sequences start at 0 in a fresh store with one writer, so seq == i.
        let want = after.map_or(0, |a| a + 1);
        if !self
            .r
            .wait_visible(want, timeout)
            .map_err(|e| anyhow!("{e:?}"))?
        {
            return Ok(None);
        }
        let v = self.r.visible();
        if v == 0 {
            bail!("weir: visible is 0 after wait");
        }
        Ok(Some(v - 1))
    }

    fn batched_lookups(
        &mut self,
        n: u64,
        per_call: usize,
        time: &mut Timer<'_>,
    ) -> Result<Option<f64>> {
        let mut rng = Rng::new(0xBA7C4 ^ crate::common::mono_ns());
        let mut ids = vec![EventId(0); per_call];
        let calls = time(&mut || {
            for id in &mut ids {
                *id = self.id(rng.below(n))?;
            }
            for e in self
                .r
                .get_many(&ids)
                .map_err(|e| anyhow!("weir get_many: {e:?}"))?
            {
                let e = e.context("weir: id not found")?;
                e.payload().map_err(|e| anyhow!("{e:?}"))?;
            }
            Ok(())
        })?;
        Ok(Some(calls * per_call as f64))
    }

    fn payload_floor(&mut self, time: &mut Timer<'_>) -> Result<Option<f64>> {
        // Every visible payload, as slices of the mapped segments, in a
        // random order laid out in sequence: the oracle's "index" costs one
        // sequential read per lookup, which the CPU prefetches.
        let mut payloads: Vec<&[u8]> = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .r
                .query_after(&Region::all(), after, 1 << 16)
                .map_err(|e| anyhow!("weir query_after: {e:?}"))?;
            let Some(last) = page.last() else { break };
            after = Some(last.sequence());
            for e in &page {
                payloads.push(e.payload().map_err(|e| anyhow!("{e:?}"))?);
            }
        }
        if payloads.is_empty() {
            bail!("weir: no events for the payload floor");
        }
        Rng::new(0x5EED ^ payloads.len() as u64).shuffle(&mut payloads);
        let mut i = 0;
        let mut sink = 0u32;
        let rate = time(&mut || {
            sink ^= weir_protocol::crc32(std::hint::black_box(payloads[i]));
            i = (i + 1) % payloads.len();
            Ok(())
        })?;
        std::hint::black_box(sink);
        Ok(Some(rate))
    }
}
