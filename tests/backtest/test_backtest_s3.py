"""``fraudcep backtest --payments s3://...`` against moto's S3 server over HTTP: a lake the
project's S3 sink wrote (two Kafka partitions, several hours across midnight) gives the same
alerts as ``fraudcep rules test`` on the same payments, and ``--from/--to`` never opens the
objects of the hours outside the range."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.aws_server import client, unique

pytest.importorskip("pyarrow")
pytest.importorskip("matplotlib")

from test_backtest import (
    DEFAULT_RULES,
    ENV,
    canonical,
    payments,
    rules_test_alerts,
    write_jsonl,
)

from fraudcep.runtime.checkpoint import new_id
from fraudcep.runtime.sink import SourcePartition
from fraudcep_aws.parquet import open_parquet_sink

pytestmark = pytest.mark.aws
AWS_SETTINGS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
)


def backtest(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """``fraudcep backtest`` as a process, with the AWS settings of this process now (the
    ``aws_endpoint`` fixture sets dummy credentials and a region, unless given)."""
    env = {n: v for n, v in ENV.items() if n not in AWS_SETTINGS}
    env.update({n: os.environ[n] for n in AWS_SETTINGS if n in os.environ})
    result = subprocess.run(
        [sys.executable, "-m", "fraudcep_cli", "backtest", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    out = Path(args[args.index("--json") + 1]) if "--json" in args else None
    data = json.loads(out.read_text()) if out is not None and result.returncode == 0 else None
    return result, data


def write_s3_lake(endpoint: str, bucket: str, prefix: str, rows: list[dict[str, Any]]) -> None:
    """The payments through the S3 sink, spread round robin over two Kafka partitions."""
    sink = open_parquet_sink(f"s3://{bucket}/{prefix}?data=payments&endpoint_url={endpoint}")
    for number in range(2):
        records = [(o, r) for o, r in enumerate(rows) if o % 2 == number]
        partition = sink.open(SourcePartition("fraud-detector", "payments.raw", number), 0, None)
        partition.payments(records)
        end = records[-1][0] + 1
        partition.checkpoint(end, new_id(end))


@pytest.fixture
def lake(aws_endpoint: str) -> tuple[str, str, list[dict[str, Any]]]:
    bucket, prefix = unique("backtest"), unique("lake")
    s3 = client(aws_endpoint, "s3")
    s3.create_bucket(Bucket=bucket)
    rows = payments(3000)
    write_s3_lake(aws_endpoint, bucket, prefix, rows)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", ())
    ]
    hours = {k.split("/")[2] + "/" + k.split("/")[3] for k in keys if "/dt=" in k}
    assert len(hours) >= 3, keys  # several hours, across midnight
    # A damaged object in an hour outside the --from/--to of the test: never opened.
    s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}/payments/dt=2020-01-01/hour=00/broken.parquet",
        Body=b"not parquet at all",
    )
    return f"s3://{bucket}/{prefix}/payments", aws_endpoint, rows


def test_same_alerts_as_rules_test_from_the_sinks_lake_on_s3(
    tmp_path: Path, lake: tuple[str, str, list[dict[str, Any]]]
) -> None:
    url, endpoint, rows = lake
    start = min(r["ts"] for r in rows)
    begin = datetime.fromtimestamp(start // 3_600_000 * 3600, UTC).isoformat()
    out = tmp_path / "all.json"  # --from: from the first hour of the payments, not 2020's
    result, data = backtest(
        str(DEFAULT_RULES),
        "--payments",
        url,
        "--s3-endpoint",
        endpoint,
        "--from",
        begin,
        "--json",
        str(out),
        "--json-alerts",
    )
    assert result.returncode == 0, result.stderr
    assert data is not None
    assert data["payments"] == len(rows)
    assert data["late_payments"] == 0
    expected = rules_test_alerts(DEFAULT_RULES, write_jsonl(tmp_path / "all.jsonl", rows))
    assert len(expected) > 10
    assert canonical(data["alerts"]) == canonical(expected)


def test_from_to_prunes_hours_on_s3(
    tmp_path: Path, lake: tuple[str, str, list[dict[str, Any]]]
) -> None:
    url, endpoint, rows = lake
    start, end = "2024-01-01T23:10:00", "2024-01-02T00:00:00"
    out = tmp_path / "cut.json"
    result, data = backtest(
        str(DEFAULT_RULES),
        "--payments",
        url,
        "--s3-endpoint",
        endpoint,
        "--from",
        start,
        "--to",
        end,
        "--json",
        str(out),
        "--json-alerts",
    )
    assert result.returncode == 0, result.stderr
    assert data is not None
    low = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1000)
    high = int(datetime.fromisoformat(end).replace(tzinfo=UTC).timestamp() * 1000)
    inside = [r for r in rows if low <= r["ts"] < high]
    assert 0 < len(inside) < len(rows)
    assert data["payments"] == len(inside)
    expected = rules_test_alerts(DEFAULT_RULES, write_jsonl(tmp_path / "inside.jsonl", inside))
    assert canonical(data["alerts"]) == canonical(expected)
    # Without the cut, the damaged object is opened and named.
    result, _ = backtest(str(DEFAULT_RULES), "--payments", url, "--s3-endpoint", endpoint)
    assert result.returncode == 1
    assert "broken.parquet" in result.stderr


def test_the_endpoint_from_aws_endpoint_url_and_clear_errors(
    tmp_path: Path, lake: tuple[str, str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, endpoint, rows = lake
    start, end = "2024-01-01T23:00:00", "2024-01-02T00:00:00"
    window = ("--from", start, "--to", end)
    # AWS_ENDPOINT_URL (as for the project's other AWS clients) instead of --s3-endpoint.
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    out = tmp_path / "env.json"
    result, data = backtest(str(DEFAULT_RULES), "--payments", url, *window, "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert data is not None and 0 < data["payments"] < len(rows)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    # No credentials: the server refuses to give the objects; the error names the object.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    result, _ = backtest(str(DEFAULT_RULES), "--payments", url, "--s3-endpoint", endpoint, *window)
    assert result.returncode == 1
    assert "cannot read" in result.stderr and ".parquet" in result.stderr
    assert "not a Parquet file" not in result.stderr
    assert "Traceback" not in result.stderr
    # An endpoint nobody listens on: the source is named, no traceback.
    result, _ = backtest(
        str(DEFAULT_RULES), "--payments", url, "--s3-endpoint", "http://127.0.0.1:1", *window
    )
    assert result.returncode == 1
    assert f"{url}: cannot read" in result.stderr and "Traceback" not in result.stderr
