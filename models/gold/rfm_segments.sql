-- gold.rfm_segments: customers and revenue per RFM segment, with each
-- segment's share of total revenue (0..1). Built on gold.rfm_customers.
SELECT
    {{ snapshot_date }}                                  AS snapshot_date,
    segment,
    COUNT(*)                                             AS customers,
    SUM(monetary)                                        AS revenue,
    SUM(monetary) / SUM(SUM(monetary)) OVER ()           AS share_of_revenue
FROM gold.rfm_customers
WHERE snapshot_date = {{ snapshot_date }}
GROUP BY segment
ORDER BY revenue DESC
