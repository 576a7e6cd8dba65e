"""``fraudcep run`` against the real broker: detection, exactly-once under crashes, broker
restarts and rebalances, dead letters, live rules, metrics, shutdown and fencing.

The reference for "exactly once" is :func:`kafka_runner.expected_alerts`: one engine per
input partition over the records as the topic holds them. The committed alert ids must be
that set, each id once, whatever happened to the runners in between.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.kafka_broker import restart_broker, running_broker
from support.kafka_runner import (
    Job,
    RunnerProcess,
    Supervisor,
    alert_ids,
    committed_offsets,
    expected_alerts,
    payment_records,
    produce,
    read_topic,
    wait_caught_up,
    wait_until,
)

from fraudcep import Engine
from fraudcep.payments.default_rules import default_rules
from fraudcep.payments.payment import InvalidRecord, decode_payment
from fraudcep.payments.synthetic import PaymentGenerator, match_alerts
from fraudcep.testing.records import malformed_payment_records

pytestmark = pytest.mark.kafka


@pytest.fixture
def job(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Job]:
    j = Job(kafka_bootstrap, tmp_path)
    j.create_input()
    yield j


def _alerts(job: Job) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in read_topic(job.bootstrap, job.alerts_topic)]


class _AlertView:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.rule_id = doc["rule_id"]
        self.events = doc["events"]


def _metrics(runner: RunnerProcess) -> dict[str, float]:
    """Scrape the runner's Prometheus endpoint (its address is in the log)."""
    [url] = [x["url"] for x in runner.log_lines() if x.get("msg") == "metrics endpoint up"]
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values: dict[str, float] = Counter()
    for line in text.splitlines():
        m = re.match(r"^(fraudcep_[a-z_]+?)(?:_total)?(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            values[m.group(1) + (m.group(2) or "")] += float(m.group(3))
            values[m.group(1)] += float(m.group(3)) if m.group(2) else 0.0
    return values


def test_end_to_end_every_scenario_alerted_once(job: Job) -> None:
    payments, scenarios = PaymentGenerator(seed=11, users=1_500, rate=100.0).generate(30_000)
    produce(job.bootstrap, job.input_topic, payment_records(payments))
    runner = job.start()
    try:
        wait_caught_up(job)
        wait_until(lambda: len(_alerts(job)) >= len(scenarios), 180, "alerts of every scenario")
        metrics: dict[str, float] = {}

        def counted() -> bool:  # every payment processed, every alert counted is committed
            now = _metrics(runner)  # a Counter: 0 for what is not there yet
            metrics.update(now)
            processed, alerted = now["fraudcep_records_processed"], now["fraudcep_alerts"]
            return processed == len(payments) and alerted == len(_alerts(job))

        wait_until(counted, 180, "every payment processed and its alerts committed")
    finally:
        code = runner.terminate()  # commits whatever is left: what is read next is final
    assert code == 0, runner.tail()
    alerts = _alerts(job)
    detection = match_alerts([_AlertView(a) for a in alerts], scenarios)
    assert len(scenarios) >= 10
    assert detection.missed == ()
    assert detection.unexpected == ()
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    assert sorted(a["alert_id"] for a in alerts) == sorted(
        a.alert_id for a in expected_alerts(job, default_rules())
    )
    assert read_topic(job.bootstrap, job.dlq_topic) == []
    assert metrics["fraudcep_records_consumed"] == len(payments)
    assert metrics["fraudcep_records_processed"] == len(payments)
    assert 0 < metrics["fraudcep_alerts"] <= len(alerts)  # idle partitions may release more


def test_kill_9_ten_times_loses_and_repeats_no_alert(job: Job) -> None:
    """SIGKILL the runner at random moments while payments stream in; restart it each time.
    The committed alerts are exactly those of the uninterrupted reference."""
    payments, _ = PaymentGenerator(
        seed=12, users=3_000, rate=200.0, scenarios_per_10k=12.0
    ).generate(110_000)
    rng = random.Random(12)
    chunks = [payments[i : i + 2_000] for i in range(0, len(payments), 2_000)]

    def feed() -> None:  # about 10k payments/s, while the runner is killed and restarted
        for chunk in chunks:
            produce(job.bootstrap, job.input_topic, payment_records(chunk))
            time.sleep(0.2)

    producer = threading.Thread(target=feed)
    producer.start()
    lives: list[RunnerProcess] = []
    try:
        while producer.is_alive() or len(lives) < 11:
            runner = job.start(checkpoint_interval="300ms")
            lives.append(runner)
            runner.wait_logged("partitions assigned")
            time.sleep(rng.uniform(0.05, 1.0))  # somewhere in reading, processing, committing
            runner.kill9()
        producer.join()
        runner = job.start(checkpoint_interval="300ms")
        lives.append(runner)
        wait_caught_up(job, timeout=180)
        expected = sorted(a.alert_id for a in expected_alerts(job, default_rules()))
        wait_until(lambda: len(alert_ids(job.bootstrap, job.alerts_topic)) >= len(expected), 180,
                   "the last alerts")  # fmt: skip
    finally:
        producer.join()
        code = lives[-1].terminate()  # commits whatever is left: what is read next is final
    assert code == 0, lives[-1].tail()
    got = alert_ids(job.bootstrap, job.alerts_topic)
    assert len(lives) - 1 >= 10  # kills
    assert len(payments) >= 100_000
    assert len(expected) > 100
    duplicates = [i for i, n in Counter(got).items() if n > 1]
    assert duplicates == []
    assert sorted(got) == expected
    # the lives after the first really restored checkpoints and re-read input to catch up
    restored = [x for r in lives[1:] for x in r.log_lines() if x.get("msg") == "partition restored"]
    assert len(restored) >= 4 * 10
    assert sum(x["replay"] for x in restored) > 0
    # ... of delta chains (checkpoints every 300 ms, compacted after three deltas)
    assert sum(x["deltas"] > 0 for x in restored) >= 10
    assert _logged(lives, "compacting checkpoints")


def _logged(runners: list[RunnerProcess], message: str) -> list[dict[str, Any]]:
    return [x for r in runners for x in r.log_lines() if x.get("msg") == message]


def _whole_log(job: Job, instance: str, message: str) -> list[dict[str, Any]]:
    """The lines logging ``message`` of every runner named ``instance`` so far."""
    lines = (job.workdir / f"{instance}.log").read_text(errors="replace").splitlines()
    return [x for x in map(_json_or_none, lines) if x is not None and x.get("msg") == message]


def _json_or_none(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def test_broker_restart_mid_run(tmp_path: Path) -> None:
    """The broker goes down and comes back (data kept) while the runner works: the alerts
    are still exactly the reference's. A broker of its own, so the restart disturbs no other
    test. The runner runs under a restart-on-failure supervisor, as in production: a Kafka
    call that librdkafka leaves blocked past its timeout makes it exit on purpose (code 4)."""
    with running_broker(tmp_path / "broker") as bootstrap:
        job = Job(bootstrap, tmp_path)
        job.create_input()
        payments, _ = PaymentGenerator(seed=13, users=2_000, rate=150.0).generate(40_000)
        half = len(payments) // 2
        produce(job.bootstrap, job.input_topic, payment_records(payments[:half]))
        supervisor = Supervisor(job)
        try:
            wait_caught_up(job)
            restart_broker(tmp_path / "broker")
            produce(job.bootstrap, job.input_topic, payment_records(payments[half:]))
            wait_caught_up(job, timeout=240)
            expected = sorted(a.alert_id for a in expected_alerts(job, default_rules()))
            wait_until(lambda: len(alert_ids(job.bootstrap, job.alerts_topic)) >= len(expected),
                       180, "the last alerts")  # fmt: skip
        finally:
            code = supervisor.stop()
        got = alert_ids(job.bootstrap, job.alerts_topic)  # final: the runner has stopped
    assert code == 0
    assert set(supervisor.exits) <= {4}, supervisor.exits  # only the deliberate exit
    assert len(expected) > 10
    assert sorted(got) == expected
    assert _whole_log(job, "r1", "checkpoint chain compacted")  # delta chains, compacted


@pytest.mark.parametrize("while_", ["idle", "committing"])
def test_a_fenced_static_consumer_is_replaced_and_the_runner_goes_on(job: Job, while_: str) -> None:
    """A fatal consumer error must not leave the runner polling a dead consumer. Here another
    consumer joins with the runner's group.instance.id, which fences the runner's static
    member (as librdkafka's own rejoin does after a broker outage longer than the session
    timeout): the runner replaces its consumer, takes its partitions back and goes on, and the
    alerts are exactly the reference's.

    ``idle``: nothing to commit, the runner learns it from the consumer (a fatal error event
    among the records). ``committing``: payments stream in, its transactions' offsets are
    refused as fenced first."""
    payments, _ = PaymentGenerator(seed=19, users=1_000, rate=150.0).generate(20_000)
    half = len(payments) // 2
    produce(job.bootstrap, job.input_topic, payment_records(payments[:half]))
    # idle: no idle-time watermark moves, so no transaction at all once caught up and
    # checkpointed (and the alerts are those the records release, without the ones an idle
    # partition's watermark would)
    runner = job.start("r1", **({"idle_timeout": "1h"} if while_ == "idle" else {}))
    intruder = Consumer({
        "bootstrap.servers": job.bootstrap, "group.id": job.group, "group.instance.id": "r1",
        "session.timeout.ms": 6_000, "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })  # fmt: skip
    feeder: threading.Thread | None = None
    try:
        wait_caught_up(job)
        if while_ == "idle":
            _wait_quiet(runner)
        else:

            def feed() -> None:  # transactions in flight when the runner is fenced
                for i in range(half, len(payments), 500):
                    produce(job.bootstrap, job.input_topic, payment_records(payments[i : i + 500]))
                    time.sleep(0.3)

            feeder = threading.Thread(target=feed)
            feeder.start()
        intruder.subscribe([job.input_topic])

        def replaced() -> bool:
            intruder.poll(0.1)  # joins, and is fenced in turn when the runner rejoins
            return bool(_logged([runner], "replacing the consumer after a fatal error"))

        wait_until(replaced, 120, "the runner to replace its fenced consumer")
        if feeder is not None:
            feeder.join()
        else:
            produce(job.bootstrap, job.input_topic, payment_records(payments[half:]))
        wait_caught_up(job, timeout=180)
        if while_ == "idle":
            expected = _released_by_records(job)
        else:
            expected = sorted(a.alert_id for a in expected_alerts(job, default_rules()))
        wait_until(lambda: len(alert_ids(job.bootstrap, job.alerts_topic)) >= len(expected), 180,
                   "the last alerts")  # fmt: skip
    finally:
        if feeder is not None:
            feeder.join()
        code = runner.terminate()
        with contextlib.suppress(Exception):  # fenced by the runner's new consumer
            intruder.close()
    assert code == 0, runner.tail()
    got = alert_ids(job.bootstrap, job.alerts_topic)  # final: the runner has stopped
    assert len(expected) > 5
    assert sorted(got) == expected
    assigned = [x for x in runner.log_lines() if x.get("msg") == "partitions assigned"]
    assert assigned[-1]["partitions"] == [0, 1, 2, 3]
    if while_ == "idle":  # learnt from the consumer itself, not from a refused commit
        [replacement, *_] = _logged([runner], "replacing the consumer after a fatal error")
        assert "_FATAL" in replacement["error"], replacement


def _wait_quiet(runner: RunnerProcess, seconds: float = 3.0) -> None:
    """Until the runner has committed no transaction for ``seconds``."""
    key = 'fraudcep_transactions{outcome="committed"}'
    last = [-1.0, time.monotonic()]

    def quiet() -> bool:
        committed = _metrics(runner)[key]
        if committed != last[0]:
            last[:] = [committed, time.monotonic()]
        return time.monotonic() - last[1] >= seconds

    wait_until(quiet, 120, "the runner to have nothing left to commit")


def _released_by_records(job: Job) -> list[str]:
    """The reference's alert ids without those only an idle partition's watermark releases."""
    by_partition: dict[int, list[Any]] = {}
    for msg in read_topic(job.bootstrap, job.input_topic):
        by_partition.setdefault(msg.partition(), []).append(decode_payment(msg.value()))
    ids: list[str] = []
    for records in by_partition.values():
        engine = Engine(default_rules(), timestamp="ts", event_id="payment_id")
        ids += [a.alert_id for a in engine.process_many(records)]
    return sorted(ids)


def test_rebalance_second_runner_joins_then_leaves(job: Job) -> None:
    payments, _ = PaymentGenerator(seed=14, users=2_000, rate=150.0).generate(60_000)
    slices = [payments[: len(payments) // 3], payments[len(payments) // 3 : 2 * len(payments) // 3],
              payments[2 * len(payments) // 3 :]]  # fmt: skip
    first = job.start("r1")
    second: RunnerProcess | None = None
    try:
        produce(job.bootstrap, job.input_topic, payment_records(slices[0]))
        wait_caught_up(job)
        second = job.start("r2")
        # both runners own partitions after the rebalance
        second.wait_logged("partitions assigned")
        wait_until(
            lambda: any(x.get("msg") == "partitions assigned" and x.get("partitions")
                        for x in second.log_lines()),  # type: ignore[union-attr]
            60, "partitions for the second runner",
        )  # fmt: skip
        produce(job.bootstrap, job.input_topic, payment_records(slices[1]))
        wait_caught_up(job)
        assert second.terminate() == 0, second.tail()  # leaves: its partitions move back
        produce(job.bootstrap, job.input_topic, payment_records(slices[2]))
        wait_caught_up(job, timeout=180)
        expected = sorted(a.alert_id for a in expected_alerts(job, default_rules()))
        wait_until(lambda: len(alert_ids(job.bootstrap, job.alerts_topic)) >= len(expected), 180,
                   "the last alerts")  # fmt: skip
    finally:
        code = first.terminate()
        if second is not None:
            second.terminate()
    assert code == 0, first.tail()
    got = alert_ids(job.bootstrap, job.alerts_topic)  # final: the runners have stopped
    assert len(expected) > 20
    assert sorted(got) == expected
    owners = [x["partitions"] for x in first.log_lines() if x.get("msg") == "partitions assigned"]
    assert owners[0] == [0, 1, 2, 3] and owners[-1] == [0, 1, 2, 3]
    assert any(len(o) < 4 for o in owners), "the first runner gave partitions away"
    # the partitions moved with delta chains (whether either runner compacts a chain before
    # the end depends on timing here: the kill and chain tests require compaction)
    restored = _logged([first, second], "partition restored")
    assert any(x["deltas"] > 0 for x in restored)


@settings(max_examples=1, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])  # fmt: skip
@given(bad=st.lists(malformed_payment_records(), min_size=300, max_size=300))
def test_malformed_records_go_to_the_dead_letter_topic(job: Job, bad: list[bytes]) -> None:
    payments, _ = PaymentGenerator(seed=15, users=500).generate(3_000)
    good = [json.dumps(p).encode() for p in payments]
    rng = random.Random(15)
    records: list[tuple[bytes | None, bytes | None]] = [(b"u", v) for v in good]
    for value in bad:
        records.insert(rng.randrange(len(records) + 1), (b"x", value))
    records.insert(7, (b"tombstone", None))
    produce(job.bootstrap, job.input_topic, records)
    runner = job.start()
    try:
        wait_caught_up(job)
        dead = read_topic(job.bootstrap, job.dlq_topic)
        metrics = _metrics(runner)
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    inputs = {(m.partition(), m.offset()): m for m in read_topic(job.bootstrap, job.input_topic)}
    assert len(dead) == len(bad) + 1
    for msg in dead:
        headers = {k: v.decode() for k, v in msg.headers()}
        source = inputs[(int(headers["fraudcep.partition"]), int(headers["fraudcep.offset"]))]
        assert headers["fraudcep.topic"] == job.input_topic
        assert msg.value() == source.value()
        with pytest.raises(InvalidRecord) as info:
            decode_payment(source.value())
        assert headers["fraudcep.reason"] == info.value.reason
        assert headers["fraudcep.detail"]
    consumed = metrics["fraudcep_records_consumed"]
    assert consumed == len(records)
    assert (
        consumed
        == metrics["fraudcep_records_processed"] + metrics["fraudcep_records_dead_lettered"]
    )
    assert metrics["fraudcep_records_processed"] == len(good)


def test_rules_topic_changes_rules_live(job: Job) -> None:
    """A rule published to the rules topic is picked up by a running runner."""
    runner = job.start()
    try:
        runner.wait_logged("partitions assigned")
        rule = {
            "id": "tiny-twice",
            "version": 1,
            "key": "user_id",
            "within": "1m",
            "skip": "skip_past_last_event",
            "pattern": [{"name": "tiny", "where": "amount < 1.5", "times": 2}],
        }
        produce(job.bootstrap, job.rules_topic, [(b"tiny-twice", json.dumps(rule).encode())])
        runner.wait_logged("rules applied", count=4)
        base = {"user_id": "u-live", "card_id": "c-1", "merchant": "m1", "country": "DE",
                "currency": "EUR", "status": "approved"}  # fmt: skip
        # Two payments and nothing after them: the second one is only released when the
        # partition's event time moves on by itself (idle timeout), so this also shows that
        # a quiet partition does not hold its last match back.
        payments = [
            {**base, "payment_id": f"live-{i}", "amount": 1.0, "ts": 1_700_000_000_000 + i}
            for i in range(2)
        ]
        produce(job.bootstrap, job.input_topic, payment_records(payments))
        wait_until(lambda: len(_alerts(job)) >= 1, 120, "the new rule's alert")
        [alert] = _alerts(job)
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    assert alert["rule_id"] == "tiny-twice"
    assert [e["payment_id"] for e in alert["events"]["tiny"]] == ["live-0", "live-1"]


def test_sigterm_commits_and_checkpoints_everything(job: Job) -> None:
    payments, _ = PaymentGenerator(seed=16, users=500).generate(5_000)
    produce(job.bootstrap, job.input_topic, payment_records(payments))
    runner = job.start(checkpoint_interval="1h", idle_timeout="1h")
    wait_caught_up(job)
    assert runner.terminate() == 0, runner.tail()
    committed = committed_offsets(job.bootstrap, job.group, job.input_topic, job.partitions)
    for partition, offset in committed.items():
        files = sorted(
            (job.checkpoints / job.group / job.input_topic / str(partition)).glob("*.ckpt")
        )
        assert [int(f.name.split("-")[0]) for f in files][-1] == offset
    # a restart restores each partition with nothing to re-read
    runner = job.start(checkpoint_interval="1h", idle_timeout="1h")
    try:
        runner.wait_logged("partition restored", count=job.partitions)
        replays = [x["replay"] for x in runner.log_lines() if x.get("msg") == "partition restored"]
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    assert replays == [0] * job.partitions


def test_missing_checkpoint_stops_with_a_clear_error(job: Job) -> None:
    payments, _ = PaymentGenerator(seed=17, users=300).generate(2_000)
    produce(job.bootstrap, job.input_topic, payment_records(payments))
    runner = job.start()
    wait_caught_up(job)
    assert runner.terminate() == 0, runner.tail()
    for path in job.checkpoints.rglob("*.ckpt"):
        path.unlink()
    runner = job.start()
    assert runner.process.wait(180) == 3
    errors = [x for x in runner.log_lines() if x.get("level") == "error"]
    assert errors and "--missing-checkpoint reset" in errors[-1]["msg"]
    runner = job.start(missing_checkpoint="reset")
    try:
        runner.wait_logged("checkpoint unusable: continuing with empty state", count=4)
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()


def test_second_runner_with_the_same_instance_id_fences_the_first(job: Job) -> None:
    first = job.start("same", static_membership="false")
    first.wait_logged("runner started")
    second = job.start("same", static_membership="false")
    try:
        second.wait_logged("runner started")
        payments, _ = PaymentGenerator(seed=18, users=300).generate(2_000)
        produce(job.bootstrap, job.input_topic, payment_records(payments))
        # the first runner's next transaction is fenced: it stops with the fatal exit code
        assert first.process.wait(180) == 3, first.tail()
        wait_caught_up(job)
    finally:
        second.terminate()
        first.terminate()
    errors = [x["msg"] for x in first.log_lines() if x.get("level") == "error"]
    assert any("fatal producer error" in e for e in errors), errors


def test_alerts_do_not_wait_for_the_commit_interval(job: Job) -> None:
    """With a one-minute commit interval, a transaction holding an alert is still committed
    right after the batch that produced it; one without alerts waits for the interval."""
    runner = job.start(commit_interval="60s", idle_timeout="1h")
    try:
        runner.wait_logged("partitions assigned")
        base = {"user_id": "u-fast", "card_id": "c-1", "merchant": "m1", "country": "DE",
                "currency": "EUR", "status": "approved"}  # fmt: skip
        quiet = [{**base, "user_id": "u-quiet", "payment_id": "q-0", "amount": 5.0,
                  "ts": 1_700_000_000_000}]  # fmt: skip
        produce(job.bootstrap, job.input_topic, payment_records(quiet))
        # three payments over 2000 within five minutes (the seed rule), and a small one
        # after them that moves the user's partition's event time past the third
        big = [{**base, "payment_id": f"big-{i}", "amount": 2500.0 + i,
                "ts": 1_700_000_000_000 + 1_000 * i} for i in range(3)]  # fmt: skip
        big.append({**base, "payment_id": "after", "amount": 1.0, "ts": 1_700_000_010_000})
        wait_until(
            lambda: _metrics(runner)["fraudcep_records_consumed"] >= 1, 120, "the quiet payment"
        )
        offsets = committed_offsets(job.bootstrap, job.group, job.input_topic, job.partitions)
        assert all(o < 0 for o in offsets.values())  # nothing committed: the interval runs
        sent = time.monotonic()
        produce(job.bootstrap, job.input_topic, payment_records(big))
        wait_until(lambda: len(_alerts(job)) >= 1, 50, "the alert")
        waited = time.monotonic() - sent
        metrics = _metrics(runner)
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    assert waited < 50  # below the 60 s interval, however loaded the machine
    assert [a["rule_id"] for a in _alerts(job)] == ["high-value-3-in-5m"]
    # the stages of the alert's latency: each observed once, together at most the wait
    stages = ("engine", "produce", "commit")
    for stage in stages:
        assert metrics[f'fraudcep_alert_stage_seconds_count{{stage="{stage}"}}'] == 1, stage
    spent = sum(metrics[f'fraudcep_alert_stage_seconds_sum{{stage="{s}"}}'] for s in stages)
    assert 0 < spent < waited
    # every record fetched: the quiet one and the four after it, each after it was produced
    assert metrics["fraudcep_fetch_delay_seconds_count"] == 5
    assert 0 <= metrics["fraudcep_fetch_delay_seconds_sum"] < 5 * 120
