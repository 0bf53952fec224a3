//! The stores under test behind one small interface, so that a workload is written
//! once and every peer (and weir, once its adapters are wired) runs the same code.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::common::Event;

pub mod batpak_peer;
pub mod lmdb;
pub mod redis;
pub mod resp;
pub mod sqlite;
pub mod weir_peer;

/// Every store the suite knows, in table order (weir first).
pub const ALL: [Peer; 6] = [
    Peer::Weir,
    Peer::WeirInProc,
    Peer::Batpak,
    Peer::Sqlite,
    Peer::Lmdb,
    Peer::Redis,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Peer {
    /// The real daemon (`weir serve`), appends through `weir::Client` over its
    /// socket; reads through `weir::Reader`.
    Weir,
    /// The daemon's writer (`weir_daemon::Store`) linked into the benchmark
    /// process: writer throughput without the socket (issue 2's comparison).
    WeirInProc,
    Batpak,
    Sqlite,
    Lmdb,
    Redis,
}

/// Where a store lives and how durable its writes must be. Passed to worker
/// processes as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ctx {
    pub peer: Peer,
    /// Data directory (file stores) or scratch directory (Redis).
    pub dir: PathBuf,
    /// Redis: the server's unix socket and the logical database to use.
    pub redis_socket: Option<PathBuf>,
    pub redis_db: u32,
    /// Durable rows: the ack means the event survives power loss.
    pub durable: bool,
    /// weir: the daemon's append socket (set while the suite runs `weir serve`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// Whether a peer can host writers in several OS processes at once.
pub enum WriterModel {
    /// Each client is its own OS process.
    MultiProcess,
    /// The store admits one process; clients are threads in that process.
    SingleProcess,
}

/// An appender: one connection / handle, owned by one thread.
pub trait Writer: Send {
    /// Append one event; returns once the store acknowledged it at the
    /// durability of `Ctx::durable`.
    fn append(&mut self, ev: &Event) -> Result<()>;
    /// Append all of `evs` atomically at the durability of `Ctx::durable`.
    fn append_batch(&mut self, evs: &[Event]) -> Result<()>;
    /// Queue all of `evs` as one atomic batch without waiting for it, if
    /// this peer can; `false`: it cannot, and nothing was done.
    fn queue_batch(&mut self, _evs: &[Event]) -> Result<bool> {
        Ok(false)
    }
    /// Batches queued and not yet waited for.
    fn queued(&self) -> usize {
        0
    }
    /// Wait for the oldest queued batch; returns its events.
    fn wait_oldest(&mut self) -> Result<u64> {
        anyhow::bail!("no batch queued")
    }
    /// Append all of `evs` as one atomic batch, keeping at most `depth`
    /// batches in flight where the peer can queue one, so that the producer
    /// builds the next batch while the store writes this one; returns the
    /// events acknowledged while it ran. Only without durability (the CPU
    /// ceiling). A peer that cannot queue appends synchronously.
    fn submit_batch(&mut self, evs: &[Event], depth: usize) -> Result<u64> {
        if !self.queue_batch(evs)? {
            self.append_batch(evs)?;
            return Ok(evs.len() as u64);
        }
        let mut acked = 0;
        while self.queued() >= depth.max(1) {
            acked += self.wait_oldest()?;
        }
        Ok(acked)
    }
    /// Wait for every batch `submit_batch` queued; returns their events.
    fn drain(&mut self) -> Result<u64> {
        let mut acked = 0;
        while self.queued() > 0 {
            acked += self.wait_oldest()?;
        }
        Ok(acked)
    }
    /// Close cleanly (flush whatever a clean close writes).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// What W3 asks of every lookup: every payload byte touched and CRC-checked.
/// weir's `payload()` checks the CRC of the frame the payload lies in; the
/// peers store no CRC, so they compute the payload's (the work a check
/// costs). Returns the payload's length.
pub fn touched(payload: &[u8]) -> usize {
    std::hint::black_box(weir_protocol::crc32(payload));
    payload.len()
}

/// A reader in its own process.
pub trait Reader {
    /// Look up event `i` by its id, touching and CRC-checking its payload
    /// ([`touched`]); returns the payload length read.
    fn get(&mut self, i: u64) -> Result<usize>;
    /// Read one entity's whole stream, payloads included; returns events read.
    fn stream(&mut self, entity: &str) -> Result<usize>;
    /// Count the events of one kind over the whole store.
    fn count_kind(&mut self, kind: u16) -> Result<u64>;
    /// Count the events of one kind in one scope (a query no index answers
    /// alone: it scans).
    fn count_kind_in_scope(&mut self, _kind: u16, _scope: &str) -> Result<u64> {
        anyhow::bail!("n/a: not implemented for this peer")
    }
    /// Block (or poll) until an event newer than `after` is visible; returns the
    /// index `i` of the newest visible event, or None on timeout.
    fn wait_next(&mut self, after: Option<u64>, timeout: Duration) -> Result<Option<u64>>;
    /// The payload floor (weir only): an oracle "lookup" that already knows
    /// where every payload lies, so it only reads and CRC-checks it. `time`
    /// runs one such lookup repeatedly and returns lookups/s. `None` for
    /// peers that have none.
    fn payload_floor(&mut self, _time: &mut Timer<'_>) -> Result<Option<f64>> {
        Ok(None)
    }
    /// Random point lookups (payloads read) `per_call` at a time through a
    /// batch API, for peers that have one: `time` runs one call repeatedly
    /// and returns calls/s; the answer is lookups/s.
    fn batched_lookups(
        &mut self,
        _n: u64,
        _per_call: usize,
        _time: &mut Timer<'_>,
    ) -> Result<Option<f64>> {
        Ok(None)
    }
}

/// Times a closure that does one operation per call; returns operations/s.
pub type Timer<'a> = dyn FnMut(&mut dyn FnMut() -> Result<()>) -> Result<f64> + 'a;

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Weir => "weir",
            Peer::WeirInProc => "weir-inproc",
            Peer::Batpak => "batpak",
            Peer::Sqlite => "sqlite",
            Peer::Lmdb => "lmdb",
            Peer::Redis => "redis",
        }
    }

    /// The column heading in the table.
    pub fn label(self) -> &'static str {
        match self {
            Peer::WeirInProc => "weir (in-process)",
            p => p.name(),
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        for p in ALL {
            if p.name().eq_ignore_ascii_case(s) {
                return Ok(p);
            }
        }
        bail!("unknown store {s:?}")
    }

    pub fn writer_model(self) -> WriterModel {
        match self {
            Peer::Batpak | Peer::WeirInProc => WriterModel::SingleProcess,
            _ => WriterModel::MultiProcess,
        }
    }

    /// The configuration a row claims, in the exact form `verify` reads back.
    pub fn claim(self, durable: bool) -> String {
        match self {
            Peer::Weir => weir_peer::claim_daemon(durable),
            Peer::WeirInProc => weir_peer::claim(durable),
            Peer::Batpak => batpak_peer::claim(durable),
            Peer::Sqlite => sqlite::claim(durable),
            Peer::Lmdb => lmdb::claim(durable),
            Peer::Redis => redis::claim(durable),
        }
    }

    /// A human description of the setup, printed with the table.
    pub fn describe(self) -> &'static str {
        match self {
            Peer::Weir => weir_peer::DESCRIBE_DAEMON,
            Peer::WeirInProc => weir_peer::DESCRIBE,
            Peer::Batpak => batpak_peer::DESCRIBE,
            Peer::Sqlite => sqlite::DESCRIBE,
            Peer::Lmdb => lmdb::DESCRIBE,
            Peer::Redis => redis::DESCRIBE,
        }
    }
}

