"""Engine throughput and memory benchmarks (P1 to P4 of docs/performance.md).

Run: ``.venv/bin/python benchmarks/bench_engine.py [--events N] [--repeat K] [--workloads P1,P4]
[--json FILE]``.
Each workload runs on one core (one Python process, nothing else in it); the figure kept is
the best of ``--repeat`` runs, since slower runs only measure interference.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import STREAMS, WORKLOADS, dense_payments, p4

from fraudcep import Engine, Pattern, Rule


def throughput(rule: Rule, events: list[dict[str, Any]], batch: bool) -> tuple[float, int]:
    """Events per second through a fresh engine, and the number of alerts."""
    engine = Engine([rule], timestamp="ts", on_timeout=lambda _: None)
    gc.collect()
    start = time.perf_counter()
    if batch:
        alerts = len(engine.process_many(events))
    else:
        alerts = 0
        process = engine.process
        for event in events:
            alerts += len(process(event))
    alerts += len(engine.flush())
    elapsed = time.perf_counter() - start
    return len(events) / elapsed, alerts


def memory_per_partial_match(runs: int = 50_000) -> float:
    """Bytes of engine state per live partial match (P1: one open run per user)."""
    pattern = Pattern.begin("first").where(lambda p: p["amount"] > 2000).times(3).within(300_000)
    rule = Rule("mem", pattern, key="user_id")
    events = [
        {"payment_id": i, "user_id": i, "amount": 2500.0, "country": "US", "ts": 1_000 + i}
        for i in range(runs + 1)
    ]
    engine = Engine([rule], timestamp="ts")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine.process_many(events)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    live = engine.stats.live_partial_matches
    # the events themselves belong to the caller; only what the engine adds is counted
    event_bytes = sum(sys.getsizeof(e) for e in events[:1000]) / 1000 * live
    return (after - before - event_bytes) / live


def memory_dense(events: int = 200_000) -> tuple[float, int, float]:
    """Bytes of engine state per live partial match on P4's stream (its first ``events``
    payments, a match-dense steady state): ``tracemalloc`` before and after, the events
    excluded since they belong to the caller. Also the live partial matches and the bytes per
    live key."""
    stream = dense_payments(events)
    engine = Engine([p4()], timestamp="ts", on_timeout=lambda _: None)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    alerts = engine.process_many(stream)
    del alerts  # the alerts are the caller's too
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    live = engine.stats.live_partial_matches
    return (after - before) / live, live, (after - before) / engine.stats.live_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="e.g. P1,P4")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()

    streams: dict[Any, list[dict[str, Any]]] = {}
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "events": args.events,
        "workloads": {},
    }
    for name in args.workloads.split(","):
        rule = WORKLOADS[name]()
        make_stream = STREAMS[name]
        if make_stream not in streams:
            streams[make_stream] = make_stream(args.events)
        events = streams[make_stream]
        row: dict[str, Any] = {}
        for mode, batch in (("process_many", True), ("process", False)):
            best, alerts = 0.0, 0
            for _ in range(args.repeat):
                rate, alerts = throughput(rule, events, batch)
                best = max(best, rate)
            row[mode] = round(best)
            row["alerts"] = alerts
        results["workloads"][name] = row
        print(
            f"{name}: {row['process_many']:>9,} events/s batch  "
            f"{row['process']:>9,} events/s per event  ({row['alerts']} alerts)",
            flush=True,
        )
    per_match = memory_per_partial_match()
    results["bytes_per_partial_match"] = round(per_match)
    print(f"memory: {per_match:,.0f} bytes per live partial match")
    dense, live, per_key = memory_dense()
    results["dense_bytes_per_partial_match"] = round(dense)
    results["dense_live_partial_matches"] = live
    print(
        f"memory, P4: {dense:,.0f} bytes per live partial match "
        f"({live:,} live, {per_key:,.0f} bytes per live key)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
