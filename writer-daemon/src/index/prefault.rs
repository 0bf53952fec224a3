//! Faults index pages in ahead of the writer, on a thread of its own.
//!
//! The first write to each page of a chunk's rows and columns is a page
//! fault in which the kernel allocates and zeroes a page-cache page and
//! marks it writable. On the writer thread that was about a fifth of its
//! time per event in the in-process CPU-ceiling benchmark (`perf record`:
//! `memset` under `write_cells`). The writer instead asks this thread to
//! `MADV_POPULATE_WRITE` the next window of rows and columns before it gets
//! there, so those faults are taken off the single writer thread.
//!
//! Only hints: a request the queue has no room for is dropped, a kernel
//! without `MADV_POPULATE_WRITE` (before Linux 5.14) stops the thread, and
//! in every case the writer's own write faults the page in as before. Only
//! the windows just ahead of the writer are populated, so the pages made
//! resident (and dirty: they are written back as zeros if the daemon stops
//! before filling them) are less than three windows more than without it.

use crate::mapped::MappedFile;
use crate::worker::Worker;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

/// (offset, length) ranges of one file to fault in.
pub(super) type Ranges = [(usize, usize); 4];

/// Requests that may wait; more are dropped.
const QUEUE: usize = 8;

/// The prefault thread, started on the first request.
#[derive(Debug)]
pub(super) struct Prefaulter(Worker<(Arc<MappedFile>, Ranges)>);

impl Default for Prefaulter {
    fn default() -> Self {
        Self(Worker::new("weir-prefault", QUEUE, run))
    }
}

impl Prefaulter {
    /// Queues `ranges` of `file`, or drops them when the queue is full (or
    /// the thread stopped: the kernel lacks the advice).
    pub(super) fn ask(&mut self, file: &Arc<MappedFile>, ranges: Ranges) {
        let _ = self.0.send((Arc::clone(file), ranges));
    }
}

fn run(rx: Receiver<(Arc<MappedFile>, Ranges)>) {
    for (file, ranges) in rx {
        for (off, len) in ranges {
            if let Err(e) = file.prefault(off, len) {
                if e.raw_os_error() == Some(nix::libc::EINVAL) {
                    tracing::debug!(
                        "MADV_POPULATE_WRITE unsupported; the writer faults its own pages"
                    );
                    return;
                }
                tracing::debug!(error = %e, path = %file.path().display(), off, len, "prefault failed");
            }
        }
    }
}
