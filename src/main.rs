//! The `medallion` command line: parses flags, builds the configuration,
//! calls the library and prints summaries. No business logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use medallion::config::{Config, Overrides};
use medallion::lake::{catalog, Lake};
use medallion::models;
use medallion::output::{self, Format};
use medallion::pipeline::{self, BatchSource, StageReport};
use medallion::progress::Progress;
use medallion::source::dump::Dump;
use medallion::live::LiveHandle;
use medallion::produce::{self, ProduceOptions};
use medallion::source::{generator, postgres};
use medallion::stream::{self, files::FileSource, kafka::KafkaSource, source::StreamSource, StreamOptions, StreamReport, Trigger};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "medallion",
    version,
    about = "A whole medallion lakehouse (bronze → silver → gold) in one binary",
    long_about = "A whole medallion lakehouse in one binary: PostgreSQL → bronze → silver → gold \
on Delta Lake tables, queried with SQL.\n\n\
Start with `medallion demo` (no services needed), then query the lake:\n  \
medallion sql \"SELECT * FROM gold.kpi_revenue\"\n\n\
With your own database:\n  \
DATABASE_URL=postgres://user:pass@host/northwind medallion run --lake file:///data/lake",
    after_help = "Configuration: flags beat environment variables (MEDALLION_LAKE, DATABASE_URL, AWS_*), \
which beat medallion.toml in the working directory (or --config FILE)."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct GlobalArgs {
    /// Lake URL: file:///path, s3:// (one bucket per layer) or s3://bucket/prefix [default: ./lake]
    #[arg(long, global = true, env = "MEDALLION_LAKE")]
    lake: Option<String>,
    /// Source database, e.g. postgres://user:password@127.0.0.1:5432/northwind
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Snapshot date to build, YYYY-MM-DD [default: today, UTC]
    #[arg(long, global = true)]
    date: Option<String>,
    /// Configuration file [default: ./medallion.toml when present]
    #[arg(long, global = true, env = "MEDALLION_CONFIG")]
    config: Option<PathBuf>,
    /// Folder of SQL models (silver/*.sql, gold/*.sql) to run instead of the built-in ones
    #[arg(long, global = true, env = "MEDALLION_MODELS")]
    models: Option<PathBuf>,
    /// Create the lake's S3 buckets when they are missing (also MEDALLION_CREATE_BUCKETS=true)
    #[arg(long, global = true)]
    create_buckets: bool,
    /// No progress bars
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Build the whole lake from the built-in Northwind data (no database needed), show the KPIs, then serve the dashboard
    Demo {
        /// Stop after the KPIs instead of serving the dashboard
        #[arg(long)]
        no_serve: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Run ingest → refine → aggregate for one date
    Run(SourceArgs),
    /// Bronze: land full snapshots of the source tables for the date
    Ingest(SourceArgs),
    /// Silver: run the silver models (joins, standardisation, expectations) for the date
    Refine,
    /// Gold: run the gold models (KPIs, RFM) for the date
    Aggregate,
    /// Query every table of the lake with SQL (tables are bronze.<t>, silver.<t>, gold.<t>)
    Sql {
        /// The query, e.g. "SELECT * FROM gold.kpi_top_countries ORDER BY rank"
        query: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Consume sales events (Kafka, or a folder of JSON-lines files) into bronze and live sales by country, exactly once
    Stream(StreamArgs),
    /// Publish realistic sales events (to Kafka, or to a folder for `stream --source`)
    Produce(ProduceArgs),
    /// Serve the dashboard, the HTTP API and the PostgreSQL wire endpoint over the lake
    Serve(ServeArgs),
    /// Load-test the serving layer (used by scripts/bench-serve.sh)
    #[command(hide = true)]
    BenchServe {
        /// Concurrent clients per scenario
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds per scenario
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Manage the source database
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address of the dashboard and HTTP API (use 0.0.0.0:8080 to listen on every interface)
    #[arg(long, default_value = "127.0.0.1:8080", env = "MEDALLION_ADDR")]
    addr: std::net::SocketAddr,
    /// Address of the read-only PostgreSQL wire endpoint
    #[arg(long, default_value = "127.0.0.1:15432", env = "MEDALLION_PG_ADDR")]
    pg_addr: std::net::SocketAddr,
    /// Do not start the PostgreSQL wire endpoint
    #[arg(long)]
    no_pg: bool,
    /// Most rows POST /api/sql returns
    #[arg(long, default_value_t = 10_000)]
    sql_row_limit: usize,
    /// Longest a POST /api/sql query may run, in seconds
    #[arg(long, default_value_t = 30)]
    sql_timeout: u64,
}

impl ServeArgs {
    fn options(&self) -> medallion::serve::ServeOptions {
        medallion::serve::ServeOptions {
            http_addr: self.addr,
            pg_addr: (!self.no_pg).then_some(self.pg_addr),
            sql_row_limit: self.sql_row_limit,
            sql_timeout: std::time::Duration::from_secs(self.sql_timeout.max(1)),
            ..Default::default()
        }
    }
}

#[derive(Args)]
struct SourceArgs {
    /// Read the source tables from a plain-SQL PostgreSQL dump instead of DATABASE_URL
    #[arg(long, value_name = "FILE")]
    from_dump: Option<PathBuf>,
}

#[derive(Args)]
struct StreamArgs {
    /// Kafka brokers, host:port[,host:port]
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    brokers: Option<String>,
    /// Kafka topic
    #[arg(long, default_value = "ventes-temps-reel")]
    topic: String,
    /// Kafka consumer group (positions are kept in the lake, not in the group)
    #[arg(long, default_value = "medallion")]
    group: String,
    /// Read JSON-lines files from this folder instead of Kafka (file:///dir or a path)
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// Consume everything up to the end offsets seen at start, then stop (the default)
    #[arg(long, conflicts_with = "interval")]
    available_now: bool,
    /// Run continuously until Ctrl-C; a micro-batch closes one interval after its first message (e.g. 1s, 500ms) or when full
    #[arg(long, value_parser = parse_duration)]
    interval: Option<Duration>,
    /// Most messages in one micro-batch
    #[arg(long, default_value_t = 50_000)]
    max_batch: usize,
    /// Events older than the newest event time minus this are late: kept and flagged, not windowed
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    lateness: Duration,
    /// Benchmark reference: read to the end offsets and discard (no decoding, no lake)
    #[arg(long, hide = true)]
    discard: bool,
}

#[derive(Args)]
struct ProduceArgs {
    /// Kafka brokers, host:port[,host:port]
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    brokers: Option<String>,
    /// Kafka topic
    #[arg(long, default_value = "ventes-temps-reel")]
    topic: String,
    /// How many events
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Events per second (default: as fast as possible)
    #[arg(long)]
    rate: Option<f64>,
    /// Share of bad messages (malformed JSON, missing field, wrong type, negative amount, duplicate id)
    #[arg(long, default_value_t = 0.0)]
    bad_ratio: f64,
    /// Seed of the event sequence
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Write one JSON-lines file into this folder instead of sending to Kafka
    #[arg(long, value_name = "DIR")]
    to_dir: Option<PathBuf>,
}

/// Parses `500ms`, `1s`, `2m`.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("'{text}' is not a duration such as 500ms, 1s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("'{text}' is not a duration such as 500ms, 1s or 2m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Create the Northwind tables in DATABASE_URL and fill them (generated, or from a dump)
    Load {
        /// Size: 1 = classic Northwind (830 orders), 1000 ≈ 830k orders and 2.2M lines
        #[arg(long, default_value_t = 1)]
        scale: u32,
        /// Load this plain-SQL dump (e.g. the real northwind.sql) instead of generating data
        #[arg(long, value_name = "FILE")]
        from_dump: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.quiet);
    quiet_worker_panics();
    let overrides = Overrides {
        config_file: cli.global.config.clone(),
        lake: cli.global.lake.clone(),
        database_url: cli.global.database_url.clone(),
        date: cli.global.date.clone(),
        models_dir: cli.global.models.clone(),
        create_buckets: cli.global.create_buckets.then_some(true),
    };
    let config = match Config::load(overrides) {
        Ok(config) => config,
        Err(err) => return fail(&err.into(), &[]),
    };
    let secrets = config.secrets();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err.into(), &secrets),
    };
    let progress = if cli.global.quiet { Progress::hidden() } else { Progress::stderr() };
    match runtime.block_on(execute(cli.command, config, progress)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err, &secrets),
    }
}

