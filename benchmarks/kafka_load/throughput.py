"""Phase 1: sustained throughput from a backlog."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .harness import BenchJob, Offsets
from .prom import histogram, sample_sum, scrape
from .util import log
from .workload import Workload, produce_backlog


def throughput_phase(
    bootstrap: str, workdir: Path, args: argparse.Namespace, workload: Workload
) -> dict[str, Any]:
    job = BenchJob.under(bootstrap, workdir, args.partitions)
    job.create_input()
    log(f"throughput: producing {args.events:,} payments to {job.input_topic}")
    backlog = produce_backlog(job, workload, args.events)
    log(f"  produced in {backlog['seconds']} s")
    offsets = Offsets(job)
    end = offsets.end()
    runner = job.start_runner(args.throughput_commit_interval, args.runner_option)
    failed = False
    try:
        url = runner.wait_started()
        started = time.monotonic()
        first: tuple[float, int, float | None] | None = None
        last: tuple[float, int, float | None] | None = None
        timeline: list[tuple[float, int]] = []
        while time.monotonic() - started < args.throughput_timeout:
            committed = offsets.committed()
            now = time.monotonic()
            if committed > 0:
                if first is None:
                    first = (now, committed, runner.cpu())
                timeline.append((round(now - first[0], 2), committed))
            if committed >= end:
                last = (now, committed, runner.cpu())
                break
            runner.alive()
            time.sleep(0.05)
        samples = scrape(url)
    except BaseException:
        failed = True
        raise
    finally:
        code = runner.stop()
        offsets.close()
        if failed and not args.keep_topics:
            job.delete()
    if first is None or last is None:
        raise RuntimeError("throughput: the runner did not commit every offset in time")
    seconds = last[0] - first[0]
    events = last[1] - first[1]
    cpu = last[2] - first[2] if last[2] is not None and first[2] is not None else None
    result = {
        "events": end,
        "commit_interval_ms": args.throughput_commit_interval,
        "produce_seconds": backlog["seconds"],
        "measured_events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "runner_cpu_s": None if cpu is None else round(cpu, 2),
        "events_per_cpu_s": None if not cpu else round(events / cpu),
        "from_start_to_first_commit_s": round(first[0] - started, 2),
        "timeline": timeline[:: max(1, len(timeline) // 60)],
        "transactions": sample_sum(samples, "fraudcep_transactions"),
        "alerts": sample_sum(samples, "fraudcep_alerts"),
        "commit_seconds": histogram(samples, "fraudcep_commit_seconds"),
        "checkpoint_seconds": histogram(samples, "fraudcep_checkpoint_seconds"),
        "runner_exit_code": code,
        "runner_problems": runner.problems()[:10],
    }
    log(
        f"  {result['events_per_s']:,} events/s over {seconds:.2f} s "
        f"({result['events_per_cpu_s'] or '?'} per runner CPU-second), "
        f"{result['transactions']:.0f} transactions"
    )
    if not args.keep_topics:
        job.delete()
    return result
