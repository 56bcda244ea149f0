//! PostgreSQL column types and their faithful Arrow counterparts, plus the
//! typed Arrow builders both source readers fill.
//!
//! int2→Int16, int4→Int32, int8→Int64, float4→Float32, float8→Float64,
//! bool→Boolean, text/varchar/bpchar→Utf8, bytea→Binary, date→Date32,
//! timestamp→Timestamp(µs), timestamptz→Timestamp(µs, UTC),
//! numeric(p,s)→Decimal128(p,s) (unconstrained numeric → Decimal128(38,10)).
//! Any other type is read as its text form (Utf8).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Scale used for `numeric` columns declared without precision.
pub const UNCONSTRAINED_NUMERIC: (u8, i8) = (38, 10);

/// A source column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Bool,
    Text,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Numeric { precision: u8, scale: i8 },
    /// A type we do not decode natively: read through a `::text` cast.
    AsText,
}

impl ColumnType {
    /// From a PostgreSQL type name (`pg_type.typname`) and `atttypmod`.
    pub fn from_pg(typname: &str, typmod: i32) -> ColumnType {
        match typname {
            "int2" | "smallint" => ColumnType::Int16,
            "int4" | "integer" | "int" => ColumnType::Int32,
            "int8" | "bigint" => ColumnType::Int64,
            "float4" | "real" => ColumnType::Float32,
            "float8" | "double precision" => ColumnType::Float64,
            "bool" | "boolean" => ColumnType::Bool,
            "text" | "varchar" | "bpchar" | "name" | "character varying" | "character" | "char" => ColumnType::Text,
            "bytea" => ColumnType::Bytea,
            "date" => ColumnType::Date,
            "timestamp" | "timestamp without time zone" => ColumnType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ColumnType::TimestampTz,
            "numeric" | "decimal" => {
                if typmod >= 4 {
                    let packed = typmod - 4;
                    let precision = ((packed >> 16) & 0xffff) as u8;
                    let scale = (packed & 0xffff) as i8;
                    ColumnType::Numeric { precision: precision.clamp(1, 38), scale }
                } else {
                    let (precision, scale) = UNCONSTRAINED_NUMERIC;
                    ColumnType::Numeric { precision, scale }
                }
            }
            _ => ColumnType::AsText,
        }
    }

    /// The Arrow type this column lands as.
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::Int16 => DataType::Int16,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Text | ColumnType::AsText => DataType::Utf8,
            ColumnType::Bytea => DataType::Binary,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
        }
    }
}

/// A named, typed source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub column_type: ColumnType,
    pub nullable: bool,
}

/// The Arrow schema of a list of source columns.
pub fn arrow_schema(columns: &[ColumnSpec]) -> SchemaRef {
    let fields: Vec<Field> =
        columns.iter().map(|c| Field::new(&c.name, c.column_type.arrow_type(), c.nullable)).collect();
    Arc::new(Schema::new(fields))
}

/// An Arrow builder for one column, typed once so the hot loop only matches.
pub enum ColumnBuilder {
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Numeric(Decimal128Builder, u8, i8),
}

impl ColumnBuilder {
    pub fn new(column_type: ColumnType, capacity: usize) -> ColumnBuilder {
        match column_type {
            ColumnType::Int16 => ColumnBuilder::Int16(Int16Builder::with_capacity(capacity)),
            ColumnType::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(capacity)),
            ColumnType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float32 => ColumnBuilder::Float32(Float32Builder::with_capacity(capacity)),
            ColumnType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(capacity)),
            ColumnType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Text | ColumnType::AsText => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            ColumnType::Bytea => ColumnBuilder::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), None)
            }
            ColumnType::TimestampTz => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), Some("UTC".into()))
            }
            ColumnType::Numeric { precision, scale } => {
                ColumnBuilder::Numeric(Decimal128Builder::with_capacity(capacity), precision, scale)
            }
        }
    }

    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Int16(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
            ColumnBuilder::Bytea(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b, _) => b.append_null(),
            ColumnBuilder::Numeric(b, _, _) => b.append_null(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnBuilder::Int16(b) => b.len(),
            ColumnBuilder::Int32(b) => b.len(),
            ColumnBuilder::Int64(b) => b.len(),
            ColumnBuilder::Float32(b) => b.len(),
            ColumnBuilder::Float64(b) => b.len(),
            ColumnBuilder::Bool(b) => b.len(),
            ColumnBuilder::Text(b) => b.len(),
            ColumnBuilder::Bytea(b) => b.len(),
            ColumnBuilder::Date(b) => b.len(),
            ColumnBuilder::Timestamp(b, _) => b.len(),
            ColumnBuilder::Numeric(b, _, _) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finishes the column, leaving the builder empty for the next batch.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int16(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytea(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            ColumnBuilder::Numeric(b, p, s) => {
                Arc::new(b.finish().with_precision_and_scale(*p, *s).expect("precision checked at schema time"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmod_gives_precision_and_scale() {
        // numeric(12,2) has atttypmod = ((12 << 16) | 2) + 4
        let typmod = ((12 << 16) | 2) + 4;
        assert_eq!(ColumnType::from_pg("numeric", typmod), ColumnType::Numeric { precision: 12, scale: 2 });
        assert_eq!(ColumnType::from_pg("numeric", -1), ColumnType::Numeric { precision: 38, scale: 10 });
    }

    #[test]
    fn faithful_types() {
        assert_eq!(ColumnType::from_pg("int2", -1).arrow_type(), DataType::Int16);
        assert_eq!(ColumnType::from_pg("float4", -1).arrow_type(), DataType::Float32);
        assert_eq!(ColumnType::from_pg("bytea", -1).arrow_type(), DataType::Binary);
        assert_eq!(ColumnType::from_pg("uuid", -1), ColumnType::AsText);
    }
}
