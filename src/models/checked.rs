//! A model's rows checked against its expectations in one pass.
//!
//! The model's query runs once, with one boolean column per rule appended
//! (`passes(rule)`, false when the rule fails or gives NULL). Each batch is
//! split as it streams by: the rows passing every rule go on to the table's
//! writers, the others are kept (with the first failed rule and all of them)
//! for the quarantine table, and each rule's failures are counted. The
//! quarantine is expected to be small next to the table; the passing rows
//! are never held whole in memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{and, filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::quality::Expectation;

/// The column of the quarantine table naming the first rule a row failed.
pub const FAILED_RULE: &str = "failed_rule";
/// The column of the quarantine table listing every rule a row failed, comma-separated.
pub const FAILED_RULES: &str = "failed_rules";

/// What the split saw, shared by the streams of one query.
#[derive(Debug, Default)]
pub struct SplitTally {
    /// Failures per rule, in declaration order.
    pub failures: Vec<u64>,
    pub passing: u64,
    /// The failing rows, with `FAILED_RULE` and `FAILED_RULES`.
    pub quarantine: Vec<RecordBatch>,
    /// Time spent splitting, summed over streams.
    pub split_time: Duration,
}

/// Splits the batches of a query whose first `output_columns` columns are
/// the model's and whose last `rules.len()` columns are the rules' results.
#[derive(Clone)]
pub struct RuleSplit {
    output_columns: usize,
    rule_names: Arc<Vec<String>>,
    passing_schema: SchemaRef,
    quarantine_schema: SchemaRef,
    tally: Arc<Mutex<SplitTally>>,
}

impl RuleSplit {
    /// For a query of schema `query_schema` checked against `rules`.
    pub fn new(query_schema: &SchemaRef, rules: &[Expectation]) -> RuleSplit {
        let output_columns = query_schema.fields().len() - rules.len();
        let fields: Vec<Field> = query_schema.fields()[..output_columns].iter().map(|f| f.as_ref().clone()).collect();
        let passing_schema = Arc::new(Schema::new(fields.clone()));
        let mut quarantine_fields = fields;
        quarantine_fields.push(Field::new(FAILED_RULE, DataType::Utf8, true));
        quarantine_fields.push(Field::new(FAILED_RULES, DataType::Utf8, true));
        RuleSplit {
            output_columns,
            rule_names: Arc::new(rules.iter().map(|r| r.name.clone()).collect()),
            passing_schema,
            quarantine_schema: Arc::new(Schema::new(quarantine_fields)),
            tally: Arc::new(Mutex::new(SplitTally { failures: vec![0; rules.len()], ..SplitTally::default() })),
        }
    }

    /// The schema of the passing rows (the model's columns).
    pub fn passing_schema(&self) -> SchemaRef {
        self.passing_schema.clone()
    }

    pub fn quarantine_schema(&self) -> SchemaRef {
        self.quarantine_schema.clone()
    }

    /// `stream` reduced to its passing rows; the rest is tallied.
    pub fn passing_rows(&self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let split = self.clone();
        let passing = stream.map(move |batch| batch.and_then(|batch| split.split(&batch)));
        Box::pin(RecordBatchStreamAdapter::new(self.passing_schema.clone(), passing))
    }

    /// What the streams saw; call once they have ended.
    pub fn finish(&self) -> SplitTally {
        std::mem::take(&mut *self.tally.lock().expect("split tally lock"))
    }

