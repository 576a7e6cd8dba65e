"""Whole Kafka records in and out of PyFlink jobs, bytes untouched.

PyFlink's Python API reads only a record's value (``set_value_only_deserializer``; with
``SimpleStringSchema`` bytes that are not UTF-8 are lost) and writes no headers. The fraudcep
jobs need both, like the Kafka runner (:mod:`fraudcep_kafka.runner`): alerts keyed by alert id
with ``fraudcep.rule`` headers, dead letters carrying the original record's key and value and
where it was read. So the (de)serialization is done by two Java classes,
``dev.fraudcep.flink.RawRecordDeserializationSchema`` and
``dev.fraudcep.flink.OutputRecordSerializationSchema`` (``adapters/fraudcep_flink/java``; the
jar ``scripts/flink-setup.sh`` builds beside the Kafka connector), set on PyFlink's builders.

- :data:`RAW_RECORD`: what :func:`record_source` gives, ``Row(topic, partition, offset,
  timestamp, key, value)``; ``timestamp`` is the record's (ms), -1 when it has none.
- :data:`OUTPUT_RECORD`: what a job emits into :func:`output_sink`, made by
  :func:`output_row`.

What crosses between Java and Python in thread mode (found by running
``python -m fraudcep_flink.kafka_io --copy``, see docs/flink.md "Kafka records in and out"):

- Java to Python: the ``RAW_RECORD`` row arrives as a :class:`~pyflink.common.Row` with its
  field names (``record.key`` works); ``byte[]`` (``Types.PRIMITIVE_ARRAY(Types.BYTE())``) as
  ``bytes``, every byte kept (non-UTF-8, ``b""``); Java ``null`` as ``None``; ``int`` and
  ``long`` as ``int``, ``String`` as ``str``.
- Python to Java: for ``PRIMITIVE_ARRAY(BYTE)`` only ``bytes`` (or ``None``) works:
  ``bytearray`` (a pemja ``PyObject``), a list of ints (an ``ArrayList``) and ``str`` fail
  with a ``ClassCastException`` in the sink; ``Types.BASIC_ARRAY(Types.BYTE())`` gives a
  ``Byte[]`` (fails too) and ``Types.PICKLED_BYTE_ARRAY()`` writes the pickle, not the bytes.
  ``Types.BASIC_ARRAY(Types.STRING())`` (or ``OBJECT_ARRAY``) takes a list or tuple of ``str``
  and gives a ``String[]`` (a ``None`` element is a null header value; an empty list, no
  headers), but ``None`` for the array fails in PyFlink's converter and ``Types.LIST`` gives
  an ``ArrayList``. A ``Row`` made with keyword arguments keeps their order.
  :func:`output_row` makes what works: ``bytes`` (converting a ``bytearray`` or
  ``memoryview``) and a list.

``python -m fraudcep_flink.kafka_io --copy --bootstrap HOST:PORT --input IN --output OUT``
copies a topic (from its start to its end when the job starts) record for record, key and
value unchanged, with ``fraudcep.topic``/``partition``/``offset``/``timestamp`` headers saying
where each was read, exactly once: a diagnosis of what a job sees and writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

from pyflink.common import Row, Types, WatermarkStrategy
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaSink,
    KafkaSource,
)
from pyflink.java_gateway import get_gateway

from fraudcep.runtime.output_records import HEADER_PREFIX, origin_headers
from fraudcep_flink.environment import local_environment

__all__ = [
    "OUTPUT_RECORD",
    "RAW_RECORD",
    "copy_topic",
    "output_row",
    "output_sink",
    "payment_time",
    "record_source",
    "where_read",
]

JAVA_PACKAGE = "dev.fraudcep.flink"

RAW_FIELDS = ["topic", "partition", "offset", "timestamp", "key", "value"]
RAW_RECORD = Types.ROW_NAMED(
    RAW_FIELDS,
    [
        Types.STRING(),
        Types.INT(),
        Types.LONG(),
        Types.LONG(),
        Types.PRIMITIVE_ARRAY(Types.BYTE()),
        Types.PRIMITIVE_ARRAY(Types.BYTE()),
    ],
)
"""A record as read: the type ``RawRecordDeserializationSchema.getProducedType()`` declares."""

OUTPUT_FIELDS = ["topic", "key", "value", "headers"]
OUTPUT_RECORD = Types.ROW_NAMED(
    OUTPUT_FIELDS,
    [
        Types.STRING(),
        Types.PRIMITIVE_ARRAY(Types.BYTE()),
        Types.PRIMITIVE_ARRAY(Types.BYTE()),
        Types.BASIC_ARRAY(Types.STRING()),
    ],
)
"""A record to write (``output_type`` of the function feeding :func:`output_sink`)."""


def _java(name: str, *args: Any) -> Any:
    """An instance of a class of the fraudcep jar (through the JVM PyFlink started)."""
    jvm = get_gateway().jvm
    cls = getattr(jvm, f"{JAVA_PACKAGE}.{name}")
    try:
        return cls(*args)
    except TypeError as exc:  # py4j: a JavaPackage, not a class
        raise RuntimeError(
            f"{JAVA_PACKAGE}.{name} is not on the class path: run scripts/flink-setup.sh and "
            "add its jar directory (FRAUDCEP_FLINK_JARS) to pipeline.jars"
        ) from exc


def record_source(
    bootstrap: str,
    topics: str | Sequence[str],
    *,
    group_id: str,
    bounded: bool = False,
    starting: Literal["earliest", "committed"] = "committed",
    properties: dict[str, str] | None = None,
) -> KafkaSource:
    """A source of :data:`RAW_RECORD` rows, reading only committed records (``read_committed``).

    ``starting="committed"`` resumes from the group's committed offsets (the earliest where
    it has none); a restored job starts from its checkpoint whatever this says. ``bounded``
    stops at the offsets the topics have when the job starts."""
    names = [topics] if isinstance(topics, str) else list(topics)
    if starting == "earliest":
        start = KafkaOffsetsInitializer.earliest()
    elif starting == "committed":
        start = KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    else:
        raise ValueError(f"starting must be 'earliest' or 'committed', not {starting!r}")
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(*names)
        .set_group_id(group_id)
        .set_starting_offsets(start)
    )
    if bounded:
        builder.set_bounded(KafkaOffsetsInitializer.latest())
    for name, value in {"isolation.level": "read_committed", **(properties or {})}.items():
        builder.set_property(name, value)
    # the Java deserializer in place of a value-only one (PyFlink has no setter for it)
    builder._j_builder.setDeserializer(_java("RawRecordDeserializationSchema"))
    return builder.build()


def payment_time(
    field: str, max_out_of_orderness_ms: int, *, idle_timeout_ms: int | None = None
) -> WatermarkStrategy:
    """Event time for a :func:`record_source`: the integer top-level ``field`` of each
    record's JSON value (``dev.fraudcep.flink.PaymentTimestampAssigner``, in Java, so that
    the source makes watermarks per partition), watermarks trailing the highest by
    ``max_out_of_orderness_ms`` (+1 ms), and with ``idle_timeout_ms`` a partition without
    records that long stops holding them back. A value without such a field has no event
    time (it moves no watermark)."""
    jvm = get_gateway().jvm
    j_strategy = (
        jvm.org.apache.flink.api.common.eventtime.WatermarkStrategy.forBoundedOutOfOrderness(
            jvm.java.time.Duration.ofMillis(max_out_of_orderness_ms)
        )
    )
    if idle_timeout_ms is not None:
        j_strategy = j_strategy.withIdleness(jvm.java.time.Duration.ofMillis(idle_timeout_ms))
    j_strategy = j_strategy.withTimestampAssigner(_java("PaymentTimestampAssigner", field))
    return WatermarkStrategy(j_strategy)


def output_sink(
    bootstrap: str,
    *,
    transactional_id_prefix: str,
    transaction_timeout_ms: int = 60000,
    properties: dict[str, str] | None = None,
    element_timestamps: bool = False,
) -> KafkaSink:
    """An exactly-once sink of :data:`OUTPUT_RECORD` rows: records are written in Kafka
    transactions committed at checkpoints (so checkpointing must be on); readers see them with
    ``isolation.level=read_committed``. ``transaction_timeout_ms`` must exceed the longest
    checkpoint plus restart (and stay within the broker's ``transaction.max.timeout.ms``).
    Records are stamped with the producer's clock, or with ``element_timestamps`` with their
    element's timestamp (event time can be far in the past: a topic's retention would delete
    such records at once)."""
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(transactional_id_prefix)
    )
    for name, value in {
        "transaction.timeout.ms": str(transaction_timeout_ms),
        **(properties or {}),
    }.items():
        builder.set_property(name, value)
    # set on the Java builder directly: PyFlink's set_record_serializer only wraps its own
    # schemas (and would route topics through a Python selector)
    builder._j_builder.setRecordSerializer(
        _java("OutputRecordSerializationSchema", element_timestamps)
    )
    return builder.build()


def output_row(
    topic: str,
    key: bytes | bytearray | memoryview | None,
    value: bytes | bytearray | memoryview | None,
    headers: Sequence[tuple[str, str]] = (),
) -> Row:
    """The :data:`OUTPUT_RECORD` row writing ``key``/``value`` to ``topic`` with ``headers``
    (name, value; values are written as UTF-8)."""
    flat: list[str] = []
    for name, text in headers:
        flat += (name, text)
    return Row(topic, _bytes(key), _bytes(value), flat)


def _bytes(data: bytes | bytearray | memoryview | None) -> bytes | None:
    """Only ``bytes`` cross into a Java ``byte[]`` (see the module's docstring)."""
    return data if data is None or type(data) is bytes else bytes(data)


def where_read(record: Row) -> list[tuple[str, str]]:
    """Headers saying where a :data:`RAW_RECORD` was read (as the Kafka runner's dead letters
    do): ``fraudcep.topic``, ``partition``, ``offset`` and ``timestamp`` (when it has one)."""
    timestamp = record.timestamp if record.timestamp >= 0 else None
    where = origin_headers(record.topic, record.partition, record.offset, timestamp)
    return [(name, value.decode()) for name, value in where]


class _Copy:
    """The copy job's map: a read record to the same key and value, with where it was read."""

    def __init__(self, output_topic: str, probe: bool) -> None:
        self.output_topic = output_topic
        self.probe = probe

    def __call__(self, record: Row) -> Row:
        headers = where_read(record)
        if self.probe:  # what Python got, for diagnosis
            got = [type(record).__name__] + [type(record[f]).__name__ for f in RAW_FIELDS]
            headers.append((HEADER_PREFIX + "python-types", ",".join(got)))
        return output_row(self.output_topic, record.key, record.value, headers)


def copy_topic(
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    *,
    checkpoint_ms: int = 1000,
    probe: bool = False,
) -> float:
    """Copy ``input_topic`` (bounded: to its end when the job starts) into ``output_topic``
    through :func:`record_source` and :func:`output_sink`; returns the wall time (s)."""
    env = local_environment()
    env.enable_checkpointing(checkpoint_ms)
    started = time.monotonic()
    source = record_source(
        bootstrap,
        input_topic,
        group_id=f"fraudcep-copy-{input_topic}",
        bounded=True,
        starting="earliest",
    )
    records = env.from_source(source, WatermarkStrategy.no_watermarks(), "records")
    copies = records.map(_Copy(output_topic, probe), output_type=OUTPUT_RECORD)
    copies.sink_to(
        output_sink(
            bootstrap,
            transactional_id_prefix=f"fraudcep-copy-{output_topic}",
            element_timestamps=True,
        )
    )
    env.execute("fraudcep-kafka-copy")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--copy", action="store_true", required=True, help="copy a topic")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--checkpoint-ms", type=int, default=1000)
    parser.add_argument(
        "--probe", action="store_true", help="add a header naming the Python types read"
    )
    args = parser.parse_args(argv)
    took = copy_topic(
        args.bootstrap,
        args.input,
        args.output,
        checkpoint_ms=args.checkpoint_ms,
        probe=args.probe,
    )
    print(json.dumps({"seconds": round(took, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
