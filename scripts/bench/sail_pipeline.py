"""The batch pipeline of `medallion run`, done by Sail: the reference engine
of scripts/bench-batch.sh for every stage.

Sail (PyPI pysail) is a Rust engine that speaks Spark Connect; its server
runs inside this Python process (pysail.spark.SparkConnectServer on a free
port of 127.0.0.1) and PySpark's Spark Connect client drives it. The stages
do what medallion's do, on a lake of Sail's own:

  ingest     the six Northwind source tables read from PostgreSQL through
             Sail's JDBC source, each written as the date's partition of the
             Delta table bronze/<table>, with `_ingestion_timestamp` (one for
             the run), `_source` (host:port/db/public.<table>, as medallion
             writes it) and `_ingestion_date`, the partition column
  refine     models/silver/*.sql (Spark dialect, see modelsql.py) with the
             expectations: passing rows to Delta silver/sales_master, the
             others to silver/sales_master_quarantine, both partitioned by
             snapshot_date
  aggregate  models/gold/*.sql in dependency order, each to Delta gold/<model>;
             a model reads the tables written before it (rfm_segments reads
             gold.rfm_customers), as in medallion

Each model is evaluated as medallion evaluates it (see modelsql.py): the
fail-the-run rules, if any, counted first by their own query; then the
model's query with one boolean column per rule runs once, kept with
DataFrame.localCheckpoint(), and the passing rows, the failing rows and each
rule's failures are all read from that checkpoint. A model without rules is
one write of its query. Models run one after another (medallion runs
independent gold models two at a time, never two that read silver); Sail parallelises inside each query.

Where Sail differs from medallion, and what this script does instead:
  * medallion reads all six tables from one exported PostgreSQL snapshot over
    2 connections; Sail's JDBC source (connectorx underneath, no JVM) has no
    shared snapshot: each table is its own query, and orders and
    order_details are read as 2 key ranges (numPartitions 2 on order_id,
    bounds from a min/max query that counts in the ingest time). On a source
    nobody writes to during the run the rows are the same.
    `--jdbc-partitions 1` reads every table in one query instead. Sail's
    JDBC source is a Python data source (pysail.spark.datasource.jdbc) that
    Sail runs inside its server, reading Arrow from connectorx.
  * Sail 0.7.2's cache() and persist() do nothing (the server says so in a
    warning), so each write would run the model's query again; its
    localCheckpoint() writes the rows once as Parquet under
    execution.checkpoint.path (here <lake>/_checkpoints, set through
    SAIL_EXECUTION__CHECKPOINT__PATH before the server starts) and reads
    them back for each use. medallion keeps no such copy: it streams the
    passing rows into the table and holds only the failing ones.
  * A date's partition is replaced with replaceWhere, as medallion's
    replace_partition does; Sail refuses replaceWhere on a table that does
    not exist yet, so a new table is made by a plain overwrite.

Prints one line per stage, `stage <name> <seconds>`: startup (Python
imports, server start, client session), ingest, refine, aggregate, total
(the three stages) and whole (startup + stages: from the script's first line
to the end of aggregate). With --figures, writes the figures agree.py
compares, read back from Sail's gold and silver Delta tables after the
timing.

Usage: sail_pipeline.py --database-url postgres://u:p@host:port/db --lake DIR
                        --date YYYY-MM-DD --country-map FILE [--figures FILE]
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import unquote, urlsplit  # noqa: E402

from pysail.spark import SparkConnectServer  # noqa: E402
from pysail.spark.datasource.jdbc import JdbcDataSource  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

import modelsql  # noqa: E402

SOURCE_TABLES = ("orders", "order_details", "products", "customers", "employees", "categories")
# Tables read as key ranges over several connections, and their key.
SPLIT_KEYS = {"orders": "order_id", "order_details": "order_id"}
BRONZE_PARTITION = "_ingestion_date"


def stage(name: str, seconds: float) -> None:
    print(f"stage {name} {seconds:.3f}", flush=True)


class Source:
    """The PostgreSQL database, as Sail's JDBC source wants it."""

    def __init__(self, database_url: str) -> None:
        url = urlsplit(database_url)
        if url.scheme not in ("postgres", "postgresql") or not url.hostname:
            raise SystemExit(f"--database-url must be postgres://user:password@host:port/db, got {url.scheme}://…")
        self.host = url.hostname
        self.port = url.port or 5432
        self.database = url.path.lstrip("/")
        self.user = unquote(url.username or "")
        self.password = unquote(url.password or "")
        self.jdbc_url = f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    def reader(self, spark: SparkSession):
        reader = spark.read.format("jdbc").option("url", self.jdbc_url).option("user", self.user)
        return reader.option("password", self.password) if self.password else reader

    def origin(self, table: str) -> str:
        """The `_source` value medallion writes (never the password)."""
        return f"{self.host}:{self.port}/{self.database}/public.{table}"


