//! One typed `Config` for every command: flags > environment > `medallion.toml` > defaults.
//!
//! Every setting is looked up in the same order: its command-line flag, then
//! its environment variable, then its key in `medallion.toml` (the one in the
//! working directory, or `--config FILE` / `MEDALLION_CONFIG`), then the
//! built-in default. The text found is parsed here whichever layer it came
//! from, so a bad value fails the same way everywhere: one line naming the
//! flag, variable or file key and the form expected. The environment is
//! passed in (`Config::load_with`), so tests need not change the process's.
//!
//! The library's option types are built from it (`Config::stream_options`,
//! `Config::serve_options`), and it knows its secrets (database password,
//! AWS secret key, serving token, Kafka passwords): `Secrets::scrub` removes
//! them from any message before it is printed or stored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::serve::ServeOptions;

mod audit;
mod auth;
mod kafka;
mod pii;
mod lineage;
mod profile;
mod tls;
mod up;
pub use audit::AuditConfig;
pub use auth::{AuthConfig, Identity, Role, Tokens};
pub use kafka::{KafkaConfig, KafkaFlags, KafkaTls, SaslCredentials, SaslMechanism, SecurityProtocol};
pub use pii::{PiiConfig, DEFAULT_PII_COLUMNS};
pub use lineage::{LineageConfig, LineageFlags};
pub use profile::ProfileConfig;
pub use tls::{TlsConfig, TlsIdentity};
pub use up::{MaintenanceConfig, UpConfig};
/// Making tokens (`medallion token create`).
pub mod tokens {
    pub use super::auth::{new_token, token_entry, token_hash, TOKEN_PREFIX};
}
use crate::stream::kafka::Membership;
use crate::stream::{StreamOptions, Trigger};

/// Reads one environment variable (`None` when unset).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment, for `Config::load`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The values given on the command line, as typed: `Config::load` parses
/// them. `None` (or `false`) means "not given": the environment, the config
/// file or the default applies.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub lake: Option<String>,
    pub database_url: Option<String>,
    pub date: Option<String>,
    pub models_dir: Option<PathBuf>,
    /// `--memory-limit-mb`
    pub memory_limit_mb: Option<String>,
    /// `--engine`: `local` or `ballista://host:port`.
    pub engine: Option<String>,
    /// `--create-buckets`: create missing S3 buckets.
    pub create_buckets: Option<bool>,
    /// `--no-audit` gives `Some(false)`: no query is logged to `audit.queries`.
    pub audit: Option<bool>,
    /// `--audit-flush-interval`: how often the audit log's writer appends.
    pub audit_flush_interval: Option<String>,
    /// `--encrypt-at-rest` gives `Some(true)`: PII columns are stored encrypted.
    pub encrypt_at_rest: Option<bool>,
    /// `--lineage-url` and `--lineage-file` of the batch commands.
    pub lineage: LineageFlags,
    pub stream: StreamFlags,
    /// The Kafka security flags of `stream` and `produce`.
    pub kafka: KafkaFlags,
    pub serve: ServeFlags,
}

/// The flags of `medallion stream` (`produce` gives `brokers` and `topic`).
#[derive(Debug, Default, Clone)]
pub struct StreamFlags {
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub partitions: Option<String>,
    pub source: Option<String>,
    pub interval: Option<String>,
    /// `--available-now`: consume what is there and stop, even when the
    /// environment or the file sets an `interval`.
    pub available_now: bool,
    pub max_batch: Option<String>,
    pub lateness: Option<String>,
}

/// The flags of `medallion serve` (and of `demo`, which serves at the end).
#[derive(Debug, Default, Clone)]
pub struct ServeFlags {
    pub addr: Option<String>,
    pub pg_addr: Option<String>,
    /// `--no-pg` gives `Some(false)`.
    pub pg: Option<bool>,
    pub sql_row_limit: Option<String>,
    pub sql_timeout: Option<String>,
    pub pg_statement_timeout: Option<String>,
    pub max_concurrent_queries: Option<String>,
}

// ------------------------------------------------------------ settings ----

/// Where one setting can be given: its key in medallion.toml (`section.key`
/// inside a section), its flag and its environment variables, in the order
/// they are looked up.
struct Setting {
    key: &'static str,
    flag: Option<&'static str>,
    env: &'static [&'static str],
}

const LAKE: Setting = Setting { key: "lake", flag: Some("--lake"), env: &["MEDALLION_LAKE"] };
const DATABASE_URL: Setting = Setting { key: "database_url", flag: Some("--database-url"), env: &["DATABASE_URL"] };
const DATE: Setting = Setting { key: "date", flag: Some("--date"), env: &[] };
const MODELS_DIR: Setting = Setting { key: "models_dir", flag: Some("--models"), env: &["MEDALLION_MODELS"] };
const TOKEN: Setting = Setting { key: "token", flag: None, env: &["MEDALLION_TOKEN"] };
/// Default of `memory_limit_mb`: a whole run at scale 10000 (21.6 M order
/// lines) then peaks at 1.8 GiB (BENCHMARKS.md).
const DEFAULT_MEMORY_LIMIT_MB: usize = 1536;
const MEMORY_LIMIT: Setting =
    Setting { key: "memory_limit_mb", flag: Some("--memory-limit-mb"), env: &["MEDALLION_MEMORY_LIMIT_MB"] };
const ENGINE: Setting = Setting { key: "engine", flag: Some("--engine"), env: &["MEDALLION_ENGINE"] };
const ALERTS_WEBHOOK: Setting = Setting { key: "alerts.webhook", flag: None, env: &["MEDALLION_ALERT_WEBHOOK"] };

const S3_ENDPOINT: Setting = Setting { key: "s3.endpoint", flag: None, env: &["AWS_ENDPOINT_URL"] };
const S3_REGION: Setting = Setting { key: "s3.region", flag: None, env: &["AWS_REGION", "AWS_DEFAULT_REGION"] };
const S3_ACCESS_KEY_ID: Setting = Setting { key: "s3.access_key_id", flag: None, env: &["AWS_ACCESS_KEY_ID"] };
const S3_SECRET_ACCESS_KEY: Setting =
    Setting { key: "s3.secret_access_key", flag: None, env: &["AWS_SECRET_ACCESS_KEY"] };
