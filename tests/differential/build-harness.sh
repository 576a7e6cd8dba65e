#!/usr/bin/env bash
# Builds the Flink CEP differential harness (tests/differential/flink-harness) if needed and
# prints the path of the runnable jar (its dependencies sit in target/lib next to it and are
# referenced from the jar manifest, so `java -jar <path>` is enough).
# Idempotent: rebuilds only when the jar is missing or older than pom.xml / src/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$HERE/flink-harness"
JAR="$DIR/target/flink-cep-harness.jar"

command -v java >/dev/null || { echo "build-harness.sh: java not found on PATH (Java 17 needed)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "build-harness.sh: mvn not found on PATH" >&2; exit 1; }

needs_build() {
    [[ -f "$JAR" && -d "$DIR/target/lib" ]] || return 0
    [[ -n "$(find "$DIR/pom.xml" "$DIR/src" -newer "$JAR" -print -quit)" ]] && return 0
    return 1
}

if needs_build; then
    mkdir -p "$DIR/target"
    # Serialize concurrent builds (e.g. two test runs starting at once).
    exec 9>"$DIR/target/.build.lock"
    flock 9
    if needs_build; then
        echo "build-harness.sh: building $DIR ..." >&2
        (cd "$DIR" && mvn -q -B -Dstyle.color=never package) >&2
        touch "$JAR"   # the jar plugin may leave an up-to-date jar untouched
    fi
    flock -u 9
fi

echo "$JAR"
