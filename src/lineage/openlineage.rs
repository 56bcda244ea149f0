//! OpenLineage run events of the batch pipeline (`[lineage] url` / `file`).
//!
//! Every table a batch command writes is one OpenLineage job, named after
//! the table (`silver.sales_master`) in the configured namespace. Its run
//! sends `START` before the write, then `COMPLETE` (inputs, outputs with
//! their schema and column-lineage facets, the model's SQL) or `FAIL` (the
//! error line). Inputs and outputs are datasets named like the tables
//! (`bronze.customers`) in the lake's namespace (its URL); a PostgreSQL
//! source table is `<database>.public.<table>` in `postgres://host:port`.
//!
//! Events go to an HTTP receiver (Marquez's `/api/v1/lineage`) through
//! `webhook` (queued, retried, never blocking the pipeline) and/or are
//! appended as JSON lines to a file. Emitting never fails a run: a problem
//! is a logged warning. The URL may hold a token: it is never printed.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::columns::ColumnLineage;
use crate::config::Config;
use crate::error::Result;
use crate::lake::{Lake, TableName};
use crate::webhook::{Delivery, DeliveryPolicy, Webhook};

/// The spec version the events follow (the vendored schema in cli/tests/data).
const EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const SCHEMA_FACET: &str = "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const COLUMN_LINEAGE_FACET: &str =
    "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet";
const SQL_FACET: &str = "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet";
const JOB_TYPE_FACET: &str = "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const ERROR_FACET: &str = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";

/// Who made the events (a URI, as the spec asks).
fn producer() -> String {
    format!("urn:medallion:{}", env!("CARGO_PKG_VERSION"))
}

/// A dataset of an event: where it lives and, for outputs, its facets.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub namespace: String,
    pub name: String,
    /// (column, type) of an output, for the schema facet.
    pub schema: Vec<(String, String)>,
    pub columns: Option<ColumnLineage>,
}

impl Dataset {
    fn to_json(&self) -> Value {
        let mut facets = serde_json::Map::new();
        if !self.schema.is_empty() {
            let fields: Vec<Value> = self.schema.iter().map(|(name, kind)| json!({"name": name, "type": kind})).collect();
            facets.insert("schema".into(), json!({"_producer": producer(), "_schemaURL": SCHEMA_FACET, "fields": fields}));
        }
        if let Some(lineage) = &self.columns {
            facets.insert("columnLineage".into(), column_lineage_facet(&self.namespace, lineage));
        }
        let mut dataset = json!({"namespace": self.namespace, "name": self.name});
        if !facets.is_empty() {
            dataset["facets"] = Value::Object(facets);
        }
        dataset
    }
}

/// The column-lineage facet: each output column's direct inputs, and the
/// columns that decide the rows as the dataset's indirect inputs.
fn column_lineage_facet(namespace: &str, lineage: &ColumnLineage) -> Value {
    let input = |table: &str, column: &str, kind: &str| {
        json!({"namespace": namespace, "name": table, "field": column, "transformations": [{"type": kind}]})
    };
    let mut fields = serde_json::Map::new();
    for field in &lineage.fields {
        let inputs: Vec<Value> = field.inputs.iter().map(|c| input(&c.table, &c.column, "DIRECT")).collect();
        fields.insert(field.name.clone(), json!({"inputFields": inputs}));
    }
    let dataset: Vec<Value> = lineage.indirect.iter().map(|c| input(&c.table, &c.column, "INDIRECT")).collect();
    json!({"_producer": producer(), "_schemaURL": COLUMN_LINEAGE_FACET, "fields": fields, "dataset": dataset})
}

/// Where events go.
#[derive(Clone, Default)]
struct Sinks {
    http: Option<Webhook>,
    file: Option<Arc<Mutex<std::fs::File>>>,
}

/// The run events of one command. Cheap to clone; `Events::off()` sends nothing.
#[derive(Clone, Default)]
pub struct Events {
    sinks: Sinks,
    job_namespace: String,
    lake_namespace: String,
}

