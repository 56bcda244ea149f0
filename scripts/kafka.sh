#!/usr/bin/env bash
# kafka.sh — a single-node Apache Kafka 4.x broker (KRaft) for medallion's tests.
#
# Usage: scripts/kafka.sh start|stop|status|env
#        scripts/kafka.sh create-topic NAME PARTITIONS
#
#   start          fetch the Kafka jars from Maven Central once (cached in the
#                  state dir), format the KRaft storage once, start the broker
#                  and create the topic `ventes-temps-reel` (1 partition).
#                  No-op when already running.
#   stop           stop the broker (no-op when not running).
#   status         exit 0 and say so when running, exit 1 otherwise.
#   create-topic   create topic NAME with PARTITIONS partitions (replication 1)
#                  unless it exists; fails if it exists with another count.
#   env            print `export ...` lines for a client: the plain listener
#                  (KAFKA_BOOTSTRAP_SERVERS) and the SASL one
#                  (MEDALLION_KAFKA_SASL_BOOTSTRAP, _MECHANISM, _USERNAME, _PASSWORD).
#
# Broker: PLAINTEXT://127.0.0.1:${KAFKA_PORT:-29092} without authentication,
# SASL_PLAINTEXT://127.0.0.1:${KAFKA_SASL_PORT:-29094} with SCRAM-SHA-256 for
# the user `medallion` (its password generated once, in sasl-password),
# controller on 127.0.0.1:${KAFKA_CONTROLLER_PORT:-29093}. A broker already
# running with another configuration (other ports, no SASL listener) is
# restarted. Topics are auto-created on first use too (1 partition). Kafka
# version: ${KAFKA_VERSION:-4.1.1} (org.apache.kafka:kafka_2.13 + kafka-tools,
# run on the machine's Java 17).
#
# State: ${MEDALLION_SERVICES_DIR:-$HOME/.cache/medallion-services}/kafka
# (libs-<version>/ jars, data/ log dirs, server.properties, logs/, kafka.pid,
# sasl-password, and sasl-user-created once the user exists in data/).
set -euo pipefail
readonly SERVICE=kafka
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

readonly EXTRA_COMMANDS="create-topic NAME PARTITIONS"
readonly PORT="${KAFKA_PORT:-29092}"
readonly CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-29093}"
readonly SASL_PORT="${KAFKA_SASL_PORT:-29094}"
readonly SASL_MECHANISM=SCRAM-SHA-256
readonly SASL_USER=medallion
readonly SASL_PASSWORD_FILE="$STATE/sasl-password"
# Present once the SASL user exists in the broker's metadata (data/).
readonly SASL_USER_MARK="$STATE/sasl-user-created"
readonly VERSION="${KAFKA_VERSION:-4.1.1}"
readonly LOG4J_VERSION=2.24.3
readonly DEFAULT_TOPIC=ventes-temps-reel
readonly LIBS="${KAFKA_LIBS:-$STATE/libs-$VERSION}"
readonly LOGS="$STATE/logs"
readonly LOG="$LOGS/server.log"
readonly PIDFILE="$STATE/kafka.pid"
readonly CONFIG="$STATE/server.properties"
readonly START_TIMEOUT=90
readonly BOOTSTRAP="$HOST:$PORT"
readonly SASL_BOOTSTRAP="$HOST:$SASL_PORT"

ensure_java() {
    command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
}

# Resolve kafka_2.13 + kafka-tools (topic admin) and their runtime deps into
# $LIBS with a throw-away pom; a marker file makes later starts skip Maven.
fetch_jars() {
    [[ -f "$LIBS/.complete" ]] && return
    command -v mvn >/dev/null 2>&1 || apt_install maven
    local build="$STATE/mvn"
    mkdir -p "$build"
    cat >"$build/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.medallion</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$VERSION</version></dependency>
    <!-- Kafka logs through slf4j 1.7; route it to log4j2 so logs/ is useful. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    rm -rf "$LIBS"
    echo "kafka.sh: fetching Kafka $VERSION jars with Maven (log: $build/mvn.log)" >&2
    mvn -B -q -f "$build/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$build/mvn.log" 2>&1 \
        || die "maven could not fetch kafka_2.13:$VERSION, see $build/mvn.log"
    touch "$LIBS/.complete"
}

write_log4j_configs() {
    cat >"$STATE/log4j2-broker.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $LOG
appender.file.append = false
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
EOF
    cat >"$STATE/log4j2-tools.properties" <<EOF
status = error
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = ERROR
rootLogger.appenderRef.err.ref = ERR
EOF
}

# The broker's configuration for the current ports. The SASL listener
# authenticates SCRAM-SHA-256 users kept in the cluster's metadata (no
# credentials in this file).
server_config() {
    cat <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=$SASL_MECHANISM
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
EOF
}

# Rewritten on every start so port changes are picked up.
write_server_config() { server_config >"$CONFIG"; }

# The SASL user's password: generated once (letters and digits), readable
# by its owner only.
sasl_password() {
    if [[ ! -s "$SASL_PASSWORD_FILE" ]]; then
        mkdir -p "$STATE"
        local random
        random="$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
        (umask 077 && printf '%s\n' "${random:0:24}" >"$SASL_PASSWORD_FILE")
    fi
    cat "$SASL_PASSWORD_FILE"
}

# Run a Kafka main class with the cached jars and a small heap.
kjava() {
    local heap="$1" log4j="$2"
    shift 2
    java "-Xmx$heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$log4j" -cp "$LIBS/*" "$@"
}

