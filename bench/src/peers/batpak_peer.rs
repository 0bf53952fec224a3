//! batpak 0.10, in-process. Its `append()` returns before the fsync, so durable
//! rows pass a `DurabilityGate` on the Durable watermark, with `sync.every_n_events
//! = 1` and group commit on (so concurrent appenders share one fsync).
//! batpak admits one process per data dir: multi-client rows use threads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use batpak::id::{EntityIdType as _, IdempotencyKey};
use batpak::prelude::*;
use batpak::store::{BatchAppendItem, CausationRef, DurabilityGate, WatermarkKind};

use super::{Ctx, Reader, Writer};
use crate::common::{Event, IdsRecorder, read_ids};

pub const DESCRIBE: &str = "batpak 0.10.0 in-process (one process per data dir: multi-client rows \
run threads in one process), SyncMode::SyncData; durable rows: sync.every_n_events=1, \
group_commit_max_batch=256, every append carries an idempotency key (batpak requires one for group commit) and waits on \
DurabilityGate(Durable); W2b: \
sync.every_n_events=1000 (its default cadence), no gate; payload = msgpack bin of the 100 bytes; \
reads via open_read_only (rebuilds its index on open) + read_raw";

const GROUP: u32 = 256;

pub fn claim(durable: bool) -> String {
    if durable {
        format!("sync_every=1 group_commit={GROUP} mode=SyncData gate=Durable")
    } else {
        "sync_every=1000 group_commit=1 mode=SyncData gate=none".to_string()
    }
}

fn config(ctx: &Ctx) -> StoreConfig {
    let cfg = StoreConfig::new(&ctx.dir).with_sync_mode(SyncMode::SyncData);
    if ctx.durable {
        cfg.with_sync_every_n_events(1)
            .with_group_commit_max_batch(GROUP)
    } else {
        cfg.with_sync_every_n_events(1000)
            .with_group_commit_max_batch(1)
    }
}

fn kind(k: u16) -> EventKind {
    EventKind::custom(0x1, k)
}

fn verify(cfg: &StoreConfig, durable: bool) -> String {
    let mode = match cfg.sync().mode {
        SyncMode::SyncData => "SyncData",
        SyncMode::SyncAll => "SyncAll",
        _ => "other",
    };
    format!(
        "sync_every={} group_commit={} mode={mode} gate={}",
        cfg.sync().every_n_events,
        cfg.batch().group_commit_max_batch,
        if durable { "Durable" } else { "none" }
    )
}

/// A shared handle: batpak's Store is used from several threads.
pub struct BatpakWriter {
    store: Arc<Store<Open>>,
    durable: bool,
    /// Event ids as assigned by batpak, recorded when building read stores.
    ids: Option<IdsRecorder>,
    /// Batches submitted and not yet waited for.
    pending: VecDeque<batpak::store::BatchAppendTicket>,
}

impl BatpakWriter {
    fn opts(&self, ev: Option<&Event>) -> AppendOptions {
        let o = AppendOptions::new();
        if self.durable {
            // batpak refuses group commit without an idempotency key per append.
            let o = match ev {
                Some(ev) => o.with_idempotency(IdempotencyKey::from_u128(ev.id)),
                None => o,
            };
            o.with_gate(DurabilityGate::new(
                WatermarkKind::Durable,
                Duration::from_secs(60),
            ))
        } else {
            o
        }
    }

    pub fn clone_handle(&self) -> BatpakWriter {
        BatpakWriter {
            store: self.store.clone(),
            durable: self.durable,
            ids: None,
            pending: VecDeque::new(),
        }
    }
}

/// One batch's items.
fn items(evs: &[Event]) -> Result<Vec<BatchAppendItem>> {
    evs.iter()
        .map(|ev| {
            let coord = Coordinate::new(&ev.entity, &ev.scope)?;
            let payload = serde_bytes::Bytes::new(&ev.payload);
            Ok(BatchAppendItem::new(
                coord,
                kind(ev.kind),
                &payload,
                AppendOptions::new(),
                CausationRef::None,
            )?)
        })
        .collect()
}

