"""``fraudcep run --lists s3://...`` with the AWS sinks, against the real broker and moto's
server: a rule reading a list kept in S3 alerts, a shadow rule's alerts land in the DynamoDB
table and the Parquet dataset marked shadow (and in the shadow alerts topic), a live rule's
unmarked; ``fraudcep rules validate/test --lists s3://...`` read the same lists; a lists URL
nothing reads is a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.aws_server import client, unique
from support.kafka_runner import Job, payment_records, produce, read_topic, wait_until
from support.paths import REPO
from test_aws_runner_sinks import _parquet_rows

from fraudcep.rules import ListError
from fraudcep.runtime.list_sources import is_url, load_lists
from fraudcep_aws.dynamodb import AlertTable, create_alerts_table

pytestmark = [pytest.mark.kafka, pytest.mark.aws]

RULES = """
- id: blocked-card
  version: 1
  key: card_id
  pattern:
    - name: p
      where: card_id in lists.blocked_cards
- id: big-next
  version: 1
  mode: shadow
  key: card_id
  pattern:
    - name: p
      where: amount > 100
"""
BASE = {"user_id": "u-1", "merchant": "m1", "country": "DE", "currency": "EUR",
        "status": "approved"}  # fmt: skip


@pytest.fixture
def aws(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    table, bucket = unique("alerts"), unique("lists")
    create_alerts_table(client(aws_endpoint, "dynamodb"), table)
    s3 = client(aws_endpoint, "s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="lists/blocked_cards.txt", Body=b"# cards\nc-blocked\n")
    s3.put_object(Bucket=bucket, Key="lists/countries.json", Body=b'["KP", "IR"]')
    yield {"endpoint": aws_endpoint, "table": table, "bucket": bucket}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudcep_cli", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip


def test_rules_commands_read_lists_from_s3(aws: dict[str, str], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    lists = f"s3://{aws['bucket']}/lists"
    assert is_url(lists) and not is_url(str(rules))
    loaded = load_lists(lists)
    assert loaded.versions() == {"blocked_cards": 1, "countries": 1}
    with pytest.raises(ListError, match="given twice"):
        load_lists(lists, lists)
    with pytest.raises(ListError, match="no installed package handles ftp://"):
        load_lists("ftp://example/lists")
    assert _cli("rules", "validate", str(rules)).returncode == 1  # the list is missing
    done = _cli("rules", "validate", str(rules), "--lists", lists)
    assert done.returncode == 0, done.stdout + done.stderr
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"id": 1, "ts": 1, "card_id": "c-blocked", "amount": 5}))
    done = _cli("rules", "test", str(rules), "--events", str(events), "--lists", lists)
    assert done.returncode == 0, done.stderr
    assert "blocked-card key='c-blocked'" in done.stdout and "lists.blocked_cards@1" in done.stdout
    missing = _cli("rules", "validate", str(rules), "--lists", f"s3://{unique('none')}/lists")
    assert missing.returncode == 1 and "cannot read the lists" in missing.stdout


def test_runner_with_s3_lists_marks_shadow_alerts_in_the_sinks(
    aws: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    job = Job(kafka_bootstrap, tmp_path)
    job.create_input()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    runner = job.start(
        rules=str(rules),
        lists=f"s3://{aws['bucket']}/lists",
        sink=[f"dynamodb://{aws['table']}", f"s3://{aws['bucket']}/lake"],
    )
    try:
        runner.wait_logged("partitions assigned")
        assert runner.wait_for("lists loaded")["lists"] == {"blocked_cards": 1, "countries": 1}
        now = int(time.time() * 1000)
        payments = [
            {**BASE, "card_id": "c-blocked", "payment_id": "p-blocked", "amount": 5.0, "ts": now},
            {**BASE, "card_id": "c-big", "payment_id": "p-big", "amount": 500.0, "ts": now},
        ]
        produce(job.bootstrap, job.input_topic, payment_records(payments))
        table = AlertTable(aws["table"], client(aws["endpoint"], "dynamodb"))
        wait_until(lambda: len(table.live_items()) >= 2, 120, "both alerts in DynamoDB")
        wait_until(
            lambda: len(_parquet_rows(aws, "alerts")) >= 2, 180, "both alerts in the Parquet lake"
        )
        items = {item["rule_id"]: item for item in table.live_items()}
        rows = {row["rule_id"]: row for row in _parquet_rows(aws, "alerts")}
        shadow_topic = [
            json.loads(m.value()) for m in read_topic(kafka_bootstrap, job.shadow_alerts_topic)
        ]
        live_topic = [json.loads(m.value()) for m in read_topic(kafka_bootstrap, job.alerts_topic)]
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    assert items["big-next"]["mode"] == "shadow" and "mode" not in items["blocked-card"]
    assert items["blocked-card"]["lists"] == {"blocked_cards": 1}
    assert rows["big-next"]["mode"] == "shadow" and rows["blocked-card"]["mode"] == "live"
    assert json.loads(rows["blocked-card"]["lists"]) == {"blocked_cards": 1}
    assert [a["rule_id"] for a in shadow_topic] == ["big-next"]
    assert [a["rule_id"] for a in live_topic] == ["blocked-card"]
