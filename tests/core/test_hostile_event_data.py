"""Hostile event data: deep, cyclic or odd payloads never crash the decoder, alert ids or
snapshots, and damaged snapshot bodies (with valid checksums) are refused with SnapshotError.

The decoder bounds what a runtime ever feeds the engine (``too_deep``); alert identity has no
bound at all (it never recurses); snapshots refuse data nested deeper than their documented
limit with a SnapshotError naming it, never a RecursionError.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import struct
from typing import Any

import attrs
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudcep import Engine, Pattern, Rule, SnapshotError
from fraudcep.alert.identity import alert_id, canonical_json
from fraudcep.engine.codec import MAX_DEPTH
from fraudcep.payments.payment import DEFAULT_MAX_DEPTH, InvalidRecord, decode_payment
from fraudcep.rules import load_rules
from fraudcep.testing.records import valid_payment_records

PAYMENT = {
    "payment_id": "p",
    "user_id": "u",
    "card_id": "c",
    "merchant": "m",
    "country": "DE",
    "amount": 5000,
    "currency": "EUR",
    "status": "approved",
    "ts": 1,
}
TWO_BIG = """
- id: r
  key: user_id
  within: 5m
  pattern:
    - {name: a, where: amount > 1000}
    - {name: b, where: amount > 1000}
"""


def nested(depth: int, leaf: Any = 0) -> Any:
    """``depth`` lists around ``leaf``, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def rules() -> list[Rule]:
    return [d.rule for d in load_rules(TWO_BIG)]


# -- the decoder ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [500, 600, 990, 5_000])
def test_the_reported_deep_payment_is_refused_as_too_deep(depth: int) -> None:
    raw = json.dumps(PAYMENT)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(InvalidRecord) as caught:
        decode_payment(raw, max_bytes=1_000_000)
    assert caught.value.reason == "too_deep"
    assert str(DEFAULT_MAX_DEPTH) in caught.value.detail


@pytest.mark.parametrize("opener", ["[", '{"k":'])
def test_nesting_up_to_the_limit_is_accepted_and_one_more_level_is_not(opener: str) -> None:
    closer = "]" if opener == "[" else "}"

    def record(levels: int) -> str:  # the payment object is level 1
        inner = levels - 1
        return json.dumps(PAYMENT)[:-1] + ', "x": ' + opener * inner + "0" + closer * inner + "}"

    assert decode_payment(record(DEFAULT_MAX_DEPTH))["payment_id"] == "p"
    with pytest.raises(InvalidRecord) as caught:
        decode_payment(record(DEFAULT_MAX_DEPTH + 1))
    assert caught.value.reason == "too_deep"
    assert decode_payment(record(4), max_depth=4)["payment_id"] == "p"
    with pytest.raises(InvalidRecord):
        decode_payment(record(5), max_depth=4)


def test_braces_inside_strings_do_not_count_as_nesting() -> None:
    raw = json.dumps({**PAYMENT, "note": "{[" * 500})
    assert decode_payment(raw)["note"] == "{[" * 500


# -- alert identity never recurses ---------------------------------------------------------


def test_alert_ids_of_deeply_nested_events_are_computed() -> None:
    deep = {**PAYMENT, "x": nested(20_000)}

    def run(first: Any) -> list[str]:
        engine = Engine(rules(), timestamp="ts")
        alerts = engine.process_many([first, {**deep, "payment_id": "q", "ts": 2}])
        return [a.alert_id for a in alerts + engine.flush()]

    ids = run(deep)
    assert len(ids) == 1
    assert run({**PAYMENT, "x": nested(20_000)}) == ids
    assert run({**PAYMENT, "x": nested(20_001)}) != ids


def test_cyclic_events_have_a_stable_canonical_form() -> None:
    @attrs.define
    class Link:
        name: str
        nxt: Any = None

    first = Link("a")
    first.nxt = Link("b", first)
    looped: dict[str, Any] = {"id": 1}
    looped["self"] = looped
    assert canonical_json(first) == '{"name":"a","nxt":{"name":"b","nxt":"<cycle>"}}'
    assert canonical_json(looped) == '{"id":1,"self":"<cycle>"}'
    # a value met twice without a cycle is written twice
    shared = [1]
    assert canonical_json({"a": shared, "b": shared}) == '{"a":[1],"b":[1]}'


