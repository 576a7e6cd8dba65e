"""The Lambda detector's per-key records, against moto's server over HTTP: the detector's
alerts equal, id for id, those of the core engine run over each partition (the Kafka
runner's model), whatever the batching and the disorder; items of earlier releases (a
whole-engine snapshot per key, format 1 and 2) are read and rewritten; a damaged item or one
written with another state key is refused and counted by the poison-record policy."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from support.aws_server import client, unique
from support.lambda_events import (
    TOPIC,
    kafka_records,
    msk_event,
    payment,
    record,
    scan,
    stored_alerts,
    stored_ids,
    value_of,
)
from support.paths import DATA

from fraudcep import Engine
from fraudcep.errors import ConfigurationError
from fraudcep.payments.default_rules import DEFAULT_RULES_FILE, default_rule_definitions
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep.rules import RuleDefinition, apply_definitions, load_rule_file
from fraudcep_aws.dynamodb import create_alerts_table
from fraudcep_aws.key_state import (
    STATE_MAGIC,
    StoredKey,
    StoredRecord,
    create_state_table,
    decode_key_state,
    encode_key_state,
)
from fraudcep_aws.lambda_detector import (
    Detector,
    DetectorConfig,
    create_dead_letter_table,
)

pytestmark = pytest.mark.aws

OLD_ITEMS = DATA / "lambda-state-old"
T = 1_700_000_000_000
KEY_A = "a state key of the detector, 1"
KEY_B = "another state key, not the same"


# == the reference ===========================================================================


def engine_alerts(
    records: Sequence[dict[str, Any]],
    *,
    lag: int = 0,
    definitions: Sequence[RuleDefinition] | None = None,
    change_at: int | None = None,
    then: Sequence[RuleDefinition] = (),
) -> dict[str, int]:
    """Alert id -> index of the record whose processing emitted it, from one engine per
    partition over ``records`` (the Kafka runner's model), with the rules changed to
    ``then`` before record ``change_at``."""
    defs = list(definitions or default_rule_definitions())
    emitted: dict[str, int] = {}
    for partition in sorted({r["partition"] for r in records}):
        engine = Engine([], timestamp="ts", event_id="payment_id", max_out_of_orderness=lag)
        apply_definitions(engine, defs)
        for index, r in enumerate(records):
            if index == change_at:
                apply_definitions(engine, then)
            if r["partition"] == partition:
                for alert in engine.process(value_of(r)):
                    assert alert.alert_id not in emitted
                    emitted[alert.alert_id] = index
    return emitted


# == fixtures ================================================================================


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
    return DetectorConfig(**names)  # type: ignore[arg-type]


def detector_of(config: DetectorConfig, ddb: Any, **changes: Any) -> Detector:
    return Detector.from_config(attrs.evolve(config, **changes), dynamodb=ddb)


@pytest.fixture
def detectors() -> Iterator[list[Detector]]:
    made: list[Detector] = []
    yield made
    for d in made:
        d.close()


def key_items(ddb: Any, config: DetectorConfig) -> dict[str, dict[str, Any]]:
    return {
        i["pk"]["S"][len("key#") :]: i
        for i in scan(ddb, config.state_table)
        if i["pk"]["S"].startswith("key#")
    }


def stored_key(item: dict[str, Any], state_key: str | None = None) -> StoredKey:
    """The state an item holds, decoded as the detector reads it."""
    return decode_key_state(
        bytes(item["state"]["B"]),
        key=item["pk"]["S"][len("key#") :],
        rules=item["rules"]["S"],
        offsets={tp: int(v["N"]) for tp, v in item["offsets"]["M"].items()},
        state_key=state_key.encode() if state_key else None,
    )


def cuts(n: int, seed: int, pieces: int) -> list[tuple[int, int]]:
    points = sorted(random.Random(seed).sample(range(1, n), pieces - 1))
    return list(zip([0, *points], [*points, n], strict=True))


# == equivalence =============================================================================


@pytest.mark.parametrize(
    ("jitter", "pieces"),
    [pytest.param(0, 12, id="in-order"), pytest.param(20_000, 16, id="out-of-order-20s")],
)
def test_alerts_equal_the_engines_id_for_id_whatever_the_batching_and_disorder(
    jitter: int, pieces: int, config: DetectorConfig, ddb: Any, detectors: list[Detector]
) -> None:
    generator = PaymentGenerator(
        seed=31, users=40, rate=2.0, scenarios_per_10k=400, jitter_ms=jitter
    )
    payments, scenarios = generator.generate(900)
    assert len(scenarios) >= 20
    records = kafka_records(payments)
    expected = engine_alerts(records, lag=jitter)
    assert len(expected) >= 15

    detector = detector_of(config, ddb, max_out_of_orderness=jitter, workers=3)
    detectors.append(detector)
    written = 0
    timer_keys = 0
    moved_alerts = 0  # written for a key that had no record in the batch
    held = 0
    seen: set[str] = set()
    for start, end in cuts(len(records), seed=jitter + 1, pieces=pieces):
        batch = records[start:end]
        report = detector.process(msk_event(batch))
        assert report.failures == () and report.dead_lettered == 0
        written += report.new_alerts
        timer_keys += report.timer_keys
        now = {a["alert_id"]: a for a in stored_alerts(ddb, config)}
        batch_keys = {json.dumps(value_of(r)["user_id"]) for r in batch}
        for alert_id in now.keys() - seen:
            user = now[alert_id]["events"]
            users = {e["user_id"] for events in user.values() for e in events}
            if not {json.dumps(u) for u in users} & batch_keys:
                moved_alerts += 1
        seen = set(now)
        held = max(held, sum(len(stored_key(i).held) for i in key_items(ddb, config).values()))

    assert stored_ids(ddb, config) == set(expected)
    assert written == len(expected)
    assert timer_keys > 0 and moved_alerts > 0  # windows closed by the timers index
    items = key_items(ddb, config).values()
    assert all("state" in i and "snapshot" not in i for i in items)
    if jitter:
        assert held > 0  # events waited for event time in the items


def test_the_state_item_holds_records_held_events_and_the_keys_clock(
    config: DetectorConfig, ddb: Any, detectors: list[Detector]
) -> None:
    detector = detector_of(config, ddb, max_out_of_orderness=30_000)
    detectors.append(detector)
    burst = [payment("u-hold", T + i * 10_000, 2500.0 + i, n=i) for i in range(3)]
    report = detector.process(msk_event([record(p, 0, i) for i, p in enumerate(burst)]))
    assert (report.applied, report.alerts) == (3, 0)

    item = key_items(ddb, config)['"u-hold"']
    assert bytes(item["state"]["B"]).startswith(STATE_MAGIC)
    stored = stored_key(item)
    # watermark = highest event time - 30 s - 1 ms: below every payment, all held
    assert stored.watermark == T + 20_000 - 30_001
    assert [(h.ts, h.topic, h.partition, h.offset) for h in stored.held] == [
        (T + i * 10_000, TOPIC, 0, i) for i in range(3)
    ]
    assert json.loads(stored.held[1].value)["payment_id"] == "p-u-hold-1"
    assert stored.records == []  # nothing processed yet: no engine state
    assert stored.due == T == int(item["next_due"]["N"])
    assert item["timer_partition"] == {"S": f"{TOPIC}-0"}

    later = payment("u-other", T + 51_000, 1.0, n=7)
    report = detector.process(msk_event([record(later, 0, 3)]))
    assert report.timer_keys == 1 and report.new_alerts == 1
    stored = stored_key(key_items(ddb, config)['"u-hold"'])
    assert stored.held == [] and stored.watermark == T + 51_000 - 30_001
    assert {r.group for r in stored.records} <= {"user_id", "card_id"}
    assert stored.due is None or stored.due > T + 51_000 - 30_001


# == items of earlier releases ===============================================================


def _changed_rules(tmp_path: Path) -> Path:
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
    changed = text.replace(
        "  version: 1\n  key: user_id\n  within: 5m", "  version: 2\n  key: user_id\n  within: 5m"
    ).replace("where: amount > 2000", "where: amount > 2500")
    path = tmp_path / "rules.yaml"
    path.write_text(changed, encoding="utf-8")
    return path


def _attribute(value: Any) -> Any:
    """A fixture's attribute value (binary in base64) as boto3 takes it."""
    ((kind, data),) = value.items()
    if kind == "B":
        return {"B": base64.b64decode(data)}
    if kind == "M":
        return {"M": {k: _attribute(v) for k, v in data.items()}}
    return {kind: data}


@pytest.mark.parametrize("rules", ["same", "changed"])
@pytest.mark.parametrize("fixture", ["format-1", "format-2"])
def test_items_of_earlier_releases_are_read_and_rewritten(
    fixture: str,
    rules: str,
    config: DetectorConfig,
    ddb: Any,
    detectors: list[Detector],
    tmp_path: Path,
) -> None:
    old = json.loads((OLD_ITEMS / f"{fixture}.json").read_text())
    for item in old["items"]:
        ddb.put_item(TableName=config.state_table, Item={k: _attribute(v) for k, v in item.items()})
    snapshots = {i["pk"]["S"] for i in old["items"] if "snapshot" in i}
    assert len(snapshots) == 24
    records, split, lag = old["records"], old["split"], old["max_out_of_orderness_ms"]
    if rules == "changed":
        path = _changed_rules(tmp_path)
        emitted = engine_alerts(records, lag=lag, change_at=split, then=load_rule_file(path))
        changes: dict[str, Any] = {"rules": str(path)}
    else:
        emitted = engine_alerts(records, lag=lag)
        changes = {}
    expected = {alert_id for alert_id, index in emitted.items() if index >= split}
    assert len(expected) >= 5

    detector = detector_of(config, ddb, max_out_of_orderness=lag, **changes)
    detectors.append(detector)
    for start in range(split, len(records), 40):
        report = detector.process(msk_event(records[start : start + 40]))
        assert report.failures == () and report.state_resets == 0
    assert stored_ids(ddb, config) == expected

    rewritten = [i for i in key_items(ddb, config).values() if "state" in i]
    assert len(rewritten) >= 20  # the keys of the later batches, and the due ones
    for item in rewritten:
        assert "snapshot" not in item
        assert item["rules"]["S"] == detector.rules.digest
        stored_key(item)


def test_items_of_earlier_releases_are_refused_while_a_state_key_is_set(
    config: DetectorConfig, ddb: Any, detectors: list[Detector]
) -> None:
    old = json.loads((OLD_ITEMS / "format-2.json").read_text())
    (item,) = [i for i in old["items"] if "snapshot" in i and "next_due" not in i][:1]
    ddb.put_item(TableName=config.state_table, Item={k: _attribute(v) for k, v in item.items()})
    for extra in old["items"]:
        if extra["pk"]["S"].startswith("rules#"):
            ddb.put_item(
                TableName=config.state_table, Item={k: _attribute(v) for k, v in extra.items()}
            )
    key = item["pk"]["S"][len("key#") :]
    user = json.loads(key)
    detector = detector_of(config, ddb, state_key=KEY_A)
    detectors.append(detector)
    report = detector.process(msk_event([record(payment(user, T * 2, 1.0, n=900), 0, 900)]))
    assert report.failures == ((f"{TOPIC}-0", 900),)
    assert "not authenticated: refused while a state key is set" in report.failed_keys[key]
    assert detector.state.failure_count(f"key/{key}") == (1, "restore:SnapshotError")


# == damaged items and state keys ============================================================


def _burst(user: str, first: int, t: int, *, partition: int = 0) -> list[dict[str, Any]]:
    """Two high payments of ``user`` (a partial match of high-value-3-in-5m) from ``first``."""
    return [record(payment(user, t + i * 10_000, 2500.0 + i, n=first + i), partition, first + i)
            for i in range(2)]  # fmt: skip


def _set_state(ddb: Any, config: DetectorConfig, key: str, state: bytes) -> None:
    ddb.update_item(
        TableName=config.state_table,
        Key={"pk": {"S": f"key#{key}"}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"B": state}},
    )


