#!/usr/bin/env bash
# Builds medallion (same profile and target directory as the tests) and runs
# `medallion demo`: the built-in Northwind through bronze → silver → gold in
# ./lake, then the KPIs. Extra arguments go to `medallion demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion-target}"
scripts/toolchain.sh
cargo build --locked --bin medallion
exec "$CARGO_TARGET_DIR/debug/medallion" demo "$@"
