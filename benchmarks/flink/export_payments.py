"""Write the benchmark payments, ``workloads.payments(n)``, as JSON Lines for the Flink benchmark.

Run: ``.venv/bin/python benchmarks/flink/export_payments.py [--events N] [--dense] [--out FILE]``.
``--dense`` writes P4's stream, ``workloads.dense_payments(n)``, instead.
One JSON object per line, in stream order, with the fields ``payment_id``, ``user_id``,
``amount``, ``country`` and ``ts`` exactly as ``payments`` produces them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workloads import dense_payments, payments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dense", action="store_true", help="P4's match-dense stream")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in (dense_payments if args.dense else payments)(args.events):
            f.write(json.dumps(p, separators=(",", ":")))
            f.write("\n")
    os.replace(tmp, args.out)  # never leave a half-written file under the final name


if __name__ == "__main__":
    main()