    fn split(&self, batch: &RecordBatch) -> Result<RecordBatch, DataFusionError> {
        let started = Instant::now();
        let rows = batch.num_rows();
        let output = batch.project(&(0..self.output_columns).collect::<Vec<_>>())?;
        let output = RecordBatch::try_new(self.passing_schema.clone(), output.columns().to_vec())?;
        let results: Vec<BooleanArray> = batch.columns()[self.output_columns..]
            .iter()
            .map(|column| {
                let column = column.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
                    DataFusionError::Internal("an expectation's check is not a boolean".to_string())
                })?;
                // NULL counts as a failure.
                Ok(if column.null_count() == 0 {
                    column.clone()
                } else {
                    column.iter().map(|v| Some(v.unwrap_or(false))).collect()
                })
            })
            .collect::<Result<_, DataFusionError>>()?;
        let Some(first) = results.first() else {
            self.tally.lock().expect("split tally lock").passing += rows as u64;
            return Ok(output);
        };
        let mut all = first.clone();
        for result in &results[1..] {
            all = and(&all, result)?;
        }
        let passing_rows = all.true_count();
        let passing = if passing_rows == rows { output.clone() } else { filter_record_batch(&output, &all)? };
        let quarantine = if passing_rows < rows { Some(self.failing(&output, &all, &results)?) } else { None };
        let mut tally = self.tally.lock().expect("split tally lock");
        for (count, result) in tally.failures.iter_mut().zip(&results) {
            *count += (rows - result.true_count()) as u64;
        }
        tally.passing += passing_rows as u64;
        tally.quarantine.extend(quarantine);
        tally.split_time += started.elapsed();
        Ok(passing)
    }

    /// The rows of `output` failing `all`, with the rules they failed.
    fn failing(&self, output: &RecordBatch, all: &BooleanArray, results: &[BooleanArray]) -> Result<RecordBatch, DataFusionError> {
        let failing = not(all)?;
        let rows = filter_record_batch(output, &failing)?;
        let mut first_failed = Vec::with_capacity(rows.num_rows());
        let mut all_failed = Vec::with_capacity(rows.num_rows());
        for row in (0..all.len()).filter(|row| !all.value(*row)) {
            let failed: Vec<&str> = results
                .iter()
                .zip(self.rule_names.iter())
                .filter(|(result, _)| !result.value(row))
                .map(|(_, name)| name.as_str())
                .collect();
            first_failed.push(failed.first().copied());
            all_failed.push(Some(failed.join(",")));
        }
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        columns.push(Arc::new(StringArray::from(first_failed)));
        columns.push(Arc::new(StringArray::from(all_failed)));
        Ok(RecordBatch::try_new(self.quarantine_schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::parse_expectations;
    use datafusion::arrow::array::Int64Array;

    #[tokio::test]
    async fn rows_are_split_by_rules_and_counted_per_rule() {
        let rules = parse_expectations(
            "m",
            "[[expectation]]\nname = \"positive\"\ncheck = \"n > 0\"\n[[expectation]]\nname = \"small\"\ncheck = \"n < 10\"\n",
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("__positive", DataType::Boolean, true),
            Field::new("__small", DataType::Boolean, true),
        ]));
        // n:        5     -1    20     -30   NULL (both checks NULL)
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(5), Some(-1), Some(20), Some(-30), None])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), Some(true), Some(false), None])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(true), Some(false), Some(true), None])),
            ],
        )
        .unwrap();
        let split = RuleSplit::new(&schema, &rules);
        let input = Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(vec![Ok(batch)])));
        let passing: Vec<RecordBatch> = split.passing_rows(input).map(|b| b.unwrap()).collect().await;
        assert_eq!(passing.len(), 1);
        assert_eq!(passing[0].num_columns(), 1);
        let kept = passing[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(kept.values().to_vec(), vec![5]);

        let tally = split.finish();
        assert_eq!(tally.passing, 1);
        assert_eq!(tally.failures, vec![3, 2]); // positive: -1, -30, NULL; small: 20, NULL
        let quarantine = &tally.quarantine[0];
        let text = |i: usize| {
            let column = quarantine.column(i).as_any().downcast_ref::<StringArray>().unwrap();
            (0..column.len()).map(|r| column.value(r).to_string()).collect::<Vec<_>>()
        };
        assert_eq!(text(1), vec!["positive", "small", "positive", "positive"]);
        assert_eq!(text(2), vec!["positive", "small", "positive", "positive,small"]);
    }
}
