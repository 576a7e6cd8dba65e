"""``Engine.stats.live_partial_matches`` is a count the engine keeps as it goes (no scan of
the keys): whatever happens — events, timers and timeouts, the per-key cap, conditions that
raise, key records exported and taken in, snapshots and chains restored, live rule changes,
processing time — it equals the count made by looking at every key."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from support.paths import SNAPSHOTS_V1 as DATA
from support.rule_pool import make_rules

from fraudcep import Engine, Pattern, Rule, TimeMode


def scanned(engine: Engine) -> int:
    """The live partial matches, counted key by key."""
    return sum(rs.live_matches() for rs in engine._state.rules)


def kind(*kinds: str) -> Any:
    return lambda e: e["t"] in kinds


def fragile(e: dict[str, Any]) -> bool:
    """A condition that raises on some events (the engine reports them and goes on)."""
    if e["v"] == 0:
        raise ZeroDivisionError("v is 0")
    return bool(e["t"] in "ab")


def extra_rules() -> list[Rule]:
    return [
        Rule(
            "fragile",
            Pattern.begin("a").where(fragile).followed_by("b").where(fragile).within(9),
            key="k",
        ),
        Rule(
            "explosive",
            Pattern.begin("a")
            .where(kind("a"))
            .followed_by_any("b")
            .where(kind("a", "b"))
            .followed_by_any("c")
            .where(kind("c"))
            .within(15),
            key="k",
        ),
    ]


def pool() -> dict[str, Rule]:
    return {r.id: r for r in [*make_rules(), *extra_rules()]}


OPTIONS: dict[str, Any] = {
    "timestamp": "ts",
    "max_out_of_orderness": 2,
    "max_partial_matches_per_key": 4,
    "on_error": lambda failure: None,
}

event_st = st.fixed_dictionaries(
    {
        "dt": st.integers(-2, 4),
        "k": st.sampled_from("xyz"),
        "t": st.sampled_from("abcd"),
        "v": st.integers(0, 5),
    }
)
op_st = st.one_of(
    st.tuples(st.just("events"), st.lists(event_st, min_size=1, max_size=8)),
    st.tuples(st.just("watermark"), st.integers(0, 30)),
    st.tuples(st.just("export"), st.sampled_from("xyz"), st.sampled_from("xyz")),
    st.tuples(st.just("clear"), st.sampled_from("xyz")),
    st.tuples(st.just("snapshot"), st.sampled_from(["full", "delta", "restore"])),
    st.tuples(
        st.just("rule"),
        st.sampled_from(["replace", "disable", "enable", "remove", "add"]),
        st.sampled_from(sorted(pool())),
    ),
)


def change_rule(engine: Engine, kind_: str, rule_id: str) -> None:
    rules = pool()
    versions = engine.rule_versions()
    enabled = {r.id for r in engine.rules}
    if kind_ == "replace" and rule_id in versions:
        engine.replace_rule(rules[rule_id])
    elif kind_ == "disable" and rule_id in enabled and len(enabled) > 1:
        engine.disable_rule(rule_id)
    elif kind_ == "enable" and rule_id in versions and rule_id not in enabled:
        engine.enable_rule(rule_id)
    elif kind_ == "remove" and rule_id in versions and len(enabled) > 1:
        engine.remove_rule(rule_id)
    elif kind_ == "add" and rule_id not in versions:
        engine.add_rule(rules[rule_id])


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(ops=st.lists(op_st, max_size=40))
def test_the_live_count_is_always_the_scanned_count(ops: list[Any]) -> None:
    engine = Engine(list(pool().values()), **OPTIONS)
    ts = 0
    n = 0
    base: bytes | None = None
    deltas: list[bytes] = []
    for op in ops:
        if op[0] == "events":
            batch = []
            for e in op[1]:
                ts = max(0, ts + e["dt"])
                n += 1
                batch.append({"id": n, "ts": ts, "k": e["k"], "t": e["t"], "v": e["v"]})
            engine.process_many(batch)
        elif op[0] == "watermark":
            engine.advance_watermark(ts + op[1])
        elif op[0] == "export":
            group = "k"
            if group in engine.key_groups():
                engine.import_key(group, op[2], engine.export_key(group, op[1]))
        elif op[0] == "clear":
            if "k" in engine.key_groups():
                engine.import_key("k", op[1], None)
        elif op[0] == "snapshot":
            if op[1] == "full" or base is None:
                base, deltas = engine.snapshot(), []
            elif op[1] == "delta":
                deltas.append(engine.snapshot_delta())
            else:
                deltas.append(engine.snapshot_delta())
                rules = pool()
                engine = Engine.restore(
                    base, [rules[i] for i in engine.rule_versions()], deltas=deltas, **OPTIONS
                )
        else:
            change_rule(engine, op[1], op[2])
            base = None  # a chain goes on after a rule change, but restore needs the rules
        assert engine.stats.live_partial_matches == scanned(engine), op
    engine.flush()
    assert engine.stats.live_partial_matches == scanned(engine)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from("xy"), st.sampled_from("abcd")),
        max_size=60,
    )
)
def test_the_live_count_holds_in_processing_time(steps: list[tuple[int, str, str]]) -> None:
    now = [0]
    engine = Engine(
        list(pool().values()),
        time_mode=TimeMode.PROCESSING_TIME,
        clock=lambda: now[0],
        max_partial_matches_per_key=4,
        on_error=lambda failure: None,
    )
    for i, (dt, key, t) in enumerate(steps):
        now[0] += dt
        if i % 7 == 6:
            engine.advance_time()
        else:
            engine.process({"id": i, "k": key, "t": t, "v": i % 4})
        assert engine.stats.live_partial_matches == scanned(engine)
    engine.flush()
    assert engine.stats.live_partial_matches == scanned(engine)


def test_a_format_1_snapshot_restores_its_count() -> None:
    for case in json.loads((DATA / "expected.json").read_text()):
        blob = (DATA / f"{case['name']}.bin").read_bytes()
        engine = Engine.restore(blob, make_rules(), timestamp="ts", **case["options"])
        assert engine.stats.live_partial_matches == scanned(engine) > 0
        for event in case["events"]:
            engine.process(event)
            assert engine.stats.live_partial_matches == scanned(engine)
