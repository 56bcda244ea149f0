//! Where a model's time went: planning, the operators of its physical plan
//! (scan, join, aggregate, sort, window), the expectations, the Parquet
//! encoding and the Delta commit. Read from DataFusion's own metrics after
//! the model has run; shown by `medallion run --profile`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::ExecutionPlan;

use crate::lake::WriteProfile;

/// Compute time of the operators of one physical plan, by kind, summed over
/// partitions (on two cores they can add up to twice the wall time).
#[derive(Debug, Clone, Default)]
pub struct OperatorTimes {
    pub scan: Duration,
    pub join: Duration,
    pub aggregate: Duration,
    pub sort: Duration,
    pub window: Duration,
    /// Projections, filters, repartitions and the rest.
    pub other: Duration,
}

impl OperatorTimes {
    /// Sums the metrics of every node of `plan`.
    pub fn of(plan: &Arc<dyn ExecutionPlan>) -> OperatorTimes {
        let mut times = OperatorTimes::default();
        times.add(plan);
        times
    }

    fn add(&mut self, plan: &Arc<dyn ExecutionPlan>) {
        if let Some(metrics) = plan.metrics() {
            // Scans time their decoding under their own name.
            let nanos = metrics
                .elapsed_compute()
                .or_else(|| metrics.sum_by_name("time_elapsed_processing").map(|v| v.as_usize()))
                .unwrap_or(0);
            let spent = Duration::from_nanos(nanos as u64);
            let name = plan.name();
            let slot = if name.contains("DataSource") || name.contains("Scan") {
                &mut self.scan
            } else if name.contains("Join") {
                &mut self.join
            } else if name.contains("Aggregate") {
                &mut self.aggregate
            } else if name.contains("Window") {
                &mut self.window
            } else if name.contains("Sort") {
                &mut self.sort
            } else {
                &mut self.other
            };
            *slot += spent;
        }
        for child in plan.children() {
            self.add(child);
        }
    }
}

/// The profile of one model run.
#[derive(Debug, Clone, Default)]
pub struct ModelProfile {
    /// SQL to physical plan (every query the model ran).
    pub plan: Duration,
    /// The fail-the-run pre-check, when the model has such rules.
    pub precheck: Duration,
    pub operators: OperatorTimes,
    /// Splitting rows by the expectations.
    pub checks: Duration,
    /// The table's write: time waiting for rows, encoding, commit.
    pub write: WriteProfile,
    /// The quarantine table's write (wall).
    pub quarantine: Duration,
    /// The whole model, wall time.
    pub wall: Duration,
}

impl ModelProfile {
    /// One line: each part's time, rows and rows/s.
    pub fn summary(&self, rows: u64) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut line = String::new();
        let mut part = |label: &str, d: Duration| {
            if !d.is_zero() {
                let _ = write!(line, "{label} {:.0}ms  ", ms(d));
            }
        };
        part("plan", self.plan);
        part("precheck", self.precheck);
        part("scan", self.operators.scan);
        part("join", self.operators.join);
        part("aggregate", self.operators.aggregate);
        part("sort", self.operators.sort);
        part("window", self.operators.window);
        part("other", self.operators.other);
        part("checks", self.checks);
        part("encode", self.write.encode);
        part("commit", self.write.commit);
        part("quarantine", self.quarantine);
        line.push_str("| ");
        line.push_str(&self.write.wall_line(rows, self.wall));
        line
    }
}
