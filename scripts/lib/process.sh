# Shell functions the service scripts (kafka.sh, moto.sh, flink-cluster.sh) share; sourced,
# after the script has defined log().

# stop_process PID NAME: SIGTERM, wait up to 30 s, then SIGKILL and wait up to 5 s more.
stop_process() {
    local pid=$1 name=$2 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$name did not stop within 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}
