"""Helpers for tests of ``fraudcep run`` against the real broker.

Runners are real processes (``python -m fraudcep_cli run ...``) so that tests can kill them
with SIGKILL at any instruction, or runners on a thread of the test process
(:class:`InProcess`) where a test needs to patch the engine or the runner; topics are read
back with ``read_committed`` consumers, which is what the exactly-once promise is about.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import attrs
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from fraudcep import Alert, Engine, Rule
from fraudcep_kafka.config import RunnerConfig
from fraudcep_kafka.runner import Runner
from fraudcep_kafka.topics import create_topics
from support.paths import REPO

REPO = REPO


@attrs.define
class Job:
    """The topics, group and checkpoint directory of one test's runners."""

    bootstrap: str
    workdir: Path
    tag: str = attrs.Factory(lambda: uuid.uuid4().hex[:8])
    partitions: int = 4

    @property
    def input_topic(self) -> str:
        return f"payments-{self.tag}"

    @property
    def alerts_topic(self) -> str:
        return f"alerts-{self.tag}"

    @property
    def shadow_alerts_topic(self) -> str:
        return f"shadow-alerts-{self.tag}"

    @property
    def dlq_topic(self) -> str:
        return f"dlq-{self.tag}"

    @property
    def rules_topic(self) -> str:
        return f"rules-{self.tag}"

    @property
    def lists_topic(self) -> str:
        return f"lists-{self.tag}"

    @property
    def group(self) -> str:
        return f"group-{self.tag}"

    @property
    def checkpoints(self) -> Path:
        return self.workdir / "checkpoints"

    @property
    def topics(self) -> list[str]:
        return [
            self.input_topic, self.alerts_topic, self.shadow_alerts_topic, self.dlq_topic,
            self.rules_topic, self.lists_topic,
        ]  # fmt: skip

    def create_input(self, config: Mapping[str, str] | None = None) -> None:
        """The input topic, with topic ``config`` (e.g. ``message.timestamp.type``)."""
        create_topics(
            {"bootstrap.servers": self.bootstrap},
            {self.input_topic: (self.partitions, dict(config or {}))},
        )

    def delete(self) -> None:
        """Delete the job's topics."""
        delete_topics(self.bootstrap, self.topics)

    def base_settings(self, instance: str) -> dict[str, Any]:
        """The job's own runner options: its topics, group, checkpoints and endpoint."""
        return {
            "bootstrap": self.bootstrap,
            "group-id": self.group,
            "instance-id": instance,
            "input-topic": self.input_topic,
            "alerts-topic": self.alerts_topic,
            "shadow-alerts-topic": self.shadow_alerts_topic,
            "dead-letter-topic": self.dlq_topic,
            "rules-topic": self.rules_topic,
            "lists-topic": self.lists_topic,
            "checkpoints": str(self.checkpoints),
            "metrics-address": "127.0.0.1:0",
            "log-format": "json",
        }

    def test_settings(self) -> dict[str, Any]:
        """Runner options that make tests quick (a benchmark's job leaves them out)."""
        return {
            "idle-timeout": "1s",
            "commit-interval": "50ms",
            "checkpoint-interval": "1s",
            # chains stay short: tests see compactions, and restores of compacted bases
            "compact-after-deltas": "3",
            "session-timeout": "6s",
        }

    def runner_args(self, instance: str, **options: Any) -> list[str]:
        """``fraudcep run`` arguments: the job's settings, :meth:`test_settings`, then
        ``options`` (``commit_interval="10ms"``; a list or tuple value repeats the option)."""
        settings: dict[str, Any] = {**self.base_settings(instance), **self.test_settings()}
        settings.update({k.replace("_", "-"): v for k, v in options.items()})
        args = ["run"]
        for key, value in settings.items():
            for one in value if isinstance(value, list | tuple) else [value]:
                args += [f"--{key}", str(one)]
        return args

    def start(self, instance: str = "r1", **options: Any) -> RunnerProcess:
        return RunnerProcess.start(
            self.runner_args(instance, **options), self.workdir / f"{instance}.log"
        )