format_storage() {
    [[ -f "$DATA/meta.properties" ]] && return
    local cluster_id
    cluster_id="$(kjava 128m "$STATE/log4j2-tools.properties" kafka.tools.StorageTool random-uuid)" \
        || die "kafka-storage random-uuid failed"
    rm -f "$SASL_USER_MARK"
    kjava 128m "$STATE/log4j2-tools.properties" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$CONFIG" \
        --add-scram "$SASL_MECHANISM=[name=$SASL_USER,password=$(sasl_password)]" >"$LOGS/format.log" 2>&1 \
        || die "kafka-storage format failed, see $LOGS/format.log"
    touch "$SASL_USER_MARK"
}

# Storage formatted before the SASL listener existed has no SASL user:
# create it once, through the running broker.
ensure_sasl_user() {
    [[ -f "$SASL_USER_MARK" ]] && return
    kjava 128m "$STATE/log4j2-tools.properties" kafka.admin.ConfigCommand --bootstrap-server "$BOOTSTRAP" \
        --alter --entity-type users --entity-name "$SASL_USER" \
        --add-config "$SASL_MECHANISM=[password=$(sasl_password)]" >"$LOGS/sasl-user.log" 2>&1 \
        || die "cannot create the SASL user $SASL_USER, see $LOGS/sasl-user.log"
    touch "$SASL_USER_MARK"
}

# True when process $1 is a kafka.Kafka JVM.
is_broker() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka '; }

is_running() { pid_file_process_is is_broker; }

launch() {
    refuse_taken_ports "$PORT" "$SASL_PORT" "$CONTROLLER_PORT"
    start_detached "$LOGS/kafka.out" java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$STATE/log4j2-broker.properties" \
        -cp "$LIBS/*" kafka.Kafka "$CONFIG"
}

show_start_log() {
    echo "--- first errors in $LOG:"
    grep -m 15 -E ' (ERROR|FATAL) |Exception' "$LOG" || true
    tail -n 20 "$LOG" "$LOGS/kafka.out"
}

topics() {
    kjava 128m "$STATE/log4j2-tools.properties" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$BOOTSTRAP" "$@"
}

# Number of partitions of topic $1 that have a leader (0 when unknown).
led_partitions() {
    topics --describe --topic "$1" 2>/dev/null | grep -c 'Leader: [0-9]' || true
}

# Create topic $1 with $2 partitions unless present; wait until every
# partition has a leader, so clients can produce right away.
create_topic() {
    local name="$1" partitions="$2" out
    [[ "$partitions" =~ ^[1-9][0-9]*$ ]] || die "PARTITIONS must be a positive integer, got '$partitions'"
    local deadline=$((SECONDS + 30)) have
    have="$(led_partitions "$name")"
    if [[ "$have" == 0 ]]; then
        out="$(topics --create --if-not-exists --topic "$name" --partitions "$partitions" \
            --replication-factor 1 2>&1)" || die "cannot create topic $name: $(echo "$out" | tail -n 1)"
    fi
    while :; do
        [[ "$have" == "$partitions" ]] && return
        if [[ "$have" -gt "$partitions" ]]; then
            die "topic $name already exists with $have partitions, not $partitions"
        fi
        ((SECONDS < deadline)) || die "topic $name: $have of $partitions partitions have a leader after 30s"
        sleep 0.5
        have="$(led_partitions "$name")"
    done
}

# Topic creation succeeds only once the broker has registered with the
# controller, so cmd_start retries it until the deadline: that is the
# readiness check.
default_topic_created() { (create_topic "$DEFAULT_TOPIC" 1) 2>/dev/null; }

cmd_start() {
    mkdir -p "$STATE" "$DATA" "$LOGS"
    # A broker left running with another configuration (a port changed, or
    # started by an older kafka.sh, without the SASL listener): restart it.
    if is_running && [[ "$(server_config)" != "$(cat "$CONFIG" 2>/dev/null)" ]]; then
        echo "kafka.sh: restarting the broker with the current configuration" >&2
        cmd_stop >/dev/null
    fi
    if ! is_running; then
        ensure_java
        fetch_jars
        write_log4j_configs
        write_server_config
        format_storage
        launch
        wait_until 0.5 answering port_open "$PORT"
    fi
    wait_until 1 ready default_topic_created
    ensure_sasl_user
    echo "kafka ready on $BOOTSTRAP (SASL_PLAINTEXT $SASL_MECHANISM on $SASL_BOOTSTRAP)"
}

cmd_stop() { stop_pid_file_server 30; }

cmd_create_topic() {
    [[ $# -eq 2 ]] || die "usage: $0 create-topic NAME PARTITIONS"
    is_running || die "kafka is not running (run: $0 start)"
    create_topic "$1" "$2"
    echo "topic $1 ready ($2 partitions) on $BOOTSTRAP"
}

cmd_env() {
    echo "export KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"
    echo "export MEDALLION_KAFKA_BROKERS=$BOOTSTRAP"
    echo "export MEDALLION_KAFKA_SASL_BOOTSTRAP=$SASL_BOOTSTRAP"
    echo "export MEDALLION_KAFKA_SASL_MECHANISM=$SASL_MECHANISM"
    echo "export MEDALLION_KAFKA_SASL_USERNAME=$SASL_USER"
    echo "export MEDALLION_KAFKA_SASL_PASSWORD=$(sasl_password)"
}

if [[ "${1:-}" == create-topic ]]; then
    shift
    take_lock
    cmd_create_topic "$@"
else
    service_main "$@"
fi
