"""Delta checkpoint chains in ``fraudcep run``, against the real broker: a runner killed in
the middle of a chain or during a compaction restores exactly, pruning keeps exactly the
committed chains, a corrupt or missing delta of a committed chain is a corrupt checkpoint
(``--missing-checkpoint``), a chain that compaction finds broken is replaced by a full
checkpoint, a state key authenticates every checkpoint, and a restored partition whose
records are slow to arrive is not taken for an idle one.

The reference for "exactly once" is :func:`kafka_runner.expected_alerts` (one engine per
input partition over the records as the topic holds them)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.kafka_runner import (
    InProcess,
    Job,
    RunnerProcess,
    alert_ids,
    committed_references,
    expected_alerts,
    in_process_runners,
    payment_records,
    produce,
    read_topic,
    runner_config,
    wait_caught_up,
    wait_until,
)

from fraudcep import Engine
from fraudcep.payments.default_rules import default_rules
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep.runtime.checkpoint import DELTA, FULL, Checkpoint, CheckpointError, load_chain
from fraudcep_kafka import checkpoints as checkpoint_module
from fraudcep_kafka.checkpoints import DirectoryCheckpointStore
from fraudcep_kafka.config import RunnerConfig
from fraudcep_kafka.runner import EXIT_FATAL, EXIT_OK, Runner

pytestmark = pytest.mark.kafka

NO_COMPACTION = {"compact_after_deltas": "0", "compact_after_percent": "0"}


@pytest.fixture
def job(kafka_bootstrap: str, tmp_path: Path) -> Job:
    j = Job(kafka_bootstrap, tmp_path)
    j.create_input()
    return j


def chains(job: Job, state_key: str | None = None) -> dict[int, list[Checkpoint]]:
    """Every partition's committed chain, base first (partitions without one left out)."""
    store = DirectoryCheckpointStore(job.checkpoints)
    out = {}
    refs = committed_references(job.bootstrap, job.group, job.input_topic, job.partitions)
    for partition, (_offset, reference) in refs.items():
        if reference is not None:
            out[partition] = load_chain(
                store, job.group, job.input_topic, partition, reference, state_key=state_key
            )
    return out


def files(job: Job, partition: int) -> set[str]:
    directory = job.checkpoints / job.group / job.input_topic / str(partition)
    return {p.stem for p in directory.glob("*.ckpt")}


def path_of(job: Job, partition: int, checkpoint_id: str) -> Path:
    return job.checkpoints / job.group / job.input_topic / str(partition) / f"{checkpoint_id}.ckpt"


def expected(job: Job) -> list[str]:
    return sorted(a.alert_id for a in expected_alerts(job, default_rules()))


def wait_alerts(job: Job, want: list[str]) -> None:
    wait_until(lambda: len(alert_ids(job.bootstrap, job.alerts_topic)) >= len(want), 180,
               "the last alerts")  # fmt: skip


def logged(runner: RunnerProcess, message: str) -> list[dict[str, Any]]:
    return [x for x in runner.log_lines() if x.get("msg") == message]


