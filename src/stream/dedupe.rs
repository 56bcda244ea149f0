//! The dedupe memory: the fingerprints of the most recent event ids, oldest
//! forgotten first.
//!
//! A stream checks every event against up to a million ids, so this is an
//! open-addressing table of the 128-bit fingerprints themselves (linear
//! probing, at most half full, deletion by backward shift) rather than a
//! general hash set. Its one extra trick is `prefetch`: the loop knows the
//! fingerprints of a whole batch in advance, so it asks for the memory of
//! an upcoming one while it handles the current one, and the cache misses
//! of a table much larger than the cache overlap instead of adding up.

use std::collections::VecDeque;

/// Recent fingerprints, at most `horizon` of them.
pub struct RecentIds {
    /// 0 marks an empty slot (a fingerprint of 0 is stored as 1: the two
    /// collide with odds of 2^-127).
    slots: Vec<u128>,
    /// `slots.len() - 1` (the length is a power of two).
    mask: usize,
    /// What is remembered, oldest first.
    order: VecDeque<u128>,
    horizon: usize,
}

impl RecentIds {
    /// Memory for `horizon` ids; the table itself is allocated now and
    /// touched as it fills.
    pub fn new(horizon: usize) -> RecentIds {
        let slots = (horizon.max(8) * 2).next_power_of_two();
        RecentIds { slots: vec![0; slots], mask: slots - 1, order: VecDeque::with_capacity(horizon.min(1 << 20)), horizon }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn home(&self, fingerprint: u128) -> usize {
        // Fingerprints are SipHash-128 values: any of their bits spread
        // evenly, so the high ones serve as the slot number.
        (fingerprint >> 64) as usize & self.mask
    }

    /// Asks the processor to bring in the slot where `fingerprint` would
    /// be, ahead of an `insert` of it a few events later. Only a hint.
    pub fn prefetch(&self, fingerprint: u128) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot = &self.slots[self.home(stored(fingerprint))];
            // SAFETY: prefetching is a hint that never faults, and the
            // address is that of a live element of `slots`.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((slot as *const u128).cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = fingerprint;
    }

    /// Remembers `fingerprint`; false when it is already remembered. Past
    /// the horizon, the oldest is forgotten.
    pub fn insert(&mut self, fingerprint: u128) -> bool {
        let fingerprint = stored(fingerprint);
        let mut at = self.home(fingerprint);
        loop {
            match self.slots[at] {
                0 => break,
                existing if existing == fingerprint => return false,
                _ => at = (at + 1) & self.mask,
            }
        }
        self.slots[at] = fingerprint;
        self.order.push_back(fingerprint);
        while self.order.len() > self.horizon {
            if let Some(oldest) = self.order.pop_front() {
                self.remove(oldest);
            }
        }
        true
    }

    /// Removes a stored fingerprint, shifting back the ones after it in its
    /// run so that every lookup still finds its fingerprint without gaps.
    fn remove(&mut self, fingerprint: u128) {
        let mut hole = self.home(fingerprint);
        while self.slots[hole] != fingerprint {
            if self.slots[hole] == 0 {
                return; // not stored (cannot happen: `order` mirrors `slots`)
            }
            hole = (hole + 1) & self.mask;
        }
        let mut next = (hole + 1) & self.mask;
        while self.slots[next] != 0 {
            let moving = self.slots[next];
            // `moving` may fill the hole if its home is not after the hole
            // (cyclically, within the run from the hole to `next`).
            let from_home = next.wrapping_sub(self.home(moving)) & self.mask;
            let from_hole = next.wrapping_sub(hole) & self.mask;
            if from_home >= from_hole {
                self.slots[hole] = moving;
                hole = next;
            }
            next = (next + 1) & self.mask;
        }
        self.slots[hole] = 0;
    }
}

fn stored(fingerprint: u128) -> u128 {
    fingerprint.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The reference: a general hash set with the same forgetting rule.
    struct Model {
        set: HashSet<u128>,
        order: VecDeque<u128>,
        horizon: usize,
    }

    impl Model {
        fn insert(&mut self, fingerprint: u128) -> bool {
            let fingerprint = fingerprint.max(1);
            if !self.set.insert(fingerprint) {
                return false;
            }
            self.order.push_back(fingerprint);
            if self.order.len() > self.horizon {
                let oldest = self.order.pop_front().unwrap();
                self.set.remove(&oldest);
            }
            true
        }
    }

    #[test]
    fn agrees_with_a_hash_set_through_collisions_wraparound_and_forgetting() {
        // A small table and fingerprints drawn from few homes, so that runs
        // are long, wrap around the end, and are shifted back on removal.
        for horizon in [1, 3, 8, 50] {
            let mut ids = RecentIds::new(horizon);
            let mut model = Model { set: HashSet::new(), order: VecDeque::new(), horizon };
            let mut rng = crate::rng::Rng::new(horizon as u64);
            for step in 0..20_000 {
                // Homes in a narrow band near the end of the table, low bits
                // from a small pool, so the same fingerprint comes back often.
                let home = (ids.mask - 2 + rng.range(0, 4) as usize) as u128;
                let fingerprint = (home << 64) | u128::from(rng.range(0, 39));
                ids.prefetch(fingerprint);
                assert_eq!(ids.insert(fingerprint), model.insert(fingerprint), "horizon {horizon}, step {step}");
                assert_eq!(ids.len(), model.order.len());
            }
            // Every remembered fingerprint is found, nothing else is.
            for fingerprint in model.set.iter().copied() {
                assert!(!ids.insert(fingerprint));
            }
        }
    }

    #[test]
    fn zero_is_a_fingerprint_like_any_other() {
        let mut ids = RecentIds::new(4);
        assert!(ids.insert(0));
        assert!(!ids.insert(0));
        assert!(ids.insert(2));
    }
}