/// Prints one line, with every secret replaced, and exits non-zero.
fn fail(err: &anyhow::Error, secrets: &[String]) -> ExitCode {
    let mut message = format!("{err:#}");
    for secret in secrets {
        message = message.replace(secret.as_str(), "***");
    }
    eprintln!("error: {}", medallion::error::one_line(&message));
    ExitCode::FAILURE
}

/// A panic inside a runtime worker task (seen: deltalake aborting an upload
/// the failed S3 server already closed) reaches the command as an error and
/// is reported on its one line; printing it too would break that line, so it
/// goes to the debug log. Panics of the main thread print as usual.
fn quiet_worker_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("main") {
            default(info);
        } else {
            tracing::debug!("worker task panicked: {info}");
        }
    }));
}

/// Warnings (such as retries) on stderr; `--quiet` keeps only errors.
fn init_logging(quiet: bool) {
    let default = if quiet { "medallion=error" } else { "medallion=warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDALLION_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

async fn execute(command: Command, config: Config, progress: Progress) -> Result<()> {
    match command {
        Command::Demo { no_serve, serve } => {
            demo(&config, progress).await?;
            if no_serve {
                return Ok(());
            }
            println!();
            let lake = Lake::new(&config)?;
            medallion::serve::run(&config, lake, LiveHandle::new(), serve.options()).await?;
            Ok(())
        }
        Command::Serve(args) => {
            let lake = Lake::new(&config)?;
            println!("medallion serve: {}", lake.location().describe());
            medallion::serve::run(&config, lake, LiveHandle::new(), args.options()).await?;
            Ok(())
        }
        Command::BenchServe { clients, seconds } => bench_serve(&config, clients, seconds).await,
        Command::Run(args) => {
            let lake = Lake::new(&config)?;
            let source = batch_source(&config, &args)?;
            println!("medallion run for {} → {}", config.date, lake.location().describe());
            let started = Instant::now();
            let reports = pipeline::run(&config, &lake, &source, &progress).await?;
            print_summary(&reports, started);
            Ok(())
        }
        Command::Ingest(args) => {
            let lake = Lake::new(&config)?;
            let source = batch_source(&config, &args)?;
            let started = Instant::now();
            let report = pipeline::ingest(&config, &lake, &source, &progress).await?;
            print_summary(&[report], started);
            Ok(())
        }
        Command::Refine | Command::Aggregate => {
            let layer = if matches!(command, Command::Refine) { "silver" } else { "gold" };
            let lake = Lake::new(&config)?;
            let models = models::ModelSet::load(config.models_dir.as_deref())?;
            let started = Instant::now();
            let report = pipeline::run_models(&config, &lake, &models, layer, &progress).await?;
            print_summary(&[report], started);
            Ok(())
        }
        Command::Sql { query, format } => {
            let lake = Lake::new(&config)?;
            let ctx = medallion::lake::session::SessionBuilder::full(&lake, &config).build().await?.ctx;
            let frame = ctx.sql(&query).await.map_err(medallion::Error::from)?;
            let batches = frame.collect().await.map_err(medallion::Error::from)?;
            print!("{}", output::render(&batches, format)?);
            if format == Format::Table {
                println!();
            }
            Ok(())
        }
        Command::Stream(args) if args.discard => {
            keep_freed_memory_for_reuse();
            let mut source = stream_source(&args)?;
            source.seek(&Default::default()).await?;
            let ends = source.end_positions().await?;
            let total: i64 = ends.values().sum();
            let started = Instant::now();
            let (mut messages, mut bytes) = (0i64, 0u64);
            while messages < total {
                // Batches gathered as `stream --available-now` gathers them.
                let (_, linger) = Trigger::AvailableNow.poll_timing();
                let batch = source.poll(args.max_batch, Duration::from_secs(5), linger).await?;
                if batch.is_empty() {
                    break;
                }
                messages += batch.len() as i64;
                bytes += batch.iter().map(|m| m.payload.len() as u64).sum::<u64>();
            }
            let seconds = started.elapsed().as_secs_f64();
            println!("raw consume: {messages} messages, {:.1} MB in {seconds:.2} s — {:.0} messages/s", bytes as f64 / 1e6, messages as f64 / seconds);
            Ok(())
        }
        Command::Stream(args) => {
            keep_freed_memory_for_reuse();
            let lake = Lake::new(&config)?;
            let source = stream_source(&args)?;
            let options = StreamOptions {
                trigger: match args.interval {
                    Some(interval) => Trigger::Interval(interval),
                    None => Trigger::AvailableNow,
                },
                max_batch: args.max_batch.max(1),
                allowed_lateness: chrono::Duration::from_std(args.lateness).unwrap_or(chrono::Duration::seconds(60)),
                ..StreamOptions::default()
            };
            println!("medallion stream {} → {}", source.describe(), lake.location().describe());
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("stopping after the batch in flight…");
                    flag.store(true, Ordering::SeqCst);
                }
            });
            let started_at = chrono::Utc::now();
            let result = stream::run(&config, &lake, source, &options, &LiveHandle::new(), &progress, stop).await;
            // The run record (gold.pipeline_runs), also when the stream failed.
            let summary = match &result {
                Ok(report) => medallion::runs::StreamRun {
                    batches: report.batches,
                    events: report.events,
                    rejected: report.rejected,
                    events_per_second: (report.events + report.rejected) as f64 / report.duration.as_secs_f64().max(1e-9),
                    lag: report.lag.clone(),
                },
                Err(_) => medallion::runs::StreamRun::default(),
            };
            let error = result.as_ref().err().map(|e| e.to_string());
            let record = medallion::runs::stream_record(&medallion::runs::new_run_id(), started_at, &summary, error);
            medallion::runs::append_best_effort(&lake, &[record]).await;
            let report = result?;
            print_stream_summary(&report);
            Ok(())
        }
        Command::Produce(args) => {
            let options = ProduceOptions { count: args.count, rate: args.rate, bad_ratio: args.bad_ratio.clamp(0.0, 1.0), seed: args.seed };
            let summary = match &args.to_dir {
                Some(dir) => produce::to_dir(dir, &options)?,
                None => {
                    let brokers = args.brokers.as_deref().context(
                        "no Kafka brokers: set KAFKA_BOOTSTRAP_SERVERS or --brokers, or write files with --to-dir",
                    )?;
                    let bar = progress.bar("producing", args.count, "events");
                    let summary = produce::to_kafka(brokers, &args.topic, &options, &bar).await?;
                    bar.finish_and_clear();
                    summary
                }
            };
            println!(
                "sent {} events ({} valid, {} bad) in {:.2?} — {:.0} events/s; valid amount {:.2}",
                summary.sent,
                summary.valid,
                summary.bad,
                summary.elapsed,
                summary.sent as f64 / summary.elapsed.as_secs_f64().max(1e-9),
                summary.valid_amount
            );
            Ok(())
        }
        Command::Source { command: SourceCommand::Load { scale, from_dump } } => {
            let url = config
                .database_url
                .as_deref()
                .context("no database to load into: set DATABASE_URL or --database-url")?;
            let target = medallion::config::describe_database(url);
            let mut client = postgres::connect(url).await?;
            let started = Instant::now();
            match from_dump {
                Some(path) => {
                    let sql = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read dump {}", path.display()))?;
                    let spinner = progress.spinner("loading dump");
                    generator::load_dump(&mut client, &target, &sql).await?;
                    spinner.finish_and_clear();
                    println!("loaded {} into {target} in {:.1?}", path.display(), started.elapsed());
                }
                None => {
                    let bar = progress.bar("generating Northwind", 0, "orders");
                    let summary = generator::load(&mut client, &target, scale, &bar).await?;
                    bar.finish_and_clear();
                    println!("loaded Northwind at scale {scale} into {target} in {:.1?}", started.elapsed());
                    for (table, rows) in summary.tables {
                        println!("  {table:<14} {rows:>10} rows");
                    }
                }
            }
            Ok(())
        }
    }
}

