"""Snapshots: ``Engine.restore(engine.snapshot(), rules, **options)`` continues exactly where the
snapshotted engine stopped — same alerts (with ids), timeouts and late events as a run that
never stopped — in this process or another one; damaged or mismatched snapshots are refused
with SnapshotError."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.events import ev, ids
from support.rule_pool import POOL_IDS, RULES_SOURCE, make_rules

from fraudcep import Engine, Pattern, Rule, SnapshotError, TimeMode


def observe(
    names: list[str],
    events: list[dict[str, Any]],
    options: dict[str, Any],
    cuts: frozenset[int] = frozenset(),
    drains: frozenset[int] = frozenset(),
    twice: bool = False,
    batch: bool = False,
) -> dict[str, Any]:
    """Run ``events``; before event ``i`` drain the side outputs if ``i in drains`` and replace the
    engine by a restored copy of its snapshot if ``i in cuts``."""
    engine = Engine(make_rules(names), timestamp="ts", **options)
    alerts: list[Any] = []
    timeouts: list[Any] = []
    late: list[Any] = []
    points = sorted(cuts | drains | {len(events)})
    start = 0
    for point in points:
        chunk = events[start:point]
        if batch:
            alerts += engine.process_many(chunk)
        else:
            for event in chunk:
                alerts += engine.process(event)
        start = point
        if point in drains:
            timeouts += engine.drain_timeouts()
            late += engine.drain_late()
        if point in cuts:
            blob = engine.snapshot()
            assert isinstance(blob, bytes)
            engine = Engine.restore(blob, make_rules(names), timestamp="ts", **options)
            # same state, same bytes
            assert engine.snapshot() == blob
            if twice:
                engine = Engine.restore(
                    engine.snapshot(), make_rules(names), timestamp="ts", **options
                )
    alerts += engine.flush()
    timeouts += engine.drain_timeouts()
    late += engine.drain_late()
    return {
        "alerts": [
            (a.rule_id, a.key, a.alert_id, a.first_ts, a.last_ts, a.emitted_at, ids(a.events))
            for a in alerts
        ],
        "timeouts": [(t.rule_id, t.key, t.timeout_ts, ids(t.events)) for t in timeouts],
        "late": [(x.event["id"], x.timestamp, x.watermark) for x in late],
        "stats": engine.stats,
    }


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(st.sampled_from(POOL_IDS), min_size=2, max_size=3, unique=True).map(
            lambda chosen: [n for n in POOL_IDS if n in chosen]
        )
    )
    bound = draw(st.integers(0, 6))
    size = draw(st.integers(0, 35))  # drawn first: plain lists() stay short
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["x", "y", "zé"]),
                st.sampled_from("aabbccd"),
                st.integers(0, 4),
                st.integers(0, bound + 3),  # a few events arrive later than the bound
            ),
            min_size=size,
            max_size=size,
        )
    )
    ts = 0
    timed = []
    for i, (key, t, gap, delay) in enumerate(steps):
        ts += gap
        timed.append((ts + delay, i, {"id": i, "ts": ts, "k": key, "t": t}))
    timed.sort(key=lambda x: (x[0], x[1]))
    events = [event for _, _, event in timed]
    positions = st.integers(0, len(events))
    options: dict[str, Any] = {"max_out_of_orderness": bound}
    if draw(st.booleans()):
        options["max_partial_matches_per_key"] = draw(st.integers(1, 4))
    if draw(st.booleans()):
        options["max_buffered_events"] = draw(st.integers(1, 6))
    return {
        "names": names,
        "events": events,
        "options": options,
        "cuts": frozenset(draw(st.lists(positions, min_size=1, max_size=3))),
        "drains": frozenset(draw(st.lists(positions, max_size=2))),
        "twice": draw(st.booleans()),
        "batch": draw(st.booleans()),
    }


@settings(max_examples=300, deadline=None, derandomize=True)
@given(scenarios())
def test_restore_continues_like_the_uninterrupted_run(scenario: dict[str, Any]) -> None:
    uninterrupted = observe(
        scenario["names"],
        scenario["events"],
        scenario["options"],
        drains=scenario["drains"],
        batch=scenario["batch"],
    )
    restored = observe(**scenario)
    assert restored["alerts"] == uninterrupted["alerts"]
    assert restored["timeouts"] == uninterrupted["timeouts"]
    assert restored["late"] == uninterrupted["late"]
    assert restored["stats"] == uninterrupted["stats"]


def test_restore_keeps_pending_matches_timers_and_buffered_events() -> None:
    """A hand-made cut: buffered events, a pending not_followed_by, a run waiting for b,
    undrained timeouts and late events all cross the snapshot."""
    names = ["ab-within", "b-not-c"]
    events = [
        ev(0, 0, "a"),
        ev(1, 1, "b", k="y"),
        ev(2, 30, "a", k="z"),  # watermark 27: x's a@0 and y's b@1 have closed
        ev(3, 5, "b"),  # late
        ev(4, 29, "b", k="z"),  # buffered (before a@30 in time)
        ev(5, 31, "b", k="z"),  # buffered
    ]
    options = {"max_out_of_orderness": 2}
    uninterrupted = observe(names, events, options)
    for cut in range(len(events) + 1):
        assert observe(names, events, options, cuts=frozenset({cut})) == uninterrupted
    assert [t[:3] for t in uninterrupted["timeouts"]] == [("ab-within", "x", 12)]
    assert [a[:2] for a in uninterrupted["alerts"]] == [
        ("b-not-c", "y"),
        ("ab-within", "z"),
        ("b-not-c", "z"),
        ("b-not-c", "z"),
    ]
    assert uninterrupted["late"] == [(3, 5, 27)]


def test_restore_fires_every_due_timer() -> None:
    """Regression: stale timers once were filtered out of the heap's array without restoring
    the heap order, so a restored engine could miss a timer that was due."""

    def rule(window: int) -> Rule:
        return Rule(
            f"w{window}",
            Pattern.begin("a")
            .where(lambda e, w=window: e["t"] == f"a{w}")
            .followed_by("b")
            .where(lambda e, w=window: e["t"] == f"b{w}")
            .within(window),
            key="k",
        )

    def rules() -> list[Rule]:
        return [rule(10), rule(49), rule(18)]

    events = [
        {"ts": 0, "k": "x", "t": "a10"},  # timer at 10
        {"ts": 1, "k": "y", "t": "a49"},  # timer at 50
        {"ts": 2, "k": "z", "t": "a18"},  # timer at 20
        {"ts": 3, "k": "x", "t": "b10"},  # x matches: its timer at 10 is stale
        {"ts": 5, "k": "v", "t": "-"},
    ]
    results = []
    for restore in (False, True):
        engine = Engine(rules(), timestamp="ts")
        engine.process_many(events)
        if restore:
            engine = Engine.restore(engine.snapshot(), rules(), timestamp="ts")
        engine.advance_watermark(25)
        results.append([(t.rule_id, t.key, t.timeout_ts) for t in engine.drain_timeouts()])
    assert results[0] == [("w18", "z", 20)]
    assert results[1] == results[0]


def test_restore_with_callbacks() -> None:
    names = ["ab-within", "b-not-c"]
    events = [ev(0, 0, "a"), ev(1, 1, "b", k="y"), ev(2, 40, "a", k="z"), ev(3, 3, "b")]

    def run(cut: int | None) -> tuple[list[Any], list[Any]]:
        timeouts: list[Any] = []
        late: list[Any] = []
        options = {"max_out_of_orderness": 5, "on_timeout": timeouts.append, "on_late": late.append}
        engine = Engine(make_rules(names), timestamp="ts", **options)
        for i, event in enumerate(events):
            if i == cut:
                engine = Engine.restore(
                    engine.snapshot(), make_rules(names), timestamp="ts", **options
                )
            engine.process(event)
        engine.flush()
        assert engine.drain_timeouts() == []
        assert engine.drain_late() == []
        return timeouts, late

    expected = run(None)
    assert expected[0] and expected[1]
    for cut in range(len(events)):
        assert run(cut) == expected


def test_snapshot_bytes_are_deterministic() -> None:
    names = POOL_IDS
    events = [ev(i, i // 2, "abcab"[i % 5], k="xy"[i % 2]) for i in range(20)]

    def blob_after(n: int) -> bytes:
        engine = Engine(make_rules(names), timestamp="ts", max_out_of_orderness=3)
        engine.process_many(events[:n])
        first = engine.snapshot()
        assert engine.snapshot() == first  # taking a snapshot changes nothing
        return first

    for n in (0, 7, 20):
        assert blob_after(n) == blob_after(n)
    assert blob_after(7) != blob_after(8)


# -- another process -------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from snaprules import make_rules
    from fraudcep import Engine

    mode, events_path, blob_path = sys.argv[2:5]
    events = json.load(open(events_path, encoding="utf-8"))
    options = {"max_out_of_orderness": 3}
    if mode == "take":
        engine = Engine(make_rules(), timestamp="ts", **options)
        alerts = engine.process_many(events)
        open(blob_path, "wb").write(engine.snapshot())
    else:
        blob = open(blob_path, "rb").read()
        engine = Engine.restore(blob, make_rules(), timestamp="ts", **options)
        alerts = engine.process_many(events) + engine.flush()
    print(json.dumps({
        "alerts": [[a.rule_id, a.key, a.alert_id, a.to_dict()["events"]] for a in alerts],
        "timeouts": [[t.rule_id, t.key, t.timeout_ts, t.events] for t in engine.drain_timeouts()],
        "late": [[x.event, x.timestamp, x.watermark] for x in engine.drain_late()],
    }, ensure_ascii=True, sort_keys=True))
    """
)


