"""The Lambda detector on real-shaped Kafka (MSK) events, against moto's server over HTTP:
every alert exactly once, whatever the batching, replays and races; malformed input
dead-lettered or refused, never dropped."""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from support.aws_server import client, unique
from support.lambda_events import (
    PARTITIONS,
    TOPIC,
    b64,
    kafka_records,
    msk_event,
    payment,
    record,
    scan,
    stored_alerts,
    stored_ids,
    value_of,
)

from fraudcep import Engine
from fraudcep.errors import ConfigurationError
from fraudcep.payments.default_rules import DEFAULT_RULES_FILE, default_rule_definitions
from fraudcep.payments.synthetic import Payment, PaymentGenerator, Scenario, match_alerts
from fraudcep.rules import RuleDefinition, apply_definitions, load_rule_file
from fraudcep.runtime import ENGINE_OPTIONS, EngineOptions, reconcile
from fraudcep_aws import lambda_detector
from fraudcep_aws.dynamodb import create_alerts_table
from fraudcep_aws.key_state import (
    MAX_ITEM_BYTES,
    KeyState,
    KeyStateStore,
    StateError,
    StateTooLarge,
    create_state_table,
)
from fraudcep_aws.lambda_detector import (
    DETECTOR_OPTIONS,
    BatchFailed,
    Detector,
    DetectorConfig,
    create_dead_letter_table,
    handler,
)
from fraudcep_aws.msk_event import KafkaEventError, batch_response, parse_kafka_event
from fraudcep_kafka.config import from_sources

pytestmark = pytest.mark.aws


def reference_ids(
    records: Sequence[dict[str, Any]],
    definitions: Sequence[RuleDefinition] | None = None,
    *,
    change_at: int | None = None,
    then: Sequence[RuleDefinition] = (),
) -> set[str]:
    """Alert ids of one engine per partition over the records (the Kafka runner's model),
    with the rules changed to ``then`` after the first ``change_at`` records."""
    defs = list(definitions or default_rule_definitions())
    ids: set[str] = set()
    for partition in sorted({r["partition"] for r in records}):
        engine = Engine([], timestamp="ts", event_id="payment_id")  # the runner's settings
        apply_definitions(engine, defs)
        for index, r in enumerate(records):
            if index == change_at:
                apply_definitions(engine, then)
            if r["partition"] == partition:
                ids |= {a.alert_id for a in engine.process(value_of(r))}
    return ids


# == fixtures ================================================================================


@pytest.fixture(scope="module")
def generated() -> tuple[list[Payment], tuple[Scenario, ...]]:
    generator = PaymentGenerator(seed=11, users=60, rate=2.0, scenarios_per_10k=300)
    payments, scenarios = generator.generate(600)
    assert len(scenarios) >= 10 and {s.kind for s in scenarios} == {
        "high-value-burst",
        "card-testing",
        "geo-hop",
    }
    return payments, scenarios


@pytest.fixture(scope="module")
def records(generated: tuple[list[Payment], tuple[Scenario, ...]]) -> list[dict[str, Any]]:
    return kafka_records(generated[0])


@pytest.fixture(scope="module")
def expected(records: list[dict[str, Any]]) -> set[str]:
    return reference_ids(records)


@pytest.fixture
def ddb(aws_endpoint: str) -> Any:
    return client(aws_endpoint, "dynamodb")


@pytest.fixture
def config(ddb: Any) -> DetectorConfig:
    names = {
        "alerts_table": unique("alerts"),
        "state_table": unique("state"),
        "dead_letter_table": unique("dead"),
    }
    create_alerts_table(ddb, names["alerts_table"])
    create_state_table(ddb, names["state_table"])
    create_dead_letter_table(ddb, names["dead_letter_table"])
    return DetectorConfig(**names)


@pytest.fixture
def detector(config: DetectorConfig, ddb: Any) -> Iterator[Detector]:
    d = Detector.from_config(config, dynamodb=ddb)
    yield d
    d.close()


def dead_letters(ddb: Any, config: DetectorConfig) -> dict[str, dict[str, Any]]:
    assert config.dead_letter_table is not None
    return {i["id"]["S"]: i for i in scan(ddb, config.dead_letter_table)}


# == detection ===============================================================================


def test_every_scenario_alerts_exactly_once(
    detector: Detector,
    ddb: Any,
    config: DetectorConfig,
    generated: tuple[list[Payment], tuple[Scenario, ...]],
    records: list[dict[str, Any]],
    expected: set[str],
) -> None:
    report = detector.process(msk_event(records))
    assert report.response() == {"batchItemFailures": []}
    assert (report.records, report.keys, report.applied) == (600, 60, 600)
    assert report.dead_lettered == 0 and report.failures == ()
    assert report.new_alerts == len(expected)

    items = stored_alerts(ddb, config)
    assert {i["alert_id"] for i in items} == expected
    assert {i["source"] for i in items} == {"lambda"}
    detection = match_alerts(
        [SimpleNamespace(rule_id=i["rule_id"], events=i["events"]) for i in items],
        generated[1],
    )
    assert detection.unexpected == ()
    # a scenario still open can only be one whose last payment is its partition's latest:
    # nothing later has moved that partition's event time past it yet
    latest: dict[int, int] = {}
    for r in records:
        latest[r["partition"]] = max(latest.get(r["partition"], 0), r["timestamp"])
    for scenario in detection.missed:
        partition = zlib.crc32(scenario.user_id.encode()) % PARTITIONS
        assert scenario.end_ts == latest[partition], scenario
    assert len(detection.detected) >= len(generated[1]) - PARTITIONS


