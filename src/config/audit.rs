//! `[audit]`: whether every query of the serving layer and of `medallion sql`
//! is logged to `audit.queries`, and how often the log is written (see
//! `crate::audit`).
//!
//! ```toml
//! [audit]
//! enabled = true          # MEDALLION_AUDIT, --no-audit
//! flush_interval = "1s"   # MEDALLION_AUDIT_FLUSH_INTERVAL, --audit-flush-interval: one Delta commit per interval at most
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{bool_text, text, FileValue, Setting, Sources, BOOLEAN, POSITIVE_DURATION};
use crate::error::Result;

const AUDIT_ENABLED: Setting = Setting { key: "audit.enabled", flag: Some("--no-audit"), env: &["MEDALLION_AUDIT"] };
const AUDIT_FLUSH_INTERVAL: Setting = Setting {
    key: "audit.flush_interval",
    flag: Some("--audit-flush-interval"),
    env: &["MEDALLION_AUDIT_FLUSH_INTERVAL"],
};

/// `[audit]` as written in medallion.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditFile {
    enabled: Option<FileValue>,
    flush_interval: Option<FileValue>,
}

/// The resolved `[audit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// Log every query (default true).
    pub enabled: bool,
    /// The writer appends what it gathered at most this often (default 1 s).
    pub flush_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { enabled: true, flush_interval: Duration::from_secs(1) }
    }
}

impl AuditConfig {
    /// `no_audit_flag`: `--no-audit` was given (`Some(false)`);
    /// `flush_interval_flag`: `--audit-flush-interval` as typed.
    pub(super) fn resolve(
        no_audit_flag: Option<bool>,
        flush_interval_flag: Option<String>,
        file: AuditFile,
        sources: &Sources,
    ) -> Result<AuditConfig> {
        let defaults = AuditConfig::default();
        Ok(AuditConfig {
            enabled: sources
                .parsed(&AUDIT_ENABLED, bool_text(no_audit_flag), text(file.enabled), BOOLEAN)?
                .unwrap_or(defaults.enabled),
            flush_interval: sources
                .parsed(&AUDIT_FLUSH_INTERVAL, flush_interval_flag, text(file.flush_interval), POSITIVE_DURATION)?
                .unwrap_or(defaults.flush_interval),
        })
    }
}
