"""Named lists in the Lambda detector, against moto's server over HTTP: lists read from S3
(or a local directory), rules compiled against them, list objects changed under a warm
detector, and the versions an alert saw kept in its DynamoDB item."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from support.aws_server import client, unique
from support.lambda_events import msk_event, payment, record, stored_alerts

from fraudcep.rules import ListError, Lists, RuleSpecError
from fraudcep_aws.dynamodb import create_alerts_table
from fraudcep_aws.key_state import create_state_table
from fraudcep_aws.lambda_detector import Detector, DetectorConfig, create_dead_letter_table
from fraudcep_aws.s3_checkpoints import parse_s3_url
from fraudcep_aws.s3_lists import S3Lists

pytestmark = pytest.mark.aws

T0 = 1_700_000_000_000

BLOCKED = """
- id: blocked-card
  version: 1
  key: user_id
  pattern:
    - name: pay
      where: card_id in lists.blocked_cards
"""

BLOCKED_AND_BINS = (
    BLOCKED
    + """
- id: risky-bin
  key: user_id
  pattern:
    - name: pay
      where: prefix_in(card_id, lists.risky_bins)
"""
)


@pytest.fixture
def ddb(aws_endpoint: str) -> Any:
    return client(aws_endpoint, "dynamodb")


@pytest.fixture
def s3(aws_endpoint: str) -> Any:
    return client(aws_endpoint, "s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique("lists")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def config(ddb: Any, bucket: str, tmp_path: Path) -> DetectorConfig:
    names = {
        "alerts_table": unique("alerts"),
        "state_table": unique("state"),
        "dead_letter_table": unique("dead"),
    }
    create_alerts_table(ddb, names["alerts_table"])
    create_state_table(ddb, names["state_table"])
    create_dead_letter_table(ddb, names["dead_letter_table"])
    rules = tmp_path / "rules.yaml"
    rules.write_text(BLOCKED, encoding="utf-8")
    return DetectorConfig(
        **names, rules=str(rules), lists=f"s3://{bucket}/lists/prod", lists_refresh_s=0
    )


@pytest.fixture
def detectors() -> Iterator[list[Detector]]:
    made: list[Detector] = []
    yield made
    for d in made:
        d.close()


def start(config: DetectorConfig, ddb: Any, s3: Any, made: list[Detector]) -> Detector:
    detector = Detector.from_config(config, dynamodb=ddb, s3=s3)
    made.append(detector)
    return detector


def put(s3: Any, bucket: str, name: str, body: str | bytes) -> None:
    data = body.encode() if isinstance(body, str) else body
    s3.put_object(Bucket=bucket, Key=f"lists/prod/{name}", Body=data)


def batch(first_offset: int, *payments: dict[str, Any]) -> dict[str, Any]:
    """The payments on partition 0, then one of another user 10 s later that moves the
    partition's event time past them."""
    last = max(p["ts"] for p in payments) + 10_000
    tail = payment("u-tail", last, 1.0, n=first_offset)
    rows = [*payments, tail]
    return msk_event([record(p, 0, first_offset + i) for i, p in enumerate(rows)])


def alerts_by_key(ddb: Any, config: DetectorConfig) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in stored_alerts(ddb, config):
        out.setdefault(json.loads(item["key"]), []).append(item)
    return out


# == lists from S3 ===========================================================================


def test_a_blocked_card_in_an_s3_list_alerts_and_a_changed_object_is_seen_warm(
    config: DetectorConfig, ddb: Any, s3: Any, bucket: str, detectors: list[Detector]
) -> None:
    put(s3, bucket, "blocked_cards.txt", "# cards\ncard-u1\n")
    put(s3, bucket, "README.md", "not a list: ignored")
    put(s3, bucket, "old/blocked_cards.txt", "not read: below the prefix's own objects")
    detector = start(config, ddb, s3, detectors)
    assert detector.lists is not None and detector.lists.versions() == {"blocked_cards": 1}

    report = detector.process(batch(0, payment("u1", T0, 10.0, n=1), payment("u2", T0, 5.0, n=1)))
    assert report.failures == () and report.new_alerts == 1
    alerts = alerts_by_key(ddb, config)
    assert set(alerts) == {"u1"}
    (u1,) = alerts["u1"]
    assert u1["rule_id"] == "blocked-card" and u1["lists"] == {"blocked_cards": 1}

    # the list object is replaced: the warm detector's next batch is judged against it
    put(s3, bucket, "blocked_cards.txt", "card-u2\n")
    report = detector.process(
        batch(10, payment("u1", T0 + 60_000, 10.0, n=2), payment("u2", T0 + 60_000, 5.0, n=2))
    )
    assert report.failures == () and report.new_alerts == 1
    alerts = alerts_by_key(ddb, config)
    assert len(alerts["u1"]) == 1  # card-u1 is no longer blocked
    (u2,) = alerts["u2"]
    assert u2["lists"] == {"blocked_cards": 2}
    assert detector.list_source is not None and detector.list_source.changes == 1

    # the same entries written again change nothing, not even the version
    put(s3, bucket, "blocked_cards.txt", "# the same\ncard-u2\n")
    detector.process(batch(20, payment("u2", T0 + 120_000, 5.0, n=3)))
    assert detector.lists.versions() == {"blocked_cards": 2}
    assert [a["lists"] for a in alerts_by_key(ddb, config)["u2"]] == [
        {"blocked_cards": 2},
        {"blocked_cards": 2},
    ]


