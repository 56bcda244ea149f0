-- gold.kpi_revenue: the headline figures of the snapshot.
-- avg_order_value = total revenue / distinct orders.
-- Aggregated per customer first (an order belongs to one customer, so the
-- snapshot's distinct orders are the sum of each customer's).
WITH per_customer AS (
    SELECT
        customer_id,
        SUM(line_total)              AS revenue,
        COUNT(DISTINCT order_id)     AS orders
    FROM silver.sales_master
    WHERE snapshot_date = {{ snapshot_date }}
    GROUP BY customer_id
)
SELECT
    {{ snapshot_date }}                                        AS snapshot_date,
    SUM(revenue)                                               AS total_revenue,
    SUM(orders)                                                AS orders,
    COUNT(customer_id)                                         AS customers,
    SUM(revenue) / NULLIF(SUM(orders), 0)                      AS avg_order_value
FROM per_customer
