#!/usr/bin/env bash
# Build the Lambda deployment package: a zip of the fraudcep core, the fraudcep_aws adapters
# and their dependencies (attrs, PyYAML) for a Lambda Python runtime. boto3 is left out: the
# runtime provides it. Handlers: fraudcep_aws.lambda_detector.handler and
# fraudcep_aws.lambda_notifier.handler (see docs/aws-lambda.md).
#
#   scripts/build-lambda.sh [--arch x86_64|arm64] [--python 3.11|3.12] [--out DIR]
#                           [--constraints FILE]
#
#   --arch         the function's architecture (default x86_64); binary wheels for it
#   --python       the function's runtime, python3.11 or python3.12 (default 3.12)
#   --out          where the zip goes (default dist/); fraudcep-lambda.zip for x86_64,
#                  fraudcep-lambda-arm64.zip for arm64
#   --constraints  a pip constraints file pinning attrs/PyYAML (for builds that must give the
#                  same bytes later: without it pip takes the newest releases)
#
# The zip is deterministic: entries sorted, fixed timestamps and permissions, no bytecode,
# so the same source and dependency versions give the same bytes. The zip's path is printed
# last. Needs network access to PyPI (or a pip cache / index configured for pip).
#   FRAUDCEP_PYTHON   Python with pip to build with (default .venv/bin/python, else python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"

die() { echo "build-lambda.sh: $*" >&2; exit 1; }
log() { echo "build-lambda.sh: $*" >&2; }
usage() {
    sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

ARCH=x86_64
PYVER=3.12
OUT="$REPO/dist"
CONSTRAINTS=""
while [ $# -gt 0 ]; do
    case $1 in
    --arch) ARCH=${2:?--arch needs a value}; shift 2 ;;
    --arch=*) ARCH=${1#--arch=}; shift ;;
    --python) PYVER=${2:?--python needs a value}; shift 2 ;;
    --python=*) PYVER=${1#--python=}; shift ;;
    --out) OUT=${2:?--out needs a value}; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --constraints) CONSTRAINTS=${2:?--constraints needs a value}; shift 2 ;;
    --constraints=*) CONSTRAINTS=${1#--constraints=}; shift ;;
    -h | --help) usage ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case $ARCH in
x86_64) PLATFORM=manylinux2014_x86_64; NAME=fraudcep-lambda.zip ;;
arm64 | aarch64) ARCH=arm64; PLATFORM=manylinux2014_aarch64; NAME=fraudcep-lambda-arm64.zip ;;
*) die "--arch must be x86_64 or arm64, got '$ARCH'" ;;
esac
case $PYVER in
3.11 | 3.12) ;;
*) die "--python must be 3.11 or 3.12 (the Lambda runtimes this is built for), got '$PYVER'" ;;
esac
if [ -n "$CONSTRAINTS" ]; then
    [ -f "$CONSTRAINTS" ] || die "constraints file not found: $CONSTRAINTS"
    CONSTRAINTS="$(cd "$(dirname "$CONSTRAINTS")" && pwd)/$(basename "$CONSTRAINTS")"
fi

PY=${FRAUDCEP_PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3) || die "no Python found (set FRAUDCEP_PYTHON)"
"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fraudcep-lambda.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# 1. A wheel of the project, built from a clean copy of its sources (an in-tree build would
#    reuse build/lib, where files deleted from the sources live on).
log "building the fraudcep wheel"
mkdir -p "$WORK/src/adapters"
cp "$REPO/pyproject.toml" "$WORK/src/"
[ -f "$REPO/README.md" ] && cp "$REPO/README.md" "$WORK/src/"
cp -R "$REPO/fraudcep" "$WORK/src/fraudcep"
for pkg in "$REPO"/adapters/fraudcep_*/; do
    cp -R "$pkg" "$WORK/src/adapters/"
done
find "$WORK/src" -name __pycache__ -type d -prune -exec rm -rf {} +
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --wheel-dir "$WORK/wheels" "$WORK/src" >&2

# 2. The wheel and its dependencies for the Lambda platform: binary wheels only, so that
#    PyYAML's C extension matches the runtime's Python and architecture.
log "installing for python$PYVER on $PLATFORM"
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile \
    --target "$WORK/pkg" \
    --platform "$PLATFORM" --implementation cp --python-version "$PYVER" \
    --abi "cp${PYVER/./}" --only-binary=:all: \
    ${CONSTRAINTS:+--constraint "$CONSTRAINTS"} \
    "$WORK"/wheels/fraudcep-*.whl >&2

# 3. Strip and zip.
"$PY" -I - "$WORK/pkg" "$OUT/$NAME" <<'EOF'
"""Keep the core, the AWS adapters and the dependencies; write a deterministic zip."""

import shutil
import sys
import zipfile
from pathlib import Path

root, target = Path(sys.argv[1]), Path(sys.argv[2])

# Console scripts (they name the build's Python), other runtimes' adapters, caches, tests.
for path in sorted(root.iterdir()):
    if path.name == "bin" or (
        path.name.startswith("fraudcep_") and path.name != "fraudcep_aws" and path.is_dir()
    ):
        shutil.rmtree(path)
for path in sorted(root.rglob("*"), reverse=True):
    if not path.exists():
        continue
    if path.is_dir() and path.name in ("__pycache__", "tests", "test"):
        shutil.rmtree(path)
    elif path.suffix in (".pyc", ".pyo") or path.name == "direct_url.json":
        path.unlink()

# RECORD files list what was installed: drop the lines of what was removed.
for record in root.glob("*.dist-info/RECORD"):
    lines = record.read_text(encoding="utf-8").splitlines()
    kept = [
        line
        for line in lines
        if line.split(",", 1)[0] == f"{record.parent.name}/RECORD"
        or (root / line.split(",", 1)[0]).resolve().is_relative_to(root.resolve())
        and (root / line.split(",", 1)[0]).exists()
    ]
    record.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

for handler in ("lambda_detector", "lambda_notifier"):
    if not (root / "fraudcep_aws" / f"{handler}.py").is_file():
        print(f"build-lambda.sh: warning: fraudcep_aws/{handler}.py is missing", file=sys.stderr)

files = sorted(
    (p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix()
)
target.parent.mkdir(parents=True, exist_ok=True)
partial = target.with_name(target.name + ".partial")
with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
    for path in files:
        info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
        info.create_system = 3  # unix, so that the permission bits below are read
        info.external_attr = (0o100644 & 0xFFFF) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, path.read_bytes(), compresslevel=9)
partial.replace(target)
size = target.stat().st_size
print(f"build-lambda.sh: {len(files)} files, {size / 1e6:.1f} MB", file=sys.stderr)
EOF

echo "$OUT/$NAME"
