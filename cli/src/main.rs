//! The `medallion` command line: parses flags, builds the configuration,
//! calls the library and prints what it returns. No business logic lives here.
//!
//! Each subcommand takes only the options it uses: the lake, date, models and
//! database flags are small argument groups flattened into the subcommands
//! that need them; `--config` and `--quiet` are global.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use medallion::audit;
use medallion::config::{Config, Overrides, Secrets};
use medallion::demo::{self, DemoReport};
use medallion::devtools;
use medallion::jobs;
use medallion::lake::history;
use medallion::lake::upkeep::VacuumOptions;
use medallion::lake::Lake;
use medallion::live::LiveHandle;
use medallion::models;
use medallion::output::{self, Format};
use medallion::pipeline::{self, BatchSource, StageReport};
use medallion::produce::{self, ProduceOptions};
use medallion::progress::Progress;
use medallion::serve;
use medallion::source::dump::Dump;
use medallion::source::{generator, postgres};
use medallion::stream::StreamReport;

/// The lake commands' printing (status, optimize, vacuum, history, restore).
#[path = "cli/lake_commands.rs"]
mod lake_commands;
/// The governance commands' printing (profile, catalog, lineage).
#[path = "cli/governance.rs"]
mod governance;
/// `medallion token create`.
#[path = "cli/token.rs"]
mod token;
/// `medallion cluster scheduler | executor | status`.
#[path = "cli/cluster.rs"]
mod cluster;

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
    after_help = "Configuration: every setting is taken from its flag, else its environment variable \
(MEDALLION_LAKE, DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, KAFKA_SASL_*, AWS_*…), else medallion.toml in the working \
directory (or --config FILE), else its default. `medallion <command> --help` lists a command's options."
)]
struct Cli {
    /// Configuration file [env: MEDALLION_CONFIG] [default: ./medallion.toml when present]
    #[arg(long, global = true, value_name = "FILE", help_heading = "Global options")]
    config: Option<PathBuf>,
    /// No progress bars
    #[arg(long, short, global = true, help_heading = "Global options")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the whole lake from the built-in Northwind data (no database needed), show the KPIs, then serve the dashboard
    #[command(after_help = "Examples:\n  medallion demo\n  medallion demo --no-serve --lake file:///tmp/lake")]
    Demo(DemoArgs),
    /// Run ingest → refine → aggregate for one date
    #[command(after_help = "Examples:\n  \
        DATABASE_URL=postgres://user:pass@host/northwind medallion run --lake file:///data/lake\n  \
        medallion run --date 2026-11-24            # rebuild one date; other dates stay\n  \
        medallion run --from-dump data/northwind/northwind.sql")]
    Run(RunArgs),
    /// Bronze: land full snapshots of the source tables for the date
    Ingest(IngestArgs),
    /// Silver: run the silver models (joins, standardisation, expectations) for the date
    Refine(LayerArgs),
    /// Gold: run the gold models (KPIs, RFM) for the date
    Aggregate(LayerArgs),
    /// Show how a model runs, without writing anything: its physical plan with each operator's rows and time (EXPLAIN ANALYZE)
    #[command(after_help = "Examples:\n  \
        medallion explain silver.sales_master\n  \
        medallion explain gold.rfm_customers --date 2026-11-24 --plan-only\n\n\
        The query shown is the one `refine` / `aggregate` runs: the model's SQL with one boolean column per \
        expectation. `medallion run --profile` shows the same times for every model of a real run.")]
    Explain(ExplainArgs),
    /// Query every table of the lake with SQL (tables are bronze.<t>, silver.<t>, gold.<t>)
    #[command(after_help = "Examples:\n  \
        medallion sql \"SELECT * FROM gold.kpi_revenue\"\n  \
        medallion sql \"SELECT segment, customers FROM gold.rfm_segments\" --format csv")]
    Sql(SqlArgs),
    /// Consume sales events (Kafka, or a folder of JSON-lines files) into bronze and live sales by country, exactly once
    #[command(after_help = "Examples:\n  \
        medallion stream --brokers 127.0.0.1:9092 --available-now\n  \
        medallion stream --interval 1s              # until Ctrl-C\n  \
        medallion stream --source file:///data/events\n\n\
        Every option can also be set under [stream] in medallion.toml, with the flag's name \
        (max_batch = 10000, interval = \"1s\").\n\n\
        Kafka with SASL or TLS: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, \
        KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION (or [kafka] in medallion.toml; any librdkafka property \
        under [kafka.properties]). Credentials the broker refuses stop the stream at once, in one line.")]
    Stream(StreamArgs),
    /// Publish realistic sales events (to Kafka, or to a folder for `stream --source`)
    #[command(after_help = "Examples:\n  \
        medallion produce --count 100000 --rate 5000 --bad-ratio 0.05\n  \
        medallion produce --to-dir /data/events --count 2000\n  \
        KAFKA_SASL_PASSWORD=... medallion produce --security-protocol SASL_SSL --sasl-mechanism SCRAM-SHA-512 --sasl-username app\n\n\
        Kafka security comes from the same settings as `medallion stream` ([kafka] in medallion.toml, KAFKA_* variables).")]
    Produce(ProduceArgs),
    /// Serve the dashboard, the HTTP API and the PostgreSQL wire endpoint over the lake
    #[command(after_help = "Examples:\n  \
        medallion serve --lake file:///data/lake\n  \
        medallion serve --addr 0.0.0.0:8080 --pg-addr 0.0.0.0:15432   # other machines too (set MEDALLION_TOKEN)\n  \
        medallion serve --engine ballista://sched.internal:50050   # ad-hoc /api/sql on a cluster\n\n\
        Every option can also be set under [serve] in medallion.toml, with the flag's name \
        (addr = \"127.0.0.1:8080\", pg = false).\n\n\
        TLS: MEDALLION_TLS_CERT and MEDALLION_TLS_KEY (PEM files; cert and key under [tls]) make the dashboard and API \
        HTTPS and let psql connect with sslmode=require; MEDALLION_REQUIRE_TLS=true (require_tls) refuses unencrypted \
        PostgreSQL clients.\n\n\
        With --engine ballista://HOST:PORT the scheduler must answer (with an executor) at start; /api/sql then runs \
        the queries of admins (and of every role when [pii] columns is empty) on the cluster, and the dashboard \
        shows its executors and jobs (GET /api/cluster). Masked roles, time travel and the PostgreSQL wire stay local.")]
    Serve(ServeCommandArgs),
    /// Run the whole lakehouse as one service: the stream, the server, the schedules, table upkeep, freshness alerts
    #[command(after_help = "Examples:\n  \
        medallion up                       # reads medallion.toml; Ctrl-C / SIGTERM stops it gracefully\n\n\
        What runs comes from medallion.toml:\n  \
        [up]          stream = true, serve = true, grace = \"30s\"\n  \
        [[up.schedule]] name = \"nightly\", cron = \"0 2 * * *\" (or every = \"1h\"), timezone = \"Europe/Paris\",\n                run = \"run\" | ingest | refine | aggregate | optimize | vacuum, catch_up = \"latest\" | all | none\n  \
        [up.retry]    attempts = 3, backoff = \"30s\"\n  \
        [alerts]      webhook = \"https://hooks.example/...\"   (or MEDALLION_ALERT_WEBHOOK)\n  \
        [freshness]   \"gold.kpi_revenue\" = { warn_after = \"26h\", error_after = \"50h\" }\n  \
        [maintenance] optimize_every = \"1h\", vacuum_every = \"24h\", vacuum_retention = \"168h\"\n\n\
        [stream] and [serve] hold the options of `medallion stream` and `medallion serve`.")]
    Up(UpArgs),
    /// What the lake holds and what `up` did: tables (version, files, last commit, freshness) and the latest runs
    Status(StatusArgs),
    /// Compact a table's small files into large ones (one commit; readers are unaffected)
    #[command(after_help = "Examples:\n  \
        medallion optimize bronze.sales_events\n  \
        medallion optimize                 # every table of the lake")]
    Optimize(OptimizeArgs),
    /// Delete the files no version within the retention needs
    #[command(after_help = "Examples:\n  \
        medallion vacuum bronze.sales_events --retention 168h\n  \
        medallion vacuum --dry-run         # every table: list what would go")]
    Vacuum(VacuumArgs),
    /// A table's commits: version, time, operation, files and rows added and removed
    #[command(after_help = "Examples:\n  \
        medallion history bronze.sales_events --limit 20\n  \
        medallion sql --as-of 12 \"SELECT count(*) FROM bronze.sales_events\"")]
    History(HistoryArgs),
    /// Column statistics of tables (nulls, distincts, min/max, mean, top values), stored in gold.table_profiles
    #[command(after_help = "Examples:\n  \
        medallion profile                      # every silver and gold table\n  \
        medallion profile bronze.orders silver.sales_master\n  \
        medallion profile --all                # bronze too\n\n\
        run, refine and aggregate profile the tables they wrote unless [profile] after_run = false.")]
    Profile(ProfileArgs),
    /// The catalog: every table and column with its type and its plain-language description
    #[command(after_help = "Examples:\n  \
        medallion catalog\n  \
        medallion catalog gold.rfm_customers\n  \
        medallion catalog --search revenue\n\n\
        Descriptions live beside the models: models/<layer>/<table>.docs.toml (see README).")]
    Catalog(CatalogArgs),
    /// Which tables each table is built from (source → bronze → silver → gold → serving), derived from the SQL models' plans
    #[command(after_help = "Examples:\n  \
        medallion lineage --lake file:///tmp/lake\n  \
        medallion lineage --columns gold.kpi_revenue\n\n\
        Each batch run can also send OpenLineage events (START, COMPLETE, FAIL, with schema and\n\
        column lineage) to Marquez or any receiver: set [lineage] url or file in medallion.toml\n\
        (or MEDALLION_LINEAGE_URL / MEDALLION_LINEAGE_FILE, or --lineage-url / --lineage-file of the batch commands).")]
    Lineage(LineageArgs),
    /// Access tokens of the serving layer, each with a name and a role (reader, analyst, admin)
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Scale out: run this binary as a Ballista scheduler or executor, or show a cluster (then `--engine ballista://HOST:PORT`)
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Give a table the content of an older version, as one new commit (history is kept)
    #[command(after_help = "Example:\n  medallion restore gold.kpi_revenue --to 3")]
    Restore(RestoreArgs),
    /// Load-test the serving layer (used by scripts/bench-serve.sh)
    #[command(hide = true)]
    BenchServe(BenchServeArgs),
    /// Time the lake's Parquet settings against others on tables of a lake (BENCHMARKS.md, batch path)
    #[command(hide = true)]
    BenchEncode(BenchEncodeArgs),
    /// Manage the source database
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Create the Northwind tables in DATABASE_URL and fill them (generated, or from a dump)
    #[command(after_help = "Examples:\n  \
        medallion source load --scale 1000 --database-url postgres://user:pass@127.0.0.1/northwind\n  \
        medallion source load --from-dump data/northwind/northwind.sql")]
    Load(LoadArgs),
}