class Lake:
    """Sail's lake: <root>/<layer>/<table>, each a Delta table."""

    def __init__(self, spark: SparkSession, root: Path, date: str) -> None:
        self.spark = spark
        self.root = root
        self.date = date

    def path(self, table: str) -> str:
        layer, name = table.split(".", 1)
        return str(self.root / layer / name)

    def write_partition(self, frame, table: str, partition: str) -> None:
        """Replaces the date's partition of `table`, as medallion's
        replace_partition does. Sail refuses replaceWhere on a table that
        does not exist yet, so a new table is written with a plain overwrite
        (the same content: it had no other partition)."""
        writer = frame.write.format("delta").mode("overwrite").partitionBy(partition)
        if any((Path(self.path(table)) / "_delta_log").glob("*.json")):
            writer = writer.option("replaceWhere", f"{partition} = DATE '{self.date}'")
        writer.save(self.path(table))

    def register(self, table: str) -> None:
        """Lets SQL read `table` (as the view layer__name) at its new version."""
        self.spark.read.format("delta").load(self.path(table)).createOrReplaceTempView(modelsql.spark_view(table))


def ingest(spark: SparkSession, source: Source, lake: Lake, partitions: int) -> None:
    ingested_at = datetime.datetime.now(datetime.timezone.utc)
    date = datetime.date.fromisoformat(lake.date)
    for table in SOURCE_TABLES:
        reader = source.reader(spark).option("dbtable", f"public.{table}")
        key = SPLIT_KEYS.get(table)
        if key and partitions > 1:
            bounds = (
                source.reader(spark)
                .option("query", f"SELECT min({key}) AS lo, max({key}) AS hi FROM public.{table}")
                .load()
                .collect()[0]
            )
            if bounds["lo"] is not None and bounds["hi"] > bounds["lo"]:
                reader = (
                    reader.option("partitionColumn", key)
                    .option("lowerBound", str(bounds["lo"]))
                    .option("upperBound", str(bounds["hi"] + 1))
                    .option("numPartitions", str(partitions))
                )
        frame = (
            reader.load()
            .withColumn("_ingestion_timestamp", F.lit(ingested_at))
            .withColumn("_source", F.lit(source.origin(table)))
            .withColumn(BRONZE_PARTITION, F.lit(date))
        )
        lake.write_partition(frame, f"bronze.{table}", BRONZE_PARTITION)


