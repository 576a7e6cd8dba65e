#!/usr/bin/env bash
# Runs the Flink CEP differential harness: JSON Lines cases in (file argument, or stdin),
# JSON Lines results out on stdout (see CASE-FORMAT.md). Builds the harness first if needed.
# Options: --max-matches=N and --timeout-ms=MS set the per-case limits (default 20,000 matches
# or timeouts, 10,000 ms); so do the environment variables FRAUDCEP_DIFF_MAX_MATCHES and
# FRAUDCEP_DIFF_TIMEOUT_MS. Extra JVM options may be given in HARNESS_JAVA_OPTS.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JAR="$("$HERE/build-harness.sh")"

# shellcheck disable=SC2086
exec java ${HARNESS_JAVA_OPTS:-} -jar "$JAR" "$@"