const S3_ALLOW_HTTP: Setting = Setting { key: "s3.allow_http", flag: None, env: &["AWS_ALLOW_HTTP"] };
const S3_VIRTUAL_HOSTED_STYLE: Setting =
    Setting { key: "s3.virtual_hosted_style", flag: None, env: &["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] };
const S3_CREATE_BUCKETS: Setting =
    Setting { key: "s3.create_buckets", flag: Some("--create-buckets"), env: &["MEDALLION_CREATE_BUCKETS"] };

const STREAM_BROKERS: Setting =
    Setting { key: "stream.brokers", flag: Some("--brokers"), env: &["KAFKA_BOOTSTRAP_SERVERS"] };
const STREAM_TOPIC: Setting = Setting { key: "stream.topic", flag: Some("--topic"), env: &[] };
const STREAM_GROUP: Setting = Setting { key: "stream.group", flag: Some("--group"), env: &[] };
const STREAM_PARTITIONS: Setting = Setting { key: "stream.partitions", flag: Some("--partitions"), env: &[] };
const STREAM_SOURCE: Setting = Setting { key: "stream.source", flag: Some("--source"), env: &[] };
const STREAM_INTERVAL: Setting = Setting { key: "stream.interval", flag: Some("--interval"), env: &[] };
const STREAM_MAX_BATCH: Setting = Setting { key: "stream.max_batch", flag: Some("--max-batch"), env: &[] };
const STREAM_LATENESS: Setting = Setting { key: "stream.lateness", flag: Some("--lateness"), env: &[] };

const SERVE_ADDR: Setting = Setting { key: "serve.addr", flag: Some("--addr"), env: &["MEDALLION_ADDR"] };
const SERVE_PG_ADDR: Setting = Setting { key: "serve.pg_addr", flag: Some("--pg-addr"), env: &["MEDALLION_PG_ADDR"] };
const SERVE_PG: Setting = Setting { key: "serve.pg", flag: Some("--no-pg"), env: &[] };
const SERVE_SQL_ROW_LIMIT: Setting = Setting { key: "serve.sql_row_limit", flag: Some("--sql-row-limit"), env: &[] };
const SERVE_SQL_TIMEOUT: Setting = Setting { key: "serve.sql_timeout", flag: Some("--sql-timeout"), env: &[] };
const SERVE_PG_STATEMENT_TIMEOUT: Setting =
    Setting { key: "serve.pg_statement_timeout", flag: Some("--pg-statement-timeout"), env: &["MEDALLION_PG_STATEMENT_TIMEOUT"] };
const SERVE_MAX_CONCURRENT_QUERIES: Setting =
    Setting { key: "serve.max_concurrent_queries", flag: Some("--max-concurrent-queries"), env: &["MEDALLION_MAX_CONCURRENT_QUERIES"] };

/// The Kafka topic of sales events unless configured.
pub const DEFAULT_TOPIC: &str = "ventes-temps-reel";
/// The Kafka consumer group unless configured.
pub const DEFAULT_GROUP: &str = "medallion";

/// A setting's value as found, and where, for error messages.
struct Given {
    text: String,
    origin: String,
}

/// The layers a setting is looked up in below its flag: the environment
/// and the config file.
struct Sources<'a> {
    env: Env<'a>,
    /// How messages name the config file.
    file_name: String,
}

impl Sources<'_> {
    /// An environment variable; empty counts as unset.
    fn env_value(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|value| !value.trim().is_empty())
    }

    /// The first value given for `setting`: its flag, its environment
    /// variables in order, its key in the file. Empty values count as unset.
    fn find(&self, setting: &Setting, flag: Option<String>, file: Option<String>) -> Option<Given> {
        let given = |text: String, origin: String| (!text.trim().is_empty()).then_some(Given { text, origin });
        if let Some(found) = flag.and_then(|text| given(text, setting.flag.unwrap_or(setting.key).to_string())) {
            return Some(found);
        }
        for name in setting.env {
            if let Some(text) = self.env_value(name) {
                return Some(Given { text, origin: name.to_string() });
            }
        }
        file.and_then(|text| given(text, format!("{} in {}", setting.key, self.file_name)))
    }

    /// The text of a setting, as given.
    fn text(&self, setting: &Setting, flag: Option<String>, file: Option<String>) -> Option<String> {
        self.find(setting, flag, file).map(|given| given.text)
    }

    /// The value of a setting read with `form`; a bad value is an error
    /// naming where it was given.
    fn parsed<T>(&self, setting: &Setting, flag: Option<String>, file: Option<String>, form: Form<T>) -> Result<Option<T>> {
        self.find(setting, flag, file).map(|given| form.read(&given)).transpose()
    }
}

/// How a setting's text is read: a parser, and the form it expects (for
/// the error message).
struct Form<T> {
    parse: fn(&str) -> Option<T>,
    expected: &'static str,
}

impl<T> Form<T> {
    fn read(&self, given: &Given) -> Result<T> {
        (self.parse)(given.text.trim()).ok_or_else(|| {
            Error::Config(format!("invalid value '{}' for {}: expected {}", given.text, given.origin, self.expected))
        })
    }
}

const DURATION_FORM: &str = "a duration such as 500ms, 1s, 2m, 26h or 7d";

const DURATION: Form<Duration> = Form { parse: duration, expected: DURATION_FORM };
const POSITIVE_DURATION: Form<Duration> =
    Form { parse: positive_duration, expected: "a duration above zero such as 500ms, 30s or 2m" };
const ADDRESS: Form<SocketAddr> =
    Form { parse: address, expected: "ip:port such as 127.0.0.1:8080 (0.0.0.0:8080 listens on every interface)" };
const COUNT: Form<usize> = Form { parse: count, expected: "a whole number of at least 1" };
const BOOLEAN: Form<bool> = Form { parse: boolean, expected: "true or false" };
const DATE_FORM: Form<NaiveDate> = Form { parse: date, expected: "a date YYYY-MM-DD such as 2026-11-25" };
const FOLDER: Form<PathBuf> = Form { parse: folder, expected: "a folder, as file:///dir or a path" };
const ENGINE_FORM: Form<Engine> =
    Form { parse: Engine::parse, expected: "local, or ballista://HOST:PORT (the address of `medallion cluster scheduler`)" };
const PARTITION_LIST: Form<Vec<i32>> =
    Form { parse: partition_list, expected: "Kafka partition numbers separated by commas, such as 0,2" };

/// The longest duration accepted: 100 years.
const MAX_DURATION_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;

/// `0,2,5`: distinct partition numbers, in the order given.
fn partition_list(text: &str) -> Option<Vec<i32>> {
    let mut partitions: Vec<i32> = Vec::new();
    for part in text.split(',') {
        let partition = part.trim().parse::<i32>().ok().filter(|p| *p >= 0)?;
        if !partitions.contains(&partition) {
            partitions.push(partition);
        }
    }
    Some(partitions)
}

/// `500ms`, `1.5s`, `2m`, `26h`, `7d`; a bare number is seconds.
fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return None,
    };
    (seconds <= MAX_DURATION_SECONDS).then(|| Duration::from_secs_f64(seconds))
}

fn positive_duration(text: &str) -> Option<Duration> {
    duration(text).filter(|d| !d.is_zero())
}

fn address(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}

fn count(text: &str) -> Option<usize> {
    text.parse().ok().filter(|n| *n > 0)
}

fn boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

fn folder(text: &str) -> Option<PathBuf> {
    Some(PathBuf::from(text.strip_prefix("file://").unwrap_or(text)))
}

/// Parses a duration: `500ms`, `1.5s`, `2m`, `26h`, `7d` (a bare number is
/// seconds; at most 100 years).
pub fn parse_duration(text: &str) -> Result<Duration> {
    duration(text.trim()).ok_or_else(|| Error::Config(format!("'{text}' is not a duration: expected {DURATION_FORM}")))
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate> {
    date(text.trim())
        .ok_or_else(|| Error::Config(format!("invalid date '{text}': use the form YYYY-MM-DD, e.g. 2026-11-25")))
}

// ---------------------------------------------------------------- file ----

/// The `medallion.toml` file. Every field is optional; unknown keys are an
/// error (a misspelt key would otherwise be silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    lake: Option<String>,
    database_url: Option<String>,
    models_dir: Option<String>,
    extract_parallelism: Option<usize>,
    memory_limit_mb: Option<FileValue>,
    engine: Option<String>,
    token: Option<String>,
    #[serde(default)]
    auth: auth::AuthFile,
    #[serde(default)]
    pii: pii::PiiFile,
    #[serde(default)]
    lineage: lineage::LineageFile,
    #[serde(default)]
    countries: CountryConfig,
    #[serde(default)]
    s3: S3File,
    #[serde(default)]
    stream: StreamFile,
    #[serde(default)]
    kafka: kafka::KafkaFile,
    #[serde(default)]
    serve: ServeFile,
    #[serde(default)]
    up: up::UpFile,
    #[serde(default)]
    alerts: up::AlertsFile,
    #[serde(default)]
    freshness: BTreeMap<String, up::FreshnessFile>,
    #[serde(default)]
    maintenance: up::MaintenanceFile,
    #[serde(default)]
    profile: profile::ProfileFile,
    #[serde(default)]
    tls: tls::TlsFile,
    #[serde(default)]
    audit: audit::AuditFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3File {
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    allow_http: Option<bool>,
    virtual_hosted_style: Option<bool>,
    create_buckets: Option<bool>,
    #[serde(default)]
    buckets: BTreeMap<String, String>,
}

/// `[stream]`: the options of `medallion stream`, named as its flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamFile {
    brokers: Option<FileValue>,
    topic: Option<FileValue>,
    group: Option<FileValue>,
    partitions: Option<FileValue>,
    source: Option<FileValue>,
    interval: Option<FileValue>,
    max_batch: Option<FileValue>,
    lateness: Option<FileValue>,
}