/// Waits for the delivery of queued events at the end of a command.
#[derive(Default)]
pub struct EventsDelivery(Option<Delivery>);

impl EventsDelivery {
    /// Waits (at most 15 s) until the queued events are delivered; call it
    /// after the last `Events` clone is dropped.
    pub async fn finish(self) {
        if let Some(delivery) = self.0 {
            delivery.finish(Duration::from_secs(15)).await;
        }
    }
}

/// One run of a job: its id and what it reads.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub job: String,
    pub run_id: String,
    pub inputs: Vec<Dataset>,
    pub sql: Option<String>,
}

impl Events {
    /// Events that go nowhere.
    pub fn off() -> Events {
        Events::default()
    }

    /// The events `[lineage]` asks for. A URL that is not http(s), or a file
    /// that cannot be opened, is one line at start (the command has not
    /// written anything yet).
    pub fn from_config(config: &Config, lake: &Lake) -> Result<(Events, EventsDelivery)> {
        let lineage = &config.lineage;
        let mut sinks = Sinks::default();
        let mut delivery = EventsDelivery(None);
        if let Some(url) = &lineage.url {
            let (webhook, task) = Webhook::start(url, "lineage.url", "OpenLineage event", DeliveryPolicy::default())?;
            sinks.http = Some(webhook);
            delivery = EventsDelivery(Some(task));
        }
        if let Some(path) = &lineage.file {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
                crate::error::Error::Config(format!(
                    "lineage.file {} cannot be opened for appending ({e}): give a writable path",
                    path.display()
                ))
            })?;
            sinks.file = Some(Arc::new(Mutex::new(file)));
        }
        let events = Events {
            sinks,
            job_namespace: lineage.namespace.clone(),
            lake_namespace: lake.location().describe().trim_end_matches('/').to_string(),
        };
        Ok((events, delivery))
    }

    /// Whether events are sent at all (callers skip the work of building them).
    pub fn enabled(&self) -> bool {
        self.sinks.http.is_some() || self.sinks.file.is_some()
    }

    /// A lake table as a dataset (no facets).
    pub fn lake_dataset(&self, table: &str) -> Dataset {
        Dataset { namespace: self.lake_namespace.clone(), name: table.to_string(), schema: Vec::new(), columns: None }
    }

    /// A new run of the job that writes `table`.
    pub fn run(&self, table: &TableName, inputs: Vec<Dataset>, sql: Option<String>) -> JobRun {
        JobRun { job: table.to_string(), run_id: new_run_id(), inputs, sql }
    }

    pub fn start(&self, run: &JobRun) {
        if !self.enabled() {
            return;
        }
        self.send(self.event("START", run, &[], None));
    }

    /// `outputs`: the tables written, with their schema (read from the lake)
    /// and column lineage.
    pub fn complete(&self, run: &JobRun, outputs: &[Dataset]) {
        if !self.enabled() {
            return;
        }
        self.send(self.event("COMPLETE", run, outputs, None));
    }

    pub fn fail(&self, run: &JobRun, error: &str) {
        if !self.enabled() {
            return;
        }
        self.send(self.event("FAIL", run, &[], Some(error)));
    }

    fn event(&self, kind: &str, run: &JobRun, outputs: &[Dataset], error: Option<&str>) -> Value {
        let mut job_facets = serde_json::Map::new();
        job_facets.insert(
            "jobType".into(),
            json!({"_producer": producer(), "_schemaURL": JOB_TYPE_FACET, "processingType": "BATCH", "integration": "MEDALLION", "jobType": "TASK"}),
        );
        if let Some(sql) = &run.sql {
            job_facets.insert("sql".into(), json!({"_producer": producer(), "_schemaURL": SQL_FACET, "query": sql}));
        }
        let mut run_json = json!({"runId": run.run_id});
        if let Some(error) = error {
            run_json["facets"] = json!({"errorMessage": {
                "_producer": producer(), "_schemaURL": ERROR_FACET, "message": error, "programmingLanguage": "SQL"
            }});
        }
        json!({
            "eventType": kind,
            "eventTime": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "producer": producer(),
            "schemaURL": EVENT_SCHEMA,
            "run": run_json,
            "job": {"namespace": self.job_namespace, "name": run.job, "facets": Value::Object(job_facets)},
            "inputs": run.inputs.iter().map(Dataset::to_json).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(Dataset::to_json).collect::<Vec<_>>(),
        })
    }

    fn send(&self, event: Value) {
        let line = event.to_string();
        if let Some(file) = &self.sinks.file {
            let written = file.lock().map_err(|_| std::io::Error::other("lock")).and_then(|mut f| writeln!(f, "{line}"));
            if let Err(err) = written {
                tracing::warn!("OpenLineage event not written to lineage.file: {err}");
            }
        }
        if let Some(http) = &self.sinks.http {
            http.send(line);
        }
    }

    /// The output dataset of `table` as it now is in the lake: its schema
    /// and, when given, its column lineage.
    pub async fn written(&self, lake: &Lake, table: &TableName, columns: Option<ColumnLineage>) -> Dataset {
        let mut dataset = self.lake_dataset(&table.to_string());
        dataset.columns = columns;
        match lake.existing_table(table.layer.as_str(), table.table()).await {
            Ok(Some(delta)) => {
                if let Ok(snapshot) = delta.snapshot() {
                    dataset.schema =
                        snapshot.schema().fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect();
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!("OpenLineage: the schema of {table} is not in the event ({err})"),
        }
        dataset
    }
}

/// A PostgreSQL source table as OpenLineage names it: `<database>.public.<table>`
/// in `postgres://host:port` (never the user or the password).
pub fn postgres_dataset(database_url: &str, table: &str) -> Dataset {
    let (namespace, database) = match url::Url::parse(database_url) {
        Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") => {
            let host = url.host_str().unwrap_or("localhost");
            let port = url.port().unwrap_or(5432);
            let database = url.path().trim_start_matches('/');
            (format!("postgres://{host}:{port}"), if database.is_empty() { "postgres".to_string() } else { database.to_string() })
        }
        _ => ("postgres://localhost:5432".to_string(), "postgres".to_string()),
    };
    Dataset { namespace, name: format!("{database}.public.{table}"), schema: Vec::new(), columns: None }
}

