//! medallion: a whole medallion lakehouse (bronze → silver → gold) in one
//! binary. See ARCHITECTURE.md for the layers and how data flows.
//!
//! * `source`   — where raw data comes from (PostgreSQL, dump files, generator)
//! * `bronze`   — raw landing with technical metadata
//! * `models`   — silver and gold as SQL files, materialised as Delta tables
//! * `quality`  — expectations declared next to models
//! * `lake`     — Delta tables under one lake URL, DataFusion catalog
//! * `kafka`    — Kafka clients: librdkafka settings (SASL, TLS), brokers' refusals
//! * `pipeline` — the DAG: ingest → refine → aggregate, with retries
//! * `runs`     — run history in `gold.pipeline_runs`
//! * `audit`    — every query of every endpoint in `audit.queries` (admins only)
//! * `glossary` — descriptions of every table and column (`<model>.docs.toml`), the catalog
//! * `lineage`  — the table graph, derived from the models' logical plans
//! * `profiles` — column statistics of each table in `gold.table_profiles`
//! * `tables`   — table contracts: names, schemas Rust writes, run details, dashboard queries
//! * `output`   — result encoders (table text, CSV, JSON, Arrow IPC)
//! * `live`     — the live state of the stream (`live.sales_by_country`)
//! * `serve`    — dashboard, HTTP API, PostgreSQL wire endpoint
//! * `tls`      — TLS provider, PEM certificates and keys (serving layer, PostgreSQL source)
//! * `report`   — queries the gold layer for summaries

pub mod audit;
pub mod cluster;
pub mod bronze;
pub mod config;
pub mod demo;
pub mod devtools;
pub mod error;
pub mod glossary;
pub mod jobs;
pub mod kafka;
pub mod lake;
pub mod lineage;
pub mod live;
pub mod models;
pub mod output;
pub mod pipeline;
pub mod produce;
pub mod profiles;
pub mod progress;
pub mod quality;
mod rng;
pub mod runs;
pub mod serve;
pub mod source;
pub mod stream;
pub mod tables;
pub mod tls;
pub mod up;
pub mod webhook;

pub use error::{Error, Result};
