#!/usr/bin/env bash
# pg.sh — a throw-away PostgreSQL server for medallion's tests.
#
# Usage: scripts/pg.sh start|stop|status|env
#
#   start   install PostgreSQL if missing (apt), create the cluster on first
#           use, start it and create the role/database. No-op when running.
#   stop    pg_ctl stop -m fast (no-op when not running).
#   status  exit 0 and say so when running, exit 1 otherwise.
#   env     print `export ...` lines for a client (MEDALLION_PG_URL, DATABASE_URL,
#           MEDALLION_PG_SSLROOTCERT: the CA that signed the server's certificate).
#
# Server: 127.0.0.1:${PGPORT:-25432} (TCP on 127.0.0.1 only), unix socket in
# <state>/run. Role `medallion` / password `medallion` (superuser), database
# `medallion`. TCP logins use scram-sha-256, so a wrong password is refused.
# Test-only settings: fsync, synchronous_commit and full_page_writes are off.
# TLS is on (`ssl = on`) with a certificate for localhost and 127.0.0.1 signed
# by a test CA, both made with openssl under <state>/tls on first use (and
# again when a file is missing); plain TCP logins stay allowed. A running
# server whose settings or certificate changed is restarted.
#
# State: ${MEDALLION_SERVICES_DIR:-$HOME/.cache/medallion-services}/postgres
# (data/, run/, postgres.log). PostgreSQL refuses to run as root, so the server
# runs as the `postgres` OS user (created if missing). When that user cannot
# walk into the state dir (e.g. /root is mode 700), the blocking parent
# directories get o+x (traverse only, no listing).
set -euo pipefail
readonly SERVICE=postgres
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

readonly PORT="${PGPORT:-25432}"
readonly PG_USER=medallion
readonly PG_PASSWORD=medallion
readonly PG_DB=medallion
readonly OS_USER=postgres
readonly SOCK="$STATE/run"
readonly LOG="$STATE/postgres.log"
readonly START_TIMEOUT=30
readonly TLS_DIR="$STATE/tls"

# Directory holding initdb/pg_ctl/postgres: PATH first, then the newest
# Debian install under /usr/lib/postgresql/*/bin. Empty when none.
find_bindir() {
    local initdb
    initdb="$(command -v initdb 2>/dev/null || true)"
    if [[ -n "$initdb" ]]; then
        dirname "$(readlink -f "$initdb")"
        return
    fi
    local dir best=""
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" ]] || continue
        if [[ -z "$best" ]] || [[ "$(printf '%s\n' "$best" "$dir" | sort -V | tail -n 1)" == "$dir" ]]; then
            best="$dir"
        fi
    done
    [[ -n "$best" ]] && echo "$best"
    return 0
}

ensure_os_user() {
    id -u "$OS_USER" >/dev/null 2>&1 && return
    useradd --system --user-group --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin "$OS_USER" || die "cannot create OS user $OS_USER"
}

# Let the postgres user traverse every parent of the state dir (o+x only).
ensure_traversable() {
    local dir="$STATE"
    while [[ "$dir" != "/" ]]; do
        dir="$(dirname "$dir")"
        if ! runuser -u "$OS_USER" -- test -x "$dir"; then
            chmod o+x "$dir" || die "cannot make $dir traversable for $OS_USER"
        fi
    done
}

# Run as the postgres user from / (it may not be allowed into our cwd).
as_pg() { (cd / && runuser -u "$OS_USER" -- "$@"); }

