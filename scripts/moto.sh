#!/usr/bin/env bash
# moto's standalone AWS server (DynamoDB, DynamoDB Streams, S3, EventBridge, SQS, SES, ...)
# on 127.0.0.1, for tests and local runs. Clients reach it with boto3's endpoint_url (or the
# AWS_ENDPOINT_URL environment variable), exactly as they would reach LocalStack or AWS.
#
#   scripts/moto.sh start  [--port N] [--dir DIR]   start it; prints the endpoint URL last
#   scripts/moto.sh stop   [--dir DIR]               SIGTERM, up to 10 s, then SIGKILL
#   scripts/moto.sh status [--dir DIR]               prints the endpoint URL, exit 0 if running
#
# DIR (default /tmp/fraudcep-moto) holds moto.pid, endpoint and moto.log. --port 0 (the
# default) picks a free port. The server keeps everything in memory: a start is a clean slate.
#   FRAUDCEP_PYTHON      Python with moto[server] installed (default .venv/bin/python)
#   MOTO_READY_TIMEOUT   seconds to wait for the server to answer (default 30)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
HOST=127.0.0.1

die() { echo "moto.sh: $*" >&2; exit 1; }
log() { echo "moto.sh: $*" >&2; }
# shellcheck source=lib/process.sh
source "$HERE/lib/process.sh"
usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
CMD=$1
shift
PORT=0
DIR=/tmp/fraudcep-moto
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
PIDFILE=$DIR/moto.pid
ADDRFILE=$DIR/endpoint
PY=${FRAUDCEP_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3) || die "no Python found (set FRAUDCEP_PYTHON)"

running_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

answers() { # the server answers its own API on $1
    "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/moto-api/data.json", timeout=2).read()
EOF
}

start() {
    if pid=$(running_pid); then
        log "already running (pid $pid)"
        cat "$ADDRFILE"
        return 0
    fi
    "$PY" -c 'import moto.server' 2>/dev/null ||
        die "moto[server] is not installed for $PY (bash scripts/bootstrap.sh installs it)"
    [ "$PORT" -ne 0 ] || PORT=$(free_port)
    local url="http://$HOST:$PORT"
    log "starting moto on $url (dir $DIR)"
    # setsid: the server outlives the shell that started it, in its own process group.
    setsid "$PY" -m moto.server -H "$HOST" -p "$PORT" >"$DIR/moto.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + ${MOTO_READY_TIMEOUT:-30}))
    until answers "$url"; do
        if ! running_pid >/dev/null; then
            tail -n 20 "$DIR/moto.log" >&2 || true
            die "moto exited during start (log: $DIR/moto.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            stop
            die "moto did not answer within ${MOTO_READY_TIMEOUT:-30} s (log: $DIR/moto.log)"
        fi
        sleep 0.2
    done
    echo "$url" >"$ADDRFILE"
    log "ready (pid $(cat "$PIDFILE"))"
    echo "$url"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PIDFILE"
        return 0
    fi
    stop_process "$pid" "moto server"
    rm -f "$PIDFILE" "$ADDRFILE"
    log "stopped"
}

case $CMD in
start) start ;;
stop) stop ;;
status)
    running_pid >/dev/null || die "not running (dir $DIR)"
    cat "$ADDRFILE"
    ;;
*) usage ;;
esac
