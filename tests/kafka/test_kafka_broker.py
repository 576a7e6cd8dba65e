"""The real Kafka broker used by the Kafka tests works, transactions included.

Creates a topic, writes to it with a transactional producer (committed and aborted
transactions) and checks that a ``read_committed`` consumer sees exactly the committed
messages while a ``read_uncommitted`` one sees them all: the broker's transaction
coordinator works, as exactly-once processing needs.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.kafka

SENTINEL = b"end"


def _create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    futures[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while name not in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"topic {name} did not appear"
        time.sleep(0.1)


def _consume_until_sentinel(bootstrap: str, topic: str, isolation: str) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    values: list[bytes] = []
    try:
        # assign(), not subscribe(): no group rebalance to wait for.
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            value = msg.value()
            assert value is not None
            if value == SENTINEL:
                return values
            values.append(value)
        raise AssertionError(f"no sentinel within 30 s ({isolation}); got {values!r}")
    finally:
        consumer.close()


def test_transactions_read_committed(kafka_bootstrap: str) -> None:
    topic = f"fraudcep-test-{uuid.uuid4().hex[:12]}"
    _create_topic(kafka_bootstrap, topic)

    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "transactional.id": f"fraudcep-test-{uuid.uuid4().hex}",
            "enable.idempotence": True,
        }
    )
    producer.init_transactions(30)

    def transaction(values: list[bytes], *, commit: bool) -> None:
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value=value, key=b"k")
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    transaction([b"c1", b"c2", b"c3"], commit=True)
    transaction([b"a1", b"a2"], commit=False)
    transaction([b"c4", b"c5"], commit=True)
    # A committed marker last: on one partition, reaching it means everything before it was
    # delivered (or, for read_committed, deliberately skipped).
    transaction([SENTINEL], commit=True)

    committed = _consume_until_sentinel(kafka_bootstrap, topic, "read_committed")
    assert committed == [b"c1", b"c2", b"c3", b"c4", b"c5"]

    everything = _consume_until_sentinel(kafka_bootstrap, topic, "read_uncommitted")
    assert everything == [b"c1", b"c2", b"c3", b"a1", b"a2", b"c4", b"c5"]
