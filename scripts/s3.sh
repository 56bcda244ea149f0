#!/usr/bin/env bash
# s3.sh — a local S3-compatible server for medallion's tests: medallion-s3
# (tools/s3-test-server), the file-system store of the s3s-fs crate behind a
# lock that makes conditional writes atomic, as on real S3 and MinIO (s3s-fs
# alone checks, then writes: two racing Delta commits could both "win").
#
# Usage: scripts/s3.sh start|stop|status|env
#
#   start   build medallion-s3 if missing or changed (cargo, ~2 min once),
#           start it and create the buckets bronze/silver/gold. No-op when
#           already running.
#   stop    stop the server (no-op when not running).
#   status  exit 0 and say so when running, exit 1 otherwise.
#   env     print `export AWS_...` lines for a client.
#
# Server: http://127.0.0.1:${S3_PORT:-29000}, path-style requests, region
# us-east-1 (any region is accepted), access key `medallion-test`, secret key
# `medallion-test-secret` (SigV4; unsigned or wrongly signed requests get 403).
# A bucket is a top-level folder of <state>/data.
#
# Conditional writes, checked against s3s-fs 0.14.1 with signed curl requests
# (one at a time; medallion-s3 serves them one at a time):
#   PUT with `If-None-Match: *` on a missing key  -> 200 (created)
#   PUT with `If-None-Match: *` on an existing key -> 412 PreconditionFailed
#   PUT with `If-Match: <etag>` on a changed key   -> 412 PreconditionFailed
# (CompleteMultipartUpload checks If-None-Match / If-Match the same way.)
#
# State: ${MEDALLION_SERVICES_DIR:-$HOME/.cache/medallion-services}/s3
# (data/, server.log, server.pid, cargo-build.log); the server is built in
# ${MEDALLION_S3_BUILD_DIR:-$HOME/.cache/medallion-s3-build}.
set -euo pipefail
readonly SERVICE=s3
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

readonly PORT="${S3_PORT:-29000}"
readonly ACCESS_KEY=medallion-test
readonly SECRET_KEY=medallion-test-secret
readonly REGION=us-east-1
readonly BUCKETS=(bronze silver gold)
readonly LOG="$STATE/server.log"
readonly PIDFILE="$STATE/server.pid"
# Left by earlier versions of this script, which ran s3s-fs itself.
readonly OLD_PIDFILE="$STATE/s3s-fs.pid"
SERVER_SOURCE="$(cd "$(dirname "$0")/../tools/s3-test-server" && pwd)"
readonly SERVER_SOURCE
# Shared by every instance (private ones have their own state folder).
readonly BUILD="${MEDALLION_S3_BUILD_DIR:-$HOME/.cache/medallion-s3-build}"
readonly SERVER_BIN="$BUILD/release/medallion-s3"
readonly START_TIMEOUT=20

find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        command -v cargo
    elif [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        echo "$HOME/.cargo/bin/cargo"
    else
        die "cargo is missing: it builds the test S3 server (run scripts/toolchain.sh first)"
    fi
}

ensure_curl() {
    command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
}

# Builds medallion-s3 into $BUILD; cargo makes this a quick no-op
# when the binary is up to date with tools/s3-test-server.
build_server() {
    local cargo
    cargo="$(find_cargo)"
    [[ -x "$SERVER_BIN" ]] || echo "s3.sh: building the test S3 server (a few minutes once, log: $STATE/cargo-build.log)" >&2
    local -a cmd=(env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR "$cargo" build --release
                  --manifest-path "$SERVER_SOURCE/Cargo.toml" --target-dir "$BUILD")
    if ! "${cmd[@]}" --locked >"$STATE/cargo-build.log" 2>&1; then
        "${cmd[@]}" >>"$STATE/cargo-build.log" 2>&1 \
            || die "building the test S3 server failed, see $STATE/cargo-build.log"
    fi
}

# Stops an s3s-fs started by an earlier version of this script, which would
# hold the port.
stop_old_server() {
    [[ -f "$OLD_PIDFILE" ]] || return 0
    local pid
    pid="$(cat "$OLD_PIDFILE")"
    if [[ -n "$pid" ]] && pid_live "$pid" && process_named s3s-fs "$pid"; then
        terminate "$pid" 5
    fi
    rm -f "$OLD_PIDFILE"
}

is_running() { pid_file_process_is process_named medallion-s3; }

create_buckets() {
    local b
    for b in "${BUCKETS[@]}"; do mkdir -p "$DATA/$b"; done
}

launch() {
    refuse_taken_ports "$PORT"
    RUST_LOG="${RUST_LOG:-warn}" start_detached "$LOG" "$SERVER_BIN" --host "$HOST" --port "$PORT" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$DATA"
}

show_start_log() { tail -n 20 "$LOG"; }

# A signed ListBuckets (curl's own SigV4) must succeed and list our buckets.
# s3s insists on x-amz-content-sha256 (here: the hash of the empty body).
check_signed_request() {
    local body b empty_sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    body="$(curl -sS --fail --max-time 5 --aws-sigv4 "aws:amz:$REGION:s3" \
        --user "$ACCESS_KEY:$SECRET_KEY" -H "x-amz-content-sha256: $empty_sha256" \
        "http://$HOST:$PORT/" 2>&1)" \
        || die "signed ListBuckets on $HOST:$PORT failed: $body"
    for b in "${BUCKETS[@]}"; do
        [[ "$body" == *"<Name>$b</Name>"* ]] || die "bucket $b missing from ListBuckets on $HOST:$PORT"
    done
}

cmd_start() {
    mkdir -p "$STATE"
    ensure_curl
    create_buckets
    stop_old_server
    if is_running && cwd_deleted "$(cat "$PIDFILE")"; then
        echo "s3.sh: the running server's working folder was deleted; restarting it" >&2
        cmd_stop
    fi
    if ! is_running; then
        build_server
        launch
    fi
    wait_until 0.2 answering port_open "$PORT"
    check_signed_request
    echo "s3 ready on $HOST:$PORT"
}

cmd_stop() { stop_pid_file_server 5; }

cmd_env() {
    echo "export AWS_ENDPOINT_URL=http://$HOST:$PORT"
    echo "export AWS_ACCESS_KEY_ID=$ACCESS_KEY"
    echo "export AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
    echo "export AWS_REGION=$REGION"
    echo "export AWS_ALLOW_HTTP=true"
}

service_main "$@"
