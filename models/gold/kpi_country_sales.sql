-- gold.kpi_country_sales: revenue, orders and customers per country. The
-- batch side of the combined view serving.sales_by_country.
SELECT
    {{ snapshot_date }}          AS snapshot_date,
    country,
    SUM(line_total)              AS revenue,
    COUNT(DISTINCT order_id)     AS orders,
    COUNT(DISTINCT customer_id)  AS customers
FROM silver.sales_master
WHERE snapshot_date = {{ snapshot_date }}
GROUP BY country
ORDER BY revenue DESC