// ------------------------------------------------- shared argument groups ----

/// `--lake`, for the commands that read the lake.
#[derive(Args)]
struct LakeArg {
    /// Lake URL: file:///path, s3:// (one bucket per layer) or s3://bucket/prefix [env: MEDALLION_LAKE] [default: ./lake]
    #[arg(long, value_name = "URL")]
    lake: Option<String>,
}

/// `--lake` and `--create-buckets`, for the commands that write the lake.
#[derive(Args)]
struct WritableLakeArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// Create the lake's S3 buckets when they are missing [env: MEDALLION_CREATE_BUCKETS]
    #[arg(long)]
    create_buckets: bool,
}

/// `--date`, for the commands that build a snapshot.
#[derive(Args)]
struct DateArg {
    /// Snapshot date to build [default: today, UTC]
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<String>,
}

/// `--models`, for the commands that run SQL models.
#[derive(Args)]
struct ModelsArg {
    /// Folder of SQL models (silver/*.sql, gold/*.sql) to run instead of the built-in ones [env: MEDALLION_MODELS]
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Memory the models' joins, aggregates and sorts may hold before they spill to disk [env: MEDALLION_MEMORY_LIMIT_MB] [default: 1536]
    #[arg(long, value_name = "MB")]
    memory_limit_mb: Option<String>,
}

