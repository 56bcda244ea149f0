//! `[lineage]`: where OpenLineage run events go (see `lineage::openlineage`).
//!
//! ```toml
//! [lineage]
//! url = "http://marquez:5000/api/v1/lineage"   # MEDALLION_LINEAGE_URL, --lineage-url: POST each event
//! file = "lineage.jsonl"                       # MEDALLION_LINEAGE_FILE, --lineage-file: append each event as a line
//! namespace = "medallion"                      # MEDALLION_LINEAGE_NAMESPACE: the jobs' namespace
//! ```
//!
//! Neither `url` nor `file`: no events (lineage is still derived on demand
//! by `medallion lineage` and `/api/lineage`).

use std::path::PathBuf;

use serde::Deserialize;

use super::{Setting, Sources};
use crate::error::Result;

const LINEAGE_URL: Setting =
    Setting { key: "lineage.url", flag: Some("--lineage-url"), env: &["MEDALLION_LINEAGE_URL"] };
const LINEAGE_FILE: Setting =
    Setting { key: "lineage.file", flag: Some("--lineage-file"), env: &["MEDALLION_LINEAGE_FILE"] };
const LINEAGE_NAMESPACE: Setting =
    Setting { key: "lineage.namespace", flag: None, env: &["MEDALLION_LINEAGE_NAMESPACE"] };

/// The jobs' namespace when none is configured.
pub const DEFAULT_NAMESPACE: &str = "medallion";

/// `[lineage]` as written in medallion.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LineageFile {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// The flags of the batch commands that set `[lineage]`, as typed.
#[derive(Clone, Default)]
pub struct LineageFlags {
    /// `--lineage-url` (may hold a token: never printed).
    pub url: Option<String>,
    /// `--lineage-file`.
    pub file: Option<String>,
}

/// Never shows the URL (it may carry a token).
impl std::fmt::Debug for LineageFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineageFlags")
            .field("url", &self.url.as_ref().map(|_| "set"))
            .field("file", &self.file)
            .finish()
    }
}

/// The resolved `[lineage]`.
#[derive(Clone, PartialEq)]
pub struct LineageConfig {
    /// Receiver of the events (Marquez: `http://host:5000/api/v1/lineage`);
    /// may hold a token, so it is never printed.
    pub url: Option<String>,
    /// JSON-lines file the events are appended to.
    pub file: Option<PathBuf>,
    pub namespace: String,
}

impl Default for LineageConfig {
    fn default() -> Self {
        LineageConfig { url: None, file: None, namespace: DEFAULT_NAMESPACE.to_string() }
    }
}

/// Never shows the URL (it may carry a token).
impl std::fmt::Debug for LineageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineageConfig")
            .field("url", &self.url.as_ref().map(|_| "set"))
            .field("file", &self.file)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl LineageConfig {
    /// Whether run events are emitted at all.
    pub fn emits(&self) -> bool {
        self.url.is_some() || self.file.is_some()
    }

    pub(super) fn resolve(flags: LineageFlags, file: LineageFile, sources: &Sources) -> Result<LineageConfig> {
        Ok(LineageConfig {
            url: sources.text(&LINEAGE_URL, flags.url, file.url),
            file: sources.text(&LINEAGE_FILE, flags.file, file.file).map(PathBuf::from),
            namespace: sources.text(&LINEAGE_NAMESPACE, None, file.namespace).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        })
    }
}
