//! Reads a plain-SQL PostgreSQL dump (CREATE TABLE + INSERT statements, such
//! as the vendored Northwind) straight into Arrow, with no database.
//!
//! Column types come from the dump's `CREATE TABLE` and map to Arrow exactly
//! as the binary COPY reader maps them, so bronze is identical whichever
//! path fed it. Only what such dumps contain is understood: quoted strings
//! with `''` escapes, numbers, `NULL`, booleans, `'\x..'` bytea.

use std::collections::HashMap;
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Date32Type;

use super::columns::{arrow_schema, ColumnBuilder, ColumnSpec, ColumnType};
use super::ExtractedTable;
use crate::error::{Error, Result};

/// The Northwind dump shipped inside the binary (licence in data/northwind).
pub const NORTHWIND_SQL: &str = include_str!("../../data/northwind/northwind.sql");

/// A parsed dump: tables by name, each with columns and rows of literals.
pub struct Dump {
    origin: String,
    tables: HashMap<String, DumpTable>,
}

struct DumpTable {
    columns: Vec<ColumnSpec>,
    rows: Vec<Vec<Literal>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Number(String),
    Text(String),
    Bool(bool),
}

impl Dump {
    /// The vendored Northwind.
    pub fn northwind() -> Result<Dump> {
        Dump::parse("northwind.sql (built in)", NORTHWIND_SQL)
    }

    /// Reads a dump file.
    pub fn from_file(path: &Path) -> Result<Dump> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Dump { path: path.display().to_string(), reason: e.to_string() })?;
        Dump::parse(&path.display().to_string(), &text)
    }

    /// Parses dump text.
    pub fn parse(origin: &str, text: &str) -> Result<Dump> {
        let fail = |reason: String| Error::Dump { path: origin.to_string(), reason };
        let mut tables: HashMap<String, DumpTable> = HashMap::new();
        for statement in split_statements(text) {
            let head: String = statement.chars().take(40).collect::<String>().to_ascii_uppercase();
            if head.starts_with("CREATE TABLE") {
                let (name, columns) = parse_create_table(&statement).map_err(fail)?;
                tables.insert(name, DumpTable { columns, rows: Vec::new() });
            } else if head.starts_with("INSERT INTO") {
                let (name, rows) = parse_insert(&statement).map_err(fail)?;
                let table = tables
                    .get_mut(&name)
                    .ok_or_else(|| fail(format!("INSERT into {name} before its CREATE TABLE")))?;
                for row in &rows {
                    if row.len() != table.columns.len() {
                        return Err(fail(format!(
                            "INSERT into {name} has {} values for {} columns",
                            row.len(),
                            table.columns.len()
                        )));
                    }
                }
                table.rows.extend(rows);
            }
        }
        Ok(Dump { origin: origin.to_string(), tables })
    }

    /// One table as Arrow.
    pub fn extract(&self, table: &str) -> Result<ExtractedTable> {
        let dump_table = self.tables.get(table).ok_or_else(|| Error::Dump {
            path: self.origin.clone(),
            reason: format!("no table {table} in the dump"),
        })?;
        let schema = arrow_schema(&dump_table.columns);
        let mut builders: Vec<ColumnBuilder> =
            dump_table.columns.iter().map(|c| ColumnBuilder::new(c.column_type, dump_table.rows.len())).collect();
        let mut bytes = 0u64;
        for row in &dump_table.rows {
            for ((literal, builder), column) in row.iter().zip(builders.iter_mut()).zip(&dump_table.columns) {
                if let Literal::Text(t) | Literal::Number(t) = literal {
                    bytes += t.len() as u64;
                }
                append_literal(builder, column.column_type, literal).map_err(|reason| Error::Dump {
                    path: self.origin.clone(),
                    reason: format!("{table}.{}: {reason}", column.name),
                })?;
            }
        }
        let arrays = builders.iter_mut().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays)?;
        Ok(ExtractedTable {
            name: table.to_string(),
            origin: format!("dump:{}/{table}", self.origin),
            schema,
            batches: vec![batch],
            source_bytes: bytes,
        })
    }
}

