#!/usr/bin/env bash
# Lint (ruff), type-check (mypy) and test (pytest) the project.
# Extra arguments are passed to pytest, e.g. scripts/test.sh -k synthetic -x
# Every step runs even when an earlier one failed; the exit code is 1 if any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/bootstrap.sh
BIN=.venv/bin
failed=()

# step NAME COMMAND...: run COMMAND, remember NAME when it fails.
step() {
    local name=$1 rc=0
    shift
    echo "== $name"
    "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "== $name FAILED (exit $rc)"
        failed+=("$name")
    fi
}

step ruff "$BIN/ruff" check --output-format=concise .
step mypy "$BIN/mypy"

# --- services ------------------------------------------------------------------------
# Services the tests talk to (Kafka broker, moto server, webhook receiver, ...) start
# here, each from its own script under scripts/, exporting the address the tests read;
# stop_services stops them again on exit.
KAFKA_DIR=
MOTO_DIR=
stop_services() {
    if [ -n "$KAFKA_DIR" ]; then
        bash scripts/kafka.sh stop --dir "$KAFKA_DIR" || true
        rm -rf "$KAFKA_DIR"
    fi
    if [ -n "$MOTO_DIR" ]; then
        bash scripts/moto.sh stop --dir "$MOTO_DIR" || true
        rm -rf "$MOTO_DIR"
    fi
}
trap stop_services EXIT

# Kafka (KRaft, jars from Maven Central): unless the caller points at a broker already.
if [ -z "${FRAUDCEP_KAFKA_BOOTSTRAP:-}" ]; then
    echo "== kafka"
    KAFKA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fraudcep-test-kafka.XXXXXX")
    kafka_log=$(mktemp)
    if FRAUDCEP_PYTHON=$BIN/python bash scripts/kafka.sh start --dir "$KAFKA_DIR" | tee "$kafka_log"; then
        FRAUDCEP_KAFKA_BOOTSTRAP=$(tail -n 1 "$kafka_log" | tr -d '\r')
        export FRAUDCEP_KAFKA_BOOTSTRAP
        echo "== kafka: FRAUDCEP_KAFKA_BOOTSTRAP=$FRAUDCEP_KAFKA_BOOTSTRAP"
    else
        echo "== kafka FAILED (the Kafka tests will try to start their own broker)"
        failed+=(kafka)
    fi
    rm -f "$kafka_log"
fi

# moto's AWS server (DynamoDB, Streams, S3, EventBridge, SQS, SES) over HTTP.
if [ -z "${FRAUDCEP_AWS_ENDPOINT:-}" ]; then
    echo "== moto"
    MOTO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fraudcep-test-moto.XXXXXX")
    if FRAUDCEP_AWS_ENDPOINT=$(FRAUDCEP_PYTHON=$BIN/python bash scripts/moto.sh start --dir "$MOTO_DIR" | tail -n 1); then
        export FRAUDCEP_AWS_ENDPOINT
        echo "== moto: FRAUDCEP_AWS_ENDPOINT=$FRAUDCEP_AWS_ENDPOINT"
    else
        echo "== moto FAILED (the AWS tests will try to start their own server)"
        failed+=(moto)
        unset FRAUDCEP_AWS_ENDPOINT
    fi
fi
# --- end of services -----------------------------------------------------------------

# Flink differential harness: its build script prints the harness path on its last line.
if [ -f tests/differential/build-harness.sh ]; then
    echo "== flink harness"
    harness_log=$(mktemp)
    if bash tests/differential/build-harness.sh | tee "$harness_log"; then
        harness=$(tail -n 1 "$harness_log" | tr -d '\r')
        if [ -n "$harness" ]; then
            export FRAUDCEP_FLINK_HARNESS=$harness
            echo "== flink harness: FRAUDCEP_FLINK_HARNESS=$harness"
        else
            echo "== flink harness FAILED (no path on the last line)"
            failed+=("flink harness")
        fi
    else
        echo "== flink harness FAILED"
        failed+=("flink harness")
    fi
    rm -f "$harness_log"
fi

# PyFlink's own virtualenv and the Kafka connector jar (scripts/flink-setup.sh; its last lines
# are the assignments the PyFlink tests read). The first run installs apache-flink (minutes).
echo "== flink venv"
flink_log=$(mktemp)
if bash scripts/flink-setup.sh | tee "$flink_log"; then
    while IFS= read -r line; do
        case $line in
        FRAUDCEP_FLINK_PYTHON=* | FRAUDCEP_FLINK_JARS=*) export "${line?}" ;;
        esac
    done <"$flink_log"
    echo "== flink venv: FRAUDCEP_FLINK_PYTHON=${FRAUDCEP_FLINK_PYTHON:-}"
else
    echo "== flink venv FAILED (the PyFlink tests fail in CI, are skipped elsewhere)"
    failed+=("flink venv")
fi
rm -f "$flink_log"

# Debian's Chromium for the browser tests (scripts/chromium.sh installs it with apt-get when it
# is missing, as root; its last line is the browser's path).
if [ -z "${FRAUDCEP_CHROMIUM:-}" ]; then
    echo "== chromium"
    if FRAUDCEP_CHROMIUM=$(bash scripts/chromium.sh | tail -n 1) && [ -n "$FRAUDCEP_CHROMIUM" ]; then
        export FRAUDCEP_CHROMIUM
        echo "== chromium: FRAUDCEP_CHROMIUM=$FRAUDCEP_CHROMIUM"
    else
        echo "== chromium FAILED (the browser tests fail in CI, are skipped elsewhere)"
        failed+=(chromium)
        unset FRAUDCEP_CHROMIUM
    fi
fi

echo "== pytest"
rc=0
"$BIN/python" -m pytest -q -p no:cacheprovider "$@" || rc=$?
case $rc in
0) ;;
5)
    echo "== pytest FAILED: no tests were collected" >&2
    failed+=(pytest)
    ;;
*) failed+=(pytest) ;;
esac

if [ "${#failed[@]}" -ne 0 ]; then
    echo "test.sh: failed: ${failed[*]}" >&2
    exit 1
fi
