#!/usr/bin/env bash
# s3.sh — a local S3-compatible server (s3s-fs) for medallion's tests.
#
# Usage: scripts/s3.sh start|stop|status|env
#
#   start   install s3s-fs if missing (cargo install, ~3 min once), start it and
#           create the buckets bronze/silver/gold. No-op when already running.
#   stop    stop the server (no-op when not running).
#   status  exit 0 and say so when running, exit 1 otherwise.
#   env     print `export AWS_...` lines for a client.
#
# Server: http://127.0.0.1:${S3_PORT:-29000}, path-style requests, region
# us-east-1 (any region is accepted), access key `medallion-test`, secret key
# `medallion-test-secret` (SigV4; unsigned or wrongly signed requests get 403).
# A bucket is a top-level folder of <state>/data.
#
# Conditional writes, checked against s3s-fs 0.14.1 with signed curl requests:
#   PUT with `If-None-Match: *` on a missing key  -> 200 (created)
#   PUT with `If-None-Match: *` on an existing key -> 412 PreconditionFailed
#   PUT with `If-Match: <etag>` on a changed key   -> 412 PreconditionFailed
# (CompleteMultipartUpload checks If-None-Match / If-Match the same way.)
#
# State: ${MEDALLION_SERVICES_DIR:-$HOME/.cache/medallion-services}/s3
# (data/, s3s-fs.log, s3s-fs.pid, cargo-install.log).
set -euo pipefail

readonly HOST=127.0.0.1
readonly PORT="${S3_PORT:-29000}"
readonly ACCESS_KEY=medallion-test
readonly SECRET_KEY=medallion-test-secret
readonly REGION=us-east-1
readonly BUCKETS=(bronze silver gold)
readonly S3S_VERSION=0.14.1
readonly STATE="${MEDALLION_SERVICES_DIR:-$HOME/.cache/medallion-services}/s3"
readonly DATA="$STATE/data"
readonly LOG="$STATE/s3s-fs.log"
readonly PIDFILE="$STATE/s3s-fs.pid"
readonly START_TIMEOUT=20

die() { echo "s3.sh: $*" >&2; exit 1; }

# Serialise start/stop of this service (tests may call us concurrently).
# Servers we launch get `9>&-` so they do not keep holding the lock.
take_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 600 9 || die "timed out waiting for the lock $STATE/.lock"
}

# Path of the s3s-fs binary (PATH, then ~/.cargo/bin), empty when absent.
find_s3s() {
    if command -v s3s-fs >/dev/null 2>&1; then
        command -v s3s-fs
    elif [[ -x "$HOME/.cargo/bin/s3s-fs" ]]; then
        echo "$HOME/.cargo/bin/s3s-fs"
    fi
}

find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        command -v cargo
    elif [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        echo "$HOME/.cargo/bin/cargo"
    else
        die "s3s-fs is missing and so is cargo (install a Rust toolchain first)"
    fi
}

ensure_curl() {
    command -v curl >/dev/null 2>&1 && return
    echo "s3.sh: installing curl with apt-get (log: $STATE/apt.log)" >&2
    {
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl ca-certificates
    } >"$STATE/apt.log" 2>&1 || die "apt-get install curl failed, see $STATE/apt.log"
}

install_s3s() {
    local cargo
    cargo="$(find_cargo)"
    echo "s3.sh: installing s3s-fs $S3S_VERSION with cargo (a few minutes, log: $STATE/cargo-install.log)" >&2
    # A private temporary target dir: never build inside the project's one.
    local -a cmd=(env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR "$cargo" install
                  "s3s-fs@$S3S_VERSION" --features binary)
    if ! "${cmd[@]}" --locked >"$STATE/cargo-install.log" 2>&1; then
        "${cmd[@]}" >>"$STATE/cargo-install.log" 2>&1 \
            || die "cargo install s3s-fs failed, see $STATE/cargo-install.log"
    fi
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null; }

# True when process $1 exists and is not a zombie awaiting its reaper.
pid_live() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ "${stat##*) }" != Z* ]]
}

# True while the process in the pid file lives (even before its exec).
alive() { [[ -f "$PIDFILE" ]] && pid_live "$(cat "$PIDFILE")"; }

# True when the pid file names a live s3s-fs process.
is_running() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(cat "$PIDFILE")"
    [[ -n "$pid" ]] && pid_live "$pid" \
        && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == s3s-fs ]]
}

create_buckets() {
    local b
    for b in "${BUCKETS[@]}"; do mkdir -p "$DATA/$b"; done
}

launch() {
    local bin="$1"
    port_open && die "port $HOST:$PORT is already taken by another process"
    # setsid: own session, so the server outlives the caller's shell/job.
    RUST_LOG="${RUST_LOG:-warn}" setsid "$bin" --host "$HOST" --port "$PORT" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$DATA" \
        >"$LOG" 2>&1 </dev/null 9>&- &
    echo $! >"$PIDFILE"
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT))
    until port_open; do
        if ! alive; then
            tail -n 20 "$LOG" >&2 || true
            die "s3s-fs exited during start (log: $LOG)"
        fi
        ((SECONDS < deadline)) || die "s3s-fs not answering on $HOST:$PORT after ${START_TIMEOUT}s (log: $LOG)"
        sleep 0.2
    done
}

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
    if ! is_running; then
        local bin
        bin="$(find_s3s)"
        if [[ -z "$bin" ]]; then
            install_s3s
            bin="$(find_s3s)"
            [[ -n "$bin" ]] || die "s3s-fs still not found after cargo install"
        fi
        launch "$bin"
    fi
    wait_ready
    check_signed_request
    echo "s3 ready on $HOST:$PORT"
}

cmd_stop() {
    if ! is_running; then
        rm -f "$PIDFILE"
        echo "s3 not running"
        return
    fi
    local pid
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        pid_live "$pid" || break
        sleep 0.1
    done
    if pid_live "$pid"; then kill -9 "$pid"; fi
    rm -f "$PIDFILE"
    echo "s3 stopped"
}

cmd_status() {
    if is_running; then
        echo "s3 running on $HOST:$PORT (pid $(cat "$PIDFILE"), data: $DATA)"
    else
        echo "s3 not running"
        return 1
    fi
}

cmd_env() {
    echo "export AWS_ENDPOINT_URL=http://$HOST:$PORT"
    echo "export AWS_ACCESS_KEY_ID=$ACCESS_KEY"
    echo "export AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
    echo "export AWS_REGION=$REGION"
    echo "export AWS_ALLOW_HTTP=true"
}

main() {
    case "${1:-}" in
        start) take_lock; cmd_start ;;
        stop) take_lock; cmd_stop ;;
        status) cmd_status ;;
        env) cmd_env ;;
        *) die "usage: $0 start|stop|status|env" ;;
    esac
}

main "$@"
