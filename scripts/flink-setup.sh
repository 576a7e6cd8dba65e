#!/usr/bin/env bash
# Sets up what the PyFlink jobs need, apart from the main .venv:
#
#   scripts/flink-setup.sh            set up (idempotent; a second run only checks)
#   scripts/flink-setup.sh --check    check only: exit 0 if everything is in place, else 1
#
# 1. A separate virtualenv (default .venv-flink/, git-ignored) with apache-flink
#    ($FLINK_VERSION, default 2.3.0). apache-flink 2.x pins pyarrow < 17, numpy < 2.2, pandas
#    < 2.3 and Apache Beam, which must not hold the main .venv back, so it gets its own.
#    The project is not installed into it: a .pth file puts the work tree (and adapters/) on
#    its path, and pip installs the project's own dependencies (pyproject.toml) beside Flink.
# 2. The Kafka connector jar (org.apache.flink:flink-sql-connector-kafka:$FLINK_KAFKA_CONNECTOR,
#    default the one in scripts/flink/pom.xml), resolved with Maven once into
#    $FRAUDCEP_CACHE_DIR/flink-jars-<version> (default ~/.cache/fraudcep/...).
# 3. The project's own jar, fraudcep-flink-io.jar (adapters/fraudcep_flink/java: the Kafka
#    record (de)serializers of fraudcep_flink.kafka_io), built with Maven (`mvn -q -B package`)
#    and copied beside the connector; rebuilt only when its sources change (their digest).
# 4. Java: PyFlink starts a JVM (`java` on PATH, or $JAVA_HOME); Java 17 is what the project
#    runs it on.
#
# The last two lines it prints are the paths the jobs and tests take, as shell assignments:
#   FRAUDCEP_FLINK_PYTHON=<the venv's python>
#   FRAUDCEP_FLINK_JARS=<the jar directory>
# Knobs (environment): FRAUDCEP_FLINK_VENV (venv directory), FLINK_VERSION,
# FLINK_KAFKA_CONNECTOR, FRAUDCEP_FLINK_BASE_PYTHON (the Python the venv is made with; default
# python3.11, else python3), FRAUDCEP_CACHE_DIR.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
POM="$HERE/flink/pom.xml"
VENV=${FRAUDCEP_FLINK_VENV:-$REPO/.venv-flink}
FLINK_VERSION=${FLINK_VERSION:-2.3.0}
CACHE=${FRAUDCEP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fraudcep}

die() { echo "flink-setup.sh: $*" >&2; exit 1; }
log() { echo "flink-setup.sh: $*" >&2; }

CHECK=
case ${1:-} in
"") ;;
--check) CHECK=1 ;;
-h | --help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
*) die "unknown argument: $1 (try --help)" ;;
esac

connector_version() {
    if [ -n "${FLINK_KAFKA_CONNECTOR:-}" ]; then
        echo "$FLINK_KAFKA_CONNECTOR"
    else
        sed -n 's:.*<flink.kafka.version>\(.*\)</flink.kafka.version>.*:\1:p' "$POM" | head -n 1
    fi
}

# --- Java ----------------------------------------------------------------------------------
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
command -v "$java" >/dev/null || die "java not found (PyFlink needs Java 17; set JAVA_HOME or PATH)"
java_major=$("$java" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p' | head -n 1)
[ -n "$java_major" ] || die "cannot tell the version of $java"
[ "$java_major" -ge 11 ] || die "$java is Java $java_major; Flink $FLINK_VERSION needs 11+ (17 recommended)"
[ "$java_major" -eq 17 ] || log "note: $java is Java $java_major; the project runs Flink on Java 17"

# --- the virtualenv ------------------------------------------------------------------------
base_python() {
    local c
    for c in ${FRAUDCEP_FLINK_BASE_PYTHON:-} python3.11 python3; do
        if command -v "$c" >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

# What the venv must hold: Flink's version and the project's dependencies. A change of either
# (or of this script's pip step) reinstalls.
project_deps() {
    "$1" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))' "$REPO/pyproject.toml"
}

PY=$VENV/bin/python
venv_ok() {
    [ -x "$PY" ] || return 1
    [ -f "$VENV/.fraudcep-flink" ] || return 1
    [ "$(cat "$VENV/.fraudcep-flink")" = "$1" ] || return 1
    "$PY" -c 'import pyflink.datastream, fraudcep' >/dev/null 2>&1
}

BASE=$(base_python) || die "no python3 found (set FRAUDCEP_FLINK_BASE_PYTHON)"
"$BASE" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' ||
    die "$BASE is older than Python 3.11"
deps=$(project_deps "$BASE")
want=$( { echo "apache-flink==$FLINK_VERSION"; echo "$deps"; echo "$REPO"; } | sha256sum | cut -d' ' -f1)

if venv_ok "$want"; then
    log "venv $VENV: apache-flink $FLINK_VERSION in place"
elif [ -n "$CHECK" ]; then
    die "venv $VENV is missing or out of date (run scripts/flink-setup.sh)"
