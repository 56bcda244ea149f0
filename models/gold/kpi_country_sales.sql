-- gold.kpi_country_sales: revenue, orders and customers per country. The
-- batch side of the combined view serving.sales_by_country.
-- Built on gold.rfm_customers (one row per customer of the snapshot, with
-- the customer's country, revenue and distinct orders): an order belongs to
-- one customer and a customer to one country, so a country's orders are the
-- sum of its customers' distinct orders, and silver is not aggregated a
-- second time.
SELECT
    {{ snapshot_date }}          AS snapshot_date,
    country,
    SUM(monetary)                AS revenue,
    SUM(frequency)               AS orders,
    COUNT(customer_id)           AS customers
FROM gold.rfm_customers
WHERE snapshot_date = {{ snapshot_date }}
GROUP BY country
ORDER BY revenue DESC