/// `--engine`, for the commands whose queries can run on a cluster.
#[derive(Args)]
struct EngineArg {
    /// Where the queries run: local (this process) or ballista://HOST:PORT, a cluster started with `medallion cluster` [env: MEDALLION_ENGINE] [default: local]
    #[arg(long, value_name = "ENGINE")]
    engine: Option<String>,
}

/// `--encrypt-at-rest`, for the commands that write date partitions of the
/// lake (bronze, silver, gold) or read their rows (to decrypt them).
#[derive(Args)]
struct EncryptAtRestArg {
    /// The lake stores its PII columns ([pii] columns) AES-256-GCM encrypted with MEDALLION_PII_KEY: written encrypted, decrypted for the roles allowed when read; every command that touches such a lake needs it, so prefer [pii] encrypt_at_rest [env: MEDALLION_PII_ENCRYPT_AT_REST]
    #[arg(long)]
    encrypt_at_rest: bool,
}

/// `--lineage-url` and `--lineage-file`, for the commands that run batch
/// stages and so send OpenLineage run events.
#[derive(Args)]
struct LineageEventsArgs {
    /// Send each OpenLineage run event (START, COMPLETE, FAIL) to this receiver, e.g. http://marquez:5000/api/v1/lineage; never printed, but the process list shows flags: give a URL with a token in the environment [env: MEDALLION_LINEAGE_URL]
    #[arg(long, value_name = "URL")]
    lineage_url: Option<String>,
    /// Append each OpenLineage run event to this file as one JSON line [env: MEDALLION_LINEAGE_FILE]
    #[arg(long, value_name = "FILE")]
    lineage_file: Option<String>,
}