fn append_literal(builder: &mut ColumnBuilder, column_type: ColumnType, literal: &Literal) -> Result<(), String> {
    let text = match literal {
        Literal::Null => {
            builder.append_null();
            return Ok(());
        }
        Literal::Bool(b) => {
            if let ColumnBuilder::Bool(builder) = builder {
                builder.append_value(*b);
                return Ok(());
            }
            b.to_string()
        }
        Literal::Number(t) | Literal::Text(t) => t.clone(),
    };
    let bad = |what: &str| format!("'{text}' is not a valid {what}");
    match builder {
        ColumnBuilder::Int16(b) => b.append_value(text.parse().map_err(|_| bad("smallint"))?),
        ColumnBuilder::Int32(b) => b.append_value(text.parse().map_err(|_| bad("integer"))?),
        ColumnBuilder::Int64(b) => b.append_value(text.parse().map_err(|_| bad("bigint"))?),
        ColumnBuilder::Float32(b) => b.append_value(text.parse().map_err(|_| bad("real"))?),
        ColumnBuilder::Float64(b) => b.append_value(text.parse().map_err(|_| bad("double precision"))?),
        ColumnBuilder::Bool(b) => b.append_value(matches!(text.as_str(), "t" | "true" | "1" | "y" | "yes" | "on")),
        ColumnBuilder::Text(b) => b.append_value(&text),
        ColumnBuilder::Bytea(b) => b.append_value(decode_bytea(&text).ok_or_else(|| bad("bytea"))?),
        ColumnBuilder::Date(b) => {
            let date = NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| bad("date"))?;
            b.append_value(Date32Type::from_naive_date(date))
        }
        ColumnBuilder::Timestamp(b, _) => {
            let trimmed = text.trim_end_matches("+00").trim_end_matches('Z');
            let ts = NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f"))
                .map_err(|_| bad("timestamp"))?;
            b.append_value(ts.and_utc().timestamp_micros())
        }
        ColumnBuilder::Numeric(b, _, scale) => b.append_value(parse_decimal(&text, *scale).ok_or_else(|| bad("numeric"))?),
    }
    let _ = column_type;
    Ok(())
}

/// `\x0a1b` hex form; anything else is taken as raw bytes.
fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    let Some(hex) = text.strip_prefix("\\x") else { return Some(text.as_bytes().to_vec()) };
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// A decimal string as an unscaled i128 at `scale` (extra digits truncated).
pub fn parse_decimal(text: &str, scale: i8) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let mut value: i128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
    let scale = scale.max(0) as usize;
    let frac: String = frac_part.chars().chain(std::iter::repeat('0')).take(scale).collect();
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    value = value.checked_mul(10i128.checked_pow(scale as u32)?)?;
    if scale > 0 {
        value = value.checked_add(frac.parse::<i128>().ok()?)?;
    }
    Some(if negative { -value } else { value })
}

/// Splits SQL text on `;` outside quotes, dropping `--` comments.
fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        if in_quote {
            current.push(c);
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    current.push(chars.next().expect("peeked"));
                } else {
                    in_quote = false;
                }
            }
            continue;
        }
        match c {
            '\'' => {
                in_quote = true;
                current.push(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        break;
                    }
                }
                current.push('\n');
            }
            ';' => {
                let statement = current.trim().to_string();
                if !statement.is_empty() {
                    statements.push(statement);
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    statements
}

/// `CREATE TABLE name ( col type [NOT NULL] [DEFAULT ..], ... )`.
fn parse_create_table(statement: &str) -> Result<(String, Vec<ColumnSpec>), String> {
    let open = statement.find('(').ok_or("CREATE TABLE without a column list")?;
    let close = statement.rfind(')').ok_or("CREATE TABLE without a closing parenthesis")?;
    let name = unqualify(statement["CREATE TABLE".len()..open].trim());
    let mut columns = Vec::new();
    for definition in split_top_level(&statement[open + 1..close]) {
        let definition = definition.trim();
        let upper = definition.to_ascii_uppercase();
        if definition.is_empty()
            || ["CONSTRAINT", "PRIMARY KEY", "FOREIGN KEY", "UNIQUE", "CHECK"].iter().any(|k| upper.starts_with(k))
        {
            continue;
        }
        let (column, rest) = definition.split_once(char::is_whitespace).ok_or("column without a type")?;
        let type_end = ["NOT NULL", "NULL", "DEFAULT", "PRIMARY", "REFERENCES", "CONSTRAINT", "CHECK", "UNIQUE"]
            .iter()
            .filter_map(|k| rest.to_ascii_uppercase().find(k))
            .min()
            .unwrap_or(rest.len());
        let type_text = rest[..type_end].trim().to_ascii_lowercase();
        let (base, modifiers) = match type_text.split_once('(') {
            Some((base, args)) => (base.trim().to_string(), args.trim_end_matches(')').to_string()),
            None => (type_text.clone(), String::new()),
        };
        let typmod = if base == "numeric" || base == "decimal" {
            let mut parts = modifiers.split(',').map(|p| p.trim().parse::<i32>().ok());
            match (parts.next().flatten(), parts.next().flatten()) {
                (Some(p), s) => ((p << 16) | s.unwrap_or(0)) + 4,
                _ => -1,
            }
        } else {
            -1
        };
        columns.push(ColumnSpec {
            name: column.trim_matches('"').to_string(),
            column_type: ColumnType::from_pg(&base, typmod),
            nullable: !rest.to_ascii_uppercase().contains("NOT NULL"),
        });
    }
    Ok((name, columns))
}

/// `INSERT INTO name [(cols)] VALUES (..), (..)`.
fn parse_insert(statement: &str) -> Result<(String, Vec<Vec<Literal>>), String> {
    let upper = statement.to_ascii_uppercase();
    let values_at = upper.find("VALUES").ok_or("INSERT without VALUES")?;
    let target = statement["INSERT INTO".len()..values_at].trim();
    let name = unqualify(target.split('(').next().unwrap_or(target).trim());
    let mut rows = Vec::new();
    let mut rest = &statement[values_at + "VALUES".len()..];
    loop {
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if rest.is_empty() {
            break;
        }
        let body = rest.strip_prefix('(').ok_or("expected '(' in VALUES")?;
        let (row, remaining) = parse_tuple(body)?;
        rows.push(row);
        rest = remaining;
    }
    Ok((name, rows))
}

/// Parses literals up to the closing `)`; returns them and the text after.
fn parse_tuple(mut text: &str) -> Result<(Vec<Literal>, &str), String> {
    let mut values = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix(')') {
            return Ok((values, after));
        }
        if let Some(after) = text.strip_prefix(',') {
            text = after;
            continue;
        }
        let (literal, after) = parse_literal(text)?;
        values.push(literal);
        text = after;
    }
}

