//! Developer tools behind hidden commands: the reference measurements of the
//! benchmarks in `scripts/` (`stream --discard` for bench-stream.sh,
//! `bench-serve` for bench-serve.sh). The CLI prints what they return.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::Lake;
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