/// `--database-url`, for the commands that use the source database.
#[derive(Args)]
struct DatabaseArg {
    /// Source database, e.g. postgres://user:password@127.0.0.1:5432/northwind [env: DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// How the Kafka clients of `stream` and `produce` authenticate and encrypt
/// (`[kafka]`). The passwords have no flag: a flag shows in the process
/// list and the shell's history.
#[derive(Args)]
#[command(next_help_heading = "Kafka security")]
struct KafkaArgs {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [env: KAFKA_SECURITY_PROTOCOL] [default: PLAINTEXT]
    #[arg(long, value_name = "PROTOCOL")]
    security_protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (the password: KAFKA_SASL_PASSWORD or sasl_password under [kafka]) [env: KAFKA_SASL_MECHANISM]
    #[arg(long, value_name = "MECHANISM")]
    sasl_mechanism: Option<String>,
    /// SASL user name [env: KAFKA_SASL_USERNAME]
    #[arg(long, value_name = "USER")]
    sasl_username: Option<String>,
    /// CA certificates (PEM) the brokers' certificates must chain to, for SSL and SASL_SSL [env: KAFKA_SSL_CA_LOCATION] [default: the system's]
    #[arg(long, value_name = "FILE")]
    ssl_ca_location: Option<String>,
}

/// The options of `serve` (and of `demo`, which serves at the end).
#[derive(Args)]
struct ServeArgs {
    /// Address of the dashboard and HTTP API (0.0.0.0:8080 listens on every interface) [env: MEDALLION_ADDR] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "IP:PORT")]
    addr: Option<String>,
    /// Address of the read-only PostgreSQL wire endpoint [env: MEDALLION_PG_ADDR] [default: 127.0.0.1:15432]
    #[arg(long, value_name = "IP:PORT")]
    pg_addr: Option<String>,
    /// Do not start the PostgreSQL wire endpoint
    #[arg(long)]
    no_pg: bool,
    /// Most rows POST /api/sql returns [default: 10000]
    #[arg(long, value_name = "N")]
    sql_row_limit: Option<String>,
    /// Longest a POST /api/sql query may run, e.g. 30s or 2m (a bare number is seconds) [default: 30s]
    #[arg(long, value_name = "DURATION")]
    sql_timeout: Option<String>,
    /// Longest a PostgreSQL-wire statement may run before it is cancelled [env: MEDALLION_PG_STATEMENT_TIMEOUT] [default: the SQL timeout]
    #[arg(long, value_name = "DURATION")]
    pg_statement_timeout: Option<String>,
    /// Queries /api/sql and the PostgreSQL endpoint each run at once; more wait for a slot [env: MEDALLION_MAX_CONCURRENT_QUERIES] [default: twice the cores]
    #[arg(long, value_name = "N")]
    max_concurrent_queries: Option<String>,
    #[command(flatten)]
    audit: AuditArg,
    /// How often the server appends the queries it logged to audit.queries (one Delta commit each time), e.g. 500ms or 10s [env: MEDALLION_AUDIT_FLUSH_INTERVAL] [default: 1s]
    #[arg(long, value_name = "DURATION")]
    audit_flush_interval: Option<String>,
}

/// `--no-audit`, for the commands that run queries.
#[derive(Args)]
struct AuditArg {
    /// Do not record queries in the audit log audit.queries [env: MEDALLION_AUDIT=false] [default: recorded]
    #[arg(long)]
    no_audit: bool,
}

// ------------------------------------------------ arguments per command ----

#[derive(Args)]
struct DemoArgs {
    /// Stop after the KPIs instead of serving the dashboard
    #[arg(long)]
    no_serve: bool,
    #[command(flatten)]
    lake: WritableLakeArgs,
    #[command(flatten)]
    date: DateArg,
    #[command(flatten)]
    models: ModelsArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
    #[command(flatten)]
    lineage: LineageEventsArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    profile: ProfileArg,
    #[command(flatten)]
    lake: WritableLakeArgs,
    #[command(flatten)]
    date: DateArg,
    #[command(flatten)]
    models: ModelsArg,
    #[command(flatten)]
    database: DatabaseArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
    #[command(flatten)]
    lineage: LineageEventsArgs,
    #[command(flatten)]
    engine: EngineArg,
    /// Read the source tables from a plain-SQL PostgreSQL dump instead of DATABASE_URL
    #[arg(long, value_name = "FILE")]
    from_dump: Option<PathBuf>,
}

#[derive(Args)]
struct IngestArgs {
    #[command(flatten)]
    profile: ProfileArg,
    #[command(flatten)]
    lake: WritableLakeArgs,
    #[command(flatten)]
    date: DateArg,
    #[command(flatten)]
    database: DatabaseArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
    #[command(flatten)]
    lineage: LineageEventsArgs,
    /// Read the source tables from a plain-SQL PostgreSQL dump instead of DATABASE_URL
    #[arg(long, value_name = "FILE")]
    from_dump: Option<PathBuf>,
}

/// `refine` and `aggregate`.
#[derive(Args)]
struct LayerArgs {
    #[command(flatten)]
    profile: ProfileArg,
    #[command(flatten)]
    lake: WritableLakeArgs,
    #[command(flatten)]
    date: DateArg,
    #[command(flatten)]
    models: ModelsArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
    #[command(flatten)]
    lineage: LineageEventsArgs,
    #[command(flatten)]
    engine: EngineArg,
}

#[derive(Args)]
struct ExplainArgs {
    /// The table a model builds, e.g. silver.sales_master or gold.kpi_revenue
    table: String,
    /// Show the plan without running it (EXPLAIN instead of EXPLAIN ANALYZE)
    #[arg(long)]
    plan_only: bool,
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    date: DateArg,
    #[command(flatten)]
    models: ModelsArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
    #[command(flatten)]
    engine: EngineArg,
}

/// `--profile`, for the commands that build tables.
#[derive(Args)]
struct ProfileArg {
    /// After the summary, show where each table's time went: plan, scan, join, aggregate, sort, window, checks, encode, commit, rows/s
    #[arg(long)]
    profile: bool,
}

#[derive(Args)]
struct SqlArgs {
    /// The query, e.g. "SELECT * FROM gold.kpi_top_countries ORDER BY rank"
    query: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Read the lake tables of the query as they were: a version (one table) or a time (2026-11-30T21:00:00Z)
    #[arg(long, value_name = "VERSION|TIME")]
    as_of: Option<String>,
    /// See PII columns ([pii] in medallion.toml) as this role does: reader (masked), analyst (pseudonyms, with
    /// MEDALLION_PII_KEY), admin (clear text). Admin by default: whoever runs the CLI can read the lake's files anyway
    #[arg(long, value_name = "ROLE", value_parser = parse_role, default_value = "admin")]
    role: medallion::config::Role,
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    audit: AuditArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
    #[command(flatten)]
    engine: EngineArg,
}

fn parse_role(text: &str) -> std::result::Result<medallion::config::Role, String> {
    medallion::config::Role::parse(text).ok_or_else(|| format!("'{text}' is not a role: use reader, analyst or admin"))
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    lake: WritableLakeArgs,
    #[command(flatten)]
    models: ModelsArg,
    #[command(flatten)]
    database: DatabaseArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
    #[command(flatten)]
    lineage: LineageEventsArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct ProfileArgs {
    /// Tables to profile, e.g. silver.sales_master [default: every silver and gold table]
    tables: Vec<String>,
    /// Every table of the lake, bronze included
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    date: DateArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
}

#[derive(Args)]
struct CatalogArgs {
    /// One table, e.g. gold.kpi_revenue [default: every table]
    table: Option<String>,
    /// Only the tables and columns whose name or description contains TEXT
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    models: ModelsArg,
}

#[derive(Args)]
struct LineageArgs {
    /// Also show where each column of the silver and gold tables comes from
    /// (only this table's when given, e.g. gold.kpi_revenue)
    #[arg(long)]
    columns: bool,
    /// Limit --columns to this table
    #[arg(value_name = "TABLE", requires = "columns")]
    table: Option<String>,
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    models: ModelsArg,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// How many of the latest runs to show
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

#[derive(Args)]
struct OptimizeArgs {
    /// The table, as layer.table [default: every table of the lake]
    table: Option<String>,
    /// Size each compacted file aims for, in MB
    #[arg(long, value_name = "MB", default_value_t = 128)]
    target_file_size_mb: u64,
    #[command(flatten)]
    lake: LakeArg,
}

#[derive(Args)]
struct VacuumArgs {
    /// The table, as layer.table [default: every table of the lake]
    table: Option<String>,
    /// Keep every file a version of the last RETENTION needs, e.g. 168h or 7d [default: the table's own, 7 days]
    #[arg(long, value_name = "DURATION")]
    retention: Option<String>,
    /// List what would be deleted; delete nothing
    #[arg(long)]
    dry_run: bool,
    /// Allow a retention under the table's safety minimum (time travel into it, and readers still on those versions, fail)
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    lake: LakeArg,
}

#[derive(Args)]
struct HistoryArgs {
    /// The table, as layer.table
    table: String,
    /// Show only the newest N commits
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    lake: LakeArg,
}

#[derive(Args)]
struct RestoreArgs {
    /// The table, as layer.table
    table: String,
    /// The version whose content the table gets back (see `medallion history`)
    #[arg(long, value_name = "VERSION")]
    to: u64,
    #[command(flatten)]
    lake: LakeArg,
}

#[derive(Args)]
struct StreamArgs {
    #[command(flatten)]
    lake: WritableLakeArgs,
    /// Kafka brokers, host:port[,host:port] [env: KAFKA_BOOTSTRAP_SERVERS]
    #[arg(long, value_name = "HOSTS")]
    brokers: Option<String>,
    /// Kafka topic [default: ventes-temps-reel]
    #[arg(long, value_name = "NAME")]
    topic: Option<String>,
    /// Share the topic with the other streams of this Kafka consumer group: the group splits the partitions between them and hands a stopped one's to the others (positions stay in the lake, so each event still lands once) [default: read every partition, as group medallion]
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Read only these partitions of the topic, e.g. 0,2 (splitting a topic between streams by hand)
    #[arg(long, value_name = "LIST", conflicts_with = "group")]
    partitions: Option<String>,
    /// Read JSON-lines files from this folder instead of Kafka (file:///dir or a path)
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// Consume everything up to the end positions seen at start, then stop (the default; beats an interval set in medallion.toml)
    #[arg(long, conflicts_with = "interval")]
    available_now: bool,
    /// Run continuously until Ctrl-C; a micro-batch closes one interval after its first message (e.g. 1s, 500ms) or when full
    #[arg(long, value_name = "DURATION")]
    interval: Option<String>,
    /// Most messages in one micro-batch [default: 50000]
    #[arg(long, value_name = "N")]
    max_batch: Option<String>,
    /// Events older than the newest event time minus this are late: kept and flagged, not windowed [default: 60s]
    #[arg(long, value_name = "DURATION")]
    lateness: Option<String>,
    /// Benchmark reference: read to the end offsets and discard (no decoding, no lake)
    #[arg(long, hide = true)]
    discard: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[derive(Args)]
struct ProduceArgs {
    /// Kafka brokers, host:port[,host:port] [env: KAFKA_BOOTSTRAP_SERVERS]
    #[arg(long, value_name = "HOSTS")]
    brokers: Option<String>,
    /// Kafka topic [default: ventes-temps-reel]
    #[arg(long, value_name = "NAME")]
    topic: Option<String>,
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
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[derive(Args)]
struct ServeCommandArgs {
    #[command(flatten)]
    lake: LakeArg,
    #[command(flatten)]
    encryption: EncryptAtRestArg,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    engine: EngineArg,
}

#[derive(Args)]
struct BenchServeArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// Concurrent clients per scenario
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds per scenario
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Measure the cost of roles (PII masking) and of the audit log instead: /api/sql and the PostgreSQL wire
    /// for an admin and a reader, audit off and on, each configuration served by a `medallion serve` process of its own
    #[arg(long)]
    governance: bool,
    /// With --governance: how many times each configuration is measured (the order turned each round, so four
    /// rounds put each configuration once in each place); the added p99 and the added server CPU time per
    /// request printed are medians over the rounds
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

#[derive(Args)]
struct BenchEncodeArgs {
    #[command(flatten)]
    lake: LakeArg,
    /// Tables to encode, e.g. bronze.orders silver.sales_master
    #[arg(required = true)]
    tables: Vec<String>,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    database: DatabaseArg,
    /// Size: 1 = classic Northwind (830 orders), 1000 ≈ 830k orders and 2.2M lines
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// Load this plain-SQL dump (e.g. the real northwind.sql) instead of generating data
    #[arg(long, value_name = "FILE")]
    from_dump: Option<PathBuf>,
}

// ------------------------------------------- flags → configuration layer ----

/// Copies the flags given into the configuration's top layer.
trait ApplyFlags {
    fn apply(&self, overrides: &mut Overrides);
}

impl ApplyFlags for LakeArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.lake = self.lake.clone();
    }
}

impl ApplyFlags for WritableLakeArgs {
    fn apply(&self, overrides: &mut Overrides) {
        self.lake.apply(overrides);
        overrides.create_buckets = self.create_buckets.then_some(true);
    }
}

impl ApplyFlags for DateArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.date = self.date.clone();
    }
}

impl ApplyFlags for ModelsArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.models_dir = self.models.clone();
        overrides.memory_limit_mb = self.memory_limit_mb.clone();
    }
}

