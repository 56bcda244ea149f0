-- serving.sales_by_country, live part: the stream's running totals
-- (live.sales_by_country, complete mode).
SELECT
    pays                                AS country,
    total_ventes_live                   AS revenue,
    nb_transactions                     AS transactions,
    'live'                              AS source,
    CAST(last_event_time AS TIMESTAMP)  AS as_of
FROM live.sales_by_country