else
    mkdir -p "$(dirname "$VENV")"
    exec 8>"$VENV.lock" # serialize concurrent setups
    flock 8
    if ! venv_ok "$want"; then
        if [ ! -x "$PY" ]; then
            log "creating venv $VENV with $BASE ($("$BASE" --version 2>&1))"
            "$BASE" -m venv "$VENV" || die "could not create the venv $VENV"
        fi
        rm -f "$VENV/.fraudcep-flink"
        log "installing apache-flink $FLINK_VERSION and the project's dependencies into $VENV" \
            "(several minutes the first time: Apache Beam, pyarrow, pandas come with it) ..."
        mkdir -p "$VENV/logs"
        # shellcheck disable=SC2086
        if ! "$PY" -m pip install --disable-pip-version-check "apache-flink==$FLINK_VERSION" \
            $(echo "$deps" | tr '\n' ' ') >"$VENV/logs/pip.log" 2>&1; then
            tail -n 30 "$VENV/logs/pip.log" >&2
            die "pip could not install apache-flink $FLINK_VERSION (log above, all of it in $VENV/logs/pip.log)"
        fi
        site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        printf '%s\n%s\n' "$REPO" "$REPO/adapters" >"$site/fraudcep-worktree.pth"
        if ! "$PY" -c 'import pyflink.datastream, fraudcep' >"$VENV/logs/import.log" 2>&1; then
            cat "$VENV/logs/import.log" >&2
            die "apache-flink installed, but pyflink or fraudcep does not import (above)"
        fi
        echo "$want" >"$VENV/.fraudcep-flink"
        log "venv ready: $("$PY" -m pip list --disable-pip-version-check 2>/dev/null |
            grep -Ei '^(apache-flink|apache-beam|pyarrow|numpy|pemja) ' | tr -s ' ' | paste -sd, -)"
    fi
    flock -u 8
    exec 8>&-
fi

# --- the connector jar ---------------------------------------------------------------------
version=$(connector_version)
[ -n "$version" ] || die "cannot tell the connector version from $POM"
jars=$CACHE/flink-jars-$version
stamp=$jars/.resolved
jwant=$( { cat "$POM"; echo "$version"; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$jwant" ]; then
    log "jars in place: $jars"
elif [ -n "$CHECK" ]; then
    die "the Kafka connector jar is not in $jars (run scripts/flink-setup.sh)"
else
    mkdir -p "$CACHE"
    exec 8>"$jars.lock"
    flock 8
    if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$jwant" ]; }; then
        command -v mvn >/dev/null || die "mvn not found on PATH (needed once to resolve the Kafka connector $version)"
        log "resolving flink-sql-connector-kafka $version with Maven into $jars ..."
        tmp=$jars.tmp.$$
        rm -rf "$tmp"
        mkdir -p "$tmp"
        if ! (cd "$HERE/flink" && mvn -B -Dstyle.color=never --no-transfer-progress \
            -Dflink.kafka.version="$version" -DincludeScope=runtime -DexcludeTransitive=true \
            -DoutputDirectory="$tmp" dependency:copy-dependencies) >"$tmp/maven.log" 2>&1; then
            tail -n 40 "$tmp/maven.log" >&2
            die "Maven could not resolve flink-sql-connector-kafka $version (log above, all of it in $tmp/maven.log)"
        fi
        ls "$tmp"/flink-sql-connector-kafka-*.jar >/dev/null 2>&1 ||
            die "Maven ran but left no connector jar in $tmp"
        mv "$tmp/maven.log" "$CACHE/flink-jars-$version.maven.log"
        echo "$jwant" >"$tmp/.resolved"
        rm -rf "$jars"
        mv "$tmp" "$jars"
        log "jars ready: $(cd "$jars" && ls ./*.jar | sed 's:^\./::' | paste -sd, -)"
    fi
    flock -u 8
    exec 8>&-
fi

# --- the project's jar ---------------------------------------------------------------------
JAVA_SRC=$REPO/adapters/fraudcep_flink/java
IO_JAR=fraudcep-flink-io.jar
IO_STAMP=$jars/.fraudcep-flink-io
# The sources' digest, not their times: work trees that share the cache have their own
# sources and times, and a rebuild needs Maven's plugins (offline once resolved).
io_want=$( { cd "$JAVA_SRC" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum; echo "$version"; } |
    sha256sum | cut -d' ' -f1)
io_jar_ok() { # in place and built from these sources
    [ -f "$jars/$IO_JAR" ] && [ -f "$IO_STAMP" ] && [ "$(cat "$IO_STAMP")" = "$io_want" ]
}
if io_jar_ok; then
    log "$IO_JAR in place"
elif [ -n "$CHECK" ]; then
    die "$jars/$IO_JAR is missing or not built from $JAVA_SRC (run scripts/flink-setup.sh)"
else
    exec 8>"$jars.lock"
    flock 8
    if ! io_jar_ok; then
        command -v mvn >/dev/null || die "mvn not found on PATH (needed to build $IO_JAR)"
        log "building $IO_JAR with Maven ..."
        log_file=$CACHE/fraudcep-flink-io.maven.log
        if ! (cd "$JAVA_SRC" && mvn -q -B -Dstyle.color=never --no-transfer-progress \
            -Dflink.kafka.version="$version" package) >"$log_file" 2>&1; then
            tail -n 40 "$log_file" >&2
            die "Maven could not build $IO_JAR (log above, all of it in $log_file)"
        fi
        cp "$JAVA_SRC/target/$IO_JAR" "$jars/$IO_JAR.tmp.$$"
        mv "$jars/$IO_JAR.tmp.$$" "$jars/$IO_JAR"
        echo "$io_want" >"$IO_STAMP"
        log "$IO_JAR ready in $jars"
    fi
    flock -u 8
    exec 8>&-
fi

echo "FRAUDCEP_FLINK_PYTHON=$PY"
echo "FRAUDCEP_FLINK_JARS=$jars"