/// `[serve]`: the options of `medallion serve`, named as its flags (`pg =
/// false` is `--no-pg`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    addr: Option<FileValue>,
    pg_addr: Option<FileValue>,
    pg: Option<FileValue>,
    sql_row_limit: Option<FileValue>,
    sql_timeout: Option<FileValue>,
    pg_statement_timeout: Option<FileValue>,
    max_concurrent_queries: Option<FileValue>,
}

/// A value of the file read as text whatever its TOML type (`max_batch =
/// 500` or `"500"`), so that one parser reads it as it reads a flag.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl FileValue {
    fn text(self) -> String {
        match self {
            FileValue::Text(text) => text,
            FileValue::Integer(n) => n.to_string(),
            FileValue::Float(x) => x.to_string(),
            FileValue::Boolean(b) => b.to_string(),
        }
    }
}

/// The text of an optional file value.
fn text(value: Option<FileValue>) -> Option<String> {
    value.map(FileValue::text)
}

/// The text of an optional boolean (a flag, or a typed key of the file).
fn bool_text(value: Option<bool>) -> Option<String> {
    value.map(|b| b.to_string())
}

/// Reads the config file: `explicit` when given (it must exist), else
/// `./medallion.toml` when present. Returns it and how messages name it.
fn read_config_file(explicit: Option<&Path>) -> Result<(FileConfig, String)> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from("medallion.toml");
            if !default.exists() {
                return Ok((FileConfig::default(), "medallion.toml".into()));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Config(format!("cannot read config file {}: {e}", path.display())))?;
    let file = toml::from_str(&text).map_err(|e| {
        Error::Config(format!("config file {} is invalid: {}", path.display(), crate::error::one_line(&e.to_string())))
    })?;
    Ok((file, path.display().to_string()))
}

// ----------------------------------------------------------- resolved ----

/// How country names are standardised: the canonical spellings (matched case-
/// and space-insensitively) plus aliases that map to one of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryConfig {
    #[serde(default = "default_canonical_countries")]
    pub canonical: Vec<String>,
    #[serde(default = "default_country_aliases")]
    pub aliases: BTreeMap<String, String>,
}

impl Default for CountryConfig {
    fn default() -> Self {
        CountryConfig { canonical: default_canonical_countries(), aliases: default_country_aliases() }
    }
}

impl CountryConfig {
    /// The lookup table used by the silver model: lower-cased, trimmed spelling
    /// → canonical spelling. Canonical names map to themselves.
    pub fn lookup(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for name in &self.canonical {
            map.insert(normalise_key(name), name.clone());
        }
        for (alias, canonical) in &self.aliases {
            map.insert(normalise_key(alias), canonical.clone());
        }
        map
    }
}

/// The key a country spelling is looked up by: trimmed and lower-cased.
pub fn normalise_key(name: &str) -> String {
    name.trim().to_lowercase()
}

fn default_canonical_countries() -> Vec<String> {
    [
        "Argentina", "Austria", "Belgium", "Brazil", "Canada", "Denmark", "Finland", "France", "Germany",
        "Ireland", "Italy", "Mexico", "Norway", "Poland", "Portugal", "Spain", "Sweden", "Switzerland",
        "UK", "USA", "Venezuela",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn default_country_aliases() -> BTreeMap<String, String> {
    [
        ("United States", "USA"),
        ("United States of America", "USA"),
        ("U.S.A.", "USA"),
        ("U.S.", "USA"),
        ("US", "USA"),
        ("United Kingdom", "UK"),
        ("U.K.", "UK"),
        ("Great Britain", "UK"),
        ("England", "UK"),
        ("Deutschland", "Germany"),
        ("España", "Spain"),
        ("Brasil", "Brazil"),
        ("México", "Mexico"),
        ("Österreich", "Austria"),
        ("Schweiz", "Switzerland"),
        ("Suisse", "Switzerland"),
        ("Sverige", "Sweden"),
        ("Norge", "Norway"),
        ("Danmark", "Denmark"),
        ("Suomi", "Finland"),
        ("Polska", "Poland"),
        ("Italia", "Italy"),
        ("Belgique", "Belgium"),
        ("België", "Belgium"),
        ("Éire", "Ireland"),
    ]
    .iter()
    .map(|(a, c)| (a.to_string(), c.to_string()))
    .collect()
}

/// S3 connection settings. Used only when the lake URL is `s3://`.
#[derive(Clone, Default)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: bool,
    pub virtual_hosted_style: bool,
    pub create_buckets: bool,
    /// Bucket per layer when the lake URL names no bucket (`s3://`).
    pub buckets: BTreeMap<String, String>,
}

/// Everything but the secret key, which shows as `***` when set.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "***"))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("create_buckets", &self.create_buckets)
            .field("buckets", &self.buckets)
            .finish()
    }
}

impl S3Config {
    fn resolve(create_buckets_flag: Option<bool>, file: S3File, sources: &Sources) -> Result<S3Config> {
        let mut buckets: BTreeMap<String, String> =
            ["bronze", "silver", "gold"].iter().map(|l| (l.to_string(), l.to_string())).collect();
        buckets.extend(file.buckets);
        Ok(S3Config {
            endpoint: sources.text(&S3_ENDPOINT, None, file.endpoint),
            region: sources.text(&S3_REGION, None, file.region),
            access_key_id: sources.text(&S3_ACCESS_KEY_ID, None, file.access_key_id),
            secret_access_key: sources.text(&S3_SECRET_ACCESS_KEY, None, file.secret_access_key),
            allow_http: sources.parsed(&S3_ALLOW_HTTP, None, bool_text(file.allow_http), BOOLEAN)?.unwrap_or(false),
            virtual_hosted_style: sources
                .parsed(&S3_VIRTUAL_HOSTED_STYLE, None, bool_text(file.virtual_hosted_style), BOOLEAN)?
                .unwrap_or(false),
            create_buckets: sources
                .parsed(&S3_CREATE_BUCKETS, bool_text(create_buckets_flag), bool_text(file.create_buckets), BOOLEAN)?
                .unwrap_or(false),
            buckets,
        })
    }
}

/// The settings of `medallion stream` (`[stream]`); `produce` sends to the
/// same `brokers` and `topic`.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Kafka brokers, `host:port[,host:port]`.
    pub brokers: Option<String>,
    pub topic: String,
    /// Kafka consumer group (positions are kept in the lake, not in the group).
    pub group: String,
    /// Which partitions of the topic this stream reads.
    pub membership: Membership,
    /// A folder of JSON-lines files to read instead of Kafka.
    pub source: Option<PathBuf>,
    /// Run continuously, closing a micro-batch one interval after its first
    /// message; `None` consumes what is there, then stops.
    pub interval: Option<Duration>,
    /// Most messages in one micro-batch.
    pub max_batch: usize,
    /// Events older than the newest event time minus this are late.
    pub lateness: Duration,
}

