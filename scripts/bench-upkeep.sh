#!/usr/bin/env bash
# Benchmark of table upkeep under a continuous stream (not a test), on a
# real Kafka broker (scripts/kafka.sh). Two runs of the same work, one after
# the other: `medallion stream --interval 200ms` fed RATE events/s for
# MINUTES minutes, with upkeep off, then on (`medallion optimize` of the
# streaming tables once a minute, what `medallion up` does with
# optimize_every = "1m"). For each run:
#   - live data files of bronze.sales_events after 1 minute and at the end
#   - the query `SELECT pays, SUM(montant) … GROUP BY pays` on bronze after
#     1 minute and at the end, each timed as a whole `medallion sql` (the
#     table is opened from its log, then scanned; median of three): the reference is the same
#     query after 1 minute, so "end / 1 min" is the ratio that matters
#   - the stream's p99 latency (event time → live view) over the whole run,
#     optimizes included, printed by the stream at exit
# Usage: scripts/bench-upkeep.sh [MINUTES] [RATE]   (default 10 20000)
# MEDALLION_BENCH_NO_BUILD=1 uses the binary already in the target folder
# instead of building it (e.g. while another cargo holds that folder).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion-target}"
minutes="${1:-10}"
rate="${2:-20000}"
if [[ "${MEDALLION_BENCH_NO_BUILD:-}" != 1 ]]; then
    scripts/toolchain.sh
    cargo build --locked --bin medallion
fi
medallion="$CARGO_TARGET_DIR/debug/medallion"
scripts/kafka.sh start
eval "$(scripts/kafka.sh env)"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
query="SELECT pays, SUM(montant) AS total FROM bronze.sales_events GROUP BY pays"

# Seconds a `medallion sql` of the query takes: the median of three runs
# (the stream keeps running meanwhile after 1 minute).
timed_query() {
  local lake="$1" start end
  for _ in 1 2 3; do
    start=$(date +%s.%N)
    "$medallion" sql --quiet --lake "file://$lake" "$query" >/dev/null
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }'
  done | sort -n | sed -n 2p
}

# Live data files of bronze.sales_events, from `medallion status`.
live_files() {
  "$medallion" status --quiet --lake "file://$1" | awk '$1 == "bronze.sales_events" { print $3 }'
}

echo "machine: $(nproc) cores; Kafka on $KAFKA_BOOTSTRAP_SERVERS; $minutes min at $rate events/s per run"
for upkeep in off on; do
  topic="bench-upkeep-$upkeep-$$"
  lake="$work/lake-$upkeep"
  scripts/kafka.sh create-topic "$topic" 1 >/dev/null
  "$medallion" stream --quiet --interval 200ms --topic "$topic" --lake "file://$lake" >"$work/stream-$upkeep.log" 2>&1 &
  stream_pid=$!
  sleep 2
  "$medallion" produce --quiet --topic "$topic" --count $((rate * minutes * 60)) --rate "$rate" >"$work/produce-$upkeep.log" 2>&1 &
  produce_pid=$!
  optimizes=0
  for minute in $(seq 1 "$minutes"); do
    sleep 60
    if [[ "$upkeep" == on ]]; then
      "$medallion" optimize --quiet --lake "file://$lake" bronze.sales_events >/dev/null
      "$medallion" optimize --quiet --lake "file://$lake" bronze.sales_events_rejected >/dev/null
      optimizes=$((optimizes + 1))
    fi
    if [[ "$minute" == 1 ]]; then
      files_1=$(live_files "$lake")
      query_1=$(timed_query "$lake")
    fi
  done
  wait "$produce_pid"
  sleep 3
  kill -INT "$stream_pid"
  wait "$stream_pid" || true
  files_end=$(live_files "$lake")
  query_end=$(timed_query "$lake")
  p99=$(sed -nE 's/.*p99 ([0-9.]+) s.*/\1/p' "$work/stream-$upkeep.log")
  commits=$("$medallion" history --quiet --lake "file://$lake" bronze.sales_events | tail -1 | awk '{ print $1 }')
  echo "upkeep $upkeep: $commits commits, $optimizes optimizes; files after 1 min $files_1, at the end $files_end"
  awk -v a="$query_1" -v b="$query_end" -v u="$upkeep" \
    'BEGIN { printf "upkeep %s: query after 1 min %.3f s, at the end %.3f s (end / 1 min = %.2f)\n", u, a, b, b / a }'
  echo "upkeep $upkeep: stream p99 latency over the run ${p99:-?} s"
  grep -E "^stream " "$work/stream-$upkeep.log" | sed "s/^/upkeep $upkeep: /"
done
