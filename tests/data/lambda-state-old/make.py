"""Make the state-table fixtures of earlier detector releases (whole-engine snapshot items).

Run with an earlier release of fraudcep on the path and a moto server (``scripts/moto.sh``)::

    git worktree add --detach /tmp/fc-old <commit>
    PYTHONPATH=/tmp/fc-old:/tmp/fc-old/adapters AWS_ENDPOINT_URL=http://127.0.0.1:PORT \\
        .venv/bin/python tests/data/lambda-state-old/make.py OUT.json

It generates payments with labelled scenarios and jitter, lets that release's detector
process the first part of them in a few batches, and writes the records, the split point,
the detector's settings and every item of its state table (binary values in base64) to
OUT.json. ``format-1.json`` was made at 0b75b06 (format-1 snapshots, zlib'd JSON),
``format-2.json`` at 2204c43 (format-2 snapshots).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid
import zlib
from typing import Any

import boto3

from fraudcep.synthetic import PaymentGenerator
from fraudcep_aws.dynamodb import create_alerts_table
from fraudcep_aws.key_state import create_state_table
from fraudcep_aws.lambda_detector import Detector, DetectorConfig

TOPIC = "payments.raw"
PARTITIONS = 2
LAG_MS = 20_000
SPLIT = 240


def records(payments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    offsets = [0] * PARTITIONS
    out = []
    for p in payments:
        partition = zlib.crc32(p["user_id"].encode()) % PARTITIONS
        value = json.dumps(p, separators=(",", ":")).encode()
        out.append(
            {
                "topic": TOPIC,
                "partition": partition,
                "offset": offsets[partition],
                "timestamp": p["ts"],
                "timestampType": "CREATE_TIME",
                "key": base64.b64encode(p["user_id"].encode()).decode(),
                "value": base64.b64encode(value).decode(),
            }
        )
        offsets[partition] += 1
    return out


def event(batch: list[dict[str, Any]]) -> dict[str, Any]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in batch:
        grouped.setdefault(f"{r['topic']}-{r['partition']}", []).append(r)
    return {"eventSource": "aws:kafka", "records": grouped}


def plain(value: Any) -> Any:
    """A DynamoDB attribute value as JSON (binary in base64)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def main(out: str) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    tag = uuid.uuid4().hex[:8]
    config = DetectorConfig(
        alerts_table=f"alerts-{tag}", state_table=f"state-{tag}", max_out_of_orderness_ms=LAG_MS
    )
    create_alerts_table(ddb, config.alerts_table)
    create_state_table(ddb, config.state_table)
    generator = PaymentGenerator(
        seed=23, users=24, rate=1.0, scenarios_per_10k=400, jitter_ms=15_000
    )
    payments, _ = generator.generate(400)
    all_records = records(list(payments))
    detector = Detector.from_config(config, dynamodb=ddb)
    for start in range(0, SPLIT, 60):
        report = detector.process(event(all_records[start : min(start + 60, SPLIT)]))
        assert not report.failures, report
    detector.close()
    items = []
    for page in ddb.get_paginator("scan").paginate(TableName=config.state_table):
        items += [plain(i) for i in page["Items"]]
    with open(out, "w", encoding="utf-8") as f:
        json.dump(
            {
                "max_out_of_orderness_ms": LAG_MS,
                "split": SPLIT,
                "records": all_records,
                "items": sorted(items, key=lambda i: i["pk"]["S"]),
            },
            f,
            indent=None,
            separators=(",", ":"),
        )
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