def test_the_same_batch_twice_changes_nothing(
    detector: Detector, ddb: Any, config: DetectorConfig, records: list[dict[str, Any]]
) -> None:
    event = msk_event(records)
    first = detector.process(event)
    alerts_before = scan(ddb, config.alerts_table)
    state_before = scan(ddb, config.state_table)

    again = detector.process(event)
    assert (again.applied, again.alerts, again.new_alerts) == (0, 0, 0)
    assert again.response() == {"batchItemFailures": []}
    assert first.new_alerts == len(alerts_before)
    assert _sorted(scan(ddb, config.alerts_table)) == _sorted(alerts_before)
    assert _sorted(scan(ddb, config.state_table)) == _sorted(state_before)


def _sorted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda i: json.dumps(i, sort_keys=True, default=str))


def _random_chunks(n: int) -> list[tuple[int, int]]:
    cuts = sorted(random.Random(5).sample(range(1, n), 20))
    return list(zip([0, *cuts], [*cuts, n], strict=True))


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(lambda n: [(0, 1), (1, 2), (2, 150), (150, n)], id="tiny-then-large"),
        pytest.param(lambda n: [(i, min(i + 37, n)) for i in range(0, n, 37)], id="every-37"),
        pytest.param(_random_chunks, id="random-20-cuts"),
        pytest.param(lambda n: [(0, 400), (250, n), (100, 500)], id="overlapping-retries"),
    ],
)
def test_any_batching_gives_the_alerts_of_one_batch(
    chunks: Any,
    detector: Detector,
    ddb: Any,
    config: DetectorConfig,
    records: list[dict[str, Any]],
    expected: set[str],
) -> None:
    new = 0
    for start, end in chunks(len(records)):
        report = detector.process(msk_event(records[start:end]))
        assert report.failures == ()
        new += report.new_alerts
    assert stored_ids(ddb, config) == expected
    assert new == len(expected)


def test_keys_outside_the_batch_follow_their_partitions_event_time(
    detector: Detector, ddb: Any, config: DetectorConfig
) -> None:
    t = 1_700_000_000_000
    burst = [payment("u-a", t + i * 10_000, 2500.0 + i, n=i) for i in range(3)]
    first = detector.process(msk_event([record(p, 0, i) for i, p in enumerate(burst)]))
    # the third payment waits for the event time to pass it: no alert yet
    assert (first.applied, first.alerts) == (3, 0)
    assert stored_ids(ddb, config) == set()

    other = payment("u-b", t + 60_000, 10.0, n=9)
    second = detector.process(msk_event([record(other, 0, 3)]))
    assert second.timer_keys == 1 and second.new_alerts == 1
    (alert,) = stored_alerts(ddb, config)
    assert alert["rule_id"] == "high-value-3-in-5m" and alert["key"] == '"u-a"'
    assert [e["payment_id"] for e in alert["events"]["first"]] == ["p-u-a-0", "p-u-a-1", "p-u-a-2"]
    assert reference_ids([record(p, 0, i) for i, p in enumerate([*burst, other])]) == {
        alert["alert_id"]
    }

    # another partition's event time does not move u-a's partition
    third = detector.process(msk_event([record(payment("u-c", t + 99_000, 5, n=1), 1, 0)]))
    assert third.timer_keys == 0


# == races ===================================================================================


class _BarrierStore(KeyStateStore):
    """A state table whose first loads wait for each other, so both racers load the same
    version before either saves."""

    barrier: threading.Barrier | None = None

    def load_many(self, keys: Any) -> dict[str, KeyState]:
        states = super().load_many(keys)
        if self.barrier is not None:
            self.barrier.wait(timeout=30)
        return states


