#!/usr/bin/env bash
# Benchmark of the lake on S3 (not a test): loads a generated Northwind into
# PostgreSQL, then measures in the same run, stage by stage,
#   * the reference: ingest / refine / aggregate on a local lake (file://)
#   * the same stages on an S3 lake (s3://, one bucket per layer) served by a
#     private test S3 server (scripts/s3.sh) on 127.0.0.1 (same machine, same disk)
# and prints the S3 / local time ratio and the S3 requests each stage sent,
# per S3 operation, counted from the server's own request log ("resolved route").
#
# Usage: scripts/bench-s3.sh [SCALE]      (default: 100)
#   S3_PORT (default 29050) is the port of the private S3 server.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion-target}"
scale="${1:-100}"
date=2026-11-25

scripts/toolchain.sh
if ! command -v bc >/dev/null || [[ ! -x /usr/bin/time ]]; then
    apt-get update -qq && apt-get install -y -qq bc time >/dev/null
fi
cargo build --locked --bin medallion
medallion="$CARGO_TARGET_DIR/debug/medallion"
scripts/pg.sh start >/dev/null
eval "$(scripts/pg.sh env)"
admin_url="$MEDALLION_PG_URL"

work="$(mktemp -d)"
services="$work/services"
export S3_PORT="${S3_PORT:-29050}"
cleanup() {
    MEDALLION_SERVICES_DIR="$services" scripts/s3.sh stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
# s3s logs one "resolved route" line per request at debug level.
RUST_LOG="s3s::ops=debug" MEDALLION_SERVICES_DIR="$services" scripts/s3.sh start >/dev/null
s3_log="$services/s3/server.log"

# Runs a command under GNU time; prints "<wall seconds> <peak RSS KiB>".
measure() {
    local log="$work/time.log"
    /usr/bin/time -f "%e %M" -o "$log" "$@" >"$work/out.log" 2>"$work/err.log" || {
        echo "bench-s3.sh: command failed: $*" >&2; cat "$work/err.log" >&2; exit 1; }
    cat "$log"
}

# The S3 operations logged since line $1 of the server log, e.g. "GetObject=12 PutObject=9".
ops_since() {
    tail -n +"$(($1 + 1))" "$s3_log" | sed -E 's/\x1b\[[0-9;]*m//g' | grep 'resolved route' \
        | sed -E 's/.*op[:=] *([A-Za-z0-9]+).*/\1/' \
        | sort | uniq -c | awk '{printf "%s%s=%s", (NR>1?" ":""), $2, $1}'
}
requests_since() { tail -n +"$(($1 + 1))" "$s3_log" | grep -c 'resolved route' || true; }

db="bench_s3_$scale"
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
export DATABASE_URL="${admin_url%/*}/$db"
"$medallion" source load --scale "$scale" --quiet >/dev/null
rows=$(psql -qtA "$DATABASE_URL" -c "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_details) + (SELECT count(*) FROM products) + (SELECT count(*) FROM customers) + (SELECT count(*) FROM employees) + (SELECT count(*) FROM categories)")

eval "$(MEDALLION_SERVICES_DIR="$services" scripts/s3.sh env)"
local_lake="file://$work/lake"
declare -A local_s s3_s s3_req s3_ops
for stage in ingest refine aggregate run; do
    lake_suffix=""
    [[ "$stage" == run ]] && lake_suffix="-run"
    read -r local_s[$stage] _ < <(measure "$medallion" "$stage" --lake "$local_lake$lake_suffix" --quiet --date "$date")
    if [[ "$stage" == run ]]; then
        s3_lake="s3://lake/run"
        create=(--create-buckets)
    else
        s3_lake="s3://"
        create=()
    fi
    before=$(wc -l <"$s3_log")
    read -r s3_s[$stage] _ < <(measure "$medallion" "$stage" --lake "$s3_lake" "${create[@]}" --quiet --date "$date")
    s3_req[$stage]=$(requests_since "$before")
    s3_ops[$stage]=$(ops_since "$before")
done
unset DATABASE_URL

du_local=$(du -sm "$work/lake" | cut -f1)
printf '\n## Lake on S3, scale %s (%s source rows; local lake %s MB)\n\n' "$scale" "$rows" "$du_local"
echo "machine: $(nproc) cores; medallion-s3 (s3s-fs 0.14.1 store) on 127.0.0.1 (same machine)"
printf '\n| stage | local s | S3 s | S3 / local | S3 requests | requests by operation |\n|---|---:|---:|---:|---:|---|\n'
for stage in ingest refine aggregate run; do
    label="$stage"
    [[ "$stage" == run ]] && label="whole run (fresh lake)"
    printf '| %s | %.2f | %.2f | %.2f | %s | %s |\n' "$label" "${local_s[$stage]}" "${s3_s[$stage]}" \
        "$(echo "${s3_s[$stage]} / ${local_s[$stage]}" | bc -l)" "${s3_req[$stage]}" "${s3_ops[$stage]}"
done
psql -q "$admin_url" -c "DROP DATABASE $db WITH (FORCE)"