is_running() {
    [[ -n "$BINDIR" && -f "$DATA/PG_VERSION" ]] && as_pg "$BINDIR/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

stop_cluster() {
    as_pg "$BINDIR/pg_ctl" stop -D "$DATA" -m fast -w >/dev/null || die "pg_ctl stop failed (log: $LOG)"
}

init_cluster() {
    [[ -f "$DATA/PG_VERSION" ]] && return
    rm -rf "$DATA"
    install -d -o "$OS_USER" -g "$(id -gn "$OS_USER")" -m 700 "$DATA"
    as_pg "$BINDIR/initdb" -D "$DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$STATE/initdb.log" 2>&1 \
        || die "initdb failed, see $STATE/initdb.log"
    echo "include_if_exists = 'medallion.conf'" >>"$DATA/postgresql.conf"
}

# The server's settings (medallion.conf); a running server whose file
# differs is restarted, so PGPORT or TLS changes are picked up.
desired_config() {
    cat <<EOF
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
EOF
}

write_config() {
    desired_config | as_pg tee "$DATA/medallion.conf" >/dev/null
    as_pg tee "$DATA/pg_hba.conf" >/dev/null <<EOF
# TYPE  DATABASE USER ADDRESS       METHOD
local   all      all                trust
host    all      all  127.0.0.1/32  scram-sha-256
EOF
}

# A test CA and a server certificate it signs (CN/SAN localhost, 127.0.0.1),
# made when one of the files is missing. True when it made new ones.
make_certificates() {
    [[ -s "$TLS_DIR/ca.crt" && -s "$TLS_DIR/server.crt" && -s "$TLS_DIR/server.key" ]] && return 1
    command -v openssl >/dev/null || apt_install openssl
    mkdir -p "$TLS_DIR"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    {
        openssl req -x509 "${ec[@]}" -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" -days 3650 \
            -subj "/CN=medallion test PostgreSQL CA" &&
        openssl req "${ec[@]}" -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" -subj /CN=localhost &&
        printf '%s\n' basicConstraints=CA:FALSE keyUsage=digitalSignature,keyEncipherment \
            extendedKeyUsage=serverAuth subjectAltName=DNS:localhost,IP:127.0.0.1 >"$TLS_DIR/server.ext" &&
        openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
            -CAcreateserial -out "$TLS_DIR/server.crt" -days 3650 -extfile "$TLS_DIR/server.ext"
    } >"$TLS_DIR/openssl.log" 2>&1 || die "cannot make the test certificates, see $TLS_DIR/openssl.log"
    chmod 600 "$TLS_DIR/ca.key" "$TLS_DIR/server.key"
    return 0
}

# The server's copy of its certificate and key (owned by postgres, 0600:
# PostgreSQL refuses a key others can read).
install_certificates() {
    install -o "$OS_USER" -g "$(id -gn "$OS_USER")" -m 644 "$TLS_DIR/server.crt" "$DATA/server.crt"
    install -o "$OS_USER" -g "$(id -gn "$OS_USER")" -m 600 "$TLS_DIR/server.key" "$DATA/server.key"
}

accepts_connections() { "$BINDIR/pg_isready" -q -h "$HOST" -p "$PORT"; }

show_start_log() { tail -n 20 "$LOG"; }

# Idempotent: (re)sets the role's password and creates the database once.
ensure_role_and_db() {
    as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres \
        >>"$LOG" 2>&1 <<SQL || die "cannot create role/database $PG_USER (log: $LOG)"
SELECT format('CREATE ROLE %I', '$PG_USER')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') \gexec
ALTER ROLE $PG_USER WITH LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
SQL
}

# A real password login over TCP, as a client would do it.
check_login() {
    PGPASSWORD="$PG_PASSWORD" "$BINDIR/psql" -X -q -At -h "$HOST" -p "$PORT" -U "$PG_USER" -d "$PG_DB" \
        -c 'SELECT 1' >/dev/null 2>>"$LOG" || die "login as $PG_USER on $HOST:$PORT failed (log: $LOG)"
}

cmd_start() {
    mkdir -p "$STATE"
    if [[ -z "$BINDIR" ]]; then
        apt_install postgresql
        BINDIR="$(find_bindir)"
        [[ -n "$BINDIR" ]] || die "initdb still not found after installing postgresql"
    fi
    ensure_os_user
    ensure_traversable
    local new_certificates=0
    make_certificates && new_certificates=1
    # A server left running with other settings (PGPORT changed, no TLS yet)
    # or another certificate: restart it.
    if is_running && { [[ "$new_certificates" == 1 ]] || [[ "$(desired_config)" != "$(cat "$DATA/medallion.conf" 2>/dev/null)" ]]; }; then
        echo "$SCRIPT_NAME: restarting PostgreSQL to apply new settings" >&2
        stop_cluster
    fi
    if ! is_running; then
        init_cluster
        install -d -o "$OS_USER" -g "$(id -gn "$OS_USER")" -m 700 "$SOCK"
        touch "$LOG" && chown "$OS_USER" "$LOG"
        install_certificates
        write_config
        as_pg "$BINDIR/pg_ctl" start -D "$DATA" -l "$LOG" -w -t "$START_TIMEOUT" >/dev/null 2>&1 9>&- \
            || start_failed "pg_ctl start failed"
    fi
    wait_until 0.2 ready accepts_connections
    ensure_role_and_db
    check_login
    echo "postgres ready on $HOST:$PORT"
}

cmd_stop() {
    if ! is_running; then
        echo "postgres not running"
        return
    fi
    stop_cluster
    echo "postgres stopped"
}

cmd_env() {
    local url="postgres://$PG_USER:$PG_PASSWORD@$HOST:$PORT/$PG_DB"
    echo "export MEDALLION_PG_URL=$url"
    echo "export DATABASE_URL=$url"
    echo "export MEDALLION_PG_SSLROOTCERT=$TLS_DIR/ca.crt"
}

# Where the PostgreSQL programs are; empty until installed (cmd_start).
BINDIR="$(find_bindir)"
service_main "$@"