def children(pid: int) -> set[int]:
    """The processes ``pid`` started (Linux)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(x) for x in (task / "children").read_text().split()}
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def feed(job: Job, payments: list[dict[str, Any]], pause: float = 0.15) -> threading.Thread:
    """Produce ``payments`` in chunks of 1,000 on a thread (the runner sees a stream)."""

    def run() -> None:
        for i in range(0, len(payments), 1_000):
            produce(job.bootstrap, job.input_topic, payment_records(payments[i : i + 1_000]))
            time.sleep(pause)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_kill_9_in_the_middle_of_chains_restores_them_exactly(job: Job) -> None:
    """The stream goes on while the runner is killed and restarted (a pause in it would let
    the partitions' event time follow the wall clock, which the reference does not do)."""
    payments, _ = PaymentGenerator(
        seed=41, users=1_500, rate=150.0, scenarios_per_10k=12.0
    ).generate(40_000)
    options = {"checkpoint_interval": "200ms", **NO_COMPACTION}
    runner = job.start(**options)
    producer = feed(job, payments, pause=0.25)
    try:
        wait_until(
            lambda: len(chains(job)) == job.partitions
            and all(len(c) >= 3 for c in chains(job).values()),
            180, "chains of at least two deltas on every partition",
        )  # fmt: skip
        runner.kill9()
        assert producer.is_alive(), "the stream ended before the chains grew"
        before = chains(job)
        runner = job.start(**options)
        producer.join()
        wait_caught_up(job)
        want = expected(job)
        wait_alerts(job, want)
    finally:
        producer.join()
        code = runner.terminate()
    assert code == 0, runner.tail()
    assert sorted(alert_ids(job.bootstrap, job.alerts_topic)) == want
    assert len(want) > 10
    restored = {x["partition"]: x for x in logged(runner, "partition restored")}
    for partition, chain in before.items():
        assert restored[partition]["checkpoint"] == chain[-1].checkpoint_id
        assert restored[partition]["deltas"] == len(chain) - 1 >= 2
        assert [c.kind for c in chain] == [FULL] + [DELTA] * (len(chain) - 1)


def test_a_kill_9_during_compactions_restores_exactly_and_ends_the_worker(job: Job) -> None:
    """Each life is killed as soon as it starts compacting (its worker process may not even
    have started): the worker dies with it, and the next life restores the chain."""
    payments, _ = PaymentGenerator(
        seed=42, users=1_500, rate=150.0, scenarios_per_10k=12.0
    ).generate(40_000)
    options = {"checkpoint_interval": "200ms", "compact_after_deltas": "2"}
    producer = feed(job, payments, pause=0.3)
    lives: list[RunnerProcess] = []
    try:
        while len(lives) < 4 or (producer.is_alive() and len(lives) < 12):
            runner = job.start(**options)
            lives.append(runner)
            runner.wait_logged("compacting checkpoints")
            workers = children(runner.process.pid)
            runner.kill9()  # a compaction is under way
            wait_until(lambda w=workers: not any(alive(p) for p in w), 60,  # type: ignore[misc]
                       "the compaction worker to die with the runner")  # fmt: skip
        producer.join()
        runner = job.start(**options)
        lives.append(runner)
        wait_caught_up(job)
        want = expected(job)
        wait_alerts(job, want)
    finally:
        producer.join()
        code = lives[-1].terminate()
    assert code == 0, lives[-1].tail()
    assert sorted(alert_ids(job.bootstrap, job.alerts_topic)) == want
    restored = [x for r in lives[1:] for x in logged(r, "partition restored")]
    assert len(restored) >= 4 * job.partitions
    assert any(x["deltas"] > 0 for x in restored)


def quiet_compactions(runner: RunnerProcess) -> bool:
    """Every compaction the runner started has ended, and none started in the last 2 s."""
    started = logged(runner, "compacting checkpoints")
    ended = logged(runner, "checkpoint chain compacted")
    if len(started) != len(ended):
        return False
    return not started or time.time() - _epoch(started[-1]["ts"]) > 2


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts).timestamp()