impl StreamConfig {
    fn resolve(flags: StreamFlags, file: StreamFile, sources: &Sources) -> Result<StreamConfig> {
        let defaults = StreamOptions::default();
        let interval = if flags.available_now {
            None
        } else {
            sources.parsed(&STREAM_INTERVAL, flags.interval, text(file.interval), DURATION)?
        };
        Ok(StreamConfig {
            brokers: sources.text(&STREAM_BROKERS, flags.brokers, text(file.brokers)),
            topic: sources.text(&STREAM_TOPIC, flags.topic, text(file.topic)).unwrap_or_else(|| DEFAULT_TOPIC.into()),
            membership: match sources.parsed(&STREAM_PARTITIONS, flags.partitions, text(file.partitions), PARTITION_LIST)? {
                Some(partitions) => Membership::Partitions(partitions),
                // A group named by the user is one to share the topic with.
                None if flags.group.is_some() || file.group.is_some() => Membership::Shared,
                None => Membership::AllPartitions,
            },
            group: sources.text(&STREAM_GROUP, flags.group, text(file.group)).unwrap_or_else(|| DEFAULT_GROUP.into()),
            source: sources.parsed(&STREAM_SOURCE, flags.source, text(file.source), FOLDER)?,
            interval,
            max_batch: sources
                .parsed(&STREAM_MAX_BATCH, flags.max_batch, text(file.max_batch), COUNT)?
                .unwrap_or(defaults.max_batch),
            lateness: match sources.parsed(&STREAM_LATENESS, flags.lateness, text(file.lateness), DURATION)? {
                Some(lateness) => lateness,
                None => defaults.allowed_lateness.to_std().unwrap_or(Duration::from_secs(60)),
            },
        })
    }

    /// When micro-batches run.
    pub fn trigger(&self) -> Trigger {
        match self.interval {
            Some(interval) => Trigger::Interval(interval),
            None => Trigger::AvailableNow,
        }
    }
}

/// The settings of `medallion serve` (`[serve]`).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Dashboard and HTTP API.
    pub addr: SocketAddr,
    /// The read-only PostgreSQL wire endpoint.
    pub pg_addr: SocketAddr,
    /// Whether the PostgreSQL endpoint starts (`--no-pg`, `pg = false`).
    pub pg: bool,
    /// Most rows `POST /api/sql` returns.
    pub sql_row_limit: usize,
    /// Longest a `POST /api/sql` query may run.
    pub sql_timeout: Duration,
    /// Longest a PostgreSQL-wire statement may run (default: `sql_timeout`).
    pub pg_statement_timeout: Duration,
    /// Queries each endpoint (`/api/sql`, the PostgreSQL wire) runs at once.
    pub max_concurrent_queries: usize,
}

impl ServeConfig {
    fn resolve(flags: ServeFlags, file: ServeFile, sources: &Sources) -> Result<ServeConfig> {
        let defaults = ServeOptions::default();
        Ok(ServeConfig {
            addr: sources.parsed(&SERVE_ADDR, flags.addr, text(file.addr), ADDRESS)?.unwrap_or(defaults.http_addr),
            pg_addr: sources
                .parsed(&SERVE_PG_ADDR, flags.pg_addr, text(file.pg_addr), ADDRESS)?
                .or(defaults.pg_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 15432))),
            pg: sources.parsed(&SERVE_PG, bool_text(flags.pg), text(file.pg), BOOLEAN)?.unwrap_or(true),
            sql_row_limit: sources
                .parsed(&SERVE_SQL_ROW_LIMIT, flags.sql_row_limit, text(file.sql_row_limit), COUNT)?
                .unwrap_or(defaults.sql_row_limit),
            sql_timeout: sources
                .parsed(&SERVE_SQL_TIMEOUT, flags.sql_timeout, text(file.sql_timeout), POSITIVE_DURATION)?
                .unwrap_or(defaults.sql_timeout),
            pg_statement_timeout: Duration::ZERO,
            max_concurrent_queries: sources
                .parsed(&SERVE_MAX_CONCURRENT_QUERIES, flags.max_concurrent_queries, text(file.max_concurrent_queries), COUNT)?
                .unwrap_or(defaults.max_concurrent_queries),
        }
        .with_pg_statement_timeout(sources.parsed(
            &SERVE_PG_STATEMENT_TIMEOUT,
            flags.pg_statement_timeout,
            text(file.pg_statement_timeout),
            POSITIVE_DURATION,
        )?))
    }

    /// The PostgreSQL statement timeout: as given, else `sql_timeout`.
    fn with_pg_statement_timeout(mut self, given: Option<Duration>) -> ServeConfig {
        self.pg_statement_timeout = given.unwrap_or(self.sql_timeout);
        self
    }
}

/// Where a command's queries run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// In this process (the default).
    #[default]
    Local,
    /// On a Ballista cluster: the scheduler's host and port
    /// (`ballista://127.0.0.1:50050`, see `crate::cluster`).
    Ballista { host: String, port: u16 },
}

impl Engine {
    fn parse(text: &str) -> Option<Engine> {
        if text.eq_ignore_ascii_case("local") {
            return Some(Engine::Local);
        }
        let address = text.strip_prefix("ballista://")?.trim_end_matches('/');
        let (host, port) = address.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|port| *port > 0)?;
        let valid_host = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c));
        valid_host.then(|| Engine::Ballista { host: host.to_string(), port })
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Local => f.write_str("local"),
            Engine::Ballista { host, port } => write!(f, "ballista://{host}:{port}"),
        }
    }
}

/// The resolved configuration of one command.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lake URL: `file:///path`, `s3://` or `s3://bucket/prefix`.
    pub lake: String,
    /// PostgreSQL connection string of the source, when one is used.
    pub database_url: Option<String>,
    /// The snapshot date being built (UTC today unless `--date`).
    pub date: NaiveDate,
    /// Directory with SQL models that replaces the built-in ones.
    pub models_dir: Option<PathBuf>,
    /// Number of parallel PostgreSQL connections used by extraction.
    pub extract_parallelism: usize,
    /// Bytes the queries of `refine` and `aggregate` may hold in hash tables
    /// and sort buffers before spilling to temporary files
    /// (`memory_limit_mb`, `MEDALLION_MEMORY_LIMIT_MB`, default 1536 MiB);
    /// `None` (library callers only): unbounded.
    pub memory_limit: Option<usize>,
    /// Where the queries of `run`, `refine`, `aggregate` and `sql` run
    /// (`engine`, `MEDALLION_ENGINE`, `--engine`; default `local`).
    pub engine: Engine,
    pub countries: CountryConfig,
    pub s3: S3Config,
    /// Access token of the serving layer (`MEDALLION_TOKEN` or `token`): the
    /// HTTP API wants it as a bearer token, the PostgreSQL endpoint as the
    /// password. `None` leaves both open (they bind to loopback by default).
    pub token: Option<String>,
    /// `[[auth.tokens]]`: named tokens with roles (see `auth`); the server
    /// accepts these and `token` (as an admin named `admin`).
    pub auth: AuthConfig,
    /// `[pii]`: protected columns and the pseudonym key (`MEDALLION_PII_KEY`).
    pub pii: PiiConfig,
    pub stream: StreamConfig,
    /// `[kafka]`: security protocol, SASL credentials, TLS files and other
    /// librdkafka properties of the Kafka clients.
    pub kafka: KafkaConfig,
    pub serve: ServeConfig,
    /// `medallion up`: `[up]`, `[alerts]`, `[freshness]`, `[maintenance]`.
    pub up: UpConfig,
    /// `[profile]`: profiling after batch runs.
    pub profile: ProfileConfig,
    /// `[lineage]`: where OpenLineage events go.
    pub lineage: LineageConfig,
    /// `[tls]`: HTTPS and PostgreSQL-over-TLS of the serving layer.
    pub tls: TlsConfig,
    /// `[audit]`: the query log `audit.queries` (see `crate::audit`).
    pub audit: AuditConfig,
    /// Why this command runs, recorded with its stages: by hand unless a
    /// schedule of `medallion up` set it on its copy of the configuration.
    pub trigger: crate::tables::RunTrigger,
}

