//! weir's client library: [`Reader`] answers queries straight from the
//! daemon's published, memory-mapped index and segments, without locks,
//! syscalls on the hot path, or any per-process rebuild.
//!
//! ```no_run
//! use weir::{Reader, Region};
//! # fn main() -> Result<(), weir::Error> {
//! let reader = Reader::open("/var/lib/weir")?;
//! for e in reader.stream("user:42")? {
//!     println!("{} {:?} {} bytes", e.sequence(), e.kind(), e.payload()?.len());
//! }
//! let n = reader.count(&Region::entity("user").with_scope("tenant:a"))?;
//! # let _ = n;
//! # Ok(())
//! # }
//! ```
//!
//! Layouts are specified in `docs/FORMAT.md` and coded in `weir-protocol`.
//! Only `map.rs` holds `unsafe`; every other module forbids it.
#![deny(unsafe_code)]

mod cancelled;
pub mod client;
mod cursor;
mod entry;
mod error;
mod gate;
mod lazy;
mod located;
mod map;
mod memfit;
mod names;
mod prefixes;
mod query;
mod reader;
mod scan;
mod verify;
mod view;
mod wait;

pub use client::{
    Client, ClientError, ClientOptions, Transaction, UNRESOLVED_KEYS_FIELD, new_idempotency_key,
};
pub use cursor::{Cursor, CursorError};
pub use entry::Entry;
pub use error::{AttachError, Chain, Error, ReadError};
pub use memfit::HUGE_PAGES_ENV;
pub use reader::{DaemonState, Reader, Snapshot, Status};
/// The msgpack decoder's error, in [`ReadError::Decode`].
pub use rmp_serde::decode::Error as DecodeError;
/// The msgpack encoder's error, from [`AppendRequest::msgpack`].
pub use rmp_serde::encode::Error as EncodeError;
pub use verify::{BreakKind, ChainBreak, ChainReport};
pub use wait::{Resumed, Subscription};
pub use weir_protocol::hash::HashInput;
pub use weir_protocol::segment::{FrameError, FrameHeader, FrameRef};
pub use weir_protocol::wire::{AppendRequest, ErrorCode, Receipt, Stats, WireError};
pub use weir_protocol::{
    Coordinate, CoordinateError, EventId, EventKind, ExpectedVersion, KindError, KindFilter, Region,
};
