"""The event a Lambda Kafka event source (Amazon MSK or self-managed Kafka) hands a function,
and the partial batch response it may answer with.

The event, as AWS documents it::

    {"eventSource": "aws:kafka" | "SelfManagedKafka", "eventSourceArn": ...,
     "bootstrapServers": "...",
     "records": {"<topic>-<partition>": [
         {"topic": ..., "partition": 0, "offset": 15, "timestamp": 1545084650987,
          "timestampType": "CREATE_TIME", "key": "<base64>", "value": "<base64>",
          "headers": [{"<name>": [<byte>, ...]}]}, ...]}}

``key`` and ``value`` may be absent (no key; a tombstone). :func:`parse_kafka_event` refuses
an event that is not of this shape at all (:class:`KafkaEventError`), and turns each record
into a :class:`KafkaRecord` or, when the record itself is malformed (bad base64, a field of
the wrong type), a :class:`BadRecord` naming the reason, so that the caller can dead-letter
it instead of failing the whole batch.

Partial batch response. AWS documents one for Kafka event sources ("Configuring error
handling controls for Kafka event sources": ``ReportBatchItemFailures`` in the mapping's
``FunctionResponseTypes``, provisioned mode only). The identifier of a failed record below is
the one AWS Powertools for Lambda (Python) produces for Kafka: the record's ``records`` key
and its offset. Lambda is taken to resume each named partition from its lowest named offset,
as it does for Kinesis (:func:`batch_response`)::

    {"batchItemFailures": [{"itemIdentifier": {"partition": "payments-3", "offset": 15}}]}

Without ``ReportBatchItemFailures`` the answer is ignored and the batch counts as done.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from fraudcep.errors import FraudcepError
from fraudcep.payments.payment import json_kind

__all__ = [
    "KAFKA_EVENT_SOURCES",
    "BadRecord",
    "KafkaBatch",
    "KafkaEventError",
    "KafkaRecord",
    "batch_response",
    "parse_kafka_event",
]

KAFKA_EVENT_SOURCES: Final = ("aws:kafka", "SelfManagedKafka")


class KafkaEventError(FraudcepError, ValueError):
    """An invocation event that is not a Kafka event source's batch."""


@attrs.frozen
class KafkaRecord:
    """One Kafka record of a batch, its key and value decoded from base64."""

    partition_key: str
    """The ``records`` key it was listed under, ``"<topic>-<partition>"``."""
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@attrs.frozen
class BadRecord:
    """A record of the batch that could not be read; where it is, as far as it says."""

    partition_key: str
    index: int
    """Its position in the ``records`` list of ``partition_key``."""
    reason: str
    """``"bad_record"`` (a field missing or of the wrong type) or ``"bad_base64"``."""
    detail: str
    raw: Any
    """The record as the event gave it."""
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@attrs.frozen
class KafkaBatch:
    """A parsed Kafka event: the readable records, in event order, and the others."""

    source: str
    source_arn: str | None
    records: tuple[KafkaRecord, ...]
    bad: tuple[BadRecord, ...]


def parse_kafka_event(event: Any) -> KafkaBatch:
    """The records of a Kafka event source's invocation event (see the module docstring)."""
    if not isinstance(event, Mapping):
        raise KafkaEventError(f"a Kafka event is a JSON object, got {json_kind(event)}")
    source = event.get("eventSource")
    if source not in KAFKA_EVENT_SOURCES:
        raise KafkaEventError(
            f"not a Kafka event: eventSource is {source!r:.80}, expected one of "
            f"{', '.join(KAFKA_EVENT_SOURCES)}"
        )
    batches = event.get("records")
    if not isinstance(batches, Mapping):
        got = "missing" if batches is None else json_kind(batches)
        raise KafkaEventError(
            f'a Kafka event has "records", an object of "<topic>-<partition>" -> list; {got}'
        )
    arn = event.get("eventSourceArn")
    records: list[KafkaRecord] = []
    bad: list[BadRecord] = []
    for partition_key, items in batches.items():
        if not isinstance(items, list):
            raise KafkaEventError(
                f"records[{partition_key!r:.80}] should be a list of records, "
                f"got {json_kind(items)}"
            )
        for index, raw in enumerate(items):
            parsed = _record(str(partition_key), index, raw)
            if isinstance(parsed, KafkaRecord):
                records.append(parsed)
            else:
                bad.append(parsed)
    return KafkaBatch(
        str(source), arn if isinstance(arn, str) else None, tuple(records), tuple(bad)
    )


def _record(partition_key: str, index: int, raw: Any) -> KafkaRecord | BadRecord:
    def bad(reason: str, detail: str) -> BadRecord:
        return BadRecord(
            partition_key,
            index,
            reason,
            detail,
            raw,
            topic if isinstance(topic, str) else None,
            partition if _is_int(partition) else None,
            offset if _is_int(offset) else None,
        )

    topic: Any = None
    partition: Any = None
    offset: Any = None
    if not isinstance(raw, Mapping):
        return bad("bad_record", f"a record is a JSON object, got {json_kind(raw)}")
    topic, partition, offset = raw.get("topic"), raw.get("partition"), raw.get("offset")
    for name, value, valid in (
        ("topic", topic, isinstance(topic, str) and bool(topic)),
        ("partition", partition, _is_int(partition) and partition >= 0),
        ("offset", offset, _is_int(offset) and offset >= 0),
    ):
        if not valid:
            return bad("bad_record", f"{name}: expected {_EXPECTED[name]}, got {_show(value)}")
    if f"{topic}-{partition}" != partition_key:
        return bad(
            "bad_record",
            f"the record is of {topic}-{partition} but listed under {partition_key!r:.80}",
        )
    timestamp = raw.get("timestamp")
    if timestamp is not None and not _is_int(timestamp):
        return bad("bad_record", f"timestamp: expected an integer, got {_show(timestamp)}")
    decoded: dict[str, bytes | None] = {}
    for name in ("key", "value"):
        text = raw.get(name)
        if text is None:
            decoded[name] = None
        elif not isinstance(text, str):
            return bad("bad_record", f"{name}: expected base64 text, got {_show(text)}")
        else:
            try:
                decoded[name] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                return bad("bad_base64", f"{name}: not base64 ({exc})")
    headers = _headers(raw.get("headers"))
    if isinstance(headers, str):
        return bad("bad_record", f"headers: {headers}")
    assert isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int)
    return KafkaRecord(
        partition_key=partition_key,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        key=decoded["key"],
        value=decoded["value"],
        headers=headers,
    )


_EXPECTED: Final = {
    "topic": "a non-empty string",
    "partition": "an integer >= 0",
    "offset": "an integer >= 0",
}


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...] | str:
    """The headers as (name, bytes) pairs, or what is wrong with them."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        return f"expected a list, got {json_kind(raw)}"
    out = []
    for entry in raw:
        if not isinstance(entry, Mapping):
            return f"expected objects of name -> list of bytes, got {json_kind(entry)}"
        for name, data in entry.items():
            if not isinstance(data, list) or not all(_is_int(b) and 0 <= b <= 255 for b in data):
                return f"header {name!r:.80}: expected a list of byte values 0-255"
            out.append((str(name), bytes(data)))
    return tuple(out)


def batch_response(failures: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """The partial batch response naming the failed records, as ``(partition_key, offset)``
    pairs (each once, sorted); an empty list means the whole batch succeeded."""
    return {
        "batchItemFailures": [
            {"itemIdentifier": {"partition": key, "offset": offset}}
            for key, offset in sorted(set(failures))
        ]
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