@attrs.define
class RunnerProcess:
    """One ``fraudcep run`` process with its log file (which later runners with the same
    instance name append to: :meth:`log_lines` reads this runner's lines only)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    log_start: int = 0

    @classmethod
    def start(cls, args: Sequence[str], log_path: Path) -> Self:
        """Spawn ``fraudcep`` with ``args``. The child starts with SIGTERM blocked, as a
        careful supervisor starts it: ``fraudcep run`` unblocks it once its handler is in
        place, so a SIGTERM sent at any moment (even while the interpreter is starting) is a
        stop request, never the default action."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        start = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log, _sigterm_blocked():
            process = subprocess.Popen(
                [sys.executable, "-m", "fraudcep_cli", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return cls(process, log_path, start)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        with self.log_path.open("rb") as f:
            f.seek(self.log_start)
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"msg": line})
        return lines

    def wait_logged(self, message: str, timeout: float = 180.0, *, count: int = 1) -> None:
        wait_until(
            lambda: (
                sum(1 for x in self.log_lines() if x.get("msg") == message) >= count
                or self.process.poll() is not None
            ),
            timeout,
            f"{message!r} in {self.log_path}",
        )
        assert self.process.poll() is None, self.tail()

    def logged(self, message: str) -> dict[str, Any] | None:
        """The first log line of this runner with ``message``, if any."""
        return next((x for x in self.log_lines() if x.get("msg") == message), None)

    def wait_for(self, message: str, timeout: float = 180.0) -> dict[str, Any]:
        """The first log line with ``message``, waited for (AssertionError if the runner
        exits or the time is up first)."""
        self.wait_logged(message, timeout)
        line = self.logged(message)
        assert line is not None
        return line

    def metrics_url(self, timeout: float = 180.0) -> str:
        """The runner's ``/metrics`` address (from its "metrics endpoint up" log line)."""
        return str(self.wait_for("metrics endpoint up", timeout)["url"])

    def problems(self) -> list[dict[str, Any]]:
        """This runner's warning and error log lines."""
        return [x for x in self.log_lines() if x.get("level") in {"warning", "error"}]

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 180.0) -> int:
        """SIGTERM and wait; a runner that does not stop in time is killed (exit -9)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return self.process.wait()

    def tail(self, n: int = 40) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self.log_start)
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-n:])


class Supervisor:
    """Restarts a runner that exits on its own with a failure code, the way a Docker restart
    policy or systemd would (``on-failure``), and counts the restarts."""

    def __init__(self, job: Job, instance: str = "r1", **options: Any) -> None:
        self.job, self.instance, self.options = job, instance, options
        self.runner = job.start(instance, **options)
        self.exits: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            code = self.runner.process.poll()
            if code is not None and code != 0 and not self._stop.is_set():
                self.exits.append(code)
                self.runner = self.job.start(self.instance, **self.options)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.runner.terminate()


def runner_config(job: Job, **changes: Any) -> RunnerConfig:
    """The configuration of an in-process runner of ``job`` (the settings of
    :meth:`Job.runner_args`, without the rules and lists topics and the metrics endpoint)."""
    settings: dict[str, Any] = {
        "bootstrap": job.bootstrap,
        "group_id": job.group,
        "instance_id": f"in-process-{job.tag}",
        "input_topic": job.input_topic,
        "alerts_topic": job.alerts_topic,
        "shadow_alerts_topic": job.shadow_alerts_topic,
        "dead_letter_topic": job.dlq_topic,
        "rules_topic": None,
        "lists_topic": None,
        "checkpoints": str(job.checkpoints),
        "metrics_address": None,
        "idle_timeout": 1_000,
        "commit_interval": 50,
        "checkpoint_interval": 1_000,
        "session_timeout": 6_000,
    }
    settings.update(changes)
    return RunnerConfig(**settings)


class InProcess:
    """A runner on a thread of the test process; :meth:`stop` returns its exit code."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.runner.run()

    def stop(self) -> int | None:
        self.runner.stop()
        self.thread.join(180)
        assert not self.thread.is_alive(), "the runner did not stop"
        return self.code

    def sample(self, name: str, **labels: str) -> float:
        value = self.runner.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@contextlib.contextmanager
def in_process_runners() -> Iterator[Callable[[Runner], InProcess]]:
    """A function that starts a runner on a thread (:class:`InProcess`); the runners still
    running at the end are stopped. For a test module's ``in_process`` fixture."""
    started: list[InProcess] = []

    def start(runner: Runner) -> InProcess:
        started.append(InProcess(runner))
        return started[-1]

    try:
        yield start
    finally:
        for one in started:
            if one.thread.is_alive():
                one.stop()