def _race(detectors: list[Detector], events: list[dict[str, Any]]) -> list[Any]:
    reports: list[Any] = [None] * len(events)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            reports[i] = detectors[i].process(events[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(events))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return reports


def test_racing_invocations_on_one_key_conflict_and_lose_nothing(
    config: DetectorConfig, ddb: Any
) -> None:
    t = 1_700_000_000_000
    payments = [payment("u-race", t + i * 15_000, 2100.0 + i, n=i) for i in range(10)]
    records = [record(p, 2, 40 + i) for i, p in enumerate(payments)]
    expected = reference_ids(records)
    assert len(expected) == 3  # skip-past-last: payments 0-2, 3-5, 6-8

    barrier = threading.Barrier(2)
    detectors = []
    for _ in range(2):
        d = Detector.from_config(config, dynamodb=client(ddb.meta.endpoint_url, "dynamodb"))
        d.state = _BarrierStore(config.state_table, d.state.client)
        d.state.barrier = barrier
        detectors.append(d)
    # a retry of a timed-out invocation races it, with more records than it had
    reports = _race(detectors, [msk_event(records[:6]), msk_event(records)])

    assert sum(d.conflicts for d in detectors) == 1
    assert sum(r.conflicts for r in reports) == 1
    assert stored_ids(ddb, config) == expected
    assert sum(r.new_alerts for r in reports) == len(expected)
    (state,) = [i for i in scan(ddb, config.state_table) if i["pk"]["S"] == 'key#"u-race"']
    # the winner saved version 1; the loser redid the records the winner had not applied
    # (version 2), or found them all applied (the winner had all ten)
    assert state["version"]["N"] in ("1", "2")
    assert state["offsets"] == {"M": {f"{TOPIC}-2": {"N": "49"}}}
    for d in detectors:
        d.close()


def test_racing_invocations_of_the_whole_batch_write_each_alert_once(
    config: DetectorConfig, ddb: Any, records: list[dict[str, Any]], expected: set[str]
) -> None:
    detectors = [
        Detector.from_config(config, dynamodb=client(ddb.meta.endpoint_url, "dynamodb"))
        for _ in range(2)
    ]
    reports = _race(detectors, [msk_event(records), msk_event(records[:450])])
    assert all(r.failures == () for r in reports)
    assert stored_ids(ddb, config) == expected
    assert sum(r.new_alerts for r in reports) == len(expected)
    for d in detectors:
        d.close()


# == failures ================================================================================


class _FailingStore(KeyStateStore):
    """A state table that cannot save one key (as when DynamoDB keeps refusing it)."""

    broken: str = ""

    def save(self, previous: KeyState, **kwargs: Any) -> KeyState:
        if previous.key == self.broken:
            raise StateError(f"key {previous.key}: service unavailable")
        return super().save(previous, **kwargs)


def test_a_failing_key_reports_its_records_and_a_retry_completes_it(
    detector: Detector,
    ddb: Any,
    config: DetectorConfig,
    records: list[dict[str, Any]],
    expected: set[str],
) -> None:
    victim = next(
        value_of(r)["user_id"] for r in records if value_of(r).get("scenario") == "high-value-burst"
    )
    store = _FailingStore(config.state_table, detector.state.client)
    store.broken = json.dumps(victim)
    detector.state = store
    event = msk_event(records)
    report = detector.process(event)

    victim_records = [r for r in records if value_of(r)["user_id"] == victim]
    assert list(report.failed_keys) == [json.dumps(victim)]
    assert "service unavailable" in report.failed_keys[json.dumps(victim)]
    assert report.response() == {
        "batchItemFailures": [
            {"itemIdentifier": {"partition": f"{TOPIC}-{r['partition']}", "offset": r["offset"]}}
            for r in sorted(victim_records, key=lambda r: r["offset"])
        ]
    }
    assert stored_ids(ddb, config) == expected  # its alert was written before the save failed

    store.broken = ""
    retry = detector.process(event)
    assert retry.failures == ()
    assert retry.keys == 60 and retry.applied == len(victim_records)
    assert stored_ids(ddb, config) == expected
    assert (retry.alerts, retry.new_alerts) == (1, 0)  # emitted again, not written again


def test_the_state_item_size_limit_is_a_clear_error(ddb: Any) -> None:
    store = KeyStateStore(unique("state"), ddb)
    with pytest.raises(StateTooLarge, match=rf"over DynamoDB's item limit of {MAX_ITEM_BYTES}"):
        store.save(
            KeyState('"u1"'),
            state=b"x" * MAX_ITEM_BYTES,
            offsets={f"{TOPIC}-0": 1},
            rules="digest",
            due=None,
            now_ms=0,
        )


def test_rules_can_change_between_batches(
    config: DetectorConfig, ddb: Any, records: list[dict[str, Any]], tmp_path: Path
) -> None:
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
    changed = text.split("- id: geo-hop")[0].replace(
        "  version: 1\n  key: user_id\n  within: 5m", "  version: 2\n  key: user_id\n  within: 5m"
    )
    changed = changed.replace("where: amount > 2000", "where: amount > 2500")
    path = tmp_path / "rules.yaml"
    path.write_text(changed, encoding="utf-8")
    new_rules = load_rule_file(path)
    assert [d.id for d in new_rules] == ["high-value-3-in-5m", "card-testing"]

    old = Detector.from_config(config, dynamodb=ddb)
    assert old.process(msk_event(records[:300])).failures == ()
    new = Detector.from_config(attrs.evolve(config, rules=str(path)), dynamodb=ddb)
    assert new.process(msk_event(records[300:])).failures == ()

    expected = reference_ids(records, change_at=300, then=new_rules)
    assert stored_ids(ddb, config) == expected
    assert expected != reference_ids(records)  # the change mattered
    state = scan(ddb, config.state_table)
    assert new.rules.digest in {i["rules"]["S"] for i in state if "rules" in i}
    stored_rules = {i["pk"]["S"] for i in state if i["pk"]["S"].startswith("rules#")}
    assert stored_rules == {f"rules#{old.rules.digest}", f"rules#{new.rules.digest}"}
    old.close()
    new.close()


TWICE = """
- id: big-twice
  version: 2
  key: user_id
  within: 5m
  pattern:
    - {name: a, where: amount > 100}
    - {name: b, where: amount > 100}
"""


def test_a_refused_older_rule_version_keeps_a_keys_rules_as_in_the_runner(
    config: DetectorConfig, ddb: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    newer = tmp_path / "newer.yaml"
    newer.write_text(TWICE, encoding="utf-8")
    older = tmp_path / "older.yaml"  # a rollback: version 1, another threshold
    older.write_text(
        TWICE.replace("version: 2", "version: 1").replace("> 100", "> 1000"), encoding="utf-8"
    )
    t = 1_700_000_000_000
    first = Detector.from_config(attrs.evolve(config, rules=str(newer)), dynamodb=ddb)
    assert first.process(msk_event([record(payment("u1", t, 500.0, n=0), 0, 0)])).failures == ()
    first.close()

    # the runner refuses the same change on an engine that runs version 2 ...
    engine = Engine([], timestamp="ts")
    reconcile(engine, load_rule_file(newer))
    assert reconcile(engine, load_rule_file(older)).refused is not None
    assert engine.rule_versions() == {"big-twice": 2}

    # ... and so does the detector: u1's records stay on version 2 (its second payment
    # completes the match), while u2, a key without state, starts on the file's version 1
    second = Detector.from_config(attrs.evolve(config, rules=str(older)), dynamodb=ddb)
    batch = [
        payment("u1", t + 1_000, 500.0, n=1),
        payment("u2", t + 2_000, 500.0, n=0),
        payment("u2", t + 3_000, 500.0, n=1),
        payment("u3", t + 60_000, 5.0, n=0),  # moves the partition's event time past them
    ]
    with caplog.at_level(logging.DEBUG, logger=lambda_detector.__name__):
        report = second.process(msk_event([record(p, 0, i + 1) for i, p in enumerate(batch)]))
    assert report.failures == () and report.state_resets == 0
    alerts = stored_alerts(ddb, config)
    assert [(a["key"], a["rule_version"]) for a in alerts] == [('"u1"', 2)]
    assert second.refused_rule_changes >= 1
    refusals = [r for r in caplog.records if r.getMessage().startswith("rule change refused")]
    assert [r.levelno for r in refusals][:1] == [logging.ERROR]
    assert all(r.levelno == logging.DEBUG for r in refusals[1:])  # said once per rule file
    assert "older than the running version 2" in refusals[0].getMessage()
    rules_of = {
        i["pk"]["S"]: i["rules"]["S"] for i in scan(ddb, config.state_table) if "rules" in i
    }
    assert rules_of['key#"u1"'] == first.rules.digest
    assert rules_of['key#"u2"'] == second.rules.digest
    second.close()


# == malformed input =========================================================================


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "a Kafka event is a JSON object, got an array"),
        ({"eventSource": "aws:kafka"}, '"records".*missing'),
        ({"eventSource": "aws:kafka", "records": []}, '"records".*an array'),
        ({"eventSource": "aws:sqs", "records": {}}, "not a Kafka event: eventSource is 'aws:sqs'"),
        ({"records": {}}, "not a Kafka event: eventSource is None"),
        ({"eventSource": "SelfManagedKafka", "records": {"t-0": {}}}, r"records\['t-0'\]"),
    ],
)
def test_events_that_are_not_kafka_batches_are_refused(
    detector: Detector, event: Any, message: str
) -> None:
    with pytest.raises(KafkaEventError, match=message):
        detector.process(event)


