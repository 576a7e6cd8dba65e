"""Throughput of ``Engine.process_batch`` over Arrow record batches (docs/performance.md,
"Arrow record batches").

Run: ``.venv/bin/python benchmarks/bench_columnar.py [--events N] [--repeat K]
[--batch-rows R] [--json FILE]``.

P1 runs as a rule from data (``amount > 2000``, ``times(3)``, within 5 minutes, key
``user_id``: the expression-language twin of ``workloads.p1``, which must find the same number
of matches) on the P1 stream, cut into record batches of ``--batch-rows`` rows; the default
payment rules run on the synthetic payment stream. The batches are made before the clock
starts (they are what a Parquet reader or a columnar decoder gives). Each figure is the best
of ``--repeat`` runs, wall clock and CPU time of the process (pyarrow's thread pools are
limited to one thread); ``process_many`` over the same rows as dicts is measured beside it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import p1, payments

from fraudcep import Engine, Rule
from fraudcep.payments.default_rules import default_rules
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep.rules import load_rules

P1_RULE = """
- id: P1-high-value-3-in-5m
  key: user_id
  within: 5m
  pattern:
    - name: first
      where: amount > 2000
      times: 3
"""


def p1_expression() -> Rule:
    return load_rules(P1_RULE)[0].rule


def run(
    make_rules: Callable[[], list[Rule]], feed: Callable[[Engine], int], repeat: int
) -> tuple[float, float, int]:
    """Best wall-clock and CPU seconds over ``repeat`` runs of ``feed`` on a fresh engine,
    and the alerts of the last run."""
    best_wall = best_cpu = float("inf")
    alerts = 0
    for _ in range(repeat):
        engine = Engine(make_rules(), timestamp="ts", on_timeout=lambda _: None)
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        alerts = feed(engine)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, alerts


def many(rows: list[dict[str, Any]]) -> Callable[[Engine], int]:
    def feed(engine: Engine) -> int:
        return len(engine.process_many(rows)) + len(engine.flush())

    return feed


def batched(batches: list[Any]) -> Callable[[Engine], int]:
    def feed(engine: Engine) -> int:
        alerts = 0
        for batch in batches:
            alerts += len(engine.process_batch(batch))
        return alerts + len(engine.flush())

    return feed


def measure(
    name: str,
    make_rules: Callable[[], list[Rule]],
    rows: list[dict[str, Any]],
    batch_rows: int,
    repeat: int,
) -> dict[str, Any]:
    batches = pa.Table.from_pylist(rows).to_batches(max_chunksize=batch_rows)
    n = len(rows)
    out: dict[str, Any] = {"events": n}
    for mode, feed in (("process_batch", batched(batches)), ("process_many", many(rows))):
        wall, cpu, alerts = run(make_rules, feed, repeat)
        out[mode] = {"events_per_s": round(n / wall), "events_per_cpu_s": round(n / cpu)}
        out.setdefault("alerts", alerts)
        assert out["alerts"] == alerts, (name, mode, alerts, out["alerts"])
        print(
            f"{name} {mode:>13}: {n / wall:>12,.0f} events/s  {n / cpu:>12,.0f} per CPU-s  "
            f"({alerts} alerts)  load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    # one core, as the other engine figures: no pyarrow thread pool beside the Python thread
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    results: dict[str, Any] = {
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "machine": platform.machine(),
        "batch_rows": args.batch_rows,
        "load_before": os.getloadavg(),
        "workloads": {},
    }
    stream = payments(args.events)
    # the expression rule finds exactly the matches of the lambda rule of the other benchmarks
    reference = Engine([p1()], timestamp="ts")
    expected = len(reference.process_many(stream)) + len(reference.flush())
    row = measure("P1", lambda: [p1_expression()], stream, args.batch_rows, args.repeat)
    assert row["alerts"] == expected, (row["alerts"], expected)
    results["workloads"]["P1"] = row
    del stream
    generator = PaymentGenerator(seed=7, users=20_000, rate=1_000.0)
    synthetic = [dict(p) for p in generator.payments(args.events)]
    results["workloads"]["defaults"] = measure(
        "default rules", default_rules, synthetic, args.batch_rows, args.repeat
    )
    results["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
