#!/usr/bin/env bash
# A local standalone Flink session cluster (one JobManager, one TaskManager with 2 slots) on
# 127.0.0.1, from the Flink virtualenv's PyFlink distribution, to run the job on with
# `flink run` (docs/flink.md, "On a cluster"; tests/flink/test_flink_cluster.py).
#
#   scripts/flink-cluster.sh start  [--dir DIR]   start it; prints the REST address
#                                                 (host:port) on the last line
#   scripts/flink-cluster.sh stop   [--dir DIR]   stop both processes (idempotent)
#   scripts/flink-cluster.sh status [--dir DIR]   prints the REST address, exit 0 if running
#
# Everything lives under DIR (default /tmp/fraudcep-flink-cluster), made anew at every start:
# conf/ (PyFlink's conf/, its config.yaml flattened with ours over it: free ports, every
# server bound to 127.0.0.1, thread mode with the virtualenv's python), lib/ (links to Flink's
# lib/ jars and to opt/flink-python: the class path; jobs bring the connector jars with
# `flink run -C`), log/, tmp/, the pid files, rest (the REST address).
# The task manager's embedded Python interpreter gets the virtualenv's site-packages and this
# work tree on its path (PYTHONPATH and python.pythonpath): it imports a module once for the
# life of the task manager, so restart the cluster after changing the code.
# Knobs (environment):
#   FRAUDCEP_FLINK_PYTHON   the Flink virtualenv's python (default .venv-flink/bin/python)
#   FLINK_JM_MEMORY         JobManager process size (default 1g)
#   FLINK_TM_MEMORY         TaskManager process size (default 2g)
#   FLINK_READY_TIMEOUT     seconds to wait for the REST API and a TaskManager (default 180)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
HOST=127.0.0.1

die() { echo "flink-cluster.sh: $*" >&2; exit 1; }
log() { echo "flink-cluster.sh: $*" >&2; }
# shellcheck source=lib/process.sh
source "$HERE/lib/process.sh"

usage() {
    sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
CMD=$1
shift
DIR=/tmp/fraudcep-flink-cluster
while [ $# -gt 0 ]; do
    case $1 in
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --dir=*) DIR=${1#--dir=}; shift ;;
    -h | --help) usage ;;
    *) die "unknown argument: $1" ;;
    esac
done
case $CMD in start | stop | status) ;; -h | --help) usage ;; *) die "unknown command: $CMD" ;; esac
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
ADDRFILE=$DIR/rest
# the daemons' pid files: flink-daemon.sh names them after FLINK_IDENT_STRING
export FLINK_IDENT_STRING=fraudcep
export FLINK_PID_DIR=$DIR
export FLINK_CONF_DIR=$DIR/conf
export FLINK_LOG_DIR=$DIR/log
export FLINK_LIB_DIR=$DIR/lib

# --- helpers -----------------------------------------------------------------------------

