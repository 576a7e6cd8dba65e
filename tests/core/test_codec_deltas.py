"""Incremental snapshots and key records: ``Engine.restore(base, rules, deltas=[...])``
continues exactly as the engine that never stopped, at any cut points, across live rule
changes; deltas cost what changed; chains are checked; state keys authenticate; format-1
snapshots still restore."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.paths import SNAPSHOTS_V1 as DATA
from support.rule_pool import OPTIONS, contents, make_rules

from fraudcep import Engine, Pattern, Rule, SnapshotError
from fraudcep.engine.codec import compact
from fraudcep.errors import ConfigurationError


def events(seed: int, n: int, keys: str = "xyzw") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out, t = [], 0
    for i in range(n):
        t += rng.randint(0, 3)
        out.append(
            {"id": i, "ts": t + rng.randint(0, 2), "k": rng.choice(keys), "t": rng.choice("abcd")}
        )
    return out


def outputs(engine: Engine, alerts: list[Any]) -> dict[str, Any]:
    return {
        "alerts": [(a.rule_id, a.key, a.alert_id, a.emitted_at, a.rule_version) for a in alerts],
        "timeouts": [
            (
                t.rule_id,
                t.key,
                t.timeout_ts,
                {s: [e["id"] for e in evs] for s, evs in t.events.items()},
            )
            for t in engine.drain_timeouts()
        ],
        "late": [(x.event["id"], x.watermark) for x in engine.drain_late()],
        "stats": engine.stats,
    }


# Rule changes applied at a point of the stream: (kind, rule id, pool index for the new rule).
CHANGES = [
    ("replace", "ab-within", None),
    ("disable", "b-not-c", None),
    ("enable", "b-not-c", None),
    ("remove", "any-b-c", None),
    ("add", "any-b-c", None),
]


def apply_change(engine: Engine, change: tuple[str, str, Any]) -> None:
    kind, rule_id, _ = change
    pool = {r.id: r for r in make_rules()}
    versions = engine.rule_versions()
    if kind == "replace" and rule_id in versions:
        engine.replace_rule(pool[rule_id])
    elif kind == "disable" and rule_id in {r.id for r in engine.rules}:
        engine.disable_rule(rule_id)
    elif kind == "enable" and rule_id in versions and rule_id not in {r.id for r in engine.rules}:
        engine.enable_rule(rule_id)
    elif kind == "remove" and rule_id in versions:
        engine.remove_rule(rule_id)
    elif kind == "add" and rule_id not in versions:
        engine.add_rule(pool[rule_id])


def rules_in_force(engine: Engine) -> list[Rule]:
    pool = {r.id: r for r in make_rules()}
    return [pool[rule_id] for rule_id in engine.rule_versions()]


def run(
    stream: list[dict[str, Any]],
    cuts: dict[int, str],
    changes: dict[int, tuple[str, str, Any]],
) -> dict[str, Any]:
    """Run ``stream``; at each cut take a full snapshot ("full") or a delta ("delta"), and at
    each "restore" cut restore an engine from the base and every delta since, and go on."""
    engine = Engine(make_rules(), **OPTIONS)
    alerts: list[Any] = []
    base: bytes | None = None
    deltas: list[bytes] = []
    for i, event in enumerate(stream):
        if i in changes:
            apply_change(engine, changes[i])
        what = cuts.get(i)
        if what == "full" or (what is not None and base is None):
            base, deltas = engine.snapshot(), []
        elif what == "delta":
            deltas.append(engine.snapshot_delta())
        elif what == "restore":
            deltas.append(engine.snapshot_delta())
            engine = Engine.restore(base, rules_in_force(engine), deltas=deltas, **OPTIONS)
        alerts += engine.process(event)
    alerts += engine.flush()
    return outputs(engine, alerts)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.dictionaries(
        st.integers(1, 149), st.sampled_from(["full", "delta", "delta", "restore"]), max_size=12
    ),
    changes=st.dictionaries(st.integers(1, 149), st.sampled_from(CHANGES), max_size=4),
)
def test_restoring_base_and_deltas_at_random_cuts_equals_the_uninterrupted_run(
    seed: int, cuts: dict[int, str], changes: dict[int, tuple[str, str, Any]]
) -> None:
    stream = events(seed, 150)
    assert run(stream, cuts, changes) == run(stream, {}, changes)


def test_a_restored_engine_writes_the_same_snapshot_as_the_one_that_never_stopped() -> None:
    stream = events(5, 200)
    engine = Engine(make_rules(), **OPTIONS)
    engine.process_many(stream[:60])
    base = engine.snapshot()
    engine.process_many(stream[60:120])
    delta1 = engine.snapshot_delta()
    engine.process_many(stream[120:])
    delta2 = engine.snapshot_delta()
    restored = Engine.restore(base, make_rules(), deltas=[delta1, delta2], **OPTIONS)
    # the same state: the same engine-wide part and the same record for every key (records
    # come in the order keys were last touched, which a restore does not keep)
    assert contents(restored.snapshot()) == contents(engine.snapshot())


def test_a_delta_holds_only_the_keys_that_changed() -> None:
    rule = Rule(
        "two-big",
        Pattern.begin("a").where(lambda e: e["amount"] > 100).times(2).within(10**9),
        key="user",
    )
    engine = Engine([rule], timestamp="ts")
    engine.process_many({"user": f"u{i}", "amount": 500, "ts": i} for i in range(20_000))
    full = engine.snapshot()
    engine.process_many({"user": f"u{i}", "amount": 50, "ts": 30_000 + i} for i in range(200))
    small = engine.snapshot_delta()
    assert engine.snapshot_delta() != small  # an empty delta is smaller still
    assert len(small) * 20 < len(full)
    restored = Engine.restore(full, [rule], deltas=[small], timestamp="ts")
    assert restored.stats.live_keys == 20_000


def test_chains_out_of_order_or_on_another_base_are_refused() -> None:
    stream = events(9, 90)
    engine = Engine(make_rules(), **OPTIONS)
    engine.process_many(stream[:30])
    base = engine.snapshot()
    engine.process_many(stream[30:60])
    d1 = engine.snapshot_delta()
    engine.process_many(stream[60:])
    d2 = engine.snapshot_delta()
    other = Engine(make_rules(), **OPTIONS).snapshot()
    for chain in ([d2, d1], [d1, d1, d2], [d2]):
        with pytest.raises(SnapshotError, match="does not follow"):
            Engine.restore(base, make_rules(), deltas=chain, **OPTIONS)
    with pytest.raises(SnapshotError, match="does not follow"):
        Engine.restore(other, make_rules(), deltas=[d1], **OPTIONS)
    with pytest.raises(SnapshotError, match="full snapshot first"):
        Engine.restore(d1, make_rules(), **OPTIONS)
    with pytest.raises(SnapshotError, match="not a delta"):
        Engine.restore(base, make_rules(), deltas=[base], **OPTIONS)


def test_delta_before_any_snapshot_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="full snapshot"):
        Engine(make_rules(), **OPTIONS).snapshot_delta()


def test_a_state_key_authenticates_snapshots_and_deltas() -> None:
    secret = {"state_key": "s3cret"}
    engine = Engine(make_rules(), **OPTIONS, **secret)
    engine.process_many(events(3, 50))
    base = engine.snapshot()
    engine.process_many(events(4, 20))
    delta = engine.snapshot_delta()
    restored = Engine.restore(base, make_rules(), deltas=[delta], **OPTIONS, **secret)
    assert restored.snapshot() == engine.snapshot()
    with pytest.raises(SnapshotError, match="another state key"):
        Engine.restore(base, make_rules(), **OPTIONS, state_key="wrong")
    with pytest.raises(SnapshotError, match="none was given"):
        Engine.restore(base, make_rules(), **OPTIONS)
    plain = Engine(make_rules(), **OPTIONS).snapshot()
    with pytest.raises(SnapshotError, match="not authenticated"):
        Engine.restore(plain, make_rules(), **OPTIONS, **secret)
    # forging needs the key: a body digested without it is refused
    body = base[52:]
    forged = bytearray(base)
    forged[20:52] = hashlib.blake2b(base[:20] + body, digest_size=32).digest()
    with pytest.raises(SnapshotError, match="digest mismatch"):
        Engine.restore(bytes(forged), make_rules(), **OPTIONS, **secret)


# -- key records -------------------------------------------------------------------------------


def test_key_records_round_trip_and_refuse_every_corruption() -> None:
    stream = [e for e in events(11, 300, keys="xy") if e["k"] == "x"]
    half = len(stream) // 2
    engine = Engine(make_rules(), **OPTIONS)
    engine.process_many(stream[:half])
    watermark = stream[half - 1]["ts"] + 5
    engine.advance_watermark(watermark)  # nothing held back: the key's state is all there is
    engine.drain_timeouts()
    assert engine.key_groups()["k"] == ("ab-within", "a2-c-skip-past", "b-not-c", "any-b-c")
    record = engine.export_key("k", "x")
    assert record is not None
    assert engine.export_key("k", "nobody") is None
    # another engine with the same rules takes the key over and continues as the first does
    other = Engine(make_rules(), **OPTIONS)
    other.import_key("k", "x", record)
    other.advance_watermark(watermark)
    rest = [{**e, "ts": e["ts"] + 10} for e in stream[half:]]

    def keyed_by_k(alerts: list[Any]) -> list[tuple[str, str]]:
        return [(a.rule_id, a.alert_id) for a in alerts if a.key == "x"]

    want = keyed_by_k(engine.process_many(rest) + engine.flush())
    got = keyed_by_k(other.process_many(rest) + other.flush())
    assert got == want and want
    assert [t.timeout_ts for t in other.drain_timeouts() if t.key == "x"] == [
        t.timeout_ts for t in engine.drain_timeouts() if t.key == "x"
    ]
    for position in range(len(record)):
        for flip in (0x01, 0x80):
            damaged = bytearray(record)
            damaged[position] ^= flip
            with pytest.raises(SnapshotError):
                other.import_key("k", "x", bytes(damaged))
    for cut in range(len(record)):
        with pytest.raises(SnapshotError):
            other.import_key("k", "x", record[:cut])
    with pytest.raises(ConfigurationError, match="key groups"):
        other.export_key("card_id", "x")


# -- format 1 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", json.loads((DATA / "expected.json").read_text()), ids=lambda c: c["name"]
)
def test_format_1_snapshots_still_restore_and_continue_as_they_did(case: dict[str, Any]) -> None:
    """Snapshots written by fraudcep's format 1 (fraudcep before format 2; the files were made
    by that version) continue exactly as the engine that wrote them did."""
    blob = (DATA / f"{case['name']}.bin").read_bytes()
    engine = Engine.restore(blob, make_rules(), timestamp="ts", **case["options"])
    alerts = []
    for event in case["events"]:
        alerts += engine.process(event)
    alerts += engine.flush()
    timeouts = engine.drain_timeouts()
    got_alerts = [
        [
            a.rule_id,
            repr(a.key),
            a.alert_id,
            a.emitted_at,
            [[s, [e["id"] for e in evs]] for s, evs in a.events.items()],
        ]
        for a in alerts
    ]
    got_timeouts = [
        [
            t.rule_id,
            repr(t.key),
            t.timeout_ts,
            [[s, [e["id"] for e in evs]] for s, evs in t.events.items()],
        ]
        for t in timeouts
    ]
    assert got_alerts == case["alerts"]
    assert got_timeouts == case["timeouts"]
    with pytest.raises(ConfigurationError, match="full snapshot"):
        engine.snapshot_delta()  # a format-1 base has no delta chain: the next one is full
    engine.snapshot()


# -- compaction --------------------------------------------------------------------------------


def test_compacting_a_chain_gives_a_base_that_later_deltas_follow() -> None:
    """``compact(base, deltas)`` (bytes alone, no engine) holds what the chain holds, and the
    deltas written after the chain apply to it; odd values survive it unchanged."""
    from datetime import UTC, datetime
    from decimal import Decimal

    stream = events(21, 240)
    odd = {"tags": (1, "x"), "when": datetime(2026, 1, 1, tzinfo=UTC), "n": 10**30,
           "d": Decimal("1.5"), "s": "\ud800", "m": {1: "one"}}  # fmt: skip
    stream = [{**e, **odd} if e["id"] % 3 == 0 else e for e in stream]
    engine = Engine(make_rules(), **OPTIONS, state_key=b"k")
    engine.process_many(stream[:60])
    base = engine.snapshot()
    deltas = []
    for chunk in (stream[60:100], stream[100:140], stream[140:180]):
        engine.process_many(chunk)
        deltas.append(engine.snapshot_delta())
    merged = compact(base, deltas, state_key=b"k")
    assert contents(merged) == contents(engine.snapshot())
    engine = Engine.restore(base, make_rules(), deltas=deltas, **OPTIONS, state_key=b"k")
    engine.process_many(stream[180:210])
    later = engine.snapshot_delta()
    from_merged = Engine.restore(merged, make_rules(), deltas=[later], **OPTIONS, state_key=b"k")
    from_chain = Engine.restore(
        base, make_rules(), deltas=[*deltas, later], **OPTIONS, state_key=b"k"
    )
    rest = stream[210:]
    assert outputs(from_merged, from_merged.process_many(rest) + from_merged.flush()) == outputs(
        from_chain, from_chain.process_many(rest) + from_chain.flush()
    )
    with pytest.raises(SnapshotError, match="does not follow"):
        compact(base, deltas[1:], state_key=b"k")


def test_an_engine_taking_a_key_over_numbers_its_runs_after_the_records() -> None:
    """Skip strategies compare runs by processing order: an engine that imports a key whose
    runs another engine numbered must number the key's new runs after them (the default
    rules, seven payments over 2000 by one user: (p1,p2,p3) and (p4,p5,p6), as one engine)."""
    from fraudcep.payments.default_rules import DEFAULT_RULES_FILE
    from fraudcep.rules import load_rules

    rules = [d.rule for d in load_rules(Path(DEFAULT_RULES_FILE).read_text())]
    payments = [
        {"payment_id": f"p{i}", "user_id": "u", "card_id": f"c{i}", "merchant": "m",
         "country": "DE", "amount": 5000, "currency": "EUR", "status": "approved",
         "ts": 1_000 * i}
        for i in range(1, 8)
    ]  # fmt: skip

    def matched(alerts: list[Any]) -> list[tuple[str, ...]]:
        return [tuple(e["payment_id"] for evs in a.events.values() for e in evs) for a in alerts]

    one = Engine(rules, timestamp="ts")
    whole = matched(one.process_many(payments) + one.flush())
    first = Engine(rules, timestamp="ts")
    head = first.process_many(payments[:4])
    first.advance_watermark(payments[3]["ts"])
    group = next(g for g, ids in first.key_groups().items() if "high-value-3-in-5m" in ids)
    second = Engine(rules, timestamp="ts")
    for g in first.key_groups():
        second.import_key(g, "u", first.export_key(g, "u"))
    assert second.processing_order >= first.processing_order - 1
    assert second.key_due(group, "u") == first.key_due(group, "u")
    second.advance_watermark(payments[3]["ts"])
    tail = second.process_many(payments[4:]) + second.flush()
    assert matched(head) + matched(tail) == whole