impl Config {
    /// Resolves the flags (`overrides`) over the process's environment over
    /// the config file over the defaults.
    pub fn load(overrides: Overrides) -> Result<Config> {
        Config::load_with(overrides, &process_env)
    }

    /// `load` with the environment read through `env`.
    pub fn load_with(overrides: Overrides, env: Env) -> Result<Config> {
        let sources = Sources { env, file_name: String::new() };
        let path = overrides.config_file.clone().or_else(|| sources.env_value("MEDALLION_CONFIG").map(PathBuf::from));
        let (file, file_name) = read_config_file(path.as_deref())?;
        Config::resolve(overrides, file, &Sources { env, file_name })
    }

    fn resolve(flags: Overrides, file: FileConfig, sources: &Sources) -> Result<Config> {
        let date = sources.parsed(&DATE, flags.date, None, DATE_FORM)?.unwrap_or_else(|| chrono::Utc::now().date_naive());
        let models_dir = match flags.models_dir {
            Some(dir) => Some(dir),
            None => sources.text(&MODELS_DIR, None, file.models_dir).map(PathBuf::from),
        };
        let stream = StreamConfig::resolve(flags.stream, file.stream, sources)?;
        let stream_configured = stream.brokers.is_some() || stream.source.is_some();
        let up = UpConfig::resolve(file.up, file.alerts, file.freshness, file.maintenance, stream_configured, sources)?;
        if up.stream && !stream_configured {
            return Err(Error::Config(format!(
                "up.stream = true in {} but the stream has no source: set KAFKA_BOOTSTRAP_SERVERS or brokers under [stream] \
                 (or source = \"file:///dir\"), or set up.stream = false",
                sources.file_name
            )));
        }
        Ok(Config {
            lake: sources.text(&LAKE, flags.lake, file.lake).unwrap_or_else(default_lake),
            database_url: sources.text(&DATABASE_URL, flags.database_url, file.database_url),
            date,
            models_dir,
            extract_parallelism: file
                .extract_parallelism
                .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)),
            memory_limit: Some(
                sources
                    .parsed(&MEMORY_LIMIT, flags.memory_limit_mb, text(file.memory_limit_mb), COUNT)?
                    .unwrap_or(DEFAULT_MEMORY_LIMIT_MB)
                    .saturating_mul(1024 * 1024),
            ),
            engine: sources.parsed(&ENGINE, flags.engine, file.engine, ENGINE_FORM)?.unwrap_or_default(),
            countries: file.countries,
            s3: S3Config::resolve(flags.create_buckets, file.s3, sources)?,
            token: sources.text(&TOKEN, None, file.token),
            auth: AuthConfig::resolve(file.auth, &sources.file_name)?,
            pii: PiiConfig::resolve(flags.encrypt_at_rest, file.pii, sources)?,
            stream,
            kafka: KafkaConfig::resolve(flags.kafka, file.kafka, sources)?,
            serve: ServeConfig::resolve(flags.serve, file.serve, sources)?,
            up,
            profile: ProfileConfig::resolve(file.profile, sources)?,
            lineage: LineageConfig::resolve(flags.lineage, file.lineage, sources)?,
            tls: TlsConfig::resolve(file.tls, sources)?,
            audit: AuditConfig::resolve(flags.audit, flags.audit_flush_interval, file.audit, sources)?,
            trigger: crate::tables::RunTrigger::manual(),
        })
    }

    /// The options of the stream runtime.
    pub fn stream_options(&self) -> StreamOptions {
        StreamOptions {
            trigger: self.stream.trigger(),
            max_batch: self.stream.max_batch,
            // Durations are at most 100 years, well inside chrono's range.
            allowed_lateness: chrono::Duration::from_std(self.stream.lateness).unwrap_or(chrono::Duration::MAX),
            ..StreamOptions::default()
        }
    }

    /// The options of the serving layer.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            http_addr: self.serve.addr,
            pg_addr: self.serve.pg.then_some(self.serve.pg_addr),
            sql_row_limit: self.serve.sql_row_limit,
            sql_timeout: self.serve.sql_timeout,
            pg_statement_timeout: self.serve.pg_statement_timeout,
            max_concurrent_queries: self.serve.max_concurrent_queries,
            ..ServeOptions::default()
        }
    }

    /// Every secret value this configuration holds, for scrubbing messages.
    pub fn secrets(&self) -> Secrets {
        let mut secrets = Vec::new();
        if let Some(url) = &self.database_url {
            if let Some(password) = database_password(url) {
                secrets.push(password);
            }
        }
        if let Some(secret) = &self.s3.secret_access_key {
            secrets.push(secret.clone());
        }
        if let Some(token) = &self.token {
            secrets.push(token.clone());
        }
        if let Some(webhook) = &self.up.webhook {
            secrets.push(webhook.clone());
        }
        if let Some(key) = &self.pii.key {
            secrets.push(key.clone());
        }
        if let Some(url) = &self.lineage.url {
            secrets.push(url.clone());
        }
        secrets.extend(self.kafka.secrets());
        // Too short to replace without mangling the message (and to be a real secret).
        secrets.retain(|s| s.len() >= 3);
        Secrets(secrets)
    }
}

/// The secret values of a configuration: the database password, the AWS
/// secret key, the serving token, the alert webhook, the PII key, the Kafka
/// passwords.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// `message` with every secret replaced by `***`: for any text shown to
    /// a user or stored (error lines, run records).
    pub fn scrub(&self, message: &str) -> String {
        let mut scrubbed = message.to_string();
        for secret in &self.0 {
            scrubbed = scrubbed.replace(secret.as_str(), "***");
        }
        scrubbed
    }
}

/// How many secrets, never what they are.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} hidden)", self.0.len())
    }
}

/// The default lake: `./lake` under the working directory.
fn default_lake() -> String {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    format!("file://{}", cwd.join("lake").display())
}

/// The password inside a PostgreSQL connection string, if any (URL or
/// key=value form).
pub fn database_password(url: &str) -> Option<String> {
    let (config, _) = crate::source::tls::parse(url).ok()?;
    config.get_password().map(|p| String::from_utf8_lossy(p).into_owned())
}

