//! A helper thread that takes work off the writer through a bounded queue,
//! started on the first item and stopped (after draining its queue) when
//! dropped. The writer never waits for it: an item the helper cannot take
//! (queue full, thread not started, thread stopped) comes back to the
//! caller, who does the work itself or drops it.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// One helper thread, named `name`, that runs `run` over its queue.
#[derive(Debug)]
pub(crate) struct Worker<T: Send + 'static> {
    name: &'static str,
    queue: usize,
    run: fn(Receiver<T>),
    tx: Option<SyncSender<T>>,
    thread: Option<JoinHandle<()>>,
    /// The thread could not be started, or stopped: take nothing more.
    off: bool,
}

impl<T: Send + 'static> Worker<T> {
    /// A helper thread named `name`, with room for `queue` waiting items,
    /// that will run `run` (which returns when the queue is closed, or
    /// earlier to refuse all further items).
    pub(crate) fn new(name: &'static str, queue: usize, run: fn(Receiver<T>)) -> Self {
        Self {
            name,
            queue,
            run,
            tx: None,
            thread: None,
            off: false,
        }
    }

    /// Queues `item`, starting the thread if needed; hands `item` back when
    /// the helper cannot take it.
    pub(crate) fn send(&mut self, item: T) -> Result<(), T> {
        if self.off {
            return Err(item);
        }
        if self.tx.is_none() {
            let (tx, rx) = sync_channel(self.queue);
            let run = self.run;
            match std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || run(rx))
            {
                Ok(t) => (self.tx, self.thread) = (Some(tx), Some(t)),
                Err(e) => {
                    tracing::debug!(error = %e, thread = self.name, "helper thread not started; the writer does its work");
                    self.off = true;
                    return Err(item);
                }
            }
        }
        let tx = self.tx.as_ref().expect("started above");
        match tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(item)) => Err(item),
            Err(TrySendError::Disconnected(item)) => {
                self.off = true;
                Err(item)
            }
        }
    }
}

impl<T: Send + 'static> Drop for Worker<T> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DONE: AtomicUsize = AtomicUsize::new(0);

    fn count(rx: Receiver<usize>) {
        for n in rx {
            DONE.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn refuse(_rx: Receiver<usize>) {}

    #[test]
    fn items_taken_are_done_before_drop_returns_and_the_rest_come_back() {
        let mut w = Worker::new("weir-test-worker", 2, count);
        let mut back = 0;
        for _ in 0..1000 {
            if let Err(n) = w.send(1) {
                back += n;
            }
        }
        drop(w);
        assert_eq!(DONE.load(Ordering::Relaxed) + back, 1000);
        assert!(DONE.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_helper_that_stops_takes_nothing_more() {
        let mut w = Worker::new("weir-test-refuser", 2, refuse);
        // The thread returns at once; once it is gone, every item comes back.
        let t = std::time::Instant::now();
        while !w.off {
            let _ = w.send(1);
            assert!(t.elapsed() < std::time::Duration::from_secs(10));
            std::thread::yield_now();
        }
        assert_eq!(w.send(7), Err(7));
    }
}