def _bad_records() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A batch of valid and malformed records, and the dead-letter reason of each bad one."""
    t = 1_700_000_000_000
    good = [payment("u-ok", t + i * 10_000, 2600.0, n=i) for i in range(4)]
    records = [record(p, 0, i) for i, p in enumerate(good)]
    reasons = {}

    def add(r: dict[str, Any], reason: str, where: str | None = None) -> None:
        records.append(r)
        reasons[where or f"{r['topic']}/{r['partition']}/{r['offset']}"] = reason

    base = payment("u-bad", t, 10.0, n=0)
    add({**record(base, 0, 10), "value": "%%% not base64 %%%"}, "bad_base64")
    add({**record(base, 0, 11), "value": b64(b"{not json")}, "bad_json")
    add({**record(base, 0, 12), "value": b64(b"\xff\xfe")}, "not_utf8")
    add({**record({**base, "amount": "ten"}, 0, 13)}, "wrong_type")
    add({**record({k: v for k, v in base.items() if k != "user_id"}, 0, 14)}, "missing_field")
    add({**record(base, 0, 15), "value": None}, "empty")
    add({**record(base, 0, 16), "value": 12345}, "bad_record")
    add({**record(base, 0, 17), "timestamp": "yesterday"}, "bad_record")
    add({**record(base, 0, 18), "headers": [{"h": [300]}]}, "bad_record")
    add({**record(base, 0, 19), "key": "%%%"}, "bad_base64")
    moved = {**record(base, 0, 20), "partition": 1}  # listed under payments.raw-0 below
    add(moved, "bad_record", f"{TOPIC}/1/20")
    no_offset = {**record(base, 0, 0)}
    del no_offset["offset"]
    records.append(no_offset)
    reasons["no-offset"] = "bad_record"
    return records, reasons


def test_malformed_records_are_dead_lettered_and_the_rest_is_processed(
    detector: Detector, ddb: Any, config: DetectorConfig
) -> None:
    records, reasons = _bad_records()
    event = msk_event(records)
    event["records"][f"{TOPIC}-0"].extend(event["records"].pop(f"{TOPIC}-1"))
    report = detector.process(event)

    assert report.failures == () and report.response() == {"batchItemFailures": []}
    assert report.records == len(records)
    assert report.dead_lettered == len(reasons)
    assert report.applied == 4 and report.new_alerts == 1  # u-ok's burst, released by its 4th
    letters = dead_letters(ddb, config)
    assert len(letters) == len(reasons)
    by_id = {i: item["reason"]["S"] for i, item in letters.items()}
    for where, reason in reasons.items():
        if where == "no-offset":
            (no_offset,) = [i for i in by_id if i.startswith(f"{TOPIC}-0#")]
            assert by_id[no_offset] == reason
            assert "offset: expected an integer >= 0, got None" in letters[no_offset]["detail"]["S"]
        else:
            assert by_id[where] == reason, where
    json_letter = letters[f"{TOPIC}/0/11"]
    assert json_letter["value"]["B"] == b"{not json"
    assert json_letter["partition"] == {"N": "0"} and json_letter["offset"] == {"N": "11"}
    assert "not valid JSON" in json_letter["detail"]["S"]

    again = detector.process(event)  # a retry dead-letters nothing twice
    assert again.dead_lettered == len(reasons) and again.applied == 0
    assert dead_letters(ddb, config).keys() == letters.keys()


def test_late_records_are_dead_lettered(
    detector: Detector, ddb: Any, config: DetectorConfig
) -> None:
    t = 1_700_000_000_000
    first = payment("u-late", t + 60_000, 10.0, n=0)
    late = payment("u-late", t, 10.0, n=1)  # before its key's watermark
    detector.process(
        msk_event([record(first, 0, 0), record(payment("u-x", t + 90_000, 5, n=0), 0, 1)])
    )
    report = detector.process(msk_event([record(late, 0, 2)]))
    assert report.dead_lettered == 1 and report.failures == ()
    letter = dead_letters(ddb, config)[f"{TOPIC}/0/2"]
    assert letter["reason"]["S"] == "late"
    assert "<= watermark" in letter["detail"]["S"]


DEVICE_RULES = """
- id: device-burst
  key: device_id
  within: 5m
  skip: skip_past_last_event
  pattern:
    - name: first
      where: amount > 2000
      times: 3
