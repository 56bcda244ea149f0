#!/usr/bin/env bash
# Runs medallion's whole test suite (unit + integration) against real services
# on 127.0.0.1, which this script installs where missing and starts itself:
#   PostgreSQL (scripts/pg.sh), Apache Kafka with a SASL listener (scripts/kafka.sh),
#   an S3 server, medallion-s3 (scripts/s3.sh); the S3 fault tests start their own
#   private instances through the same script, on other ports;
#   Debian's chromium for the dashboard test, and Python's jsonschema for the
#   OpenLineage test (scripts/pytools.sh)
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
scripts/s3.sh start
# The dashboard is tested in a real headless browser (Debian's chromium).
if ! command -v chromium >/dev/null 2>&1; then
    echo "test.sh: installing chromium (apt) for the dashboard test" >&2
    if [[ "$(id -u)" == 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# OpenLineage events are validated against the vendored JSON schemas with
# Python's jsonschema (installed into a virtualenv when missing).
MEDALLION_TEST_PYTHON="$(scripts/pytools.sh)"
export MEDALLION_TEST_PYTHON
if [[ "${MEDALLION_KEEP_SERVICES:-0}" != 1 ]]; then
    trap 'scripts/pg.sh stop >/dev/null 2>&1 || true; scripts/kafka.sh stop >/dev/null 2>&1 || true; scripts/s3.sh stop >/dev/null 2>&1 || true' EXIT
fi
eval "$(scripts/pg.sh env)"
eval "$(scripts/kafka.sh env)"
export MEDALLION_TEST_DATABASE_URL="$MEDALLION_PG_URL"
export MEDALLION_TEST_KAFKA="$KAFKA_BOOTSTRAP_SERVERS"
# The broker's SASL_PLAINTEXT listener (SCRAM-SHA-256) and its user.
export MEDALLION_TEST_KAFKA_SASL="$MEDALLION_KAFKA_SASL_BOOTSTRAP"
export MEDALLION_TEST_KAFKA_SASL_MECHANISM="$MEDALLION_KAFKA_SASL_MECHANISM"
export MEDALLION_TEST_KAFKA_SASL_USERNAME="$MEDALLION_KAFKA_SASL_USERNAME"
export MEDALLION_TEST_KAFKA_SASL_PASSWORD="$MEDALLION_KAFKA_SASL_PASSWORD"
# Jars for the second, throw-away broker of the broker-restart test.
export MEDALLION_TEST_KAFKA_LIBS="${MEDALLION_SERVICES_DIR:-$HOME/.cache/medallion-services}/kafka/libs-${KAFKA_VERSION:-4.1.1}"
unset KAFKA_BOOTSTRAP_SERVERS MEDALLION_KAFKA_SASL_PASSWORD KAFKA_SECURITY_PROTOCOL KAFKA_SASL_MECHANISM \
    KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD KAFKA_SSL_CA_LOCATION
# The S3 server for the tests, under test-only names: the AWS_* variables
# stay unset so that no other test talks to S3 by accident.
eval "$(scripts/s3.sh env)"
export MEDALLION_TEST_S3_ENDPOINT="$AWS_ENDPOINT_URL"
export MEDALLION_TEST_S3_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
export MEDALLION_TEST_S3_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export MEDALLION_TEST_S3_REGION="$AWS_REGION"
export MEDALLION_TEST_S3_SCRIPT="$PWD/scripts/s3.sh"
unset DATABASE_URL MEDALLION_LAKE AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION \
    AWS_DEFAULT_REGION AWS_ALLOW_HTTP AWS_SESSION_TOKEN AWS_PROFILE MEDALLION_CREATE_BUCKETS

cargo test --locked "$@"
