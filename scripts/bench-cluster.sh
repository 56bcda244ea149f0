#!/usr/bin/env bash
# Benchmark of the cluster path (not a test): the models run by the local
# engine (one process) against the same models on a Ballista cluster of this
# one binary (`medallion cluster scheduler | executor`, `--engine
# ballista://`), on the same machine, in one run. On a 2-core machine a
# cluster cannot beat one process; this says by how much it loses and what it
# costs in memory. For each scale:
#   * a generated Northwind in PostgreSQL (`medallion source load`; the
#     database bench_cluster_<scale> is kept and reused by the next run at
#     that scale), `medallion ingest` once into a fresh file:// lake, copied
#     (`cp -r`) once per cluster configuration: every engine reads the same
#     bronze and writes silver and gold into a lake of its own
#   * three engines, one after another: local (the reference), cluster-1
#     (a scheduler and one executor with 2 slots) and cluster-2 (a scheduler
#     and two executors with 2 slots each), each cluster started fresh on
#     free loopback ports and stopped after its runs, so that its peaks are
#     its own; executors at their default memory limit
#     (MEDALLION_MEMORY_LIMIT_MB, 1536 MB unless set)
#   * per engine, `medallion refine` then `medallion aggregate` (each replaces
#     its date partitions; the data profiles after a run are off, as in
#     bench-batch.sh): wall time of the client process and its peak RSS (GNU
#     time); for a cluster, the peak RSS of the scheduler and of each
#     executor (VmHWM of /proc/PID/status, read just before they are stopped)
#     and the bytes shuffled: the cluster reports no shuffle figures, so
#     these are the bytes of the files the executors wrote into their work
#     folders (--work-dir), i.e. Ballista's shuffle files, the last stage's
#     output that the client fetches included. Ballista deletes a job's
#     intermediate shuffle files as soon as the job succeeds, so a watcher
#     hard-links every file of the work folders into a shadow folder every
#     0.2 s while the cluster runs (the files stay until their job ends) and
#     the sizes are summed there, each file (inode) once. Bytes, not rows.
#   * the price of the cluster path for a small query (the scheduler round
#     trip a user pays for going distributed): `medallion sql "SELECT
#     COUNT(*) FROM gold.kpi_revenue"` 10 times with the local engine and 10
#     times on cluster-2, whole processes, audit log off; medians and their
#     difference
#   * agreement: the gold tables each engine wrote (with the silver row
#     counts) are read back and compared with the local engine's: text and
#     integers exactly, decimals to a relative 1e-9 (the engines add the same
#     doubles in other orders); any difference stops the benchmark, exit 1
# and prints one table per scale, then the floors of the issue as PASS/FAIL
# lines: cluster-2 at scale 1000 within 3× of the local engine's refine +
# aggregate; at scale 10000 no process (client, scheduler, executor) above
# 2 GiB of peak RSS. A failed floor makes the exit status 2 (after the report).
# The stream side, one process against two on a 4-partition topic, is
# section 4 of scripts/bench-stream.sh and is not repeated here.
#
# Usage: scripts/bench-cluster.sh [SCALE ...]      (default: 1000)
#   scale 10000 (`scripts/bench-cluster.sh 1000 10000`: ≈ 8.3 M orders,
#   21.5 M order lines) is left out of the default for its time and disk.
# MEDALLION_BENCH_NO_BUILD=1 uses the binary already in the target folder
# instead of building it (e.g. while another cargo holds that folder).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion-target}"
export LC_NUMERIC=C
scales=("$@")
((${#scales[@]})) || scales=(1000)

die() { echo "bench-cluster.sh: $*" >&2; exit 1; }

for scale in "${scales[@]}"; do
    [[ "$scale" =~ ^[1-9][0-9]*$ ]] || die "'$scale' is not a scale: give positive whole numbers, e.g. 1000 10000"
done

if [[ ! -x /usr/bin/time ]] || ! command -v jq >/dev/null; then
    apt-get update -qq && apt-get install -y -qq time jq >/dev/null
fi
if [[ "${MEDALLION_BENCH_NO_BUILD:-}" != 1 ]]; then
    scripts/toolchain.sh
    cargo build --locked --bin medallion
fi
medallion="$CARGO_TARGET_DIR/debug/medallion"
[[ -x "$medallion" ]] || die "no binary at $medallion: build it with cargo build --locked"
"$medallion" cluster --help >/dev/null 2>&1 || die "$medallion has no 'cluster' command: rebuild it"
scripts/pg.sh start >/dev/null
eval "$(scripts/pg.sh env)"
admin_url="$MEDALLION_PG_URL"
unset DATABASE_URL
# The reference benchmarks profile nothing after a run; neither does this one.
export MEDALLION_PROFILE_AFTER_RUN=false

snapshot=2026-11-25
engines=(local cluster-1 cluster-2)
overhead_query="SELECT COUNT(*) FROM gold.kpi_revenue"
overhead_runs=10
floor_ratio=3
floor_rss_kb=$((2 * 1024 * 1024))

work="$(mktemp -d)"
scheduler_pid=""
executor_pids=()
watcher_pid=""
cluster_dir=""

# Stops one process this script started: SIGTERM, then SIGKILL after 15 s.
stop_process() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 150); do
        alive "$pid" || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Whether a process is running (a zombie is not).
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

stop_watcher() {
    [[ -z "$watcher_pid" ]] || stop_process "$watcher_pid"
    watcher_pid=""
}

# Executors first (they tell the scheduler they leave), then the scheduler.
stop_cluster() {
    local pid
    stop_watcher
    for pid in "${executor_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${executor_pids[@]}"; do stop_process "$pid"; done
    executor_pids=()
    [[ -z "$scheduler_pid" ]] || stop_process "$scheduler_pid"
    scheduler_pid=""
}

cleanup() {
    local status=$?
    stop_cluster
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The last lines of the running cluster's logs, after a failure.
cluster_logs() {
    local log
    [[ -n "$cluster_dir" ]] || return 0
    for log in "$cluster_dir"/*.log; do
        [[ -f "$log" ]] || continue
        echo "--- last lines of $log" >&2
        tail -n 15 "$log" >&2
    done
}

fail_command() {
    echo "bench-cluster.sh: command failed: $*" >&2
    tail -n 30 "$work/err.log" >&2
    cluster_logs
    exit 1
}

# Runs a command under GNU time and sets `wall` (seconds) and `peak_kb`
# (peak RSS, KiB). Its standard output is left in $work/out.log.
measure() {
    /usr/bin/time -f "%e %M" -o "$work/time.log" "$@" >"$work/out.log" 2>"$work/err.log" || fail_command "$@"
    read -r wall peak_kb <"$work/time.log"
}

# Runs a command and prints its wall time in seconds (milliseconds kept).
seconds_of() {
    local start=$EPOCHREALTIME
    "$@" >"$work/out.log" 2>"$work/err.log" || fail_command "$@"
    awk -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", e - s }'
}

calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.0f", kb / 1024 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# $1 free loopback ports, below the kernel's ephemeral range (see
# scripts/README.md), clear of the services' ports; one per line.
free_ports() {
    local wanted=$1 port tries=0
    local -A taken=([25432]=1 [29000]=1 [29050]=1)
    while ((wanted > 0)); do
        ((tries++ < 1000)) || die "no free loopback port found in 20000-32767"
        port=$((20000 + RANDOM % 12768))
        [[ -z "${taken[$port]:-}" ]] || continue
        taken[$port]=1
        # A port nothing listens on refuses the connection.
        if ! (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            wanted=$((wanted - 1))
        fi
    done
}

# The cluster's status as JSON, or nothing when the scheduler does not answer.
cluster_status() { "$medallion" cluster status --scheduler "$scheduler" --json 2>/dev/null || true; }

# Waits (up to $2 seconds) until the jq test $1 holds for the cluster's status.
wait_for_status() {
    local test=$1 deadline=$((SECONDS + $2)) pid
    until cluster_status | jq -e "$test" >/dev/null 2>&1; do
        for pid in "$scheduler_pid" "${executor_pids[@]}"; do
            alive "$pid" || { echo "bench-cluster.sh: a cluster process ($pid) exited" >&2; cluster_logs; exit 1; }
        done
        ((SECONDS < deadline)) || { echo "bench-cluster.sh: the cluster did not reach '$test' within $2 s" >&2; cluster_logs; exit 1; }
        sleep 0.5
    done
}

# Hard-links every file of the executors' work folders into $1 every 0.2 s,
# so that shuffle files deleted when their job ends are still there to be
# counted.
watch_shuffle() {
    local shadow=$1 i
    while :; do
        for ((i = 1; i <= $2; i++)); do
            cp -rln "$cluster_dir/work-$i/." "$shadow/work-$i/" 2>/dev/null || true
        done
        sleep 0.2
    done
}

# Bytes of the shadowed shuffle files not counted yet (each inode once).
shuffled_since_last() {
    local i
    for ((i = 1; i <= executors; i++)); do
        cp -rln "$cluster_dir/work-$i/." "$cluster_dir/shadow/work-$i/" 2>/dev/null || true
    done
    find "$cluster_dir/shadow" -type f -printf '%i %s\n' | sort -u -k1,1 >"$cluster_dir/inodes.now"
    awk 'FILENAME == ARGV[1] { seen[$1] = 1; next } !($1 in seen) { sum += $2 } END { printf "%.0f\n", sum }' \
        "$cluster_dir/inodes.seen" "$cluster_dir/inodes.now"
    mv "$cluster_dir/inodes.now" "$cluster_dir/inodes.seen"
}

# Starts a scheduler and $1 executors (2 slots each, work folders in
# $cluster_dir) on free ports; returns once all have registered.
start_cluster() {
    local ports i
    executors=$1
    mapfile -t ports < <(free_ports $((1 + 2 * executors)))
    ((${#ports[@]} == 1 + 2 * executors)) || die "cannot find $((1 + 2 * executors)) free loopback ports"
    scheduler="127.0.0.1:${ports[0]}"
    "$medallion" cluster scheduler --bind "$scheduler" >"$cluster_dir/scheduler.log" 2>&1 &
    scheduler_pid=$!
    wait_for_status '.executors | length == 0' 30
    for ((i = 1; i <= executors; i++)); do
        mkdir -p "$cluster_dir/work-$i" "$cluster_dir/shadow/work-$i"
        "$medallion" cluster executor --scheduler "$scheduler" --slots 2 \
            --port "${ports[2 * i - 1]}" --grpc-port "${ports[2 * i]}" \
            --work-dir "$cluster_dir/work-$i" >"$cluster_dir/executor-$i.log" 2>&1 &
        executor_pids+=($!)
    done
    wait_for_status "(.executors | length == $executors) and ([.executors[].slots] | add == $((2 * executors)))" 60
    : >"$cluster_dir/inodes.seen"
    watch_shuffle "$cluster_dir/shadow" "$executors" &
    watcher_pid=$!
}

# Peak RSS (KiB) of a running process, from the kernel.
peak_rss_of() {
    alive "$1" || { echo "bench-cluster.sh: cluster process $1 is gone before its peak RSS was read" >&2; cluster_logs; exit 1; }
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

# What the engines must agree on, read back from a lake with the local engine.
agreement_queries=(
    "SELECT COUNT(*) AS lines FROM silver.sales_master"
    "SELECT COUNT(*) AS quarantined FROM silver.sales_master_quarantine"
    "SELECT total_revenue, orders, customers, avg_order_value FROM gold.kpi_revenue"
    "SELECT segment, customers, revenue, share_of_revenue FROM gold.rfm_segments ORDER BY segment"
    "SELECT category_name, revenue, quantity, orders FROM gold.kpi_category_sales ORDER BY category_name"
    "SELECT country, revenue, orders, customers FROM gold.kpi_country_sales ORDER BY country"
    "SELECT \"rank\", country FROM gold.kpi_top_countries ORDER BY \"rank\""
    "SELECT COUNT(*) AS customers, SUM(frequency) AS orders, SUM(recency_days) AS recency FROM gold.rfm_customers"
)

# The figures of a lake ($1), one query after another, as CSV.
figures_of() {
    local query
    for query in "${agreement_queries[@]}"; do
        echo "# $query"
        "$medallion" sql --quiet --no-audit --engine local --lake "$1" --format csv "$query" 2>"$work/err.log" ||
            fail_command "$medallion" sql --lake "$1" "$query"
    done
}

# Compares two figure files ($1 the local engine's, $2 engine $3's): one
# block per differing line, exit 1 when any.
compare_figures() {
    awk -F, -v engine="$3" '
        function numeric(x) { return x ~ /^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$/ }
        function integer(x) { return x ~ /^-?[0-9]+$/ }
        function abs(x) { return x < 0 ? -x : x }
        function same(a, b,   scale) {
            if (integer(a) && integer(b)) return a == b
            if (!numeric(a) || !numeric(b)) return a == b
            scale = abs(a) > abs(b) ? abs(a) : abs(b)
            return abs(a - b) <= 1e-9 * scale
        }
        FILENAME == ARGV[1] { want[FNR] = $0; lines = FNR; next }
        /^# / { query = substr($0, 3) }
        {
            nw = split(want[FNR], w, ","); ng = split($0, g, ",")
            differs = (nw != ng)
            for (i = 1; i <= ng && !differs; i++) if (!same(w[i], g[i])) differs = 1
            if (differs) { printf "  %s: %s\n    local:    %s\n    %s: %s\n", engine, query, want[FNR], engine, $0; bad = 1 }
        }
        END { if (FNR != lines) { printf "  %s: %d lines of figures, the local engine %d\n", engine, FNR, lines; bad = 1 } exit bad }
    ' "$1" "$2"
}

declare -A result
floor_failed=0
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ { print $2 }') GiB; $("$medallion" --version 2>/dev/null || echo medallion); $(psql --version | head -1)"
for scale in "${scales[@]}"; do
    dir="$work/scale-$scale"
    mkdir -p "$dir"
    db="bench_cluster_$scale"
    url="${admin_url%/*}/$db"
    marker="medallion source load --scale $scale: complete"
    loaded=$(psql -qtA "$admin_url" -c "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$db'")
    if [[ "$loaded" == "$marker" ]]; then
        echo "scale $scale: reusing database $db"
    else
        echo "scale $scale: loading database $db"
        psql -q "$admin_url" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
        measure "$medallion" source load --scale "$scale" --database-url "$url" --quiet
        # Settle the new tables before anything reads them (autovacuum, hint bits).
        psql -q "$url" -c "VACUUM ANALYZE"
        psql -q "$admin_url" -c "COMMENT ON DATABASE $db IS '$marker'"
    fi
    orders=$(psql -qtA "$url" -c "SELECT count(*) FROM orders")
    lines=$(psql -qtA "$url" -c "SELECT count(*) FROM order_details")

    measure "$medallion" ingest --quiet --lake "file://$dir/lake-local" --database-url "$url" --date "$snapshot"
    ingest_s=$wall
    for engine in "${engines[@]}"; do
        [[ "$engine" == local ]] || cp -r "$dir/lake-local" "$dir/lake-$engine"
    done

    for engine in "${engines[@]}"; do
        lake="file://$dir/lake-$engine"
        if [[ "$engine" == local ]]; then
            engine_url=local
        else
            cluster_dir="$dir/$engine"
            mkdir -p "$cluster_dir"
            start_cluster "${engine#cluster-}"
            engine_url="ballista://$scheduler"
        fi
        client_kb=0
        shuffled=0
        for stage in refine aggregate; do
            measure "$medallion" "$stage" --quiet --engine "$engine_url" --lake "$lake" --date "$snapshot"
            cp "$work/out.log" "$dir/$engine-$stage.log"
            result[$scale,$engine,$stage]=$wall
            ((peak_kb <= client_kb)) || client_kb=$peak_kb
            [[ "$engine" == local ]] || shuffled=$((shuffled + $(shuffled_since_last)))
        done
        result[$scale,$engine,client_kb]=$client_kb
        result[$scale,$engine,shuffled]=$shuffled
        if [[ "$engine" != local ]]; then
            # The jobs of refine and aggregate (before the small queries add theirs).
            status=$(cluster_status)
            result[$scale,$engine,jobs]=$(jq -r '"\(.jobs | length) (\([.jobs[].stages] | add // 0))"' <<<"$status")
            failed_jobs=$(jq '[.jobs[] | select(.state != "successful")] | length' <<<"$status")
            ((failed_jobs == 0)) || { echo "bench-cluster.sh: $engine: $failed_jobs job(s) not successful" >&2; cluster_logs; exit 1; }
        fi

        # The small query: the local engine's, then cluster-2's.
        if [[ "$engine" == local || "$engine" == cluster-2 ]]; then
            : >"$dir/overhead-$engine"
            for _ in $(seq "$overhead_runs"); do
                seconds_of "$medallion" sql --quiet --no-audit --engine "$engine_url" --lake "$lake" --format csv "$overhead_query" \
                    >>"$dir/overhead-$engine"
            done
            result[$scale,$engine,query_s]=$(median <"$dir/overhead-$engine")
        fi

        if [[ "$engine" != local ]]; then
            result[$scale,$engine,scheduler_kb]=$(peak_rss_of "$scheduler_pid")
            executor_kb=0
            for pid in "${executor_pids[@]}"; do
                kb=$(peak_rss_of "$pid")
                ((kb <= executor_kb)) || executor_kb=$kb
            done
            result[$scale,$engine,executor_kb]=$executor_kb
            stop_cluster
            rm -rf "$cluster_dir/shadow" "$cluster_dir"/work-*
            cluster_dir=""
        fi
    done

    # Agreement: every engine's silver counts and gold against the local engine's.
    figures_of "file://$dir/lake-local" >"$dir/figures-local"
    agreement=ok
    for engine in "${engines[@]:1}"; do
        figures_of "file://$dir/lake-$engine" >"$dir/figures-$engine"
        compare_figures "$dir/figures-local" "$dir/figures-$engine" "$engine" >>"$dir/differences" || agreement=failed
    done
    if [[ "$agreement" != ok ]]; then
        echo "bench-cluster.sh: scale $scale: the engines disagree:" >&2
        cat "$dir/differences" >&2
        exit 1
    fi

    local_s=$(calc "${result[$scale,local,refine]} + ${result[$scale,local,aggregate]}")
    printf '\n## scale %s (%s orders, %s order lines; ingest %.2f s, once)\n\n' "$scale" "$orders" "$lines" "$ingest_s"
    printf 'clusters on this machine: executors with 2 slots each, memory limit %s each; wall times and peaks are whole processes\n\n' \
        "${MEDALLION_MEMORY_LIMIT_MB:+$MEDALLION_MEMORY_LIMIT_MB MB}${MEDALLION_MEMORY_LIMIT_MB:-1536 MB (default)}"
    printf '| engine | refine s | aggregate s | refine + aggregate s | / local | client peak RSS MiB | scheduler peak RSS MiB | executor peak RSS MiB (max) | MB shuffled (bytes of shuffle files) | jobs (stages) |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    for engine in "${engines[@]}"; do
        both=$(calc "${result[$scale,$engine,refine]} + ${result[$scale,$engine,aggregate]}")
        result[$scale,$engine,both]=$both
        if [[ "$engine" == local ]]; then
            cluster_columns="| — | — | — | — |"
        else
            cluster_columns=$(printf '| %s | %s | %.1f | %s |' "$(mib "${result[$scale,$engine,scheduler_kb]}")" \
                "$(mib "${result[$scale,$engine,executor_kb]}")" "$(calc "${result[$scale,$engine,shuffled]} / 1000000")" \
                "${result[$scale,$engine,jobs]}")
        fi
        printf '| %s | %.2f | %.2f | %.2f | %.2f× | %s %s\n' "$engine" "${result[$scale,$engine,refine]}" \
            "${result[$scale,$engine,aggregate]}" "$both" "$(calc "$both / $local_s")" \
            "$(mib "${result[$scale,$engine,client_kb]}")" "$cluster_columns"
    done
    query_local=${result[$scale,local,query_s]}
    query_cluster=${result[$scale,cluster-2,query_s]}
    printf '\nsmall query (%s; whole process, median of %d): local %.3f s, cluster-2 %.3f s, cluster path costs %+.3f s per query\n' \
        "$overhead_query" "$overhead_runs" "$query_local" "$query_cluster" "$(calc "$query_cluster - $query_local")"
    echo "agreement: silver row counts and the gold tables of cluster-1 and cluster-2 equal the local engine's (${#agreement_queries[@]} queries)"
    rm -rf "$dir"/lake-*
done

echo
echo "stream, 1 process against 2 on a 4-partition topic: measured by scripts/bench-stream.sh (section 4), not here"
echo
echo "floors:"
ran_scale() { local s; for s in "${scales[@]}"; do [[ "$s" == "$1" ]] && return 0; done; return 1; }
if ran_scale 1000; then
    ratio=$(calc "${result[1000,cluster-2,both]} / ${result[1000,local,both]}")
    if awk -v r="$ratio" -v f="$floor_ratio" 'BEGIN { exit !(r <= f) }'; then verdict=PASS; else verdict=FAIL; floor_failed=1; fi
    printf '%s  scale 1000: cluster-2 refine + aggregate %.2f s = %.2f× the local engine (%.2f s) (floor: within %d×)\n' \
        "$verdict" "${result[1000,cluster-2,both]}" "$ratio" "${result[1000,local,both]}" "$floor_ratio"
else
    echo "not run  scale 1000: cluster-2 within ${floor_ratio}× of the local engine (run with scale 1000)"
fi
if ran_scale 10000; then
    largest_kb=0
    largest=""
    for engine in "${engines[@]}"; do
        for part in client_kb scheduler_kb executor_kb; do
            kb=${result[10000,$engine,$part]:-0}
            if ((kb > largest_kb)); then largest_kb=$kb; largest="$engine ${part%_kb}"; fi
        done
    done
    if ((largest_kb <= floor_rss_kb)); then verdict=PASS; else verdict=FAIL; floor_failed=1; fi
    printf '%s  scale 10000: largest peak RSS %s MiB (%s) (floor: no process above 2048 MiB)\n' "$verdict" "$(mib "$largest_kb")" "$largest"
else
    echo "not run  scale 10000: no process above 2 GiB of peak RSS (run with scale 10000)"
fi
for scale in "${scales[@]}"; do
    echo "kept database bench_cluster_$scale for the next run at scale $scale (drop it: psql \"$admin_url\" -c 'DROP DATABASE bench_cluster_$scale')"
done
((floor_failed == 0)) || exit 2