"""


def test_payments_the_rules_cannot_read_are_dead_lettered(
    config: DetectorConfig, ddb: Any, tmp_path: Path
) -> None:
    path = tmp_path / "device.yaml"
    path.write_text(DEVICE_RULES, encoding="utf-8")
    detector = Detector.from_config(attrs.evolve(config, rules=str(path)), dynamodb=ddb)
    t = 1_700_000_000_000
    payments = [
        {**payment("u-dev", t + i * 10_000, 2500.0, n=i), "device_id": "d-1"} for i in range(5)
    ]
    del payments[1]["device_id"]  # valid as a payment, but the rule is keyed by it
    report = detector.process(msk_event([record(p, 0, i) for i, p in enumerate(payments)]))
    assert report.failures == () and report.dead_lettered == 1 and report.new_alerts == 1
    letter = dead_letters(ddb, config)[f"{TOPIC}/0/1"]
    assert letter["reason"]["S"] == "bad_event"
    assert "no field 'device_id'" in letter["detail"]["S"]
    (alert,) = stored_alerts(ddb, config)
    assert [e["payment_id"] for e in alert["events"]["first"]] == [
        "p-u-dev-0",
        "p-u-dev-2",
        "p-u-dev-3",
    ]
    detector.close()


def test_records_whose_dead_letter_cannot_be_written_fail(config: DetectorConfig, ddb: Any) -> None:
    broken = attrs.evolve(config, dead_letter_table=unique("no-such-table"))
    detector = Detector.from_config(broken, dynamodb=ddb)
    base = payment("u-bad", 1_700_000_000_000, 10.0, n=0)
    records = [
        {**record(base, 0, 7), "value": b64(b"[]")},
        {**record(base, 1, 3), "value": "%%%"},
        record(payment("u-good", 1_700_000_000_000, 10.0, n=1), 1, 4),
    ]
    report = detector.process(msk_event(records))
    assert report.response() == batch_response([(f"{TOPIC}-0", 7), (f"{TOPIC}-1", 3)])
    assert report.applied == 1
    no_offset = {**records[1]}
    del no_offset["offset"]
    with pytest.raises(lambda_detector.DetectorError, match="has no offset and could not"):
        detector.process(msk_event([no_offset]))
    detector.close()


def test_without_a_dead_letter_table_the_log_keeps_the_record(
    config: DetectorConfig, ddb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    detector = Detector.from_config(attrs.evolve(config, dead_letter_table=None), dynamodb=ddb)
    value = b'{"payment_id": "p1"}'
    with caplog.at_level(logging.WARNING, logger="fraudcep_aws.lambda_detector"):
        report = detector.process(
            msk_event([{**record(payment("u", 1, 1.0, n=0), 0, 5), "value": b64(value)}])
        )
    assert report.dead_lettered == 1
    (line,) = [r.getMessage() for r in caplog.records if "dead letter" in r.getMessage()]
    fields = json.loads(line[line.index("{") :])
    assert fields["id"] == f"{TOPIC}/0/5" and fields["reason"] == "missing_field"
    assert base64.b64decode(fields["value_b64"]) == value
    detector.close()


# == poison records ==========================================================================


def _poison(engine: Engine, fail_process: frozenset[str], fail_snapshot: frozenset[str]) -> None:
    """Make ``engine`` raise the way a bug triggered by data would: ``process`` for the
    payment ids in ``fail_process``; ``export_key`` (the key's state written out) once it
    has taken one of ``fail_snapshot``."""
    real_process, real_export = engine.process, engine.export_key
    held: list[str] = []

    def process(event: Any) -> Any:
        payment_id = event.get("payment_id")
        if payment_id in fail_process:
            raise RuntimeError(f"injected failure on {payment_id}")
        if payment_id in fail_snapshot:
            held.append(payment_id)
        return real_process(event)

    def export_key(group: str, key: Any) -> bytes | None:
        if held:
            raise RecursionError("injected: maximum recursion depth exceeded")
        return real_export(group, key)

    engine.process = process  # type: ignore[method-assign]
    engine.export_key = export_key  # type: ignore[method-assign]


class _PoisonDetector(Detector):
    """A detector whose engines fail on chosen payments (a test hook, see :func:`_poison`)."""

    fail_process: frozenset[str] = frozenset()
    fail_snapshot: frozenset[str] = frozenset()

    def _new_engine(self, outputs: Any, definitions: Any = None) -> Engine:
        engine = super()._new_engine(outputs, definitions)
        _poison(engine, self.fail_process, self.fail_snapshot)
        return engine


def _poison_detector(config: DetectorConfig, ddb: Any, **fail: frozenset[str]) -> _PoisonDetector:
    detector = _PoisonDetector.from_config(config, dynamodb=ddb)
    assert isinstance(detector, _PoisonDetector)
    for name, ids in fail.items():
        setattr(detector, name, ids)
    return detector


T = 1_700_000_000_000


def _burst_with_poison(user: str, first_offset: int, t: int) -> list[dict[str, Any]]:
    """Three high payments of ``user`` (one alert of high-value-3-in-5m) with a small one
    in between (the poison), and a payment of another user long after that moves the
    partition's event time past them: all on partition 0 from ``first_offset``."""
    payments = [
        payment(user, t, 2500.0, n=first_offset),
        payment(user, t + 5_000, 10.0, n=first_offset + 1),
        payment(user, t + 10_000, 2600.0, n=first_offset + 2),
        payment(user, t + 20_000, 2700.0, n=first_offset + 3),
        payment(f"{user}-other", t + 600_000, 5.0, n=first_offset + 4),
    ]
    return [record(p, 0, first_offset + i) for i, p in enumerate(payments)]


def test_a_poison_record_is_dead_lettered_at_the_third_failure_and_the_key_goes_on(
    config: DetectorConfig, ddb: Any
) -> None:
    records = _burst_with_poison("u-poison", 0, T)
    poison = value_of(records[1])["payment_id"]
    detector = _poison_detector(config, ddb, fail_process=frozenset({poison}))
    event = msk_event(records)
    user_records = [(f"{TOPIC}-0", r["offset"]) for r in records[:4]]
    for attempt in (1, 2):
        report = detector.process(event)
        assert report.failures == tuple(user_records)  # the key's records come again
        assert list(report.failed_keys) == ['"u-poison"']
        assert "process failed: RuntimeError: injected failure" in report.failed_keys['"u-poison"']
        assert detector.state.failure_count(f"{TOPIC}-0/1") == (attempt, "process:RuntimeError")
        assert stored_ids(ddb, config) == set()  # a failing attempt writes no alert
    assert dead_letters(ddb, config) == {}

    third = detector.process(event)
    assert third.failures == () and third.response() == {"batchItemFailures": []}
    assert third.dead_lettered == 1 and third.applied == 3
    letter = dead_letters(ddb, config)[f"{TOPIC}/0/1"]
    assert letter["reason"]["S"] == "processing_failed"
    assert letter["detail"]["S"].startswith(
        "failed 3 times the same way: process: RuntimeError: injected failure on"
    )
    assert json.loads(letter["value"]["B"])["payment_id"] == poison
    without_poison = [r for r in records if value_of(r)["payment_id"] != poison]
    assert stored_ids(ddb, config) == reference_ids(without_poison) != set()

    # the key's next payments are detected as before, and the batch once more changes nothing
    assert detector.process(event).applied == 0
    later = _burst_with_poison("u-poison", 5, T + 1_000_000)
    del later[1]
    for i, r in enumerate(later):
        r["offset"] = 5 + i
    report = detector.process(msk_event(later))
    assert report.failures == () and report.new_alerts == 1
    assert stored_ids(ddb, config) == reference_ids(without_poison + later)
    detector.close()


def test_a_record_that_breaks_the_snapshot_is_found_and_dead_lettered_after_n(
    config: DetectorConfig, ddb: Any
) -> None:
    records = _burst_with_poison("u-snap", 0, T)
    poison = value_of(records[1])["payment_id"]
    twice = attrs.evolve(config, max_record_failures=2)
    detector = _poison_detector(twice, ddb, fail_snapshot=frozenset({poison}))
    event = msk_event(records)
    first = detector.process(event)
    assert len(first.failures) == 4
    assert detector.state.failure_count(f"{TOPIC}-0/1") == (1, "snapshot:RecursionError")
    second = detector.process(event)
    assert second.failures == () and second.dead_lettered == 1
    letter = dead_letters(ddb, config)[f"{TOPIC}/0/1"]
    assert letter["reason"]["S"] == "processing_failed"
    assert "failed 2 times the same way: snapshot: RecursionError" in letter["detail"]["S"]
    without_poison = [r for r in records if value_of(r)["payment_id"] != poison]
    assert stored_ids(ddb, config) == reference_ids(without_poison) != set()
    detector.close()


def test_a_different_failure_starts_the_count_again(config: DetectorConfig, ddb: Any) -> None:
    records = _burst_with_poison("u-two-ways", 0, T)
    poison = value_of(records[1])["payment_id"]
    event = msk_event(records)
    by_process = _poison_detector(config, ddb, fail_process=frozenset({poison}))
    by_snapshot = _poison_detector(config, ddb, fail_snapshot=frozenset({poison}))
    for detector, expected in ((by_process, 1), (by_process, 2), (by_snapshot, 1)):
        assert detector.process(event).failures != ()
        count, _ = detector.state.failure_count(f"{TOPIC}-0/1")
        assert count == expected
    assert dead_letters(ddb, config) == {}
    by_process.close()
    by_snapshot.close()


def test_concurrent_invocations_count_every_failure_once(config: DetectorConfig, ddb: Any) -> None:
    records = _burst_with_poison("u-race-poison", 0, T)
    poison = value_of(records[1])["payment_id"]
    event = msk_event(records)
    barrier = threading.Barrier(2)
    detectors = []
    for _ in range(2):
        d = _poison_detector(
            config, client(ddb.meta.endpoint_url, "dynamodb"), fail_process=frozenset({poison})
        )
        d.state = _BarrierStore(config.state_table, d.state.client)
        d.state.barrier = barrier
        detectors.append(d)
    reports = _race(detectors, [event, event])
    assert all(len(r.failures) == 4 for r in reports)
    assert detectors[0].state.failure_count(f"{TOPIC}-0/1") == (2, "process:RuntimeError")
    detectors[0].state.barrier = None
    third = detectors[0].process(event)
    assert third.failures == () and third.dead_lettered == 1
    for d in detectors:
        d.close()


def test_a_stored_state_that_cannot_be_restored_is_given_up_after_n(
    detector: Detector, ddb: Any, config: DetectorConfig, caplog: pytest.LogCaptureFixture
) -> None:
    user = "u-corrupt"
    first = [record(payment(user, T + i * 10_000, 2500.0 + i, n=i), 0, i) for i in range(2)]
    assert detector.process(msk_event(first)).failures == ()
    ddb.update_item(  # the stored state is damaged
        TableName=config.state_table,
        Key={"pk": {"S": f'key#"{user}"'}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"B": b"not a key state"}},
    )
    third = [record(payment(user, T + 20_000, 2600.0, n=2), 0, 2)]
    for attempt in (1, 2):
        report = detector.process(msk_event(third))
        assert report.failures == ((f"{TOPIC}-0", 2),)
        count, signature = detector.state.failure_count(f'key/"{user}"')
        assert count == attempt and signature is not None and signature.startswith("restore:")
    with caplog.at_level(logging.ERROR, logger="fraudcep_aws.lambda_detector"):
        report = detector.process(msk_event(third))
    assert report.failures == () and report.state_resets == 1 and report.applied == 1
    assert any("starting the key afresh" in r.getMessage() for r in caplog.records)
    assert detector.state.failure_count(f'key/"{user}"') == (0, None)
    assert stored_ids(ddb, config) == set()  # the partial match was lost with the state
    # and the key detects again
    burst = [record(payment(user, T + 900_000 + i * 10_000, 3000.0, n=10 + i), 0, 3 + i)
             for i in range(3)]  # fmt: skip
    burst.append(record(payment("u-later", T + 2_000_000, 1.0, n=1), 0, 6))
    report = detector.process(msk_event(burst))
    assert report.failures == () and report.new_alerts == 1