def _flip_last_byte(item: dict[str, Any], _other: dict[str, Any]) -> bytes:
    state = bytearray(item["state"]["B"])
    state[-1] ^= 0x01
    return bytes(state)


def _corrupt_record_inside(item: dict[str, Any], _other: dict[str, Any]) -> bytes:
    """A well-framed state (its digest right) holding a record whose bytes are damaged."""
    stored = stored_key(item)
    (first, *rest) = stored.records
    damaged = bytearray(first.record)
    damaged[-1] ^= 0x01
    changed = StoredKey(
        stored.watermark,
        stored.order,
        stored.due,
        [StoredRecord(first.group, first.key, bytes(damaged)), *rest],
        stored.held,
    )
    return encode_key_state(
        changed,
        key=item["pk"]["S"][len("key#") :],
        rules=item["rules"]["S"],
        offsets={tp: int(v["N"]) for tp, v in item["offsets"]["M"].items()},
    )


def _another_keys_state(_item: dict[str, Any], other: dict[str, Any]) -> bytes:
    return bytes(other["state"]["B"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(_flip_last_byte, "does not match its digest", id="flipped-byte"),
        pytest.param(_corrupt_record_inside, "key record digest mismatch", id="record-inside"),
        pytest.param(_another_keys_state, "belongs to another item", id="another-keys-state"),
    ],
)
def test_a_damaged_state_item_is_refused_counted_and_given_up_after_n(
    damage: Any, message: str, config: DetectorConfig, ddb: Any, detectors: list[Detector]
) -> None:
    detector = detector_of(config, ddb)
    detectors.append(detector)
    user = "u-damaged"
    first = [*_burst(user, 0, T), *_burst("u-neighbour", 2, T)]
    assert detector.process(msk_event(first)).failures == ()
    items = key_items(ddb, config)
    _set_state(ddb, config, f'"{user}"', damage(items[f'"{user}"'], items['"u-neighbour"']))

    third = [record(payment(user, T + 20_000, 2600.0, n=4), 0, 4)]
    for attempt in (1, 2):
        report = detector.process(msk_event(third))
        assert report.failures == ((f"{TOPIC}-0", 4),)
        assert message in report.failed_keys[f'"{user}"']
        assert detector.state.failure_count(f'key/"{user}"') == (attempt, "restore:SnapshotError")
    report = detector.process(msk_event(third))
    assert report.failures == () and report.state_resets == 1 and report.applied == 1
    assert stored_ids(ddb, config) == set()  # the partial match went with the state
    stored_key(key_items(ddb, config)[f'"{user}"'])  # a sound state again