fn stream_source(args: &StreamArgs) -> Result<StreamSource> {
    if let Some(url) = &args.source {
        let path = url.strip_prefix("file://").unwrap_or(url);
        return Ok(StreamSource::Files(FileSource::new(PathBuf::from(path))?));
    }
    let brokers = args
        .brokers
        .as_deref()
        .context("no Kafka brokers: set KAFKA_BOOTSTRAP_SERVERS or --brokers, or read files with --source file:///dir")?;
    Ok(StreamSource::Kafka(KafkaSource::new(brokers, &args.topic, &args.group)?))
}

fn print_stream_summary(report: &StreamReport) {
    let seconds = report.duration.as_secs_f64().max(1e-9);
    println!(
        "\nstream     {:>8.2?}  {} batches, {} events ({:.0}/s), {} rejected ({} duplicates), {} late",
        report.duration,
        report.batches,
        report.events,
        (report.events + report.rejected) as f64 / seconds,
        report.rejected,
        report.duplicates,
        report.late
    );
    if report.batches > 0 {
        println!(
            "    sustained {:.0} messages/s over {:.2?} (start-up {:.2?}: lake, source metadata, state rebuilt from bronze)",
            (report.events + report.rejected) as f64 / report.consuming.as_secs_f64().max(1e-9),
            report.consuming,
            report.duration.saturating_sub(report.consuming)
        );
    }
    if let (Some(p50), Some(p99)) = (report.latency_p50, report.latency_p99) {
        println!("    latency event time → live view: p50 {:.3} s, p99 {:.3} s", p50, p99);
    }
    for (key, lag) in &report.lag {
        println!("    lag {key:<30} {lag:>10}");
    }
}

