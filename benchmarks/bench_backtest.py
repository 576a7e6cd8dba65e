"""Throughput of ``fraudcep backtest`` from local Parquet (docs/performance.md, "Backtest").

Run: ``.venv/bin/python benchmarks/bench_backtest.py [--payments N] [--repeat K]
[--files-per-hour F] [--json FILE]`` (from a checkout: ``PYTHONPATH=.:adapters``).

``N`` synthetic payments (``PaymentGenerator(seed=7, users=20_000, rate=1000)``, with its fraud
scenarios) are written as the S3 sink lays them out: ``dt=/hour=`` partitions by ``ts``, the
sink's columns (``fraudcep_aws.parquet_schema``), ``F`` files per hour (one per input
partition, payments spread round robin, so an hour's files overlap in time and must be
sorted), zstd. Then, timed: the whole backtest of the default rules as
:func:`fraudcep_backtest.run_backtest` does it from the directory: list and prune the files,
read each hour, sort it by ``ts``, run ``Engine.process_batch`` over 65,536-row batches, keep
the alerts, compute the per-rule figures; once without labels and once with the scenario
payments as labels (a vectorised ``is_in`` per batch). Best of ``K`` runs, wall clock and CPU
time of the process; pyarrow's thread pools are limited to one thread (one core).

With ``--jsonl``, the same payments also go to one JSON Lines file, shuffled within 30 seconds
of event time, and the backtest reads it whole and streamed with ``--sort-window 1m``, each
in a fresh process: payments/s and the process's peak RSS (what the stream saves).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fraudcep.payments.default_rules import default_rule_definitions
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep_aws.parquet_schema import payments_batch
from fraudcep_backtest import open_source, run_backtest


def write_lake(root: Path, n: int, files_per_hour: int, rate: float = 1000) -> set[str]:
    """The lake of ``n`` payments under ``root``; returns the fraud payments' ids."""
    generator = PaymentGenerator(seed=7, users=20_000, rate=rate)
    hours: dict[tuple[str, str], list[list[tuple[int, dict[str, Any]]]]] = defaultdict(
        lambda: [[] for _ in range(files_per_hour)]
    )
    fraud = set()
    for offset, payment in enumerate(generator.payments(n)):
        row = dict(payment)
        if "scenario" in row:
            fraud.add(row["payment_id"])
        moment = datetime.fromtimestamp(row["ts"] / 1000, UTC)
        key = (moment.strftime("%Y-%m-%d"), moment.strftime("%H"))
        hours[key][offset % files_per_hour].append((offset, row))
    for (dt, hour), parts in hours.items():
        folder = root / f"dt={dt}" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        for number, records in enumerate(parts):
            table = pa.Table.from_batches([payments_batch(records, "payments", number)])
            pq.write_table(table, folder / f"payments-{number}.parquet", compression="zstd")
    return fraud


def measure(root: Path, labels: set[str] | None, repeat: int) -> dict[str, Any]:
    rules = default_rule_definitions()
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_backtest(rules, open_source(str(root)).batches(), labels=labels)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    assert result is not None
    return {
        "payments": result.payments,
        "alerts": sum(result.counts().values()),
        "wall_s": round(best_wall, 3),
        "cpu_s": round(best_cpu, 3),
        "payments_per_s": round(result.payments / best_wall),
        "payments_per_cpu_s": round(result.payments / best_cpu),
    }


def write_jsonl(path: Path, n: int, rate: float, shuffle_ms: int = 30_000) -> None:
    """The payments of :func:`write_lake` as JSON Lines, each ``shuffle_ms`` of event time
    shuffled (the file is out of order by up to that much)."""
    generator = PaymentGenerator(seed=7, users=20_000, rate=rate)
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as handle:
        chunk: list[dict[str, Any]] = []
        for payment in generator.payments(n):
            row = dict(payment)
            if chunk and row["ts"] - chunk[0]["ts"] >= shuffle_ms:
                rng.shuffle(chunk)
                handle.writelines(json.dumps(r) + "\n" for r in chunk)
                chunk = []
            chunk.append(row)
        rng.shuffle(chunk)
        handle.writelines(json.dumps(r) + "\n" for r in chunk)