/// The identity lineage of a bronze table: every column of `source` from
/// the source table of the same name (the technical columns have none).
pub fn copied_columns(source: &Dataset, columns: &[(String, String)], technical: &[&str]) -> ColumnLineage {
    use super::columns::{FieldLineage, TableColumn};
    let fields = columns
        .iter()
        .map(|(name, _)| {
            let inputs: BTreeSet<TableColumn> = if technical.contains(&name.as_str()) {
                BTreeSet::new()
            } else {
                BTreeSet::from([TableColumn { table: source.name.clone(), column: name.clone() }])
            };
            FieldLineage { name: name.clone(), inputs }
        })
        .collect();
    ColumnLineage { fields, indirect: BTreeSet::new() }
}

/// A random (version 4) UUID, as OpenLineage run ids are.
fn new_run_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough without the OS source: the time and a counter.
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128;
        bytes = nanos.to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_version_4_uuids() {
        let id = new_run_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, new_run_id());
    }

    #[test]
    fn postgres_datasets_never_carry_credentials() {
        let dataset = postgres_dataset("postgres://etl:s3cret@db.example:6543/northwind?sslmode=require", "orders");
        assert_eq!(dataset.namespace, "postgres://db.example:6543");
        assert_eq!(dataset.name, "northwind.public.orders");
        assert!(!format!("{dataset:?}").contains("s3cret"));
    }
}
