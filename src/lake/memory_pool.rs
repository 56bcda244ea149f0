//! The memory pool behind `memory_limit_mb`: how the hash tables and sort
//! buffers of one session's queries share a fixed budget.
//!
//! DataFusion's `FairSpillPool` gives each operator that can spill an equal
//! share of the budget from the moment it is planned, busy or not. A model's
//! plan registers several (both partitions of each aggregation step, sorts
//! that only start once the aggregation is over), so the one hash table that
//! holds the data got a fraction of the budget and spilled: at scale 10 000
//! `gold.kpi_category_sales` spilled 638 MB and took 10.3 s with a 1.5 GiB
//! budget, 3.4 s when its 1.3 GB fit (BENCHMARKS.md).
//!
//! `SpillLastPool` lets spilling operators take memory as they ask for it,
//! first come first served, up to seven eighths of the budget; the last
//! eighth is kept for the operators that cannot spill (a join's build side,
//! a tiny cross join next to a large aggregation), which may use the whole
//! budget. An operator refused memory spills, or, if it cannot, fails the
//! query with DataFusion's "resources exhausted", which the CLI turns into
//! advice to raise `memory_limit_mb`. First come first served suits a
//! model's plan: its memory sits in one aggregation or sort at a time (two
//! models that scan the layer above never run at once, `models::run_layer`),
//! and the partitions of that operator grow side by side.

use std::fmt;
use std::sync::Mutex;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};

/// A fixed budget, first come first served, with the last eighth kept for
/// operators that cannot spill.
#[derive(Debug)]
pub struct SpillLastPool {
    budget: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Bytes held by operators that can spill.
    spillable: usize,
    /// Bytes held by operators that cannot.
    unspillable: usize,
}

impl SpillLastPool {
    pub fn new(budget: usize) -> SpillLastPool {
        SpillLastPool { budget, state: Mutex::new(PoolState::default()) }
    }

    /// What operators that can spill may hold together, at most.
    fn spillable_budget(&self) -> usize {
        self.budget - self.budget / 8
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The state is plain counters: a panic elsewhere cannot leave them
        // half-updated, so a poisoned lock is still good.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refuse(&self, reservation: &MemoryReservation, additional: usize, available: usize) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{} asked for {additional} more bytes on top of {}, {available} available in a {}-byte memory_limit_mb budget",
            reservation.consumer().name(),
            reservation.size(),
            self.budget
        ))
    }
}

impl MemoryPool for SpillLastPool {
    fn name(&self) -> &str {
        "spill-last pool"
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        let mut state = self.state();
        if reservation.consumer().can_spill() {
            state.spillable += additional;
        } else {
            state.unspillable += additional;
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut state = self.state();
        if reservation.consumer().can_spill() {
            state.spillable = state.spillable.saturating_sub(shrink);
        } else {
            state.unspillable = state.unspillable.saturating_sub(shrink);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let mut state = self.state();
        let held = state.spillable + state.unspillable;
        if reservation.consumer().can_spill() {
            let available = self.spillable_budget().saturating_sub(held);
            if additional > available {
                return Err(self.refuse(reservation, additional, available));
            }
            state.spillable += additional;
        } else {
            let available = self.budget.saturating_sub(held);
            if additional > available {
                return Err(self.refuse(reservation, additional, available));
            }
            state.unspillable += additional;
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        let state = self.state();
        state.spillable + state.unspillable
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.budget)
    }
}

impl fmt::Display for SpillLastPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({} bytes)", self.name(), self.budget)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::execution::memory_pool::MemoryConsumer;

    use super::*;

    fn pool(budget: usize) -> Arc<dyn MemoryPool> {
        Arc::new(SpillLastPool::new(budget))
    }

    fn spiller(pool: &Arc<dyn MemoryPool>, name: &str) -> MemoryReservation {
        MemoryConsumer::new(name).with_can_spill(true).register(pool)
    }

    #[test]
    fn one_spilling_operator_may_take_seven_eighths_however_many_others_are_planned() {
        let pool = pool(800);
        let busy = spiller(&pool, "aggregate 0");
        let _idle = spiller(&pool, "sort after it");
        let _idle_too = spiller(&pool, "aggregate 1");
        busy.try_grow(600).unwrap();
        busy.try_grow(100).unwrap();
        assert!(busy.try_grow(1).is_err(), "the last eighth is not for spilling operators");
        assert_eq!(pool.reserved(), 700);
    }

    #[test]
    fn spilling_operators_are_served_as_they_ask_and_refused_once_the_budget_is_taken() {
        let pool = pool(800);
        let first = spiller(&pool, "aggregate 0");
        let second = spiller(&pool, "aggregate 1");
        first.try_grow(300).unwrap();
        second.try_grow(300).unwrap();
        first.try_grow(100).unwrap();
        assert!(second.try_grow(1).is_err());
        // Once the first lets go (it spilled or finished), the second may grow.
        first.free();
        second.try_grow(400).unwrap();
        assert_eq!(pool.reserved(), 700);
    }

    #[test]
    fn operators_that_cannot_spill_may_use_the_last_eighth_and_no_more() {
        let pool = pool(800);
        let aggregate = spiller(&pool, "aggregate");
        aggregate.try_grow(700).unwrap();
        let build = MemoryConsumer::new("hash join build").register(&pool);
        build.try_grow(100).unwrap();
        assert!(build.try_grow(1).is_err(), "never past the budget");
        drop(aggregate);
        build.try_grow(700).unwrap();
        assert!(spiller(&pool, "sort").try_grow(1).is_err(), "the join holds it all");
        assert_eq!(pool.reserved(), 800);
    }

    #[test]
    fn the_refusal_is_resources_exhausted_and_names_the_operator() {
        let pool = pool(800);
        let aggregate = spiller(&pool, "GroupedHashAggregateStream[0]");
        let refused = aggregate.try_grow(701).unwrap_err();
        assert!(matches!(refused, DataFusionError::ResourcesExhausted(_)));
        assert!(refused.to_string().contains("GroupedHashAggregateStream[0] asked for 701 more bytes"), "{refused}");
    }
}
