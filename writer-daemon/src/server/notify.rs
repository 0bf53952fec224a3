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
                let age = shared.writer_silent_ms();
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

/// How often a start that is still restoring asks systemd for more time.
const EXTEND_EVERY: Duration = Duration::from_secs(10);
/// How much more each time (`EXTEND_TIMEOUT_USEC`): a few periods, so one
/// late wake-up does not end the start.
const EXTEND_BY: Duration = Duration::from_secs(30);
/// Longest a start is kept alive this way: a restore that takes longer is
/// taken for stuck, and systemd's start timeout applies again.
const EXTEND_CAP: Duration = Duration::from_secs(60 * 60);

/// Keeps systemd's start timeout (`TimeoutStartSec=`, 90 s by default) from
/// killing a long restore: until the guard is dropped, every `every` it
/// sends `EXTEND_TIMEOUT_USEC` (by `by`) and a `STATUS=` with the time
/// spent, for at most `cap`. Outside systemd (`NOTIFY_SOCKET` unset) it
/// starts no thread.
pub(super) fn keep_starting() -> Starting {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Starting(None);
    }
    extend_while_starting(EXTEND_EVERY, EXTEND_BY, EXTEND_CAP, notify)
}

/// Stops the extensions when dropped (the restore ended, either way).
pub(super) struct Starting(Option<(Arc<AtomicBool>, JoinHandle<()>)>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.0.take() {
            stop.store(true, Ordering::Release);
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn extend_while_starting(
    every: Duration,
    by: Duration,
    cap: Duration,
    send: impl Fn(&[NotifyState<'_>]) + Send + 'static,
) -> Starting {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    let spawned = std::thread::Builder::new()
        .name("weir-starting".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let began = std::time::Instant::now();
            loop {
                std::thread::park_timeout(every);
                let spent = began.elapsed();
                if flag.load(Ordering::Acquire) || spent >= cap {
                    return;
                }
                let status = format!("restoring the index ({} s)", spent.as_secs());
                send(&[
                    NotifyState::ExtendTimeoutUsec(usec),
                    NotifyState::Status(&status),
                ]);
            }
        });
    match spawned {
        Ok(h) => Starting(Some((stop, h))),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the start-timeout thread");
            Starting(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// What the extensions sent, as text.
    type Sent = Arc<Mutex<Vec<String>>>;

    /// A sink that records what is sent.
    fn recorder() -> (Sent, impl Fn(&[NotifyState<'_>]) + Send + 'static) {
        let sent = Sent::default();
        let log = Arc::clone(&sent);
        let send = move |states: &[NotifyState<'_>]| {
            let text: Vec<String> = states.iter().map(ToString::to_string).collect();
            log.lock().unwrap().push(text.join("\n"));
        };
        (sent, send)
    }

    #[test]
    fn a_long_start_asks_for_more_time_until_it_ends() {
        let (sent, send) = recorder();
        let guard = extend_while_starting(
            Duration::from_millis(5),
            Duration::from_secs(30),
            Duration::from_secs(600),
            send,
        );
        while sent.lock().unwrap().len() < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(guard);
        let after = sent.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(30));
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), after, "sent after the guard was dropped");
        assert!(
            sent[0].starts_with("EXTEND_TIMEOUT_USEC=30000000\nSTATUS=restoring the index ("),
            "{sent:?}"
        );
    }

    #[test]
    fn the_extensions_stop_at_the_cap() {
        let (sent, send) = recorder();
        let guard = extend_while_starting(
            Duration::from_millis(5),
            Duration::from_secs(30),
            Duration::from_millis(1),
            send,
        );
        // The thread ends by itself at the cap: joining it must not wait
        // for a stop the guard has not sent.
        let (_, thread) = guard.0.as_ref().expect("a thread");
        while !thread.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(sent.lock().unwrap().is_empty());
        drop(guard);
    }
}
