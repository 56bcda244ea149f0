"""medallion's SQL models, made runnable by the reference engines of
scripts/bench-batch.sh (Sail's Spark SQL and DuckDB).

The reference engines run the very files medallion runs (models/silver/*.sql
with their expectations, models/gold/*.sql), read at run time and rewritten
by the few rules below, so the benchmark follows the models when they change.
The rewrites bridge dialects, not business rules:

* ``{{ snapshot_date }}`` becomes ``DATE 'YYYY-MM-DD'``, as medallion renders it.
* ``to_unixtime(x)`` (DataFusion: seconds since the epoch as BIGINT) has no
  DuckDB or Spark twin; the models only apply it to DATE columns, so it
  becomes ``days since the epoch * 86400`` as BIGINT, the same number.
  medallion then divides by 86400 with DataFusion's integer division; Spark
  and DuckDB divide BIGINTs into a DOUBLE. The quotient is a whole number of
  days either way (dates have no time part), so recency_days is the same.
* Spark SQL only: ``"name"`` is an identifier in DataFusion and DuckDB but a
  string in Spark, so it becomes ``name`` in backquotes; ``layer.table`` becomes
  the temporary view ``layer__table`` (Spark has no schemas for temporary views).

Each model is evaluated as medallion evaluates it (models::write_checked):
* rules with ``on_fail = "fail"`` are counted first, by their own query over
  the model's (``count_sql``); one failure stops the run before anything is
  written;
* the model's query then runs once, as ``checked_sql``: the model's columns
  without the ``_`` technical ones, and one boolean column per rule,
  ``COALESCE((check), false) AS "__rule_<i>"`` (a NULL check fails);
* its rows are split by those columns: rows passing every rule go to the
  model's table (``passing_sql``), the others to ``<model>_quarantine`` with
  ``failed_rule`` (the first failed rule, in file order) and ``failed_rules``
  (all, comma separated) (``failing_sql``), and each rule's failures are
  counted (``tally_sql``);
* a model without rules is written once: no count, no split, no quarantine.
How the one evaluation is kept for the two writes is each engine's own
(duckdb_models.py, sail_pipeline.py).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models"
LAYERS = ("silver", "gold")
QUARANTINE_SUFFIX = "_quarantine"
SNAPSHOT_COLUMN = "snapshot_date"

_TEMPLATE = re.compile(r"\{\{\s*snapshot_date\s*\}\}")
_TO_UNIXTIME = re.compile(r"\bto_unixtime\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\)", re.IGNORECASE)
_QUOTED_IDENT = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"')
_TABLE_NAME = re.compile(r"\b(bronze|silver|gold|ref)\.([A-Za-z_][A-Za-z0-9_]*)\b")
_LINE_COMMENT = re.compile(r"--[^\n]*")


@dataclass
class Rule:
    name: str
    check: str
    on_fail: str = "quarantine"


@dataclass
class Model:
    layer: str
    name: str
    sql: str
    rules: list[Rule] = field(default_factory=list)

    @property
    def table(self) -> str:
        return f"{self.layer}.{self.name}"


def dependency_order(models: list[Model]) -> list[Model]:
    """`models` (in file-name order) reordered so that each comes after the
    models of its layer it reads, as medallion runs them; otherwise the file
    order stays."""
    tables = {model.table for model in models}
    reads = {
        model.table: {f"{layer}.{name}" for layer, name in _TABLE_NAME.findall(_LINE_COMMENT.sub("", model.sql))} & (tables - {model.table})
        for model in models
    }
    ordered: list[Model] = []
    done: set[str] = set()
    while len(ordered) < len(models):
        ready = [m for m in models if m.table not in done and reads[m.table] <= done]
        if not ready:
            stuck = sorted(tables - done)
            raise SystemExit(f"the models {', '.join(stuck)} read each other in a cycle")
        ordered.append(ready[0])
        done.add(ready[0].table)
    return ordered


def load_models(models_dir: Path = MODELS_DIR) -> dict[str, list[Model]]:
    """The models of each layer, in an order medallion could run them: file
    names, a model after the models of its layer it reads."""
    models: dict[str, list[Model]] = {}
    for layer in LAYERS:
        folder = models_dir / layer
        files = sorted(folder.glob("*.sql"))
        if not files:
            raise SystemExit(f"no models in {folder}")
        models[layer] = []
        for file in files:
            rules_file = file.with_name(f"{file.stem}.expectations.toml")
            rules = []
            if rules_file.exists():
                parsed = tomllib.loads(rules_file.read_text())
                rules = [Rule(r["name"], r["check"], r.get("on_fail", "quarantine")) for r in parsed.get("expectation", [])]
            models[layer].append(Model(layer, file.stem, file.read_text(), rules))
        models[layer] = dependency_order(models[layer])
    return models


def spark_view(table: str) -> str:
    """The Spark temporary view standing for ``layer.table``."""
    layer, name = table.split(".", 1)
    return f"{layer}__{name}"


def render(sql: str, date: str, dialect: str) -> str:
    """The model's SQL for one date in `dialect`: "datafusion" (medallion's
    own, only the date filled in), "duckdb" or "spark"."""
    sql = _LINE_COMMENT.sub("", sql)
    sql = _TEMPLATE.sub(f"DATE '{date}'", sql)
    if "{{" in sql:
        raise SystemExit(f"unknown template variable in: {sql[sql.index('{{'):][:40]}")
    if dialect == "datafusion":
        return sql
    if dialect == "duckdb":
        days = "date_diff('day', DATE '1970-01-01', {})"
    elif dialect == "spark":
        days = "unix_date({})"
        sql = _QUOTED_IDENT.sub(r"`\1`", sql)
        sql = _TABLE_NAME.sub(r"\1__\2", sql)
    else:
        raise ValueError(dialect)
    return _TO_UNIXTIME.sub(lambda m: f"(CAST({days.format(m[1])} AS BIGINT) * 86400)", sql)


def quote(name: str, dialect: str) -> str:
    return f"`{name}`" if dialect == "spark" else '"' + name.replace('"', '""') + '"'


def _passes(rule: Rule) -> str:
    return f"COALESCE(({rule.check}), false)"


def all_pass(rules: list[Rule]) -> str:
    return " AND ".join(_passes(r) for r in rules) if rules else "true"


def count_sql(rules: list[Rule], relation: str, dialect: str) -> str:
    """One row: failures per rule, then the passing rows, over the model's
    own rows (as quality::count_failures_sql; used for the fail-the-run
    rules, before the model is written)."""
    columns = [
        f"CAST(SUM(CASE WHEN {_passes(r)} THEN 0 ELSE 1 END) AS BIGINT) AS {quote(r.name, dialect)}" for r in rules
    ]
    columns.append(f"CAST(SUM(CASE WHEN {all_pass(rules)} THEN 1 ELSE 0 END) AS BIGINT) AS passing_rows")
    return f"SELECT {', '.join(columns)} FROM {relation}"


def rule_column(index: int) -> str:
    """The boolean column of the `index`-th rule in ``checked_sql``."""
    return f"__rule_{index}"


def checked_sql(rules: list[Rule], relation: str, columns: list[str], dialect: str) -> str:
    """The query a model runs once (models::checked_query): `columns` (the
    model's, technical ones dropped) and one boolean column per rule, false
    when the rule fails or gives NULL."""
    select = [quote(c, dialect) for c in columns]
    select += [f"{_passes(r)} AS {quote(rule_column(i), dialect)}" for i, r in enumerate(rules)]
    return f"SELECT {', '.join(select)} FROM {relation}"


def _all_pass_checked(rules: list[Rule], dialect: str) -> str:
    return " AND ".join(quote(rule_column(i), dialect) for i in range(len(rules))) if rules else "true"


def passing_sql(rules: list[Rule], checked: str, columns: list[str], dialect: str) -> str:
    """The rows of `checked` (the result of ``checked_sql``) passing every
    rule, with the model's columns."""
    names = ", ".join(quote(c, dialect) for c in columns)
    return f"SELECT {names} FROM {checked} WHERE {_all_pass_checked(rules, dialect)}"


def failing_sql(rules: list[Rule], checked: str, columns: list[str], dialect: str) -> str:
    """The other rows of `checked`, with ``failed_rule`` and ``failed_rules``."""
    names = ", ".join(quote(c, dialect) for c in columns)
    fails = [f"NOT {quote(rule_column(i), dialect)}" for i in range(len(rules))]
    first = " ".join(f"WHEN {fail} THEN '{r.name}'" for fail, r in zip(fails, rules))
    every = ", ".join(f"CASE WHEN {fail} THEN '{r.name}' END" for fail, r in zip(fails, rules))
    return (
        f"SELECT {names}, CASE {first} END AS failed_rule, concat_ws(',', {every}) AS failed_rules "
        f"FROM {checked} WHERE NOT ({_all_pass_checked(rules, dialect)})"
    )


def tally_sql(rules: list[Rule], checked: str, dialect: str) -> str:
    """One row over `checked`: failures per rule, then the passing rows (what
    medallion counts while it splits the rows)."""
    columns = [
        f"CAST(SUM(CASE WHEN {quote(rule_column(i), dialect)} THEN 0 ELSE 1 END) AS BIGINT) AS {quote(r.name, dialect)}"
        for i, r in enumerate(rules)
    ]
    columns.append(
        f"CAST(SUM(CASE WHEN {_all_pass_checked(rules, dialect)} THEN 1 ELSE 0 END) AS BIGINT) AS passing_rows"
    )
    return f"SELECT {', '.join(columns)} FROM {checked}"


def fatal_rules(model: "Model") -> list[Rule]:
    """The model's fail-the-run rules (``on_fail = "fail"``)."""
    return [r for r in model.rules if r.on_fail == "fail"]


def output_columns(columns: list[str]) -> list[str]:
    """The columns a model writes: technical ``_`` columns are dropped."""
    return [c for c in columns if not c.startswith("_")]


def check_fail_rules(model: Model, failures: dict[str, int]) -> None:
    """Stops the run as medallion does when a fail-the-run rule failed."""
    for rule in model.rules:
        if rule.on_fail == "fail" and failures.get(rule.name, 0) > 0:
            raise SystemExit(f"{model.table}: expectation {rule.name} failed on {failures[rule.name]} rows")


def load_country_map(path: Path) -> list[tuple[str, str]]:
    """ref.country_map as medallion builds it from its configuration: the
    rows of ``medallion sql --format json "SELECT key, country FROM
    ref.country_map"`` (bench-batch.sh writes that file)."""
    rows = json.loads(path.read_text())
    if not rows:
        raise SystemExit(f"{path}: ref.country_map is empty")
    return [(r["key"], r["country"]) for r in rows]


# The figures the benchmark compares across engines, as (name, SQL over the
# gold and silver tables, kind). Written once, rendered per dialect.
FIGURES = [
    ("total revenue", "SELECT total_revenue FROM gold.kpi_revenue WHERE snapshot_date = {{ snapshot_date }}", "number"),
    (
        "top 3 countries",
        'SELECT country FROM gold.kpi_top_countries WHERE snapshot_date = {{ snapshot_date }} ORDER BY "rank"',
        "list",
    ),
    (
        "revenue per category",
        "SELECT category_name, revenue FROM gold.kpi_category_sales WHERE snapshot_date = {{ snapshot_date }}",
        "numbers",
    ),
    (
        "customers per RFM segment",
        "SELECT segment, customers FROM gold.rfm_segments WHERE snapshot_date = {{ snapshot_date }}",
        "counts",
    ),
    ("silver rows", "SELECT COUNT(*) AS n FROM silver.sales_master WHERE snapshot_date = {{ snapshot_date }}", "count"),
    (
        "quarantined rows",
        "SELECT COUNT(*) AS n FROM silver.sales_master_quarantine WHERE snapshot_date = {{ snapshot_date }}",
        "count",
    ),
    (
        "quarantined rows per failed_rule",
        "SELECT failed_rule, COUNT(*) AS n FROM silver.sales_master_quarantine"
        " WHERE snapshot_date = {{ snapshot_date }} GROUP BY failed_rule",
        "counts",
    ),
    (
        "quarantined rows per failed_rules",
        "SELECT failed_rules, COUNT(*) AS n FROM silver.sales_master_quarantine"
        " WHERE snapshot_date = {{ snapshot_date }} GROUP BY failed_rules",
        "counts",
    ),
]


def figures(date: str, dialect: str, rows_of) -> dict:
    """Every figure of FIGURES for `date`: `rows_of(query, name)` runs one
    query, rendered for `dialect`, and returns its rows as lists."""
    return {name: figure_value(kind, rows_of(render(sql, date, dialect), name)) for name, sql, kind in FIGURES}


def figure_value(kind: str, rows: list[list]) -> object:
    """A figure from its query's rows (lists of column values), in a form
    that json keeps and agree.py compares."""
    if kind in ("number", "count"):
        if len(rows) != 1:
            raise SystemExit(f"expected one row, got {len(rows)}")
        return rows[0][0]
    if kind == "list":
        return [r[0] for r in rows]
    return {str(r[0]): r[1] for r in rows}
