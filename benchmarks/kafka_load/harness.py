"""The broker, one job's topics and runner, and the group's offsets: the Kafka tests'
harness (``tests/support``) with what the load test adds (CPU time, lag sampling)."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attrs
from confluent_kafka import Consumer, TopicPartition
from support.kafka_broker import running_broker
from support.kafka_runner import Job, RunnerProcess, wait_until

from .util import children_cpu_seconds, cpu_seconds, log

LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
"""Input topic config: record timestamps are the broker's append time (see latency.py)."""


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path) -> Iterator[tuple[str, int | None]]:
    """The bootstrap address (and the broker's pid when it was started here)."""
    if bootstrap:
        yield bootstrap, None
        return
    directory = workdir / "kafka"
    log(f"starting a broker with scripts/kafka.sh in {directory}")
    with running_broker(directory) as address:
        pid_text = (directory / "kafka.pid").read_text().strip()
        yield address, int(pid_text) if pid_text.isdigit() else None
    log("broker stopped")


@attrs.define
class BenchJob(Job):
    """A test job with the runner's own defaults (no test settings) and ``bench-`` names;
    its ``workdir`` is its own (checkpoints, runner logs) and goes with :meth:`delete`."""

    @property
    def input_topic(self) -> str:
        return f"bench-payments-{self.tag}"

    @property
    def alerts_topic(self) -> str:
        return f"bench-alerts-{self.tag}"

    @property
    def dlq_topic(self) -> str:
        return f"bench-dlq-{self.tag}"

    @property
    def rules_topic(self) -> str:
        return f"bench-rules-{self.tag}"

    @property
    def group(self) -> str:
        return f"bench-{self.tag}"

    @classmethod
    def under(cls, bootstrap: str, root: Path, partitions: int) -> BenchJob:
        job = cls(bootstrap, root, partitions=partitions)
        job.workdir = root / job.tag
        return job

    def test_settings(self) -> dict[str, Any]:
        return {}

    def start_runner(
        self, commit_interval_ms: int, extra: Sequence[str], name: str = "runner"
    ) -> BenchRunner:
        args = self.runner_args(
            "bench", topic_partitions=self.partitions, commit_interval=f"{commit_interval_ms}ms"
        )
        return BenchRunner.start([*args, *extra], self.workdir / f"{name}.log")

    def delete(self) -> None:
        super().delete()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RunnerDied(Exception):
    """The runner process ended during a measurement (e.g. killed from outside)."""

    def __init__(self, runner: RunnerProcess) -> None:
        self.code = runner.process.returncode
        super().__init__(
            f"the runner exited with code {self.code}; its log ends:\n{runner.tail(8)}"
        )


@attrs.define
class BenchRunner(RunnerProcess):
    """A runner process, with its CPU time and the waits the load test needs."""

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise RunnerDied(self)

    def wait_assigned(self, partitions: int, timeout: float = 120.0) -> None:
        def assigned() -> bool:
            self.alive()
            return any(
                x.get("msg") == "partitions assigned" and len(x.get("partitions", [])) == partitions
                for x in self.log_lines()
            )

        wait_until(assigned, timeout, f"{partitions} partitions assigned")

    def wait_started(self, timeout: float = 120.0) -> str:
        """Until the runner started; its metrics URL."""
        try:
            url = self.metrics_url(timeout)
            self.wait_logged("runner started", timeout)
        except AssertionError:
            self.alive()
            raise
        return url

    def cpu(self) -> float | None:
        return cpu_seconds(self.process.pid)

    def children_cpu(self) -> float:
        return children_cpu_seconds(self.process.pid)

    def compacting(self) -> bool:
        """Whether a compaction the runner started has not ended yet."""
        lines = self.log_lines()
        started = sum(1 for x in lines if x.get("msg") == "compacting checkpoints")
        ended = sum(1 for x in lines if x.get("msg") == "checkpoint chain compacted")
        return started > ended

    def stop(self, timeout: float = 60.0) -> int:
        return self.terminate(timeout)


class Offsets:
    """The group's committed offsets and the topic's end offsets, read without joining it."""

    def __init__(self, job: Job) -> None:
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
    """Samples (monotonic time, end - committed, end) once per ``interval`` in a thread."""

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
