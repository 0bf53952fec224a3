//! weir's writer daemon: the segment log, the writer thread, the index
//! publisher, restore, and (in `server`) the append socket.
//!
//! `unsafe` lives only in `mapped` (read-write mappings), `futex` (the wake),
//! `writeback` (`sync_file_range`) and, in `server`, `activation` (fd 3) and
//! `peer_groups` (`SO_PEERGROUPS`).
#![deny(unsafe_code)]

pub mod budget;
pub mod checkpoint;
pub mod claims;
pub mod config;
pub mod error;
mod futex;
pub mod fxhash;
pub mod gate;
pub mod home;
pub mod ids;
pub mod index;
pub mod lock;
mod mapped;
mod modes;
pub mod namekey;
pub mod proof;
pub mod restore;
pub mod segments;
pub mod server;
#[cfg(test)]
mod spec;
pub mod state;
pub mod stats;
pub mod storage;
pub mod store;
mod worker;
mod writeback;
pub mod writer;

pub use config::{Config, SyncMode, SyncPolicy};
pub use error::{AppendError, DataDirMoved, OpenError};
pub use restore::{RestorePath, RestoreReport};
pub use store::Store;
