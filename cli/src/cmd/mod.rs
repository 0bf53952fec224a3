//! The client subcommands: `append` talks to the daemon over its socket;
//! `get`, `stream`, `query`, `tail`, `stat`, `verify` and `export` read the
//! store through `weir::Reader` and work with the daemon stopped.
#![forbid(unsafe_code)]

pub mod append;
pub mod common;
pub mod export;
pub mod read;
pub mod render;
pub mod shown;
pub mod stat;
pub mod verify;