fn batch_source(config: &Config, args: &SourceArgs) -> Result<BatchSource> {
    Ok(match &args.from_dump {
        Some(path) => BatchSource::Dump(Dump::from_file(path)?),
        None => BatchSource::from_config(config)?,
    })
}

/// `medallion demo`: the vendored Northwind through every layer, then the KPIs.
async fn demo(config: &Config, progress: Progress) -> Result<()> {
    let lake = Lake::new(config)?;
    println!("medallion demo: built-in Northwind → {} (snapshot {})", lake.location().describe(), config.date);
    let started = Instant::now();
    let source = BatchSource::Dump(Dump::northwind()?);
    let reports = pipeline::run(config, &lake, &source, &progress).await?;
    print_summary(&reports, started);

    let ctx = catalog::session_for(&lake).await?;
    let date = config.date;
    let sections = [
        ("Revenue", format!("SELECT round(total_revenue, 2) AS total_revenue, orders, customers, round(avg_order_value, 2) AS avg_order_value FROM gold.kpi_revenue WHERE snapshot_date = DATE '{date}'")),
        ("Top 3 countries", format!("SELECT \"rank\", country, round(revenue, 2) AS revenue FROM gold.kpi_top_countries WHERE snapshot_date = DATE '{date}' ORDER BY \"rank\"")),
        ("Sales by category", format!("SELECT category_name, round(revenue, 2) AS revenue, quantity, orders FROM gold.kpi_category_sales WHERE snapshot_date = DATE '{date}' ORDER BY revenue DESC")),
        ("RFM segments", format!("SELECT segment, customers, round(revenue, 2) AS revenue, round(100 * share_of_revenue, 1) AS share_pct FROM gold.rfm_segments WHERE snapshot_date = DATE '{date}' ORDER BY customers DESC")),
    ];
    for (title, sql) in sections {
        let batches = ctx.sql(&sql).await.map_err(medallion::Error::from)?.collect().await.map_err(medallion::Error::from)?;
        println!("\n{title}\n{}", output::render(&batches, Format::Table)?);
    }

    // The streaming path, replayed from files: no Kafka needed.
    let events_dir = std::env::temp_dir().join("medallion-demo-events");
    let has_events = std::fs::read_dir(&events_dir)
        .map(|entries| entries.filter_map(|e| e.ok()).any(|e| e.path().extension().is_some_and(|x| x == "jsonl")))
        .unwrap_or(false);
    if !has_events {
        produce::to_dir(&events_dir, &ProduceOptions { count: 2_000, rate: None, bad_ratio: 0.05, seed: 42 })?;
    }
    let source = StreamSource::Files(FileSource::new(events_dir.clone())?);
    let live = LiveHandle::new();
    let report =
        stream::run(&config, &lake, source, &StreamOptions::default(), &live, &progress, Arc::new(AtomicBool::new(false)))
            .await?;
    print_stream_summary(&report);
    let ctx = catalog::session_for(&lake).await?;
    live.register(&ctx).map_err(medallion::Error::from)?;
    let sql = "SELECT pays, round(total_ventes_live, 2) AS total_ventes_live, nb_transactions, last_event_time \
               FROM live.sales_by_country ORDER BY total_ventes_live DESC LIMIT 10";
    let batches = ctx.sql(sql).await.map_err(medallion::Error::from)?.collect().await.map_err(medallion::Error::from)?;
    println!("\nLive sales by country (stream replayed from {})\n{}", events_dir.display(), output::render(&batches, Format::Table)?);
    println!("\nNext: medallion sql \"SELECT * FROM gold.rfm_customers LIMIT 10\"");
    Ok(())
}

