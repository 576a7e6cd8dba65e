#!/usr/bin/env bash
# Apache Flink CEP throughput on fraudcep's benchmark workloads (P1 to P4); see README.md.
#
#   bash benchmarks/flink/run.sh [--chain] [--runs K] [--warmup W]
#
# EVENTS (default 1000000) sets the stream length, PYTHON the interpreter used to export it
# (default .venv/bin/python), JAVA_OPTS extra JVM options, CPUS a CPU list to pin the JVM to
# with taskset (CPUS=1: everything Flink does, GC included, on one core), WORKLOADS the
# workloads to run (default "P1 P2 P3 P4"). Prints one line per workload.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
events="${EVENTS:-1000000}"
python="${PYTHON:-$root/.venv/bin/python}"
data="$here/target/payments-$events.jsonl"
dense="$here/target/payments-dense-$events.jsonl"  # P4's match-dense stream
jar="$here/target/flink-cep-bench.jar"

# 1. the payment stream, exported once (again when workloads.py changes)
if [[ ! -s "$data" || "$root/benchmarks/workloads.py" -nt "$data" ]]; then
  echo "exporting $events payments to $data" >&2
  "$python" "$here/export_payments.py" --events "$events" --out "$data"
fi
if [[ ! -s "$dense" || "$root/benchmarks/workloads.py" -nt "$dense" ]]; then
  echo "exporting $events match-dense payments to $dense" >&2
  "$python" "$here/export_payments.py" --events "$events" --dense --out "$dense"
fi

# 2. the benchmark jar, built once (again when its sources change)
if [[ ! -s "$jar" || -n "$(find "$here/pom.xml" "$here/src" -newer "$jar" -print -quit)" ]]; then
  echo "building $jar" >&2
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" package
fi

# 3. one JVM per workload, so one rule's JIT profile does not shape another's; G1 named
#    explicitly because the JVM would pick the serial collector when pinned to one CPU
pin=()
if [[ -n "${CPUS:-}" ]]; then
  pin=(taskset -c "$CPUS")
fi
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc --all) cores)" >&2
for workload in ${WORKLOADS:-P1 P2 P3 P4}; do
  input="$data"
  if [[ "$workload" == P4 ]]; then
    input="$dense"
  fi
  # shellcheck disable=SC2086  # JAVA_OPTS is a list of options
  "${pin[@]}" java -XX:+UseG1GC ${JAVA_OPTS:-} -jar "$jar" --input "$input" --workloads "$workload" "$@"
done
