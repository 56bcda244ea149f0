//! `medallion demo`: the built-in Northwind through every layer, the KPIs read
//! back from gold, then the streaming path replayed from files. No database
//! and no Kafka needed; the CLI prints what `run` returns.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;

use crate::config::Config;
use crate::error::Result;
use crate::lake::{session::SessionBuilder, Lake};
use crate::live::LiveHandle;
use crate::pipeline::{self, BatchSource, StageReport};
use crate::produce::{self, ProduceOptions};
use crate::progress::Progress;
use crate::source::dump::Dump;
use crate::stream::{self, files::FileSource, source::StreamSource, StreamOptions, StreamReport};

/// A titled query result.
pub struct Section {
    pub title: String,
    pub batches: Vec<RecordBatch>,
}

/// What the demo built and found.
pub struct DemoReport {
    /// The batch pipeline's stages, and how long it took.
    pub stages: Vec<StageReport>,
    pub batch_duration: Duration,
    /// The KPIs of the snapshot, from gold.
    pub kpis: Vec<Section>,
    /// The stream replayed from files, and the folder it read.
    pub stream: StreamReport,
    pub events_dir: PathBuf,
    /// The live sales by country the stream computed.
    pub live: Section,
}

/// Builds `lake` from the built-in dump for `config.date`, reads the KPIs,
/// then replays sales events from files through the stream.
pub async fn run(config: &Config, lake: &Lake, progress: &Progress) -> Result<DemoReport> {
    let started = Instant::now();
    let source = BatchSource::Dump(Dump::northwind()?);
    let stages = pipeline::run(config, lake, &source, progress).await?;
    let batch_duration = started.elapsed();
    let kpis = kpi_sections(config, lake).await?;
    let (stream, events_dir, live) = replay_stream(config, lake, progress).await?;
    Ok(DemoReport { stages, batch_duration, kpis, stream, events_dir, live })
}

/// The KPI sections of the snapshot.
async fn kpi_sections(config: &Config, lake: &Lake) -> Result<Vec<Section>> {
    let ctx = SessionBuilder::new(lake).build().await?.ctx;
    let date = config.date;
    let sections = [
        ("Revenue", format!("SELECT round(total_revenue, 2) AS total_revenue, orders, customers, round(avg_order_value, 2) AS avg_order_value FROM gold.kpi_revenue WHERE snapshot_date = DATE '{date}'")),
        ("Top 3 countries", format!("SELECT \"rank\", country, round(revenue, 2) AS revenue FROM gold.kpi_top_countries WHERE snapshot_date = DATE '{date}' ORDER BY \"rank\"")),
        ("Sales by category", format!("SELECT category_name, round(revenue, 2) AS revenue, quantity, orders FROM gold.kpi_category_sales WHERE snapshot_date = DATE '{date}' ORDER BY revenue DESC")),
        ("RFM segments", format!("SELECT segment, customers, round(revenue, 2) AS revenue, round(100 * share_of_revenue, 1) AS share_pct FROM gold.rfm_segments WHERE snapshot_date = DATE '{date}' ORDER BY customers DESC")),
    ];
    let mut kpis = Vec::new();
    for (title, sql) in sections {
        kpis.push(Section { title: title.to_string(), batches: query(&ctx, &sql).await? });
    }
    Ok(kpis)
}

/// The streaming path, replayed from files: sample events are written once
/// to a folder under the temporary directory, then consumed (exactly once:
/// a second demo on the same lake finds nothing new).
async fn replay_stream(config: &Config, lake: &Lake, progress: &Progress) -> Result<(StreamReport, PathBuf, Section)> {
    let events_dir = std::env::temp_dir().join("medallion-demo-events");
    if !has_event_files(&events_dir) {
        produce::to_dir(&events_dir, &ProduceOptions { count: 2_000, rate: None, bad_ratio: 0.05, seed: 42 })?;
    }
    let source = StreamSource::Files(FileSource::new(events_dir.clone())?);
    let live = LiveHandle::new();
    // The demo's own options: a `[stream] interval` in medallion.toml must
    // not keep the demo running.
    let options = StreamOptions::default();
    let report = stream::run(config, lake, source, &options, &live, progress, Arc::new(AtomicBool::new(false))).await?;
    let ctx = SessionBuilder::new(lake).with_live(live.clone()).build().await?.ctx;
    let sql = "SELECT pays, round(total_ventes_live, 2) AS total_ventes_live, nb_transactions, last_event_time \
               FROM live.sales_by_country ORDER BY total_ventes_live DESC LIMIT 10";
    let title = format!("Live sales by country (stream replayed from {})", events_dir.display());
    let live_sales = Section { title, batches: query(&ctx, sql).await? };
    Ok((report, events_dir, live_sales))
}

/// Whether `dir` holds at least one `.jsonl` file.
fn has_event_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).any(|e| e.path().extension().is_some_and(|x| x == "jsonl")))
        .unwrap_or(false)
}

async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}