impl BatpakWriter {
    /// Records the assigned ids (when building a read store).
    fn record(&mut self, rs: &[batpak::store::AppendReceipt]) -> Result<()> {
        match &mut self.ids {
            Some(ids) => ids.record(rs.iter().map(|r| r.event_id.as_u128())),
            None => Ok(()),
        }
    }
}

impl Writer for BatpakWriter {
    fn append(&mut self, ev: &Event) -> Result<()> {
        let coord = Coordinate::new(&ev.entity, &ev.scope)?;
        let payload = serde_bytes::Bytes::new(&ev.payload);
        let opts = self.opts(Some(ev));
        let r = self
            .store
            .append_with_options(&coord, kind(ev.kind), &payload, opts)?;
        self.record(std::slice::from_ref(&r))
    }

    fn append_batch(&mut self, evs: &[Event]) -> Result<()> {
        let opts = self.opts(None);
        let rs = self.store.append_batch_with_options(items(evs)?, opts)?;
        self.record(&rs)
    }

    fn queue_batch(&mut self, evs: &[Event]) -> Result<bool> {
        if self.durable {
            bail!("batpak: pipelined batches are measured without durability only");
        }
        let ticket = self.store.submit_batch(items(evs)?)?;
        self.pending.push_back(ticket);
        Ok(true)
    }

    fn queued(&self) -> usize {
        self.pending.len()
    }

    fn wait_oldest(&mut self) -> Result<u64> {
        let ticket = self.pending.pop_front().context("no batch in flight")?;
        let rs = ticket.wait()?;
        self.record(&rs)?;
        Ok(rs.len() as u64)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let BatpakWriter { store, ids, .. } = *self;
        if let Some(ids) = ids {
            ids.finish()?;
        }
        match Arc::try_unwrap(store) {
            Ok(s) => {
                s.close()?;
            }
            Err(_) => bail!("batpak store still shared at close"),
        }
        Ok(())
    }
}

pub fn open_batpak(ctx: &Ctx, record_ids: bool) -> Result<(BatpakWriter, String)> {
    let cfg = config(ctx);
    let verified = verify(&cfg, ctx.durable);
    let store = Store::open(cfg).map_err(|e| anyhow!("batpak open: {e}"))?;
    let ids = if record_ids {
        Some(IdsRecorder::create(&ctx.dir)?)
    } else {
        None
    };
    Ok((
        BatpakWriter {
            store: Arc::new(store),
            durable: ctx.durable,
            ids,
            pending: VecDeque::new(),
        },
        verified,
    ))
}

pub fn open_writer(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    // Record ids only when building a store that readers will query.
    let record = ctx.dir.join("bench-build").exists();
    let (w, v) = open_batpak(ctx, record)?;
    Ok((Box::new(w), v))
}

struct BatpakReader {
    store: Store<ReadOnly>,
    ids: Vec<u128>,
}

pub fn open_reader(ctx: &Ctx, _n: u64) -> Result<Box<dyn Reader>> {
    let ids = read_ids(&ctx.dir)?;
    let store = Store::open_read_only(StoreConfig::new(&ctx.dir))
        .map_err(|e| anyhow!("batpak open_read_only: {e}"))?;
    Ok(Box::new(BatpakReader { store, ids }))
}

impl Reader for BatpakReader {
    fn get(&mut self, i: u64) -> Result<usize> {
        let id = *self.ids.get(i as usize).context("no such event")?;
        let ev = self.store.read_raw(EventId::from_u128(id))?;
        Ok(super::touched(&ev.event.payload))
    }

    fn stream(&mut self, entity: &str) -> Result<usize> {
        let mut n = 0;
        for e in self.store.by_entity(entity) {
            let ev = self.store.read_raw(e.event_id())?;
            n += usize::from(!ev.event.payload.is_empty());
        }
        Ok(n)
    }

    fn count_kind(&mut self, k: u16) -> Result<u64> {
        Ok(self.store.by_fact(kind(k)).len() as u64)
    }

    fn wait_next(&mut self, _after: Option<u64>, _timeout: Duration) -> Result<Option<u64>> {
        bail!("n/a: batpak has no cross-process reader/notification")
    }
}