def test_every_list_format_is_read_from_s3(
    config: DetectorConfig, ddb: Any, s3: Any, bucket: str, detectors: list[Detector]
) -> None:
    put(s3, bucket, "blocked_cards.csv", "# card,reason\ncard-u1,stolen\n")
    put(s3, bucket, "risky_bins.json", json.dumps(["card-u2"]))
    put(s3, bucket, "domains.jsonl", '"a.com"\n"b.org"\n')
    put(s3, bucket, "countries.list", "\ufeffNG\nRU\n")
    rules = Path(config.rules or "")
    rules.write_text(BLOCKED_AND_BINS, encoding="utf-8")
    detector = start(config, ddb, s3, detectors)
    assert detector.lists is not None
    assert {n.name: n.entries for n in detector.lists} == {
        "blocked_cards": {"card-u1"},
        "countries": {"NG", "RU"},
        "domains": {"a.com", "b.org"},
        "risky_bins": {"card-u2"},
    }
    detector.process(batch(0, payment("u1", T0, 1.0, n=1), payment("u2", T0, 1.0, n=1)))
    found = {
        k: [(a["rule_id"], a["lists"]) for a in v] for k, v in alerts_by_key(ddb, config).items()
    }
    assert found == {
        "u1": [("blocked-card", {"blocked_cards": 1})],
        "u2": [("risky-bin", {"risky_bins": 1})],
    }


def test_a_rule_naming_a_list_s3_lacks_is_refused(
    config: DetectorConfig, ddb: Any, s3: Any, bucket: str, detectors: list[Detector]
) -> None:
    put(s3, bucket, "blocked_cards.txt", "card-u1\n")
    Path(config.rules or "").write_text(BLOCKED_AND_BINS, encoding="utf-8")
    with pytest.raises(
        RuleSpecError, match=r"unknown list 'risky_bins'.*known lists: blocked_cards"
    ):
        start(config, ddb, s3, detectors)
    # and without lists at all, as in every runtime
    with pytest.raises(RuleSpecError, match=r"unknown list 'blocked_cards'.*no lists are loaded"):
        start(attrs.evolve(config, lists=None), ddb, s3, detectors)


