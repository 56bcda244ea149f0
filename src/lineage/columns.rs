//! What one query reads, table by table and column by column, read off its
//! logical plan (this module knows nothing of models: the pipeline's
//! lineage events use it while models run).
//!
//! Each output column is traced down the plan to the table columns its
//! value is computed from (*direct* inputs, OpenLineage's `DIRECT`): through
//! projections (every column an expression names, scalar subqueries
//! included), aggregates and window functions (their arguments), joins and
//! unions (the side or sides the column comes from), and operators that
//! pass columns through (filters, sorts, limits, aliases). The columns that
//! decide *which* rows there are (filters, join keys, grouping keys, sort
//! and window keys) are the query's *indirect* inputs (`INDIRECT`), kept
//! for the whole table as OpenLineage's column-lineage facet does.

use std::collections::BTreeSet;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Column;
use datafusion::logical_expr::utils::grouping_set_to_exprlist;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

/// A column of a table (`silver.sales_master`, `line_total`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct TableColumn {
    pub table: String,
    pub column: String,
}

/// One output column and the columns its values are computed from (empty
/// for a constant or `COUNT(*)`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldLineage {
    pub name: String,
    pub inputs: BTreeSet<TableColumn>,
}

/// The lineage of one query's result.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ColumnLineage {
    /// Each output column, in output order.
    pub fields: Vec<FieldLineage>,
    /// The columns that filter, join, group or order the rows.
    pub indirect: BTreeSet<TableColumn>,
}

impl ColumnLineage {
    /// The direct inputs of `column`.
    pub fn inputs_of(&self, column: &str) -> Option<&BTreeSet<TableColumn>> {
        self.fields.iter().find(|f| f.name == column).map(|f| &f.inputs)
    }
}

/// The tables `sql` reads, from its logical plan in `ctx`.
pub async fn tables_read(ctx: &SessionContext, what: &str, sql: &str) -> Result<BTreeSet<String>> {
    let plan = ctx.state().create_logical_plan(sql).await.map_err(|e| Error::model(what, e))?;
    let mut read = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            read.insert(scan.table_name.to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| Error::model(what, e))?;
    Ok(read)
}

/// The column lineage of `sql`, planned in `ctx` (not run).
pub async fn column_lineage(ctx: &SessionContext, what: &str, sql: &str) -> Result<ColumnLineage> {
    let plan = ctx.state().create_logical_plan(sql).await.map_err(|e| Error::model(what, e))?;
    Ok(of_plan(&plan))
}

/// The column lineage of a logical plan.
pub fn of_plan(plan: &LogicalPlan) -> ColumnLineage {
    let fields = plan
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let mut inputs = BTreeSet::new();
            trace(plan, index, &mut inputs);
            FieldLineage { name: field.name().clone(), inputs }
        })
        .collect();
    let mut indirect = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        for (input, expr) in deciding_exprs(node) {
            trace_expr(input, expr, &mut indirect);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ColumnLineage { fields, indirect }
}

/// Adds to `inputs` the table columns output column `index` of `plan` is
/// computed from.
fn trace(plan: &LogicalPlan, index: usize, inputs: &mut BTreeSet<TableColumn>) {
    match plan {
        LogicalPlan::TableScan(scan) => {
            if let Some(field) = scan.projected_schema.fields().get(index) {
                inputs.insert(TableColumn { table: scan.table_name.to_string(), column: field.name().clone() });
            }
        }
        LogicalPlan::Projection(projection) => {
            if let Some(expr) = projection.expr.get(index) {
                trace_expr(&projection.input, expr, inputs);
            }
        }
        LogicalPlan::Aggregate(aggregate) => {
            let mut outputs: Vec<Option<&Expr>> = match grouping_set_to_exprlist(&aggregate.group_expr) {
                Ok(groups) => groups.into_iter().map(Some).collect(),
                Err(_) => return,
            };
            if aggregate.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
                // The internal grouping id that follows the grouping columns.
                outputs.push(None);
            }
            outputs.extend(aggregate.aggr_expr.iter().map(Some));
            if let Some(Some(expr)) = outputs.get(index) {
                trace_expr(&aggregate.input, expr, inputs);
            }
        }
        LogicalPlan::Window(window) => {
            let passed = window.input.schema().fields().len();
            if index < passed {
                trace(&window.input, index, inputs);
            } else if let Some(expr) = window.window_expr.get(index - passed) {
                trace_expr(&window.input, expr, inputs);
            }
        }
        LogicalPlan::Join(join) => {
            let left = join.left.schema().fields().len();
            match join.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => trace(&join.left, index, inputs),
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => trace(&join.right, index, inputs),
                _ if index < left => trace(&join.left, index, inputs),
                _ => trace(&join.right, index - left, inputs),
            }
        }
        LogicalPlan::Union(union) => {
            for input in &union.inputs {
                trace(input, index, inputs);
            }
        }
        other => {
            // Operators that pass their single input's columns through
            // (filter, sort, limit, alias, distinct, repartition…).
            let children = other.inputs();
            if let [only] = children.as_slice() {
                if only.schema().fields().len() == other.schema().fields().len() {
                    trace(only, index, inputs);
                }
            }
        }
    }
}

