//! The governance commands of the CLI: `profile` (column statistics into
//! `gold.table_profiles`). Each calls the library (`profiles`) and prints
//! what it returns, ending with a summary line.

use std::time::Instant;

use anyhow::Result;

use medallion::config::Config;
use medallion::lake::{Lake, TableName};
use medallion::profiles;
use medallion::tables::TABLE_PROFILES;

/// `medallion profile [TABLE ...] [--all]`.
pub async fn profile(config: &Config, named: &[String], all: bool) -> Result<()> {
    let lake = Lake::new(config)?;
    let tables: Vec<TableName> = if named.is_empty() {
        profiles::default_tables(&lake, all).await?
    } else {
        let mut tables = Vec::new();
        for name in named {
            let Some((layer, table)) = name.split_once('.') else {
                anyhow::bail!("'{name}' is not a table name: write layer.table, e.g. silver.sales_master");
            };
            tables.push(TableName::owned(layer.parse()?, table));
        }
        tables
    };
    if tables.is_empty() {
        anyhow::bail!("no table to profile in {}: build the lake first (`medallion run`)", lake.location().describe());
    }
    let started = Instant::now();
    let profiled = profiles::profile_and_store(&lake, &tables, config.date).await?;
    let cell = |v: &Option<String>| v.clone().unwrap_or_default();
    let number = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
    for table in &profiled {
        let rows = table.columns.first().map(|c| c.row_count).unwrap_or(0);
        let snapshot = table.snapshot.map(|d| format!(", snapshot {d}")).unwrap_or_default();
        println!("\n{} ({rows} rows{snapshot})", table.table);
        println!(
            "  {:<24} {:<12} {:>8} {:>9} {:<20} {:<20} {:>12} {:>12}  top values",
            "column", "type", "nulls", "distinct", "min", "max", "mean", "stddev"
        );
        for c in &table.columns {
            let distinct = if c.distinct_method == "exact" { c.distinct_count.to_string() } else { format!("~{}", c.distinct_count) };
            let tops: Vec<String> = c.top_values.iter().take(3).map(|(v, n)| format!("{}×{n}", short(v, 16))).collect();
            println!(
                "  {:<24} {:<12} {:>8} {:>9} {:<20} {:<20} {:>12} {:>12}  {}",
                short(&c.column_name, 24),
                short(&c.data_type, 12),
                c.null_count,
                distinct,
                short(&cell(&c.min_value), 20),
                short(&cell(&c.max_value), 20),
                number(c.mean),
                number(c.stddev),
                tops.join(", ")
            );
        }
    }
    let columns: usize = profiled.iter().map(|t| t.columns.len()).sum();
    println!(
        "\nprofiled {} tables, {columns} columns in {:.2} s → {TABLE_PROFILES} (profile date {}; ~ = approximate distinct count)",
        profiled.len(),
        started.elapsed().as_secs_f64(),
        config.date
    );
    Ok(())
}

/// `text` cut to `width` characters (with … when cut).
fn short(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}