impl ApplyFlags for EngineArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.engine = self.engine.clone();
    }
}

impl ApplyFlags for EncryptAtRestArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.encrypt_at_rest = self.encrypt_at_rest.then_some(true);
    }
}

impl ApplyFlags for LineageEventsArgs {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.lineage.url = self.lineage_url.clone();
        overrides.lineage.file = self.lineage_file.clone();
    }
}

impl ApplyFlags for DatabaseArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.database_url = self.database_url.clone();
    }
}

impl ApplyFlags for ServeArgs {
    fn apply(&self, overrides: &mut Overrides) {
        let serve = &mut overrides.serve;
        serve.addr = self.addr.clone();
        serve.pg_addr = self.pg_addr.clone();
        serve.pg = self.no_pg.then_some(false);
        serve.sql_row_limit = self.sql_row_limit.clone();
        serve.sql_timeout = self.sql_timeout.clone();
        serve.pg_statement_timeout = self.pg_statement_timeout.clone();
        serve.max_concurrent_queries = self.max_concurrent_queries.clone();
        self.audit.apply(overrides);
        overrides.audit_flush_interval = self.audit_flush_interval.clone();
    }
}

impl ApplyFlags for AuditArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.audit = self.no_audit.then_some(false);
    }
}

impl ApplyFlags for KafkaArgs {
    fn apply(&self, overrides: &mut Overrides) {
        let kafka = &mut overrides.kafka;
        kafka.security_protocol = self.security_protocol.clone();
        kafka.sasl_mechanism = self.sasl_mechanism.clone();
        kafka.sasl_username = self.sasl_username.clone();
        kafka.ssl_ca_location = self.ssl_ca_location.clone();
    }
}

impl ApplyFlags for StreamArgs {
    fn apply(&self, overrides: &mut Overrides) {
        self.lake.apply(overrides);
        self.kafka.apply(overrides);
        let stream = &mut overrides.stream;
        stream.brokers = self.brokers.clone();
        stream.topic = self.topic.clone();
        stream.group = self.group.clone();
        stream.partitions = self.partitions.clone();
        stream.source = self.source.clone();
        stream.interval = self.interval.clone();
        stream.available_now = self.available_now;
        stream.max_batch = self.max_batch.clone();
        stream.lateness = self.lateness.clone();
    }
}

impl ApplyFlags for ProduceArgs {
    fn apply(&self, overrides: &mut Overrides) {
        self.kafka.apply(overrides);
        overrides.stream.brokers = self.brokers.clone();
        overrides.stream.topic = self.topic.clone();
    }
}

impl Command {
    /// Commands whose output is made to be read through a pipe (`medallion
    /// status | head`): when the reader closes it early they end quietly,
    /// as `ls` or `grep` do, instead of panicking on the failed write.
    fn prints_for_a_pipe(&self) -> bool {
        matches!(
            self,
            Command::Sql(_)
                | Command::Status(_)
                | Command::History(_)
                | Command::Catalog(_)
                | Command::Lineage(_)
                | Command::Profile(_)
                | Command::Explain(_)
        )
    }

