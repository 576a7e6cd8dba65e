"""``fraudcep run`` with the AWS sinks and the S3 checkpoint store, against the real broker
and moto's server: every alert lands exactly once in the DynamoDB table and in the Parquet
dataset, also when the runner is killed with SIGKILL again and again."""

from __future__ import annotations

import io
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support.aws_server import client, unique
from support.kafka_runner import (
    Job,
    RunnerProcess,
    expected_alerts,
    payment_records,
    produce,
    wait_caught_up,
    wait_until,
)

from fraudcep.payments.default_rules import default_rules
from fraudcep.payments.synthetic import PaymentGenerator, match_alerts
from fraudcep_aws.dynamodb import AlertTable, create_alerts_table

pytestmark = [pytest.mark.kafka, pytest.mark.aws]


@pytest.fixture
def aws(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A fresh table and bucket; runner processes find the endpoint in AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    table = unique("alerts")
    bucket = unique("lake")
    create_alerts_table(client(aws_endpoint, "dynamodb"), table)
    client(aws_endpoint, "s3").create_bucket(Bucket=bucket)
    yield {"endpoint": aws_endpoint, "table": table, "bucket": bucket}


@pytest.fixture
def job(kafka_bootstrap: str, tmp_path: Path) -> Job:
    j = Job(kafka_bootstrap, tmp_path)
    j.create_input()
    return j


def _start(job: Job, aws: dict[str, str], **options: Any) -> RunnerProcess:
    return job.start(
        sink=[f"dynamodb://{aws['table']}", f"s3://{aws['bucket']}/lake"],
        checkpoints=f"s3://{aws['bucket']}/checkpoints",
        **options,
    )


def _table_ids(aws: dict[str, str]) -> list[str]:
    table = AlertTable(aws["table"], client(aws["endpoint"], "dynamodb"))
    return [item["alert_id"] for item in table.live_items()]


def _parquet_rows(aws: dict[str, str], dataset: str) -> list[dict[str, Any]]:
    s3 = client(aws["endpoint"], "s3")
    rows: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=aws["bucket"], Prefix=f"lake/{dataset}/"
    ):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith(".parquet"):
                continue
            body = s3.get_object(Bucket=aws["bucket"], Key=obj["Key"])["Body"].read()
            rows.extend(pq.read_table(io.BytesIO(body)).to_pylist())
    return rows


class _AlertView:
    def __init__(self, alert: Any) -> None:
        self.rule_id = alert.rule_id
        self.events = alert.events


def test_sinks_hold_every_scenario_once(job: Job, aws: dict[str, str]) -> None:
    payments, scenarios = PaymentGenerator(seed=21, users=1_000, rate=100.0).generate(20_000)
    produce(job.bootstrap, job.input_topic, payment_records(payments))
    runner = _start(job, aws)
    try:
        wait_caught_up(job)
        expected = expected_alerts(job, default_rules())
        wait_until(lambda: len(_table_ids(aws)) >= len(expected), 180, "the alerts in DynamoDB")
    finally:
        code = runner.terminate()  # the final checkpoint writes Parquet
    assert code == 0, runner.tail()
    assert len(scenarios) >= 5
    detection = match_alerts([_AlertView(a) for a in expected], scenarios)
    assert detection.missed == () and detection.unexpected == ()
    want = sorted(a.alert_id for a in expected)
    assert sorted(_table_ids(aws)) == want
    assert sorted(r["alert_id"] for r in _parquet_rows(aws, "alerts")) == want
    rows = _parquet_rows(aws, "payments")
    assert sorted(r["payment_id"] for r in rows) == sorted(p["payment_id"] for p in payments)


def test_sinks_exactly_once_across_kill_9(job: Job, aws: dict[str, str]) -> None:
    payments, _ = PaymentGenerator(
        seed=22, users=2_000, rate=200.0, scenarios_per_10k=12.0
    ).generate(66_000)
    # 60,000 under the kills; the last 6,000 a trickle for the final runner, until it (or an
    # earlier one) has compacted a chain: on a busy machine, runners killed within a second or
    # two of their start may never get to it
    chunks = [payments[i : i + 2_000] for i in range(0, 60_000, 2_000)]
    trickle = [payments[i : i + 300] for i in range(60_000, len(payments), 300)]
    produced = payments[:60_000]
    rng = random.Random(22)

    def compacted() -> bool:
        return any(
            x.get("msg") == "checkpoint chain compacted" for r in lives for x in r.log_lines()
        )

    def feed() -> None:
        for chunk in chunks:
            produce(job.bootstrap, job.input_topic, payment_records(chunk))
            time.sleep(0.25)

    producer = threading.Thread(target=feed)
    producer.start()
    lives: list[RunnerProcess] = []
    try:
        while producer.is_alive() or len(lives) < 6:
            runner = _start(job, aws, checkpoint_interval="500ms")
            lives.append(runner)
            runner.wait_logged("partitions assigned")
            time.sleep(rng.uniform(0.3, 1.5))
            runner.kill9()
        producer.join()
        runner = _start(job, aws, checkpoint_interval="500ms")
        lives.append(runner)
        runner.wait_logged("partitions assigned")
        for chunk in trickle:
            if compacted():
                break
            produce(job.bootstrap, job.input_topic, payment_records(chunk))
            produced += chunk
            time.sleep(0.5)
        wait_until(compacted, 180, "a checkpoint chain compacted")
        wait_caught_up(job, timeout=180)
        expected = sorted(a.alert_id for a in expected_alerts(job, default_rules()))
        wait_until(lambda: len(_table_ids(aws)) >= len(expected), 180, "the last alerts")
    finally:
        producer.join()
        code = lives[-1].terminate()
    assert code == 0, lives[-1].tail()
    assert len(lives) - 1 >= 5
    assert len(expected) > 30
    table_ids = _table_ids(aws)
    assert [i for i, n in Counter(table_ids).items() if n > 1] == []
    assert sorted(table_ids) == expected
    parquet_ids = [r["alert_id"] for r in _parquet_rows(aws, "alerts")]
    assert [i for i, n in Counter(parquet_ids).items() if n > 1] == []
    assert sorted(parquet_ids) == expected
    payment_ids = [r["payment_id"] for r in _parquet_rows(aws, "payments")]
    assert [i for i, n in Counter(payment_ids).items() if n > 1] == []
    assert sorted(payment_ids) == sorted(p["payment_id"] for p in produced)
    restored = [x for r in lives[1:] for x in r.log_lines() if x.get("msg") == "partition restored"]
    assert restored, "the restarts restored checkpoints from S3"
    assert any(x["deltas"] > 0 for x in restored), "chains of deltas, from S3"