def test_a_due_key_whose_state_cannot_be_restored_is_given_up_after_n(
    detector: Detector, ddb: Any, config: DetectorConfig
) -> None:
    user = "u-due-corrupt"
    burst = [record(payment(user, T + i * 10_000, 2500.0 + i, n=i), 0, i) for i in range(3)]
    assert detector.process(msk_event(burst)).failures == ()  # the third waits: due
    ddb.update_item(
        TableName=config.state_table,
        Key={"pk": {"S": f'key#"{user}"'}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"B": b"not a key state"}},
    )
    for n in range(3):  # other keys' batches move the partition's event time past it
        other = record(payment(f"u-other-{n}", T + 60_000 + n, 1.0, n=n), 0, 3 + n)
        report = detector.process(msk_event([other]))
        assert report.failures == ()  # a key outside the batch never fails the batch
        assert report.state_resets == (1 if n == 2 else 0)
    assert detector.state.failure_count(f'key/"{user}"') == (0, None)
    # no longer waiting (u-other-2 holds its payment, the partition's newest, for event time)
    assert detector.state.due_keys(f"{TOPIC}-0", T + 10**9) == ['"u-other-2"']
    assert stored_ids(ddb, config) == set()


# == the event format ========================================================================


def test_parse_the_documented_event_shape() -> None:
    event = {
        "eventSource": "SelfManagedKafka",
        "bootstrapServers": "b-2.demo:9092,b-1.demo:9092",
        "records": {
            "mytopic-0": [
                {
                    "topic": "mytopic",
                    "partition": 0,
                    "offset": 15,
                    "timestamp": 1545084650987,
                    "timestampType": "CREATE_TIME",
                    "key": "cmVjb3JkS2V5",
                    "value": "eyJrZXkiOiJ2YWx1ZSJ9",
                    "headers": [
                        {"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}
                    ],
                },
                {"topic": "mytopic", "partition": 0, "offset": 16, "timestamp": 1545084650988},
            ]
        },
    }
    batch = parse_kafka_event(event)
    assert batch.source == "SelfManagedKafka" and batch.source_arn is None and batch.bad == ()
    first, tombstone = batch.records
    assert (first.partition_key, first.topic, first.partition, first.offset) == (
        "mytopic-0",
        "mytopic",
        0,
        15,
    )
    assert first.key == b"recordKey" and first.value == b'{"key":"value"}'
    assert first.headers == (("headerKey", b"headerValue"),)
    assert (tombstone.key, tombstone.value, tombstone.headers) == (None, None, ())
    assert batch_response([("mytopic-0", 16), ("mytopic-0", 15), ("mytopic-0", 16)]) == {
        "batchItemFailures": [
            {"itemIdentifier": {"partition": "mytopic-0", "offset": 15}},
            {"itemIdentifier": {"partition": "mytopic-0", "offset": 16}},
        ]
    }


# == the handler =============================================================================


@pytest.fixture
def lambda_env(
    config: DetectorConfig, aws_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("FRAUDCEP_ALERTS_TABLE", config.alerts_table)
    monkeypatch.setenv("FRAUDCEP_STATE_TABLE", config.state_table)
    monkeypatch.setenv("FRAUDCEP_DEAD_LETTER_TABLE", config.dead_letter_table or "")
    monkeypatch.setattr(lambda_detector, "_detector", None)
    yield
    if lambda_detector._detector is not None:
        lambda_detector._detector.close()
    monkeypatch.setattr(lambda_detector, "_detector", None)


def test_handler_answers_the_partial_batch_response(
    lambda_env: None,
    ddb: Any,
    config: DetectorConfig,
    records: list[dict[str, Any]],
    expected: set[str],
) -> None:
    assert handler(msk_event(records), None) == {"batchItemFailures": []}
    assert stored_ids(ddb, config) == expected
    assert lambda_detector._detector is not None
    assert lambda_detector._detector.config == DetectorConfig(
        alerts_table=config.alerts_table,
        state_table=config.state_table,
        dead_letter_table=config.dead_letter_table,
    )


def test_handler_writes_alert_metrics_per_rule_and_mode(
    lambda_env: None,
    capsys: pytest.CaptureFixture[str],
    records: list[dict[str, Any]],
    expected: set[str],
) -> None:
    assert handler(msk_event(records), None) == {"batchItemFailures": []}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert {(m["rule_id"], m["mode"]) for m in lines} == {
        (d.id, "live") for d in default_rule_definitions()
    }
    assert sum(m["NewAlerts"] for m in lines) == len(expected)
    for m in lines:  # CloudWatch's embedded metric format: the line is the metric
        (directive,) = m["_aws"]["CloudWatchMetrics"]
        assert directive == {
            "Namespace": "fraudcep",
            "Dimensions": [["rule_id", "mode"]],
            "Metrics": [
                {"Name": "Alerts", "Unit": "Count"},
                {"Name": "NewAlerts", "Unit": "Count"},
            ],
        }
        assert isinstance(m["_aws"]["Timestamp"], int)
    assert handler(msk_event(records), None) == {"batchItemFailures": []}
    assert '"_aws"' not in capsys.readouterr().out  # nothing new: no alert metrics


def test_handler_raises_to_retry_the_batch_when_asked(
    lambda_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUDCEP_DEAD_LETTER_TABLE", unique("no-such-table"))
    monkeypatch.setenv("FRAUDCEP_ON_FAILURE", "raise")
    bad = {**record(payment("u", 1, 1.0, n=0), 0, 3), "value": b64(b"nope")}
    with pytest.raises(BatchFailed, match="1 record"):
        handler(msk_event([bad]), None)
    with pytest.raises(KafkaEventError):
        handler({"eventSource": "aws:kafka"}, None)


TABLES = {"FRAUDCEP_ALERTS_TABLE": "alerts", "FRAUDCEP_STATE_TABLE": "state"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "FRAUDCEP_ALERTS_TABLE is not set"),
        ({"FRAUDCEP_ALERTS_TABLE": "a"}, "FRAUDCEP_STATE_TABLE is not set"),
        ({**TABLES, "FRAUDCEP_ON_FAILURE": "ignore"}, "expected one of report, raise"),
        ({**TABLES, "FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS": "-5"}, "max_out_of_orderness"),
        ({**TABLES, "FRAUDCEP_MAX_OUT_OF_ORDERNESS": "5 fortnights"}, "max_out_of_orderness"),
        (
            {
                **TABLES,
                "FRAUDCEP_MAX_OUT_OF_ORDERNESS": "5m",
                "FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS": "1",
            },
            "both set",
        ),
        ({**TABLES, "FRAUDCEP_WORKERS": "0"}, "workers"),
        ({**TABLES, "FRAUDCEP_MAX_RECORD_FAILURES": "0"}, "max_record_failures: must be > 0"),
        ({**TABLES, "FRAUDCEP_MAX_RECORD_FAILURES": "three"}, "expected an integer"),
        (
            {**TABLES, "FRAUDCEP_STATE_KEY": "short-secret"},
            "state_key: a state key must be at least 16",
        ),
    ],
)
def test_bad_configuration_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        DetectorConfig.from_env(env)
    assert "short-secret" not in str(raised.value)


def test_configuration_from_the_environment() -> None:
    config = DetectorConfig.from_env(
        {
            "FRAUDCEP_ALERTS_TABLE": "alerts",
            "FRAUDCEP_STATE_TABLE": "state",
            "FRAUDCEP_DEAD_LETTER_TABLE": " ",
            "FRAUDCEP_KEY_FIELD": "card_id",
            "FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS": "2000",
            "FRAUDCEP_ON_FAILURE": "raise",
            "FRAUDCEP_MAX_RECORD_FAILURES": "5",
        }
    )
    assert config.max_record_failures == 5
    assert config.dead_letter_table is None and config.key_field == "card_id"
    assert config.max_out_of_orderness == 2000 and config.on_failure == "raise"
    assert config.timestamp_field == "ts" and config.rules is None
    assert config.event_id_field == "payment_id"
    no_ids = DetectorConfig.from_env(
        {
            "FRAUDCEP_ALERTS_TABLE": "a",
            "FRAUDCEP_STATE_TABLE": "s",
            "FRAUDCEP_EVENT_ID_FIELD": "none",
        }
    )
    assert no_ids.event_id_field is None
    assert no_ids.max_record_failures == 3


@pytest.mark.parametrize(
    ("variable", "value", "ms"),
    [
        ("FRAUDCEP_MAX_OUT_OF_ORDERNESS", "5m", 300_000),
        ("FRAUDCEP_MAX_OUT_OF_ORDERNESS", "250ms", 250),
        ("FRAUDCEP_MAX_OUT_OF_ORDERNESS", "1500", 1500),
        ("FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS", "2000", 2000),  # the older name, still read
        ("FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS", "10s", 10_000),  # with the same syntax
    ],
)
def test_the_lambda_reads_the_runners_names_and_durations(
    variable: str, value: str, ms: int
) -> None:
    config = DetectorConfig.from_env({**TABLES, variable: value})
    assert config.max_out_of_orderness == ms
    assert config.engine.engine_kwargs()["max_out_of_orderness"] == ms
    # the runner reads the same variable the same way
    runner = from_sources({}, environ={variable: value})
    assert runner.max_out_of_orderness == ms
    assert EngineOptions.of(runner).max_out_of_orderness == ms


def test_every_shared_option_is_a_detector_option_with_the_same_default() -> None:
    config = DetectorConfig.from_env(TABLES)
    names = {o.name for o in DETECTOR_OPTIONS}
    for option in ENGINE_OPTIONS:
        assert option.name in names
        assert getattr(config, option.name) == option.default, option.name
    assert config.engine == EngineOptions()
    values = {
        "FRAUDCEP_MAX_PARTIAL_MATCHES_PER_KEY": "7",
        "FRAUDCEP_MAX_BUFFERED_EVENTS": "11",
        "FRAUDCEP_EVENT_ID_FIELD": "off",
        "FRAUDCEP_STATE_KEY": "k" * 20,
    }
    engine = DetectorConfig.from_env({**TABLES, **values}).engine
    assert engine == EngineOptions(
        max_partial_matches_per_key=7,
        max_buffered_events=11,
        event_id_field=None,
        state_key="k" * 20,
    )
