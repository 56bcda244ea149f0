//! `[pii]`: which columns hold personal data, and the key of analysts'
//! pseudonyms (`MEDALLION_PII_KEY`, a secret).
//!
//! ```toml
//! [pii]
//! columns = ["customers.contact_name", "customers.phone"]   # default: Northwind's PII
//! ```
//!
//! An entry `table.column` protects that column in `bronze.<table>`, and a
//! column of the same name in every silver and gold table (a model that
//! carries it downstream keeps it protected). See `lake::pii`.

use serde::Deserialize;

use crate::error::{Error, Result};

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
    columns: Option<Vec<String>>,
}

/// The PII policy: protected `(table, column)` pairs and the pseudonym key.
#[derive(Clone, Default)]
pub struct PiiConfig {
    pub columns: Vec<(String, String)>,
    /// HMAC key of analysts' pseudonyms; `None`: analysts see masked values.
    pub key: Option<String>,
}

impl std::fmt::Debug for PiiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PiiConfig({} columns, key {})", self.columns.len(), if self.key.is_some() { "set" } else { "unset" })
    }
}

impl PiiConfig {
    pub(super) fn resolve(file: PiiFile, key: Option<String>, file_name: &str) -> Result<PiiConfig> {
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
        Ok(PiiConfig { columns, key })
    }
}
