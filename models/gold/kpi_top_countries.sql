-- gold.kpi_top_countries: the three countries with the highest revenue
-- (ties broken by country name).
SELECT {{ snapshot_date }} AS snapshot_date, country, revenue, "rank"
FROM (
    SELECT
        country,
        SUM(line_total)                                                    AS revenue,
        CAST(ROW_NUMBER() OVER (ORDER BY SUM(line_total) DESC, country) AS INT) AS "rank"
    FROM silver.sales_master
    WHERE snapshot_date = {{ snapshot_date }}
    GROUP BY country
) ranked
WHERE "rank" <= 3
ORDER BY "rank"
