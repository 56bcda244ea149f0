-- gold.kpi_country_sales: revenue, orders and customers per country. The
-- batch side of the combined view serving.sales_by_country.
-- Aggregated in two steps, per customer then per country (plain sums and
-- counts, which the engine can spill, instead of distinct sets per
-- country): an order belongs to one customer, so a country's orders are
-- the sum of its customers' distinct orders.
WITH per_customer AS (
    SELECT
        country,
        customer_id,
        SUM(line_total)              AS revenue,
        COUNT(DISTINCT order_id)     AS orders
    FROM silver.sales_master
    WHERE snapshot_date = {{ snapshot_date }}
    GROUP BY country, customer_id
)
SELECT
    {{ snapshot_date }}          AS snapshot_date,
    country,
    SUM(revenue)                 AS revenue,
    SUM(orders)                  AS orders,
    COUNT(customer_id)           AS customers
FROM per_customer
GROUP BY country
ORDER BY revenue DESC
