//! The combined views, schema `serving`.
//!
//! `serving.sales_by_country` = batch revenue per country from the latest
//! gold snapshot ∪ the stream's live totals, with `source` = 'batch' | 'live'.
//! Each part is a SQL file in `models/serving/`; a part whose tables do not
//! exist yet (no batch run, say) is left out, so the view always exists.
//! A server registers the views again whenever a table changes version, so
//! they always read the newest Delta versions.

use datafusion::prelude::SessionContext;

use super::{Layer, TableName};
use crate::tables::SERVING_SALES_BY_COUNTRY;

/// (view, its parts, unioned).
const VIEWS: &[(TableName, &[&str])] = &[(
    SERVING_SALES_BY_COUNTRY,
    &[
        include_str!("../../models/serving/sales_by_country.batch.sql"),
        include_str!("../../models/serving/sales_by_country.live.sql"),
    ],
)];

/// Creates or replaces every view from the parts that plan today.
pub async fn register(ctx: &SessionContext) {
    for (name, parts) in VIEWS {
        let mut planned = Vec::new();
        for part in parts.iter() {
            if ctx.state().create_logical_plan(part).await.is_ok() {
                planned.push(format!("SELECT * FROM (\n{part}\n)"));
            }
        }
        if planned.is_empty() {
            continue;
        }
        let sql = format!("CREATE OR REPLACE VIEW {name} AS {}", planned.join("\nUNION ALL\n"));
        let created = async { ctx.sql(&sql).await?.collect().await };
        if let Err(err) = created.await {
            tracing::warn!("cannot create view {name}: {}", crate::error::one_line(&err.to_string()));
        }
    }
}

/// Every view with the SQL of its parts (for lineage).
pub fn definitions() -> Vec<(TableName, Vec<&'static str>)> {
    VIEWS.iter().map(|(name, parts)| (name.clone(), parts.to_vec())).collect()
}

/// Names of the views registered.
pub fn registered(ctx: &SessionContext) -> Vec<String> {
    ctx.catalog("datafusion").and_then(|c| c.schema(Layer::Serving.as_str())).map(|s| s.table_names()).unwrap_or_default()
}
