"""Lambda detector test material: payments as MSK records and invocation events, as Lambda
hands them over, and what the detector's tables hold."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from typing import Any

from fraudcep.payments.synthetic import Payment
from fraudcep_aws.dynamodb import AlertTable
from fraudcep_aws.lambda_detector import DetectorConfig

TOPIC = "payments.raw"
PARTITIONS = 3
ARN = "arn:aws:kafka:us-east-1:123456789012:cluster/fraud/0a1b2c3d-4e5f-6789-abcd-ef0123456789-1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kafka_records(payments: Sequence[Payment], *, partitions: int = PARTITIONS) -> list[dict]:
    """The payments as a producer keyed by user would place them, each as an MSK record."""
    offsets = [0] * partitions
    records = []
    for payment in payments:
        partition = zlib.crc32(payment["user_id"].encode()) % partitions
        records.append(record(payment, partition, offsets[partition]))
        offsets[partition] += 1
    return records


def record(payment: Any, partition: int, offset: int, *, topic: str = TOPIC) -> dict[str, Any]:
    """An MSK record of a payment (a mapping), as Lambda hands it over."""
    value = json.dumps(payment, separators=(",", ":")).encode()
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": payment["ts"],
        "timestampType": "CREATE_TIME",
        "key": b64(str(payment.get("user_id", "")).encode()),
        "value": b64(value),
        "headers": [{"producer": list(b"fraudcep-generate")}],
    }


def value_of(record: dict[str, Any]) -> dict[str, Any]:
    """The payment in an MSK record."""
    payment: dict[str, Any] = json.loads(base64.b64decode(record["value"]))
    return payment


def msk_event(records: Sequence[dict[str, Any]], *, source: str = "aws:kafka") -> dict[str, Any]:
    """An invocation event holding ``records`` (grouped by topic-partition, order kept)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        grouped.setdefault(f"{r['topic']}-{r['partition']}", []).append(r)
    return {
        "eventSource": source,
        "eventSourceArn": ARN,
        "bootstrapServers": "b-1.fraud.kafka.us-east-1.amazonaws.com:9098",
        "records": grouped,
    }


def payment(user: str, ts: int, amount: float, *, n: int, country: str = "US") -> dict[str, Any]:
    return {
        "payment_id": f"p-{user}-{n}",
        "user_id": user,
        "card_id": f"card-{user}",
        "merchant": f"m{n:03d}",
        "country": country,
        "amount": amount,
        "currency": "USD",
        "status": "approved",
        "ts": ts,
    }


# == reference ===============================================================================


def stored_alerts(ddb: Any, config: DetectorConfig) -> list[dict[str, Any]]:
    return AlertTable(config.alerts_table, ddb).live_items()


def stored_ids(ddb: Any, config: DetectorConfig) -> set[str]:
    items = stored_alerts(ddb, config)
    ids = [i["alert_id"] for i in items]
    assert len(ids) == len(set(ids))
    return set(ids)


def scan(ddb: Any, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
        items.extend(page["Items"])
    return items
