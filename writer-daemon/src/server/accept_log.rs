//! The log lines of failing `accept` calls (EMFILE and friends), for the
//! socket's accept loop and the metrics listener's (`weir serve`): the first
//! failure of a run at once, then at most one line per [`REMIND_EVERY`] with
//! the failures since the last, and one line when accepting works again. A
//! loop that pauses 50 ms per failure would otherwise log 20 lines a second
//! for as long as the condition lasts. The socket's connections use the same
//! rule for threads that cannot be started ([`AcceptFailures::threads`]): a
//! refused connection is answered `Busy` and its client retries at once.

use std::io;
use std::time::{Duration, Instant};

/// The least time between two lines about one run of failures.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// Is `e` one after which `accept` is called again at once (an interrupted
/// call, a connection aborted before it was accepted)? Any other failure
/// would come back at once: the loop pauses before it retries.
#[must_use]
pub fn retry_at_once(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    )
}

/// What [`AcceptFailures`] logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// Nothing.
    Nothing,
    /// The first failure of a run.
    First,
    /// That the run goes on, with the failures since the last line.
    Still {
        /// Failures not logged one by one since the last line.
        failures: u64,
    },
    /// That accepting works again, with the run's failures.
    Recovered {
        /// Failures in the run.
        failures: u64,
    },
}

/// The failures of one accept loop since its last success.
#[derive(Debug)]
pub struct AcceptFailures {
    /// The listener, as the log lines name it.
    listener: &'static str,
    /// What fails, as the log lines say: "accept connections".
    action: &'static str,
    /// The pause after each failure, as the first line says.
    pause: Duration,
    run: Option<Run>,
}

#[derive(Debug)]
struct Run {
    failures: u64,
    /// Failures since the last line.
    unlogged: u64,
    logged_at: Instant,
}

impl AcceptFailures {
    /// No failures yet.
    #[must_use]
    pub const fn new(listener: &'static str, pause: Duration) -> Self {
        Self {
            listener,
            action: "accept connections",
            pause,
            run: None,
        }
    }

    /// For the threads of the socket's connections: a connection whose
    /// thread cannot be started is refused, and nothing pauses.
    #[must_use]
    pub const fn threads() -> Self {
        Self {
            listener: "socket",
            action: "start connection threads",
            pause: Duration::ZERO,
            run: None,
        }
    }

    /// `accept` failed with `e` at `now`.
    pub fn failed(&mut self, e: &io::Error, now: Instant) -> Logged {
        let (listener, action) = (self.listener, self.action);
        let Some(run) = &mut self.run else {
            if self.pause.is_zero() {
                tracing::warn!(listener, error = %e, "cannot {action}; refusing connections as busy until it can");
            } else {
                tracing::warn!(listener, error = %e, pause = ?self.pause, "cannot {action}; retrying after each pause");
            }
            self.run = Some(Run {
                failures: 1,
                unlogged: 0,
                logged_at: now,
            });
            return Logged::First;
        };
        run.failures += 1;
        run.unlogged += 1;
        if now.saturating_duration_since(run.logged_at) < REMIND_EVERY {
            return Logged::Nothing;
        }
        let failures = std::mem::take(&mut run.unlogged);
        run.logged_at = now;
        tracing::warn!(listener, error = %e, failures, "still cannot {action} ({failures} more failures)");
        Logged::Still { failures }
    }

    /// `accept` returned a connection.
    pub fn accepted(&mut self) -> Logged {
        match self.run.take() {
            Some(run) => {
                let action = self.action;
                tracing::info!(
                    listener = self.listener,
                    failures = run.failures,
                    "can {action} again"
                );
                Logged::Recovered {
                    failures: run.failures,
                }
            }
            None => Logged::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_logs_its_first_then_once_a_minute_then_its_end() {
        let emfile = io::Error::from_raw_os_error(24);
        let mut f = AcceptFailures::new("socket", Duration::from_millis(50));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(f.accepted(), Logged::Nothing);
        assert_eq!(f.failed(&emfile, at(0)), Logged::First);
        // A failure every 50 ms for just under a minute: not one line.
        let quiet = (1..1200)
            .map(|i| f.failed(&emfile, at(i * 50)))
            .filter(|l| *l != Logged::Nothing)
            .count();
        assert_eq!(quiet, 0);
        assert_eq!(
            f.failed(&emfile, at(60_000)),
            Logged::Still { failures: 1200 }
        );
        assert_eq!(f.failed(&emfile, at(60_050)), Logged::Nothing);
        assert_eq!(f.accepted(), Logged::Recovered { failures: 1202 });
        assert_eq!(f.accepted(), Logged::Nothing);
        // The next run starts over.
        assert_eq!(f.failed(&emfile, at(60_100)), Logged::First);
    }

    #[test]
    fn only_interrupted_and_aborted_accepts_are_retried_at_once() {
        assert!(retry_at_once(&io::ErrorKind::Interrupted.into()));
        assert!(retry_at_once(&io::ErrorKind::ConnectionAborted.into()));
        for errno in [nix::libc::EMFILE, nix::libc::ENFILE, nix::libc::ENOBUFS] {
            assert!(!retry_at_once(&io::Error::from_raw_os_error(errno)));
        }
    }
}
