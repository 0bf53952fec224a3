//! weir itself. TODO(weir adapters): the daemon, `weir::Client` and
//! `weir::Reader` APIs are still being written; until they compile, every weir
//! cell reports `n/a: weir adapter not wired` instead of a number.
//!
//! What to wire once they land (each is a few lines):
//! - `open_writer`: for W1/W2/W7 (durable rows) start `weir serve --data-dir D
//!   --socket S` once per store (`weir serve --data-dir D --socket D/weir.sock`), then
//!   `weir::Client::connect(S)`; `append` = `Client::append`, `append_batch` =
//!   `Client::append_batch`; read the daemon's sync policy back (Stats request or
//!   its config file) into the string `claim` returns. For W2b use the in-process
//!   `weir_daemon::Store::open(Config::new(D))` with `sync = Never`.
//! - `open_reader`: `weir::Reader::open(D)`; `get` = `get(EventId)` touching the
//!   payload (CRC-checked), `stream` = `stream(entity)` reading payloads,
//!   `count_kind` = `count(&Region::kind(k))`, `wait_next` = `wait_visible(seq,
//!   timeout)` / `subscribe`.
//! - Event ids: weir accepts client-supplied ids; pass `common::event_id(i)` so
//!   readers find event `i` without an id file.

use anyhow::{Result, bail};

use super::{Ctx, Reader, Writer};

pub const NOT_WIRED: &str = "n/a: weir adapter not wired";

pub const DESCRIBE: &str = "weir: adapters not wired yet (the daemon/Client/Reader APIs do not \
compile yet); planned: daemon `weir serve` with sync=always + fdatasync for durable rows, \
in-process Store with sync=never for W2b, clients as separate processes over the unix socket, \
readers via weir::Reader (mmap) in their own processes";

pub fn claim(durable: bool) -> String {
    format!("sync={}", if durable { "always" } else { "never" })
}

pub fn open_writer(_ctx: &Ctx) -> Result<(Box<dyn Writer>, String)> {
    bail!(NOT_WIRED)
}

pub fn open_reader(_ctx: &Ctx, _n: u64) -> Result<Box<dyn Reader>> {
    bail!(NOT_WIRED)
}