def test_state_written_with_another_state_key_or_none_is_refused(
    config: DetectorConfig, ddb: Any, detectors: list[Detector]
) -> None:
    keyed = detector_of(config, ddb, state_key=KEY_A)
    detectors.append(keyed)
    records = _burst("u-keyed", 0, T)
    assert keyed.process(msk_event(records)).failures == ()
    item = key_items(ddb, config)['"u-keyed"']
    with pytest.raises(Exception, match="authenticated with a state key, but none is given"):
        stored_key(item)
    stored = stored_key(item, KEY_A)
    assert stored.records and all(r.record[8] == 1 for r in stored.records)  # keyed records

    third = record(payment("u-keyed", T + 20_000, 2600.0, n=2), 0, 2)
    for state_key, message in [
        (KEY_B, "or was written with another state key"),
        (None, "authenticated with a state key, but none is given"),
    ]:
        other = detector_of(config, ddb, state_key=state_key)
        detectors.append(other)
        report = other.process(msk_event([third]))
        assert report.failures == ((f"{TOPIC}-0", 2),)
        assert message in report.failed_keys['"u-keyed"']
    assert keyed.state.failure_count('key/"u-keyed"') == (2, "restore:SnapshotError")

    # the detector that holds the key goes on where it stopped
    later = record(payment("u-later", T + 400_000, 1.0, n=3), 0, 3)
    report = keyed.process(msk_event([third, later]))
    assert report.failures == () and report.new_alerts == 1
    assert stored_ids(ddb, config) == set(engine_alerts([*records, third, later]))

    # and an unauthenticated state is refused by a detector with a key
    plain = detector_of(config, ddb)
    detectors.append(plain)
    assert plain.process(msk_event(_burst("u-plain", 10, T, partition=1))).failures == ()
    report = keyed.process(msk_event([record(payment("u-plain", T + 20_000, 1.0, n=12), 1, 12)]))
    assert "not authenticated, but a state key is given" in report.failed_keys['"u-plain"']


