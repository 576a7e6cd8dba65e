"""Live rule changes: add, replace (new version), disable, enable, remove — mid-stream and
across snapshot/restore. The documented semantics (docs/rules.md, "Live changes"): a change
applies to every event the engine processes after the call, held events included; a replaced,
disabled or removed rule's partial matches are discarded and counted; alerts carry the
version that produced them."""

from __future__ import annotations

from typing import Any

import pytest
from support.events import ev, ids, kind

from fraudcep import ConfigurationError, Engine, Pattern, Rule, SnapshotError


def ab(rule_id: str = "ab", second: str = "b", window: int = 100) -> Rule:
    pattern = (
        Pattern.begin("a").where(kind("a")).followed_by("b").where(kind(second)).within(window)
    )
    return Rule(rule_id, pattern, key="k")


def single(rule_id: str, t: str) -> Rule:
    return Rule(rule_id, Pattern.begin("x").where(kind(t)), key="k")


def alerts_of(engine: Engine, events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a.rule_id, a.rule_version, ids(a.events)) for a in engine.process_many(events)]


def test_added_rule_sees_only_events_processed_after_the_call() -> None:
    engine = Engine([ab()], timestamp="ts")
    before = alerts_of(engine, [ev(1, 1, "c"), ev(2, 2, "a")])
    assert engine.add_rule(single("c", "c")) == 1
    after = alerts_of(engine, [ev(3, 3, "c"), ev(4, 4, "b"), ev(5, 5, "x")])
    after += [(a.rule_id, a.rule_version, ids(a.events)) for a in engine.flush()]
    assert before == []
    # event 1 (c) was processed before the rule existed; event 3 after
    assert ("c", 1, (("x", (3,)),)) in after
    assert ("c", 1, (("x", (1,)),)) not in after
    assert ("ab", 1, (("a", (2,)), ("b", (4,)))) in after


def test_added_rule_sees_events_held_for_the_watermark() -> None:
    engine = Engine([ab()], timestamp="ts", max_out_of_orderness=50)
    engine.process_many([ev(1, 10, "c"), ev(2, 11, "a")])  # both held: watermark is -41
    assert engine.stats.buffered_events == 2
    engine.add_rule(single("c", "c"))
    found = [(a.rule_id, ids(a.events)) for a in engine.flush()]
    assert ("c", (("x", (1,)),)) in found


def test_replace_bumps_the_version_discards_old_partial_matches_and_tags_alerts() -> None:
    engine = Engine([ab()], timestamp="ts")
    engine.process_many([ev(1, 1, "a"), ev(2, 2, "a"), ev(3, 3, "x")])  # two open partial matches
    assert engine.stats.live_partial_matches == 2
    assert engine.replace_rule(ab(second="c")) == 2
    assert engine.stats.live_partial_matches == 0
    assert engine.stats.partial_matches_discarded == 2
    assert engine.rule_versions() == {"ab": 2}
    found = alerts_of(engine, [ev(4, 4, "b"), ev(5, 5, "a"), ev(6, 6, "c"), ev(7, 7, "z")])
    found += [(a.rule_id, a.rule_version, ids(a.events)) for a in engine.flush()]
    # the old partial matches (a1, a2) are gone: b4 completes nothing; the new version matches
    assert found == [("ab", 2, (("a", (5,)), ("b", (6,))))]


def test_disable_and_enable_keep_the_version_and_start_fresh() -> None:
    engine = Engine([ab(), single("c", "c")], timestamp="ts")
    engine.process_many([ev(1, 1, "a")])
    engine.disable_rule("ab")
    assert engine.rule_versions() == {"ab": 1, "c": 1}
    found = alerts_of(engine, [ev(2, 2, "b"), ev(3, 3, "c"), ev(4, 4, "x")])
    assert [f[0] for f in found] == ["c"]
    engine.enable_rule("ab")
    found = alerts_of(engine, [ev(5, 5, "b"), ev(6, 6, "a"), ev(7, 7, "b"), ev(8, 8, "x")])
    assert found == [("ab", 1, (("a", (6,)), ("b", (7,))))]


def test_remove_forgets_the_rule_and_its_state() -> None:
    engine = Engine([ab(), single("c", "c")], timestamp="ts")
    engine.process_many([ev(1, 1, "a"), ev(2, 2, "x")])
    engine.remove_rule("ab")
    assert engine.stats.live_partial_matches == 0
    assert [r.id for r in engine.rules] == ["c"]
    assert alerts_of(engine, [ev(3, 3, "b"), ev(4, 4, "x")]) == []
    with pytest.raises(ConfigurationError):
        engine.remove_rule("ab")


def test_bad_changes_are_refused_and_change_nothing() -> None:
    engine = Engine([ab()], timestamp="ts")
    engine.process_many([ev(1, 1, "a"), ev(2, 2, "x")])
    before = engine.snapshot()
    with pytest.raises(ConfigurationError, match="exists already"):
        engine.add_rule(ab())
    with pytest.raises(ConfigurationError, match="replace"):
        engine.replace_rule(single("nope", "c"))
    with pytest.raises(ConfigurationError):
        engine.enable_rule("ab")
    with pytest.raises(ConfigurationError):
        engine.disable_rule("nope")
    assert engine.snapshot() == before


def test_changes_survive_snapshot_and_restore() -> None:
    events = [ev(i, i, t) for i, t in enumerate("aacbxabcaxb", start=1)]

    def run(cut: int | None) -> list[tuple[Any, ...]]:
        rules = {"ab": ab(), "c": single("c", "c")}
        engine = Engine(list(rules.values()), timestamp="ts")
        out: list[tuple[Any, ...]] = []
        for i, event in enumerate(events):
            if i == 3:
                rules["ab"] = ab(second="x")
                engine.replace_rule(rules["ab"])
                engine.disable_rule("c")
            if i == 7:
                engine.enable_rule("c")
            if i == cut:
                engine = Engine.restore(engine.snapshot(), list(rules.values()), timestamp="ts")
            out += [(a.rule_id, a.rule_version, a.alert_id) for a in engine.process(event)]
        out += [(a.rule_id, a.rule_version, a.alert_id) for a in engine.flush()]
        return out

    uninterrupted = run(None)
    assert {version for _, version, _ in uninterrupted} == {1, 2}
    for cut in range(len(events)):
        assert run(cut) == uninterrupted, cut


def test_restore_with_the_rules_before_a_change_is_refused() -> None:
    engine = Engine([ab()], timestamp="ts")
    engine.process_many([ev(1, 1, "a")])
    engine.replace_rule(ab(second="c", window=50))
    blob = engine.snapshot()
    with pytest.raises(SnapshotError, match="structure"):
        Engine.restore(blob, [ab()], timestamp="ts")
    restored = Engine.restore(blob, [ab(second="c", window=50)], timestamp="ts")
    assert restored.rule_versions() == {"ab": 2}


def test_rules_cannot_change_from_inside_a_callback() -> None:
    refused: list[Exception] = []

    def on_timeout(_: Any) -> None:
        try:
            engine.remove_rule("ab")
        except ConfigurationError as exc:
            refused.append(exc)

    engine = Engine([ab(window=5)], timestamp="ts", on_timeout=on_timeout)
    engine.process_many([ev(1, 1, "a"), ev(2, 20, "x"), ev(3, 21, "x")])
    assert len(refused) == 1 and "callback" in str(refused[0])
    assert [r.id for r in engine.rules] == ["ab"]
    engine.remove_rule("ab")  # between calls it is fine
    assert engine.rules == ()
