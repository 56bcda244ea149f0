//! Typed names of the lake: a `Layer` (the schemas a session has) and a
//! `TableName` (`layer.table`, as SQL and messages show it).
//!
//! The three stored layers (`bronze`, `silver`, `gold`) hold Delta tables;
//! `audit` holds Delta tables too but stands outside the medallion (the
//! query log, readable by admins only: see `crate::audit`); `ref`, `live`
//! and `serving` exist only in sessions (tables built from configuration,
//! the stream's in-memory state, views).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A schema of a session: a layer of the medallion, or one of the schemas
/// sessions add beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Bronze,
    Silver,
    Gold,
    /// Reference tables from configuration (`ref.country_map`).
    Ref,
    /// The stream's in-memory tables (`live.sales_by_country`).
    Live,
    /// Views combining batch and live data (`serving.sales_by_country`).
    Serving,
    /// The audit log (`audit.queries`): stored in the lake beside the
    /// medallion, never part of it, registered in admin sessions only.
    Audit,
}

impl Layer {
    /// The layers stored as Delta tables in the lake, top to bottom.
    pub const STORED: [Layer; 3] = [Layer::Bronze, Layer::Silver, Layer::Gold];

    /// Every layer with Delta tables in the lake: the medallion and the
    /// audit log.
    pub const IN_LAKE: [Layer; 4] = [Layer::Bronze, Layer::Silver, Layer::Gold, Layer::Audit];

    /// Every schema a session has (the `audit` schema stays empty outside
    /// admin sessions).
    pub const ALL: [Layer; 7] =
        [Layer::Bronze, Layer::Silver, Layer::Gold, Layer::Ref, Layer::Live, Layer::Serving, Layer::Audit];

    /// The schema name, which is also the layer's folder (or default bucket).
    pub const fn as_str(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Gold => "gold",
            Layer::Ref => "ref",
            Layer::Live => "live",
            Layer::Serving => "serving",
            Layer::Audit => "audit",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layer {
    type Err = Error;

    fn from_str(name: &str) -> Result<Layer, Error> {
        Layer::ALL
            .into_iter()
            .find(|layer| layer.as_str() == name)
            .ok_or_else(|| Error::Config(format!("unknown layer '{name}': use one of bronze, silver, gold, ref, live, serving, audit")))
    }
}

/// A table of a session, shown as `layer.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub layer: Layer,
    pub table: Cow<'static, str>,
}

impl TableName {
    /// A name known when the program is written (see `crate::tables`).
    pub const fn new(layer: Layer, table: &'static str) -> TableName {
        TableName { layer, table: Cow::Borrowed(table) }
    }

    /// A name found at run time (a folder of the lake, a model file).
    pub fn owned(layer: Layer, table: impl Into<String>) -> TableName {
        TableName { layer, table: Cow::Owned(table.into()) }
    }

    /// The table part, without the layer.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The same layer, with `suffix` after the table name (`x` → `x_quarantine`).
    pub fn with_suffix(&self, suffix: &str) -> TableName {
        TableName::owned(self.layer, format!("{}{suffix}", self.table))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.layer, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_show_as_layer_dot_table_and_layers_parse_back() {
        const RUNS: TableName = TableName::new(Layer::Gold, "pipeline_runs");
        assert_eq!(RUNS.to_string(), "gold.pipeline_runs");
        assert_eq!(TableName::owned(Layer::Bronze, "orders").with_suffix("_quarantine").to_string(), "bronze.orders_quarantine");
        for layer in Layer::ALL {
            assert_eq!(layer.as_str().parse::<Layer>().unwrap(), layer);
        }
        assert!("platinum".parse::<Layer>().is_err());
        assert_eq!(serde_json::to_string(&Layer::Serving).unwrap(), "\"serving\"");
    }
}
