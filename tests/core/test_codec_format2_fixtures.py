"""Format-2 checkpoints already in users' stores restore: a chain (a base and two deltas)
and key records written by fraudcep before the codec's performance work
(``tests/data/snapshots-v2/make.py``, made at 9af1fc9), with values of every kind the codec
carries, restore into the state the writer had and go on exactly as it did."""

from __future__ import annotations

import base64
import json
from ast import literal_eval
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import attrs
import msgspec
from support.paths import DATA as TEST_DATA
from support.rule_pool import OPTIONS, contents, make_rules

from fraudcep import Engine

DATA = TEST_DATA / "snapshots-v2"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def chain() -> Engine:
    return Engine.restore(
        (DATA / "base.bin").read_bytes(),
        make_rules(),
        deltas=[(DATA / "delta1.bin").read_bytes(), (DATA / "delta2.bin").read_bytes()],
        **OPTIONS,
    )


def untagged(value: Any) -> Any:
    """What ``make.py``'s ``tagged`` wrote, read back."""
    if isinstance(value, list):
        return [untagged(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag == "$tuple":
                return tuple(untagged(v) for v in inner)
            if tag == "$datetime":
                return datetime.fromisoformat(inner)
            if tag == "$date":
                return date.fromisoformat(inner)
            if tag == "$decimal":
                return Decimal(inner)
            if tag == "$bytes":
                return base64.b64decode(inner)
            if tag == "$int":
                return int(inner)
        return {k: untagged(v) for k, v in value.items()}
    return value


def tail() -> list[dict[str, Any]]:
    """The writer's stream after the cut."""
    return untagged(EXPECTED["tail"])  # type: ignore[no-any-return]


def test_the_chain_restores_the_writers_state() -> None:
    engine = chain()
    assert contents(engine.snapshot()) == contents((DATA / "at-cut.bin").read_bytes())
    assert engine.stats.live_partial_matches == sum(rs.live_matches() for rs in engine._state.rules)


def test_the_restored_chain_goes_on_as_the_writer_did() -> None:
    engine = chain()
    alerts = engine.process_many(tail()) + engine.flush()
    assert [[a.rule_id, repr(a.key), a.alert_id, a.emitted_at] for a in alerts] == EXPECTED[
        "alerts"
    ]
    assert [
        [
            t.rule_id,
            repr(t.key),
            t.timeout_ts,
            {s: [e["id"] for e in v] for s, v in t.events.items()},
        ]
        for t in engine.drain_timeouts()
    ] == EXPECTED["timeouts"]
    assert attrs.asdict(engine.stats) == EXPECTED["stats"]


def test_the_writers_key_records_are_taken_in() -> None:
    for group, key, record in EXPECTED["records"]:
        data = base64.b64decode(record)
        other = Engine(make_rules(), **OPTIONS)
        other.import_key(group, literal_eval(key), data)
        again = other.export_key(group, literal_eval(key))
        assert again is not None
        assert without_ties(again) == without_ties(data)  # the ties are the importer's own
        assert other.stats.live_partial_matches == sum(
            rs.live_matches() for rs in other._state.rules
        )


def without_ties(record: bytes) -> Any:
    doc = msgspec.msgpack.decode(
        record[25:], ext_hook=lambda code, data: msgspec.msgpack.Ext(code, bytes(data))
    )
    for entry in doc[2]:
        entry[4] = None
    return doc