_ONE_RUN = """
import json, sys, time
import pyarrow as pa
pa.set_cpu_count(1); pa.set_io_thread_count(1)
from fraudcep.payments.default_rules import default_rule_definitions
from fraudcep_backtest import open_source, run_backtest
window = None if sys.argv[2] == "whole" else int(sys.argv[2])
started = time.perf_counter()
source = open_source(sys.argv[1], sort_window=window)
result = run_backtest(default_rule_definitions(), source.batches())
wall = time.perf_counter() - started
# VmHWM: this process image's peak (ru_maxrss would count the parent's at the fork)
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"payments": result.payments, "late": result.late_payments,
                  "alerts": sum(result.counts().values()), "wall_s": round(wall, 3),
                  "payments_per_s": round(result.payments / wall),
                  "peak_rss_mb": round(hwm / 1024)}))
"""


def measure_jsonl(path: Path, repeat: int) -> dict[str, Any]:
    """The JSON Lines file read whole and streamed (1-minute window), best of ``repeat``
    fresh processes each (peak RSS: the lowest seen)."""
    out: dict[str, Any] = {"bytes": path.stat().st_size}
    for name, window in (("whole", "whole"), ("streamed_1m", str(60_000))):
        runs = []
        for _ in range(repeat):
            done = subprocess.run(
                [sys.executable, "-c", _ONE_RUN, str(path), window],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(done.stdout))
        best = max(runs, key=lambda r: r["payments_per_s"])
        best["peak_rss_mb"] = min(r["peak_rss_mb"] for r in runs)
        out[name] = best
    return out


def time_cli(root: Path, fraud: set[str], report: Path) -> dict[str, Any]:
    """The whole command, start to end: interpreter start, imports, the backtest with labels,
    the JSON and the HTML report (pyarrow with its default threads here)."""
    report.parent.mkdir(parents=True, exist_ok=True)
    labels = root.parent / "labels.csv"
    labels.write_text("payment_id\n" + "".join(f"{i}\n" for i in sorted(fraud)))
    rules = Path(__file__).resolve().parents[1] / "fraudcep" / "payments" / "default_rules.yaml"
    command = [
        sys.executable, "-m", "fraudcep_cli", "backtest", str(rules), "--payments", str(root),
        "--labels", str(labels), "--report", str(report),
        "--json", str(report.with_suffix(".json")), "--progress", "never",
    ]  # fmt: skip
    started = time.perf_counter()
    before = os.times()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    after = os.times()
    wall = time.perf_counter() - started
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files-per-hour", type=int, default=4)
    parser.add_argument(
        "--rate", type=float, default=1000, help="payments per second of event time"
    )
    parser.add_argument("--report", help="also time the CLI with --report/--json, kept there")
    parser.add_argument("--json", help="write the results there")
    parser.add_argument(
        "--jsonl", action="store_true", help="also a JSON Lines file, read whole and streamed"
    )
    args = parser.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        root = Path(tmp) / "payments"
        started = time.perf_counter()
        fraud = write_lake(root, args.payments, args.files_per_hour, args.rate)
        files = sorted(root.rglob("*.parquet"))
        print(
            f"wrote {args.payments:,} payments in {len(files)} files "
            f"({sum(f.stat().st_size for f in files) / 1e6:.1f} MB) in "
            f"{time.perf_counter() - started:.1f} s; load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )
        results = {
            "load_before": round(os.getloadavg()[0], 2),
            "no_labels": measure(root, None, args.repeat),
            "labels": measure(root, fraud, args.repeat),
            "files": len(files),
            "load_after": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "pyarrow": pa.__version__,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        if args.report:
            results["cli"] = time_cli(root, fraud, Path(args.report))
        if args.jsonl:
            path = Path(tmp) / "payments.jsonl"
            write_jsonl(path, args.payments, args.rate)
            results["jsonl"] = measure_jsonl(path, args.repeat)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