/// Open a writer; also returns the configuration read back from the live store.
pub fn open_writer(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    match ctx.peer {
        Peer::Weir => weir_peer::open_client(ctx),
        Peer::WeirInProc => weir_peer::open_writer(ctx),
        Peer::Batpak => batpak_peer::open_writer(ctx),
        Peer::Sqlite => sqlite::open_writer(ctx),
        Peer::Lmdb => lmdb::open_writer(ctx),
        Peer::Redis => redis::open_writer(ctx),
    }
}

/// Open a reader over an existing store (`n` = events it holds).
pub fn open_reader(ctx: &Ctx, n: u64) -> Result<Box<dyn Reader>> {
    match ctx.peer {
        Peer::Weir | Peer::WeirInProc => weir_peer::open_reader(ctx, n),
        Peer::Batpak => batpak_peer::open_reader(ctx, n),
        Peer::Sqlite => sqlite::open_reader(ctx),
        Peer::Lmdb => lmdb::open_reader(ctx),
        Peer::Redis => redis::open_reader(ctx),
    }
}

/// Extra process holding the data, if any (Redis server), for memory notes.
pub fn server_pid(ctx: &Ctx) -> Option<u32> {
    match ctx.peer {
        Peer::Redis => redis::server_pid(ctx),
        _ => None,
    }
}
