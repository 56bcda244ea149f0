"""medallion's refine and aggregate stages done by DuckDB over medallion's
own bronze: the single-node reference engine of scripts/bench-batch.sh.

Input: the bronze Delta tables that `medallion ingest` wrote. DuckDB reads
the Parquet files of each table's current Delta snapshot; the files are
listed here from the table's `_delta_log` (DuckDB's delta extension would be
downloaded from outside the package registries, which this machine does not
reach). A Delta data file does not hold its partition columns, so each
partition's files are read with the partition value from the log added as a
column (`_ingestion_date`), typed by the table's schema (not guessed from the
folder names, which DuckDB's hive partitioning would do).

Then, with 2 threads:
  refine     models/silver/*.sql (DuckDB dialect, see modelsql.py) with the
             expectations, written with COPY … TO … (FORMAT parquet) as
             <out>/silver/sales_master.parquet and
             <out>/silver/sales_master_quarantine.parquet
  aggregate  models/gold/*.sql in dependency order, each to <out>/gold/<model>.parquet;
             a model reads the files written before it
Each model is evaluated as medallion evaluates it (see modelsql.py): the
fail-the-run rules, if any, counted first by their own query; then the
model's query with one boolean column per rule runs once, into a temporary
table (held by DuckDB, in memory here), from which the passing rows and the
failing ones are written and each rule's failures counted; the temporary
table is then dropped. (medallion streams the passing rows to its writers
and holds only the failing ones.) A model without rules is one
COPY of its query. Models run one after another (medallion runs independent
gold models two at a time, never two that read silver); DuckDB parallelises inside each query.
Plain Parquet files, not Delta tables: DuckDB has no Delta writer. Each file
holds the one snapshot date (column snapshot_date).

Prints `stage refine <seconds>`, `stage aggregate <seconds>` and `stage total
<seconds>` (the two). With --figures, writes the figures agree.py compares,
read from the files written, after the timing.

Usage: duckdb_models.py --bronze LAKE_DIR --out DIR --date YYYY-MM-DD
                        --country-map FILE [--figures FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import duckdb

import modelsql

SOURCE_TABLES = ("orders", "order_details", "products", "customers", "employees", "categories")
THREADS = 2

# Delta primitive types of partition columns → DuckDB types.
DELTA_TYPES = {
    "string": "VARCHAR",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "timestamp_ntz": "TIMESTAMP",
    "byte": "TINYINT",
    "short": "SMALLINT",
    "integer": "INTEGER",
    "long": "BIGINT",
    "boolean": "BOOLEAN",
    "float": "FLOAT",
    "double": "DOUBLE",
}


def stage(name: str, seconds: float) -> None:
    print(f"stage {name} {seconds:.3f}", flush=True)


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DeltaSnapshot:
    """The current snapshot of a Delta table: its live data files with their
    partition values, and the types of its partition columns. Read from the
    JSON commits of `_delta_log`, replayed from version 0 (adds minus
    removes). A log whose early commits were cleaned up behind a checkpoint
    is refused rather than half read."""

    def __init__(self, table_dir: Path) -> None:
        log = table_dir / "_delta_log"
        versions = sorted(int(p.stem) for p in log.glob("*.json") if p.stem.isdigit())
        if not versions:
            raise SystemExit(f"{table_dir}: no Delta commits in {log}")
        if versions != list(range(len(versions))):
            raise SystemExit(
                f"{table_dir}: the Delta log does not start at version 0 or has gaps "
                "(cleaned up behind a checkpoint); this reader replays JSON commits only"
            )
        self.files: dict[str, dict[str, str | None]] = {}
        self.partition_types: dict[str, str] = {}
        for version in versions:
            for line in (log / f"{version:020d}.json").read_text().splitlines():
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    add = action["add"]
                    self.files[self._path(table_dir, add["path"])] = add.get("partitionValues") or {}
                elif "remove" in action:
                    self.files.pop(self._path(table_dir, action["remove"]["path"]), None)
                elif "metaData" in action:
                    self._read_schema(table_dir, action["metaData"])

    @staticmethod
    def _path(table_dir: Path, path: str) -> str:
        if "://" in path:
            url = urlsplit(path)
            if url.scheme != "file":
                raise SystemExit(f"{table_dir}: data file outside the local file system: {path}")
            return unquote(url.path)
        return str(table_dir / unquote(path))

    def _read_schema(self, table_dir: Path, metadata: dict) -> None:
        fields = {f["name"]: f["type"] for f in json.loads(metadata["schemaString"])["fields"]}
        self.partition_types = {}
        for column in metadata.get("partitionColumns", []):
            delta_type = fields[column]
            if delta_type not in DELTA_TYPES:
                raise SystemExit(f"{table_dir}: partition column {column} has unsupported type {delta_type}")
            self.partition_types[column] = DELTA_TYPES[delta_type]

    def select_sql(self) -> str:
        """One SELECT over every live file, the partition columns added."""
        groups: dict[tuple, list[str]] = {}
        for path, values in self.files.items():
            key = tuple(values.get(column) for column in self.partition_types)
            groups.setdefault(key, []).append(path)
        if not groups:
            raise SystemExit("a bronze table has no data files in its current snapshot")
        parts = []
        for key, paths in sorted(groups.items(), key=lambda item: str(item[0])):
            added = "".join(
                f", CAST({'NULL' if value is None else sql_string(value)} AS {duck_type}) AS {modelsql.quote(column, 'duckdb')}"
                for (column, duck_type), value in zip(self.partition_types.items(), key)
            )
            files = ", ".join(sql_string(p) for p in sorted(paths))
            parts.append(f"SELECT *{added} FROM read_parquet([{files}], union_by_name = true, hive_partitioning = false)")
        return " UNION ALL BY NAME ".join(parts)


def copy_to(con: duckdb.DuckDBPyConnection, sql: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({sql}) TO {sql_string(str(path))} (FORMAT parquet)")


def register_file(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({sql_string(str(path))})")


def materialise(con: duckdb.DuckDBPyConnection, out: Path, model: modelsql.Model, date: str) -> None:
    """Runs one model (see the module comment): its table, and its
    quarantine when it has rules."""
    sql = modelsql.render(model.sql, date, "duckdb")
    described = con.execute(f"SELECT * FROM ({sql}) LIMIT 0").description
    # DuckDB sums BIGINTs into a HUGEINT (128 bits), which Parquet has no type
    # for: COPY would write DOUBLE. medallion (DataFusion) sums into BIGINT.
    wide = [name for name, type_code, *_ in described if str(type_code) == "HUGEINT"]
    if wide:
        replaced = ", ".join(f"CAST({modelsql.quote(n, 'duckdb')} AS BIGINT) AS {modelsql.quote(n, 'duckdb')}" for n in wide)
        sql = f"SELECT * REPLACE ({replaced}) FROM ({sql})"
    candidate = f"({sql}) AS candidate"
    columns = modelsql.output_columns([d[0] for d in described])
    path = out / model.layer / f"{model.name}.parquet"
    if not model.rules:
        copy_to(con, modelsql.checked_sql([], candidate, columns, "duckdb"), path)
        register_file(con, model.table, path)
        return
    fatal = modelsql.fatal_rules(model)
    if fatal:
        counts = con.execute(modelsql.count_sql(fatal, candidate, "duckdb"))
        names = [d[0] for d in counts.description]
        modelsql.check_fail_rules(model, {name: n or 0 for name, n in zip(names, counts.fetchone())})
    checked = "checked"
    con.execute(f"CREATE OR REPLACE TEMPORARY TABLE {checked} AS {modelsql.checked_sql(model.rules, candidate, columns, 'duckdb')}")
    copy_to(con, modelsql.passing_sql(model.rules, checked, columns, "duckdb"), path)
    quarantine = out / model.layer / f"{model.name}{modelsql.QUARANTINE_SUFFIX}.parquet"
    copy_to(con, modelsql.failing_sql(model.rules, checked, columns, "duckdb"), quarantine)
    # Failures per rule, as medallion reports them (not compared: agree.py
    # compares the quarantine itself).
    con.execute(modelsql.tally_sql(model.rules, checked, "duckdb")).fetchone()
    con.execute(f"DROP TABLE {checked}")
    register_file(con, model.table + modelsql.QUARANTINE_SUFFIX, quarantine)
    register_file(con, model.table, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bronze", required=True, type=Path, help="medallion's lake folder (its bronze/ is read)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the Parquet files (made if missing)")
    parser.add_argument("--date", required=True, help="the snapshot date, YYYY-MM-DD")
    parser.add_argument("--country-map", required=True, type=Path, help="ref.country_map rows, JSON")
    parser.add_argument("--models", type=Path, default=modelsql.MODELS_DIR)
    parser.add_argument("--figures", type=Path, help="write the compared figures here, JSON")
    args = parser.parse_args()
    models = modelsql.load_models(args.models)
    country_map = modelsql.load_country_map(args.country_map)

    con = duckdb.connect(config={"threads": THREADS})
    # DataFusion's order: NULLs last ascending, first descending.
    con.execute("SET default_null_order = 'nulls_last_on_asc_first_on_desc'")
    for schema in ("bronze", "silver", "gold", "ref"):
        con.execute(f"CREATE SCHEMA {schema}")
    con.execute("CREATE TABLE ref.country_map (key VARCHAR NOT NULL, country VARCHAR NOT NULL)")
    con.executemany("INSERT INTO ref.country_map VALUES (?, ?)", country_map)

    times = {}
    started = time.monotonic()
    for table in SOURCE_TABLES:
        snapshot = DeltaSnapshot(args.bronze / "bronze" / table)
        con.execute(f"CREATE VIEW bronze.{table} AS {snapshot.select_sql()}")
    for model in models["silver"]:
        materialise(con, args.out, model, args.date)
    times["refine"] = time.monotonic() - started
    stage("refine", times["refine"])

    started = time.monotonic()
    for model in models["gold"]:
        materialise(con, args.out, model, args.date)
    times["aggregate"] = time.monotonic() - started
    stage("aggregate", times["aggregate"])
    stage("total", sum(times.values()))

    if args.figures:
        args.figures.write_text(json.dumps(
            modelsql.figures(args.date, "duckdb", lambda query, _name: [list(row) for row in con.execute(query).fetchall()])
        ))


if __name__ == "__main__":
    main()
