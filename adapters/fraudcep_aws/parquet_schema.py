"""The columns of the Parquet datasets on S3 (alerts and payments), and rows turned into them.

The sink turns what the runtime hands it into Arrow record batches a few thousand rows at
a time, so that a checkpoint interval of payments is held as compact columns (or written
out), not as Python objects.
Every timestamp is event time in epoch milliseconds, stored as ``timestamp(ms, UTC)``;
nested data (an alert's key and events, a payment's fields beyond the nine of the payment
schema) is compact JSON text, ASCII only, so any JSON value survives.

Alerts (``alerts/dt=.../hour=.../*.parquet``, partitioned by ``last_ts``):

================  ==================  ======================================================
alert_id          string              :attr:`fraudcep.Alert.alert_id` (deterministic)
rule_id           string
rule_version      int32
key               string              :func:`fraudcep.alert.identity.canonical_key` of the key
first_ts          timestamp(ms, UTC)  event time of the first matched event
last_ts           timestamp(ms, UTC)  event time of the last matched event
emitted_at        timestamp(ms, UTC)  event time the engine emitted the alert at
events            string              JSON: stage name -> list of matched payments
source_topic      string              the input topic
source_partition  int32               the input partition
mode              string, nullable    ``live`` or ``shadow`` (:attr:`fraudcep.Alert.mode`): a
                                      shadow rule's alerts are recorded, never acted on;
                                      null only when read from files of earlier releases,
                                      which hold live alerts
lists             string, nullable    JSON: list name -> version of each named list the rule
                                      read (:attr:`fraudcep.Alert.lists`); null when none
================  ==================  ======================================================

Payments (``payments/dt=.../hour=.../*.parquet``, partitioned by ``ts``):

================  ==================  ======================================================
payment_id        string
user_id           string
card_id           string
merchant          string
country           string              2 letters
amount            double              currency units (an integer amount reads back as x.0)
currency          string              3 letters
status            string              ``approved`` or ``declined``
ts                timestamp(ms, UTC)  event time
extra             string, nullable    JSON object of the other fields, null when none
source_topic      string
source_partition  int32
source_offset     int64               the record's offset in the input partition
================  ==================  ======================================================

All columns but ``extra`` and the alerts' ``mode`` and ``lists`` (added after the others,
so that files written before them read with nulls there) are required (non-null). ``dt``
(``YYYY-MM-DD``) and ``hour`` (``00``-``23``) are in the path only, as hive partitioning has
it. A string holding a lone UTF-16 surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot hold
it) is written with the surrogate as the six characters ``\\ud800``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pyarrow as pa

from fraudcep.alert import Alert
from fraudcep.alert.identity import canonical_key
from fraudcep.payments.payment import PAYMENT_FIELDS

__all__ = [
    "ALERTS_SCHEMA",
    "DATASETS",
    "HOUR_MS",
    "PAYMENTS_SCHEMA",
    "SCHEMAS",
    "alerts_batch",
    "hour_path",
    "payments_batch",
]

HOUR_MS: Final = 3_600_000
_TS: Final = pa.timestamp("ms", tz="UTC")


def _required(name: str, kind: pa.DataType) -> pa.Field:
    return pa.field(name, kind, nullable=False)


ALERTS_SCHEMA: Final = pa.schema(
    [
        _required("alert_id", pa.string()),
        _required("rule_id", pa.string()),
        _required("rule_version", pa.int32()),
        _required("key", pa.string()),
        _required("first_ts", _TS),
        _required("last_ts", _TS),
        _required("emitted_at", _TS),
        _required("events", pa.string()),
        _required("source_topic", pa.string()),
        _required("source_partition", pa.int32()),
        pa.field("mode", pa.string(), nullable=True),
        pa.field("lists", pa.string(), nullable=True),
    ]
)
"""The columns of ``alerts`` (see the module docstring)."""

_PAYMENT_TYPES: Final[Mapping[str, pa.DataType]] = {
    **dict.fromkeys(PAYMENT_FIELDS, pa.string()),
    "amount": pa.float64(),
    "ts": _TS,
}
PAYMENTS_SCHEMA: Final = pa.schema(
    [
        *(_required(name, _PAYMENT_TYPES[name]) for name in PAYMENT_FIELDS),
        pa.field("extra", pa.string(), nullable=True),
        _required("source_topic", pa.string()),
        _required("source_partition", pa.int32()),
        _required("source_offset", pa.int64()),
    ]
)
"""The columns of ``payments`` (see the module docstring)."""

SCHEMAS: Final[Mapping[str, pa.Schema]] = {"alerts": ALERTS_SCHEMA, "payments": PAYMENTS_SCHEMA}
DATASETS: Final = tuple(SCHEMAS)

_KNOWN: Final = frozenset(PAYMENT_FIELDS)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def hour_path(hour: int) -> str:
    """The hive partition path of the ``hour``-th hour since the epoch (UTC)."""
    t = _EPOCH + timedelta(hours=hour)
    return f"dt={t.year:04d}-{t.month:02d}-{t.day:02d}/hour={t.hour:02d}"


def payments_batch(
    records: Sequence[tuple[int, Mapping[str, Any]]], topic: str, partition: int
) -> pa.RecordBatch:
    """Decoded payments with their offsets as a record batch of :data:`PAYMENTS_SCHEMA`.

    Raises ``KeyError`` for a missing field, ``pa.ArrowException`` (or ``TypeError``,
    ``OverflowError``) for a value of the wrong type."""
    payments = [p for _, p in records]
    wide = len(PAYMENT_FIELDS)  # a payment with more fields has extras (it has the nine)
    columns: dict[str, list[Any]] = {n: [p[n] for p in payments] for n in PAYMENT_FIELDS}
    columns["extra"] = [
        _json({k: v for k, v in p.items() if k not in _KNOWN}) if len(p) > wide else None
        for p in payments
    ]
    columns["source_offset"] = [offset for offset, _ in records]
    return _batch(PAYMENTS_SCHEMA, columns, len(records), topic, partition)


def alerts_batch(alerts: Sequence[Alert], topic: str, partition: int) -> pa.RecordBatch:
    """Alerts as a record batch of :data:`ALERTS_SCHEMA`."""
    columns: dict[str, list[Any]] = {
        "alert_id": [a.alert_id for a in alerts],
        "rule_id": [a.rule_id for a in alerts],
        "rule_version": [a.rule_version for a in alerts],
        "key": [canonical_key(a.key) for a in alerts],
        "first_ts": [a.first_ts for a in alerts],
        "last_ts": [a.last_ts for a in alerts],
        "emitted_at": [a.emitted_at for a in alerts],
        "events": [_json({k: list(v) for k, v in a.events.items()}) for a in alerts],
        "mode": [a.mode for a in alerts],
        "lists": [_json(dict(sorted(a.lists.items()))) if a.lists else None for a in alerts],
    }
    return _batch(ALERTS_SCHEMA, columns, len(alerts), topic, partition)


def _batch(
    schema: pa.Schema, columns: Mapping[str, list[Any]], n: int, topic: str, partition: int
) -> pa.RecordBatch:
    """The columns, plus the source partition's (the same for every row)."""
    arrays = []
    for field in schema:
        if field.name == "source_topic":
            arrays.append(pa.repeat(pa.scalar(topic, field.type), n))
        elif field.name == "source_partition":
            arrays.append(pa.repeat(pa.scalar(partition, field.type), n))
        else:
            arrays.append(_array(columns[field.name], field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _array(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=kind)
    except UnicodeEncodeError:
        if kind != pa.string():
            raise
    return pa.array([_utf8(v) for v in values], type=kind)


def _utf8(value: Any) -> Any:
    """A string UTF-8 can hold: lone surrogates written as ``\\udXXX``."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value