/// `medallion bench-serve`: serves the lake on free loopback ports and loads
/// it: `/health` (the reference), `/api/kpis`, and a query over PG wire.
async fn bench_serve(config: &Config, clients: usize, seconds: u64) -> Result<()> {
    use medallion::serve::{self, bench};
    let lake = Lake::new(config)?;
    let options = serve::ServeOptions {
        http_addr: "127.0.0.1:0".parse()?,
        pg_addr: Some("127.0.0.1:0".parse()?),
        ..Default::default()
    };
    let server = serve::start(config, lake, LiveHandle::new(), options).await?;
    let token = config.token.as_deref();
    let duration = std::time::Duration::from_secs(seconds.max(1));
    let http = server.http_addr();
    let pg = server.pg_addr().context("the PostgreSQL endpoint did not start")?;
    println!("serving bench: {clients} concurrent clients, {seconds} s per scenario, server and clients in one process");
    // Warm up the caches and connections once.
    bench::http_get(http, "/api/kpis", token, 1, std::time::Duration::from_millis(200)).await?;
    let runs = [
        bench::http_get(http, "/health", token, clients, duration).await?,
        bench::http_get(http, "/api/kpis", token, clients, duration).await?,
        bench::pg_query(pg, "SELECT total_revenue, orders FROM gold.kpi_revenue", token, clients, duration).await?,
    ];
    for run in &runs {
        println!("{run}");
    }
    let reference = runs[0].p99.as_secs_f64().max(1e-9);
    println!("p99 /api/kpis = {:.1}x the /health p99", runs[1].p99.as_secs_f64() / reference);
    server.shutdown().await;
    Ok(())
}