# daemon_pid NAME: prints the pid of our daemon NAME (standalonesession, taskexecutor) when
# it runs: the pid file's, and its command line names our conf dir (not a reused pid).
daemon_pid() {
    local file=$DIR/flink-$FLINK_IDENT_STRING-$1.pid pid
    [ -f "$file" ] || return 1
    pid=$(tail -n 1 "$file" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--configDir $FLINK_CONF_DIR " ||
        return 1
    echo "$pid"
}

stop_daemon() { # stop_daemon NAME: SIGTERM, up to 30 s, then SIGKILL
    local name=$1 pid
    if ! pid=$(daemon_pid "$name"); then
        rm -f "$DIR/flink-$FLINK_IDENT_STRING-$name.pid"
        return 0
    fi
    log "stopping $name (pid $pid)"
    stop_process "$pid" "$name"
    rm -f "$DIR/flink-$FLINK_IDENT_STRING-$name.pid"
}

stop_cluster() {
    local any=
    daemon_pid taskexecutor >/dev/null && any=1
    daemon_pid standalonesession >/dev/null && any=1
    stop_daemon taskexecutor
    stop_daemon standalonesession
    rm -f "$ADDRFILE"
    if [ -n "$any" ]; then log "stopped"; else log "not running (dir $DIR)"; fi
}

flink_python() {
    local python=${FRAUDCEP_FLINK_PYTHON:-$REPO/.venv-flink/bin/python}
    [ -x "$python" ] || die "no Flink virtualenv ($python); run scripts/flink-setup.sh"
    echo "$python"
}

# write_config PYTHON FLINK_HOME: DIR/conf/config.yaml from PyFlink's, flattened, with ours
# over it; prints the REST address.
write_config() {
    "$1" - "$2/conf/config.yaml" "$FLINK_CONF_DIR/config.yaml" "$DIR" \
        "${FLINK_JM_MEMORY:-1g}" "${FLINK_TM_MEMORY:-2g}" "$REPO" <<'EOF'
import os, socket, sys, sysconfig
import yaml

source, target, root, jm_memory, tm_memory, repo = sys.argv[1:]


def flatten(tree, prefix=""):
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


config = {}
if os.path.isfile(source):
    with open(source) as f:
        config = dict(flatten(yaml.safe_load(f)))

sockets = []
def free_port():  # held until all are chosen: no two alike
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
    return s.getsockname()[1]

host = "127.0.0.1"
rest = free_port()
# the embedded interpreter's path: the virtualenv's site-packages and the work tree (its .pth
# file is not read there), as fraudcep_flink.environment.python_path() gives the mini-cluster
site = sysconfig.get_paths()
paths = list(dict.fromkeys([site["purelib"], site["platlib"], repo, f"{repo}/adapters"]))
config.update({
    "jobmanager.rpc.address": host,
    "jobmanager.rpc.port": free_port(),
    "jobmanager.bind-host": host,
    "jobmanager.memory.process.size": jm_memory,
    "rest.address": host,
    "rest.bind-address": host,
    "rest.port": rest,
    "blob.server.port": str(free_port()),
    "taskmanager.host": host,
    "taskmanager.bind-host": host,
    "taskmanager.rpc.port": str(free_port()),
    "taskmanager.data.port": free_port(),
    "taskmanager.numberOfTaskSlots": 2,
    "taskmanager.memory.process.size": tm_memory,
    "metrics.internal.query-service.port": str(free_port()),  # the JobManager's
    "parallelism.default": 1,
    "io.tmp.dirs": f"{root}/tmp",
    "web.tmpdir": f"{root}/tmp/web",
    "python.executable": sys.executable,
    "python.client.executable": sys.executable,
    "python.execution-mode": "thread",
    "python.pythonpath": os.pathsep.join(paths),
})
with open(target, "w") as f:
    f.write("# made by scripts/flink-cluster.sh from PyFlink's conf/config.yaml\n")
    yaml.safe_dump(config, f, default_flow_style=False, sort_keys=True, width=100000)
tm_metrics = free_port()  # the TaskManager's, given to it alone
for s in sockets:
    s.close()
print(os.pathsep.join(paths))
print(f"{host}:{rest}")
print(tm_metrics)
EOF
}

# ready ADDRESS: exit 0 once the REST API at ADDRESS lists a TaskManager with free slots
ready() {
    "$PYTHON" - "$1" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://{sys.argv[1]}/taskmanagers", timeout=2) as r:
        tms = json.load(r).get("taskmanagers", [])
except Exception:
    sys.exit(1)
sys.exit(0 if tms and tms[0].get("slotsNumber", 0) >= 2 else 1)
EOF
}

start_cluster() {
    local home addr pythonpath tm_metrics deadline out jar
    if daemon_pid standalonesession >/dev/null && daemon_pid taskexecutor >/dev/null &&
        [ -f "$ADDRFILE" ]; then
        log "already running"
        cat "$ADDRFILE"
        return 0
    fi
    stop_cluster 2>/dev/null # a half-started one
    command -v "${JAVA_HOME:+$JAVA_HOME/bin/}java" >/dev/null || die "java not found (Java 17 needed)"
    PYTHON=$(flink_python)
    home=$("$PYTHON" -c 'import os, pyflink; print(os.path.dirname(os.path.abspath(pyflink.__file__)))') ||
        die "$PYTHON cannot import pyflink; run scripts/flink-setup.sh"
    [ -x "$home/bin/jobmanager.sh" ] || die "no Flink distribution scripts in $home/bin"

    rm -rf "$FLINK_CONF_DIR" "$FLINK_LIB_DIR" "$DIR/tmp" "$ADDRFILE"
    rm -f "$FLINK_LOG_DIR"/*
    mkdir -p "$FLINK_CONF_DIR" "$FLINK_LIB_DIR" "$FLINK_LOG_DIR" "$DIR/tmp/web"
    [ -d "$home/conf" ] && cp "$home"/conf/* "$FLINK_CONF_DIR"/
    # The class path: Flink's lib/ (linked, not copied) and flink-python. `flink run` ships
    # flink-python with every Python job, but loaded from a job's class loader, pemja's native
    # library cannot be loaded again for the next job (NoSuchFieldException:
    # loadedLibraryNames on Java 17): on the system class path it is loaded once.
    for jar in "$home"/lib/*.jar "$home"/opt/flink-python-*.jar; do
        [ -f "$jar" ] || die "missing jar: $jar"
        ln -s "$jar" "$FLINK_LIB_DIR/"
    done
    out=$(write_config "$PYTHON" "$home") || die "could not write $FLINK_CONF_DIR/config.yaml"
    pythonpath=$(sed -n 1p <<<"$out")
    addr=$(sed -n 2p <<<"$out")
    tm_metrics=$(sed -n 3p <<<"$out")

    log "starting a Flink session cluster, REST on $addr (dir $DIR)"
    # The embedded interpreter (thread mode) does not see the virtualenv's site-packages (nor
    # what its .pth file adds) by itself: the task manager's JVM passes its PYTHONPATH on
    PYTHONPATH=$pythonpath "$home/bin/jobmanager.sh" start >"$FLINK_LOG_DIR/jobmanager-start.out" 2>&1 ||
        { cat "$FLINK_LOG_DIR/jobmanager-start.out" >&2; die "the JobManager did not start"; }
    PYTHONPATH=$pythonpath "$home/bin/taskmanager.sh" start \
        -D "metrics.internal.query-service.port=$tm_metrics" >"$FLINK_LOG_DIR/taskmanager-start.out" 2>&1 ||
        { cat "$FLINK_LOG_DIR/taskmanager-start.out" >&2; stop_cluster; die "the TaskManager did not start"; }

    deadline=$((SECONDS + ${FLINK_READY_TIMEOUT:-180}))
    while ! ready "$addr"; do
        if ! daemon_pid standalonesession >/dev/null || ! daemon_pid taskexecutor >/dev/null; then
            tail -n 40 "$FLINK_LOG_DIR"/*.log "$FLINK_LOG_DIR"/*.out >&2 2>/dev/null || true
            stop_cluster
            die "a Flink process exited during startup (logs in $FLINK_LOG_DIR)"
        fi
        if [ $SECONDS -ge "$deadline" ]; then
            tail -n 40 "$FLINK_LOG_DIR"/*.log >&2 2>/dev/null || true
            stop_cluster
            die "no TaskManager registered within ${FLINK_READY_TIMEOUT:-180} s (logs in $FLINK_LOG_DIR)"
        fi
        sleep 0.5
    done
    echo "$addr" >"$ADDRFILE"
    log "ready (JobManager pid $(daemon_pid standalonesession), TaskManager pid $(daemon_pid taskexecutor))"
    echo "$addr"
}

case $CMD in
start) start_cluster ;;
stop) stop_cluster ;;
status)
    if daemon_pid standalonesession >/dev/null && daemon_pid taskexecutor >/dev/null; then
        log "running"
        cat "$ADDRFILE" 2>/dev/null || true
    else
        log "not running (dir $DIR)"
        exit 1
    fi
    ;;
esac
