-- gold.kpi_revenue: the headline figures of the snapshot.
-- avg_order_value = total revenue / distinct orders.
SELECT
    {{ snapshot_date }}                                        AS snapshot_date,
    SUM(line_total)                                            AS total_revenue,
    COUNT(DISTINCT order_id)                                   AS orders,
    COUNT(DISTINCT customer_id)                                AS customers,
    SUM(line_total) / NULLIF(COUNT(DISTINCT order_id), 0)      AS avg_order_value
FROM silver.sales_master
WHERE snapshot_date = {{ snapshot_date }}
