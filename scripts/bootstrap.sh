#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with `fraudcep[test]`
# installed in editable mode. Idempotent: the install is skipped while pyproject.toml,
# the set of packages and the Python version are the same as at the last good install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP=$VENV/.fraudcep-install-hash
export PIP_DISABLE_PIP_VERSION_CHECK=1

pick_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "bootstrap: no Python >= 3.11 found (tried ${PYTHON:-} python3.11 python3); set PYTHON=/path/to/python3.11" >&2
    return 1
}

venv_ok() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# What the editable install depends on: the project metadata, the top-level packages
# (an editable install maps each one; a new adapter package needs a reinstall) and the
# interpreter.
install_hash() {
    {
        cat pyproject.toml
        ls -d fraudcep/__init__.py adapters/*/__init__.py 2>/dev/null || true
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

if ! venv_ok; then
    python=$(pick_python)
    echo "bootstrap: creating $VENV with $("$python" --version 2>&1)"
    "$python" -m venv --clear "$VENV"
fi

want=$(install_hash)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/fraudcep" ]; then
    echo "bootstrap: $VENV is up to date"
    exit 0
fi

# pip's output goes to a log, shown only when a step fails.
LOG=$VENV/bootstrap.log
pip_quietly() {
    if ! "$VENV/bin/python" -m pip "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        echo "bootstrap: 'pip $*' failed (log above, also in $LOG)" >&2
        return 1
    fi
}

rm -f "$STAMP"
echo "bootstrap: upgrading pip"
pip_quietly install --quiet --upgrade pip
echo "bootstrap: installing fraudcep[test] (editable)"
pip_quietly install --quiet -e ".[test]"
echo "$want" >"$STAMP"
echo "bootstrap: done"
