#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker+controller in one JVM) on 127.0.0.1, for
# tests and local runs.
#
#   scripts/kafka.sh start  [--port N] [--dir DIR]   start it; prints host:port on the last line
#   scripts/kafka.sh stop   [--dir DIR]               SIGTERM, up to 30 s, then SIGKILL
#   scripts/kafka.sh status [--dir DIR]               prints host:port and exits 0 if running
#   scripts/kafka.sh restart [--dir DIR]              stop, then start again keeping the data
#
# The broker jars are resolved from Maven Central with Maven (scripts/kafka/pom.xml) once,
# into $FRAUDCEP_CACHE_DIR/kafka-<version>/libs (default ~/.cache/fraudcep/...), and reused.
# Everything else lives under DIR (default /tmp/fraudcep-kafka): server.properties, the
# data (wiped and formatted anew at every start), logs/server.log, kafka.pid, bootstrap.
# --port 0 (the default) picks a free port. Other knobs (environment):
#   KAFKA_VERSION          Kafka version to resolve (default: the one in scripts/kafka/pom.xml)
#   KAFKA_HEAP_OPTS        JVM heap options (default -Xms256m -Xmx512m)
#   KAFKA_READY_TIMEOUT    seconds to wait for the broker to answer metadata (default 60)
#   FRAUDCEP_PYTHON        Python used for the readiness check (default .venv/bin/python, with
#                          confluent_kafka; without it, the broker's own log lines are waited for)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
POM="$HERE/kafka/pom.xml"
HOST=127.0.0.1

die() { echo "kafka.sh: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }
# shellcheck source=lib/process.sh
source "$HERE/lib/process.sh"

usage() {
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
CMD=$1
shift
PORT=0
DIR=/tmp/fraudcep-kafka
while [ $# -gt 0 ]; do
    case $1 in
    --port) PORT=${2:?--port needs a value}; shift 2 ;;
    --port=*) PORT=${1#--port=}; shift ;;
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --dir=*) DIR=${1#--dir=}; shift ;;
    -h | --help) usage ;;
    *) die "unknown argument: $1" ;;
    esac
done
[[ $PORT =~ ^[0-9]+$ ]] || die "--port must be a number, got '$PORT'"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PIDFILE=$DIR/kafka.pid
ADDRFILE=$DIR/bootstrap

# --- helpers -----------------------------------------------------------------------------

running_pid() { # prints the broker's pid when it is running
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a reused pid: it must still be our broker.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $DIR/server.properties" ||
        return 1
    echo "$pid"
}

pick_python() {
    local c
    for c in ${FRAUDCEP_PYTHON:-} "$REPO/.venv/bin/python" python3; do
        if command -v "$c" >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

free_port() { # a port that is free on 127.0.0.1 right now
    "$PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

kafka_version() {
    if [ -n "${KAFKA_VERSION:-}" ]; then
        echo "$KAFKA_VERSION"
    else
        sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n 1
    fi
}

# Resolves the broker jars into the cache (once per Kafka version and pom.xml content) and
# prints the libs directory.
resolve_libs() {
    local version=$1 base libs stamp want tmp
    base=${FRAUDCEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudcep}/kafka-$version
    libs=$base/libs
    stamp=$libs/.resolved
    want=$( { cat "$POM"; echo "$version"; } | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "$libs"
        return 0
    fi
    mkdir -p "$base"
    exec 8>"$base/.lock" # serialize concurrent resolutions
    flock 8
    if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
        command -v mvn >/dev/null || die "mvn not found on PATH (needed once to resolve Kafka $version)"
        log "resolving Kafka $version jars with Maven into $libs ..."
        tmp=$base/libs.tmp.$$
        rm -rf "$tmp"
        mkdir -p "$DIR/logs"
        if ! (cd "$HERE/kafka" && mvn -B -Dstyle.color=never --no-transfer-progress \
            -Dkafka.version="$version" -DincludeScope=runtime \
            -DoutputDirectory="$tmp" dependency:copy-dependencies) >"$DIR/logs/maven.log" 2>&1; then
            tail -n 40 "$DIR/logs/maven.log" >&2
            rm -rf "$tmp"
            die "Maven could not resolve Kafka $version (log above, all of it in $DIR/logs/maven.log)"
        fi
        echo "$want" >"$tmp/.resolved"
        rm -rf "$libs"
        mv "$tmp" "$libs"
    fi
    flock -u 8
    exec 8>&-
    echo "$libs"
}

# ready_check ADDRESS CLUSTER_ID: exit 0 once the broker at ADDRESS answers a metadata
# request listing a broker, with our cluster id (not some other broker on that port).
# Exit 1: not yet. Exit 3: confluent_kafka is not importable (the caller falls back to the
# log lines).
ready_check() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import socket, sys
addr, cluster_id = sys.argv[1], sys.argv[2]
host, port = addr.rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=1).close()
except OSError:
    sys.exit(1)
try:
    from confluent_kafka.admin import AdminClient
except ImportError:
    sys.exit(3)
try:
    md = AdminClient({"bootstrap.servers": addr, "log_level": 0}).list_topics(timeout=5)
except Exception:
    sys.exit(1)
if md.cluster_id != cluster_id:
    print(f"kafka.sh: {addr} answers with cluster id {md.cluster_id}, not ours ({cluster_id}):"
          " another broker holds the port?", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if md.brokers else 1)
EOF
}

stop_broker() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PIDFILE"
        log "not running (dir $DIR)"
        return 0
    fi
    log "stopping broker (pid $pid)"
    stop_process "$pid" broker
    rm -f "$PIDFILE"
    log "stopped"
}