def test_a_bad_list_object_is_refused_at_start_and_kept_out_when_warm(
    config: DetectorConfig,
    ddb: Any,
    s3: Any,
    bucket: str,
    detectors: list[Detector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    put(s3, bucket, "blocked_cards.json", '{"not": "an array"}')
    with pytest.raises(ListError, match=r"blocked_cards\.json: a \.json list file is a JSON array"):
        start(config, ddb, s3, detectors)
    put(s3, bucket, "blocked_cards.json", '["card-u1"]')
    detector = start(config, ddb, s3, detectors)

    # a warm detector keeps the list it has, says why once, and takes the next good object
    put(s3, bucket, "blocked_cards.json", b'["card-u2", \xff]')
    with caplog.at_level(logging.INFO, logger="fraudcep_aws.s3_lists"):
        detector.process(batch(0, payment("u1", T0, 1.0, n=1), payment("u2", T0, 1.0, n=1)))
        detector.process(batch(10, payment("u1", T0 + 60_000, 1.0, n=2)))
    rejected = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(rejected) == 1, rejected
    assert "list blocked_cards stays as it was" in rejected[0].getMessage()
    assert "blocked_cards.json: not UTF-8 text" in rejected[0].getMessage()
    assert detector.list_source is not None and detector.list_source.rejected == 1
    alerts = alerts_by_key(ddb, config)
    assert (
        set(alerts) == {"u1"} and [a["lists"] for a in alerts["u1"]] == [{"blocked_cards": 1}] * 2
    )

    put(s3, bucket, "blocked_cards.txt", "card-u2\n")  # a second object for the same list
    detector.process(batch(20, payment("u2", T0 + 120_000, 1.0, n=2)))
    assert detector.list_source.rejected == 2
    assert "u2" not in alerts_by_key(ddb, config)

    s3.delete_object(Bucket=bucket, Key="lists/prod/blocked_cards.json")
    put(s3, bucket, "blocked_cards.json", '["card-u2"]')
    s3.delete_object(Bucket=bucket, Key="lists/prod/blocked_cards.txt")
    detector.process(batch(30, payment("u2", T0 + 180_000, 1.0, n=3)))
    assert [a["lists"] for a in alerts_by_key(ddb, config)["u2"]] == [{"blocked_cards": 2}]


def test_a_deleted_list_object_keeps_its_entries(
    config: DetectorConfig,
    ddb: Any,
    s3: Any,
    bucket: str,
    detectors: list[Detector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    put(s3, bucket, "blocked_cards.txt", "card-u1\n")
    detector = start(config, ddb, s3, detectors)
    s3.delete_object(Bucket=bucket, Key="lists/prod/blocked_cards.txt")
    with caplog.at_level(logging.WARNING, logger="fraudcep_aws.s3_lists"):
        detector.process(batch(0, payment("u1", T0, 1.0, n=1)))
    assert "list blocked_cards keeps its entries" in caplog.text
    assert [a["lists"] for a in alerts_by_key(ddb, config)["u1"]] == [{"blocked_cards": 1}]


def test_a_refresh_lists_the_prefix_at_most_every_refresh_interval(s3: Any, bucket: str) -> None:
    put(s3, bucket, "blocked_cards.txt", "c1\n")
    now = [0.0]
    source = S3Lists(
        parse_s3_url(f"s3://{bucket}/lists/prod", what="lists", parameters=(), error=ListError),
        s3,
        Lists(),
        refresh_s=60,
        clock=lambda: now[0],
    )
    source.load()
    put(s3, bucket, "blocked_cards.txt", "c2\n")
    now[0] = 59.0
    assert source.refresh() == [] and source.lists.get("blocked_cards").entries == {"c1"}
    now[0] = 60.0
    assert source.refresh() == ["blocked_cards"]
    assert source.lists.get("blocked_cards").entries == {"c2"}
    assert source.lists.version("blocked_cards") == 2
    put(s3, bucket, "blocked_cards.txt", "c3\n")
    assert source.refresh(force=True) == ["blocked_cards"]


def test_an_unreachable_bucket_fails_the_start_and_only_delays_a_refresh(
    s3: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    def location(name: str) -> Any:
        return parse_s3_url(f"s3://{name}/lists", what="lists", parameters=(), error=ListError)

    missing = S3Lists(location(unique("absent")), s3, Lists(), refresh_s=0)
    with pytest.raises(ListError, match=r"cannot list the lists.*NoSuchBucket"):
        missing.load()
    s3.put_object(Bucket=bucket, Key="lists/blocked_cards.txt", Body=b"c1\n")
    source = S3Lists(location(bucket), s3, Lists(), refresh_s=0)
    source.load()
    source.location = location(unique("absent"))
    with caplog.at_level(logging.WARNING, logger="fraudcep_aws.s3_lists"):
        assert source.refresh() == []
    assert "lists not refreshed" in caplog.text
    assert source.lists.get("blocked_cards").entries == {"c1"}


# == lists from a local path =================================================================


def test_lists_from_a_directory_in_the_package(
    config: DetectorConfig, ddb: Any, s3: Any, detectors: list[Detector], tmp_path: Path
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "blocked_cards.txt").write_text("card-u1\n", encoding="utf-8")
    detector = start(attrs.evolve(config, lists=str(lists)), ddb, s3, detectors)
    assert detector.list_source is None
    detector.process(batch(0, payment("u1", T0, 1.0, n=1), payment("u2", T0, 1.0, n=1)))
    assert {k: [a["lists"] for a in v] for k, v in alerts_by_key(ddb, config).items()} == {
        "u1": [{"blocked_cards": 1}]
    }


def test_an_s3_lists_url_may_name_its_endpoint(
    config: DetectorConfig,
    ddb: Any,
    s3: Any,
    bucket: str,
    detectors: list[Detector],
    aws_endpoint: str,
) -> None:
    put(s3, bucket, "blocked_cards.txt", "card-u1\n")
    url = f"s3://{bucket}/lists/prod?endpoint_url={aws_endpoint}&region=us-east-1"
    detector = start(attrs.evolve(config, lists=url), ddb, None, detectors)
    assert detector.lists is not None and detector.lists.versions() == {"blocked_cards": 1}
    with pytest.raises(ListError, match="unknown parameter 'colour'"):
        start(attrs.evolve(config, lists=f"s3://{bucket}/lists?colour=red"), ddb, None, [])
    with pytest.raises(ListError, match="not an S3 bucket name"):
        start(attrs.evolve(config, lists="s3://No_Such/lists"), ddb, None, [])


def test_lists_configuration_from_the_environment() -> None:
    tables = {"FRAUDCEP_ALERTS_TABLE": "a", "FRAUDCEP_STATE_TABLE": "s"}
    config = DetectorConfig.from_env(tables)
    assert config.lists is None and config.lists_refresh_s == 60
    config = DetectorConfig.from_env(
        {**tables, "FRAUDCEP_LISTS": "s3://b/lists", "FRAUDCEP_LISTS_REFRESH_S": "0"}
    )
    assert config.lists == "s3://b/lists" and config.lists_refresh_s == 0
    with pytest.raises(Exception, match="lists_refresh_s"):
        DetectorConfig.from_env({**tables, "FRAUDCEP_LISTS_REFRESH_S": "-1"})
