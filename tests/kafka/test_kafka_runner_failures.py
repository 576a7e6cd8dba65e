"""The Kafka runner never stalls on one bad record, against the real broker: a payment the
rules cannot read, a record whose processing raises, a record that leaves a state that cannot
be checkpointed, a payment nested 600 deep (the issue's reproduction) are dead-lettered with
a reason and the key goes on; a checkpoint store that keeps failing ends the runner with its
documented exit code instead of a silent loop.

Most runners here run in the test's process (``Runner.run`` in a thread), so that a test hook
can make the engine raise for one payment id (monkeypatched ``Engine`` methods), the way a
bug triggered by data would."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.kafka_runner import (
    InProcess,
    Job,
    alert_ids,
    in_process_runners,
    produce,
    read_topic,
    runner_config,
    wait_caught_up,
    wait_until,
)

from fraudcep import Engine
from fraudcep.payments.default_rules import default_rules
from fraudcep.rules import load_rules
from fraudcep.runtime.checkpoint import Checkpoint
from fraudcep_kafka.checkpoints import DirectoryCheckpointStore
from fraudcep_kafka.runner import EXIT_OK, EXIT_STATE, Runner

pytestmark = pytest.mark.kafka

T = 1_700_000_000_000
USER = "u-poison"
POISON = "poison-1"


@pytest.fixture
def job(kafka_bootstrap: str, tmp_path: Path) -> Job:
    j = Job(kafka_bootstrap, tmp_path)
    j.create_input()
    return j


@pytest.fixture
def in_process() -> Iterator[Callable[[Runner], InProcess]]:
    with in_process_runners() as start:
        yield start


def pay(n: int, ts: int, amount: float, **extra: Any) -> dict[str, Any]:
    return {
        "payment_id": f"p-{n}",
        "user_id": USER,
        "card_id": "c-1",
        "merchant": "m1",
        "country": "DE",
        "amount": amount,
        "currency": "EUR",
        "status": "approved",
        "ts": ts,
        **extra,
    }


def burst(first: int, t: int, middle: dict[str, Any]) -> list[dict[str, Any]]:
    """Three payments over 2000 (one alert of high-value-3-in-5m) with ``middle`` among
    them, and a small payment long after them that moves the partition's event time on."""
    return [
        pay(first, t, 2500.0),
        middle,
        pay(first + 1, t + 10_000, 2600.0),
        pay(first + 2, t + 20_000, 2700.0),
        pay(first + 3, t + 600_000, 1.0),
    ]


def send(job: Job, payments: Sequence[dict[str, Any]]) -> None:
    """All under one record key: one partition, so one event time."""
    produce(
        job.bootstrap, job.input_topic, [(USER.encode(), json.dumps(p).encode()) for p in payments]
    )


def reference(payments: Sequence[dict[str, Any]]) -> list[str]:
    engine = Engine(default_rules(), timestamp="ts", event_id="payment_id")
    return sorted(a.alert_id for a in engine.process_many(payments))


def _poison_at(events: list[Any]) -> int:
    """The index of the poison payment among ``events`` (their length: none)."""
    for i, event in enumerate(events):
        if isinstance(event, dict) and event.get("payment_id") == POISON:
            return i
    return len(events)


def dead(job: Job) -> list[dict[str, Any]]:
    out = []
    for msg in read_topic(job.bootstrap, job.dlq_topic):
        headers = {k: v.decode() for k, v in msg.headers()}
        out.append({**headers, "value": msg.value()})
    return out


def wait_alerts(job: Job, want: Sequence[str]) -> None:
    wait_until(
        lambda: sorted(alert_ids(job.bootstrap, job.alerts_topic)) == sorted(want),
        180,
        f"the alerts {sorted(want)}",
    )


