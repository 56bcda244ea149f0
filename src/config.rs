//! One typed `Config` built from flags, then environment, then `medallion.toml`.
//!
//! Precedence is resolved field by field: a flag beats an environment variable
//! (clap reads both into `Overrides`), which beats the config file, which beats
//! the built-in default. Secrets (database password, AWS secret key) are kept
//! here and handed out by `secrets()` so the CLI can scrub them from any
//! message before it is printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Values given on the command line or through the environment (clap merges
/// the two). `None` means "not given": the config file or default applies.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub lake: Option<String>,
    pub database_url: Option<String>,
    pub date: Option<String>,
    pub models_dir: Option<PathBuf>,
    /// `--create-buckets`: create missing S3 buckets.
    pub create_buckets: Option<bool>,
}

/// The `medallion.toml` file. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    lake: Option<String>,
    database_url: Option<String>,
    models_dir: Option<PathBuf>,
    extract_parallelism: Option<usize>,
    token: Option<String>,
    #[serde(default)]
    countries: CountryConfig,
    #[serde(default)]
    s3: S3File,
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
    pub countries: CountryConfig,
    pub s3: S3Config,
    /// Access token of the serving layer (`MEDALLION_TOKEN` or `token`): the
    /// HTTP API wants it as a bearer token, the PostgreSQL endpoint as the
    /// password. `None` leaves both open (they bind to loopback by default).
    pub token: Option<String>,
}

impl Config {
    /// Resolves flags/env (`overrides`) over the config file over defaults.
    pub fn load(overrides: Overrides) -> Result<Config> {
        let file = read_config_file(overrides.config_file.as_deref())?;
        let lake = overrides.lake.or(file.lake).unwrap_or_else(default_lake);
        let date = match overrides.date {
            Some(text) => parse_date(&text)?,
            None => chrono::Utc::now().date_naive(),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let env_bool = |name: &str| env(name).map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        let mut buckets: BTreeMap<String, String> =
            ["bronze", "silver", "gold"].iter().map(|l| (l.to_string(), l.to_string())).collect();
        buckets.extend(file.s3.buckets);
        let s3 = S3Config {
            endpoint: env("AWS_ENDPOINT_URL").or(file.s3.endpoint),
            region: env("AWS_REGION").or(env("AWS_DEFAULT_REGION")).or(file.s3.region),
            access_key_id: env("AWS_ACCESS_KEY_ID").or(file.s3.access_key_id),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY").or(file.s3.secret_access_key),
            allow_http: env_bool("AWS_ALLOW_HTTP").or(file.s3.allow_http).unwrap_or(false),
            virtual_hosted_style: env_bool("AWS_VIRTUAL_HOSTED_STYLE_REQUEST")
                .or(file.s3.virtual_hosted_style)
                .unwrap_or(false),
            create_buckets: overrides
                .create_buckets
                .or(env_bool("MEDALLION_CREATE_BUCKETS"))
                .or(file.s3.create_buckets)
                .unwrap_or(false),
            buckets,
        };
        Ok(Config {
            lake,
            database_url: overrides.database_url.or(file.database_url),
            date,
            models_dir: overrides.models_dir.or(file.models_dir),
            extract_parallelism: file
                .extract_parallelism
                .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)),
            countries: file.countries,
            s3,
            token: env("MEDALLION_TOKEN").or(file.token).filter(|t| !t.trim().is_empty()),
        })
    }

    /// Every secret value this configuration holds, for scrubbing messages.
    pub fn secrets(&self) -> Vec<String> {
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
        secrets.retain(|s| s.len() >= 3);
        secrets
    }
}

/// The default lake: `./lake` under the working directory.
fn default_lake() -> String {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    format!("file://{}", cwd.join("lake").display())
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| Error::Config(format!("invalid date '{text}': use the form YYYY-MM-DD, e.g. 2026-11-25")))
}

fn read_config_file(explicit: Option<&Path>) -> Result<FileConfig> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from("medallion.toml");
            if !default.exists() {
                return Ok(FileConfig::default());
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Config(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        Error::Config(format!("config file {} is invalid: {}", path.display(), crate::error::one_line(&e.to_string())))
    })
}

/// The password inside a PostgreSQL connection string, if any (URL or
/// key=value form).
pub fn database_password(url: &str) -> Option<String> {
    let config: tokio_postgres::Config = url.parse().ok()?;
    config.get_password().map(|p| String::from_utf8_lossy(p).into_owned())
}

/// A printable, password-free description of a PostgreSQL target:
/// `host:port/database`.
pub fn describe_database(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
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
}
