"""Shadow rules: a rule (version) with ``mode: shadow`` matches like a live one and its
alerts say so; a live alert's record is unchanged; a promotion to live is a new version
(the same version with another mode is refused, not ignored); the mode survives writing
the rule back, snapshots and the rules-topic record format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fraudcep import Engine
from fraudcep.alert import LIVE, SHADOW
from fraudcep.engine.rule import Rule
from fraudcep.errors import ConfigurationError
from fraudcep.pattern.pattern import Pattern
from fraudcep.rules import RuleSpecError, apply_definitions, dump_rules, load_rules
from fraudcep.runtime.output_records import (
    SHADOW_ALERTS_TOPIC,
    alert_headers,
    alert_topic,
    alert_value,
)
from fraudcep.runtime.reconcile import reconcile
from fraudcep.runtime.rule_records import RuleRecordError, RuleSet

BIG = """\
- id: big
  version: {version}
{mode}  key: card_id
  pattern:
    - name: p
      where: amount > 100
"""


def big(version: int, mode: str | None) -> str:
    return BIG.format(version=version, mode=f"  mode: {mode}\n" if mode else "")


def step(engine: Engine, *events: dict[str, Any]) -> list[Any]:
    out = engine.process_many(list(events))
    return out + engine.advance_watermark(events[-1]["ts"])


def pay(ts: int, amount: int = 500, card: str = "c1") -> dict[str, Any]:
    return {"card_id": card, "amount": amount, "ts": ts}


def test_a_shadow_rule_matches_like_a_live_one_and_its_alerts_say_so() -> None:
    (shadow,) = load_rules(big(1, "shadow"))
    (live,) = load_rules(big(1, None))
    assert (shadow.mode, shadow.rule.mode, live.mode) == (SHADOW, SHADOW, LIVE)
    events = [pay(1), pay(2, amount=5), pay(3)]
    shadow_alerts = step(Engine([shadow.rule], timestamp="ts"), *events)
    live_alerts = step(Engine([live.rule], timestamp="ts"), *events)
    assert [a.mode for a in shadow_alerts] == [SHADOW, SHADOW]
    assert all(a.shadow for a in shadow_alerts) and not any(a.shadow for a in live_alerts)
    # the same matches, the same ids: the mode is not part of an alert's identity
    assert [a.alert_id for a in shadow_alerts] == [a.alert_id for a in live_alerts]
    assert [a.events for a in shadow_alerts] == [a.events for a in live_alerts]


def test_records_of_shadow_and_live_alerts() -> None:
    (shadow,) = load_rules(big(1, "shadow"))
    (live,) = load_rules(big(1, "live"))
    (s,) = step(Engine([shadow.rule], timestamp="ts"), pay(1))
    (v,) = step(Engine([live.rule], timestamp="ts"), pay(1))
    assert json.loads(alert_value(s))["mode"] == "shadow"
    # a live alert's record is what it was before modes existed: no mode field
    assert "mode" not in json.loads(alert_value(v))
    assert b'"mode"' not in alert_value(v)
    assert dict(alert_headers(s))["fraudcep.mode"] == b"shadow"
    assert dict(alert_headers(v))["fraudcep.mode"] == b"live"
    assert alert_topic(s, "fraud.alerts", SHADOW_ALERTS_TOPIC) == "fraud.alerts.shadow"
    assert alert_topic(v, "fraud.alerts", SHADOW_ALERTS_TOPIC) == "fraud.alerts"


def test_a_bad_mode_is_refused_with_its_position() -> None:
    with pytest.raises(RuleSpecError) as caught:
        load_rules(big(1, "dry-run"), source="r.yaml")
    (problem,) = caught.value.problems
    assert problem.field == "mode" and problem.line == 3
    assert "live, shadow" in problem.message and "dry-run" in problem.message
    with pytest.raises(RuleSpecError):
        load_rules(big(1, "1"))
    with pytest.raises(ConfigurationError, match="mode must be one of live, shadow"):
        Rule("r", Pattern.begin("a"), key="k", mode="test")


def test_the_mode_is_written_back_and_read_again() -> None:
    (shadow,) = load_rules(big(3, "shadow"))
    text = dump_rules([shadow])
    assert "mode: shadow" in text
    (again,) = load_rules(text)
    assert (again.mode, again.version, again.spec) == (SHADOW, 3, shadow.spec)
    (live,) = load_rules(big(3, "live"))
    assert "mode" not in live.spec  # live is the default and is not written


def test_promotion_is_a_new_version_and_takes_effect_for_the_next_events() -> None:
    (shadow,) = load_rules(big(1, "shadow"))
    engine = Engine([shadow.rule], timestamp="ts")
    assert [a.mode for a in step(engine, pay(1))] == [SHADOW]
    # the same version with another mode: refused (it would otherwise be ignored), nothing
    # changes
    with pytest.raises(ConfigurationError, match="a change of mode is a new version"):
        apply_definitions(engine, load_rules(big(1, "live")))
    assert engine.rule_versions() == {"big": 1}
    refused = reconcile(engine, load_rules(big(1, "live")))
    assert refused.refused is not None and "new version" in refused.refused
    assert apply_definitions(engine, load_rules(big(2, "live"))) == ["replaced big v1 -> v2"]
    (alert,) = step(engine, pay(2))
    assert (alert.mode, alert.rule_version) == (LIVE, 2)
    # a definition without a version whose mode changed is a changed spec: a new version
    (unversioned,) = load_rules(BIG.replace("  version: {version}\n", "").format(mode=""))
    engine2 = Engine([load_rules(big(1, "shadow"))[0].rule], timestamp="ts")
    assert apply_definitions(engine2, [unversioned]) == ["replaced big v1 -> v2"]
    assert [a.mode for a in step(engine2, pay(1))] == [LIVE]


def test_a_rules_topic_record_changing_the_mode_needs_a_new_version() -> None:
    rules = RuleSet(load_rules(big(1, "shadow")))
    with pytest.raises(RuleRecordError, match="a change of mode is a new version"):
        rules.apply_record(b"big", big(1, "live").encode(), source="fraud.rules[0]@1")
    assert [d.mode for d in rules.effective()] == [SHADOW]
    assert rules.apply_record(b"big", big(2, "live").encode(), source="fraud.rules[0]@2")
    assert [(d.mode, d.version) for d in rules.effective()] == [(LIVE, 2)]
    # and back to shadow, as a version again (a demotion is a change like any other)
    assert rules.apply_record(b"big", big(3, "shadow").encode(), source="fraud.rules[0]@3")
    assert [d.mode for d in rules.effective()] == [SHADOW]


def test_a_snapshot_restores_a_shadow_rule_with_its_partial_matches() -> None:
    text = """\
- id: two
  mode: shadow
  key: card_id
  within: 1h
  pattern:
    - name: a
      where: amount > 100
    - name: b
      followed_by: true
      where: amount > 100
"""
    (rule,) = load_rules(text)
    engine = Engine([rule.rule], timestamp="ts")
    assert step(engine, pay(1)) == []
    blob = engine.snapshot()
    restored = Engine.restore(blob, [load_rules(text)[0].rule], timestamp="ts")
    (alert,) = step(restored, pay(2))
    assert alert.mode == SHADOW and [e["ts"] for e in alert.events["a"]] == [1]