/// The end-of-command summary: rows per table, quarantine per rule, time per stage.
fn print_summary(reports: &[StageReport], started: Instant) {
    println!();
    for report in reports {
        let retries = if report.attempts > 1 { format!(" after {} attempts", report.attempts) } else { String::new() };
        println!("{:<10} {:>8.2?}  {:>10} rows{retries}", report.stage, report.duration, report.rows());
        if report.source_bytes > 0 {
            let seconds = report.extract_duration.as_secs_f64().max(1e-9);
            println!(
                "    extracted {:.1} MB in {:.2?} ({:.1} MB/s, {:.0} rows/s)",
                report.source_bytes as f64 / 1e6,
                report.extract_duration,
                report.source_bytes as f64 / 1e6 / seconds,
                report.rows() as f64 / seconds
            );
        }
        for (table, rows) in &report.tables {
            println!("    {table:<36} {rows:>10}");
        }
        if !report.failures_by_rule.is_empty() {
            println!("    quarantined rows: {} (failures per rule)", report.quarantined);
            for (rule, count) in &report.failures_by_rule {
                println!("      {rule:<34} {count:>10}");
            }
        }
    }
    println!("total      {:>8.2?}", started.elapsed());
}

/// A stream frees and refills tens of MB per micro-batch (payloads, Arrow
/// columns, Parquet buffers). By default glibc hands freed heap memory back
/// to the kernel as soon as 128 KiB of it sit at the top of the heap, then
/// takes it back one page fault at a time: that cost about a third of the
/// stream's system time. Up to 1 GiB freed is now kept for reuse, and
/// blocks up to 32 MiB come from the heap (setting the trim threshold would
/// otherwise freeze the mmap threshold at 128 KiB).
fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
