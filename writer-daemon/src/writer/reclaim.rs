//! Frees committed requests on a thread of its own.
//!
//! Every append request owns three heap blocks (entity, scope, payload),
//! allocated by the thread that decoded or built it (a connection thread,
//! an in-process producer) and, without this, freed by the writer once the
//! group is answered. Past the few blocks glibc's per-thread cache keeps,
//! each free of a block another thread allocated takes that thread's arena
//! lock: 7 % of the writer's instructions per event in the in-process
//! CPU-ceiling benchmark (callgrind: `free` under `process_group`). The
//! writer instead hands each group's requests to this thread, once per group
//! (handing them over in larger lots, to wake the thread less often, was
//! slower: bench/README.md).
//!
//! When the queue is full (this thread is behind) or the thread could not be
//! started, the writer frees the requests itself, as before: memory held for
//! freeing is bounded by `QUEUE` groups.

use crate::worker::Worker;
use std::sync::mpsc::Receiver;
use weir_protocol::wire::AppendRequest;

/// Groups that may wait to be freed; past that the writer frees its own.
const QUEUE: usize = 16;

/// One group's spent requests, each with the hold on its bytes (given
/// back once they are freed).
pub(super) type Spent = Vec<(Vec<AppendRequest>, crate::budget::Hold)>;

/// The reclaim thread, started on the first group.
#[derive(Debug)]
pub(crate) struct Reclaimer<T: Send + 'static = Spent>(Worker<T>);

impl<T: Send + 'static> Default for Reclaimer<T> {
    fn default() -> Self {
        Self(Worker::new("weir-reclaim", QUEUE, run))
    }
}

impl<T: Send + 'static> Reclaimer<T> {
    /// Frees `spent` on the reclaim thread, or here when it cannot take it.
    pub(super) fn free(&mut self, spent: T) {
        if let Err(spent) = self.0.send(spent) {
            drop(spent);
        }
    }
}

fn run<T>(rx: Receiver<T>) {
    for spent in rx {
        drop(spent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records the name of the thread that drops it.
    struct Spy(Arc<Mutex<Vec<String>>>);

    impl Drop for Spy {
        fn drop(&mut self) {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.0.lock().expect("not poisoned").push(name);
        }
    }

    #[test]
    fn everything_handed_over_is_freed_off_the_caller_or_by_it_when_behind() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut r = Reclaimer::default();
        let n = 1000;
        for _ in 0..n {
            r.free(Spy(Arc::clone(&log)));
        }
        // Stopping waits for the queue to drain.
        drop(r);
        let names = log.lock().expect("not poisoned").clone();
        assert_eq!(names.len(), n, "every value freed exactly once");
        let away = names.iter().filter(|t| *t == "weir-reclaim").count();
        assert!(away > 0, "some freed on the reclaim thread");
        // The rest (the queue was full) were freed by the caller at once.
        let me = std::thread::current().name().unwrap_or("").to_owned();
        assert!(names.iter().all(|t| t == "weir-reclaim" || *t == me));
    }
}
