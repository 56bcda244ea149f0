-- gold.kpi_revenue: the headline figures of the snapshot.
-- avg_order_value = total revenue / distinct orders.
-- Built on gold.rfm_customers, which holds each customer's revenue
-- (monetary) and distinct orders (frequency) of the snapshot: an order
-- belongs to one customer, so the snapshot's distinct orders are the sum of
-- each customer's, and silver is not aggregated a second time.
SELECT
    {{ snapshot_date }}                                        AS snapshot_date,
    SUM(monetary)                                              AS total_revenue,
    SUM(frequency)                                             AS orders,
    COUNT(customer_id)                                         AS customers,
    SUM(monetary) / NULLIF(SUM(frequency), 0)                  AS avg_order_value
FROM gold.rfm_customers
WHERE snapshot_date = {{ snapshot_date }}
