"""Load test of the exactly-once Kafka runner (``fraudcep run``): throughput and alert latency.

Run: ``.venv/bin/python benchmarks/bench_kafka_runner.py [--bootstrap HOST:PORT] [options]``.
Without ``--bootstrap`` a single-node broker is started with ``scripts/kafka.sh`` (in a
temporary directory) and stopped at the end. Each measurement runs ONE runner process
(``python -m fraudcep_cli run``, default rules, ``--log-format json``) with its own group and
topics; the runner's ``/metrics`` endpoint is found in its log ("metrics endpoint up").

1. Sustained throughput. ``--events`` payments (default 500,000) are written to a fresh
   4-partition topic first, keyed by ``user_id``; then the runner starts and the group's
   committed offsets are polled (``Consumer.committed()`` on a consumer of the runner's
   group id that never subscribes, so it does not join the group). The rate is the events
   committed between the first committed progress and the moment the committed offsets
   reach the end of every partition, divided by that time. The runner's commit and
   checkpoint time histograms are scraped at the end.
2. Alert latency at a paced input rate. A separate producer process (this script's
   ``_produce`` mode, so that producing does not share an interpreter with the measuring
   loop) sends payments in real time: each payment's ``ts`` is the wall clock (epoch ms) at
   which it is due to be sent (``fraudcep.payments.synthetic.PaymentGenerator`` paced by
   ``fraudcep_cli.generate.generate``). A ``read_committed`` consumer of the alerts topic
   takes each alert's latency as its receive time minus the largest ``ts`` of its events,
   i.e. since the moment the event that completed the match was produced. The latency is
   also split at the alert record's own Kafka timestamp (when the runner produced it):
   "in" (producer, broker, runner fetch and engine) and "out" (waiting for and committing
   the transaction, the reader's fetch). Runs are made at ``--rate`` for each of
   ``--commit-intervals``, then at each rate of ``--ladder`` (with ``--ladder-commit-interval``)
   until the runner (or the producer) cannot keep up: consumer lag (end offset minus
   committed offset) grows beyond one second of input, or the group does not catch up after
   the producer stops. The runner's own ``fraudcep_processing_latency_seconds`` histogram
   (record timestamp to commit) is scraped as a cross-check.

3. State size (``--state-keys 1k,1M``). For each size, a latency run as above (at
   ``--state-rate``, ``--state-commit-interval``, for ``--state-duration`` s) after the
   runner was given that many keys of live state first: one payment over 2000 for each of
   as many users of their own (``pre-0000000``...), with the wall clock as event time, which
   leaves two live partial matches per user (``high-value-3-in-5m`` and ``geo-hop``, open for
   5 and 10 minutes: longer than the run). The preload is written as fast as the producer
   can and the runner takes it with delta checkpoints and compactions as it goes; the paced
   run starts once the group committed all of it and the compactions it started ended (at
   most ``--state-settle`` s later). Recorded besides the latency: the loop's
   checkpoint pauses (``fraudcep_checkpoint_pause_seconds``, during the preload and during
   the paced run apart, by diffing the histogram), the checkpoints and compactions (and the
   compaction worker's CPU time, apart from the runner's), and
   after the run the restore: the runner is stopped and started again, and the seconds each
   partition took to load its chain and restore its engine are read from its log.

The stream: the default background of ``PaymentGenerator`` without its guards
(``safe_noise=False``) and with more payments over 2000 (``--big-fraction``) among fewer
users (``--users``), so that the default rules fire tens of times per second from the first
seconds on. The injected scenarios alone (``--scenarios-per-10k``) span 20 s to 8 minutes of
event time each and would give almost no alerts in a 20-second run.

Results go to ``--json`` (default ``benchmarks/results/kafka_runner.json``) and a latency plot
to ``--svg`` (default ``docs/img/kafka-runner-latency.svg``); ``--plot-only FILE`` redraws
the plot from a results file. The machine's cores are shared by the broker, the producer,
the runner and this script: the results record each process's CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
KAFKA_SH: Final = REPO / "scripts" / "kafka.sh"
DEFAULT_JSON: Final = REPO / "benchmarks" / "results" / "kafka_runner.json"
DEFAULT_SVG: Final = REPO / "docs" / "img" / "kafka-runner-latency.svg"
PRODUCE_MODE: Final = "_produce"
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
TARGET_P99_MS: Final = 20.0


# -- small helpers -----------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def duration_ms(text: str) -> int:
    """``5ms``, ``1s`` or a bare number of milliseconds."""
    text = text.strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 10ms or 1s, got {text!r}")
    value = float(match.group(1)) * (1000 if match.group(2) == "s" else 1)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return round(value)


def int_list(text: str) -> list[int]:
    try:
        scaled = text.lower().replace("k", "e3").replace("m", "e6")
        values = [int(float(x)) for x in scaled.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers: {text!r}")
    return values


def duration_list(text: str) -> list[int]:
    return [duration_ms(x) for x in text.split(",") if x.strip()]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux ``/proc``), None when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds(pid: int) -> float:
    """CPU time of the live processes ``pid`` started (the runner's compaction worker)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            total += cpu_seconds(int(child)) or 0.0
    return total


def machine_busy_seconds() -> float:
    """CPU seconds spent on all cores, by anything (``/proc/stat``: all but idle and iowait)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values."""
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 2),
        "p50": round(quantile(ordered, 0.50), 2),
        "p90": round(quantile(ordered, 0.90), 2),
        "p99": round(quantile(ordered, 0.99), 2),
        "p999": round(quantile(ordered, 0.999), 2),
        "max": round(ordered[-1], 2),
    }


