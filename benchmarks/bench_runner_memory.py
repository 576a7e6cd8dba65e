"""Memory of the Kafka runner (``fraudcep run``) against the number of keys it holds state for.

Run: ``.venv/bin/python benchmarks/bench_runner_memory.py [--bootstrap HOST:PORT]
[--keys 0,100k,300k,1M] [--split-keys 100k] [--engine-keys 1M] [--json FILE]``. Without
``--bootstrap`` a single-node broker is started with ``scripts/kafka.sh`` in a temporary
directory (and stopped at the end). The runner processes are the tests'
(``tests/support/kafka_runner.py``: ``python -m fraudcep_cli run``, JSON logs, metrics on a
free port), with the runner's default intervals instead of the tests' short ones.

For each size N, on fresh topics (4 partitions) and a fresh group:

1. N payments are written first, one per user (``u0000000``...), each over 2000, event time
   the wall clock at the start plus 0.1 ms per payment. The rule (``RULE_YAML``) is the seed
   rule (three payments over 2000 by one user) with a window of a day: after its payment each
   user holds one live partial match that stays for the whole measurement (the P1 shape).
2. One runner starts on that backlog (``--log-level debug``, so each checkpoint it takes is
   logged with its kind, records, bytes and time). Its ``/proc/PID/status`` (VmRSS, VmHWM)
   and its child processes' (the compaction worker; their sum too) are sampled twice a
   second, the group's committed offsets every second. Recorded once the committed offsets
   reach the end of every partition (time to consume) and then name checkpoints made at
   those offsets (all the state checkpointed): peak and current RSS, the ``/metrics`` page
   (live partial matches, checkpoints by kind, their save times and sizes, compactions), the
   checkpoints in the log, the bytes of the checkpoint directory.
3. The runner is stopped (SIGTERM: it waits for its writes, commits and takes a last
   checkpoint) and a second one started on the same group: the time from its start until each
   partition logged "partition restored" (and that line's own seconds), its RSS and peak RSS
   after the restore, and its live partial matches.

Bytes per key are the slopes of a least-squares line through the sizes, not one size divided
by its keys. Last, an in-process split (``--split-keys`` keys, ``tracemalloc``): the engine's
state when it decodes and processes the same records itself (the decoded payments are the
engine's here, as in the runner), the bytes of its full snapshot and the Python memory taking
it needs, and the state of an engine restored from that snapshot. And in fresh processes,
without Kafka (``--engine-keys``, default a million): the RSS of one engine holding that many
keys, while it takes a full snapshot, of an engine restored from that snapshot, and of
``compact`` merging a chain of one partition's share of the keys (the compaction worker's
work; VmHWM is reset through ``/proc/self/clear_refs`` before each step).

Progress goes to stderr; results to ``--json`` (default ``benchmarks/results/runner_memory.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
_PATHS: Final = [str(REPO), str(REPO / "adapters"), str(REPO / "tests")]
# This checkout's packages, for this process and the runners it starts (before an installed
# copy of the project).
sys.path[:0] = [p for p in _PATHS if p not in sys.path]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [*_PATHS, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from kafka_load.prom import Samples, scrape  # noqa: E402
from kafka_load.util import log  # noqa: E402
from support.kafka_broker import running_broker  # noqa: E402
from support.kafka_runner import Job, RunnerProcess, delete_topics, produce, retrying  # noqa: E402

from fraudcep import Engine  # noqa: E402
from fraudcep.payments.payment import decode_payment  # noqa: E402
from fraudcep.rules import load_rule_file  # noqa: E402
from fraudcep.runtime.checkpoint import id_offset  # noqa: E402
from fraudcep_kafka.runner import parse_reference  # noqa: E402

DEFAULT_JSON: Final = REPO / "benchmarks" / "results" / "runner_memory.json"
PARTITIONS: Final = 4
MB: Final = 1024 * 1024

RULE_YAML: Final = """\
- id: high-value-3-in-1d
  description: three payments over 2000 by one user within a day (the seed rule, long window)
  version: 1
  key: user_id
  within: 1d
  skip: skip_past_last_event
  pattern:
    - name: first
      where: amount > 2000
      times: 3
