"""``fraudcep_flink.kafka_io`` against a real broker: ``python -m fraudcep_flink.kafka_io --copy``
reads whole records through the project's Java deserializer (``record_source``, bounded) and
writes them through its Java serializer (``output_sink``, exactly once, checkpoints on) with
headers saying where each was read. Every byte of key, value and header comes back as put in,
and the partitions, offsets and timestamps are the broker's.

Runs in the Flink virtualenv as a subprocess (:mod:`support.pyflink`), with the jar
``scripts/flink-setup.sh`` builds beside the connector.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from support.pyflink import run_module

pytestmark = [pytest.mark.pyflink, pytest.mark.kafka]

# (partition, key, value, timestamp or None for the producer's)
RECORDS: list[tuple[int, bytes | None, bytes | None, int | None]] = [
    (0, b"user-1", json.dumps({"payment_id": "p1", "amount": 12.5}).encode(), None),
    (1, b"user-2", b"\x80\xff\x00\xfe not UTF-8 \xc3\x28", None),
    (0, b"user-3", b"", None),
    (1, b"user-4", None, None),  # a tombstone
    (0, None, b'{"no": "key"}', None),
    (1, b"\x00\xff\x01\x80", b"binary key", None),
    (0, b"stamped", b"old", 1_234_567_890_123),
]


def _poll_until(consumer: Consumer, want: int, deadline_s: float) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and len(got) < want:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        got.append(msg)
    return got


def test_copy_keeps_every_byte_and_says_where_it_was_read(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    tin, tout = f"io-in-{run}", f"io-out-{run}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = admin.create_topics(
        [
            NewTopic(tin, 2, 1, config={"retention.ms": "-1"}),
            NewTopic(tout, 1, 1, config={"retention.ms": "-1"}),
        ]
    )
    for future in created.values():
        future.result(60)

    delivered: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered.append(msg)

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for partition, key, value, stamp in RECORDS:
        extra = {"timestamp": stamp} if stamp is not None else {}
        producer.produce(
            tin, value=value, key=key, partition=partition, on_delivery=on_delivery, **extra
        )
    assert producer.flush(60) == 0
    assert len(delivered) == len(RECORDS)
    # what the broker has: (partition, offset) -> (key, value, timestamp)
    sent = {(m.partition(), m.offset()): (m.key(), m.value(), m.timestamp()[1]) for m in delivered}
    assert sent[(0, 3)][2] == 1_234_567_890_123

    done = run_module(
        "fraudcep_flink.kafka_io",
        *("--copy", "--bootstrap", kafka_bootstrap, "--input", tin, "--output", tout),
        *("--checkpoint-ms", "500"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"check-{run}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(tout, 0, 0)])
    try:
        got = _poll_until(consumer, len(RECORDS), 60)
        extra = consumer.poll(2.0)  # and nothing more
        assert extra is None or extra.error(), extra.value()
    finally:
        consumer.close()
    assert len(got) == len(RECORDS)

    seen = set()
    for msg in got:
        headers = msg.headers() or []
        names = [name for name, _ in headers]
        assert names == [
            "fraudcep.topic",
            "fraudcep.partition",
            "fraudcep.offset",
            "fraudcep.timestamp",
        ], headers
        values = {name: raw for name, raw in headers}
        assert values["fraudcep.topic"] == tin.encode()
        where = (int(values["fraudcep.partition"]), int(values["fraudcep.offset"]))
        key, value, stamp = sent[where]
        assert msg.key() == key, where
        assert msg.value() == value, where
        assert values["fraudcep.timestamp"] == str(stamp).encode(), where
        # the element's timestamp (the input record's) is the output record's
        assert msg.timestamp()[1] == stamp, where
        seen.add(where)
    assert seen == set(sent)
