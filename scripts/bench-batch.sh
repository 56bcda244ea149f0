#!/usr/bin/env bash
# Benchmark of the batch path (not a test): for each scale, loads a generated
# Northwind into PostgreSQL, then measures in the same run
#   * the reference: PostgreSQL's own `COPY <table> TO STDOUT (FORMAT binary)`
#     of the six source tables into /dev/null (psql, one connection)
#   * medallion ingest / refine / aggregate, one process each, and a whole
#     `medallion run` on a fresh lake: wall time, rows/s, MB/s, peak RSS;
#     without the data profiles a run makes of the tables it wrote (the
#     reference engines make none), then one more whole run with them, the
#     default, timed on its own
#   * two reference engines doing the same work (scripts/bench/, pinned in
#     scripts/bench/requirements.txt, installed once into a virtualenv):
#       Sail (pysail, Spark Connect in Rust; server inside the Python
#       process): the whole pipeline, PostgreSQL → bronze → silver → gold,
#       Delta tables of its own, from the same SQL models (sail_pipeline.py)
#       DuckDB, 2 threads: refine + aggregate over medallion's bronze,
#       writing Parquet (duckdb_models.py)
#     both evaluate a model as medallion does: its query runs once, with one
#     boolean column per expectation, and its rows are split into the table
#     and the quarantine (fail-the-run rules counted first by a query of
#     their own; a model without expectations written once), see
#     scripts/bench/modelsql.py; they run the models one after another,
#     medallion independent gold models two at a time (never two that read silver)
#   * agreement: medallion's gold against Sail's and DuckDB's (agree.py);
#     any difference stops the benchmark, exit status 1
# and prints the ratio extraction speed / COPY speed, and medallion's speed
# against Sail's per stage and whole run, and against DuckDB's refine +
# aggregate. Stage against stage, every time is measured inside one process
# (medallion's: the stage times `medallion run` prints, session setup
# included, no process start); whole run against whole run, the `medallion
# run` process against Sail's from the script's first line (Python imports,
# server start) to the end of aggregate. Peak RSS (GNU time) is per process:
# medallion's run, the Sail process (its server runs inside), the DuckDB
# process (refine + aggregate).
#
# Usage: scripts/bench-batch.sh [SCALE ...]      (default: 100 1000)
#   scale 10000 (`scripts/bench-batch.sh 10000`: ≈ 8.3 M orders, 21.6 M order
#   lines) works the same way; it is left out of the default for its time and
#   disk (about ten times scale 1000's).
# MEDALLION_BENCH_VENV sets the virtualenv (default ~/.cache/medallion-bench-venv).
# MEDALLION_BENCH_NO_BUILD=1 uses the binary already in the target folder
# instead of building it (e.g. while another cargo holds that folder).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion-target}"
scales=("$@")
((${#scales[@]})) || scales=(100 1000)

die() { echo "bench-batch.sh: $*" >&2; exit 1; }

scripts/toolchain.sh
if ! command -v bc >/dev/null || [[ ! -x /usr/bin/time ]]; then
    apt-get update -qq && apt-get install -y -qq bc time >/dev/null
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi

# The reference engines: a virtualenv with the pinned packages, made once and
# remade when the pins change. Failing to install them fails the benchmark.
requirements=scripts/bench/requirements.txt
venv="${MEDALLION_BENCH_VENV:-$HOME/.cache/medallion-bench-venv}"
python="$venv/bin/python"
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
    install_log="$venv.install.log"
    echo "bench-batch.sh: installing Sail and DuckDB into $venv (log: $install_log)" >&2
    rm -rf "$venv"
    {
        python3 -m venv "$venv" &&
            "$venv/bin/pip" install --no-input -r "$requirements" &&
            "$python" -c 'import connectorx, duckdb, pysail.spark; from pyspark.sql import SparkSession'
    } >"$install_log" 2>&1 || die "cannot install the reference engines Sail and DuckDB (pip install -r $requirements), see $install_log"
    cp "$requirements" "$venv/requirements.txt"
fi
read -r sail_version duckdb_version < <("$python" -c \
    'from importlib.metadata import version; print(version("pysail"), version("duckdb"))')

if [[ "${MEDALLION_BENCH_NO_BUILD:-}" != 1 ]]; then
    cargo build --locked --bin medallion
fi
medallion="$CARGO_TARGET_DIR/debug/medallion"
scripts/pg.sh start
eval "$(scripts/pg.sh env)"
admin_url="$MEDALLION_PG_URL"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tables=(orders order_details products customers employees categories)
snapshot=2026-11-25

# Runs a command under GNU time; prints "<wall seconds> <peak RSS KiB>".
# Its standard output is left in $work/out.log.
measure() {
    local log="$work/time.log"
    /usr/bin/time -f "%e %M" -o "$log" "$@" >"$work/out.log" 2>"$work/err.log" || {
        echo "bench-batch.sh: command failed: $*" >&2; cat "$work/err.log" >&2; exit 1; }
    cat "$log"
}

# The seconds of stage NAME from the `stage <name> <seconds>` lines of the
# last measured command.
stage_time() {
    local seconds
    seconds=$(awk -v name="$1" '$1 == "stage" && $2 == name { print $3 }' "$work/out.log")
    [[ -n "$seconds" ]] || die "no 'stage $1' line from the last reference run"
    echo "$seconds"
}

# The seconds of stage NAME inside `medallion run`, from its summary line
# (`refine     274.87ms       21930 rows`) in $work/run.log.
run_stage_time() {
    local seconds
    seconds=$(awk -v name="$1" '$1 == name && $2 ~ /^[0-9.]+(s|ms|µs)$/ {
        value = $2 + 0; unit = $2; sub(/^[0-9.]+/, "", unit)
        print (unit == "ms" ? value / 1000 : unit == "µs" ? value / 1000000 : value) }' "$work/run.log")
    [[ -n "$seconds" ]] || die "no '$1' line in the output of medallion run"
    echo "$seconds"
}

# "<100 × SLOWER / FASTER> %": how fast medallion is against a reference
# engine, given the reference's seconds and medallion's (above 100 %:
# medallion is faster).
percent() { printf '%.0f %%' "$(echo "100 * $1 / $2" | bc -l)"; }

# One row of the reference table from: engine, stage, seconds, rows, peak RSS
# in KiB (or empty), medallion's seconds for the same stage (or empty).
row() {
    local rss="" ratio=""
    [[ -z "$5" ]] || rss=$(printf '%.0f' "$(echo "$5/1024" | bc -l)")
    [[ -z "$6" ]] || ratio=$(percent "$3" "$6")
    printf '| %s | %s | %.2f | %.0f | %s | %s |\n' "$1" "$2" "$3" "$(echo "$4/$3" | bc -l)" "$rss" "$ratio"
}

# ref.country_map as medallion builds it from its configuration, for the
# reference engines.
"$medallion" sql --quiet --lake "file://$work/no_lake" --format json \
    "SELECT key, country FROM ref.country_map" >"$work/country_map.json"

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(psql --version | head -1); Sail $sail_version, DuckDB $duckdb_version"
for scale in "${scales[@]}"; do
    db="bench_scale_$scale"
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    url="${admin_url%/*}/$db"
    read -r load_s _ < <(measure "$medallion" source load --scale "$scale" --database-url "$url" --quiet)
    # Settle the new tables before anything is timed: otherwise autovacuum
    # (and the first reads, which set hint bits) run during medallion's
    # stages, measured first, and are over when the reference engines run.
    psql -q "$url" -c "VACUUM ANALYZE"

    copy_args=()
    for t in "${tables[@]}"; do copy_args+=(-c "COPY $t TO STDOUT (FORMAT binary)"); done
    start=$(date +%s.%N)
    copy_bytes=$(psql -q "$url" "${copy_args[@]}" | wc -c)
    copy_s=$(echo "$(date +%s.%N) - $start" | bc -l)
    rows=$(psql -qtA "$url" -c "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_details) + (SELECT count(*) FROM products) + (SELECT count(*) FROM customers) + (SELECT count(*) FROM employees) + (SELECT count(*) FROM categories)")
    lines=$(psql -qtA "$url" -c "SELECT count(*) FROM order_details")

    lake="file://$work/lake_$scale"
    export DATABASE_URL="$url"
    # The reference engines profile nothing: medallion's data profiles after
    # a run are left out of the compared work and timed on their own below.
    export MEDALLION_PROFILE_AFTER_RUN=false
    read -r ingest_s ingest_kb < <(measure "$medallion" ingest --lake "$lake" --quiet --date "$snapshot")
    extract_line=$(grep "extracted" "$work/out.log")
    extract_s=$(echo "$extract_line" | sed -E 's/.* in ([0-9.]+)(m?s).*/\1 \2/' | awk '{ if ($2=="ms") print $1/1000; else print $1 }')
    read -r refine_s refine_kb < <(measure "$medallion" refine --lake "$lake" --quiet --date "$snapshot")
    read -r aggregate_s aggregate_kb < <(measure "$medallion" aggregate --lake "$lake" --quiet --date "$snapshot")
    read -r run_s run_kb < <(measure "$medallion" run --lake "file://$work/run_lake_$scale" --quiet --date "$snapshot")
    cp "$work/out.log" "$work/run.log"
    run_ingest_s=$(run_stage_time ingest)
    run_refine_s=$(run_stage_time refine)
    run_aggregate_s=$(run_stage_time aggregate)
    # The default `medallion run`: the same, then a profile of every table it wrote.
    read -r profiled_s profiled_kb < <(MEDALLION_PROFILE_AFTER_RUN=true measure "$medallion" run --lake "file://$work/profiled_lake_$scale" --quiet --date "$snapshot")
    unset DATABASE_URL MEDALLION_PROFILE_AFTER_RUN

    # DuckDB: refine + aggregate over the bronze medallion just wrote.
    read -r _ duck_kb < <(measure "$python" scripts/bench/duckdb_models.py --bronze "$work/lake_$scale" \
        --out "$work/duckdb_$scale" --date "$snapshot" --country-map "$work/country_map.json" \
        --figures "$work/duckdb_$scale.json")
    duck_refine_s=$(stage_time refine)
    duck_aggregate_s=$(stage_time aggregate)
    # Sail: the whole pipeline from the same database.
    read -r _ sail_kb < <(measure env RUST_LOG=warn "$python" scripts/bench/sail_pipeline.py \
        --database-url "$url" --lake "$work/sail_$scale" --date "$snapshot" \
        --country-map "$work/country_map.json" --figures "$work/sail_$scale.json")
    sail_startup_s=$(stage_time startup)
    sail_ingest_s=$(stage_time ingest)
    sail_refine_s=$(stage_time refine)
    sail_aggregate_s=$(stage_time aggregate)
    sail_s=$(stage_time whole)

    "$python" scripts/bench/agree.py --medallion "$medallion" --lake "$lake" --date "$snapshot" \
        "Sail=$work/sail_$scale.json" "DuckDB=$work/duckdb_$scale.json" >"$work/agree.log" 2>&1 || {
        sed "s/^/bench-batch.sh: scale $scale: /" "$work/agree.log" >&2; exit 1; }

    mb=$(echo "$copy_bytes / 1000000" | bc -l)
    printf '\n## scale %s (%s source rows, %s order lines, %.1f MB binary COPY)\n\n' "$scale" "$rows" "$lines" "$mb"
    printf '| step | wall s | rows/s | MB/s | peak RSS MiB |\n|---|---:|---:|---:|---:|\n'
    printf '| generate + load (source load) | %.2f | | | |\n' "$load_s"
    printf '| reference: psql COPY binary, one session → /dev/null | %.2f | %.0f | %.1f | |\n' "$copy_s" "$(echo "$rows/$copy_s" | bc -l)" "$(echo "$mb/$copy_s" | bc -l)"
    printf '| extraction (inside ingest) | %.2f | %.0f | %.1f | |\n' "$extract_s" "$(echo "$rows/$extract_s" | bc -l)" "$(echo "$mb/$extract_s" | bc -l)"
    printf '| ingest (extract + bronze Delta write) | %.2f | %.0f | %.1f | %.0f |\n' "$ingest_s" "$(echo "$rows/$ingest_s" | bc -l)" "$(echo "$mb/$ingest_s" | bc -l)" "$(echo "$ingest_kb/1024" | bc -l)"
    printf '| refine (silver + quarantine) | %.2f | %.0f | | %.0f |\n' "$refine_s" "$(echo "$lines/$refine_s" | bc -l)" "$(echo "$refine_kb/1024" | bc -l)"
    printf '| aggregate (6 gold tables) | %.2f | %.0f | | %.0f |\n' "$aggregate_s" "$(echo "$lines/$aggregate_s" | bc -l)" "$(echo "$aggregate_kb/1024" | bc -l)"
    printf '| whole run (fresh lake) | %.2f | %.0f | | %.0f |\n' "$run_s" "$(echo "$rows/$run_s" | bc -l)" "$(echo "$run_kb/1024" | bc -l)"
    printf '| whole run with the data profiles after it (the default) | %.2f | %.0f | | %.0f |\n' "$profiled_s" "$(echo "$rows/$profiled_s" | bc -l)" "$(echo "$profiled_kb/1024" | bc -l)"
    printf '\nextraction speed / COPY speed = %.0f %%\n' "$(echo "100 * $copy_s / $extract_s" | bc -l)"

    # The same work by the reference engines, against the stages inside the
    # `medallion run` above (all stage times are then inside one process).
    # rows/s: source rows for ingest and whole runs, order lines for refine
    # and aggregate (as above).
    medallion_models_s=$(echo "$run_refine_s + $run_aggregate_s" | bc -l)
    duck_models_s=$(echo "$duck_refine_s + $duck_aggregate_s" | bc -l)
    printf '\n### the same work by the reference engines (Sail %s; DuckDB %s, 2 threads)\n\n' "$sail_version" "$duckdb_version"
    printf '| engine | stage | wall s | rows/s | peak RSS MiB | medallion speed / this |\n|---|---|---:|---:|---:|---:|\n'
    row medallion "ingest (in run)" "$run_ingest_s" "$rows" "" ""
    row medallion "refine (in run)" "$run_refine_s" "$lines" "" ""
    row medallion "aggregate (in run)" "$run_aggregate_s" "$lines" "" ""
    row medallion "refine + aggregate (in run)" "$medallion_models_s" "$lines" "" ""
    row medallion "whole run (one process)" "$run_s" "$rows" "$run_kb" ""
    printf '| Sail | startup: Python imports, server, session | %.2f | | | |\n' "$sail_startup_s"
    row Sail ingest "$sail_ingest_s" "$rows" "" "$run_ingest_s"
    row Sail refine "$sail_refine_s" "$lines" "" "$run_refine_s"
    row Sail aggregate "$sail_aggregate_s" "$lines" "" "$run_aggregate_s"
    row Sail "whole run (one process, startup included)" "$sail_s" "$rows" "$sail_kb" "$run_s"
    row DuckDB refine "$duck_refine_s" "$lines" "" "$run_refine_s"
    row DuckDB aggregate "$duck_aggregate_s" "$lines" "" "$run_aggregate_s"
    row DuckDB "refine + aggregate (one process)" "$duck_models_s" "$lines" "$duck_kb" "$medallion_models_s"
    printf '\nmedallion speed / Sail speed: ingest %s, refine %s, aggregate %s, whole run %s\n' \
        "$(percent "$sail_ingest_s" "$run_ingest_s")" "$(percent "$sail_refine_s" "$run_refine_s")" \
        "$(percent "$sail_aggregate_s" "$run_aggregate_s")" "$(percent "$sail_s" "$run_s")"
    printf 'medallion speed / DuckDB speed, refine + aggregate = %s\n' "$(percent "$duck_models_s" "$medallion_models_s")"
    cat "$work/agree.log"
    psql -q "$admin_url" -c "DROP DATABASE $db WITH (FORCE)"
    rm -rf "$work/lake_$scale" "$work/run_lake_$scale" "$work/profiled_lake_$scale" "$work/sail_$scale" "$work/duckdb_$scale"
done
