//! Developer tools behind hidden commands: the reference measurements of the
//! benchmarks in `scripts/` (`stream --discard` for bench-stream.sh,
//! `bench-serve` for bench-serve.sh, `bench-serve --governance` for the cost
//! of roles and of the audit log), and `bench-encode`, the measurement behind
//! the lake's Parquet settings. The CLI prints what they return.
//!
//! `bench-serve` serves the lake in the process of its load clients.
//! `bench-serve --governance` compares configurations, so it starts each
//! configuration's server as a process of its own (this binary as `medallion
//! serve`, stopped with SIGTERM after its load) and keeps only the clients
//! in-process: servers started one after the other in one process were not
//! alike (the first was consistently faster, whatever its configuration),
//! which swung the compared p99s by more than the differences measured.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::tokens::{new_token, token_entry};
use crate::config::{Config, Role};
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
    /// The server process's CPU time (user + system, every thread: the
    /// audit writer's too) per answered request, in microseconds, during
    /// the `/api/sql` and the PostgreSQL load; `None` where the system does
    /// not tell it (no `/proc`).
    pub http_cpu_us: Option<f64>,
    pub pg_cpu_us: Option<f64>,
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

    /// The server's CPU time per request of `governance` over the
    /// reference's of the same round, in percent added, median over the
    /// rounds (as `added_p99`). Less swayed by the machine than a p99 under
    /// load: it counts work done, not time spent waiting for a core.
    pub fn added_cpu(&self, governance: Governance) -> Option<(f64, f64)> {
        let added = |now: Option<f64>, then: Option<f64>| Some(100.0 * (now? / then?.max(1e-9) - 1.0));
        let mut http = Vec::new();
        let mut pg = Vec::new();
        for run in self.runs.iter().filter(|run| run.governance == governance) {
            let reference = self.runs.iter().find(|r| r.round == run.round && r.governance == GOVERNANCE[0])?;
            http.push(added(run.http_cpu_us, reference.http_cpu_us)?);
            pg.push(added(run.pg_cpu_us, reference.pg_cpu_us)?);
        }
        Some((median(http)?, median(pg)?))
    }
}