@contextlib.contextmanager
def _sigterm_blocked() -> Iterator[None]:
    """SIGTERM blocked in the calling thread (a child inherits the mask across exec)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


T = TypeVar("T")
KAFKA_CALL_DEADLINE_S = 120.0
"""How long a test helper retries a broker call that times out (a loaded machine)."""


def retrying(call: Callable[[], T], what: str, deadline_s: float = KAFKA_CALL_DEADLINE_S) -> T:
    """``call()``, retried while it raises KafkaException, until ``deadline_s`` has passed."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {deadline_s} s: {exc}") from exc
            time.sleep(0.5)


def _high_watermark(consumer: Any, topic: str, partition: int) -> int:
    tp = TopicPartition(topic, partition)
    low_high = retrying(
        lambda: consumer.get_watermark_offsets(tp, timeout=10), f"the end of {topic}[{partition}]"
    )
    return int(low_high[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    n = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        n += 1
    assert producer.flush(60) == 0
    assert not failures, failures[:5]
    return n


def payment_records(payments: Iterable[Mapping[str, Any]]) -> Iterable[tuple[bytes, bytes]]:
    for p in payments:
        yield p["user_id"].encode(), json.dumps(p).encode()


def read_topic(bootstrap: str, topic: str, *, timeout: float = 120.0) -> list[Any]:
    """Every record a ``read_committed`` reader sees in ``topic`` now, in partition order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = retrying(lambda: consumer.list_topics(topic, timeout=10), f"listing {topic}")
        partitions = sorted(metadata.topics[topic].partitions)
        tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(tps)
        # For read_committed the end is the last stable offset: what the position reaches.
        ends = {p: _high_watermark(consumer, topic, p) for p in partitions}
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    records.append(msg)
            positions = {tp.partition: tp.offset for tp in consumer.position(tps)}
            if all(ends[p] == 0 or positions.get(p, -1) >= ends[p] for p in partitions):
                break
        else:
            raise AssertionError(f"could not read {topic} to its end ({ends})")
        return records
    finally:
        consumer.close()


def alert_ids(bootstrap: str, topic: str) -> list[str]:
    return [json.loads(m.value())["alert_id"] for m in read_topic(bootstrap, topic)]


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = retrying(
            lambda: consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=10
            ),
            f"the committed offsets of {group}",
        )
        return {tp.partition: tp.offset for tp in got}
    finally:
        consumer.close()


def committed_references(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, tuple[int, str | None]]:
    """Each partition's committed offset and the checkpoint id its metadata names."""
    from fraudcep_kafka.runner import parse_reference

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = retrying(
            lambda: consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=10
            ),
            f"the committed offsets of {group}",
        )
        return {tp.partition: (tp.offset, parse_reference(tp.metadata)) for tp in got}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        return {p: _high_watermark(consumer, topic, p) for p in range(partitions)}
    finally:
        consumer.close()


def wait_caught_up(job: Job, timeout: float = 240.0) -> None:
    """Until the group's committed offsets reach the end of every input partition."""
    ends = end_offsets(job.bootstrap, job.input_topic, job.partitions)

    def caught_up() -> bool:
        committed = committed_offsets(job.bootstrap, job.group, job.input_topic, job.partitions)
        # an empty partition has nothing to commit
        return all(committed[p] == end or end == 0 for p, end in ends.items())

    wait_until(caught_up, timeout, f"group {job.group} to commit {ends}")


def expected_alerts(job: Job, rules: Sequence[Rule]) -> list[Alert]:
    """What one engine per input partition finds, over the records as the topic holds them
    (the reference the runner must reproduce exactly once)."""
    from fraudcep.payments.payment import InvalidRecord, decode_payment

    by_partition: dict[int, list[Any]] = defaultdict(list)
    for msg in read_topic(job.bootstrap, job.input_topic):
        with contextlib.suppress(InvalidRecord):  # the runner dead-letters these
            by_partition[msg.partition()].append(decode_payment(msg.value()))
    alerts: list[Alert] = []
    for payments in by_partition.values():
        engine = Engine(rules, timestamp="ts", event_id="payment_id")
        alerts += engine.process_many(payments)
        alerts += engine.flush()
    return alerts


def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(topics), operation_timeout=30).values():
        with contextlib.suppress(Exception):  # already gone is fine
            future.result(30)
