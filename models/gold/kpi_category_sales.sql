-- gold.kpi_category_sales: revenue, units and orders per product category.
SELECT
    {{ snapshot_date }}          AS snapshot_date,
    category_name,
    SUM(line_total)              AS revenue,
    SUM(CAST(quantity AS BIGINT)) AS quantity,
    COUNT(DISTINCT order_id)     AS orders
FROM silver.sales_master
WHERE snapshot_date = {{ snapshot_date }}
GROUP BY category_name
ORDER BY revenue DESC
