//! systemd notifications (`READY=1`, `STATUS=`, `STOPPING=1`) and the
//! watchdog, which only pets while the writer thread shows life.

use crate::stats::Shared;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Sends states to `$NOTIFY_SOCKET`; a no-op outside systemd.
pub(super) fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The writer ticks at least every 250 ms; longer silence means it is stuck.
const STALE_MS: u64 = 2_000;

/// Pets the watchdog at half of `WATCHDOG_USEC` while the writer is alive.
/// `None` when no watchdog is configured.
pub(super) fn start_watchdog(shared: Arc<Shared>, stop: Arc<AtomicBool>) -> Option<JoinHandle<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    let stale = STALE_MS.max(usec / 2000);
    let spawned = std::thread::Builder::new()
        .name("weir-watchdog".into())
        .stack_size(64 << 10)
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let age = crate::ids::now_ms().saturating_sub(shared.last_tick_ms());
                if age <= stale {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::warn!(age_ms = age, "writer silent; not petting the watchdog");
                }
                std::thread::park_timeout(period);
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "could not start the watchdog thread");
            None
        }
    }
}