def test_a_record_whose_processing_raises_is_dead_lettered_after_three_failures(
    job: Job, monkeypatch: pytest.MonkeyPatch, in_process: Callable[[Runner], InProcess]
) -> None:
    real, real_many = Engine.process, Engine.process_many

    def process(self: Engine, event: Any) -> Any:
        if isinstance(event, dict) and event.get("payment_id") == POISON:
            raise RuntimeError("injected failure")
        return real(self, event)

    def process_many(self: Engine, events: Any, **options: Any) -> Any:
        events = list(events)
        done = real_many(self, events[: _poison_at(events)], **options)
        if _poison_at(events) < len(events):  # half-way through the batch, as a bug would
            raise RuntimeError("injected failure")
        return done

    monkeypatch.setattr(Engine, "process", process)
    monkeypatch.setattr(Engine, "process_many", process_many)
    poison = pay(0, T + 5_000, 10.0, payment_id=POISON)
    first = burst(1, T, poison)
    send(job, first)
    runner = in_process(Runner(runner_config(job)))
    clean = [p for p in first if p is not poison]
    wait_alerts(job, reference(clean))
    wait_caught_up(job)
    [letter] = dead(job)
    assert letter["fraudcep.reason"] == "processing_failed"
    assert letter["fraudcep.detail"].startswith(
        "failed 3 times the same way: process: RuntimeError: injected failure"
    )
    assert json.loads(letter["value"])["payment_id"] == POISON
    assert runner.sample("fraudcep_record_failures_total", stage="process") == 3
    # the first failure came in a batch: then the partition went one record at a time
    assert runner.sample("fraudcep_record_failures_total", stage="batch") >= 1

    # the key goes on: its next payments are detected
    second = burst(10, T + 1_000_000, pay(9, T + 1_005_000, 5.0))
    send(job, second)
    wait_alerts(job, reference([*clean, *second]))
    assert runner.stop() == EXIT_OK
    assert len(dead(job)) == 1


def test_a_record_that_breaks_the_checkpoint_is_found_and_dead_lettered(
    job: Job, monkeypatch: pytest.MonkeyPatch, in_process: Callable[[Runner], InProcess]
) -> None:
    real_process, real_snapshot, real_delta = Engine.process, Engine.snapshot, Engine.snapshot_delta
    real_many = Engine.process_many

    def process(self: Engine, event: Any) -> Any:
        if isinstance(event, dict) and event.get("payment_id") == POISON:
            self.__dict__["holds_poison"] = True
        return real_process(self, event)

    def process_many(self: Engine, events: Any, **options: Any) -> Any:
        events = list(events)
        if _poison_at(events) < len(events):
            self.__dict__["holds_poison"] = True
        return real_many(self, events, **options)

    def snapshot(self: Engine) -> bytes:
        if self.__dict__.get("holds_poison"):
            raise RecursionError("injected: maximum recursion depth exceeded")
        return real_snapshot(self)

    def snapshot_delta(self: Engine) -> bytes:
        if self.__dict__.get("holds_poison"):
            raise RecursionError("injected: maximum recursion depth exceeded")
        return real_delta(self)

    monkeypatch.setattr(Engine, "process", process)
    monkeypatch.setattr(Engine, "process_many", process_many)
    monkeypatch.setattr(Engine, "snapshot", snapshot)
    monkeypatch.setattr(Engine, "snapshot_delta", snapshot_delta)
    poison = pay(0, T + 5_000, 10.0, payment_id=POISON)
    first = burst(1, T, poison)
    send(job, first)
    runner = in_process(Runner(runner_config(job)))
    clean = [p for p in first if p is not poison]
    wait_caught_up(job)
    wait_alerts(job, reference(clean))
    [letter] = dead(job)
    assert letter["fraudcep.reason"] == "processing_failed"
    assert "state: RecursionError" in letter["fraudcep.detail"]
    assert runner.sample("fraudcep_checkpoint_failures_total", stage="snapshot") >= 1
    assert runner.sample("fraudcep_record_failures_total", stage="state") == 3
    second = burst(10, T + 1_000_000, pay(9, T + 1_005_000, 5.0))
    send(job, second)
    wait_alerts(job, reference([*clean, *second]))
    assert runner.stop() == EXIT_OK


