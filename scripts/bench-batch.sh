#!/usr/bin/env bash
# Benchmark of the batch path (not a test): for each scale, loads a generated
# Northwind into PostgreSQL, then measures in the same run
#   * the reference: PostgreSQL's own `COPY <table> TO STDOUT (FORMAT binary)`
#     of the six source tables into /dev/null (psql, one connection)
#   * medallion ingest / refine / aggregate, one process each, and a whole
#     `medallion run` on a fresh lake: wall time, rows/s, MB/s, peak RSS
# and prints the ratio extraction speed / COPY speed.
#
# Usage: scripts/bench-batch.sh [SCALE ...]      (default: 100 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion-target}"
scales=("$@")
((${#scales[@]})) || scales=(100 1000)

scripts/toolchain.sh
if ! command -v bc >/dev/null || [[ ! -x /usr/bin/time ]]; then
    apt-get update -qq && apt-get install -y -qq bc time >/dev/null
fi
cargo build --locked --bin medallion
medallion="$CARGO_TARGET_DIR/debug/medallion"
scripts/pg.sh start
eval "$(scripts/pg.sh env)"
admin_url="$MEDALLION_PG_URL"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tables=(orders order_details products customers employees categories)

# Runs a command under GNU time; prints "<wall seconds> <peak RSS KiB>".
measure() {
    local log="$work/time.log"
    /usr/bin/time -f "%e %M" -o "$log" "$@" >"$work/out.log" 2>"$work/err.log" || {
        echo "bench-batch.sh: command failed: $*" >&2; cat "$work/err.log" >&2; exit 1; }
    cat "$log"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(psql --version | head -1)"
for scale in "${scales[@]}"; do
    db="bench_scale_$scale"
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    url="${admin_url%/*}/$db"
    read -r load_s _ < <(measure "$medallion" source load --scale "$scale" --database-url "$url" --quiet)

    copy_args=()
    for t in "${tables[@]}"; do copy_args+=(-c "COPY $t TO STDOUT (FORMAT binary)"); done
    start=$(date +%s.%N)
    copy_bytes=$(psql -q "$url" "${copy_args[@]}" | wc -c)
    copy_s=$(echo "$(date +%s.%N) - $start" | bc -l)
    rows=$(psql -qtA "$url" -c "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_details) + (SELECT count(*) FROM products) + (SELECT count(*) FROM customers) + (SELECT count(*) FROM employees) + (SELECT count(*) FROM categories)")
    lines=$(psql -qtA "$url" -c "SELECT count(*) FROM order_details")

    lake="file://$work/lake_$scale"
    export DATABASE_URL="$url"
    read -r ingest_s ingest_kb < <(measure "$medallion" ingest --lake "$lake" --quiet --date 2026-11-25)
    extract_line=$(grep "extracted" "$work/out.log")
    extract_s=$(echo "$extract_line" | sed -E 's/.* in ([0-9.]+)(m?s).*/\1 \2/' | awk '{ if ($2=="ms") print $1/1000; else print $1 }')
    read -r refine_s refine_kb < <(measure "$medallion" refine --lake "$lake" --quiet --date 2026-11-25)
    read -r aggregate_s aggregate_kb < <(measure "$medallion" aggregate --lake "$lake" --quiet --date 2026-11-25)
    read -r run_s run_kb < <(measure "$medallion" run --lake "file://$work/run_lake_$scale" --quiet --date 2026-11-25)
    unset DATABASE_URL

    mb=$(echo "$copy_bytes / 1000000" | bc -l)
    printf '\n## scale %s (%s source rows, %s order lines, %.1f MB binary COPY)\n\n' "$scale" "$rows" "$lines" "$mb"
    printf '| step | wall s | rows/s | MB/s | peak RSS MiB |\n|---|---:|---:|---:|---:|\n'
    printf '| generate + load (source load) | %.2f | | | |\n' "$load_s"
    printf '| reference: psql COPY binary, one session → /dev/null | %.2f | %.0f | %.1f | |\n' "$copy_s" "$(echo "$rows/$copy_s" | bc -l)" "$(echo "$mb/$copy_s" | bc -l)"
    printf '| extraction (inside ingest) | %.2f | %.0f | %.1f | |\n' "$extract_s" "$(echo "$rows/$extract_s" | bc -l)" "$(echo "$mb/$extract_s" | bc -l)"
    printf '| ingest (extract + bronze Delta write) | %.2f | %.0f | %.1f | %.0f |\n' "$ingest_s" "$(echo "$rows/$ingest_s" | bc -l)" "$(echo "$mb/$ingest_s" | bc -l)" "$(echo "$ingest_kb/1024" | bc -l)"
    printf '| refine (silver + quarantine) | %.2f | %.0f | | %.0f |\n' "$refine_s" "$(echo "$lines/$refine_s" | bc -l)" "$(echo "$refine_kb/1024" | bc -l)"
    printf '| aggregate (5 gold tables) | %.2f | %.0f | | %.0f |\n' "$aggregate_s" "$(echo "$lines/$aggregate_s" | bc -l)" "$(echo "$aggregate_kb/1024" | bc -l)"
    printf '| whole run (fresh lake) | %.2f | %.0f | | %.0f |\n' "$run_s" "$(echo "$rows/$run_s" | bc -l)" "$(echo "$run_kb/1024" | bc -l)"
    printf '\nextraction speed / COPY speed = %.0f %%\n' "$(echo "100 * $copy_s / $extract_s" | bc -l)"
    psql -q "$admin_url" -c "DROP DATABASE $db WITH (FORCE)"
done