def test_pruning_keeps_exactly_the_committed_chains(job: Job) -> None:
    payments, _ = PaymentGenerator(seed=43, users=1_500, rate=150.0).generate(30_000)
    options = {"checkpoint_interval": "200ms", "compact_after_deltas": "3", "idle_timeout": "1h"}
    runner = job.start(**options)
    try:
        producer = feed(job, payments)
        producer.join()
        wait_caught_up(job)
        wait_until(lambda: quiet_compactions(runner), 120, "compactions to end")
        assert logged(runner, "checkpoint chain compacted")
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    committed = chains(job)
    assert set(committed) == set(range(job.partitions))
    for partition, chain in committed.items():
        assert files(job, partition) == {c.checkpoint_id for c in chain}, partition
    assert any(c[0].parent is not None for c in committed.values()), "a compacted base in use"
    # and a restart restores them, with nothing to re-read
    runner = job.start(**options)
    try:
        runner.wait_logged("partitions assigned")
        restored = logged(runner, "partition restored")
    finally:
        assert runner.terminate() == 0, runner.tail()
    assert sorted(x["replay"] for x in restored) == [0] * job.partitions


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_broken_delta_of_a_committed_chain_is_a_broken_checkpoint(job: Job, damage: str) -> None:
    payments, _ = PaymentGenerator(seed=44, users=800, rate=150.0).generate(12_000)
    options = {"checkpoint_interval": "200ms", "idle_timeout": "1h", **NO_COMPACTION}
    runner = job.start(**options)
    producer = feed(job, payments, pause=0.3)
    producer.join()
    wait_caught_up(job)
    assert runner.terminate() == 0, runner.tail()
    committed = chains(job)
    partition, chain = max(committed.items(), key=lambda item: len(item[1]))
    assert len(chain) >= 3, [len(c) for c in committed.values()]
    victim = path_of(job, partition, chain[1].checkpoint_id)  # a delta inside the chain
    if damage == "corrupt":
        blob = bytearray(victim.read_bytes())
        blob[len(blob) // 2] ^= 0x40
        victim.write_bytes(bytes(blob))
    else:
        victim.unlink()

    runner = job.start(**options)
    assert runner.process.wait(180) == EXIT_FATAL, runner.tail()
    [error] = [x for x in runner.log_lines() if x.get("level") == "error"][-1:]
    assert chain[-1].checkpoint_id in error["msg"]
    assert str(victim) in error["msg"]
    assert ("checksum mismatch" if damage == "corrupt" else "is missing") in error["msg"]
    assert "--missing-checkpoint reset" in error["msg"]

    runner = job.start(missing_checkpoint="reset", **options)
    try:
        runner.wait_logged("partitions assigned")
        unusable = logged(runner, "checkpoint unusable: continuing with empty state")
        restored = logged(runner, "partition restored")
    finally:
        assert runner.terminate() == 0, runner.tail()
    assert [x["partition"] for x in unusable] == [partition]
    assert sorted(x["partition"] for x in restored) == sorted(set(committed) - {partition})


def test_a_state_key_authenticates_every_checkpoint_of_the_chains(job: Job) -> None:
    key = "a-state-key-for-the-tests"
    payments, _ = PaymentGenerator(seed=45, users=800, rate=150.0).generate(10_000)
    options = {"checkpoint_interval": "200ms", "idle_timeout": "1h", "compact_after_deltas": "3"}
    runner = job.start(state_key=key, **options)
    producer = feed(job, payments, pause=0.3)
    producer.join()
    wait_caught_up(job)
    assert runner.terminate() == 0, runner.tail()
    assert key not in runner.log_path.read_text()
    committed = chains(job, state_key=key)
    assert any(len(c) > 1 for c in committed.values())
    for partition, chain in committed.items():
        for checkpoint in chain:
            blob = path_of(job, partition, checkpoint.checkpoint_id).read_bytes()
            with pytest.raises(CheckpointError, match="authenticated with a state key"):
                Checkpoint.from_bytes(blob)
    runner = job.start(**options)  # without the key: the checkpoints are refused
    assert runner.process.wait(180) == EXIT_FATAL, runner.tail()
    errors = [x["msg"] for x in runner.log_lines() if x.get("level") == "error"]
    assert any("none was given" in e for e in errors), errors
    runner = job.start(state_key=key, **options)
    try:
        runner.wait_logged("partitions assigned")
        restored = logged(runner, "partition restored")
    finally:
        assert runner.terminate() == 0, runner.tail()
    assert len(restored) == len(committed)


# -- in the test's process ---------------------------------------------------------------------


def config(job: Job, **changes: Any) -> RunnerConfig:
    return runner_config(job, **{"checkpoint_interval": 200, **changes})


@pytest.fixture
def in_process() -> Iterator[Callable[[Runner], InProcess]]:
    with in_process_runners() as start:
        yield start


def test_a_chain_compaction_finds_broken_is_replaced_by_a_full_checkpoint(
    job: Job, monkeypatch: pytest.MonkeyPatch, in_process: Callable[[Runner], InProcess]
) -> None:
    real = checkpoint_module.compact_chain
    calls: list[int] = []

    def compact_chain(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise CheckpointError("injected: a checkpoint of the chain is corrupt")
        return real(*args)

    monkeypatch.setattr(checkpoint_module, "compact_chain", compact_chain)
    payments, _ = PaymentGenerator(seed=46, users=800, rate=150.0).generate(12_000)
    runner = in_process(Runner(config(job, compaction="thread", compact_after_deltas=3)))
    producer = feed(job, payments, pause=0.3)
    producer.join()
    wait_caught_up(job)
    want = expected(job)
    wait_alerts(job, want)
    wait_until(lambda: runner.sample("fraudcep_checkpoints_total", kind="compacted") >= 1, 120,
               "a compaction after the failed one")  # fmt: skip
    assert runner.stop() == EXIT_OK
    assert sorted(alert_ids(job.bootstrap, job.alerts_topic)) == want
    assert runner.sample("fraudcep_checkpoint_failures_total", stage="compact") == 1
    # the first checkpoint of each partition, and one more for the chain found broken
    assert runner.sample("fraudcep_checkpoints_total", kind="full") == job.partitions + 1
    assert runner.sample("fraudcep_checkpoint_pause_max_seconds") > 0


def test_a_restored_partition_slow_to_get_its_records_is_not_idle(
    job: Job, monkeypatch: pytest.MonkeyPatch, in_process: Callable[[Runner], InProcess]
) -> None:
    """After a restore, a partition's records may take longer than the idle timeout to
    arrive (a loaded machine, a slow broker). Its event time must not move on meanwhile:
    that would make them late and lose their matches."""
    first, rest = _stream()
    send = [(b"u-slow", json.dumps(p).encode()) for p in first]
    produce(job.bootstrap, job.input_topic, send)
    runner = in_process(Runner(config(job)))
    wait_caught_up(job)
    assert runner.stop() == EXIT_OK
    produce(job.bootstrap, job.input_topic, [(b"u-slow", json.dumps(p).encode()) for p in rest])

    real_fetch = Runner._fetch
    started: list[float] = []
    held: list[Any] = []

    def slow_fetch(self: Runner, batch_size: int, timeout: float) -> list[Any]:
        got = real_fetch(self, batch_size, timeout)  # assigns and restores the partitions
        if self.assigned and not started:
            started.append(time.monotonic())
        if not started or time.monotonic() - started[0] < 4.0:  # four idle timeouts
            held.extend(got)
            return []
        got, held[:] = [*held, *got], []
        return got

    monkeypatch.setattr(Runner, "_fetch", slow_fetch)
    runner = in_process(Runner(config(job)))
    wait_caught_up(job)
    engine = Engine(default_rules(), timestamp="ts", event_id="payment_id")
    want = sorted(a.alert_id for a in engine.process_many([*first, *rest]))
    wait_until(lambda: sorted(alert_ids(job.bootstrap, job.alerts_topic)) == want, 120,
               "the alerts of the whole stream")  # fmt: skip
    assert runner.stop() == EXIT_OK
    assert read_topic(job.bootstrap, job.dlq_topic) == []  # nothing late


def _stream() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Payments of one user: two over 2000 with a window (and its timer) open when the
    first runner stops, then the third, a second later in event time."""
    t = 1_700_000_000_000
    base = {"user_id": "u-slow", "card_id": "c-1", "merchant": "m1", "country": "DE",
            "currency": "EUR", "status": "approved"}  # fmt: skip

    def pay(n: int, at: int, amount: float) -> dict[str, Any]:
        return {**base, "payment_id": f"s-{n}", "amount": amount, "ts": t + at}

    first = [pay(0, 0, 2500.0), pay(1, 1_000, 2600.0)]
    rest = [pay(2, 2_000, 2700.0), pay(3, 2_500, 10.0), pay(4, 900_000, 10.0)]
    return first, rest


def test_a_backlog_of_new_keys_is_taken_in_short_deltas_and_exactly(
    job: Job, in_process: Callable[[Runner], InProcess]
) -> None:
    """With a tiny pause goal every partition's records are taken in slices, held back while
    its checkpoint is written, and checkpointed in many small deltas: the alerts are still
    exactly the reference's."""
    payments, _ = PaymentGenerator(
        seed=47, users=6_000, rate=150.0, scenarios_per_10k=12.0
    ).generate(20_000)
    produce(job.bootstrap, job.input_topic, payment_records(payments))
    runner = in_process(Runner(config(job, checkpoint_pause_goal=1, checkpoint_interval=60_000)))
    wait_caught_up(job)
    want = expected(job)
    wait_alerts(job, want)
    assert runner.stop() == EXIT_OK
    assert sorted(alert_ids(job.bootstrap, job.alerts_topic)) == want
    assert len(want) > 10
    deltas = runner.sample("fraudcep_checkpoints_total", kind="delta")
    assert deltas >= 20, deltas  # only at shutdown without the goal (a one-minute interval)
    assert runner.sample("fraudcep_records_processed_total") == len(payments)
