#!/usr/bin/env bash
# Runs medallion's whole test suite (unit + integration) against real services
# on 127.0.0.1, which this script installs where missing and starts itself:
#   PostgreSQL (scripts/pg.sh), Apache Kafka (scripts/kafka.sh), and Debian's
#   chromium for the dashboard test
# The build shares one persistent target directory and one profile with the
# demo and the benchmarks, so nothing is compiled twice.
#
# Usage: scripts/test.sh [extra cargo test args]
#   MEDALLION_KEEP_SERVICES=1  leave the services running afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medallion-target}"
scripts/toolchain.sh

scripts/pg.sh start
scripts/kafka.sh start
# The dashboard is tested in a real headless browser (Debian's chromium).
if ! command -v chromium >/dev/null 2>&1; then
    echo "test.sh: installing chromium (apt) for the dashboard test" >&2
    if [[ "$(id -u)" == 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [[ "${MEDALLION_KEEP_SERVICES:-0}" != 1 ]]; then
    trap 'scripts/pg.sh stop >/dev/null 2>&1 || true; scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
fi
eval "$(scripts/pg.sh env)"
eval "$(scripts/kafka.sh env)"
export MEDALLION_TEST_DATABASE_URL="$MEDALLION_PG_URL"
export MEDALLION_TEST_KAFKA="$KAFKA_BOOTSTRAP_SERVERS"
# Jars for the second, throw-away broker of the broker-restart test.
export MEDALLION_TEST_KAFKA_LIBS="${MEDALLION_SERVICES_DIR:-$HOME/.cache/medallion-services}/kafka/libs-${KAFKA_VERSION:-4.1.1}"
unset KAFKA_BOOTSTRAP_SERVERS
unset DATABASE_URL MEDALLION_LAKE

cargo test --locked "$@"