fn parse_literal(text: &str) -> Result<(Literal, &str), String> {
    let quoted = text.strip_prefix("E'").or_else(|| text.strip_prefix('\''));
    if let Some(body) = quoted {
        let mut value = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    chars.next();
                    value.push('\'');
                } else {
                    return Ok((Literal::Text(value), &body[i + 1..]));
                }
            } else {
                value.push(c);
            }
        }
        return Err("unterminated string literal".into());
    }
    let end = text.find([',', ')']).unwrap_or(text.len());
    let token = text[..end].trim();
    let literal = match token.to_ascii_uppercase().as_str() {
        "NULL" => Literal::Null,
        "TRUE" => Literal::Bool(true),
        "FALSE" => Literal::Bool(false),
        _ if token.parse::<f64>().is_ok() => Literal::Number(token.to_string()),
        _ => return Err(format!("unsupported literal '{token}'")),
    };
    Ok((literal, &text[end..]))
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unqualify(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn vendored_northwind_has_the_classic_sizes() {
        let dump = Dump::northwind().unwrap();
        let sizes: Vec<usize> = ["orders", "order_details", "customers", "products", "categories", "employees"]
            .iter()
            .map(|t| dump.extract(t).unwrap().rows())
            .collect();
        assert_eq!(sizes, vec![830, 2155, 91, 77, 8, 9]);
    }

    #[test]
    fn dump_types_are_faithful() {
        let dump = Dump::northwind().unwrap();
        let details = dump.extract("order_details").unwrap();
        let types: Vec<DataType> = details.schema.fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(types, vec![DataType::Int16, DataType::Int16, DataType::Float32, DataType::Int16, DataType::Float32]);
        let categories = dump.extract("categories").unwrap();
        assert_eq!(categories.schema.field(3).data_type(), &DataType::Binary);
    }

    #[test]
    fn literals_with_quotes_and_nulls() {
        let dump = Dump::parse(
            "t",
            "CREATE TABLE t (a smallint NOT NULL, b character varying(10), c numeric(6,2));\n\
             INSERT INTO t VALUES (1, 'l''Abbaye; x', 12.5), (2, NULL, -0.07);",
        )
        .unwrap();
        let table = dump.extract("t").unwrap();
        assert_eq!(table.rows(), 2);
        assert_eq!(table.schema.field(2).data_type(), &DataType::Decimal128(6, 2));
        assert!(!table.schema.field(0).is_nullable());
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("12.5", 2), Some(1250));
        assert_eq!(parse_decimal("-0.07", 2), Some(-7));
        assert_eq!(parse_decimal("3", 0), Some(3));
    }
}
