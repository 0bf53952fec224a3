//! weir itself.
//!
//! Wired now: the in-process writer (`weir_daemon::store::Store`, the same
//! writer thread the daemon runs) and `weir::Reader` in its own process.
//! TODO(weir socket client): W1 should run one `weir::Client` per client
//! process against `weir serve --data-dir D --socket D/weir.sock` once the
//! Client lands; until then W1 uses threads over the in-process Store (noted in
//! the table), like batpak.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use weir::{EventId, EventKind, KindFilter, Region};
use weir_daemon::config::{Config, SyncPolicy};
use weir_daemon::store::Store;
use weir_protocol::wire::AppendRequest;

use super::{Ctx, Reader, Writer};
use crate::common::{Event, event_id};

pub const DESCRIBE: &str = "weir in-process writer (weir_daemon Store: writer thread, group \
commit, fdatasync), sync=always for durable rows, sync=never for W2b; client-supplied event ids; \
multi-client W1 rows run threads over one Store (the socket Client is not wired yet); readers: \
weir::Reader (mmap) in their own processes, W7 via wait_visible (futex)";

pub fn claim(durable: bool) -> String {
    format!("sync={}", if durable { "Always" } else { "Never" })
}

/// weir kinds: category 0x1, type 1..=8 (0x0 and 0xD are reserved).
fn kind(k: u16) -> u16 {
    0x1000 | k
}

fn request(ev: &Event) -> AppendRequest {
    AppendRequest {
        entity: ev.entity.clone(),
        scope: ev.scope.clone(),
        kind: kind(ev.kind),
        payload: ev.payload.clone(),
        event_id: Some(ev.id),
        ..AppendRequest::default()
    }
}

pub struct WeirWriter {
    store: Store,
}

impl WeirWriter {
    pub fn clone_handle(&self) -> WeirWriter {
        WeirWriter {
            store: self.store.clone(),
        }
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
        self.store
            .append_batch(evs.iter().map(request).collect())
            .map_err(|e| anyhow!("weir append_batch: {e:?}"))?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.store
            .shutdown()
            .map_err(|e| anyhow!("weir shutdown: {e}"))
    }
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
    Ok((WeirWriter { store }, verified))
}

pub fn open_writer(ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    let (w, v) = open_weir(ctx)?;
    Ok((Box::new(w), v))
}

struct WeirReader {
    r: weir::Reader,
}

pub fn open_reader(ctx: &Ctx, _n: u64) -> Result<Box<dyn Reader>> {
    let r = weir::Reader::open(&ctx.dir).map_err(|e| anyhow!("weir Reader::open: {e:?}"))?;
    Ok(Box::new(WeirReader { r }))
}

impl Reader for WeirReader {
    fn get(&mut self, i: u64) -> Result<usize> {
        let e = self
            .r
            .get(EventId(event_id(i)))
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
}