DEVICE_RULES = """
- id: device-burst
  key: device_id
  within: 5m
  skip: skip_past_last_event
  pattern:
    - name: first
      where: amount > 2000
      times: 3
"""


def test_payments_the_rules_cannot_read_are_dead_lettered_not_a_crash(
    job: Job, in_process: Callable[[Runner], InProcess]
) -> None:
    payments = [pay(i, T + i * 10_000, 2500.0, device_id="d-1") for i in range(5)]
    del payments[1]["device_id"]  # a valid payment, but the rule is keyed by it
    payments.append(pay(9, T + 900_000, 1.0, device_id="d-1"))
    send(job, payments)
    rules = [d for d in load_rules(DEVICE_RULES)]
    runner = in_process(Runner(runner_config(job), rules=rules))
    wait_caught_up(job)
    engine = Engine([d.rule for d in rules], timestamp="ts", event_id="payment_id")
    want = [a.alert_id for a in engine.process_many([p for p in payments if "device_id" in p])]
    wait_alerts(job, want)
    [letter] = dead(job)
    assert letter["fraudcep.reason"] == "bad_event"
    assert "device_id" in letter["fraudcep.detail"]
    assert runner.stop() == EXIT_OK


class _FailingStore(DirectoryCheckpointStore):
    """A directory store whose saves fail ``failures`` times (None: always)."""

    failures: int | None = None

    def save(self, checkpoint: Checkpoint, *, state_key: str | bytes | None = None) -> None:
        if self.failures is None or self.failures > 0:
            if self.failures is not None:
                self.failures -= 1
            raise OSError("injected: the store is down")
        super().save(checkpoint, state_key=state_key)


def test_a_checkpoint_store_that_keeps_failing_ends_the_runner_with_exit_code_5(
    job: Job, in_process: Callable[[Runner], InProcess]
) -> None:
    send(job, burst(1, T, pay(0, T + 5_000, 10.0)))
    store = _FailingStore(job.checkpoints)
    runner = in_process(Runner(runner_config(job, max_checkpoint_failures=3), store=store))
    runner.thread.join(180)
    assert runner.code == EXIT_STATE
    assert runner.sample("fraudcep_checkpoint_failures_total", stage="save") == 3
    assert alert_ids(job.bootstrap, job.alerts_topic) == []  # nothing committed without it


def test_a_checkpoint_store_that_recovers_is_retried_with_back_off(
    job: Job, in_process: Callable[[Runner], InProcess]
) -> None:
    payments = burst(1, T, pay(0, T + 5_000, 10.0))
    send(job, payments)
    store = _FailingStore(job.checkpoints)
    store.failures = 2
    runner = in_process(Runner(runner_config(job), store=store))
    wait_caught_up(job)
    wait_alerts(job, reference(payments))
    assert runner.sample("fraudcep_checkpoint_failures_total", stage="save") == 2
    assert runner.stop() == EXIT_OK


def test_a_payment_nested_600_deep_is_dead_lettered_and_the_key_goes_on(job: Job) -> None:
    """The issue's reproduction through ``fraudcep run``: the payment is refused (by the
    decoder's depth bound, or as a record that fails), the other payments of its key still
    alert, and the runner stops cleanly."""
    deep = pay(0, T + 5_000, 5000.0, x=json.loads("[" * 600 + "]" * 600))
    payments = burst(1, T, deep)
    send(job, payments)
    runner = job.start()
    try:
        wait_caught_up(job)
        clean = [p for p in payments if p is not deep]
        wait_alerts(job, reference(clean))
        wait_until(lambda: len(dead(job)) == 1, 180, "the dead letter")
        [letter] = dead(job)
    finally:
        runner.process.send_signal(signal.SIGTERM)
        code = runner.process.wait(180)
    assert code == 0, runner.tail()
    assert letter["fraudcep.reason"] in {"too_deep", "processing_failed"}
    assert json.loads(letter["value"])["payment_id"] == "p-0"