/// A printable, password-free description of a PostgreSQL target:
/// `host:port/database`.
pub fn describe_database(url: &str) -> String {
    let Ok((config, _)) = crate::source::tls::parse(url) else {
        return "an invalid DATABASE_URL".to_string();
    };
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_string());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_database_hides_password() {
        let text = describe_database("postgres://bob:s3cret@db.example:6543/northwind");
        assert_eq!(text, "db.example:6543/northwind");
        assert_eq!(database_password("postgres://bob:s3cret@db.example/x").as_deref(), Some("s3cret"));
    }

    #[test]
    fn country_lookup_is_case_and_space_insensitive() {
        let lookup = CountryConfig::default().lookup();
        assert_eq!(lookup[&normalise_key("  germany ")], "Germany");
        assert_eq!(lookup[&normalise_key("U.S.A.")], "USA");
        assert_eq!(lookup[&normalise_key("united kingdom")], "UK");
    }

    #[test]
    fn s3_debug_hides_the_secret_key() {
        let s3 = S3Config { secret_access_key: Some("Sup3rSecretKey".into()), ..Default::default() };
        let text = format!("{s3:?}");
        assert!(!text.contains("Sup3rSecretKey") && text.contains("***"), "{text}");
    }

    #[test]
    fn bad_date_is_a_clear_error() {
        let err = parse_date("2026-13-01").unwrap_err().to_string();
        assert!(err.contains("YYYY-MM-DD"), "{err}");
    }

    /// A config file holding `toml`, and the flags that point at it.
    struct TestFile {
        _dir: tempfile::TempDir,
        flags: Overrides,
    }

    fn file(toml: &str) -> TestFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("medallion.toml");
        std::fs::write(&path, toml).unwrap();
        TestFile { _dir: dir, flags: Overrides { config_file: Some(path), ..Default::default() } }
    }

    /// Loads with exactly these environment variables.
    fn load(flags: Overrides, env: &[(&str, &str)]) -> Result<Config> {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load_with(flags, &|name: &str| env.get(name).cloned())
    }

    #[test]
    fn a_stream_option_is_taken_from_flag_then_environment_then_file_then_default() {
        let empty = file("");
        assert_eq!(load(empty.flags.clone(), &[]).unwrap().stream.brokers, None);

        let with_file = file("[stream]\nbrokers = \"from-file:9092\"\n");
        let config = load(with_file.flags.clone(), &[]).unwrap();
        assert_eq!(config.stream.brokers.as_deref(), Some("from-file:9092"));

        let env = [("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")];
        let config = load(with_file.flags.clone(), &env).unwrap();
        assert_eq!(config.stream.brokers.as_deref(), Some("from-env:9092"));

        let mut flags = with_file.flags.clone();
        flags.stream.brokers = Some("from-flag:9092".into());
        let config = load(flags, &env).unwrap();
        assert_eq!(config.stream.brokers.as_deref(), Some("from-flag:9092"));
    }

    #[test]
    fn a_named_group_shares_the_topic_and_a_partition_list_splits_it() {
        let empty = file("");
        assert_eq!(load(empty.flags.clone(), &[]).unwrap().stream.membership, Membership::AllPartitions);
        let grouped = file("[stream]\ngroup = \"sales\"\n");
        let config = load(grouped.flags.clone(), &[]).unwrap();
        assert_eq!((config.stream.membership, config.stream.group.as_str()), (Membership::Shared, "sales"));
        let listed = file("[stream]\npartitions = \"2, 0,2\"\n");
        assert_eq!(load(listed.flags.clone(), &[]).unwrap().stream.membership, Membership::Partitions(vec![2, 0]));
        let single = file("[stream]\npartitions = 1\n");
        assert_eq!(load(single.flags.clone(), &[]).unwrap().stream.membership, Membership::Partitions(vec![1]));
        for bad in ["\"0,-1\"", "\"a\""] {
            let bad = file(&format!("[stream]\npartitions = {bad}\n"));
            let err = load(bad.flags.clone(), &[]).unwrap_err().to_string();
            assert!(err.contains("stream.partitions") && err.contains("such as 0,2"), "{err}");
        }
    }

    #[test]
    fn a_serve_option_is_taken_from_flag_then_environment_then_file_then_default() {
        let empty = file("");
        assert_eq!(load(empty.flags.clone(), &[]).unwrap().serve.addr, "127.0.0.1:8080".parse().unwrap());

        let with_file = file("[serve]\naddr = \"127.0.0.1:1001\"\n");
        assert_eq!(load(with_file.flags.clone(), &[]).unwrap().serve.addr, "127.0.0.1:1001".parse().unwrap());

        let env = [("MEDALLION_ADDR", "127.0.0.1:1002")];
        assert_eq!(load(with_file.flags.clone(), &env).unwrap().serve.addr, "127.0.0.1:1002".parse().unwrap());

        let mut flags = with_file.flags.clone();
        flags.serve.addr = Some("127.0.0.1:1003".into());
        assert_eq!(load(flags, &env).unwrap().serve.addr, "127.0.0.1:1003".parse().unwrap());
    }

    #[test]
    fn the_engine_is_local_unless_a_ballista_scheduler_is_named() {
        let empty = file("");
        assert_eq!(load(empty.flags.clone(), &[]).unwrap().engine, Engine::Local);
        let with_file = file("engine = \"ballista://10.0.0.5:50050\"\n");
        let cluster = Engine::Ballista { host: "10.0.0.5".into(), port: 50050 };
        assert_eq!(load(with_file.flags.clone(), &[]).unwrap().engine, cluster);
        assert_eq!(cluster.to_string(), "ballista://10.0.0.5:50050");
        let env = [("MEDALLION_ENGINE", "ballista://scheduler.internal:7000/")];
        let from_env = load(with_file.flags.clone(), &env).unwrap().engine;
        assert_eq!(from_env, Engine::Ballista { host: "scheduler.internal".into(), port: 7000 });
        let flag = Overrides { engine: Some("LOCAL".into()), ..with_file.flags.clone() };
        assert_eq!(load(flag, &env).unwrap().engine, Engine::Local);
        for bad in ["spark://x:1", "ballista://", "ballista://host", "ballista://host:0", "ballista://h st:1"] {
            let flag = Overrides { engine: Some(bad.into()), ..empty.flags.clone() };
            let err = load(flag, &[]).unwrap_err().to_string();
            assert!(err.contains("--engine") && err.contains("ballista://HOST:PORT") && !err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn the_memory_limit_defaults_to_1536_mib_and_is_read_in_megabytes() {
        const MIB: usize = 1024 * 1024;
        let empty = file("");
        assert_eq!(load(empty.flags.clone(), &[]).unwrap().memory_limit, Some(1536 * MIB));
        let with_file = file("memory_limit_mb = 4096\n");
        assert_eq!(load(with_file.flags.clone(), &[]).unwrap().memory_limit, Some(4096 * MIB));
        let env = [("MEDALLION_MEMORY_LIMIT_MB", "512")];
        assert_eq!(load(with_file.flags.clone(), &env).unwrap().memory_limit, Some(512 * MIB));
        let flag = Overrides { memory_limit_mb: Some("256".into()), ..with_file.flags.clone() };
        assert_eq!(load(flag.clone(), &env).unwrap().memory_limit, Some(256 * MIB));
        let bad_flag = Overrides { memory_limit_mb: Some("-1".into()), ..with_file.flags.clone() };
        let err = load(bad_flag, &[]).unwrap_err().to_string();
        assert!(err.contains("--memory-limit-mb"), "{err}");
        let err = load(empty.flags.clone(), &[("MEDALLION_MEMORY_LIMIT_MB", "lots")]).unwrap_err().to_string();
        assert!(err.contains("MEDALLION_MEMORY_LIMIT_MB") && err.contains("whole number"), "{err}");
    }

    #[test]
    fn stream_and_serve_sections_become_the_library_options() {
        let toml = "[stream]\ninterval = \"500ms\"\nmax_batch = 700\nlateness = \"2m\"\nsource = \"file:///tmp/events\"\n\
                    [serve]\npg = false\nsql_row_limit = \"25\"\nsql_timeout = 5\n";
        let test = file(toml);
        let config = load(test.flags.clone(), &[]).unwrap();
        let stream = config.stream_options();
        assert!(matches!(stream.trigger, Trigger::Interval(d) if d == Duration::from_millis(500)), "{stream:?}");
        assert_eq!(stream.max_batch, 700);
        assert_eq!(stream.allowed_lateness, chrono::Duration::minutes(2));
        assert_eq!(config.stream.source, Some(PathBuf::from("/tmp/events")));
        let serve = config.serve_options();
        assert_eq!(serve.pg_addr, None);
        assert_eq!(serve.sql_row_limit, 25);
        assert_eq!(serve.sql_timeout, Duration::from_secs(5));
        // The PostgreSQL statement timeout follows sql_timeout unless given.
        assert_eq!(serve.pg_statement_timeout, Duration::from_secs(5));
        let limits = file("[serve]\npg_statement_timeout = \"750ms\"\nmax_concurrent_queries = 3\n");
        let serve = load(limits.flags.clone(), &[]).unwrap().serve_options();
        assert_eq!((serve.pg_statement_timeout, serve.max_concurrent_queries), (Duration::from_millis(750), 3));
        let err = load(limits.flags.clone(), &[("MEDALLION_MAX_CONCURRENT_QUERIES", "0")]).unwrap_err().to_string();
        assert!(err.contains("MEDALLION_MAX_CONCURRENT_QUERIES") && err.contains("at least 1"), "{err}");
        let mut flags = limits.flags.clone();
        flags.serve.pg_statement_timeout = Some("2s".into());
        flags.serve.max_concurrent_queries = Some("5".into());
        let env = [("MEDALLION_PG_STATEMENT_TIMEOUT", "1s"), ("MEDALLION_MAX_CONCURRENT_QUERIES", "4")];
        let serve = load(limits.flags.clone(), &env).unwrap().serve_options();
        assert_eq!((serve.pg_statement_timeout, serve.max_concurrent_queries), (Duration::from_secs(1), 4));
        let serve = load(flags, &env).unwrap().serve_options();
        assert_eq!((serve.pg_statement_timeout, serve.max_concurrent_queries), (Duration::from_secs(2), 5));

        // --available-now beats an interval from the file.
        let mut flags = test.flags.clone();
        flags.stream.available_now = true;
        assert!(matches!(load(flags, &[]).unwrap().stream_options().trigger, Trigger::AvailableNow));
    }

    #[test]
    fn the_audit_section_is_taken_from_flag_then_environment_then_file_then_default() {
        let defaults = load(file("").flags, &[]).unwrap().audit;
        assert_eq!(defaults, AuditConfig { enabled: true, flush_interval: Duration::from_secs(1) });
        let with_file = file("[audit]\nenabled = false\nflush_interval = \"250ms\"\n");
        let audit = load(with_file.flags.clone(), &[]).unwrap().audit;
        assert_eq!((audit.enabled, audit.flush_interval), (false, Duration::from_millis(250)));
        let env = [("MEDALLION_AUDIT", "true"), ("MEDALLION_AUDIT_FLUSH_INTERVAL", "2s")];
        let audit = load(with_file.flags.clone(), &env).unwrap().audit;
        assert_eq!((audit.enabled, audit.flush_interval), (true, Duration::from_secs(2)));
        let no_audit = Overrides { audit: Some(false), ..with_file.flags.clone() };
        assert!(!load(no_audit, &env).unwrap().audit.enabled, "--no-audit beats MEDALLION_AUDIT");
        let flush_flag = Overrides { audit_flush_interval: Some("5s".into()), ..with_file.flags.clone() };
        let audit = load(flush_flag, &env).unwrap().audit;
        assert_eq!(audit.flush_interval, Duration::from_secs(5), "--audit-flush-interval beats MEDALLION_AUDIT_FLUSH_INTERVAL");
        let err = load(file("").flags, &[("MEDALLION_AUDIT_FLUSH_INTERVAL", "0s")]).unwrap_err().to_string();
        assert!(err.contains("MEDALLION_AUDIT_FLUSH_INTERVAL") && err.contains("above zero"), "{err}");
        let bad_flag = Overrides { audit_flush_interval: Some("0s".into()), ..with_file.flags.clone() };
        let err = load(bad_flag, &env).unwrap_err().to_string();
        assert!(err.contains("--audit-flush-interval") && err.contains("above zero"), "{err}");
        let err = load(file("[audit]\nenable = true\n").flags, &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn encrypt_at_rest_is_taken_from_flag_then_environment_then_file_then_default() {
        let key = ("MEDALLION_PII_KEY", "a-test-pii-key");
        assert!(!load(file("").flags, &[]).unwrap().pii.encrypt_at_rest, "off by default");
        let with_file = file("[pii]\nencrypt_at_rest = true\n");
        assert!(load(with_file.flags.clone(), &[key]).unwrap().pii.encrypt_at_rest);
        let env = [key, ("MEDALLION_PII_ENCRYPT_AT_REST", "false")];
        assert!(!load(with_file.flags.clone(), &env).unwrap().pii.encrypt_at_rest, "the environment beats the file");
        let flag = Overrides { encrypt_at_rest: Some(true), ..with_file.flags.clone() };
        assert!(load(flag, &env).unwrap().pii.encrypt_at_rest, "--encrypt-at-rest beats MEDALLION_PII_ENCRYPT_AT_REST");
        // The flag needs the key as the file and the environment do.
        let flag_without_key = Overrides { encrypt_at_rest: Some(true), ..with_file.flags.clone() };
        let err = load(flag_without_key, &[("MEDALLION_PII_ENCRYPT_AT_REST", "false")]).unwrap_err().to_string();
        assert!(err.contains("MEDALLION_PII_KEY") && err.lines().count() == 1, "{err}");
    }

    #[test]
    fn lineage_targets_are_taken_from_flag_then_environment_then_file_then_default() {
        let defaults = load(file("").flags, &[]).unwrap().lineage;
        assert_eq!((defaults.url, defaults.file), (None, None));
        let with_file = file(
            "[lineage]\nurl = \"http://from-file.example/api/v1/lineage\"\nfile = \"from-file.jsonl\"\n",
        );
        let lineage = load(with_file.flags.clone(), &[]).unwrap().lineage;
        assert_eq!(lineage.url.as_deref(), Some("http://from-file.example/api/v1/lineage"));
        assert_eq!(lineage.file, Some(PathBuf::from("from-file.jsonl")));
        let env = [
            ("MEDALLION_LINEAGE_URL", "http://from-env.example/api/v1/lineage"),
            ("MEDALLION_LINEAGE_FILE", "from-env.jsonl"),
        ];
        let lineage = load(with_file.flags.clone(), &env).unwrap().lineage;
        assert_eq!(lineage.url.as_deref(), Some("http://from-env.example/api/v1/lineage"));
        assert_eq!(lineage.file, Some(PathBuf::from("from-env.jsonl")));
        let flag_url = "http://from-flag.example/api/v1/lineage?token=flag-Secret-tok";
        let mut flags = with_file.flags.clone();
        flags.lineage = LineageFlags { url: Some(flag_url.into()), file: Some("from-flag.jsonl".into()) };
        assert!(!format!("{flags:?}").contains("flag-Secret-tok"), "the flags' Debug shows the URL");
        let config = load(flags, &env).unwrap();
        assert_eq!(config.lineage.url.as_deref(), Some(flag_url));
        assert_eq!(config.lineage.file, Some(PathBuf::from("from-flag.jsonl")));
        // The URL from the flag is a secret like the one from the file.
        assert_eq!(config.secrets().scrub(&format!("POST {flag_url} failed")), "POST *** failed");
        assert!(!format!("{config:?}").contains("flag-Secret-tok"));
    }

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("26h").unwrap(), Duration::from_secs(26 * 3600));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        for bad in ["", "s", "5x", "1w", "-1s", "1.2.3s", "99999999999d"] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("500ms, 1s, 2m, 26h or 7d") && err.lines().count() == 1, "{bad}: {err}");
        }
    }

    #[test]
    fn a_bad_value_names_where_it_was_given_and_the_form_expected() {
        let test = file("[stream]\ninterval = \"soon\"\n");
        let err = load(test.flags.clone(), &[]).unwrap_err().to_string();
        assert!(err.contains("stream.interval in") && err.contains("'soon'") && err.contains("500ms"), "{err}");

        let empty = file("");
        let mut flags = empty.flags.clone();
        flags.stream.lateness = Some("5x".into());
        let err = load(flags, &[]).unwrap_err().to_string();
        assert!(err.contains("--lateness") && err.contains("'5x'") && err.contains("26h"), "{err}");

        let err = load(file("").flags, &[("MEDALLION_PG_ADDR", "localhost")]).unwrap_err().to_string();
        assert!(err.contains("MEDALLION_PG_ADDR") && err.contains("127.0.0.1:8080"), "{err}");

        let err = load(file("").flags, &[("AWS_ALLOW_HTTP", "maybe")]).unwrap_err().to_string();
        assert!(err.contains("AWS_ALLOW_HTTP") && err.contains("true or false"), "{err}");

        let err = load(file("[stream]\nmax_batch = 0\n").flags, &[]).unwrap_err().to_string();
        assert!(err.contains("stream.max_batch") && err.contains("at least 1"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        for toml in ["[stream]\ntopics = \"x\"\n", "[serve]\nport = 80\n", "lakes = \"x\"\n"] {
            let err = load(file(toml).flags, &[]).unwrap_err().to_string();
            assert!(err.contains("unknown field") && err.lines().count() == 1, "{toml}: {err}");
        }
    }

    #[test]
    fn environment_names_keep_their_meaning() {
        let env = [
            ("MEDALLION_LAKE", "file:///env/lake"),
            ("DATABASE_URL", "postgres://u:pw-secret@db/northwind"),
            ("MEDALLION_MODELS", "/env/models"),
            ("MEDALLION_TOKEN", "tok-secret"),
            ("AWS_DEFAULT_REGION", "eu-west-3"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
            ("AWS_ALLOW_HTTP", "true"),
            ("MEDALLION_CREATE_BUCKETS", "1"),
            ("MEDALLION_ALERT_WEBHOOK", "https://hooks.example/wh-secret"),
        ];
        let config = load(file("").flags, &env).unwrap();
        assert_eq!(config.up.webhook.as_deref(), Some("https://hooks.example/wh-secret"));
        assert_eq!(config.secrets().scrub("POST https://hooks.example/wh-secret failed"), "POST *** failed");
        assert_eq!(config.lake, "file:///env/lake");
        assert_eq!(config.models_dir, Some(PathBuf::from("/env/models")));
        assert_eq!(config.s3.region.as_deref(), Some("eu-west-3"));
        assert!(config.s3.allow_http && config.s3.create_buckets);
        let scrubbed = config.secrets().scrub("pw-secret, aws-secret and tok-secret leaked");
        assert_eq!(scrubbed, "***, *** and *** leaked");

        // MEDALLION_CONFIG names the file when --config does not.
        let test = file("[stream]\ntopic = \"from-config-env\"\n");
        let path = test.flags.config_file.clone().unwrap();
        let config = load(Overrides::default(), &[("MEDALLION_CONFIG", path.to_str().unwrap())]).unwrap();
        assert_eq!(config.stream.topic, "from-config-env");
    }

    #[test]
    fn kafka_security_comes_from_flags_environment_and_file_and_its_passwords_are_secrets() {
        let test = file(
            "[stream]\nbrokers = \"b:9094\"\n[kafka]\nsecurity_protocol = \"SASL_SSL\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
             sasl_username = \"app\"\nssl_ca_location = \"/etc/ca.pem\"\n[kafka.properties]\n\"client.rack\" = \"eu-1\"\n",
        );
        let mut flags = test.flags.clone();
        flags.kafka.sasl_username = Some("from-flag".into());
        let config = load(flags, &[("KAFKA_SASL_PASSWORD", "kafka-Secret-pw")]).unwrap();
        assert_eq!(config.kafka.security_protocol, SecurityProtocol::SaslSsl);
        let sasl = config.kafka.sasl.clone().unwrap();
        assert_eq!((sasl.mechanism, sasl.username.as_str()), (SaslMechanism::ScramSha512, "from-flag"));
        assert_eq!(config.kafka.tls.ca_location, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(config.kafka.properties["client.rack"], "eu-1");
        assert_eq!(config.secrets().scrub("login with kafka-Secret-pw failed"), "login with *** failed");
        assert!(!format!("{config:?}").contains("kafka-Secret-pw"));

        // Without the password: one line naming what to set.
        let err = load(test.flags.clone(), &[]).unwrap_err().to_string();
        assert!(err.contains("KAFKA_SASL_PASSWORD") && err.lines().count() == 1, "{err}");
        let err = load(file("[kafka]\nsasl_user = \"x\"\n").flags, &[]).unwrap_err().to_string();
        assert!(err.contains("unknown field") && err.contains("sasl_username"), "{err}");
    }

    fn up_config(toml: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("medallion.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load_with(Overrides { config_file: Some(path), ..Default::default() }, &|_| None)
    }

    #[test]
    fn up_sections_are_read_and_checked_at_start() {
        let config = up_config(
            r#"
[stream]
brokers = "127.0.0.1:9092"
[[up.schedule]]
name = "nightly"
cron = "0 2 * * *"
timezone = "Europe/Paris"
[[up.schedule]]
every = "15m"
run = "optimize"
catch_up = "all"
[up.retry]
attempts = 5
backoff = "10s"
[alerts]
webhook = "https://hooks.example/T0/secret-part"
[freshness]
"gold.kpi_revenue" = { warn_after = "26h", error_after = "50h" }
[maintenance]
optimize_every = "0s"
"#,
        )
        .unwrap();
        let up = &config.up;
        assert!(up.stream && up.serve, "the stream is on once brokers are set");
        assert_eq!(up.schedules.len(), 2);
        assert_eq!((up.schedules[0].name.as_str(), up.schedules[0].job), ("nightly", crate::up::scheduler::Job::Run));
        assert_eq!(up.schedules[0].zone.name(), "Europe/Paris");
        assert_eq!((up.schedules[1].name.as_str(), up.schedules[1].job), ("schedule-2", crate::up::scheduler::Job::Optimize));
        assert_eq!((up.retry.attempts, up.retry.backoff), (5, Duration::from_secs(10)));
        assert_eq!(up.freshness[0].warn_after, Some(Duration::from_secs(26 * 3600)));
        assert_eq!(up.maintenance.optimize_every, None, "0s is never");
        assert_eq!(up.maintenance.vacuum_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(config.secrets().scrub("posting to https://hooks.example/T0/secret-part failed"), "posting to *** failed");

        let defaults = up_config("").unwrap();
        assert!(!defaults.up.stream, "no source, no stream");
        assert!(defaults.up.schedules.is_empty());
    }

    #[test]
    fn a_bad_up_setting_is_one_line_naming_the_entry() {
        for (toml, needle) in [
            ("[[up.schedule]]\nname = \"n\"\ncron = \"0 25 * * *\"", "up.schedule 'n' cron"),
            ("[[up.schedule]]\nname = \"n\"\ncron = \"0 2 * * *\"\nevery = \"1h\"", "both cron and every"),
            ("[[up.schedule]]\nname = \"n\"", "neither when nor how often"),
            ("[[up.schedule]]\nname = \"n\"\nevery = \"1h\"\ntimezone = \"Mars/Base\"", "IANA"),
            ("[[up.schedule]]\nname = \"n\"\nevery = \"1h\"\nrun = \"deploy\"", "run, ingest, refine"),
            ("[[up.schedule]]\nname = \"n\"\nevery = \"1h\"\n[[up.schedule]]\nname = \"n\"\nevery = \"2h\"", "named 'n'"),
            ("[freshness]\n\"kpi_revenue\" = { warn_after = \"1h\" }", "layer.table"),
            ("[freshness]\n\"gold.kpi_revenue\" = {}", "has no limit"),
            ("[up]\nstream = true", "has no source"),
            ("[maintenance]\nvacuum_retention = \"a week\"", "maintenance.vacuum_retention"),
        ] {
            let message = up_config(toml).unwrap_err().to_string();
            assert!(message.contains(needle), "{toml}: {message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
