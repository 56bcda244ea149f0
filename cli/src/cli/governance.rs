//! The governance commands of the CLI: `profile` (column statistics into
//! `gold.table_profiles`), `catalog` (tables and columns with their
//! descriptions) and `lineage` (the table graph derived from the models). Each calls the library (`profiles`) and prints
//! what it returns, ending with a summary line.

use std::time::Instant;

use anyhow::Result;

use medallion::config::Config;
use medallion::glossary::{self, Glossary, TableState};
use medallion::lake::session::SessionBuilder;
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
    let profiled = profiles::profile_and_store(&lake, &tables, config.date, &config.pii).await?;
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

/// `medallion catalog [TABLE] [--search TEXT]`.
pub async fn catalog(config: &Config, table: Option<&str>, search: Option<&str>) -> Result<()> {
    let lake = Lake::new(config)?;
    let glossary = Glossary::load(config.models_dir.as_deref())?;
    let session = SessionBuilder::new(&lake).build().await?;
    let mut states = Vec::new();
    for (name, delta) in &session.tables {
        if table.is_some_and(|t| t != name.to_string()) {
            continue;
        }
        let counted = session.ctx.sql(&format!("SELECT COUNT(*) FROM {name}")).await?.collect().await?;
        let rows = counted
            .first()
            .and_then(|b| b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().map(|a| a.value(0) as u64));
        states.push(TableState { name: name.clone(), rows, version: delta.version().map(|v| v as i64) });
    }
    if let Some(table) = table {
        if states.is_empty() {
            anyhow::bail!("{table} does not exist in {}: `medallion catalog` lists the tables", lake.location().describe());
        }
    }
    let entries = glossary::entries(&session.ctx, &glossary, &states, search).await;
    let mut undescribed = 0;
    for entry in &entries {
        let rows = entry.rows.map(|r| format!("{r} rows")).unwrap_or_default();
        let version = entry.version.map(|v| format!(", version {v}")).unwrap_or_default();
        println!("\n{} ({rows}{version}, owned by {})", entry.table, entry.layer);
        println!("  {}", entry.description.as_deref().unwrap_or("(no description)"));
        for column in &entry.columns {
            undescribed += usize::from(column.description.is_none());
            println!(
                "    {:<24} {:<14} {}",
                short(&column.name, 24),
                short(&column.data_type, 14),
                column.description.as_deref().unwrap_or("(no description)")
            );
        }
    }
    let columns: usize = entries.iter().map(|e| e.columns.len()).sum();
    println!(
        "\n{} tables, {columns} columns ({undescribed} without a description); descriptions live in models/<layer>/<table>.docs.toml",
        entries.len()
    );
    Ok(())
}

/// `medallion lineage [--columns [TABLE]]`: every table with the tables it
/// is built from; with `--columns`, each model column with the columns it
/// is computed from.
pub async fn lineage(config: &Config, columns: bool, only: Option<&str>) -> Result<()> {
    let lake = Lake::new(config)?;
    let models = medallion::models::ModelSet::load(config.models_dir.as_deref())?;
    let ctx = SessionBuilder::full(&lake, config).build().await?.ctx;
    let graph = medallion::lineage::graph(&ctx, &models, config.date).await.map_err(|e| {
        anyhow::anyhow!("{e} (lineage plans the models over the lake: build it first with `medallion run`)")
    })?;
    if columns {
        return print_column_lineage(&graph, only);
    }
    let edges = graph.edges;
    // Top of the medallion first: bronze, silver, gold, serving.
    let rank = |name: &str| ["bronze.", "silver.", "gold.", "serving."].iter().position(|p| name.starts_with(p)).unwrap_or(4);
    let mut targets: Vec<&str> = edges.iter().map(|e| e.to.as_str()).collect();
    targets.sort_by(|a, b| (rank(a), *a).cmp(&(rank(b), *b)));
    targets.dedup();
    for target in &targets {
        let sources: Vec<&str> = edges.iter().filter(|e| e.to == *target).map(|e| e.from.as_str()).collect();
        println!("{target:<28} ← {}", sources.join(", "));
    }
    println!("\n{} tables, {} edges, derived from the logical plans of the models and serving views", targets.len(), edges.len());
    Ok(())
}

/// The columns part of `medallion lineage --columns`.
fn print_column_lineage(graph: &medallion::lineage::Graph, only: Option<&str>) -> Result<()> {
    if let Some(table) = only {
        if !graph.columns.contains_key(table) {
            let known: Vec<&str> = graph.columns.keys().map(String::as_str).collect();
            anyhow::bail!("no model builds {table}: column lineage exists for {}", known.join(", "));
        }
    }
    let mut shown = 0;
    for (table, lineage) in graph.columns.iter().filter(|(t, _)| only.is_none_or(|o| o == t.as_str())) {
        println!("{table}");
        for field in &lineage.fields {
            let inputs: Vec<String> = field.inputs.iter().map(|c| format!("{}.{}", c.table, c.column)).collect();
            let inputs = if inputs.is_empty() { "(constant or count)".to_string() } else { inputs.join(", ") };
            println!("  {:<24} ← {inputs}", field.name);
            shown += 1;
        }
        let indirect: Vec<String> = lineage.indirect.iter().map(|c| format!("{}.{}", c.table, c.column)).collect();
        println!("  rows filtered, joined, grouped or ordered by: {}\n", if indirect.is_empty() { "-".into() } else { indirect.join(", ") });
    }
    println!("{shown} columns, derived from the logical plans of the models");
    Ok(())
}
