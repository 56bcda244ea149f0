-- gold.kpi_top_countries: the three countries with the highest revenue
-- (ties broken by country name), taken from gold.kpi_country_sales.
SELECT {{ snapshot_date }} AS snapshot_date, country, revenue, "rank"
FROM (
    SELECT
        country,
        revenue,
        CAST(ROW_NUMBER() OVER (ORDER BY revenue DESC, country) AS INT) AS "rank"
    FROM gold.kpi_country_sales
    WHERE snapshot_date = {{ snapshot_date }}
) ranked
WHERE "rank" <= 3
ORDER BY "rank"
