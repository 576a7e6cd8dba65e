#!/usr/bin/env bash
# Debian's Chromium for the browser tests (pytest marker `browser`): installs the package
# `chromium` with apt-get when the browser is missing (needs root and Debian's package
# repositories). Idempotent and quiet: prints the browser's path on its last line, apt's
# output only when the install fails.
#   FRAUDCEP_CHROMIUM   the browser to use instead (a path); nothing is installed then
#   APT_LOCK_TIMEOUT    seconds to wait for another apt/dpkg run to finish (default 600)
set -euo pipefail

die() { echo "chromium.sh: $*" >&2; exit 1; }

if [ -n "${FRAUDCEP_CHROMIUM:-}" ]; then
    [ -x "$FRAUDCEP_CHROMIUM" ] || die "FRAUDCEP_CHROMIUM=$FRAUDCEP_CHROMIUM is not an executable"
    echo "$FRAUDCEP_CHROMIUM"
    exit 0
fi
BROWSER=/usr/bin/chromium
if [ -x "$BROWSER" ]; then
    echo "$BROWSER"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "no $BROWSER and no apt-get to install Debian's chromium"
SUDO=
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        die "no $BROWSER; installing Debian's chromium needs root (or password-less sudo)"
    fi
fi

LOG=$(mktemp "${TMPDIR:-/tmp}/fraudcep-chromium.XXXXXX")
trap 'rm -f "$LOG"' EXIT
apt_quietly() {
    # shellcheck disable=SC2086  # SUDO is empty or a command and its option
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q -y \
        -o DPkg::Lock::Timeout="${APT_LOCK_TIMEOUT:-600}" "$@" >>"$LOG" 2>&1
}
# The package lists may be missing or stale on a fresh machine: update once, then retry.
if ! apt_quietly install chromium; then
    if ! { apt_quietly update && apt_quietly install chromium; }; then
        cat "$LOG" >&2
        die "apt-get install chromium failed (apt's output above)"
    fi
fi
[ -x "$BROWSER" ] || die "apt-get installed chromium, but there is no $BROWSER"
echo "$BROWSER"
