//! Sources of the batch path: where bronze reads its full snapshots from.
//!
//! * `postgres` — a live PostgreSQL database, read through binary `COPY`
//!   (decoded by `pg_binary` straight into Arrow), big tables split in key
//!   ranges and read in parallel from one consistent snapshot.
//! * `dump` — a PostgreSQL SQL dump file (the vendored Northwind), parsed
//!   into the same Arrow types with no database at all (`medallion demo`).
//! * `generator` — writes a deterministic Northwind of any scale into a
//!   PostgreSQL database (`medallion source load`).
//! * `tls` — `sslmode` / `sslrootcert` of DATABASE_URL over rustls.
//!
//! Both readers map PostgreSQL types to Arrow the same way (`ColumnType`), so
//! bronze looks the same whichever source fed it. To add a source, produce
//! `ExtractedTable`s and hand them to `bronze::land`.

pub mod columns;
pub mod dump;
pub mod generator;
pub mod pg_binary;
pub mod postgres;
pub mod tls;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

pub use columns::{ColumnSpec, ColumnType};

/// The Northwind tables the batch path reads, in extraction order.
pub const NORTHWIND_TABLES: [&str; 6] = ["orders", "order_details", "products", "customers", "employees", "categories"];

/// One source table read in full.
#[derive(Debug, Clone)]
pub struct ExtractedTable {
    pub name: String,
    /// Printable origin: `host:port/db/schema.table` or `dump:<file>/table`.
    pub origin: String,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Bytes received from the source (wire bytes for PostgreSQL).
    pub source_bytes: u64,
}

impl ExtractedTable {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}
