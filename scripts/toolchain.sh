#!/usr/bin/env bash
# Makes sure the build tools exist: a Rust toolchain (rustup) and the C
# toolchain that librdkafka and zstd are compiled with, and the OpenSSL
# headers librdkafka's SASL/TLS support links against. Installs what is
# missing; does nothing when all is there.
set -euo pipefail

missing_packages=()
for tool in cc make perl pkg-config; do
    command -v "$tool" >/dev/null 2>&1 || missing_packages+=("$tool")
done
if ((${#missing_packages[@]})) || ! pkg-config --exists openssl 2>/dev/null; then
    echo "toolchain.sh: installing build tools (${missing_packages[*]:-} libssl-dev)" >&2
    apt-get update -qq
    apt-get install -y -qq build-essential perl pkg-config libssl-dev >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "toolchain.sh: no Rust toolchain; install it with rustup (https://rustup.rs) and retry" >&2
    exit 1
fi
