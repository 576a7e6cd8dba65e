#!/usr/bin/env bash
# Run the default fraud rules over a synthetic payment stream: scripts/demo.sh [--events N ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/bootstrap.sh >&2
exec .venv/bin/fraudcep demo "$@"
