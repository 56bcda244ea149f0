-- gold.rfm_customers: recency, frequency and monetary scores per customer.
--   reference date = max(order_date) + 1 day over the whole snapshot
--   recency_days   = reference date − the customer's last order date
--   frequency      = distinct orders; monetary = sum of line_total
--   r_score = NTILE(5) over (recency_days DESC, customer_id)
--   f_score = NTILE(5) over (frequency ASC, customer_id)
--   m_score = NTILE(5) over (monetary ASC, customer_id)
-- Segment: the first rule that matches, in the order written below.
WITH sales AS (
    SELECT * FROM silver.sales_master WHERE snapshot_date = {{ snapshot_date }}
), reference AS (
    SELECT MAX(to_unixtime(order_date)) / 86400 + 1 AS reference_day FROM sales
), per_customer AS (
    SELECT
        customer_id,
        MAX(company_name)                       AS company_name,
        MAX(country)                            AS country,
        MAX(to_unixtime(order_date)) / 86400    AS last_order_day,
        COUNT(DISTINCT order_id)                AS frequency,
        SUM(line_total)                         AS monetary
    FROM sales
    GROUP BY customer_id
), measured AS (
    SELECT p.*, CAST(r.reference_day - p.last_order_day AS BIGINT) AS recency_days
    FROM per_customer p CROSS JOIN reference r
), scored AS (
    SELECT
        customer_id, company_name, country, recency_days, frequency, monetary,
        CAST(NTILE(5) OVER (ORDER BY recency_days DESC, customer_id) AS INT) AS r_score,
        CAST(NTILE(5) OVER (ORDER BY frequency ASC, customer_id) AS INT)     AS f_score,
        CAST(NTILE(5) OVER (ORDER BY monetary ASC, customer_id) AS INT)      AS m_score
    FROM measured
)
SELECT
    {{ snapshot_date }} AS snapshot_date,
    customer_id, company_name, country, recency_days, frequency, monetary,
    r_score, f_score, m_score,
    CASE
        WHEN r_score >= 4 AND f_score >= 4 THEN 'Champions'
        WHEN r_score >= 3 AND f_score >= 3 THEN 'Loyal Customers'
        WHEN r_score >= 4 AND f_score <= 2 THEN 'Potential Loyalists'
        WHEN r_score <= 2 AND f_score >= 3 THEN 'At Risk'
        WHEN r_score <= 2 AND f_score <= 2 THEN 'Hibernating'
        ELSE 'Need Attention'
    END AS segment
FROM scored
ORDER BY customer_id
