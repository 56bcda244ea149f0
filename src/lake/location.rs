//! Where each table of the lake lives, given the one lake URL.
//!
//! * `file:///data/lake`      → `file:///data/lake/<layer>/<table>`
//! * `s3://` (no bucket)      → `s3://<bucket of layer>/<table>` — one bucket per
//!   layer (`bronze`, `silver`, `gold` by default, renamable in config), the
//!   seed's MinIO layout; the audit log goes to `s3://<gold bucket>/_audit/<table>`
//!   unless `[s3.buckets] audit` names a bucket
//! * `s3://bucket/prefix`     → `s3://bucket/prefix/<layer>/<table>`
//!
//! Nothing here touches storage: it only computes URLs.

use std::collections::BTreeMap;

use url::Url;

use crate::error::{Error, Result};

/// The audit log's layer (`Layer::Audit`).
const AUDIT_LAYER: &str = "audit";
/// Where the audit log lives in the gold bucket when no `audit` bucket is
/// configured (a folder no gold table can be named: it has no `_delta_log`).
const AUDIT_FOLDER: &str = "_audit";

/// The parsed lake URL.
#[derive(Debug, Clone)]
pub enum LakeLocation {
    /// All layers below one root URL (a local folder, or a bucket and prefix).
    Rooted(Url),
    /// S3 with one bucket per layer.
    BucketPerLayer { buckets: BTreeMap<String, String> },
}

impl LakeLocation {
    /// Parses a lake URL. A bare local path is accepted and made absolute.
    pub fn parse(lake: &str, buckets: &BTreeMap<String, String>) -> Result<Self> {
        let trimmed = lake.trim();
        if trimmed == "s3://" || trimmed == "s3:" || trimmed == "s3:///" {
            return Ok(LakeLocation::BucketPerLayer { buckets: buckets.clone() });
        }
        let url = if trimmed.contains("://") {
            Url::parse(trimmed).map_err(|e| {
                Error::Config(format!("invalid lake URL '{trimmed}': {e}; use file:///path, s3:// or s3://bucket/prefix"))
            })?
        } else {
            let path = std::path::Path::new(trimmed);
            let absolute = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir().map_err(|e| Error::other("current directory", e))?.join(path)
            };
            Url::from_directory_path(&absolute)
                .map_err(|_| Error::Config(format!("invalid lake path '{trimmed}'")))?
        };
        match url.scheme() {
            "file" | "memory" => Ok(LakeLocation::Rooted(with_trailing_slash(url))),
            "s3" | "s3a" => {
                if url.host_str().unwrap_or("").is_empty() {
                    return Ok(LakeLocation::BucketPerLayer { buckets: buckets.clone() });
                }
                let mut url = url;
                if url.scheme() == "s3a" {
                    url = Url::parse(&url.as_str().replacen("s3a://", "s3://", 1)).expect("valid s3 url");
                }
                Ok(LakeLocation::Rooted(with_trailing_slash(url)))
            }
            other => Err(Error::Config(format!(
                "unsupported lake URL scheme '{other}': use file:///path, s3:// or s3://bucket/prefix"
            ))),
        }
    }

    /// Whether the lake is on S3.
    pub fn is_s3(&self) -> bool {
        match self {
            LakeLocation::Rooted(url) => url.scheme() == "s3",
            LakeLocation::BucketPerLayer { .. } => true,
        }
    }

    /// The URL of a layer's folder (ends with `/`).
    pub fn layer_url(&self, layer: &str) -> Url {
        match self {
            LakeLocation::Rooted(root) => root.join(&format!("{layer}/")).expect("layer names are URL-safe"),
            LakeLocation::BucketPerLayer { buckets } => match buckets.get(layer) {
                Some(bucket) => Url::parse(&format!("s3://{bucket}/")).expect("bucket names are URL-safe"),
                // The audit log needs no bucket of its own unless one is named.
                None if layer == AUDIT_LAYER => {
                    let gold = buckets.get("gold").map(String::as_str).unwrap_or("gold");
                    Url::parse(&format!("s3://{gold}/{AUDIT_FOLDER}/")).expect("bucket names are URL-safe")
                }
                None => Url::parse(&format!("s3://{layer}/")).expect("bucket names are URL-safe"),
            },
        }
    }

    /// The URL of one table's folder (no trailing slash, as deltalake expects).
    pub fn table_url(&self, layer: &str, table: &str) -> Url {
        let url = self.layer_url(layer).join(table).expect("table names are URL-safe");
        Url::parse(url.as_str().trim_end_matches('/')).expect("valid url")
    }

    /// Every bucket this lake writes to (S3 only).
    pub fn buckets(&self, layers: &[&str]) -> Vec<String> {
        let mut buckets: Vec<String> =
            layers.iter().filter_map(|l| self.layer_url(l).host_str().map(str::to_string)).collect();
        buckets.sort();
        buckets.dedup();
        buckets
    }

    /// A printable description.
    pub fn describe(&self) -> String {
        match self {
            LakeLocation::Rooted(root) => root.to_string(),
            LakeLocation::BucketPerLayer { buckets } => {
                let names: Vec<String> = buckets.iter().map(|(l, b)| format!("{l}→s3://{b}")).collect();
                names.join(", ")
            }
        }
    }
}

fn with_trailing_slash(url: Url) -> Url {
    if url.path().ends_with('/') {
        url
    } else {
        Url::parse(&format!("{}/", url.as_str())).expect("valid url")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_buckets() -> BTreeMap<String, String> {
        ["bronze", "silver", "gold"].iter().map(|l| (l.to_string(), l.to_string())).collect()
    }

    #[test]
    fn local_lake_puts_layers_in_folders() {
        let lake = LakeLocation::parse("file:///data/lake", &default_buckets()).unwrap();
        assert_eq!(lake.table_url("bronze", "orders").as_str(), "file:///data/lake/bronze/orders");
    }

    #[test]
    fn bare_s3_uses_one_bucket_per_layer() {
        let mut buckets = default_buckets();
        buckets.insert("gold".into(), "analytics".into());
        let lake = LakeLocation::parse("s3://", &buckets).unwrap();
        assert_eq!(lake.table_url("silver", "sales_master").as_str(), "s3://silver/sales_master");
        assert_eq!(lake.table_url("gold", "kpi_revenue").as_str(), "s3://analytics/kpi_revenue");
        assert!(lake.is_s3());
        // The audit log: in the gold bucket unless it has a bucket of its own.
        assert_eq!(lake.table_url("audit", "queries").as_str(), "s3://analytics/_audit/queries");
        buckets.insert("audit".into(), "compliance".into());
        let lake = LakeLocation::parse("s3://", &buckets).unwrap();
        assert_eq!(lake.table_url("audit", "queries").as_str(), "s3://compliance/queries");
    }

    #[test]
    fn s3_with_bucket_puts_layers_under_prefix() {
        let lake = LakeLocation::parse("s3://lakehouse/prod", &default_buckets()).unwrap();
        assert_eq!(lake.table_url("gold", "kpi_revenue").as_str(), "s3://lakehouse/prod/gold/kpi_revenue");
        assert_eq!(lake.buckets(&["bronze", "gold"]), vec!["lakehouse".to_string()]);
    }

    #[test]
    fn unknown_scheme_is_rejected_with_advice() {
        let err = LakeLocation::parse("hdfs://x/y", &default_buckets()).unwrap_err().to_string();
        assert!(err.contains("file:///path"), "{err}");
    }
}