    /// The configuration's top layer: the flags this command was given.
    fn overrides(&self, config_file: Option<PathBuf>) -> Overrides {
        let groups: Vec<&dyn ApplyFlags> = match self {
            Command::Demo(a) => vec![&a.lake, &a.date, &a.models, &a.encryption, &a.lineage, &a.serve],
            Command::Run(a) => vec![&a.lake, &a.date, &a.models, &a.database, &a.encryption, &a.lineage, &a.engine],
            Command::Ingest(a) => vec![&a.lake, &a.date, &a.database, &a.encryption, &a.lineage],
            Command::Refine(a) | Command::Aggregate(a) => {
                vec![&a.lake, &a.date, &a.models, &a.encryption, &a.lineage, &a.engine]
            }
            Command::Sql(a) => vec![&a.lake, &a.audit, &a.encryption, &a.engine],
            Command::Explain(a) => vec![&a.lake, &a.date, &a.models, &a.encryption, &a.engine],
            Command::Up(a) => vec![&a.lake, &a.models, &a.database, &a.encryption, &a.lineage, &a.serve],
            Command::Status(a) => vec![&a.lake],
            Command::Profile(a) => vec![&a.lake, &a.date, &a.encryption],
            Command::Catalog(a) => vec![&a.lake, &a.models],
            Command::Lineage(a) => vec![&a.lake, &a.models],
            Command::Optimize(a) => vec![&a.lake],
            Command::Vacuum(a) => vec![&a.lake],
            Command::History(a) => vec![&a.lake],
            Command::Restore(a) => vec![&a.lake],
            Command::Stream(a) => vec![a],
            Command::Produce(a) => vec![a],
            Command::Serve(a) => vec![&a.lake, &a.encryption, &a.serve, &a.engine],
            Command::BenchServe(a) => vec![&a.lake],
            Command::BenchEncode(a) => vec![&a.lake],
            Command::Source { command: SourceCommand::Load(a) } => vec![&a.database],
            Command::Token { .. } | Command::Cluster { .. } => vec![],
        };
        let mut overrides = Overrides { config_file, ..Default::default() };
        if let Command::Cluster { command } = self {
            overrides.memory_limit_mb = cluster::memory_limit_flag(command);
        }
        for group in groups {
            group.apply(&mut overrides);
        }
        overrides
    }
}

// ----------------------------------------------------------------- main ----

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.prints_for_a_pipe() {
        end_quietly_when_the_pipe_closes();
    }
    init_logging(cli.quiet);
    quiet_worker_panics();
    let config = match Config::load(cli.command.overrides(cli.config.clone())) {
        Ok(config) => config,
        Err(err) => return fail(&err.into(), &Secrets::default()),
    };
    let secrets = config.secrets();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err.into(), &secrets),
    };
    let progress = if cli.quiet { Progress::hidden() } else { Progress::stderr() };
    match runtime.block_on(execute(cli.command, config, progress)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err, &secrets),
    }
}

/// Restores the default action of SIGPIPE, which Rust's runtime ignores so
/// that writes to a closed socket fail with an error instead: a write to a
/// closed stdout then ends the process at once, silently, as it ends other
/// Unix tools. Only for the commands that print and end (their sockets —
/// PostgreSQL, S3, a cluster — write with MSG_NOSIGNAL and are unaffected);
/// servers keep ignoring it.
fn end_quietly_when_the_pipe_closes() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default takes no pointer
    // and runs before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Prints one line, with every secret replaced, and exits non-zero.
