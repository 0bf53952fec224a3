//! Shared helpers for the daemon's in-process tests.
#![allow(dead_code)]

use weir_daemon::Config;
use weir_protocol::wire::AppendRequest;

/// A small-file configuration for tests.
pub fn config(dir: &std::path::Path) -> Config {
    Config {
        segment_max_bytes: 1 << 20,
        chunk_rows_log2: 10,
        max_payload_bytes: 64 << 10,
        max_batch_bytes: 256 << 10,
        max_batch_events: 64,
        max_frame_bytes: 1 << 20,
        ..Config::new(dir)
    }
}

/// An append request.
pub fn ev(entity: &str, kind: u16, payload: &[u8]) -> AppendRequest {
    AppendRequest {
        entity: entity.into(),
        scope: "tenant:a".into(),
        kind,
        payload: payload.to_vec(),
        ..AppendRequest::default()
    }
}
