//! Appends acknowledged as not yet durable, per daemon instance, since the
//! last [`Client::sync`](super::Client::sync): a sync on a later instance
//! cannot make those of an earlier one durable, and must not say it did.

use weir_protocol::starts::{Start, lowest_after};
use weir_protocol::wire::{Reply, WireError};

/// The non-durable receipts one instance gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    instance: u128,
    events: u64,
    highest: u64,
}

/// What a sync on another instance leaves in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lost {
    pub(super) events: u64,
    pub(super) highest: u64,
}

#[derive(Debug, Default)]
pub(super) struct Unsynced {
    /// Usually one entry; one more per daemon restart between syncs.
    tallies: Vec<Tally>,
}

impl Unsynced {
    /// Records the non-durable receipts of `reply`, answered by `instance`.
    pub(super) fn note(&mut self, instance: u128, reply: &Result<Reply, WireError>) {
        match reply {
            Ok(Reply::Appended(r)) if !r.durable => self.add(instance, 1, r.sequence),
            Ok(Reply::Batch(v)) => {
                let mut n = 0;
                let mut highest = 0;
                for r in v.iter().filter(|r| !r.durable) {
                    n += 1;
                    highest = highest.max(r.sequence);
                }
                if n > 0 {
                    self.add(instance, n, highest);
                }
            }
            _ => {}
        }
    }

    fn add(&mut self, instance: u128, events: u64, highest: u64) {
        match self.tallies.iter_mut().find(|t| t.instance == instance) {
            Some(t) => {
                t.events += events;
                t.highest = t.highest.max(highest);
            }
            None => self.tallies.push(Tally {
                instance,
                events,
                highest,
            }),
        }
    }

    /// A sync on `instance` succeeded: forgets everything, and returns what
    /// earlier instances acknowledged without syncing and may have lost
    /// (None if nothing). `starts` are the daemon's latest starts (its
    /// hello): an earlier instance's events below the lowest `visible` any
    /// later instance started with outlived its stop (a clean stop syncs
    /// everything; a crash keeps a prefix). An instance older than them all
    /// may have lost every one.
    pub(super) fn synced_on(&mut self, instance: u128, starts: &[Start]) -> Option<Lost> {
        let mut lost = None::<Lost>;
        for t in self.tallies.drain(..).filter(|t| t.instance != instance) {
            let kept = lowest_after(starts, t.instance).map(|l| l.unwrap_or(u64::MAX));
            // Every one below the lowest restart: all kept. Otherwise at
            // least the highest may be gone, and all count as in doubt (only
            // their number and the highest sequence are kept here).
            if kept.is_some_and(|kept| t.highest < kept) {
                continue;
            }
            let l = lost.get_or_insert(Lost {
                events: 0,
                highest: 0,
            });
            l.events += t.events;
            l.highest = l.highest.max(t.highest);
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_protocol::wire::Receipt;

    fn receipt(sequence: u64, durable: bool) -> Receipt {
        Receipt {
            event_id: 1,
            sequence,
            clock: 0,
            event_hash: [0; 32],
            durable,
            replayed: false,
        }
    }

    #[test]
    fn only_earlier_instances_non_durable_receipts_are_in_doubt() {
        let mut u = Unsynced::default();
        u.note(1, &Ok(Reply::Appended(receipt(5, false))));
        u.note(1, &Ok(Reply::Appended(receipt(9, true))));
        u.note(
            1,
            &Ok(Reply::Batch(vec![receipt(6, false), receipt(7, false)])),
        );
        u.note(2, &Ok(Reply::Appended(receipt(6, false))));
        assert_eq!(
            u.synced_on(2, &[]),
            Some(Lost {
                events: 3,
                highest: 7
            })
        );
        // Reported once: the next sync has nothing in doubt.
        assert_eq!(u.synced_on(2, &[]), None);
        u.note(2, &Ok(Reply::Appended(receipt(8, false))));
        assert_eq!(u.synced_on(2, &[]), None);
    }

    fn start(instance: u128, visible: u64) -> Start {
        Start { instance, visible }
    }

    #[test]
    fn events_below_every_later_start_outlived_their_instance() {
        let mut u = Unsynced::default();
        let batch = Ok(Reply::Batch(vec![receipt(6, false), receipt(7, false)]));
        // Instance 1 stopped cleanly at 8 (2 started there), or a crash
        // kept 8 events: nothing of 6 and 7 is lost.
        u.note(1, &batch);
        assert_eq!(u.synced_on(2, &[start(1, 0), start(2, 8)]), None);
        // A later start at 7 (3 restarted after a crash of 2): 7 is gone.
        u.note(1, &batch);
        let lost = u.synced_on(3, &[start(1, 0), start(2, 9), start(3, 7)]);
        assert_eq!(
            lost,
            Some(Lost {
                events: 2,
                highest: 7
            })
        );
        // An instance the starts do not go back to: in doubt.
        u.note(1, &batch);
        assert!(u.synced_on(3, &[start(2, 9), start(3, 9)]).is_some());
    }
}