fn fail(err: &anyhow::Error, secrets: &Secrets) -> ExitCode {
    let message = secrets.scrub(&format!("{err:#}"));
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
        Command::Demo(args) => {
            let lake = Lake::new(&config)?;
            println!("medallion demo: built-in Northwind → {} (snapshot {})", lake.location().describe(), config.date);
            let report = demo::run(&config, &lake, &progress).await?;
            print_demo(&report)?;
            if args.no_serve {
                return Ok(());
            }
            println!();
            serve::run(&config, lake, LiveHandle::new(), config.serve_options()).await?;
        }
        Command::Serve(_) => {
            let lake = Lake::new(&config)?;
            println!("medallion serve: {}", lake.location().describe());
            // `serve` alone takes the engine: the servers of demo and up stay local.
            let options = serve::ServeOptions { engine: config.engine.clone(), ..config.serve_options() };
            serve::run(&config, lake, LiveHandle::new(), options).await?;
        }
        Command::BenchServe(args) if args.governance => {
            println!(
                "governance bench: {} concurrent clients, {} s per scenario, {} rounds, each server in a process of its own\nquery: {}",
                args.clients,
                args.seconds,
                args.rounds,
                devtools::GOVERNANCE_QUERY
            );
            let bench = devtools::bench_governance(&config, args.clients, args.seconds, args.rounds).await?;
            let cpu = |us: Option<f64>| us.map_or_else(|| "server CPU unknown".to_string(), |us| format!("server CPU {us:.0} µs/request"));
            for run in &bench.runs {
                println!(
                    "round {}: {}\n  {}   {}\n  {}   {}",
                    run.round + 1,
                    run.governance,
                    run.http,
                    cpu(run.http_cpu_us),
                    run.pg,
                    cpu(run.pg_cpu_us)
                );
            }
            println!("added p99 against admin, audit off of the same round (median over the rounds):");
            for governance in devtools::GOVERNANCE.into_iter().skip(1) {
                if let Some((http, pg)) = bench.added_p99(governance) {
                    println!("  {:<22} /api/sql {http:+6.1} %   PostgreSQL wire {pg:+6.1} %", governance.to_string());
                }
            }
            println!("added server CPU per request against admin, audit off of the same round (median over the rounds):");
            for governance in devtools::GOVERNANCE.into_iter().skip(1) {
                if let Some((http, pg)) = bench.added_cpu(governance) {
                    println!("  {:<22} /api/sql {http:+6.1} %   PostgreSQL wire {pg:+6.1} %", governance.to_string());
                }
            }
        }
        Command::BenchServe(args) => {
            println!(
                "serving bench: {} concurrent clients, {} s per scenario, server and clients in one process",
                args.clients, args.seconds
            );
            let bench = devtools::bench_serve(&config, args.clients, args.seconds).await?;
            for run in &bench.runs {
                println!("{run}");
            }
            println!("p99 /api/kpis = {:.1}x the /health p99", bench.kpis_p99_ratio());
        }
        Command::BenchEncode(args) => {
            let lake = Lake::new(&config)?;
            let tables = args
                .tables
                .iter()
                .map(|table| {
                    let (layer, name) = medallion::lake::upkeep::split_table_name(table)?;
                    Ok(medallion::lake::TableName::owned(layer.parse()?, name))
                })
                .collect::<Result<Vec<_>>>()?;
            println!("Parquet encoding of each table's rows into memory, one core, best of three");
            println!("{:<24} {:<32} {:>10} {:>8} {:>8}", "table", "setting", "rows", "s", "MB");
            for figure in devtools::bench_encode(&lake, &tables).await? {
                println!(
                    "{:<24} {:<32} {:>10} {:>8.3} {:>8.1}",
                    figure.table,
                    figure.setting,
                    figure.rows,
                    figure.seconds,
                    figure.bytes as f64 / 1e6
                );
            }
        }
        Command::Run(args) => {
            let lake = Lake::new(&config)?;
            let source = batch_source(&config, args.from_dump.as_deref())?;
            println!("medallion run for {} → {}", config.date, lake.location().describe());
            let started = Instant::now();
            let reports = pipeline::run(&config, &lake, &source, &progress).await?;
            print_summary(&reports, started.elapsed(), args.profile.profile);
        }
        Command::Ingest(args) => {
            let lake = Lake::new(&config)?;
            let source = batch_source(&config, args.from_dump.as_deref())?;
            let started = Instant::now();
            let report = pipeline::ingest(&config, &lake, &source, &progress).await?;
            print_summary(&[report], started.elapsed(), args.profile.profile);
        }
        Command::Refine(ref args) | Command::Aggregate(ref args) => {
            let layer = if matches!(command, Command::Refine(_)) { "silver" } else { "gold" };
            let lake = Lake::new(&config)?;
            let models = models::ModelSet::load(config.models_dir.as_deref())?;
            let started = Instant::now();
            let report = pipeline::run_models(&config, &lake, &models, layer, &progress).await?;
            print_summary(&[report], started.elapsed(), args.profile.profile);
        }
        Command::Explain(args) => {
            let lake = Lake::new(&config)?;
            let models = models::ModelSet::load(config.models_dir.as_deref())?;
            print!("{}", pipeline::explain(&config, &lake, &models, &args.table, !args.plan_only).await?);
        }
        Command::Sql(args) => {
            let lake = Lake::new(&config)?;
            let query = audit::Query::timed(&audit::cli_identity(args.role), audit::Endpoint::Cli, &args.query);
            let result = sql(&config, &lake, &args).await;
            if config.audit.enabled {
                let record = match &result {
                    Ok(rows) => query.record(audit::Outcome::Ok, Some(*rows as u64), None),
                    Err((outcome, err)) => query.record(*outcome, None, Some(format!("{err:#}"))),
                };
                let secrets = config.secrets();
                let written = audit::append(&lake, &secrets, record.into_iter().collect()).await;
                // A query that failed has said why in its one line (often the lake itself): the log's failure is secondary.
                if let Err(err) = written {
                    let line = secrets.scrub(&err.to_string());
                    if result.is_ok() {
                        tracing::warn!("the query's audit record was not written: {line}");
                    } else {
                        tracing::debug!("the query's audit record was not written: {line}");
                    }
                }
            }
            result.map_err(|(_, err)| err)?;
        }
        Command::Stream(args) if args.discard => {
            jobs::keep_freed_memory_for_reuse();
            let source = jobs::stream_source(&config)?;
            let raw = devtools::raw_consume(source, config.stream.max_batch).await?;
            println!(
                "raw consume: {} messages, {:.1} MB in {:.2} s — {:.0} messages/s",
                raw.messages,
                raw.bytes as f64 / 1e6,
                raw.elapsed.as_secs_f64(),
                raw.messages_per_second()
            );
        }
        Command::Stream(_) => {
            jobs::keep_freed_memory_for_reuse();
            let lake = Lake::new(&config)?;
            let stop = jobs::stop_on_ctrl_c();
            let Some(source) = jobs::wait_for_source(&config, &stop).await? else { return Ok(()) };
            println!("medallion stream {} → {}", source.describe(), lake.location().describe());
            let report = jobs::stream(&config, &lake, source, &LiveHandle::new(), &progress, stop).await?;
            print_stream_summary(&report);
        }
        Command::Produce(args) => produce_events(&config, &args, &progress).await?,
        Command::Up(_) => up(&config).await?,
        Command::Status(args) => lake_commands::status(&config, args.runs).await?,
        Command::Profile(args) => governance::profile(&config, &args.tables, args.all).await?,
        Command::Lineage(args) => governance::lineage(&config, args.columns, args.table.as_deref()).await?,
        Command::Catalog(args) => governance::catalog(&config, args.table.as_deref(), args.search.as_deref()).await?,
        Command::Optimize(args) => lake_commands::optimize(&config, args.table.as_deref(), args.target_file_size_mb).await?,
        Command::Vacuum(args) => {
            let retention = args.retention.as_deref().map(medallion::config::parse_duration).transpose()?;
            let options = VacuumOptions { retention, force: args.force, dry_run: args.dry_run };
            lake_commands::vacuum(&config, args.table.as_deref(), &options).await?
        }
        Command::History(args) => lake_commands::history(&config, &args.table, args.limit).await?,
        Command::Restore(args) => lake_commands::restore(&config, &args.table, args.to).await?,
        Command::Source { command: SourceCommand::Load(args) } => load_source(&config, &args, &progress).await?,
        Command::Token { command } => token::run(&command)?,
        Command::Cluster { command } => cluster::run(&config, &command).await?,
    }
    Ok(())
}

