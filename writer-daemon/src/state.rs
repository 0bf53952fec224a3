//! The writer's in-memory state that restore rebuilds: per-entity chain
//! heads and the idempotency window.

use crate::fxhash::FxHashMap;
use std::collections::VecDeque;
use weir_protocol::wire::Receipt;

/// The newest event of one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityState {
    /// Its clock.
    pub clock: u32,
    /// Its event_hash (the next event's prev_hash).
    pub hash: [u8; 32],
}

/// Remembered idempotency keys, oldest forgotten first.
#[derive(Debug, Default)]
pub struct IdemWindow {
    cap: usize,
    map: FxHashMap<u128, Receipt>,
    order: VecDeque<u128>,
}

impl IdemWindow {
    /// A window of `cap` keys.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            map: FxHashMap::with_capacity_and_hasher(cap.min(1 << 16), Default::default()),
            order: VecDeque::new(),
        }
    }

    /// The receipt recorded for `key`.
    #[must_use]
    pub fn get(&self, key: u128) -> Option<&Receipt> {
        self.map.get(&key)
    }

    /// Records a key (the oldest is forgotten past the capacity).
    pub fn insert(&mut self, key: u128, receipt: Receipt) {
        if self.cap == 0 {
            return;
        }
        if self.map.insert(key, receipt).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// Forgets a key (a failed group takes its keys back).
    pub fn remove(&mut self, key: u128) {
        if self.map.remove(&key).is_some() {
            self.order.retain(|k| *k != key);
        }
    }

    /// Keys remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Nothing remembered?
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Per-entity state, keyed by entity name.
pub type Entities = FxHashMap<Box<[u8]>, EntityState>;

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: u64) -> Receipt {
        Receipt {
            event_id: 1,
            sequence: seq,
            clock: 0,
            event_hash: [0; 32],
            durable: true,
            replayed: false,
        }
    }

    #[test]
    fn window_forgets_the_oldest() {
        let mut w = IdemWindow::new(2);
        w.insert(1, r(1));
        w.insert(2, r(2));
        w.insert(3, r(3));
        assert!(w.get(1).is_none());
        assert_eq!(w.get(3).unwrap().sequence, 3);
        w.remove(3);
        assert!(w.get(3).is_none());
        assert_eq!(w.len(), 1);
    }
}
