#!/usr/bin/env bash
# stack.sh — the seed's docker-compose stack, without containers: PostgreSQL
# loaded with the real Northwind, Apache Kafka with the sales topic, and the
# S3 server, all on 127.0.0.1, started exactly as the tests start them. Then
# `medallion up` runs the whole lakehouse on them.
#
# Usage: scripts/stack.sh up|down|status|env
#
#   up      start the three services (installing what is missing), load
#           data/northwind/northwind.sql into the database `northwind` once,
#           with the topic `ventes-temps-reel` (kafka.sh creates it), and print
#           the environment to use.
#   down    stop the three services (their data stays for the next `up`).
#   status  one line per service; exit 1 when one is not running.
#   env     print the `export ...` lines for medallion (eval "$(scripts/stack.sh env)").
#
# Ports and state folders are those of scripts/pg.sh, kafka.sh and s3.sh
# (PGPORT, KAFKA_PORT, S3_PORT, MEDALLION_SERVICES_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly DATABASE=northwind
readonly DUMP=data/northwind/northwind.sql

die() { echo "stack.sh: $*" >&2; exit 1; }

psql_bin() {
    command -v psql 2>/dev/null && return
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$found" ]] || die "psql not found (scripts/pg.sh start installs PostgreSQL)"
    echo "$found"
}

# The Northwind database, loaded from the dump the first time only.
load_northwind() {
    local admin_url northwind_url psql
    admin_url="$(scripts/pg.sh env | sed -n 's/^export MEDALLION_PG_URL=//p')"
    northwind_url="${admin_url%/*}/$DATABASE"
    psql="$(psql_bin)"
    if ! "$psql" "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1; then
        "$psql" "$admin_url" -qc "CREATE DATABASE $DATABASE" >/dev/null
    fi
    if ! "$psql" "$northwind_url" -Atqc "SELECT to_regclass('public.order_details') IS NOT NULL" | grep -q t; then
        echo "stack.sh: loading $DUMP into $DATABASE" >&2
        "$psql" "$northwind_url" -q -v ON_ERROR_STOP=1 -f "$DUMP" >/dev/null
    fi
}

cmd_env() {
    local pg_url
    pg_url="$(scripts/pg.sh env | sed -n 's/^export MEDALLION_PG_URL=//p')"
    echo "export DATABASE_URL=${pg_url%/*}/$DATABASE"
    scripts/kafka.sh env | grep KAFKA_BOOTSTRAP_SERVERS
    scripts/s3.sh env
    echo "export MEDALLION_LAKE=s3://"
}

cmd_up() {
    scripts/toolchain.sh
    scripts/pg.sh start
    scripts/kafka.sh start
    scripts/s3.sh start
    load_northwind
    echo
    echo "The stack runs. Use it with:"
    echo '  eval "$(scripts/stack.sh env)"'
    echo "  medallion up            # schedules, stream, dashboard on http://127.0.0.1:8080/"
    echo
    cmd_env
}

cmd_down() {
    scripts/s3.sh stop
    scripts/kafka.sh stop
    scripts/pg.sh stop
}

cmd_status() {
    local failed=0
    scripts/pg.sh status || failed=1
    scripts/kafka.sh status || failed=1
    scripts/s3.sh status || failed=1
    return "$failed"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) die "usage: $0 up|down|status|env" ;;
esac
