//! The lake commands of the CLI: `status`, `optimize`, `vacuum`, `history`
//! and `restore`. Each calls the library (`lake::upkeep`, `lake::history`,
//! `up::service`) and prints what it returns, ending with a summary line.

use std::time::Instant;

use anyhow::Result;
use chrono::Utc;

use medallion::config::Config;
use medallion::lake::history;
use medallion::lake::session::SessionBuilder;
use medallion::lake::upkeep::{self, OptimizeOptions, VacuumOptions};
use medallion::lake::{Lake, TableName};
use medallion::output;
use medallion::tables::{RunTrigger, StageDetails};
use medallion::up::freshness::{age_text, Freshness};

/// The table named on the command line, or every table of the lake.
async fn tables(lake: &Lake, named: Option<&str>) -> Result<Vec<(String, String)>> {
    Ok(match named {
        Some(name) => {
            let (layer, table) = upkeep::split_table_name(name)?;
            if lake.existing_table(layer, table).await?.is_none() {
                anyhow::bail!("{name} does not exist in {}: `medallion status` lists the tables", lake.location().describe());
            }
            vec![(layer.to_string(), table.to_string())]
        }
        None => lake
            .every_table_and_audit()
            .await?
            .into_iter()
            .map(|name: TableName| (name.layer.as_str().to_string(), name.table().to_string()))
            .collect(),
    })
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// `medallion status`.
pub async fn status(config: &Config, runs: usize) -> Result<()> {
    let lake = Lake::new(config)?;
    println!("medallion status: {}", lake.location().describe());
    let mut every = Vec::new();
    for (layer, table) in tables(&lake, None).await? {
        every.extend(upkeep::table_stats(&lake, &layer, &table).await?);
    }
    // Freshness from the same last commit times (a table not there yet is unknown).
    let now = Utc::now();
    let freshness: Vec<Freshness> = config
        .up
        .freshness
        .iter()
        .map(|rule| rule.evaluate(every.iter().find(|s| s.table == rule.table).and_then(|s| s.last_commit), now))
        .collect();
    println!("\n{:<40} {:>8} {:>8} {:>10}  {:<22} freshness", "table", "version", "files", "MB", "last commit");
    for stats in &every {
        let age = stats
            .last_commit
            .map(|at| format!("{} ago", age_text((now - at).num_seconds().max(0))))
            .unwrap_or_else(|| "-".into());
        let level = freshness.iter().find(|f| f.table == stats.table).map(|f| f.colour).unwrap_or("");
        println!(
            "{:<40} {:>8} {:>8} {:>10.1}  {:<22} {level}",
            stats.table,
            stats.version,
            stats.files,
            megabytes(stats.bytes),
            age
        );
    }
    for missing in freshness.iter().filter(|f| f.last_commit.is_none()) {
        println!("{:<40} {:>8} {:>8} {:>10}  {:<22} {}", missing.table, "-", "-", "-", "never written", missing.colour);
    }
    print_latest_runs(&lake, runs).await?;
    print_running_up(config).await;
    Ok(())
}

/// What a `medallion up` serving on `[serve] addr` is doing, read from its
/// `/api/status`; one line saying so when none answers there.
async fn print_running_up(config: &Config) {
    let addr = config.serve.addr;
    let Some(status) = fetch_status(config).await else {
        println!("\nno `medallion up` answers on {addr} (its parts, schedules and stream lag show there when one runs)");
        return;
    };
    println!("\nmedallion up on {addr}, started {}", status["started_at"].as_str().unwrap_or("?"));
    if let Some(parts) = status["parts"].as_object() {
        for (part, state) in parts {
            let error = state["last_error"].as_str().map(|e| format!("; last error: {e}")).unwrap_or_default();
            println!("  {part:<24} {:<10} {} restart(s){error}", state["state"].as_str().unwrap_or("?"), state["restarts"]);
        }
    }
    if let Some(schedules) = status["schedules"].as_object() {
        for (name, schedule) in schedules {
            let last = match schedule["last_ok"].as_bool() {
                Some(true) => "last run ok".to_string(),
                Some(false) => format!("last run failed: {}", schedule["last_error"].as_str().unwrap_or("?")),
                None => "no run yet".to_string(),
            };
            println!(
                "  schedule {name:<15} {} → next {}; {last}; {} skipped",
                schedule["when"].as_str().unwrap_or("?"),
                schedule["next_run"].as_str().unwrap_or("-"),
                schedule["skipped"]
            );
        }
    }
    if let Some(lag) = status["stream_lag"].as_object() {
        for (key, messages) in lag {
            println!("  stream lag {key:<30} {messages}");
        }
    }
}

/// `GET /api/status` of the configured server, with the token when one is
/// set; `None` when nothing answers it within two seconds.
async fn fetch_status(config: &Config) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = config.serve.addr;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let auth = config.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!("GET /api/status HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]);
        if !head.starts_with("HTTP/1.1 200") || head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            return None;
        }
        serde_json::from_slice(&raw[split + 4..]).ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), exchange).await.ok().flatten()
}