"""

# The runner's own defaults where the tests' Job shortens them (docs/kafka.md).
RUNNER_OPTIONS: Final = {
    "idle_timeout": "5s",
    "commit_interval": "100ms",
    "checkpoint_interval": "10s",
    "compact_after_deltas": "100",
    "session_timeout": "10s",
    "topic_partitions": str(PARTITIONS),
    "log_level": "debug",
}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def count(text: str) -> int:
    scaled = text.strip().lower().replace("k", "e3").replace("m", "e6")
    return int(float(scaled))


def count_list(text: str) -> list[int]:
    try:
        values = [count(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts such as 0,100k,1M: {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected counts >= 0: {text!r}")
    return values


# -- processes ---------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """The memory lines of ``/proc/PID/status`` in bytes (empty once the process is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.startswith(("Vm", "Rss")) and rest.strip().endswith("kB"):
            out[name] = int(rest.split()[0]) * 1024
    return out


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(x) for x in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return ""


class MemoryWatch:
    """The runner's and its children's RSS, sampled by :meth:`sample`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss = self.hwm = 0
        self.total_peak = 0  # the largest sum of the runner's and its children's RSS sampled
        self.children: dict[int, dict[str, Any]] = {}

    def sample(self) -> dict[str, int]:
        status = proc_status(self.pid)
        if status:
            self.rss = status.get("VmRSS", 0)
            self.hwm = max(self.hwm, status.get("VmHWM", 0))
        together = self.rss
        for child in children(self.pid):
            got = proc_status(child)
            if not got:
                continue
            together += got.get("VmRSS", 0)
            entry = self.children.setdefault(
                child, {"cmdline": cmdline(child), "peak_rss_mb": 0.0, "last_rss_mb": 0.0}
            )
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], round(got.get("VmHWM", 0) / MB, 1))
            entry["last_rss_mb"] = round(got.get("VmRSS", 0) / MB, 1)
        self.total_peak = max(self.total_peak, together)
        return status


# -- metrics -----------------------------------------------------------------------------------


def total(samples: Samples, name: str) -> float:
    return sum(v for _labels, v in samples.get(name, []))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {labels.get(label, ""): v for labels, v in samples.get(name, [])}


def metrics_summary(samples: Samples) -> dict[str, Any]:
    def hist(name: str) -> dict[str, Any]:
        n = total(samples, name + "_count")
        s = total(samples, name + "_sum")
        return {"count": int(n), "mean_s": round(s / n, 4) if n else None}

    return {
        "live_partial_matches": total(samples, "fraudcep_live_partial_matches"),
        "records_processed": total(samples, "fraudcep_records_processed_total"),
        "checkpoints": by_label(samples, "fraudcep_checkpoints_total", "kind"),
        "checkpoint_bytes_by_partition": by_label(
            samples, "fraudcep_checkpoint_bytes", "partition"
        ),
        "checkpoint_save_s": hist("fraudcep_checkpoint_seconds"),
        "checkpoint_pause_s": hist("fraudcep_checkpoint_pause_seconds"),
        "checkpoint_pause_max_s": total(samples, "fraudcep_checkpoint_pause_max_seconds"),
        "compaction_s": hist("fraudcep_compaction_seconds"),
    }


# -- the group's offsets -----------------------------------------------------------------------


class Offsets:
    """The group's committed offsets (and the checkpoints they name) and the topic's end
    offsets, read by a consumer of the group that never joins it."""

    def __init__(self, job: Job) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": job.bootstrap, "group.id": job.group, "enable.auto.commit": False}
        )
        self._tps = [TopicPartition(job.input_topic, p) for p in range(job.partitions)]

    def ends(self) -> list[int]:
        return [self._end(tp) for tp in self._tps]

    def _end(self, tp: TopicPartition) -> int:
        low_high = retrying(
            lambda: self._consumer.get_watermark_offsets(tp, timeout=10),
            f"the end of {tp.topic}[{tp.partition}]",
        )
        return int(low_high[1])

    def committed(self) -> list[tuple[int, int | None]]:
        """Per partition: the committed offset (0 when none) and the offset of the
        checkpoint its metadata names (None when none)."""
        out: list[tuple[int, int | None]] = []
        got = retrying(
            lambda: self._consumer.committed(self._tps, timeout=10), "the committed offsets"
        )
        for tp in got:
            reference = parse_reference(tp.metadata)
            out.append((max(0, tp.offset), None if reference is None else id_offset(reference)))
        return out

    def close(self) -> None:
        self._consumer.close()


# -- one size ----------------------------------------------------------------------------------


def payments(keys: int, start_ms: int) -> Iterator[tuple[bytes, bytes]]:
    for i in range(keys):
        user = f"u{i:07d}"
        payment = {
            "payment_id": f"m{i}",
            "user_id": user,
            "card_id": f"c{i:07d}",
            "merchant": "m-17",
            "country": "DE",
            "amount": 2500.0,
            "currency": "EUR",
            "status": "approved",
            "ts": start_ms + i // 10,
        }
        yield user.encode(), json.dumps(payment, separators=(",", ":")).encode()


def with_progress(records: Iterable[Any], every: int, what: str, size: int) -> Iterator[Any]:
    started = time.monotonic()
    for i, record in enumerate(records, 1):
        yield record
        if i % every == 0:
            rate = i / max(time.monotonic() - started, 1e-9)
            log(f"  {what}: {i:,}/{size:,} ({rate:,.0f}/s)")


def dir_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def checkpoint_lines(runner: RunnerProcess) -> dict[str, Any]:
    """The checkpoints and compactions the runner logged, summarized."""
    taken: dict[str, list[dict[str, Any]]] = {}
    compacted: list[dict[str, Any]] = []
    for line in runner.log_lines():
        if line.get("msg") == "checkpoint taken":
            taken.setdefault(str(line.get("kind")), []).append(line)
        elif line.get("msg") == "checkpoint chain compacted":
            compacted.append(line)
    out: dict[str, Any] = {}
    for kind, lines in sorted(taken.items()):
        size = [int(x.get("bytes", 0)) for x in lines]
        ms = [float(x.get("snapshot_ms", 0.0)) for x in lines]
        records = [int(x.get("records", 0)) for x in lines]
        out[kind] = {
            "count": len(lines),
            "bytes_total": sum(size),
            "bytes_max": max(size),
            "records_max": max(records),
            "records_median": statistics.median(records),
            "snapshot_ms_median": round(statistics.median(ms), 2),
            "snapshot_ms_max": round(max(ms), 2),
        }
    if compacted:
        size = [int(x.get("bytes", 0)) for x in compacted]
        secs = [float(x.get("seconds", 0.0)) for x in compacted]
        biggest = max(range(len(compacted)), key=lambda i: size[i])
        out["compacted"] = {
            "count": len(compacted),
            "bytes_max": size[biggest],
            "seconds_of_biggest": secs[biggest],
            "seconds_max": max(secs),
            "seconds_mean": round(statistics.mean(secs), 3),
        }
    return out


def wait_metrics_url(runner: RunnerProcess, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in runner.log_lines():
            if line.get("msg") == "metrics endpoint up":
                return str(line["url"])
        if runner.process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"runner: no metrics endpoint; its log ends:\n{runner.tail(20)}")


def restored_lines(runner: RunnerProcess) -> list[dict[str, Any]]:
    return [x for x in runner.log_lines() if x.get("msg") == "partition restored"]


def assigned(runner: RunnerProcess) -> bool:
    return any(
        x.get("msg") == "partitions assigned" and len(x.get("partitions", [])) == PARTITIONS
        for x in runner.log_lines()
    )


def measure(job: Job, keys: int, rules: Path, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = {"keys": keys, "load_at_start": loadavg()}
    job.create_input()
    if keys:
        log(f"  writing {keys:,} payments (one per user)")
        started = time.monotonic()
        records = with_progress(payments(keys, int(time.time() * 1000)), 100_000, "written", keys)
        produce(job.bootstrap, job.input_topic, records)
        result["produce_s"] = round(time.monotonic() - started, 1)
        gc.collect()
    offsets = Offsets(job)
    try:
        ends = offsets.ends()
        assert sum(ends) == keys, (ends, keys)
        result |= run_and_restore(job, keys, ends, offsets, rules, timeout)
    finally:
        offsets.close()
    result["load_at_end"] = loadavg()
    return result


def run_and_restore(
    job: Job, keys: int, ends: list[int], offsets: Offsets, rules: Path, timeout: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    options = {**RUNNER_OPTIONS, "rules": str(rules)}
    runner = job.start("bench", **options)
    watch = MemoryWatch(runner.process.pid)
    started = time.monotonic()
    try:
        url = wait_metrics_url(runner)
        consumed_at: float | None = None
        checkpointed_at = started
        last_print = last_offsets = 0.0
        committed: list[tuple[int, int | None]] = [(0, None)] * PARTITIONS
        while True:
            now = time.monotonic()
            if now - started > timeout:
                raise RuntimeError(f"not done after {timeout} s; log ends:\n{runner.tail(20)}")
            if runner.process.poll() is not None:
                raise RuntimeError(f"the runner exited; its log ends:\n{runner.tail(20)}")
            watch.sample()
            if now - last_offsets >= 1.0:
                last_offsets = now
                committed = offsets.committed()
            done = sum(c for c, _ in committed)
            pairs = list(zip(committed, ends, strict=True))
            if consumed_at is None and all(c >= e for (c, _), e in pairs):
                consumed_at = now
                log(f"  consumed all {keys:,} after {now - started:.1f} s")
            if keys == 0:
                settled = assigned(runner)
            else:  # every partition's commit names a checkpoint made at its end
                settled = consumed_at is not None and all(
                    e == 0 or (c >= e and ck == c) for (c, ck), e in pairs
                )
            if settled:
                checkpointed_at = now
                break
            if now - last_print >= 5.0:
                last_print = now
                live = total(scrape(url), "fraudcep_live_partial_matches")
                log(
                    f"  {now - started:5.0f} s: committed {done:,}/{keys:,}, "
                    f"RSS {watch.rss / MB:,.0f} MB (peak {watch.hwm / MB:,.0f} MB), "
                    f"live partial matches {live:,.0f}, load {loadavg()[0]}"
                )
            time.sleep(0.5)
        if keys == 0:
            time.sleep(3.0)  # let the idle runner settle
        else:
            log(f"  checkpoints name the end offsets after {checkpointed_at - started:.1f} s")
        time.sleep(1.5)  # the gauges are refreshed every second
        gc.collect()
        status = watch.sample()
        samples = scrape(url)
        store_bytes, store_files = dir_bytes(job.checkpoints)
        out["run"] = {
            "consume_s": round((consumed_at or started) - started, 1),
            "checkpointed_s": round(checkpointed_at - started, 1),
            "rss_mb": round(status.get("VmRSS", 0) / MB, 1),
            "peak_rss_mb": round(watch.hwm / MB, 1),
            "peak_rss_before_stop_mb": round(watch.hwm / MB, 1),
            "rss_anon_mb": round(status.get("RssAnon", 0) / MB, 1),
            "rss_file_mb": round(status.get("RssFile", 0) / MB, 1),
            "metrics": metrics_summary(samples),
            "checkpoints_logged": checkpoint_lines(runner),
            "store_bytes": store_bytes,
            "store_files": store_files,
            "children": list(watch.children.values()),
        }
        log(
            f"  running: RSS {out['run']['rss_mb']:,} MB, peak {out['run']['peak_rss_mb']:,} MB,"
            f" live partial matches {out['run']['metrics']['live_partial_matches']:,.0f},"
            f" store {store_bytes / MB:,.1f} MB in {store_files} files"
        )
        stopping = time.monotonic()
        runner.process.send_signal(signal.SIGTERM)
        while runner.process.poll() is None and time.monotonic() - stopping < timeout:
            watch.sample()  # its last checkpoint is taken now
            time.sleep(0.1)
        code = runner.terminate()
        out["run"]["stop_s"] = round(time.monotonic() - stopping, 1)
        out["run"]["exit_code"] = code
        out["run"]["peak_rss_mb"] = round(watch.hwm / MB, 1)
        out["run"]["sampled_peak_with_children_mb"] = round(watch.total_peak / MB, 1)
    finally:
        if runner.process.poll() is None:
            runner.kill9()
    log(f"  stopped in {out['run']['stop_s']} s; restarting")
    out["restore"] = restart(job, keys, options, timeout)
    return out


def restart(job: Job, keys: int, options: dict[str, str], timeout: float) -> dict[str, Any]:
    runner = job.start("bench", **options)
    watch = MemoryWatch(runner.process.pid)
    started = time.monotonic()
    try:
        url = wait_metrics_url(runner)
        last_print = started
        while True:
            now = time.monotonic()
            if now - started > timeout:
                raise RuntimeError(f"no restore after {timeout} s; log ends:\n{runner.tail(20)}")
            if runner.process.poll() is not None:
                raise RuntimeError(f"the runner exited; its log ends:\n{runner.tail(20)}")
            watch.sample()
            restored = restored_lines(runner)
            if (keys and len(restored) >= PARTITIONS) or (not keys and assigned(runner)):
                break
            if now - last_print >= 5.0:
                last_print = now
                log(
                    f"  {now - started:5.0f} s: {len(restored)} partitions restored, "
                    f"RSS {watch.rss / MB:,.0f} MB (peak {watch.hwm / MB:,.0f} MB)"
                )
            time.sleep(0.2)
        restored_s = time.monotonic() - started
        time.sleep(2.0)  # the gauges are refreshed every second
        status = watch.sample()
        samples = scrape(url)
        out = {
            "restored_after_s": round(restored_s, 1),
            "partitions": [
                {k: x.get(k) for k in ("partition", "seconds", "deltas", "compacted", "replay")}
                for x in restored
            ],
            "rss_mb": round(status.get("VmRSS", 0) / MB, 1),
            "peak_rss_mb": round(watch.hwm / MB, 1),
            "live_partial_matches": total(samples, "fraudcep_live_partial_matches"),
            "children": list(watch.children.values()),
            "sampled_peak_with_children_mb": round(watch.total_peak / MB, 1),
        }
        log(
            f"  restored after {restored_s:.1f} s: RSS {out['rss_mb']:,} MB, peak "
            f"{out['peak_rss_mb']:,} MB, live partial matches {out['live_partial_matches']:,.0f}"
        )
    finally:
        runner.terminate()
    return out


# -- the in-process split ----------------------------------------------------------------------


def split(keys: int, rules: Path) -> dict[str, Any]:
    """Python memory (tracemalloc) of the engine's state for ``keys`` keys, of a full snapshot
    of it, and of an engine restored from that snapshot."""
    definitions = load_rule_file(str(rules))
    rule_list = [d.rule for d in definitions]
    raw = [value for _key, value in payments(keys, int(time.time() * 1000))]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        engine = Engine(rule_list, timestamp="ts", event_id="payment_id")
        for chunk in range(0, keys, 2000):
            engine.process_many([decode_payment(r) for r in raw[chunk : chunk + 2000]])
        gc.collect()
        state = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        snapshot = engine.snapshot()
        snapshot_peak = tracemalloc.get_traced_memory()[1] - before
        stats = engine.stats
        del engine
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        restored = Engine.restore(snapshot, rule_list, timestamp="ts", event_id="payment_id")
        gc.collect()
        restored_state = tracemalloc.get_traced_memory()[0] - base
        del restored
    finally:
        tracemalloc.stop()
    return {
        "keys": keys,
        "live_keys": stats.live_keys,
        "live_partial_matches": stats.live_partial_matches,
        "engine_state_bytes_per_key": round(state / keys),
        "snapshot_bytes_per_key": round(len(snapshot) / keys),
        "snapshot_python_peak_bytes_per_key": round(snapshot_peak / keys),
        "restored_state_bytes_per_key": round(restored_state / keys),
        "record_bytes": round(sum(len(r) for r in raw) / keys),
    }


# -- RSS of the engine alone, in fresh processes -----------------------------------------------

PROBE_MODE: Final = "_probe"


def reset_peak() -> None:
    """Set this process's VmHWM back to its current RSS (Linux ``clear_refs``, value 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def rss_now() -> dict[str, float]:
    status = proc_status(os.getpid())
    return {"rss_mb": round(status["VmRSS"] / MB, 1), "peak_mb": round(status["VmHWM"] / MB, 1)}


def probe_main(argv: Sequence[str]) -> int:
    """One measurement in this (fresh) process; prints its result as JSON on stdout.

    ``build RULES KEYS SNAPSHOT``: decode and process ``KEYS`` records, take a full snapshot
    (written to the file SNAPSHOT). ``restore RULES SNAPSHOT``: restore an engine from it.
    ``compact RULES KEYS DELTAS``: a chain like the runner's while it takes new keys (a base
    of two thirds of the keys, then DELTAS deltas adding the rest) merged by ``compact``."""
    from fraudcep.engine.codec import compact

    kind, rules_path, *rest = argv
    rule_list = [d.rule for d in load_rule_file(rules_path)]
    options: dict[str, Any] = {"timestamp": "ts", "event_id": "payment_id"}
    gc.collect()
    out: dict[str, Any] = {"start": rss_now()}
    if kind == "build":
        keys, path = int(rest[0]), Path(rest[1])
        engine = Engine(rule_list, **options)
        for chunk in chunks(payments(keys, int(time.time() * 1000)), 2000):
            engine.process_many([decode_payment(value) for _key, value in chunk])
        gc.collect()
        out["engine"] = rss_now()
        reset_peak()
        started = time.perf_counter()
        snapshot = engine.snapshot()
        out["snapshot_s"] = round(time.perf_counter() - started, 2)
        out["snapshot_bytes"] = len(snapshot)
        out["after_snapshot"] = rss_now()
        path.write_bytes(snapshot)
        out["live_keys"] = engine.stats.live_keys
    elif kind == "restore":
        blob = Path(rest[0]).read_bytes()
        out["blob_read"] = rss_now()
        reset_peak()
        started = time.perf_counter()
        engine = Engine.restore(blob, rule_list, **options)
        out["restore_s"] = round(time.perf_counter() - started, 2)
        out["restored"] = rss_now()
        del blob
        gc.collect()
        out["blob_dropped"] = rss_now()
        out["live_keys"] = engine.stats.live_keys
    elif kind == "compact":
        keys, deltas = int(rest[0]), int(rest[1])
        engine = Engine(rule_list, **options)
        records = list(payments(keys, int(time.time() * 1000)))
        half = keys * 2 // 3  # the runner compacts once deltas hold half the base's bytes
        engine.process_many([decode_payment(v) for _k, v in records[:half]])
        chain = [engine.snapshot()]
        step = max(1, (keys - half) // deltas)
        for start in range(half, keys, step):
            engine.process_many([decode_payment(v) for _k, v in records[start : start + step]])
            chain.append(engine.snapshot_delta())
        del engine, records
        gc.collect()
        out["chain_bytes"] = sum(len(b) for b in chain)
        out["chain_deltas"] = len(chain) - 1
        out["chain_held"] = rss_now()
        reset_peak()
        started = time.perf_counter()
        merged = compact(chain[0], chain[1:])
        out["compact_s"] = round(time.perf_counter() - started, 2)
        out["compacted_bytes"] = len(merged)
        out["after_compact"] = rss_now()
    else:
        raise SystemExit(f"unknown probe {kind!r}")
    print(json.dumps(out))
    return 0


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def probe(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), PROBE_MODE, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe {args[0]} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def engine_rss(keys: int, partition_keys: int, deltas: int, rules: Path) -> dict[str, Any]:
    """RSS of an engine holding ``keys`` keys (no Kafka, no runner), of one restored from its
    snapshot, and of compacting a chain of a partition of ``partition_keys`` keys."""
    snapshot = rules.parent / "engine.snapshot"
    log(f"  building an engine of {keys:,} keys in a fresh process")
    built = probe("build", str(rules), str(keys), str(snapshot))
    log(f"    {built}")
    log("  restoring it in a fresh process")
    restored = probe("restore", str(rules), str(snapshot))
    log(f"    {restored}")
    snapshot.unlink()
    log(f"  compacting a chain of {partition_keys:,} keys and {deltas} deltas in a fresh process")
    compacted = probe("compact", str(rules), str(partition_keys), str(deltas))
    log(f"    {compacted}")
    return {"keys": keys, "build": built, "restore": restored, "compact": compacted}


# -- the whole run -----------------------------------------------------------------------------


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y against x."""
    if len(points) < 2:
        return None
    mx = statistics.mean(x for x, _ in points)
    my = statistics.mean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return None if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den


def slopes(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def per_key(pick: Any) -> float | None:
        value = slope([(r["keys"], pick(r) * MB) for r in results])
        return None if value is None else round(value)

    return {
        "rss_bytes_per_key": per_key(lambda r: r["run"]["rss_mb"]),
        "peak_rss_bytes_per_key": per_key(lambda r: r["run"]["peak_rss_mb"]),
        "restored_rss_bytes_per_key": per_key(lambda r: r["restore"]["rss_mb"]),
        "restored_peak_rss_bytes_per_key": per_key(lambda r: r["restore"]["peak_rss_mb"]),
        "store_bytes_per_key": per_key(lambda r: r["run"]["store_bytes"] / MB),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--keys", type=count_list, default=count_list("0,100k,300k,1M"))
    parser.add_argument("--split-keys", type=count, default=100_000, help="0: no split")
    parser.add_argument(
        "--engine-keys", type=count, default=1_000_000, help="engine-only RSS probe; 0: none"
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per step")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document: dict[str, Any] = {
        "benchmark": "bench_runner_memory",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "memory_mb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB),
        },
        "rule": RULE_YAML,
        "runner_options": RUNNER_OPTIONS,
        "partitions": PARTITIONS,
        "load_at_start": loadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="fraudcep-memory-") as tmp:
        workdir = Path(tmp)
        rules = workdir / "rules.yaml"
        rules.write_text(RULE_YAML)
        with contextlib.ExitStack() as stack:
            bootstrap = args.bootstrap
            if not bootstrap:
                log("starting a broker with scripts/kafka.sh")
                bootstrap = stack.enter_context(running_broker(workdir / "kafka"))
            results: list[dict[str, Any]] = []
            for keys in args.keys:
                log(f"{keys:,} keys (load {loadavg()})")
                job = Job(bootstrap, workdir / f"keys-{keys}", partitions=PARTITIONS)
                try:
                    results.append(measure(job, keys, rules, args.timeout))
                finally:
                    delete_topics(bootstrap, [job.input_topic, job.alerts_topic,
                                              job.dlq_topic, job.rules_topic])  # fmt: skip
                    shutil.rmtree(job.workdir, ignore_errors=True)
                document["points"] = results
                write(args.json, document)
        document["slopes"] = slopes(results)
        log(f"slopes: {document['slopes']}")
        if args.split_keys:
            log(f"in-process split, {args.split_keys:,} keys (tracemalloc)")
            document["split"] = split(args.split_keys, rules)
            log(f"  {document['split']}")
        if args.engine_keys:
            log(f"engine alone, {args.engine_keys:,} keys (RSS in fresh processes)")
            document["engine_rss"] = engine_rss(
                args.engine_keys, max(1, args.engine_keys // PARTITIONS), 50, rules
            )
    document["load_at_end"] = loadavg()
    write(args.json, document)
    log(f"results in {args.json}")
    return 0


def write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == [PROBE_MODE]:
        sys.exit(probe_main(sys.argv[2:]))
    sys.exit(main())
