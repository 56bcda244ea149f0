# service.sh — what pg.sh, kafka.sh and s3.sh share: the lock, pid files,
# waiting for a server to answer, stopping it, apt installs and the
# start|stop|status|env commands. Sourced, never run.
#
# A script sets SERVICE, the name in messages and of its state folder
# ("postgres", "kafka", "s3"), sources this file, which sets
#   STATE          the state folder, $SERVICES_DIR/$SERVICE
#   DATA           the server's data folder, $STATE/data
# and then sets:
#   PORT           the port clients connect to on $HOST
#   LOG            the log a failed start points to
#   START_TIMEOUT  seconds a start may take
#   PIDFILE        (servers we launch ourselves) the file holding their pid
#   EXTRA_COMMANDS (optional) the script's own commands, for the usage line
# and defines:
#   cmd_start, cmd_stop, cmd_env  the commands
#   is_running                    true when our server is up
#   show_start_log                prints what explains a failed start
# Its last line is `service_main "$@"`.
# shellcheck shell=bash
# shellcheck disable=SC2153  # PORT, LOG, ... are set by the sourcing script

readonly HOST=127.0.0.1
readonly SERVICES_DIR="${MEDALLION_SERVICES_DIR:-$HOME/.cache/medallion-services}"
readonly SCRIPT_NAME="${0##*/}"
readonly STATE="$SERVICES_DIR/$SERVICE"
readonly DATA="$STATE/data"

die() { echo "$SCRIPT_NAME: $*" >&2; exit 1; }

# Serialises start/stop of this service (tests may call us concurrently).
# Servers we launch get `9>&-` so they do not keep holding the lock.
take_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 600 9 || die "timed out waiting for the lock $STATE/.lock"
}

# Installs Debian packages with apt-get; its output goes to <state>/apt.log.
apt_install() {
    echo "$SCRIPT_NAME: installing $* with apt-get (log: $STATE/apt.log)" >&2
    {
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
    } >"$STATE/apt.log" 2>&1 || die "apt-get install $* failed, see $STATE/apt.log"
}

# True when something accepts TCP connections on $HOST:PORT.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

# Fails when another process already listens on one of the given ports.
refuse_taken_ports() {
    local port
    for port in "$@"; do
        if port_open "$port"; then
            die "port $HOST:$port is already taken by another process"
        fi
    done
}

# True when process PID exists and is not a zombie awaiting its reaper.
pid_live() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ "${stat##*) }" != Z* ]]
}

# True when process PID's command name is NAME (as `process_named NAME PID`).
process_named() { [[ "$(cat "/proc/$2/comm" 2>/dev/null)" == "$1" ]]; }

# True when $PIDFILE names a live process for which `"$@" PID` succeeds.
pid_file_process_is() {
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
    [[ -n "$pid" ]] && pid_live "$pid" && "$@" "$pid"
}

# True while the server we started lives: the process in $PIDFILE (even
# before its exec), or is_running for a server without a pid file.
server_alive() {
    if [[ -n "${PIDFILE:-}" ]]; then
        pid_live "$(cat "$PIDFILE" 2>/dev/null)"
    else
        is_running
    fi
}

# Starts the command "$@" as the server: in its own session, so that it
# outlives the caller's shell, with its output in OUTPUT and without our
# lock's fd 9. Its pid goes to $PIDFILE.
start_detached() {
    local output="$1"
    shift
    # From the state folder, so the server never holds a checkout's folder
    # as its working directory (a removed git worktree broke a kept server).
    (cd "$STATE" && exec setsid "$@" >"$output" 2>&1 </dev/null 9>&-) &
    echo $! >"$PIDFILE"
}

# True when process PID's working directory has been deleted: a server
# started that way may fail in odd ways and is restarted by its script.
cwd_deleted() {
    [[ "$(readlink "/proc/$1/cwd" 2>/dev/null)" == *" (deleted)" ]]
}

# Fails a start: what show_start_log prints, then MESSAGE.
start_failed() {
    show_start_log >&2 2>/dev/null || true
    die "$1 (log: $LOG)"
}

# Polls the command "$@" every POLL seconds until it succeeds. The start
# fails when the server dies meanwhile, or after START_TIMEOUT seconds with
# "<service> not STATE on <host:port>".
wait_until() {
    local poll="$1" state="$2"
    shift 2
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$@"; do
        server_alive || start_failed "$SERVICE exited during start"
        ((SECONDS < deadline)) || start_failed "$SERVICE not $state on $HOST:$PORT after ${START_TIMEOUT}s"
        sleep "$poll"
    done
}

# Stops process PID: SIGTERM, then SIGKILL when it still lives after SECONDS.
terminate() {
    local pid="$1" seconds="$2"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq $((seconds * 10))); do
        pid_live "$pid" || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

# `stop` for a server with a pid file, given SECONDS to shut down.
stop_pid_file_server() {
    if is_running; then
        terminate "$(cat "$PIDFILE")" "$1"
        echo "$SERVICE stopped"
    else
        echo "$SERVICE not running"
    fi
    rm -f "$PIDFILE"
}

# `status`: one line; exit status 1 when not running.
cmd_status() {
    if ! is_running; then
        echo "$SERVICE not running"
        return 1
    fi
    if [[ -n "${PIDFILE:-}" ]]; then
        echo "$SERVICE running on $HOST:$PORT (pid $(cat "$PIDFILE"), data: $DATA)"
    else
        echo "$SERVICE running on $HOST:$PORT (data: $DATA)"
    fi
}

usage() {
    local commands="start|stop|status|env"
    [[ -z "${EXTRA_COMMANDS:-}" ]] || commands+="|$EXTRA_COMMANDS"
    die "usage: $0 $commands"
}

# Runs the command named by the script's first argument; start and stop
# hold the lock.
service_main() {
    case "${1:-}" in
        start) take_lock; cmd_start ;;
        stop) take_lock; cmd_stop ;;
        status) cmd_status ;;
        env) cmd_env ;;
        *) usage ;;
    esac
}
