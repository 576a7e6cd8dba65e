#!/usr/bin/env bash
# Runs the Flink CEP differential harness: JSON Lines cases in (file argument, or stdin),
# JSON Lines results out on stdout (see CASE-FORMAT.md). Builds the harness first if needed.
# Extra JVM options may be given in HARNESS_JAVA_OPTS, e.g. "-Dharness.timeoutMs=5000".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JAR="$("$HERE/build-harness.sh")"

# shellcheck disable=SC2086
exec java ${HARNESS_JAVA_OPTS:-} -jar "$JAR" "$@"
