//! `[pii]`: which columns hold personal data, the key of analysts'
//! pseudonyms and of encryption at rest (`MEDALLION_PII_KEY`, a secret), and
//! whether those columns are stored encrypted.
//!
//! ```toml
//! [pii]
//! columns = ["customers.contact_name", "customers.phone"]   # default: Northwind's PII
//! encrypt_at_rest = true                                    # MEDALLION_PII_ENCRYPT_AT_REST, --encrypt-at-rest
//! ```
//!
//! An entry `table.column` protects that column in `bronze.<table>`, and a
//! column of the same name in every silver and gold table (a model that
//! carries it downstream keeps it protected). See `lake::pii` (what each role
//! sees) and `lake::at_rest` (the stored form).

use serde::Deserialize;

use super::{bool_text, text, FileValue, Setting, Sources, BOOLEAN};
use crate::error::{Error, Result};

const PII_KEY: Setting = Setting { key: "pii.key", flag: None, env: &["MEDALLION_PII_KEY"] };
const ENCRYPT_AT_REST: Setting = Setting {
    key: "pii.encrypt_at_rest",
    flag: Some("--encrypt-at-rest"),
    env: &["MEDALLION_PII_ENCRYPT_AT_REST"],
};

/// Northwind's personal data: customers' contacts and employees.
pub const DEFAULT_PII_COLUMNS: [&str; 14] = [
    "customers.contact_name",
    "customers.contact_title",
    "customers.address",
    "customers.postal_code",
    "customers.phone",
    "customers.fax",
    "employees.last_name",
    "employees.first_name",
    "employees.birth_date",
    "employees.address",
    "employees.postal_code",
    "employees.home_phone",
    "employees.notes",
    "employees.photo_path",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PiiFile {
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    encrypt_at_rest: Option<FileValue>,
}

/// The PII policy: protected `(table, column)` pairs and the pseudonym key.
#[derive(Clone, Default)]
pub struct PiiConfig {
    pub columns: Vec<(String, String)>,
    /// HMAC key of analysts' pseudonyms and the secret the encryption key
    /// at rest is derived from; `None`: analysts see masked values.
    pub key: Option<String>,
    /// Store the protected columns of every layer AES-GCM encrypted (needs `key`).
    pub encrypt_at_rest: bool,
}

impl std::fmt::Debug for PiiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PiiConfig({} columns, key {}, encrypt_at_rest {})",
            self.columns.len(),
            if self.key.is_some() { "set" } else { "unset" },
            self.encrypt_at_rest
        )
    }
}

impl PiiConfig {
    /// `encrypt_at_rest_flag`: `--encrypt-at-rest` was given (`Some(true)`).
    pub(super) fn resolve(encrypt_at_rest_flag: Option<bool>, file: PiiFile, sources: &Sources) -> Result<PiiConfig> {
        let file_name = &sources.file_name;
        // The key is a secret: only ever from the environment.
        let key = sources.text(&PII_KEY, None, None).filter(|k| !k.is_empty());
        let encrypt_at_rest = sources
            .parsed(&ENCRYPT_AT_REST, bool_text(encrypt_at_rest_flag), text(file.encrypt_at_rest), BOOLEAN)?
            .unwrap_or(false);
        if encrypt_at_rest && key.is_none() {
            return Err(Error::Config(
                "[pii] encrypt_at_rest is on but MEDALLION_PII_KEY is not set: export the key the PII columns are \
                 encrypted with (the same one on every run), or turn encrypt_at_rest off"
                    .into(),
            ));
        }
        let given = file.columns.unwrap_or_else(|| DEFAULT_PII_COLUMNS.iter().map(|c| c.to_string()).collect());
        let mut columns = Vec::new();
        for entry in given {
            let Some((table, column)) = entry.trim().split_once('.').filter(|(t, c)| !t.is_empty() && !c.is_empty() && !c.contains('.'))
            else {
                return Err(Error::Config(format!(
                    "[pii] columns in {file_name} has '{entry}': write each as table.column, e.g. \"customers.phone\""
                )));
            };
            columns.push((table.to_ascii_lowercase(), column.to_ascii_lowercase()));
        }
        Ok(PiiConfig { columns, key, encrypt_at_rest })
    }
}