def render_json(alerts: list[Any], timeouts: list[Any], late: list[Any]) -> Any:
    """The child's output format, through a JSON round trip (tuples become lists)."""
    doc = {
        "alerts": [[a.rule_id, a.key, a.alert_id, a.to_dict()["events"]] for a in alerts],
        "timeouts": [[t.rule_id, t.key, t.timeout_ts, t.events] for t in timeouts],
        "late": [[x.event, x.timestamp, x.watermark] for x in late],
    }
    return json.loads(json.dumps(doc, ensure_ascii=True, sort_keys=True))


def test_snapshot_restored_in_another_process(tmp_path: Path) -> None:
    (tmp_path / "snaprules.py").write_text(RULES_SOURCE, encoding="utf-8")
    (tmp_path / "child.py").write_text(CHILD, encoding="utf-8")
    keys = ["alice", "bob", "ünïcødé", "€"]
    events = [
        {"id": i, "ts": i * 2 - (i % 3), "k": keys[i % 4], "t": "abcabbcad"[i % 9], "note": f"n{i}"}
        for i in range(60)
    ]
    first, second = events[:33], events[33:]
    (tmp_path / "first.json").write_text(json.dumps(first), encoding="utf-8")
    (tmp_path / "second.json").write_text(json.dumps(second), encoding="utf-8")

    def child(mode: str, events_file: str, seed: str) -> Any:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [
                sys.executable,
                str(tmp_path / "child.py"),
                str(tmp_path),
                mode,
                str(tmp_path / events_file),
                str(tmp_path / "blob.bin"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    # here: the uninterrupted run and the snapshot at the same cut
    engine = Engine(make_rules(), timestamp="ts", max_out_of_orderness=3)
    head = engine.process_many(first)
    blob_here = engine.snapshot()
    tail = engine.process_many(second) + engine.flush()
    expected_tail = render_json(tail, engine.drain_timeouts(), engine.drain_late())
    assert expected_tail["alerts"], "the second half must produce alerts"

    # another process (another hash seed) takes the snapshot: same bytes, same alerts so far
    taken = child("take", "first.json", "1")
    assert (tmp_path / "blob.bin").read_bytes() == blob_here
    assert [a[2] for a in taken["alerts"]] == [a.alert_id for a in head]

    # a third process (yet another hash seed) restores it and continues
    restored = child("restore", "second.json", "4242")
    assert restored == expected_tail


# -- refusing bad snapshots ------------------------------------------------------------------

# the documented layout: magic, version, kind (1 full, 2 delta), flags, body length, digest
HEADER = struct.Struct(">8sHBBQ32s")


def some_blob() -> bytes:
    engine = Engine(make_rules(), timestamp="ts", max_out_of_orderness=5)
    engine.process_many([ev(i, i, "abcab"[i % 5], k="xy"[i % 2]) for i in range(12)])
    return engine.snapshot()


def restore(blob: Any, names: list[str] | None = None, **options: Any) -> Engine:
    return Engine.restore(
        blob, make_rules(names), timestamp="ts", max_out_of_orderness=5, **options
    )


def test_a_good_blob_restores() -> None:
    blob = some_blob()
    assert restore(blob).snapshot() == blob
    assert restore(bytearray(blob)).snapshot() == blob


def test_corrupted_body_bytes_are_detected() -> None:
    blob = some_blob()
    assert blob[:8] == b"FCEPSNAP"
    body = range(HEADER.size, len(blob))
    # the first and last 40 body bytes, and every 5th byte in between
    positions = sorted({*body[:40], *body[-40:], *body[::5]})
    for position in positions:
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        with pytest.raises(SnapshotError, match=r"corrupt|checksum"):
            restore(bytes(damaged))


@pytest.mark.parametrize("position", range(HEADER.size))
def test_every_corrupted_header_byte_is_detected(position: int) -> None:
    """Magic, version, reserved bits, length and checksum: a flipped bit anywhere is refused
    (the reserved bits included, which once went unnoticed)."""
    damaged = bytearray(some_blob())
    damaged[position] ^= 0x10
    with pytest.raises(SnapshotError):
        restore(bytes(damaged))


@pytest.mark.parametrize("keep", [0, 7, 8, HEADER.size - 1, HEADER.size, -1, -10])
def test_truncated_blob_is_refused(keep: int) -> None:
    blob = some_blob()
    with pytest.raises(SnapshotError, match=r"truncated|magic"):
        restore(blob[:keep])


def test_wrong_magic_is_refused() -> None:
    blob = some_blob()
    with pytest.raises(SnapshotError, match="magic"):
        restore(b"NOTASNAP" + blob[8:])
    with pytest.raises(SnapshotError, match="magic"):
        restore(b"")


@pytest.mark.parametrize("version", [0, 3, 999])
def test_unknown_format_version_is_refused(version: int) -> None:
    blob = bytearray(some_blob())
    blob[8:10] = struct.pack(">H", version)
    with pytest.raises(SnapshotError, match=f"version {version}"):
        restore(bytes(blob))


def test_a_str_is_not_a_snapshot() -> None:
    with pytest.raises(SnapshotError, match="bytes"):
        restore(some_blob().decode("latin-1"))


def test_restoring_with_other_rule_ids_is_refused() -> None:
    blob = some_blob()
    with pytest.raises(SnapshotError, match="rule ids"):
        restore(blob, names=POOL_IDS[:2])
    renamed = [Rule("other-" + r.id, r.pattern, key=r.key) for r in make_rules()]
    with pytest.raises(SnapshotError, match="other-ab-within"):
        Engine.restore(blob, renamed, timestamp="ts", max_out_of_orderness=5)
    # the same rules listed in another order are the same rule set: the snapshot's order wins
    in_order = Engine.restore(blob, make_rules(), timestamp="ts", max_out_of_orderness=5)
    reordered = Engine.restore(
        blob, list(reversed(make_rules())), timestamp="ts", max_out_of_orderness=5
    )
    assert reordered.snapshot() == in_order.snapshot()


@pytest.mark.parametrize(
    "change",
    [
        lambda p: (
            Pattern.begin("a")
            .where(lambda e: e["t"] == "a")
            .followed_by("b")
            .where(lambda e: e["t"] == "b")
            .within(13)
        ),  # other window
        lambda p: (
            Pattern.begin("a")
            .where(lambda e: e["t"] == "a")
            .next("b")
            .where(lambda e: e["t"] == "b")
            .within(12)
        ),  # other contiguity
        lambda p: (
            Pattern.begin("a")
            .where(lambda e: e["t"] == "a")
            .followed_by("b")
            .where(lambda e: e["t"] == "b")
            .optional()
            .followed_by("c")
            .within(12)
        ),  # other stages
    ],
    ids=["window", "contiguity", "stages"],
)
def test_restoring_with_same_ids_but_other_structure_is_refused(change: Any) -> None:
    blob = some_blob()
    rules = make_rules()
    rules[0] = Rule(rules[0].id, change(rules[0].pattern), key=rules[0].key)
    with pytest.raises(SnapshotError, match="structure"):
        Engine.restore(blob, rules, timestamp="ts", max_out_of_orderness=5)


def test_restoring_in_the_other_time_mode_is_refused() -> None:
    with pytest.raises(SnapshotError, match=r"processing_time|event_time"):
        Engine.restore(
            some_blob(), make_rules(), time_mode=TimeMode.PROCESSING_TIME, clock=lambda: 0
        )


def framed(doc: Any, kind: int = 1) -> bytes:
    """A well-formed snapshot around ``doc`` (a forged body): the documented header, with the
    BLAKE2b-256 digest over the header fields before it and the body."""
    body = msgspec.msgpack.encode(doc)
    prefix = HEADER.pack(b"FCEPSNAP", 2, kind, 0, len(body), bytes(32))[: HEADER.size - 32]
    return prefix + hashlib.blake2b(prefix + body, digest_size=32).digest() + body


def body_of(blob: bytes) -> Any:
    return msgspec.msgpack.decode(
        blob[HEADER.size :], ext_hook=lambda code, data: msgspec.msgpack.Ext(code, bytes(data))
    )


def test_forged_blob_of_a_real_body_restores() -> None:
    """The forging helper itself is right: it reproduces a real snapshot from its body."""
    blob = some_blob()
    assert framed(body_of(blob)) == blob
    assert restore(framed(body_of(blob))).snapshot() == blob


def test_inconsistent_body_is_refused() -> None:
    doc = body_of(some_blob())
    for _group, _key, record in doc[2]:
        record[1] = [[n[0], 10**6, *n[2:]] for n in record[1]]  # events that do not exist
    with pytest.raises(SnapshotError, match="missing event"):
        restore(framed(doc))


@pytest.mark.parametrize(
    "doc",
    [[1, 2], {"format": 2}, [None, "rules", [], []], "text", None],
    ids=["list", "map", "rules-not-a-list", "string", "null"],
)
def test_malformed_body_is_refused(doc: Any) -> None:
    """Regression: a digested body that is not an engine state once escaped as
    AttributeError/KeyError."""
    with pytest.raises(SnapshotError) as raised:
        restore(framed(doc))
    assert "digest" not in str(raised.value)


# -- events that are not JSON values -------------------------------------------------------


@dataclasses.dataclass
class Payer:
    name: str
    country: str


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (Payer("ann", "FR"), "Payer"),
        (object(), "object"),
        ({"p", "q"}, "set"),
        ([1, {"deep": frozenset({1})}], "frozenset"),
    ],
    ids=["dataclass", "object", "set", "nested-frozenset"],
)
def test_event_that_is_not_a_json_value_makes_snapshot_fail(extra: Any, named: str) -> None:
    engine = Engine(make_rules(["ab-within"]), timestamp="ts", max_out_of_orderness=5)
    event = {"id": 1, "ts": 5, "k": "x", "t": "a", "extra": extra}
    engine.process(event)
    with pytest.raises(SnapshotError, match=named):
        engine.snapshot()
    # the engine is still fine
    assert engine.process_many([ev(2, 7, "b"), ev(3, 100, "d")])
    assert engine.stats.live_keys == 0