def materialise(spark: SparkSession, lake: Lake, model: modelsql.Model) -> None:
    """Runs one model (see the module comment): its table, and its
    quarantine when it has rules."""
    candidate = spark.sql(modelsql.render(model.sql, lake.date, "spark"))
    candidate.createOrReplaceTempView("candidate")
    columns = modelsql.output_columns(candidate.columns)
    if not model.rules:
        written = spark.sql(modelsql.checked_sql([], "candidate", columns, "spark"))
        lake.write_partition(written, model.table, modelsql.SNAPSHOT_COLUMN)
        lake.register(model.table)
        return
    fatal = modelsql.fatal_rules(model)
    if fatal:
        counts = spark.sql(modelsql.count_sql(fatal, "candidate", "spark")).collect()[0].asDict()
        modelsql.check_fail_rules(model, {name: n or 0 for name, n in counts.items()})
    # The one evaluation: eager, so the query runs here and every use below
    # reads the checkpoint's files.
    checked = spark.sql(modelsql.checked_sql(model.rules, "candidate", columns, "spark")).localCheckpoint()
    checked.createOrReplaceTempView("checked")
    passing = spark.sql(modelsql.passing_sql(model.rules, "checked", columns, "spark"))
    lake.write_partition(passing, model.table, modelsql.SNAPSHOT_COLUMN)
    failing = spark.sql(modelsql.failing_sql(model.rules, "checked", columns, "spark"))
    quarantine = model.table + modelsql.QUARANTINE_SUFFIX
    lake.write_partition(failing, quarantine, modelsql.SNAPSHOT_COLUMN)
    # Failures per rule, as medallion reports them (not compared: agree.py
    # compares the quarantine itself).
    spark.sql(modelsql.tally_sql(model.rules, "checked", "spark")).collect()
    lake.register(quarantine)
    lake.register(model.table)


def refine(spark: SparkSession, lake: Lake, models: list[modelsql.Model], country_map: list[tuple[str, str]]) -> None:
    for table in SOURCE_TABLES:
        lake.register(f"bronze.{table}")
    spark.createDataFrame(country_map, "key string, country string").createOrReplaceTempView(
        modelsql.spark_view("ref.country_map")
    )
    for model in models:
        materialise(spark, lake, model)


def aggregate(spark: SparkSession, lake: Lake, models: list[modelsql.Model]) -> None:
    for model in models:
        materialise(spark, lake, model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--lake", required=True, type=Path, help="folder of Sail's lake (made if missing)")
    parser.add_argument("--date", required=True, help="the snapshot date, YYYY-MM-DD")
    parser.add_argument("--country-map", required=True, type=Path, help="ref.country_map rows, JSON")
    parser.add_argument("--models", type=Path, default=modelsql.MODELS_DIR)
    parser.add_argument("--jdbc-partitions", type=int, default=2, help="connections for orders and order_details")
    parser.add_argument("--figures", type=Path, help="write the compared figures here, JSON")
    args = parser.parse_args()
    models = modelsql.load_models(args.models)
    country_map = modelsql.load_country_map(args.country_map)
    source = Source(args.database_url)

    # Where localCheckpoint() keeps a model's checked rows; read by the
    # server at start. Sail removes its session's files when it stops.
    checkpoints = args.lake.resolve() / "_checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    os.environ["SAIL_EXECUTION__CHECKPOINT__PATH"] = checkpoints.as_uri()
    server = SparkConnectServer("127.0.0.1", 0)
    server.start(background=True)
    host, port = server.listening_address
    spark = SparkSession.builder.remote(f"sc://{host}:{port}").getOrCreate()
    spark.dataSource.register(JdbcDataSource)
    lake = Lake(spark, args.lake.resolve(), args.date)
    stage("startup", time.monotonic() - STARTED)

    times = {}
    for name, run in (
        ("ingest", lambda: ingest(spark, source, lake, args.jdbc_partitions)),
        ("refine", lambda: refine(spark, lake, models["silver"], country_map)),
        ("aggregate", lambda: aggregate(spark, lake, models["gold"])),
    ):
        started = time.monotonic()
        run()
        times[name] = time.monotonic() - started
        stage(name, times[name])
    stage("total", sum(times.values()))
    stage("whole", time.monotonic() - STARTED)

    if args.figures:
        args.figures.write_text(json.dumps(
            modelsql.figures(args.date, "spark", lambda query, _name: [list(row) for row in spark.sql(query).collect()])
        ))
    spark.stop()
    server.stop()


if __name__ == "__main__":
    main()