def cdf_points(values: Sequence[float], points: int = 200) -> list[float]:
    """The values at quantiles 0, 1/points, ..., 1 (enough to draw the CDF again)."""
    ordered = sorted(values)
    if not ordered:
        return []
    return [round(quantile(ordered, i / points), 2) for i in range(points + 1)]


# -- Prometheus text format --------------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> Samples:
    """The samples on a ``/metrics`` page; empty (and a message) when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        log(f"  cannot scrape {url}: {exc}")
        return {}
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = dict(_LABEL.findall(rest))
        samples.setdefault(name, []).append((labels, float(value)))
    return samples


def window(before: Samples, after: Samples, name: str) -> Samples:
    """The samples of histogram ``name`` between two scrapes (``after`` minus ``before``)."""
    out: Samples = {}
    for suffix in ("_bucket", "_count", "_sum"):
        earlier = {tuple(sorted(labels.items())): v for labels, v in before.get(name + suffix, [])}
        out[name + suffix] = [
            (labels, value - earlier.get(tuple(sorted(labels.items())), 0.0))
            for labels, value in after.get(name + suffix, [])
        ]
    return out


def highest_bucket_ms(samples: Samples, name: str) -> float | None:
    """The upper bound (ms) of the highest non-empty bucket of histogram ``name``: the
    longest observation is at most this (and above the bucket before)."""
    cumulative: dict[float, float] = {}
    for labels, value in samples.get(name + "_bucket", []):
        le = float(labels["le"])
        cumulative[le] = cumulative.get(le, 0.0) + value
    top = None
    previous = 0.0
    for le, cum in sorted(cumulative.items()):
        if cum > previous:
            top = le
        previous = cum
    return None if top is None else top * 1000


def sample_sum(samples: Samples, name: str) -> float:
    """A counter (``name_total``) or gauge, summed over its labels."""
    return sum(value for _labels, value in samples.get(name + "_total", samples.get(name, [])))


def histogram(samples: Samples, name: str) -> dict[str, Any]:
    """Count, mean and bucket-interpolated quantiles (ms) of a Prometheus histogram."""
    buckets: dict[float, float] = {}
    for labels, value in samples.get(name + "_bucket", []):
        le = float(labels["le"])
        buckets[le] = buckets.get(le, 0.0) + value
    count = sum(v for _l, v in samples.get(name + "_count", []))
    total = sum(v for _l, v in samples.get(name + "_sum", []))
    out: dict[str, Any] = {"count": int(count)}
    if not count:
        return out
    bounds = sorted(buckets.items())
    out["mean_ms"] = round(total / count * 1000, 3)

    def estimate(q: float) -> float:
        target = q * count
        prev_le, prev_cum = 0.0, 0.0
        for le, cum in bounds:
            if cum >= target:
                if math.isinf(le):
                    return prev_le * 1000  # beyond the last finite bucket: a lower bound
                share = (target - prev_cum) / (cum - prev_cum) if cum > prev_cum else 1.0
                return (prev_le + (le - prev_le) * share) * 1000
            prev_le, prev_cum = le, cum
        return prev_le * 1000

    for q, key in ((0.5, "p50_ms"), (0.9, "p90_ms"), (0.99, "p99_ms")):
        out[key] = round(estimate(q), 2)
    out["share_le_ms"] = {
        f"{le * 1000:g}": round(cum / count, 4) for le, cum in bounds if not math.isinf(le)
    }
    return out


# -- the broker --------------------------------------------------------------------------------


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path) -> Iterator[tuple[str, int | None]]:
    """The bootstrap address (and the broker's pid when we started it)."""
    if bootstrap:
        yield bootstrap, None
        return
    directory = workdir / "kafka"
    env = {**os.environ, "FRAUDCEP_PYTHON": sys.executable}
    log(f"starting a broker with scripts/kafka.sh in {directory}")
    try:
        proc = subprocess.run(
            ["bash", str(KAFKA_SH), "start", "--dir", str(directory)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"scripts/kafka.sh start failed:\n{proc.stdout}\n{proc.stderr}")
        pid_text = (directory / "kafka.pid").read_text().strip()
        yield lines[-1].strip(), int(pid_text) if pid_text.isdigit() else None
    finally:
        subprocess.run(
            ["bash", str(KAFKA_SH), "stop", "--dir", str(directory)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=90,
            env=env,
            check=False,
        )
        log("broker stopped")


# -- one job: topics, group, runner process ----------------------------------------------------


@dataclass
class Job:
    bootstrap: str
    workdir: Path
    partitions: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def input_topic(self) -> str:
        return f"bench-payments-{self.tag}"

    @property
    def alerts_topic(self) -> str:
        return f"bench-alerts-{self.tag}"

    @property
    def topics(self) -> list[str]:
        return [
            self.input_topic,
            self.alerts_topic,
            f"bench-dlq-{self.tag}",
            f"bench-rules-{self.tag}",
        ]

    @property
    def group(self) -> str:
        return f"bench-{self.tag}"

    def create_input(self) -> None:
        from fraudcep_kafka.topics import create_topics

        create_topics(
            {"bootstrap.servers": self.bootstrap}, {self.input_topic: (self.partitions, {})}
        )

    def runner_args(self, commit_interval_ms: int, extra: Sequence[str]) -> list[str]:
        settings = {
            "bootstrap": self.bootstrap,
            "group-id": self.group,
            "instance-id": "bench",
            "input-topic": self.input_topic,
            "alerts-topic": self.alerts_topic,
            "dead-letter-topic": f"bench-dlq-{self.tag}",
            "rules-topic": f"bench-rules-{self.tag}",
            "checkpoints": str(self.workdir / self.tag / "checkpoints"),
            "topic-partitions": str(self.partitions),
            "metrics-address": "127.0.0.1:0",
            "commit-interval": f"{commit_interval_ms}ms",
            "log-format": "json",
        }
        args = ["run"]
        for key, value in settings.items():
            args += [f"--{key}", value]
        return args + list(extra)

    def delete_topics(self) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.delete_topics(self.topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # a topic that was never created
                future.result(30)
        shutil.rmtree(self.workdir / self.tag, ignore_errors=True)


@dataclass
class RunnerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, job: Job, commit_interval_ms: int, extra: Sequence[str], name: str = "runner"
    ) -> RunnerProcess:
        log_path = job.workdir / job.tag / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "fraudcep_cli", *job.runner_args(commit_interval_ms, extra)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return cls(process, log_path)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                doc = {"msg": line}
            out.append(doc if isinstance(doc, dict) else {"msg": line})
        return out

    def wait_for(self, message: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.get("msg") == message:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"runner: no {message!r} in its log; last lines:\n{self.tail()}")

    def wait_assigned(self, partitions: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(
                x.get("msg") == "partitions assigned" and len(x.get("partitions", [])) == partitions
                for x in self.lines()
            ):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"runner: partitions not assigned; last lines:\n{self.tail()}")

    def metrics_url(self) -> str:
        return str(self.wait_for("metrics endpoint up")["url"])

    def cpu(self) -> float | None:
        return cpu_seconds(self.process.pid)

    def children_cpu(self) -> float:
        return children_cpu_seconds(self.process.pid)

    def compacting(self) -> bool:
        """Whether a compaction the runner started has not ended yet."""
        lines = self.lines()
        started = sum(1 for x in lines if x.get("msg") == "compacting checkpoints")
        ended = sum(1 for x in lines if x.get("msg") == "checkpoint chain compacted")
        return started > ended

    def problems(self) -> list[dict[str, Any]]:
        return [x for x in self.lines() if x.get("level") in {"warning", "error"}]

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return None

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


class RunnerDied(Exception):
    """The runner process ended during a measurement (e.g. killed from outside)."""

    def __init__(self, runner: RunnerProcess) -> None:
        self.code = runner.process.returncode
        super().__init__(
            f"the runner exited with code {self.code}; its log ends:\n{runner.tail(8)}"
        )


class Offsets:
    """The group's committed offsets and the topic's end offsets, read without joining it."""

    def __init__(self, job: Job) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer(
            {
                "bootstrap.servers": job.bootstrap,
                "group.id": job.group,  # the runner's group: committed() reads its offsets
                "enable.auto.commit": False,
            }
        )
        self._tps = [TopicPartition(job.input_topic, p) for p in range(job.partitions)]

    def committed(self) -> int:
        got = self._consumer.committed(self._tps, timeout=10)
        return sum(max(0, tp.offset) for tp in got)

    def end(self) -> int:
        return sum(self._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._tps)

    def close(self) -> None:
        self._consumer.close()


@dataclass
class LagSampler:
    """Samples (monotonic time, end - committed) once per ``interval`` in a thread."""

    job: Job
    interval: float = 0.5
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offsets = Offsets(self.job)
        try:
            while not self._stop.is_set():
                end, committed = offsets.end(), offsets.committed()
                self.samples.append((time.monotonic(), max(0, end - committed), end))
                self._stop.wait(self.interval)
        finally:
            offsets.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def caught_up_since(self, moment: float) -> bool:
        return any(t > moment and lag == 0 and end > 0 for t, lag, end in self.samples)


# -- the stream --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    users: int
    big_fraction: float
    scenarios_per_10k: float
    seed: int

    def generator(self, rate: float) -> Any:
        from fraudcep.payments.synthetic import PaymentGenerator

        return PaymentGenerator(
            seed=self.seed,
            users=self.users,
            rate=rate,
            big_fraction=self.big_fraction,
            scenarios_per_10k=self.scenarios_per_10k,
            safe_noise=False,
        )


def preload_state(job: Job, keys: int, offsets: Offsets, timeout: float) -> dict[str, Any]:
    """Give the runner ``keys`` users of live state (see the module docstring, 3.) and wait
    until its group committed them all."""
    from fraudcep_kafka.payments_producer import PaymentProducer

    producer = PaymentProducer(
        job.bootstrap, job.input_topic, config={"linger.ms": 50, "batch.size": 1_000_000}
    )
    started = time.perf_counter()
    for i in range(keys):
        producer.send(
            {
                "payment_id": f"pre-{i}",
                "user_id": f"pre-{i:07d}",
                "card_id": f"pre-c{i:07d}",
                "merchant": "m-pre",
                "country": "DE",
                "amount": 2500.0,
                "currency": "EUR",
                "status": "approved",
                "ts": int(time.time() * 1000),
            }
        )
    producer.flush(300)
    produced = time.perf_counter() - started
    del producer
    gc.collect()
    end = offsets.end()
    deadline = time.monotonic() + timeout
    while offsets.committed() < end:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the runner did not take the {keys:,}-key preload in time")
        time.sleep(0.25)
    return {
        "keys": keys,
        "produce_s": round(produced, 1),
        "committed_after_s": round(time.perf_counter() - started, 1),
    }


def measure_restore(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    """Start the runner again on the job's group and read how long each partition took to
    load its checkpoint chain and restore its engine (its log's "partition restored")."""
    runner = RunnerProcess.start(
        job, args.state_commit_interval, args.runner_option, name="restarted"
    )
    try:
        started = time.monotonic()
        runner.wait_assigned(job.partitions, timeout=args.throughput_timeout)
        assigned_s = time.monotonic() - started
        restored = [x for x in runner.lines() if x.get("msg") == "partition restored"]
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


def produce_backlog(job: Job, workload: Workload, events: int) -> dict[str, Any]:
    """Write ``events`` payments as fast as possible (event time: 10,000 per second)."""
    from fraudcep_kafka.payments_producer import PaymentProducer

    producer = PaymentProducer(
        job.bootstrap, job.input_topic, config={"linger.ms": 50, "batch.size": 1_000_000}
    )
    started = time.perf_counter()
    for payment in workload.generator(10_000).payments(events):
        producer.send(payment)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    delivered = producer.delivered
    del producer
    gc.collect()  # the client (a reference cycle through its callbacks) goes now, not later
    return {"events": delivered, "seconds": round(elapsed, 2)}


class _Deadline(Exception):
    pass


def produce_main(argv: Sequence[str]) -> int:
    """The paced producer process: sends for ``--duration`` s, prints a JSON summary."""
    from fraudcep_cli.generate import GenerateProgress, generate
    from fraudcep_kafka.payments_producer import PaymentProducer

    parser = argparse.ArgumentParser(prog=f"bench_kafka_runner.py {PRODUCE_MODE}")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--big-fraction", type=float, required=True)
    parser.add_argument("--scenarios-per-10k", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--linger-ms", type=int, required=True)
    args = parser.parse_args(argv)
    workload = Workload(args.users, args.big_fraction, args.scenarios_per_10k, args.seed)
    producer = PaymentProducer(args.bootstrap, args.topic, config={"linger.ms": args.linger_ms})
    behind: list[float] = []
    first_ts: list[int] = []
    deadline = [math.inf]

    class Sink:
        def send(self, payment: Any) -> None:
            now = time.perf_counter()
            if not first_ts:
                first_ts.append(payment["ts"])
                deadline[0] = now + args.duration
            elif now >= deadline[0]:
                raise _Deadline
            producer.send(payment)

        def idle(self, seconds: float) -> None:
            if seconds >= 0.001:
                producer.poll(seconds)
            else:
                producer.poll(0)
                time.sleep(seconds)

    def progress(p: GenerateProgress) -> None:
        if p.max_behind_ms is not None:
            behind.append(p.max_behind_ms)

    n = int(args.rate * args.duration * 2) + 1000  # more than the deadline lets through
    started = time.perf_counter()
    with contextlib.suppress(_Deadline):
        generate(workload.generator(args.rate), n, Sink(), pace=True, on_progress=progress)
    sending = time.perf_counter() - started
    producer.flush(60)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "sent": producer.sent,
        "delivered": producer.delivered,
        "seconds": round(sending, 3),
        "rate": round(producer.sent / sending, 1) if sending else None,
        "first_ts": first_ts[0] if first_ts else None,
        "max_behind_ms_per_second": [round(b, 1) for b in behind],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }
    print(json.dumps(summary), flush=True)
    return 0


# -- phase 1: throughput -----------------------------------------------------------------------


def throughput_phase(
    bootstrap: str, workdir: Path, args: argparse.Namespace, workload: Workload
) -> dict[str, Any]:
    job = Job(bootstrap, workdir, args.partitions)
    job.create_input()
    log(f"throughput: producing {args.events:,} payments to {job.input_topic}")
    backlog = produce_backlog(job, workload, args.events)
    log(f"  produced in {backlog['seconds']} s")
    offsets = Offsets(job)
    end = offsets.end()
    runner = RunnerProcess.start(job, args.throughput_commit_interval, args.runner_option)
    failed = False
    try:
        url = runner.metrics_url()
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
            if runner.process.poll() is not None:
                raise RunnerDied(runner)
            time.sleep(0.05)
        samples = scrape(url)
    except BaseException:
        failed = True
        raise
    finally:
        code = runner.stop()
        offsets.close()
        if failed and not args.keep_topics:
            job.delete_topics()
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
        job.delete_topics()
    return result


# -- phase 2: latency --------------------------------------------------------------------------


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
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    job = Job(bootstrap, workdir, args.partitions)
    job.create_input()
    state = f", after {preload:,} keys of state" if preload else ""
    log(f"latency: {rate:,} events/s, commit interval {commit_interval_ms} ms{state} ({job.tag})")
    runner = RunnerProcess.start(job, commit_interval_ms, args.runner_option)
    reader: Any = None
    failed = False
    sampler = LagSampler(job)
    producer: subprocess.Popen[str] | None = None
    preloaded: dict[str, Any] | None = None
    before: Samples = {}
    try:
        url = runner.metrics_url()
        runner.wait_for("runner started")
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
        before = scrape(url)
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
            sys.executable,
            str(Path(__file__).resolve()),
            PRODUCE_MODE,
            "--bootstrap", bootstrap,
            "--topic", job.input_topic,
            "--rate", str(rate),
            "--duration", str(duration or args.duration),
            "--users", str(workload.users),
            "--big-fraction", str(workload.big_fraction),
            "--scenarios-per-10k", str(workload.scenarios_per_10k),
            "--seed", str(workload.seed),
            "--linger-ms", str(args.producer_linger_ms),
        ]  # fmt: skip
        runner_cpu0 = runner.cpu()
        worker_cpu0 = runner.children_cpu()
        busy0, own0 = machine_busy_seconds(), own_cpu_seconds()
        broker_cpu0 = cpu_seconds(broker_pid) if broker_pid else None
        load0 = os.getloadavg()[0]
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
        while True:
            read_alerts(reader, 0.02, alerts)
            now = time.monotonic()
            if produced_at is None and producer.poll() is not None:
                produced_at = now
                drain_deadline = now + args.drain_timeout
                runner_cpu1 = runner.cpu()
                worker_cpu1 = runner.children_cpu()
                busy1, own1 = machine_busy_seconds(), own_cpu_seconds()
                broker_cpu1 = cpu_seconds(broker_pid) if broker_pid else None
            if produced_at is not None and (
                sampler.caught_up_since(produced_at) or now > drain_deadline
            ):
                break
            if runner.process.poll() is not None:
                raise RunnerDied(runner)
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
            job.delete_topics()
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
        "producer": sent,
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
        "loadavg_1m_at_start": round(load0, 2),
        "alerts_received": len(alerts),
        "latency_ms": summarize(total),
        "latency_in_ms": summarize(inbound),
        "latency_out_ms": summarize(outbound),
        "share_under_target": round(sum(1 for x in total if x < TARGET_P99_MS) / len(total), 4)
        if total
        else None,
        "cdf_ms": cdf_points(total),
        "runner_metrics": {
            "processed": sample_sum(samples, "fraudcep_records_processed"),
            "transactions": sample_sum(samples, "fraudcep_transactions"),
            "alerts": sample_sum(samples, "fraudcep_alerts"),
            "processing_latency": histogram(samples, "fraudcep_processing_latency_seconds"),
            "commit_seconds": histogram(samples, "fraudcep_commit_seconds"),
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
        f"{result['runner_cpu_share']}"
    )
    log(
        f"  checkpoint pauses during the run: {result['checkpoints']['pause_during_run']}, "
        f"longest at most {result['checkpoints']['pause_during_run_at_most_ms']} ms"
    )
    if not args.keep_topics:
        job.delete_topics()
    return result


# -- the plot ----------------------------------------------------------------------------------

COLORS: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    decade = 10 ** math.floor(math.log10(lo))
    while decade <= hi:
        for m in (1, 2, 5):
            if lo <= m * decade <= hi:
                ticks.append(m * decade)
        decade *= 10
    return ticks


def _fmt(value: float) -> str:
    if value >= 1000 and value % 1000 == 0:
        return f"{value / 1000:g}k"
    return f"{value:g}"


class _Panel:
    """One plot area with a log y (or x) axis; maps data to SVG coordinates."""

    def __init__(
        self, x0: float, y0: float, w: float, h: float,
        xr: tuple[float, float], yr: tuple[float, float], xlog: bool, ylog: bool,
    ) -> None:  # fmt: skip
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.xr, self.yr, self.xlog, self.ylog = xr, yr, xlog, ylog

    @staticmethod
    def _frac(v: float, r: tuple[float, float], logscale: bool) -> float:
        if logscale:
            v = max(v, r[0])
            return (math.log10(v) - math.log10(r[0])) / (math.log10(r[1]) - math.log10(r[0]))
        return (v - r[0]) / (r[1] - r[0])

    def x(self, v: float) -> float:
        return self.x0 + self._frac(v, self.xr, self.xlog) * self.w

    def y(self, v: float) -> float:
        return self.y0 + self.h - self._frac(v, self.yr, self.ylog) * self.h

    def axes(self, xticks: Sequence[float], yticks: Sequence[float], xlabel: str,
             ylabel: str, title: str, xfmt: Any = _fmt, yfmt: Any = _fmt) -> list[str]:  # fmt: skip
        x0, y0, w, h = self.x0, self.y0, self.w, self.h
        parts = [
            f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#333"/>',
            f'<text x="{x0 + w / 2}" y="{y0 - 10}" text-anchor="middle" '
            f'font-weight="bold">{_esc(title)}</text>',
            f'<text x="{x0 + w / 2}" y="{y0 + h + 36}" text-anchor="middle">{_esc(xlabel)}</text>',
            f'<text transform="translate({x0 - 44},{y0 + h / 2}) rotate(-90)" '
            f'text-anchor="middle">{_esc(ylabel)}</text>',
        ]
        for t in xticks:
            px = self.x(t)
            parts.append(
                f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + h}" stroke="#e5e5e5"/>'
                f'<text x="{px:.1f}" y="{y0 + h + 16}" text-anchor="middle">{xfmt(t)}</text>'
            )
        for t in yticks:
            py = self.y(t)
            parts.append(
                f'<line x1="{x0}" y1="{py:.1f}" x2="{x0 + w}" y2="{py:.1f}" stroke="#e5e5e5"/>'
                f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{yfmt(t)}</text>'
            )
        return parts

    def polyline(self, points: Sequence[tuple[float, float]], color: str, dash: str = "") -> str:
        coords = " ".join(f"{self.x(a):.1f},{self.y(b):.1f}" for a, b in points)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        return f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{extra}/>'


def write_svg(results: dict[str, Any], path: Path) -> None:
    runs: list[dict[str, Any]] = results["latency"]["runs"]
    ladder_ci = results["latency"]["ladder_commit_interval_ms"]
    base_rate = results["latency"]["rate"]
    runs = [r for r in runs if "error" not in r]
    ladder = sorted(
        (r for r in runs if r["commit_interval_ms"] == ladder_ci and r["latency_ms"]["count"]),
        key=lambda r: r["rate"],
    )
    sweep = sorted(
        (r for r in runs if r["rate"] == base_rate and r["cdf_ms"]),
        key=lambda r: r["commit_interval_ms"],
    )
    width, height = 960, 420
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    values = [r["latency_ms"][k] for r in ladder for k in ("p50", "p90", "p99")]
    values += [v for r in sweep for v in r["cdf_ms"]]
    top = 10 ** math.ceil(math.log10(max([TARGET_P99_MS * 2, *values])))
    yr = (1.0, float(top))
    # left: percentiles against the input rate
    rates = [r["rate"] for r in ladder] or [base_rate]
    xmax = max(rates) * 1.1
    left = _Panel(70, 40, 360, 300, (0, xmax), yr, False, True)
    step = 10_000 if xmax <= 100_000 else 20_000
    xticks = [x for x in range(0, int(xmax) + 1, step)]
    parts += left.axes(
        xticks, _log_ticks(*yr), "input rate (events/s)", "latency (ms, log scale)",
        f"Alert latency vs input rate (commit interval {ladder_ci} ms)",
    )  # fmt: skip
    ty = left.y(TARGET_P99_MS)
    parts.append(
        f'<line x1="{left.x0}" y1="{ty:.1f}" x2="{left.x0 + left.w}" y2="{ty:.1f}" '
        f'stroke="#999" stroke-dasharray="6 4"/><text x="{left.x0 + left.w - 4}" '
        f'y="{ty - 4:.1f}" text-anchor="end" fill="#666">target p99 {TARGET_P99_MS:g} ms</text>'
    )
    for i, key in enumerate(("p50", "p90", "p99")):
        color = COLORS[i]
        points = [(r["rate"], r["latency_ms"][key]) for r in ladder]
        if len(points) > 1:
            parts.append(left.polyline(points, color))
        for r in ladder:
            px, py = left.x(r["rate"]), left.y(r["latency_ms"][key])
            fill = color if r["runner_kept_up"] and r["producer_kept_pace"] else "white"
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{fill}" stroke="{color}" '
                'stroke-width="2"/>'
            )
        ly = left.y0 + 16 + 16 * i
        parts.append(
            f'<line x1="{left.x0 + 10}" y1="{ly - 4}" x2="{left.x0 + 30}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2"/><text x="{left.x0 + 36}" y="{ly}">{key}</text>'
        )
    if any(not (r["runner_kept_up"] and r["producer_kept_pace"]) for r in ladder):
        parts.append(
            f'<text x="{left.x0 + left.w - 6}" y="{left.y0 + left.h - 8}" text-anchor="end" '
            'fill="#666">hollow: fell behind the input rate</text>'
        )
    # right: CDF at the base rate, one line per commit interval
    right = _Panel(560, 40, 360, 300, yr, (0.0, 1.0), True, False)
    parts += right.axes(
        _log_ticks(*yr), [0, 0.25, 0.5, 0.75, 0.9, 1.0], "latency (ms, log scale)",
        "fraction of alerts", f"Latency CDF at {base_rate:,} events/s",
        yfmt=lambda v: f"{v:g}",
    )  # fmt: skip
    tx = right.x(TARGET_P99_MS)
    parts.append(
        f'<line x1="{tx:.1f}" y1="{right.y0}" x2="{tx:.1f}" y2="{right.y0 + right.h}" '
        'stroke="#999" stroke-dasharray="6 4"/>'
        f'<text x="{tx + 4:.1f}" y="{right.y0 + 14}" fill="#666">target {TARGET_P99_MS:g} ms</text>'
    )
    for i, r in enumerate(sweep):
        color = COLORS[i % len(COLORS)]
        cdf = r["cdf_ms"]
        points = [(v, j / (len(cdf) - 1)) for j, v in enumerate(cdf)]
        parts.append(right.polyline(points, color))
        ly = right.y0 + right.h - 12 - 16 * (len(sweep) - 1 - i)
        p99 = r["latency_ms"]["p99"]
        parts.append(
            f'<line x1="{right.x0 + right.w - 190}" y1="{ly - 4}" x2="{right.x0 + right.w - 170}"'
            f' y2="{ly - 4}" stroke="{color}" stroke-width="2"/><text '
            f'x="{right.x0 + right.w - 164}" y="{ly}">commit {r["commit_interval_ms"]} ms '
            f"(p99 {p99:g})</text>"
        )
    machine = results.get("machine", {})
    note = (
        f"one runner process; {machine.get('cpus', '?')} cores shared by broker, producer, "
        f"runner and reader; {results.get('date', '')[:10]}"
    )
    parts.append(
        f'<text x="{width / 2}" y="{height - 14}" text-anchor="middle" fill="#555">'
        f"{_esc(note)}</text>"
    )
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


# -- the command -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="See the module docstring and docs/performance.md for what is measured.",
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
        "--plot-only", type=Path, metavar="JSON", help="only redraw --svg from a results file"
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
    lat.add_argument("--reader-fetch-wait-ms", type=int, default=10, metavar="MS")
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


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only is not None:
        write_svg(json.loads(args.plot_only.read_text()), args.svg)
        log(f"wrote {args.svg}")
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
        "workload": {
            "generator": "fraudcep.payments.synthetic.PaymentGenerator",
            "users": workload.users,
            "big_fraction": workload.big_fraction,
            "scenarios_per_10k": workload.scenarios_per_10k,
            "safe_noise": False,
            "seed": workload.seed,
            "partitions": args.partitions,
            "rules": "default (fraudcep/payments/default_rules.yaml)",
        },
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
            runs: list[dict[str, Any]] = []
            results["latency"] = {
                "rate": args.rate,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "producer_linger_ms": args.producer_linger_ms,
                "reader_fetch_wait_ms": args.reader_fetch_wait_ms,
                "ladder_commit_interval_ms": args.ladder_commit_interval,
                "runs": runs,
            }
            if args.warmup_run > 0:
                log("warm-up run (discarded): brokers and page cache warm up first")
                warm = latency_run(
                    bootstrap, workdir, args, workload, args.rate, args.ladder_commit_interval,
                    broker_pid, duration=args.warmup_run,
                )  # fmt: skip
                results["latency"]["warmup_run"] = {
                    k: warm[k] for k in ("rate", "commit_interval_ms", "latency_ms", "producer")
                }
            intervals = list(dict.fromkeys([*args.commit_intervals]))

            def measure(rate: int, interval: int) -> dict[str, Any]:
                for attempt in (1, 2):
                    try:
                        return latency_run(
                            bootstrap, workdir, args, workload, rate, interval, broker_pid
                        )
                    except RunnerDied as exc:
                        log(f"  attempt {attempt}: {exc}")
                        error = str(exc)
                return {"rate": rate, "commit_interval_ms": interval, "error": error}

            for interval in intervals:
                runs.append(measure(args.rate, interval))
            if args.ladder_commit_interval not in intervals:
                runs.append(measure(args.rate, args.ladder_commit_interval))
            for rate in args.ladder:
                run = measure(rate, args.ladder_commit_interval)
                runs.append(run)
                if "error" in run or not (run["runner_kept_up"] and run["producer_kept_pace"]):
                    break
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
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {args.json} ({results['total_seconds']} s in all)")
    if "latency" in results and results["latency"]["runs"]:
        write_svg(results, args.svg)
        log(f"wrote {args.svg}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == PRODUCE_MODE:
        sys.exit(produce_main(sys.argv[2:]))
    sys.exit(main())
