"""Phase 2 (and 3): alert latency at a paced input rate, end to end and by stage."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from . import REPO
from .harness import LOG_APPEND_TIME, BenchJob, LagSampler, Offsets
from .producer import MODE as PRODUCE_MODE
from .prom import Samples, highest_bucket_ms, histogram, sample_sum, scrape, select, window
from .stats import cdf_points, summarize
from .util import cpu_seconds, log, machine_busy_seconds, own_cpu_seconds
from .workload import Workload, preload_state

TARGET_P99_MS: Final = 20.0
BENCH_SCRIPT: Final = REPO / "benchmarks" / "bench_kafka_runner.py"
FETCH_DELAY: Final = "fraudcep_fetch_delay_seconds"
ALERT_STAGE: Final = "fraudcep_alert_stage_seconds"

STAGES: Final = {
    "schedule": "producer: due → handed to the client",
    "to_broker": "producer → broker append",
    "to_fetch": "broker append → runner fetch",
    "engine": "fetch → engine",
    "produce": "engine → alert produced",
    "commit": "alert produced → committed",
    "out": "alert produced → reader",
    "in": "due → alert produced",
    "end_to_end": "due → reader (end to end)",
}
"""The stages of an alert's latency, in order: the producer's (every record, from its
delivery reports), the runner's (``to_fetch`` every record, the rest per alert, from its
histograms: bucket-interpolated), and the reader's (per alert: ``out`` spans the commit
and the reader's fetch; ``in`` and ``end_to_end`` are split at the alert record's own
timestamp, when the runner produced it). Stages of different populations do not add up."""


def read_alerts(reader: Any, timeout: float, into: list[tuple[float, int, int]]) -> None:
    """Append (receive ms, last event ts, alert record timestamp) of the alerts available.

    ``poll`` returns as soon as one record is there; ``consume(n, timeout)`` would wait for
    ``n`` records or the whole timeout, adding up to ``timeout`` to the latency measured.
    """
    first = reader.poll(timeout)
    if first is None:
        return
    received = time.time() * 1000
    for msg in [first, *reader.consume(1000, 0)]:
        if msg.error() is not None:
            continue
        doc = json.loads(msg.value())
        last = max(e["ts"] for events in doc["events"].values() for e in events)
        into.append((received, last, msg.timestamp()[1]))


def _from_histogram(samples: Samples, name: str, **labels: str) -> dict[str, Any]:
    h = histogram(select(samples, name, **labels), name)
    out: dict[str, Any] = {"count": h["count"], "source": "runner histogram"}
    if h["count"]:
        out.update(
            mean=h["mean_ms"], p50=h["p50_ms"], p90=h["p90_ms"], p99=h["p99_ms"],
            max_at_most=h["max_at_most_ms"], share_le_ms=h["share_le_ms"],
        )  # fmt: skip
    return out


def stage_breakdown(
    sent: dict[str, Any], run_samples: Samples, per_alert: dict[str, Sequence[float]]
) -> dict[str, dict[str, Any]]:
    """Every stage of :data:`STAGES`: count, mean, p50, p90, p99 and max (ms), and a CDF
    (``cdf_ms``: values at quantiles 0, 0.005, ...; or ``share_le_ms`` for histograms)."""
    stages: dict[str, dict[str, Any]] = {}
    for name in ("schedule", "to_broker"):
        stages[name] = {**sent.get("stages_ms", {}).get(name, {"count": 0}), "source": "producer"}
    stages["to_fetch"] = _from_histogram(run_samples, FETCH_DELAY)
    for name in ("engine", "produce", "commit"):
        stages[name] = _from_histogram(run_samples, ALERT_STAGE, stage=name)
    for name, values in per_alert.items():
        stages[name] = {**summarize(values), "cdf_ms": cdf_points(values), "source": "reader"}
    return stages


def format_stages(stages: dict[str, dict[str, Any]]) -> str:
    rows = [f"    {'stage':<34} {'count':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8}"]
    for name, label in STAGES.items():
        s = stages.get(name, {})
        top = s.get("max", s.get("max_at_most"))
        rows.append(
            f"    {label:<34} {s.get('count', 0):>7} {s.get('p50', '-'):>7} "
            f"{s.get('p90', '-'):>7} {s.get('p99', '-'):>7} {top if top is not None else '-':>8}"
        )
    return "\n".join(rows)


def measure_restore(job: BenchJob, args: argparse.Namespace) -> dict[str, Any]:
    """Start the runner again on the job's group and read how long each partition took to
    load its checkpoint chain and restore its engine (its log's "partition restored")."""
    runner = job.start_runner(args.state_commit_interval, args.runner_option, name="restarted")
    try:
        started = time.monotonic()
        runner.wait_assigned(job.partitions, timeout=args.throughput_timeout)
        assigned_s = time.monotonic() - started
        restored = [x for x in runner.log_lines() if x.get("msg") == "partition restored"]
    finally:
        runner.stop(timeout=args.throughput_timeout)
    return {
        "partitions": [
            {k: x.get(k) for k in ("partition", "seconds", "deltas", "compacted", "replay")}
            for x in restored
        ],
        "restore_s_total": round(sum(float(x.get("seconds", 0.0)) for x in restored), 2),
        "from_start_to_assigned_s": round(assigned_s, 2),
    }


def latency_run(
    bootstrap: str,
    workdir: Path,
    args: argparse.Namespace,
    workload: Workload,
    rate: int,
    commit_interval_ms: int,
    broker_pid: int | None,
    *,
    duration: float | None = None,
    preload: int = 0,
) -> dict[str, Any]:
    job = BenchJob.under(bootstrap, workdir, args.partitions)
    job.create_input(LOG_APPEND_TIME if args.input_timestamps == "log-append" else None)
    state = f", after {preload:,} keys of state" if preload else ""
    log(f"latency: {rate:,} events/s, commit interval {commit_interval_ms} ms{state} ({job.tag})")
    runner = job.start_runner(commit_interval_ms, args.runner_option)
    reader: Any = None
    failed = False
    sampler = LagSampler(job)
    producer: subprocess.Popen[str] | None = None
    preloaded: dict[str, Any] | None = None
    before: Samples = {}
    try:
        url = runner.wait_started()
        runner.wait_assigned(job.partitions)
        if preload:
            offsets = Offsets(job)
            try:
                preloaded = preload_state(job, preload, offsets, args.throughput_timeout * 5)
            finally:
                offsets.close()
            settle_deadline = time.monotonic() + args.state_settle
            while runner.compacting() and time.monotonic() < settle_deadline:
                time.sleep(0.5)  # the compactions the preload started finish first
            preloaded["compacting_at_run_start"] = runner.compacting()
            log(f"  preloaded: {preloaded}")
        reader = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{job.tag}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": args.reader_fetch_wait_ms,
            }
        )
        alert_tps = [
            TopicPartition(job.alerts_topic, p, OFFSET_BEGINNING) for p in range(job.partitions)
        ]
        reader.assign(alert_tps)
        sampler.start()
        command = [
            sys.executable, str(BENCH_SCRIPT), PRODUCE_MODE,
            "--bootstrap", bootstrap,
            "--topic", job.input_topic,
            "--rate", str(rate),
            "--duration", str(duration or args.duration),
            "--users", str(workload.users),
            "--big-fraction", str(workload.big_fraction),
            "--scenarios-per-10k", str(workload.scenarios_per_10k),
            "--seed", str(workload.seed),
            "--linger-ms", str(args.producer_linger_ms),
            "--warmup", str(args.warmup),
            *(f"--config={kv}" for kv in args.producer_config),
        ]  # fmt: skip
        runner_cpu0 = runner.cpu()
        worker_cpu0 = runner.children_cpu()
        busy0, own0 = machine_busy_seconds(), own_cpu_seconds()
        broker_cpu0 = cpu_seconds(broker_pid) if broker_pid else None
        load0 = load1 = os.getloadavg()
        before = scrape(url)
        producer = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
        )
        # (receive ms, last event ts, alert record timestamp)
        alerts: list[tuple[float, int, int]] = []
        produced_at: float | None = None
        drain_deadline = math.inf
        runner_cpu1: float | None = None
        worker_cpu1 = math.nan
        busy1 = own1 = math.nan
        broker_cpu1: float | None = None
        warm_samples: Samples = {}
        # (the producer's interpreter takes a moment to start: a second's margin)
        warm_at = time.monotonic() + args.warmup + 1.0
        while True:
            read_alerts(reader, 0.02, alerts)
            now = time.monotonic()
            if not warm_samples and now >= warm_at:
                warm_samples = scrape(url)  # the runner's stages after the warm-up
            if produced_at is None and producer.poll() is not None:
                produced_at = now
                drain_deadline = now + args.drain_timeout
                runner_cpu1 = runner.cpu()
                worker_cpu1 = runner.children_cpu()
                busy1, own1 = machine_busy_seconds(), own_cpu_seconds()
                broker_cpu1 = cpu_seconds(broker_pid) if broker_pid else None
                load1 = os.getloadavg()
            if produced_at is not None and (
                sampler.caught_up_since(produced_at) or now > drain_deadline
            ):
                break
            runner.alive()
        caught_up = sampler.caught_up_since(produced_at or 0.0)
        # read what the last commits hold
        ends = {
            p: reader.get_watermark_offsets(TopicPartition(job.alerts_topic, p), timeout=10)[1]
            for p in range(job.partitions)
        }
        tail_deadline = time.monotonic() + 3
        while time.monotonic() < tail_deadline:
            read_alerts(reader, 0.05, alerts)
            positions = {tp.partition: tp.offset for tp in reader.position(alert_tps)}
            if all(ends[p] <= 0 or positions.get(p, -1) >= ends[p] for p in ends):
                break
        samples = scrape(url)
    except BaseException:
        failed = True
        raise
    finally:
        sampler.stop()
        if producer is not None and producer.poll() is None:
            producer.kill()
        if reader is not None:
            reader.close()
        code = runner.stop()
        if failed and not args.keep_topics:
            job.delete()
    out, err = producer.communicate() if producer is not None else ("", "")
    try:
        sent = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"the producer failed:\n{err[-3000:]}") from None
    first_ts = int(sent["first_ts"])
    warm = first_ts + args.warmup * 1000
    kept = [a for a in alerts if a[1] >= warm]
    total = [a[0] - a[1] for a in kept]
    inbound = [a[2] - a[1] for a in kept]
    outbound = [a[0] - a[2] for a in kept]
    run_samples: Samples = {}
    for name in (FETCH_DELAY, ALERT_STAGE):
        run_samples.update(window(warm_samples or before, samples, name))
    stages = stage_breakdown(
        sent, run_samples, {"out": outbound, "in": inbound, "end_to_end": total}
    )
    window_start = min(t for t, _lag, _end in sampler.samples) if sampler.samples else 0.0
    lag_series = [(round(t - window_start, 2), lag) for t, lag, _end in sampler.samples]
    producing = [lag for t, lag, _end in sampler.samples if produced_at is None or t <= produced_at]
    tail = producing[len(producing) * 2 // 3 :] or [0]
    max_lag_tail = max(tail)
    runner_cpu = (
        runner_cpu1 - runner_cpu0 if runner_cpu0 is not None and runner_cpu1 is not None else None
    )
    broker_cpu = (
        broker_cpu1 - broker_cpu0 if broker_cpu0 is not None and broker_cpu1 is not None else None
    )
    producer_ok = sent["rate"] is not None and sent["rate"] >= 0.95 * rate
    kept_up = caught_up and max_lag_tail <= rate  # at most one second of input behind
    result: dict[str, Any] = {
        "rate": rate,
        "commit_interval_ms": commit_interval_ms,
        "runner_options": list(args.runner_option),
        "input_timestamps": args.input_timestamps,
        "producer": {k: v for k, v in sent.items() if k != "stages_ms"},
        "producer_kept_pace": producer_ok,
        "runner_kept_up": kept_up,
        "caught_up_after_producer": caught_up,
        "max_lag_last_third": max_lag_tail,
        "lag": lag_series[:: max(1, len(lag_series) // 60)],
        "runner_cpu_s": None if runner_cpu is None else round(runner_cpu, 2),
        "runner_cpu_share": None if runner_cpu is None else round(runner_cpu / sent["seconds"], 3),
        "broker_cpu_s": None if broker_cpu is None else round(broker_cpu, 2),
        "compaction_worker_cpu_s": None
        if math.isnan(worker_cpu1)
        else round(worker_cpu1 - worker_cpu0, 2),
        "reader_cpu_s": round(own1 - own0, 2) if not math.isnan(own1) else None,
        "machine_busy_cpu_s": round(busy1 - busy0, 2) if not math.isnan(busy1) else None,
        # what else ran meanwhile: other processes (and the broker, when external)
        "other_cpu_s": None
        if math.isnan(busy1) or runner_cpu is None
        else round(
            (busy1 - busy0)
            - runner_cpu
            - (broker_cpu or 0.0)
            - sent["cpu_s"]
            - (own1 - own0)
            - (0.0 if math.isnan(worker_cpu1) else worker_cpu1 - worker_cpu0),
            2,
        ),
        "loadavg_1m_at_start": round(load0[0], 2),
        "loadavg_at_start": [round(x, 2) for x in load0],
        "loadavg_at_end": [round(x, 2) for x in load1] if produced_at is not None else None,
        "alerts_received": len(alerts),
        "latency_ms": summarize(total),
        "latency_in_ms": summarize(inbound),
        "latency_out_ms": summarize(outbound),
        "share_under_target": round(sum(1 for x in total if x < TARGET_P99_MS) / len(total), 4)
        if total
        else None,
        "cdf_ms": cdf_points(total),
        "stages_ms": stages,
        "runner_metrics": {
            "processed": sample_sum(samples, "fraudcep_records_processed"),
            "transactions": sample_sum(samples, "fraudcep_transactions"),
            "alerts": sample_sum(samples, "fraudcep_alerts"),
            "processing_latency": histogram(samples, "fraudcep_processing_latency_seconds"),
            "commit_seconds": histogram(
                window(before, samples, "fraudcep_commit_seconds"), "fraudcep_commit_seconds"
            ),
            "checkpoint_seconds": histogram(samples, "fraudcep_checkpoint_seconds"),
            "checkpoint_bytes": sample_sum(samples, "fraudcep_checkpoint_bytes"),
            "live_partial_matches": sample_sum(samples, "fraudcep_live_partial_matches"),
        },
        "runner_exit_code": code,
        "runner_problems": runner.problems()[:10],
        "topics_tag": job.tag,
    }
    pause = "fraudcep_checkpoint_pause_seconds"
    during = window(before, samples, pause)
    result["checkpoints"] = {
        "pause_during_run": histogram(during, pause),
        "pause_during_run_at_most_ms": highest_bucket_ms(during, pause),
        "pause_since_start": histogram(samples, pause),
        "pause_max_since_start_ms": round(
            sample_sum(samples, "fraudcep_checkpoint_pause_max_seconds") * 1000, 2
        ),
        "taken_during_run": {
            labels.get("kind", ""): value
            - sum(
                v
                for lb, v in before.get("fraudcep_checkpoints_total", [])
                if lb.get("kind") == labels.get("kind")
            )
            for labels, value in samples.get("fraudcep_checkpoints_total", [])
        },
        "save_seconds": histogram(samples, "fraudcep_checkpoint_seconds"),
        "compaction_seconds": histogram(samples, "fraudcep_compaction_seconds"),
        "chain_deltas": sample_sum(samples, "fraudcep_checkpoint_chain_deltas"),
    }
    if preloaded is not None:
        preload_pause = window({}, before, pause)
        result["preload"] = {
            **preloaded,
            "pause": histogram(preload_pause, pause),
            "pause_at_most_ms": highest_bucket_ms(preload_pause, pause),
        }
        result["restore"] = measure_restore(job, args)
        log(f"  restore: {result['restore']}")
    lat = result["latency_ms"]
    log(
        f"  {sent['rate']:,.0f}/s sent, {lat.get('count', 0)} alerts: p50 {lat.get('p50')} "
        f"p90 {lat.get('p90')} p99 {lat.get('p99')} max {lat.get('max')} ms; runner "
        f"{'kept up' if kept_up else 'FELL BEHIND'} (lag tail {max_lag_tail}), cpu "
        f"{result['runner_cpu_share']}, load {result['loadavg_at_start']}"
    )
    log("  stages (ms):\n" + format_stages(stages))
    log(
        f"  checkpoint pauses during the run: {result['checkpoints']['pause_during_run']}, "
        f"longest at most {result['checkpoints']['pause_during_run_at_most_ms']} ms"
    )
    if not args.keep_topics:
        job.delete()
    return result