/// `medallion sql`: runs the query in a session of `--role` and prints the
/// result; returns the rows printed, or how the query failed (for the audit log).
async fn sql(config: &Config, lake: &Lake, args: &SqlArgs) -> std::result::Result<usize, (audit::Outcome, anyhow::Error)> {
    let failed = |err: anyhow::Error| (audit::Outcome::Error, err);
    let ctx = medallion::lake::session::SessionBuilder::full(lake, config)
        .for_role(args.role, &config.pii)
        .on(&config.engine)
        .build()
        .await
        .map_err(|e| failed(e.into()))?
        .ctx;
    if let Some(line) = audit::refusal_of_sql(args.role, &ctx.state(), &args.query) {
        return Err((audit::Outcome::Refused, anyhow::anyhow!(line)));
    }
    if let Some(as_of) = &args.as_of {
        let as_of = history::AsOf::parse(as_of).map_err(|e| failed(e.into()))?;
        for (table, version) in history::point_query_as_of(&ctx, lake, &args.query, as_of).await.map_err(|e| failed(e.into()))? {
            eprintln!("{table} as of {as_of}: version {version}");
        }
    }
    let frame = ctx.sql(&args.query).await.map_err(|e| failed(medallion::Error::from(e).into()))?;
    let batches = frame.collect().await.map_err(|e| failed(medallion::Error::from(e).into()))?;
    print!("{}", output::render(&batches, args.format).map_err(|e| failed(e.into()))?);
    if args.format == Format::Table {
        println!();
    }
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

/// `medallion up`: every part until Ctrl-C or SIGTERM, then a summary.
async fn up(config: &Config) -> Result<()> {
    jobs::keep_freed_memory_for_reuse();
    let lake = Lake::new(config)?;
    println!("medallion up: {}", lake.location().describe());
    let report = medallion::up::service::run(config, lake, jobs::stop_signal(), |started| {
        for part in &started.parts {
            println!("  {part}");
        }
        if let Some(http) = started.http {
            println!("dashboard   {}://{http}/  (status: /api/status, freshness: /api/freshness)", config.tls.scheme());
        }
        if let Some(pg) = started.pg {
            println!("PostgreSQL  psql -h {} -p {} -U medallion -d lake{}", pg.ip(), pg.port(), config.tls.pg_note());
        }
        println!("Ctrl-C or SIGTERM stops every part gracefully.");
    })
    .await?;
    println!("\nmedallion up ran {:.0?}", report.duration);
    for (part, status) in &report.parts {
        let error = status.last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default();
        println!("  {part:<24} {} restart(s){error}", status.restarts);
    }
    for (name, schedule) in &report.schedules {
        let last = match (schedule.last_run, schedule.last_ok) {
            (Some(at), Some(true)) => format!("last run for {at} ok"),
            (Some(at), _) => format!("last run for {at} failed"),
            _ => "no run".to_string(),
        };
        println!("  schedule {name:<15} {last}, {} skipped", schedule.skipped);
    }
    if !report.abandoned.is_empty() {
        anyhow::bail!(
            "{} did not stop within the grace period ({:?}) and were abandoned; every table is at its last commit",
            report.abandoned.join(", "),
            config.up.grace
        );
    }
    Ok(())
}

/// `medallion produce`: events to a folder, or to Kafka with a progress bar.
async fn produce_events(config: &Config, args: &ProduceArgs, progress: &Progress) -> Result<()> {
    let options = ProduceOptions { count: args.count, rate: args.rate, bad_ratio: args.bad_ratio.clamp(0.0, 1.0), seed: args.seed };
    let summary = match &args.to_dir {
        Some(dir) => produce::to_dir(dir, &options)?,
        None => {
            let brokers = config.stream.brokers.as_deref().context(
                "no Kafka brokers: set KAFKA_BOOTSTRAP_SERVERS or --brokers (or brokers under [stream] in medallion.toml), \
                 or write files with --to-dir",
            )?;
            let bar = progress.bar("producing", args.count, "events");
            let connection = medallion::kafka::Connection::new(&config.kafka, brokers);
            let summary = produce::to_kafka(&connection, &config.stream.topic, &options, &bar).await?;
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

/// `medallion source load`: a dump, or generated Northwind, into DATABASE_URL.
async fn load_source(config: &Config, args: &LoadArgs, progress: &Progress) -> Result<()> {
    let url = config
        .database_url
        .as_deref()
        .context("no database to load into: set DATABASE_URL or --database-url")?;
    let target = medallion::config::describe_database(url);
    let mut client = postgres::connect(url).await?;
    let started = Instant::now();
    match &args.from_dump {
        Some(path) => {
            let sql = std::fs::read_to_string(path).with_context(|| format!("cannot read dump {}", path.display()))?;
            let spinner = progress.spinner("loading dump");
            generator::load_dump(&mut client, &target, &sql).await?;
            spinner.finish_and_clear();
            println!("loaded {} into {target} in {:.1?}", path.display(), started.elapsed());
        }
        None => {
            let bar = progress.bar("generating Northwind", 0, "orders");
            let summary = generator::load(&mut client, &target, args.scale, &bar).await?;
            bar.finish_and_clear();
            println!("loaded Northwind at scale {} into {target} in {:.1?}", args.scale, started.elapsed());
            for (table, rows) in summary.tables {
                println!("  {table:<14} {rows:>10} rows");
            }
        }
    }
    Ok(())
}

fn batch_source(config: &Config, from_dump: Option<&std::path::Path>) -> Result<BatchSource> {
    Ok(match from_dump {
        Some(path) => BatchSource::Dump(Dump::from_file(path)?),
        None => BatchSource::from_config(config)?,
    })
}

// ------------------------------------------------------------- printing ----

/// The demo's findings: the batch summary, the KPIs, the stream, live sales.
fn print_demo(report: &DemoReport) -> Result<()> {
    print_summary(&report.stages, report.batch_duration, false);
    for section in &report.kpis {
        println!("\n{}\n{}", section.title, output::render(&section.batches, Format::Table)?);
    }
    print_stream_summary(&report.stream);
    println!("\n{}\n{}", report.live.title, output::render(&report.live.batches, Format::Table)?);
    println!("\nNext: medallion sql \"SELECT * FROM gold.rfm_customers LIMIT 10\"");
    Ok(())
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

/// The end-of-command summary: rows per table, quarantine per rule, time per stage.
fn print_summary(reports: &[StageReport], total: Duration, profile: bool) {
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
    println!("total      {:>8.2?}", total);
    if profile {
        println!("\nprofile (operator times are summed over cores; see `medallion explain TABLE` for one model's plan)");
        for report in reports {
            for (table, line) in &report.profiles {
                println!("  {table:<36} {line}");
            }
        }
    }
}
