//! LMDB via heed: records by id, plus entity and kind indexes, one write
//! transaction per event (W1) or per batch (W2). Multi-process by design.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions};

use super::{Ctx, Reader, Writer};
use crate::common::{Event, event_id};

pub const DESCRIBE: &str = "heed 0.22 (LMDB 0.9), map 64 GiB, default flags (fsync on commit) for \
durable rows, NO_SYNC for W2b; dbs: events id->record, by_entity (entity,0,seq)->id, \
by_kind (kind,seq)->id, meta count; one write txn per event (W1) or per batch (W2); \
W7 reader polls every 100 µs";

const NO_SYNC_BIT: u32 = 0x10000; // MDB_NOSYNC

pub fn claim(durable: bool) -> String {
    format!("no_sync={}", !durable)
}

struct Dbs {
    events: Database<Bytes, Bytes>,
    by_entity: Database<Bytes, Bytes>,
    by_kind: Database<Bytes, Bytes>,
    meta: Database<Bytes, Bytes>,
}

fn open_env(ctx: &Ctx, write: bool) -> Result<(Env, Dbs)> {
    std::fs::create_dir_all(&ctx.dir)?;
    let mut opts = EnvOpenOptions::new();
    opts.map_size(64 << 30).max_dbs(8).max_readers(256);
    if !ctx.durable {
        // SAFETY: NO_SYNC only weakens durability (the W2b row claims that); it
        // cannot corrupt memory.
        unsafe { opts.flags(EnvFlags::NO_SYNC) };
    }
    // SAFETY: the bench never opens one env twice in a process and never
    // truncates the files under a live mapping.
    let env = unsafe { opts.open(&ctx.dir) }.context("lmdb open")?;
    let dbs = if write {
        let mut wtxn = env.write_txn()?;
        let d = Dbs {
            events: env.create_database(&mut wtxn, Some("events"))?,
            by_entity: env.create_database(&mut wtxn, Some("by_entity"))?,
            by_kind: env.create_database(&mut wtxn, Some("by_kind"))?,
            meta: env.create_database(&mut wtxn, Some("meta"))?,
        };
        wtxn.commit()?;
        d
    } else {
        let rtxn = env.read_txn()?;
        let open = |name| -> Result<Database<Bytes, Bytes>> {
            env.open_database(&rtxn, Some(name))?
                .with_context(|| format!("lmdb db {name} missing"))
        };
        let d = Dbs {
            events: open("events")?,
            by_entity: open("by_entity")?,
            by_kind: open("by_kind")?,
            meta: open("meta")?,
        };
        // heed: commit the read txn so the dbi handles stay valid for the env.
        rtxn.commit()?;
        d
    };
    Ok((env, dbs))
}

fn entity_key(entity: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(entity.len() + 9);
    k.extend_from_slice(entity.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn record(ev: &Event, seq: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(16 + ev.entity.len() + ev.scope.len() + ev.payload.len());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&ev.kind.to_le_bytes());
    r.push(ev.entity.len() as u8);
    r.push(ev.scope.len() as u8);
    r.extend_from_slice(ev.entity.as_bytes());
    r.extend_from_slice(ev.scope.as_bytes());
    r.extend_from_slice(&ev.payload);
    r
}

/// Payload of a stored record (what a reader touches).
fn payload_of(r: &[u8]) -> &[u8] {
    let skip = 12 + usize::from(r[10]) + usize::from(r[11]);
    &r[skip.min(r.len())..]
}

struct LmdbWriter {
    env: Env,
    dbs: Dbs,
}

impl Writer for LmdbWriter {
    fn append(&mut self, ev: &Event) -> Result<()> {
        self.append_batch(std::slice::from_ref(ev))
    }

    fn append_batch(&mut self, evs: &[Event]) -> Result<()> {
        let mut w = self.env.write_txn()?;
        let mut count = match self.dbs.meta.get(&w, b"count")? {
            Some(b) => u64::from_le_bytes(b.try_into()?),
            None => 0,
        };
        for ev in evs {
            let seq = count;
            count += 1;
            let id = ev.id.to_be_bytes();
            self.dbs.events.put(&mut w, &id, &record(ev, seq))?;
            self.dbs
                .by_entity
                .put(&mut w, &entity_key(&ev.entity, seq), &id)?;
            let mut kk = [0u8; 10];
            kk[..2].copy_from_slice(&ev.kind.to_be_bytes());
            kk[2..].copy_from_slice(&seq.to_be_bytes());
            self.dbs.by_kind.put(&mut w, &kk, &id)?;
            self.dbs.meta.put(&mut w, b"last_i", &ev.i.to_le_bytes())?;
        }
        self.dbs.meta.put(&mut w, b"count", &count.to_le_bytes())?;
        w.commit()?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.env.force_sync()?;
        Ok(())
    }
}

pub fn open_writer(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    let (env, dbs) = open_env(ctx, true)?;
    let flags = env.get_flags()?;
    let verified = format!("no_sync={}", flags & NO_SYNC_BIT != 0);
    Ok((Box::new(LmdbWriter { env, dbs }), verified))
}

struct LmdbReader {
    env: Env,
    dbs: Dbs,
}

pub fn open_reader(ctx: &Ctx) -> Result<Box<dyn Reader>> {
    let (env, dbs) = open_env(ctx, false)?;
    Ok(Box::new(LmdbReader { env, dbs }))
}

impl Reader for LmdbReader {
    fn get(&mut self, i: u64) -> Result<usize> {
        let r = self.env.read_txn()?;
        let rec = self
            .dbs
            .events
            .get(&r, &event_id(i).to_be_bytes())?
            .context("lmdb: id not found")?;
        Ok(super::touched(payload_of(rec)))
    }

    fn stream(&mut self, entity: &str) -> Result<usize> {
        let r = self.env.read_txn()?;
        let mut prefix = entity.as_bytes().to_vec();
        prefix.push(0);
        let mut n = 0;
        for item in self.dbs.by_entity.prefix_iter(&r, &prefix)? {
            let (_, id) = item?;
            let rec = self.dbs.events.get(&r, id)?.context("dangling index")?;
            n += usize::from(!payload_of(rec).is_empty());
        }
        Ok(n)
    }

    fn count_kind(&mut self, kind: u16) -> Result<u64> {
        let r = self.env.read_txn()?;
        let mut n = 0;
        for item in self.dbs.by_kind.prefix_iter(&r, &kind.to_be_bytes())? {
            item?;
            n += 1;
        }
        Ok(n)
    }

    fn count_kind_in_scope(&mut self, kind: u16, scope: &str) -> Result<u64> {
        // The kind index, then each record's scope.
        let r = self.env.read_txn()?;
        let mut n = 0;
        for item in self.dbs.by_kind.prefix_iter(&r, &kind.to_be_bytes())? {
            let (_, id) = item?;
            let rec = self.dbs.events.get(&r, id)?.context("dangling index")?;
            let at = 12 + usize::from(rec[10]);
            n += u64::from(rec.get(at..at + usize::from(rec[11])) == Some(scope.as_bytes()));
        }
        Ok(n)
    }

    fn wait_next(&mut self, after: Option<u64>, timeout: Duration) -> Result<Option<u64>> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.env.read_txn()?;
            if let Some(b) = self.dbs.meta.get(&r, b"last_i")? {
                let last = u64::from_le_bytes(b.try_into()?);
                if after.is_none_or(|a| last > a) {
                    return Ok(Some(last));
                }
            }
            drop(r);
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}
