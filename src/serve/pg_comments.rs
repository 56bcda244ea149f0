//! The glossary's descriptions as PostgreSQL comments on the PostgreSQL
//! endpoint: `obj_description(oid, 'pg_class')` and `col_description(oid,
//! attnum)`, the functions psql's `\d+` and `\dt+` (and most SQL clients'
//! schema browsers) call.
//!
//! The PostgreSQL catalog emulation gives each table an oid when its
//! `pg_class` is read; `Comments::refresh` reads `pg_class` and
//! `pg_attribute` through the session and keys each description of the
//! glossary (`models/<layer>/<table>.docs.toml`) by those oids, and the two
//! functions look them up. The server refreshes it as tables appear.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;

use crate::glossary::Glossary;
use crate::output;

/// Descriptions by (table oid, column number); column 0 is the table's own.
#[derive(Debug, Default)]
pub struct Comments {
    by_oid: RwLock<HashMap<(i64, i64), String>>,
}

impl Comments {
    /// Registers `obj_description` and `col_description` in `ctx`.
    pub fn register(self: &Arc<Comments>, ctx: &SessionContext) {
        for column in [false, true] {
            ctx.register_udf(ScalarUDF::new_from_impl(Describe {
                comments: self.clone(),
                column,
                signature: Signature::variadic_any(Volatility::Volatile),
            }));
        }
    }

    /// Keys the glossary's descriptions by the oids `ctx`'s catalog gives
    /// the tables now; a failure leaves the previous ones (and is logged).
    pub async fn refresh(&self, ctx: &SessionContext, glossary: &Glossary) {
        match read_oids(ctx, glossary).await {
            Ok(found) => {
                if let Ok(mut by_oid) = self.by_oid.write() {
                    *by_oid = found;
                }
            }
            Err(err) => tracing::warn!("PostgreSQL comments not refreshed: {}", crate::error::one_line(&err.to_string())),
        }
    }

    fn lookup(&self, oid: i64, column: i64) -> Option<String> {
        self.by_oid.read().ok()?.get(&(oid, column)).cloned()
    }
}

async fn read_oids(ctx: &SessionContext, glossary: &Glossary) -> datafusion::error::Result<HashMap<(i64, i64), String>> {
    let tables = ctx
        .sql(
            "SELECT CAST(c.oid AS BIGINT) AS oid, n.nspname AS layer, c.relname AS name \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
        )
        .await?
        .collect()
        .await?;
    let mut names: HashMap<i64, String> = HashMap::new();
    let mut found = HashMap::new();
    for row in output::json_rows(&tables).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))? {
        let (Some(oid), Some(layer), Some(name)) = (row["oid"].as_i64(), row["layer"].as_str(), row["name"].as_str()) else {
            continue;
        };
        let table = format!("{layer}.{name}");
        if let Some(description) = glossary.table(&table) {
            found.insert((oid, 0), description);
        }
        names.insert(oid, table);
    }
    let columns = ctx
        .sql(
            "SELECT CAST(a.attrelid AS BIGINT) AS oid, CAST(a.attnum AS BIGINT) AS attnum, a.attname AS name \
             FROM pg_catalog.pg_attribute a WHERE a.attnum > 0",
        )
        .await?
        .collect()
        .await?;
    for row in output::json_rows(&columns).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))? {
        let (Some(oid), Some(attnum), Some(column)) = (row["oid"].as_i64(), row["attnum"].as_i64(), row["name"].as_str()) else {
            continue;
        };
        if let Some(description) = names.get(&oid).and_then(|table| glossary.column(table, column)) {
            found.insert((oid, attnum), description);
        }
    }
    Ok(found)
}

/// `obj_description(oid[, catalog])` (`column == false`) or
/// `col_description(oid, attnum)`: the description, or NULL.
#[derive(Debug)]
struct Describe {
    comments: Arc<Comments>,
    column: bool,
    signature: Signature,
}

impl PartialEq for Describe {
    fn eq(&self, other: &Self) -> bool {
        self.column == other.column && Arc::ptr_eq(&self.comments, &other.comments)
    }
}

impl Eq for Describe {}

impl std::hash::Hash for Describe {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.column.hash(state);
        Arc::as_ptr(&self.comments).hash(state);
    }
}

impl ScalarUDFImpl for Describe {
    fn name(&self) -> &str {
        if self.column { "col_description" } else { "obj_description" }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let as_int = |array: &ArrayRef| -> DfResult<Int64Array> {
            Ok(cast(array, &DataType::Int64)?.as_any().downcast_ref::<Int64Array>().cloned().unwrap_or_else(|| Int64Array::new_null(rows)))
        };
        let oids = match arrays.first() {
            Some(array) => as_int(array)?,
            None => Int64Array::new_null(rows),
        };
        let columns = match (self.column, arrays.get(1)) {
            (true, Some(array)) => Some(as_int(array)?),
            _ => None,
        };
        let described: StringArray = (0..oids.len())
            .map(|row| {
                if oids.is_null(row) {
                    return None;
                }
                let column = match &columns {
                    Some(numbers) if numbers.is_null(row) => return None,
                    Some(numbers) => numbers.value(row),
                    None => 0,
                };
                self.comments.lookup(oids.value(row), column)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(described)))
    }
}
