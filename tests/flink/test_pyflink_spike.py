"""The PyFlink spikes (``fraudcep_flink.spike``, ``fraudcep_flink.kafka_spike``) on a local
mini-cluster in thread mode: the engine in a keyed broadcast function, its state in keyed
``ValueState``, driven by Flink's watermarks and event-time timers, gives the core engine's
alerts id for id, from a collection and between Kafka topics (alerts committed exactly once).

They run in the Flink virtualenv as subprocesses (:mod:`support.pyflink`): skipped without
it, a failure in CI. Each job takes seconds of start-up (a JVM and a mini-cluster).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from support.pyflink import run_module

from fraudcep import Engine
from fraudcep.payments.default_rules import default_rules
from fraudcep.payments.synthetic import PaymentGenerator

pytestmark = pytest.mark.pyflink


@pytest.mark.parametrize("parallelism", [1, 2])
def test_spike_gives_the_core_engines_alerts(parallelism: int, tmp_path: Path) -> None:
    done = run_module(
        "fraudcep_flink.spike",
        *("-n", "4000", "--parallelism", str(parallelism)),
        *("--jitter-ms", "2000", "--bound-ms", "2000"),
        cwd=tmp_path,
    )
    assert done.stdout.strip(), f"no result (exit {done.returncode}):\n{done.stderr[-4000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"], result
    assert done.returncode == 0, done.stderr[-4000:]
    assert result["core_alerts"] > 5, result
    # watermarks and timers closed windows while the input went on, not only the final one
    assert result["alerts_before_final_watermark"] > 0, result
    assert result["late"] == 0, result


@pytest.mark.kafka
@pytest.mark.parametrize("failure", [False, True], ids=["plain", "task-failure"])
def test_kafka_spike_commits_the_core_engines_alerts_once(
    failure: bool, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With ``failure``: the keyed function raises once, at its 24,000th element of 32,000
    (checkpoints every 500 ms), the job restarts from its last checkpoint (keyed state
    restored) and still commits every alert exactly once."""
    n = 16000 if failure else 4000
    payments = [
        dict(p)
        for p in PaymentGenerator(
            seed=11, users=200, jitter_ms=2000, safe_noise=False, scenarios_per_10k=50
        ).payments(n)
    ]
    engine = Engine(default_rules(), event_id="payment_id", max_out_of_orderness=2000)
    want = sorted(a.alert_id for a in [*engine.process_many(payments), *engine.flush()])
    assert len(want) > 5

    run = uuid.uuid4().hex[:8]
    tin, tout = f"flink-payments-{run}", f"flink-alerts-{run}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    # generated payments carry old timestamps: time-based retention would delete them
    created = admin.create_topics(
        [NewTopic(t, 1, 1, config={"retention.ms": "-1"}) for t in (tin, tout)]
    )
    for future in created.values():
        future.result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for p in payments:
        producer.produce(tin, json.dumps(p).encode())
    assert producer.flush(30) == 0

    flag = tmp_path / "failed"
    inject = ("--fail-after", "24000", "--fail-flag", str(flag)) if failure else ()
    done = run_module(
        "fraudcep_flink.kafka_spike",
        *("--bootstrap", kafka_bootstrap, "--input", tin, "--output", tout),
        *("--checkpoint-ms", "500", *inject),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert flag.exists() == failure

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"check-{run}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(tout, 0, 0)])
    got: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(got) < len(want):
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            got.append(json.loads(msg.value())["alert_id"])
        # and nothing more after them
        extra = consumer.poll(2.0)
        assert extra is None or extra.error(), extra.value()
    finally:
        consumer.close()
    assert sorted(got) == want