/// CPU microseconds per request between two readings of a process's CPU
/// time (`None` when either is missing or nothing was answered).
fn cpu_per_request(before: Option<f64>, after: Option<f64>, report: &LoadReport) -> Option<f64> {
    let seconds = after? - before?;
    (report.requests > 0).then(|| seconds * 1e6 / report.requests as f64)
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
/// clients for `seconds` each; `rounds` times, the order turned by one each
/// round, so that four rounds run each configuration once in each place.
///
/// Each configuration's server runs in a process of its own (this binary as
/// `medallion serve`, see `GovernanceServer`) while the clients stay in this
/// one: with the servers in the clients' process, the first server of the
/// process was consistently faster than the later ones whatever its
/// configuration, and the clients competed with the server inside one
/// runtime, so the p99 ratios swung by more than the 10 % to be judged.
pub async fn bench_governance(config: &Config, clients: usize, seconds: u64, rounds: usize) -> Result<GovernanceBench> {
    // Fresh tokens per bench; the servers are given only their hashes.
    let admin = new_token()?;
    let reader = new_token()?;
    let duration = Duration::from_secs(seconds.max(1));
    let dir = BenchDir::create()?;
    let mut runs = Vec::new();
    let order = (0..rounds.max(1)).flat_map(|round| (0..GOVERNANCE.len()).map(move |i| (round, GOVERNANCE[(i + round) % GOVERNANCE.len()])));
    for (round, governance) in order {
        let token = Some(if governance.role == Role::Admin { admin.as_str() } else { reader.as_str() });
        let toml = governance_config_toml(config, governance.audit, &admin, &reader);
        let server = GovernanceServer::start(config, &dir, &toml, governance).await?;
        let measured = async {
            // Warm up: plans, connections, the audit table's first commit.
            bench::http_sql(server.http, GOVERNANCE_QUERY, token, 1, Duration::from_millis(300)).await?;
            let start = server.cpu_seconds();
            let http = bench::http_sql(server.http, GOVERNANCE_QUERY, token, clients, duration).await?;
            let between = server.cpu_seconds();
            let pg = bench::pg_query(server.pg, GOVERNANCE_QUERY, token, clients, duration).await?;
            let end = server.cpu_seconds();
            let (http_cpu_us, pg_cpu_us) = (cpu_per_request(start, between, &http), cpu_per_request(between, end, &pg));
            Ok::<_, Error>(GovernanceRun { round, governance, http, pg, http_cpu_us, pg_cpu_us })
        }
        .await;
        server.stop().await;
        runs.push(measured?);
    }
    Ok(GovernanceBench { runs })
}

/// The identities the governance bench configures, by role.
const BENCH_ADMIN: &str = "bench-admin";
const BENCH_READER: &str = "bench-reader";

/// The `medallion.toml` of one governance server: the tokens of an admin and
/// a reader (their hashes), `[audit] enabled = audit`, and what of `config`
/// serving reads and a config file may hold (PII columns, S3 settings but
/// the secret key, memory limit, audit flush interval), so that the server
/// resolves the configuration this process runs with. No secret is written.
fn governance_config_toml(config: &Config, audit: bool, admin: &str, reader: &str) -> String {
    use toml::{Table, Value};
    let text = |s: &str| Value::String(s.to_string());
    let mut root = Table::new();
    if let Some(limit) = config.memory_limit {
        root.insert("memory_limit_mb".into(), Value::Integer((limit / (1024 * 1024)).max(1) as i64));
    }
    let mut section = Table::new();
    section.insert("enabled".into(), Value::Boolean(audit));
    let flush = config.audit.flush_interval.as_millis().max(1);
    section.insert("flush_interval".into(), text(&format!("{flush}ms")));
    root.insert("audit".into(), Value::Table(section));
    let mut pii = Table::new();
    let columns = config.pii.columns.iter().map(|(table, column)| text(&format!("{table}.{column}"))).collect();
    pii.insert("columns".into(), Value::Array(columns));
    pii.insert("encrypt_at_rest".into(), Value::Boolean(config.pii.encrypt_at_rest));
    root.insert("pii".into(), Value::Table(pii));
    let s3 = &config.s3;
    let mut section = Table::new();
    for (key, value) in [("endpoint", &s3.endpoint), ("region", &s3.region), ("access_key_id", &s3.access_key_id)] {
        if let Some(value) = value {
            section.insert(key.into(), text(value));
        }
    }
    section.insert("allow_http".into(), Value::Boolean(s3.allow_http));
    section.insert("virtual_hosted_style".into(), Value::Boolean(s3.virtual_hosted_style));
    let buckets = s3.buckets.iter().map(|(layer, bucket)| (layer.clone(), text(bucket))).collect();
    section.insert("buckets".into(), Value::Table(buckets));
    root.insert("s3".into(), Value::Table(section));
    let mut toml = root.to_string();
    toml.push('\n');
    toml.push_str(&token_entry(BENCH_ADMIN, Role::Admin, admin));
    toml.push('\n');
    toml.push_str(&token_entry(BENCH_READER, Role::Reader, reader));
    toml
}

/// The environment variables a governance server is started without: what
/// its config file and flags set (the tokens, the audit log, the lake, the
/// addresses), and the serving settings the bench leaves at their defaults,
/// as the in-process bench did (engine, limits, TLS: the load clients speak
/// plain HTTP and PostgreSQL).
const GOVERNANCE_SERVER_UNSET: [&str; 12] = [
    "MEDALLION_CONFIG",
    "MEDALLION_LAKE",
    "MEDALLION_TOKEN",
    "MEDALLION_AUDIT",
    "MEDALLION_ENGINE",
    "MEDALLION_ADDR",
    "MEDALLION_PG_ADDR",
    "MEDALLION_PG_STATEMENT_TIMEOUT",
    "MEDALLION_MAX_CONCURRENT_QUERIES",
    "MEDALLION_TLS_CERT",
    "MEDALLION_TLS_KEY",
    "MEDALLION_REQUIRE_TLS",
];

/// Longest a governance server may take to answer `/health`.
const GOVERNANCE_SERVER_START: Duration = Duration::from_secs(120);

/// A private temporary directory, removed when dropped.
struct BenchDir(std::path::PathBuf);

impl BenchDir {
    fn create() -> Result<BenchDir> {
        let nonce = new_token()?;
        let path = std::env::temp_dir().join(format!("medallion-bench-governance-{}-{}", std::process::id(), &nonce[4..16]));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&path)
            .map_err(|e| Error::other(format!("creating the governance bench's directory {}", path.display()), e))?;
        Ok(BenchDir(path))
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One governance configuration served by `medallion serve` in a process of
/// its own, on free loopback ports.
struct GovernanceServer {
    child: tokio::process::Child,
    http: SocketAddr,
    pg: SocketAddr,
}

impl GovernanceServer {
    /// Writes `toml` as the server's config file, starts this binary as
    /// `medallion serve` over `config`'s lake (its stdout discarded, its
    /// stderr into `dir`) and waits until it answers `/health` and accepts
    /// PostgreSQL connections. Fails with one line (and the last lines the
    /// server wrote) if it exits or does not answer in time.
    async fn start(config: &Config, dir: &BenchDir, toml: &str, governance: Governance) -> Result<GovernanceServer> {
        let what = format!("the governance bench's server ({governance})");
        let config_path = dir.0.join("medallion.toml");
        std::fs::write(&config_path, toml).map_err(|e| Error::other(format!("writing {}", config_path.display()), e))?;
        let stderr_path = dir.0.join("serve.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| Error::other(format!("creating {}", stderr_path.display()), e))?;
        let (http, pg) = free_loopback_ports()?;
        let exe = std::env::current_exe().map_err(|e| Error::other("finding the medallion binary", e))?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("--quiet")
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .arg("--lake")
            .arg(&config.lake)
            .arg("--addr")
            .arg(http.to_string())
            .arg("--pg-addr")
            .arg(pg.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        for name in GOVERNANCE_SERVER_UNSET {
            command.env_remove(name);
        }
        // The S3 secret stays out of the config file: the environment beats it.
        if let Some(secret) = &config.s3.secret_access_key {
            command.env("AWS_SECRET_ACCESS_KEY", secret);
        }
        let child = command.spawn().map_err(|e| Error::other(format!("starting {what}"), e))?;
        let mut server = GovernanceServer { child, http, pg };
        let deadline = Instant::now() + GOVERNANCE_SERVER_START;
        loop {
            match server.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(Error::Config(format!("{what} stopped before it answered ({status}){}", last_lines(&stderr_path))));
                }
                Ok(None) => {}
                Err(e) => {
                    server.stop().await;
                    return Err(Error::other(format!("watching {what}"), e));
                }
            }
            if answers(http, pg).await {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                server.stop().await;
                return Err(Error::Config(format!(
                    "{what} did not answer GET /health on {http} within {} s{}",
                    GOVERNANCE_SERVER_START.as_secs(),
                    last_lines(&stderr_path)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The CPU time the server process has used so far (user + system, all
    /// its threads), from `/proc/PID/stat`; `None` elsewhere.
    #[cfg(unix)]
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()?)).ok()?;
        let ticks = stat_cpu_ticks(&stat)?;
        // SAFETY: sysconf reads a constant of the system.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (per_second > 0).then(|| ticks / per_second as f64)
    }

    #[cfg(not(unix))]
    fn cpu_seconds(&self) -> Option<f64> {
        None
    }

    /// SIGTERM (the server shuts down as on Ctrl-C), then waits for it to
    /// exit; killed if it has not within 30 s.
    async fn stop(mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the id of a child not yet waited for.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        #[cfg(not(unix))]
        let _ = self.child.start_kill();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// utime + stime, in clock ticks, of a `/proc/PID/stat` line: the 14th and
/// 15th fields, counted after the command name (which may hold spaces and
/// parentheses, so the line is cut at its last `)`).
fn stat_cpu_ticks(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
}

/// Two free loopback addresses: ports the system picked, released at once
/// for the server to bind.
fn free_loopback_ports() -> Result<(SocketAddr, SocketAddr)> {
    let bind = || std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| Error::other("finding a free loopback port", e));
    let (http, pg) = (bind()?, bind()?);
    let addr = |listener: &std::net::TcpListener| listener.local_addr().map_err(|e| Error::other("finding a free loopback port", e));
    Ok((addr(&http)?, addr(&pg)?))
}

/// Whether the server answers `GET /health` with 200 and accepts a
/// connection on its PostgreSQL port.
async fn answers(http: SocketAddr, pg: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(http).await.ok()?;
        let request = format!("GET /health HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let healthy = head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200");
        (healthy && tokio::net::TcpStream::connect(pg).await.is_ok()).then_some(())
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Some(())))
}

/// The last lines a server wrote to stderr, as `: line | line` (nothing when
/// it wrote none).
fn last_lines(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match lines.len() {
        0 => String::new(),
        n => format!(": {}", lines[n.saturating_sub(3)..].join(" | ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (medallion (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(325.0));
        assert_eq!(stat_cpu_ticks("4242 (cut short) S 1"), None);
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![7.0]), Some(7.0));
        assert_eq!(median(vec![30.0, -5.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn a_governance_server_config_holds_both_tokens_by_hash_and_the_audit_switch() {
        let (admin, reader) = (new_token().unwrap(), new_token().unwrap());
        let mut config = Config::load_with(crate::config::Overrides::default(), &|_| None).unwrap();
        config.pii.columns = vec![("customers".into(), "phone".into())];
        config.s3.secret_access_key = Some("s3-secret-never-written".into());
        config.s3.buckets.insert("gold".into(), "gold-bucket".into());
        let dir = BenchDir::create().unwrap();
        let path = dir.0.join("medallion.toml");
        for audit in [false, true] {
            let toml = governance_config_toml(&config, audit, &admin, &reader);
            assert!(!toml.contains(&admin) && !toml.contains(&reader) && !toml.contains("s3-secret"), "{toml}");
            std::fs::write(&path, &toml).unwrap();
            let overrides = crate::config::Overrides { config_file: Some(path.clone()), ..Default::default() };
            let served = Config::load_with(overrides, &|_| None).unwrap();
            let tokens = served.auth.tokens(served.token.as_deref());
            let who = |token: &str| tokens.identify(token).map(|identity| (identity.name, identity.role));
            assert_eq!(who(&admin), Some((BENCH_ADMIN.to_string(), Role::Admin)));
            assert_eq!(who(&reader), Some((BENCH_READER.to_string(), Role::Reader)));
            assert_eq!(served.audit, crate::config::AuditConfig { enabled: audit, ..config.audit });
            assert_eq!(served.pii.columns, config.pii.columns);
            assert_eq!((served.s3.buckets, served.memory_limit), (config.s3.buckets.clone(), config.memory_limit));
        }
        let removed = dir.0.clone();
        drop(dir);
        assert!(!removed.exists());
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
