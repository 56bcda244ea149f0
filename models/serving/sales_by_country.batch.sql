-- serving.sales_by_country, batch part: revenue per country of the latest
-- gold snapshot (gold.kpi_country_sales).
SELECT
    country,
    revenue,
    orders                              AS transactions,
    'batch'                             AS source,
    CAST(snapshot_date AS TIMESTAMP)    AS as_of
FROM gold.kpi_country_sales
WHERE snapshot_date = (SELECT MAX(snapshot_date) FROM gold.kpi_country_sales)