/// The latest `runs` stage records of `gold.pipeline_runs`, one line each,
/// with what triggered them (by hand, or a schedule and its attempt).
async fn print_latest_runs(lake: &Lake, runs: usize) -> Result<()> {
    let session = SessionBuilder::new(lake).only(&[medallion::tables::PIPELINE_RUNS]).build().await?;
    if !session.ctx.table_exist(medallion::tables::PIPELINE_RUNS.to_string().as_str())? {
        println!("\nno run recorded yet: `medallion run` or `medallion up` writes gold.pipeline_runs");
        return Ok(());
    }
    let sql = format!(
        "SELECT CAST(started_at AS VARCHAR) AS started_at, command, stage, status, \"rows\", duration_ms, details, error \
         FROM {} ORDER BY started_at DESC LIMIT {runs}",
        medallion::tables::PIPELINE_RUNS
    );
    let frame = session.ctx.sql(&sql).await.map_err(medallion::Error::from)?;
    let batches = frame.collect().await.map_err(medallion::Error::from)?;
    println!("\nlatest runs (gold.pipeline_runs)");
    println!("{:<24} {:<10} {:<10} {:<7} {:>10} {:>9}  trigger", "started (UTC)", "command", "stage", "status", "rows", "seconds");
    for row in output::json_rows(&batches)? {
        let text = |key: &str| row.get(key).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let number = |key: &str| row.get(key).and_then(|v| v.as_i64()).unwrap_or(0);
        let trigger = match serde_json::from_str::<StageDetails>(&text("details")) {
            _ if text("command") == "stream" => "-".to_string(),
            Ok(StageDetails { trigger: RunTrigger { schedule: Some(schedule), attempt, .. }, .. }) => {
                format!("schedule {schedule}, attempt {attempt}")
            }
            _ => "by hand".to_string(),
        };
        let error = row.get("error").and_then(|v| v.as_str()).map(|e| format!("  error: {e}")).unwrap_or_default();
        println!(
            "{:<24} {:<10} {:<10} {:<7} {:>10} {:>9.2}  {trigger}{error}",
            text("started_at").chars().take(23).collect::<String>(),
            text("command"),
            text("stage"),
            text("status"),
            number("rows"),
            number("duration_ms") as f64 / 1000.0
        );
    }
    Ok(())
}

/// `medallion optimize [TABLE]`.
pub async fn optimize(config: &Config, table: Option<&str>, target_file_size_mb: u64) -> Result<()> {
    let lake = Lake::new(config)?;
    let started = Instant::now();
    let options = OptimizeOptions { target_file_bytes: target_file_size_mb.max(1) << 20 };
    let (mut before, mut after) = (0, 0);
    for (layer, name) in tables(&lake, table).await? {
        let report = upkeep::optimize(&lake, &layer, &name, &options).await?;
        upkeep::checkpoint(&lake, &layer, &name).await?;
        let outcome = if report.version == report.read_version {
            "nothing to compact".to_string()
        } else {
            format!("version {} → {}", report.read_version, report.version)
        };
        println!(
            "{:<40} {:>6} → {:<6} files  {:>9.1} MB  {outcome}",
            report.table,
            report.files_before,
            report.files_after,
            megabytes(report.bytes_after)
        );
        before += report.files_before;
        after += report.files_after;
    }
    println!("optimized in {:.1?}: {before} files → {after} (content unchanged; checkpoints written)", started.elapsed());
    Ok(())
}

/// `medallion vacuum [TABLE]`.
pub async fn vacuum(config: &Config, table: Option<&str>, options: &VacuumOptions) -> Result<()> {
    let lake = Lake::new(config)?;
    let started = Instant::now();
    let (mut files, mut bytes) = (0, 0);
    for (layer, name) in tables(&lake, table).await? {
        let report = upkeep::vacuum(&lake, &layer, &name, options).await?;
        println!(
            "{:<40} {:>6} files  {:>9.1} MB  retention {:?}",
            report.table,
            report.files.len(),
            megabytes(report.bytes),
            report.retention
        );
        files += report.files.len();
        bytes += report.bytes;
    }
    let verb = if options.dry_run { "would delete" } else { "deleted" };
    println!("vacuum {verb} {files} files ({:.1} MB) in {:.1?}", megabytes(bytes), started.elapsed());
    Ok(())
}

/// `medallion history TABLE`.
pub async fn history(config: &Config, table: &str, limit: Option<usize>) -> Result<()> {
    let lake = Lake::new(config)?;
    let (layer, name) = upkeep::split_table_name(table)?;
    let entries = history::history(&lake, layer, name, limit).await?;
    println!("{:>8}  {:<24} {:<16} {:>8} {:>8} {:>12} {:>12}", "version", "time (UTC)", "operation", "+files", "-files", "+rows", "-rows");
    let rows = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
    for entry in &entries {
        println!(
            "{:>8}  {:<24} {:<16} {:>8} {:>8} {:>12} {:>12}",
            entry.version,
            entry.timestamp.format("%Y-%m-%d %H:%M:%S%.3f"),
            entry.operation,
            entry.files_added,
            entry.files_removed,
            rows(entry.rows_added),
            rows(entry.rows_removed)
        );
    }
    println!("{} commit(s) of {table}; read one with `medallion sql --as-of VERSION \"SELECT … FROM {table}\"`", entries.len());
    Ok(())
}

/// `medallion restore TABLE --to VERSION`.
pub async fn restore(config: &Config, table: &str, version: u64) -> Result<()> {
    let lake = Lake::new(config)?;
    let (layer, name) = upkeep::split_table_name(table)?;
    let report = history::restore(&lake, layer, name, version).await?;
    println!(
        "{} restored to the content of version {} as version {} ({} files removed, {} restored) in {:.1?}",
        report.table, report.restored_version, report.version, report.files_removed, report.files_restored, report.duration
    );
    Ok(())
}
