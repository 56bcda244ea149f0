#!/usr/bin/env bash
# Benchmark of the serving layer (not a test). Builds a lake from the built-in
# Northwind (`medallion demo --no-serve`), then `medallion bench-serve` serves
# it on free loopback ports and, in the same run, drives N concurrent clients
# (keep-alive connections) for a fixed time against
#   * GET /health             — the reference: a bare HTTP round trip
#   * GET /api/kpis           — KPIs (cached per Delta version of the gold tables)
#   * a PG-wire query         — SELECT over gold.kpi_revenue through pgwire
# and prints requests/s and p50/p99 latency of each, plus p99 kpis / p99 health.
# With --governance it measures instead what roles and the audit log cost:
# /api/sql and the PostgreSQL wire with a PII query, for an admin and a reader
# (masked), the audit log off and on, and the p99 each adds to the admin's.
# There each configuration's server runs in a process of its own (the binary
# started as `medallion serve` on free loopback ports with a temporary
# medallion.toml, stopped after its load), the clients in bench-serve's:
# servers started one after the other in one process were not alike (the
# first consistently faster), which swung the p99 ratios by more than 10 %.
#
# Usage: scripts/bench-serve.sh [CLIENTS] [SECONDS] [--governance]   (default: 64 10)
#   --governance runs each configuration 4 times (rounds, the order turned
#   each round, so each runs once in each place) and prints the median added p99
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion-target}"
clients="${1:-64}"
seconds="${2:-10}"
mode="${3:-}"

scripts/toolchain.sh
cargo build --locked --bin medallion
medallion="$CARGO_TARGET_DIR/debug/medallion"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset MEDALLION_TOKEN

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; build: $(basename "$(dirname "$medallion")") profile"
"$medallion" demo --no-serve --quiet --lake "file://$work/lake" >/dev/null
"$medallion" bench-serve --quiet --lake "file://$work/lake" --clients "$clients" --seconds "$seconds" $mode
