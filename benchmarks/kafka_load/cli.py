"""The command: options, the phases in order, the results file and the plots."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import REPO
from . import __doc__ as DOC
from .harness import RunnerDied, broker
from .latency import latency_run
from .throughput import throughput_phase
from .util import duration_list, duration_ms, int_list, log, machine_info
from .workload import Workload

DEFAULT_JSON = REPO / "benchmarks" / "results" / "kafka_runner.json"
DEFAULT_SVG = REPO / "docs" / "img" / "kafka-runner-latency.svg"
DEFAULT_STAGES_SVG = REPO / "docs" / "img" / "kafka-runner-latency-stages.svg"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_kafka_runner.py",
        description=DOC.split("\n\n")[0] if DOC else None,
        epilog="See benchmarks/kafka_load/__init__.py and docs/performance.md for what is "
        "measured.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--bootstrap",
        help="an existing broker (default: start one with scripts/kafka.sh, stop it after)",
    )
    parser.add_argument(
        "--broker-pid", type=int, help="with --bootstrap: the broker's pid, to record its CPU time"
    )
    parser.add_argument("--partitions", type=int, default=4, help="input topic partitions")
    parser.add_argument("--workdir", type=Path, help="checkpoints and logs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--svg", type=Path, default=DEFAULT_SVG, help="latency plot")
    parser.add_argument(
        "--stages-svg", type=Path, default=DEFAULT_STAGES_SVG, help="latency stages plot"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="JSON",
        help="a results file whose end-to-end CDFs the stages plot shows dashed (before)",
    )
    parser.add_argument(
        "--plot-only", type=Path, metavar="JSON", help="only redraw the plots from a results file"
    )
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the topics")
    stream = parser.add_argument_group("the stream (PaymentGenerator, safe_noise=False)")
    stream.add_argument("--users", type=int, default=2_000)
    stream.add_argument("--big-fraction", type=float, default=0.02, help="share over 2000")
    stream.add_argument("--scenarios-per-10k", type=float, default=50.0)
    stream.add_argument("--seed", type=int, default=7)
    thr = parser.add_argument_group("phase 1: sustained throughput")
    thr.add_argument("--events", type=int, default=500_000, help="payments in the backlog")
    thr.add_argument(
        "--throughput-commit-interval", type=duration_ms, default=100, metavar="DURATION"
    )
    thr.add_argument("--throughput-timeout", type=float, default=180.0, metavar="S")
    thr.add_argument("--skip-throughput", action="store_true")
    lat = parser.add_argument_group("phase 2: latency at paced rates")
    lat.add_argument("--rate", type=int, default=10_000, help="the base rate (events/s)")
    lat.add_argument(
        "--commit-intervals",
        type=duration_list,
        default=[5, 10, 20, 100],
        metavar="LIST",
        help="commit intervals tried at the base rate, e.g. 5ms,10ms,20ms,100ms",
    )
    lat.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="runs per commit interval at --rate"
    )
    lat.add_argument(
        "--ladder",
        type=int_list,
        default=[20_000, 40_000, 80_000],
        metavar="LIST",
        help="higher rates, tried in order until the runner or the producer cannot keep up",
    )
    lat.add_argument("--ladder-commit-interval", type=duration_ms, default=20, metavar="DURATION")
    lat.add_argument("--duration", type=float, default=20.0, metavar="S", help="per rate")
    lat.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        metavar="S",
        help="alerts of each run's first S ignored",
    )
    lat.add_argument(
        "--warmup-run",
        type=float,
        default=10.0,
        metavar="S",
        help="a first, discarded run of S seconds (a fresh broker's JVM is slow at first)",
    )
    lat.add_argument(
        "--drain-timeout",
        type=float,
        default=8.0,
        metavar="S",
        help="how long the runner may take to catch up after the producer stops",
    )
    lat.add_argument("--producer-linger-ms", type=int, default=5, metavar="MS")
    lat.add_argument(
        "--producer-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting for the paced producer, e.g. linger.ms=1 (repeatable)",
    )
    lat.add_argument("--reader-fetch-wait-ms", type=int, default=10, metavar="MS")
    lat.add_argument(
        "--input-timestamps",
        choices=("log-append", "create"),
        default="log-append",
        help="the input topic's message.timestamp.type: log-append makes the runner's "
        "fetch delay broker append → fetch, and gives the producer the append time",
    )
    lat.add_argument("--skip-latency", action="store_true")
    size = parser.add_argument_group("phase 3: state size")
    size.add_argument(
        "--state-keys",
        type=int_list,
        default=[],
        metavar="LIST",
        help="keys of live state to give the runner before a paced run, e.g. 1k,1M "
        "(default: no such runs)",
    )
    size.add_argument("--state-rate", type=int, default=10_000, help="events/s")
    size.add_argument("--state-duration", type=float, default=30.0, metavar="S")
    size.add_argument("--state-commit-interval", type=duration_ms, default=100, metavar="DURATION")
    size.add_argument(
        "--state-settle",
        type=float,
        default=300.0,
        metavar="S",
        help="after the preload was committed, wait at most this long for the compactions "
        "it started to end",
    )
    parser.add_argument(
        "--runner-option",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every runner, e.g. --runner-option=--batch-size=500 (repeatable)",
    )
    return parser.parse_args(argv)


_NUMBERS = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")


def dump_results(results: dict[str, Any]) -> str:
    """``results`` as indented JSON, each list of numbers (CDF points, pairs) on one line."""
    text = json.dumps(results, indent=1)
    return (
        _NUMBERS.sub(lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
        + "\n"
    )


def write_plots(results: dict[str, Any], args: argparse.Namespace) -> None:
    from .plot import write_latency_plot, write_stages_plot

    if "latency" not in results or not results["latency"]["runs"]:
        return
    write_latency_plot(results, args.svg)
    log(f"wrote {args.svg}")
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    write_stages_plot(results, args.stages_svg, baseline)
    log(f"wrote {args.stages_svg}")


def latency_phase(
    bootstrap: str,
    workdir: Path,
    args: argparse.Namespace,
    workload: Workload,
    broker_pid: int | None,
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "producer_linger_ms": args.producer_linger_ms,
        "producer_config": list(args.producer_config),
        "reader_fetch_wait_ms": args.reader_fetch_wait_ms,
        "ladder_commit_interval_ms": args.ladder_commit_interval,
        "input_timestamps": args.input_timestamps,
        "runs": runs,
    }
    if args.warmup_run > 0:
        log("warm-up run (discarded): brokers and page cache warm up first")
        warm = latency_run(
            bootstrap, workdir, args, workload, args.rate, args.ladder_commit_interval,
            broker_pid, duration=args.warmup_run,
        )  # fmt: skip
        out["warmup_run"] = {
            k: warm[k] for k in ("rate", "commit_interval_ms", "latency_ms", "producer")
        }

    def measure(rate: int, interval: int) -> dict[str, Any]:
        error = ""
        for attempt in (1, 2):
            try:
                return latency_run(bootstrap, workdir, args, workload, rate, interval, broker_pid)
            except RunnerDied as exc:
                log(f"  attempt {attempt}: {exc}")
                error = str(exc)
        return {"rate": rate, "commit_interval_ms": interval, "error": error}

    intervals = list(dict.fromkeys(args.commit_intervals))
    for _ in range(args.repeat):
        for interval in intervals:
            runs.append(measure(args.rate, interval))
    if args.ladder_commit_interval not in intervals:
        runs.append(measure(args.rate, args.ladder_commit_interval))
    for rate in args.ladder:
        if rate == args.rate:
            continue
        run = measure(rate, args.ladder_commit_interval)
        runs.append(run)
        if "error" in run or not (run["runner_kept_up"] and run["producer_kept_pace"]):
            break
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only is not None:
        write_plots(json.loads(args.plot_only.read_text()), args)
        return 0
    workload = Workload(args.users, args.big_fraction, args.scenarios_per_10k, args.seed)
    command = "python benchmarks/bench_kafka_runner.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    results: dict[str, Any] = {
        "benchmark": "kafka_runner",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": machine_info(),
        "workload": workload.describe(args.partitions),
    }
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-kr-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        bootstrap, broker_pid = stack.enter_context(broker(args.bootstrap, workdir))
        broker_pid = broker_pid or args.broker_pid
        results["broker"] = (
            f"external ({bootstrap})"
            if args.bootstrap
            else "scripts/kafka.sh (started by the benchmark)"
        )
        if not args.skip_throughput:
            try:
                results["throughput"] = throughput_phase(bootstrap, workdir, args, workload)
            except RunnerDied as exc:
                log(f"  {exc}; once more")
                results["throughput"] = throughput_phase(bootstrap, workdir, args, workload)
        if not args.skip_latency:
            results["latency"] = latency_phase(bootstrap, workdir, args, workload, broker_pid)
        if args.state_keys:
            results["state"] = {
                "rate": args.state_rate,
                "duration_s": args.state_duration,
                "commit_interval_ms": args.state_commit_interval,
                "runs": [
                    latency_run(
                        bootstrap,
                        workdir,
                        args,
                        workload,
                        args.state_rate,
                        args.state_commit_interval,
                        broker_pid,
                        duration=args.state_duration,
                        preload=keys,
                    )
                    for keys in args.state_keys
                ],
            }
    results["total_seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_at_end"] = machine_info()["loadavg_at_start"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(dump_results(results))
    log(f"wrote {args.json} ({results['total_seconds']} s in all)")
    write_plots(results, args)
    return 0