@pytest.mark.parametrize(
    "extra",
    [
        datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        float("nan"),
        float("inf"),
        (1, "two"),
        {7: "seven", "s": "string key"},
        {"$tuple": [1, 2]},
        {"nested": [{"$fcep": "x"}]},
        json.loads('"lone surrogate \\ud800"'),
        "ünïcødé €",
        10**30,
        -0.0,
    ],
    ids=[
        "datetime",
        "nan",
        "inf",
        "tuple",
        "int-key",
        "tag-lookalike",
        "tag-lookalike-2",
        "surrogate",
        "unicode",
        "bigint",
        "negative-zero",
    ],
)
def test_snapshot_refuses_or_keeps_every_value(extra: Any) -> None:
    """Whatever snapshot() accepts comes back as it was: never a silently altered event."""
    engine = Engine(make_rules(["ab-within"]), timestamp="ts", max_out_of_orderness=5)
    event = {"id": 1, "ts": 5, "k": "x", "t": "a", "extra": extra}
    engine.process(event)
    try:
        blob = engine.snapshot()
    except SnapshotError:
        return
    restored = restore(blob, names=["ab-within"])
    restored.flush()
    [timeout] = restored.drain_timeouts()
    [back] = timeout.events["a"]
    assert repr(back) == repr(event)
    assert type(back["extra"]) is type(extra)
