-- silver.sales_master: one row per order line, joined to its order, product,
-- category and customer (the seed's five-table join), typed and standardised.
--
-- Column rules:
--   line_total   = unit_price × quantity × (1 − discount), in double precision
--   discount     NULL → 0 (no discount recorded)
--   country      trimmed, matched case-insensitively against ref.country_map
--                (canonical Northwind spellings + aliases from config);
--                unknown spellings are kept trimmed; NULL or blank → 'Unknown'
--   city, company_name, shipped_date: NULL stays NULL
--   _*_found     technical flags for the foreign-key expectations; columns
--                starting with _ are not written to silver
-- Rows are checked by sales_master.expectations.toml.
WITH lines AS (
    SELECT * FROM bronze.order_details WHERE _ingestion_date = {{ snapshot_date }}
), orders AS (
    SELECT * FROM bronze.orders WHERE _ingestion_date = {{ snapshot_date }}
), products AS (
    SELECT * FROM bronze.products WHERE _ingestion_date = {{ snapshot_date }}
), categories AS (
    SELECT * FROM bronze.categories WHERE _ingestion_date = {{ snapshot_date }}
), customers AS (
    SELECT * FROM bronze.customers WHERE _ingestion_date = {{ snapshot_date }}
)
SELECT
    CAST(l.order_id AS INT)                                    AS order_id,
    CAST(l.product_id AS INT)                                  AS product_id,
    o.customer_id                                              AS customer_id,
    CAST(o.employee_id AS INT)                                 AS employee_id,
    o.order_date                                               AS order_date,
    o.required_date                                            AS required_date,
    o.shipped_date                                             AS shipped_date,
    p.product_name                                             AS product_name,
    CAST(p.category_id AS INT)                                 AS category_id,
    c.category_name                                            AS category_name,
    cu.company_name                                            AS company_name,
    cu.city                                                    AS city,
    CASE
        WHEN cu.country IS NULL OR trim(cu.country) = '' THEN 'Unknown'
        ELSE COALESCE(m.country, trim(cu.country))
    END                                                        AS country,
    CAST(l.unit_price AS DOUBLE)                               AS unit_price,
    CAST(l.quantity AS INT)                                    AS quantity,
    CAST(COALESCE(l.discount, 0) AS DOUBLE)                    AS discount,
    CAST(l.unit_price AS DOUBLE) * CAST(l.quantity AS DOUBLE)
        * (1 - CAST(COALESCE(l.discount, 0) AS DOUBLE))        AS line_total,
    {{ snapshot_date }}                                        AS snapshot_date,
    o.order_id IS NOT NULL                                     AS _order_found,
    p.product_id IS NOT NULL                                   AS _product_found,
    c.category_id IS NOT NULL                                  AS _category_found,
    cu.customer_id IS NOT NULL                                 AS _customer_found
FROM lines l
LEFT JOIN orders o      ON o.order_id = l.order_id
LEFT JOIN products p    ON p.product_id = l.product_id
LEFT JOIN categories c  ON c.category_id = p.category_id
LEFT JOIN customers cu  ON cu.customer_id = o.customer_id
LEFT JOIN ref.country_map m ON m.key = lower(trim(cu.country))