def _old_canonical(value: Any) -> str:
    """The canonical form as the recursive implementation wrote it, for JSON-like data."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            if all(isinstance(k, str) for k in v):
                return {k: plain(x) for k, x in v.items()}
            return {f"{type(k).__name__}:{k!r}": plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), default=str)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.dictionaries(st.integers() | st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(JSONISH)
def test_canonical_form_is_the_one_alert_ids_always_had(value: Any) -> None:
    """Alert ids stay stable across the change to an iterative writer: sinks deduplicate by id."""
    assert canonical_json(value) == _old_canonical(value)


def test_alert_id_is_stable_for_a_known_match() -> None:
    matched = [("a", 1, {"id": 1, "amount": 5000}), ("b", 2, {"id": 2, "amount": 7000})]
    parts = [
        "r",
        json.dumps("u"),
        [
            [name, ts, json.dumps(e, sort_keys=True, separators=(",", ":"))]
            for name, ts, e in matched
        ],
    ]
    expected = hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:32]
    assert alert_id("r", "u", matched) == expected


# -- snapshots -----------------------------------------------------------------------------


def test_snapshot_refuses_data_nested_beyond_its_limit_with_a_clear_error() -> None:
    engine = Engine(rules(), timestamp="ts")
    engine.process({**PAYMENT, "x": nested(MAX_DEPTH - 2)})
    restored = Engine.restore(engine.snapshot(), rules(), timestamp="ts")
    restored.process({**PAYMENT, "payment_id": "q", "ts": 2})
    assert len(restored.flush()) == 1
    engine = Engine(rules(), timestamp="ts")
    engine.process({**PAYMENT, "x": nested(5_000)})
    with pytest.raises(SnapshotError, match=f"{MAX_DEPTH} levels"):
        engine.snapshot()


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(valid_payment_records(), min_size=1, max_size=12))
def test_every_decoded_payment_can_be_matched_snapshotted_and_restored(
    records: list[bytes],
) -> None:
    """What the decoder accepts, the rest of the pipeline handles: alerts, snapshot, restore."""
    engine = Engine(rules(), timestamp="ts", max_out_of_orderness=10**15)
    payments = [decode_payment(r) for r in records]
    for p in payments:
        engine.process({**p, "user_id": "u"})
    blob = engine.snapshot()
    restored = Engine.restore(blob, rules(), timestamp="ts", max_out_of_orderness=10**15)
    assert restored.snapshot() == blob
    assert [a.alert_id for a in restored.flush()] == [a.alert_id for a in engine.flush()]


HEADER = struct.Struct(">8sHBBQ32s")  # magic, version, kind, flags, body length, digest


def _repack(doc: Any) -> bytes:
    """A full snapshot with this body and a valid digest (as a writer with bugs or intent
    could make one)."""
    body = msgspec.msgpack.encode(doc)
    prefix = HEADER.pack(b"FCEPSNAP", 2, 1, 0, len(body), bytes(32))[:-32]
    return prefix + hashlib.blake2b(prefix + body, digest_size=32).digest() + body


def _body(blob: bytes) -> Any:
    return msgspec.msgpack.decode(
        blob[HEADER.size :], ext_hook=lambda code, data: msgspec.msgpack.Ext(code, bytes(data))
    )


_ODD_VALUES: list[Any] = [
    None, True, -1, 0, 1, 2**63, -(2**63), 1.5, float("inf"), "", "x", "a" * 300, [], [[]],
    {}, {"k": 1}, msgspec.msgpack.Ext(1, b"\xc1"), msgspec.msgpack.Ext(3, b"2024-13-01"),
    msgspec.msgpack.Ext(5, b"NaN?"), msgspec.msgpack.Ext(6, b"zz"), msgspec.msgpack.Ext(99, b""),
    b"bytes", 2**64 - 1, [1, 2, 3, 4, 5],
    [-1, -1, -1, -1, -1], nested(150),
]  # fmt: skip


def _mutate(doc: Any, rng: random.Random) -> None:
    """Replace one value somewhere in ``doc`` by an odd one, in place."""
    container = doc
    for _ in range(rng.randint(1, 6)):
        children = (
            list(container.items()) if isinstance(container, dict) else list(enumerate(container))
        )
        if not children:
            break
        key, value = rng.choice(children)
        if isinstance(value, dict | list) and value and rng.random() < 0.7:
            container = value
            continue
        container[key] = copy.deepcopy(rng.choice(_ODD_VALUES))
        return
    if isinstance(container, list):
        container.append(copy.deepcopy(rng.choice(_ODD_VALUES)))


def _busy_engine() -> Engine:
    pattern = (
        Pattern.begin("a").where(lambda e: e["amount"] > 1000).times(2)
        .followed_by("b").where(lambda e: e["amount"] > 3000).within(1000)
    )  # fmt: skip
    engine = Engine([Rule("r", pattern, key="user_id")], timestamp="ts", max_out_of_orderness=5)
    rng = random.Random(7)
    for i in range(60):
        engine.process({**PAYMENT, "payment_id": f"p{i}", "user_id": f"u{i % 4}",
                        "amount": rng.choice([10, 2000, 5000]), "ts": i * 3 + rng.randint(0, 4),
                        "tags": (i, "t"), "x": {"y": [i]}})  # fmt: skip
    return engine


def test_damaged_snapshot_bodies_with_valid_checksums_are_refused_with_snapshot_error() -> None:
    engine = _busy_engine()
    rule = engine.rules
    good = _body(engine.snapshot())
    rng = random.Random(2026)
    refused = restored = 0
    for _ in range(1500):
        doc = copy.deepcopy(good)
        for _ in range(rng.randint(1, 3)):
            _mutate(doc, rng)
        try:
            again = Engine.restore(_repack(doc), list(rule), timestamp="ts", max_out_of_orderness=5)
        except SnapshotError:
            refused += 1
            continue
        restored += 1
        # what was not refused runs: processing, timers, output and another snapshot
        for i in range(4):
            again.process({**PAYMENT, "user_id": f"u{i}", "ts": 200 + 50 * i})
        again.flush()
        again.snapshot()
    assert refused > 500, (refused, restored)


def test_snapshot_headers_and_sizes_are_refused_with_the_right_words() -> None:
    blob = _busy_engine().snapshot()
    with pytest.raises(SnapshotError, match="truncated"):
        Engine.restore(blob[:-1], [])
    with pytest.raises(SnapshotError, match="after its"):
        Engine.restore(blob + b"\0", [])
    huge = bytearray(blob)
    huge[12:20] = (1 << 62).to_bytes(8, "big")  # a body length no snapshot has
    with pytest.raises(SnapshotError, match="truncated"):
        Engine.restore(bytes(huge), [])