# == keys that would share an engine key =====================================================


def test_users_sharing_a_card_are_run_in_separate_engines(
    config: DetectorConfig, ddb: Any, detectors: list[Detector]
) -> None:
    def probes(user: str, first: int, t: int) -> list[dict[str, Any]]:
        out = []
        for i in range(4):
            p = {**payment(user, t + i * 1_000, 2.0, n=first + i), "card_id": "card-shared"}
            p["status"] = "declined"
            out.append(record(p, 0, first + i))
        big = {**payment(user, t + 5_000, 900.0, n=first + 4), "card_id": "card-shared"}
        out.append(record(big, 0, first + 4))
        return out

    batch = [*probes("u-one", 0, T), *probes("u-two", 5, T + 100)]
    batch.append(record(payment("u-tick", T + 300_000, 1.0, n=10), 0, 10))
    together = detector_of(config, ddb, workers=1)
    detectors.append(together)
    report = together.process(msk_event(batch))
    assert report.failures == ()
    alerts = stored_alerts(ddb, config)
    assert sorted((a["rule_id"], a["key"]) for a in alerts) == [
        ("card-testing", '"card-shared"'),
        ("card-testing", '"card-shared"'),
    ]
    assert {a["events"]["big"][0]["user_id"] for a in alerts} == {"u-one", "u-two"}

    # the same as when each user's payments come in a batch of their own
    apart_config = attrs.evolve(config, alerts_table=unique("alerts"), state_table=unique("state"))
    create_alerts_table(ddb, apart_config.alerts_table)
    create_state_table(ddb, apart_config.state_table)
    apart = detector_of(apart_config, ddb)
    detectors.append(apart)
    for part in (batch[:5], batch[5:10], batch[10:]):
        assert apart.process(msk_event(part)).failures == ()
    assert stored_ids(ddb, config) == stored_ids(ddb, apart_config) != set()


# == configuration ===========================================================================


def test_the_state_key_comes_from_the_environment_and_is_never_shown() -> None:
    tables = {"FRAUDCEP_ALERTS_TABLE": "a", "FRAUDCEP_STATE_TABLE": "s"}
    config = DetectorConfig.from_env({**tables, "FRAUDCEP_STATE_KEY": KEY_A})
    assert config.state_key == KEY_A and KEY_A not in repr(config)
    assert DetectorConfig.from_env(tables).state_key is None
    with pytest.raises(ConfigurationError, match="at least 16 characters") as refused:
        DetectorConfig.from_env({**tables, "FRAUDCEP_STATE_KEY": "short-secret"})
    assert "short-secret" not in str(refused.value)