/// Adds the table columns `expr` (evaluated over `input`) reads, scalar
/// subqueries included.
fn trace_expr(input: &LogicalPlan, expr: &Expr, inputs: &mut BTreeSet<TableColumn>) {
    for column in expr.column_refs() {
        if let Some(index) = index_in(input, column) {
            trace(input, index, inputs);
        }
    }
    let _ = expr.apply(|node| {
        if let Expr::ScalarSubquery(subquery) = node {
            trace(&subquery.subquery, 0, inputs);
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

fn index_in(plan: &LogicalPlan, column: &Column) -> Option<usize> {
    plan.schema().maybe_index_of_column(column)
}

/// The expressions of `node` that decide which rows exist or their order,
/// each with the plan it is evaluated over.
fn deciding_exprs(node: &LogicalPlan) -> Vec<(&LogicalPlan, &Expr)> {
    match node {
        LogicalPlan::Filter(filter) => vec![(filter.input.as_ref(), &filter.predicate)],
        LogicalPlan::Aggregate(aggregate) => aggregate.group_expr.iter().map(|e| (aggregate.input.as_ref(), e)).collect(),
        LogicalPlan::Sort(sort) => sort.expr.iter().map(|s| (sort.input.as_ref(), &s.expr)).collect(),
        LogicalPlan::Join(join) => {
            let mut exprs: Vec<(&LogicalPlan, &Expr)> = Vec::new();
            for (left, right) in &join.on {
                exprs.push((join.left.as_ref(), left));
                exprs.push((join.right.as_ref(), right));
            }
            if let Some(filter) = &join.filter {
                // Evaluated over both sides: each column is found in one.
                exprs.push((join.left.as_ref(), filter));
                exprs.push((join.right.as_ref(), filter));
            }
            exprs
        }
        LogicalPlan::Window(window) => window
            .window_expr
            .iter()
            .filter_map(|e| match e {
                Expr::WindowFunction(function) => Some(function),
                Expr::Alias(alias) => match alias.expr.as_ref() {
                    Expr::WindowFunction(function) => Some(function),
                    _ => None,
                },
                _ => None,
            })
            .flat_map(|function| {
                let params = &function.params;
                params.partition_by.iter().chain(params.order_by.iter().map(|s| &s.expr))
            })
            .map(|e| (window.input.as_ref(), e))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;

    use super::*;

    fn col(table: &str, column: &str) -> TableColumn {
        TableColumn { table: table.into(), column: column.into() }
    }

    async fn session() -> SessionContext {
        let ctx = SessionContext::new();
        ctx.sql("CREATE SCHEMA s").await.unwrap();
        let orders = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("customer", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("day", DataType::Date32, false),
        ]);
        let customers = Schema::new(vec![Field::new("name", DataType::Utf8, false), Field::new("country", DataType::Utf8, false)]);
        for (name, schema) in [("s.orders", orders), ("s.customers", customers)] {
            let table = MemTable::try_new(Arc::new(schema), vec![vec![]]).unwrap();
            ctx.register_table(name, Arc::new(table)).unwrap();
        }
        ctx
    }

    #[tokio::test]
    async fn columns_are_traced_through_joins_aggregates_windows_and_subqueries() {
        let ctx = session().await;
        let sql = "WITH per_country AS (
                SELECT c.country, SUM(o.amount * 2) AS revenue, COUNT(*) AS n
                FROM s.orders o JOIN s.customers c ON o.customer = c.name
                WHERE o.day > DATE '2020-01-01'
                GROUP BY c.country)
            SELECT country AS land, revenue, n, 7 AS seven,
                   RANK() OVER (ORDER BY revenue DESC) AS place,
                   (SELECT MAX(id) FROM s.orders) AS top_id
            FROM per_country ORDER BY land";
        let lineage = column_lineage(&ctx, "test", sql).await.unwrap();
        let names: Vec<&str> = lineage.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["land", "revenue", "n", "seven", "place", "top_id"]);
        let of = |c: &str| lineage.inputs_of(c).unwrap().iter().cloned().collect::<Vec<_>>();
        assert_eq!(of("land"), [col("s.customers", "country")]);
        assert_eq!(of("revenue"), [col("s.orders", "amount")]);
        assert_eq!(of("n"), []);
        assert_eq!(of("seven"), []);
        // A rank's value comes from the column it orders by.
        assert_eq!(of("place"), [col("s.orders", "amount")]);
        assert_eq!(of("top_id"), [col("s.orders", "id")]);
        let indirect: Vec<TableColumn> = lineage.indirect.iter().cloned().collect();
        assert_eq!(
            indirect,
            [col("s.customers", "country"), col("s.customers", "name"), col("s.orders", "amount"), col("s.orders", "customer"), col("s.orders", "day")]
        );
    }

    #[tokio::test]
    async fn unions_take_both_sides() {
        let ctx = session().await;
        let sql = "SELECT customer AS who FROM s.orders UNION ALL SELECT name FROM s.customers";
        let lineage = column_lineage(&ctx, "test", sql).await.unwrap();
        let inputs: Vec<TableColumn> = lineage.inputs_of("who").unwrap().iter().cloned().collect();
        assert_eq!(inputs, [col("s.customers", "name"), col("s.orders", "customer")]);
        assert!(lineage.indirect.is_empty());
    }
}
