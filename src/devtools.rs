//! Developer tools behind hidden commands: the reference measurements of the
//! benchmarks in `scripts/` (`stream --discard` for bench-stream.sh,
//! `bench-serve` for bench-serve.sh, `bench-serve --governance` for the cost
//! of roles and of the audit log), and `bench-encode`, the measurement behind
//! the lake's Parquet settings. The CLI prints what they return.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{tokens::token_hash, AuthConfig, Config, Role};
use crate::error::{Error, Result};
use crate::lake::session::SessionBuilder;
use crate::lake::{Lake, TableName};
use crate::live::LiveHandle;
use crate::serve::{self, bench::{self, LoadReport}, ServeOptions};
use crate::stream::{source::StreamSource, Trigger};

/// What a raw consume read.
#[derive(Debug, Clone, Default)]
pub struct RawConsume {
    pub messages: i64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl RawConsume {
    pub fn messages_per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Reads `source` from its start to the end positions seen at start and
/// discards the messages (no decoding, no lake): the ceiling the stream is
/// measured against. Batches are gathered as `stream --available-now`
/// gathers them.
pub async fn raw_consume(mut source: StreamSource, max_batch: usize) -> Result<RawConsume> {
    source.seek(&Default::default()).await?;
    let total: i64 = source.end_positions().await?.values().sum();
    let started = Instant::now();
    let mut report = RawConsume::default();
    let (_, linger) = Trigger::AvailableNow.poll_timing();
    while report.messages < total {
        let batch = source.poll(max_batch, Duration::from_secs(5), linger).await?;
        if batch.is_empty() {
            break;
        }
        report.messages += batch.len() as i64;
        report.bytes += batch.iter().map(|m| m.payload.len() as u64).sum::<u64>();
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The serving load test's scenarios, in order: `/health` (the reference),
/// `/api/kpis`, a query over PostgreSQL wire.
pub struct ServeBench {
    pub runs: Vec<LoadReport>,
}

impl ServeBench {
    /// The p99 of `/api/kpis` over the p99 of `/health`.
    pub fn kpis_p99_ratio(&self) -> f64 {
        self.runs[1].p99.as_secs_f64() / self.runs[0].p99.as_secs_f64().max(1e-9)
    }
}

/// Serves the lake on free loopback ports and loads it with `clients`
/// concurrent clients for `seconds` per scenario, server and clients in one
/// process.
pub async fn bench_serve(config: &Config, clients: usize, seconds: u64) -> Result<ServeBench> {
    let lake = Lake::new(config)?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let options = ServeOptions { http_addr: loopback, pg_addr: Some(loopback), ..Default::default() };
    let server = serve::start(config, lake, LiveHandle::new(), options).await?;
    let token = config.token.as_deref();
    let duration = Duration::from_secs(seconds.max(1));
    let http = server.http_addr();
    let pg = server
        .pg_addr()
        .ok_or_else(|| Error::Config("the PostgreSQL endpoint of the serving bench did not start".into()))?;
    // Warm up the caches and connections once.
    bench::http_get(http, "/api/kpis", token, 1, Duration::from_millis(200)).await?;
    let runs = vec![
        bench::http_get(http, "/health", token, clients, duration).await?,
        bench::http_get(http, "/api/kpis", token, clients, duration).await?,
        bench::pg_query(pg, "SELECT total_revenue, orders FROM gold.kpi_revenue", token, clients, duration).await?,
    ];
    server.shutdown().await;
    Ok(ServeBench { runs })
}

/// One configuration of the governance bench: who queries, and whether the
/// audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Governance {
    /// The role of the token the clients send (reader: PII masked).
    pub role: Role,
    pub audit: bool,
}

impl std::fmt::Display for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, audit {}", self.role, if self.audit { "on" } else { "off" })
    }
}

/// The configurations, in order: the reference (an admin, no audit), the
/// audit log alone, masking alone, both.
pub const GOVERNANCE: [Governance; 4] = [
    Governance { role: Role::Admin, audit: false },
    Governance { role: Role::Admin, audit: true },
    Governance { role: Role::Reader, audit: false },
    Governance { role: Role::Reader, audit: true },
];

/// The query of the governance bench: every customer with three PII
/// columns (masked for a reader).
pub const GOVERNANCE_QUERY: &str = "SELECT customer_id, contact_name, address, phone FROM bronze.customers";

/// What the governance bench measured: per round and configuration,
/// `/api/sql` and the PostgreSQL wire.
pub struct GovernanceBench {
    pub runs: Vec<GovernanceRun>,
}

/// One configuration served once, in one round.
pub struct GovernanceRun {
    pub round: usize,
    pub governance: Governance,
    pub http: LoadReport,
    pub pg: LoadReport,
}

impl GovernanceBench {
    /// p99 of `governance` over the reference's (an admin, audit off) of the
    /// same round, for HTTP and PostgreSQL, in percent added: the median
    /// over the rounds, so that one noisy round does not decide.
    pub fn added_p99(&self, governance: Governance) -> Option<(f64, f64)> {
        let added = |now: &LoadReport, then: &LoadReport| 100.0 * (now.p99.as_secs_f64() / then.p99.as_secs_f64().max(1e-9) - 1.0);
        let mut http = Vec::new();
        let mut pg = Vec::new();
        for run in self.runs.iter().filter(|run| run.governance == governance) {
            let reference = self.runs.iter().find(|r| r.round == run.round && r.governance == GOVERNANCE[0])?;
            http.push(added(&run.http, &reference.http));
            pg.push(added(&run.pg, &reference.pg));
        }
        Some((median(http)?, median(pg)?))
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(|a, b| a.total_cmp(b));
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// Serves the lake once per `GOVERNANCE` configuration (tokens for an admin
/// and a reader configured every time, the audit log on or off) and loads
/// `/api/sql` and the PostgreSQL wire with `GOVERNANCE_QUERY` from `clients`
/// clients for `seconds` each, server and clients in one process; `rounds`
/// times, the order turned by one each round, so that four rounds run each
/// configuration once in each place (the first server of a process is
/// faster than the later ones, whatever their configuration).
pub async fn bench_governance(config: &Config, clients: usize, seconds: u64, rounds: usize) -> Result<GovernanceBench> {
    const ADMIN: &str = "bench-admin-token-0123456789";
    const READER: &str = "bench-reader-token-0123456789";
    let duration = Duration::from_secs(seconds.max(1));
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut runs = Vec::new();
    let order = (0..rounds.max(1)).flat_map(|round| (0..GOVERNANCE.len()).map(move |i| (round, GOVERNANCE[(i + round) % GOVERNANCE.len()])));
    for (round, governance) in order {
        let mut config = config.clone();
        config.token = None;
        config.auth = AuthConfig::default()
            .with_token("bench-admin", Role::Admin, &token_hash(ADMIN))?
            .with_token("bench-reader", Role::Reader, &token_hash(READER))?;
        config.audit.enabled = governance.audit;
        let token = Some(if governance.role == Role::Admin { ADMIN } else { READER });
        let lake = Lake::new(&config)?;
        let options = ServeOptions { http_addr: loopback, pg_addr: Some(loopback), follow_lake_live: false, ..Default::default() };
        let server = serve::start(&config, lake, LiveHandle::new(), options).await?;
        let pg = server
            .pg_addr()
            .ok_or_else(|| Error::Config("the PostgreSQL endpoint of the serving bench did not start".into()))?;
        // Warm up: plans, connections, the audit table's first commit.
        bench::http_sql(server.http_addr(), GOVERNANCE_QUERY, token, 1, Duration::from_millis(300)).await?;
        let http = bench::http_sql(server.http_addr(), GOVERNANCE_QUERY, token, clients, duration).await?;
        let pg = bench::pg_query(pg, GOVERNANCE_QUERY, token, clients, duration).await?;
        server.shutdown().await;
        runs.push(GovernanceRun { round, governance, http, pg });
    }
    Ok(GovernanceBench { runs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![7.0]), Some(7.0));
        assert_eq!(median(vec![30.0, -5.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}

/// One way of encoding Parquet, measured on one table (`bench_encode`).
#[derive(Debug, Clone)]
pub struct EncodeFigure {
    pub table: String,
    pub setting: &'static str,
    pub rows: usize,
    /// The best of three encodings, on one core.
    pub seconds: f64,
    pub bytes: usize,
}

/// The Parquet settings `bench_encode` compares: what the lake wrote before
/// (every column in a dictionary, page statistics), no dictionary at all,
/// and the lake's settings (`lake::writer_properties`).
pub const ENCODE_SETTINGS: [&str; 3] = ["every column in a dictionary", "no dictionary", "the lake's settings"];

/// Encodes the newest rows of each table in `tables` into memory with each
/// of `ENCODE_SETTINGS`, on one core: the measurement behind the lake's
/// Parquet settings (BENCHMARKS.md, batch path, 2026-12-03 evening).
pub async fn bench_encode(lake: &Lake, tables: &[TableName]) -> Result<Vec<EncodeFigure>> {
    use deltalake::parquet::arrow::ArrowWriter;
    use crate::lake::{base_writer_properties, text_columns, writer_properties};

    let session = SessionBuilder::new(lake).only(tables).build().await?;
    let mut figures = Vec::new();
    for table in tables {
        let name = table.to_string();
        let rows = session.ctx.sql(&format!("SELECT * FROM {name}")).await.map_err(|e| Error::lake(&name, e))?;
        let batches = rows.collect().await.map_err(|e| Error::lake(&name, e))?;
        let batches = crate::lake::plain_types::batches(batches).map_err(|e| Error::lake(&name, e))?;
        let Some(schema) = batches.first().map(|b| b.schema()) else { continue };
        let row_count = batches.iter().map(|b| b.num_rows()).sum();
        let settings = [
            base_writer_properties().build(),
            base_writer_properties().set_dictionary_enabled(false).build(),
            writer_properties(&text_columns(&schema)),
        ];
        for (setting, properties) in ENCODE_SETTINGS.into_iter().zip(settings) {
            let (mut best, mut bytes) = (f64::MAX, 0);
            for _ in 0..3 {
                let started = Instant::now();
                let mut out = Vec::new();
                let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(properties.clone()))
                    .map_err(|e| Error::lake(&name, e))?;
                for batch in &batches {
                    writer.write(batch).map_err(|e| Error::lake(&name, e))?;
                }
                writer.close().map_err(|e| Error::lake(&name, e))?;
                best = best.min(started.elapsed().as_secs_f64());
                bytes = out.len();
            }
            figures.push(EncodeFigure { table: name.clone(), setting, rows: row_count, seconds: best, bytes });
        }
    }
    Ok(figures)
}