start_broker() {
    local pid version libs java cport cluster_id addr deadline rc started
    if pid=$(running_pid); then
        log "already running (pid $pid)"
        cat "$ADDRFILE"
        return 0
    fi
    java=${JAVA_HOME:+$JAVA_HOME/bin/}java
    command -v "$java" >/dev/null || die "java not found (Java 17+ needed)"
    PYTHON=$(pick_python) || die "no Python found (set FRAUDCEP_PYTHON)"

    version=$(kafka_version)
    [ -n "$version" ] || die "cannot tell the Kafka version from $POM"
    libs=$(resolve_libs "$version")

    [ "$PORT" -ne 0 ] || PORT=$(free_port)
    cport=$(free_port)
    while [ "$cport" = "$PORT" ]; do cport=$(free_port); done
    addr=$HOST:$PORT

    rm -rf "$DIR/data" "$ADDRFILE"
    rm -f "$DIR"/logs/{server,stdout,format}.log
    mkdir -p "$DIR/data" "$DIR/logs"
    cat >"$DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$cport
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$cport
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
    cat >"$DIR/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $DIR/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF

    local -a jvm
    jvm_args "$libs"

    # 16 random bytes, URL-safe base64 without padding (what kafka-storage random-uuid gives).
    # One id in 64 starts with '-': it is passed as --cluster-id=ID, never as a separate
    # argument, which the tool would read as an option (the broker then failed to start)
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [ "${#cluster_id}" -eq 22 ] || die "could not make a cluster id (got '$cluster_id')"
    if ! "$java" "${jvm[@]}" kafka.tools.StorageTool format --cluster-id="$cluster_id" \
        -c "$DIR/server.properties" >"$DIR/logs/format.log" 2>&1; then
        cat "$DIR/logs/format.log" >&2
        die "formatting the KRaft storage failed"
    fi

    echo "$cluster_id" >"$DIR/cluster_id"
    launch_broker "$java" "$version" "$addr" "$cluster_id" "${jvm[@]}"
}

# jvm_args LIBS: the broker JVM's options, into the caller's array `jvm`.
jvm_args() {
    jvm=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$DIR/log4j2.properties" -Dkafka.logs.dir="$DIR/logs"
        -cp "$1/*")
}

# launch_broker JAVA VERSION ADDRESS CLUSTER_ID JVM_ARGS...: start the JVM on the formatted
# storage under DIR and wait until it answers at ADDRESS.
launch_broker() {
    local java=$1 version=$2 addr=$3 cluster_id=$4 pid deadline rc started
    shift 4
    local -a jvm=("$@")
    log "starting Kafka $version on $addr (dir $DIR)"
    "$java" "${jvm[@]}" kafka.Kafka "$DIR/server.properties" \
        </dev/null >"$DIR/logs/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"

    deadline=$((SECONDS + ${KAFKA_READY_TIMEOUT:-60}))
    started=
    while [ $SECONDS -lt $deadline ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$DIR/logs/stdout.log" "$DIR/logs/server.log" >&2 2>/dev/null || true
            rm -f "$PIDFILE"
            die "the broker exited during startup (logs in $DIR/logs)"
        fi
        rc=0
        ready_check "$addr" "$cluster_id" || rc=$?
        if [ "$rc" -eq 0 ]; then
            started=1
            break
        elif [ "$rc" -eq 3 ] &&
            grep -q "Awaiting socket connections on $addr\." "$DIR/logs/server.log" 2>/dev/null &&
            grep -q "Kafka Server started" "$DIR/logs/server.log" 2>/dev/null; then
            started=1
            break
        fi
        sleep 0.3
    done
    if [ -z "$started" ]; then
        tail -n 40 "$DIR/logs/server.log" >&2 2>/dev/null || true
        stop_broker
        die "the broker was not ready within ${KAFKA_READY_TIMEOUT:-60} s (logs in $DIR/logs)"
    fi
    echo "$addr" >"$ADDRFILE"
    log "ready (pid $pid)"
    echo "$addr"
}

# Stop the broker and start it again on the same port with its data kept (what a broker
# restart in production looks like: clients reconnect, committed data and offsets survive).
restart_broker() {
    local addr version libs java cluster_id
    [ -f "$DIR/server.properties" ] && [ -f "$DIR/cluster_id" ] && [ -f "$ADDRFILE" ] ||
        die "nothing to restart in $DIR (start it first)"
    addr=$(cat "$ADDRFILE")
    cluster_id=$(cat "$DIR/cluster_id")
    stop_broker
    java=${JAVA_HOME:+$JAVA_HOME/bin/}java
    PYTHON=$(pick_python) || die "no Python found (set FRAUDCEP_PYTHON)"
    version=$(kafka_version)
    libs=$(resolve_libs "$version")
    local -a jvm
    jvm_args "$libs"
    launch_broker "$java" "$version" "$addr" "$cluster_id" "${jvm[@]}"
}

case $CMD in
start) start_broker ;;
stop) stop_broker ;;
restart) restart_broker ;;
status)
    if pid=$(running_pid); then
        log "running (pid $pid)"
        cat "$ADDRFILE" 2>/dev/null || true
    else
        log "not running (dir $DIR)"
        exit 1
    fi
    ;;
*) usage ;;
esac
