"""Applying rule files to a running engine: versions decide what changes (docs/rules.md)."""

from __future__ import annotations

import pytest

from fraudcep import ConfigurationError, Engine
from fraudcep.rules import apply_definitions, load_rules

V1 = """
- id: big
  version: 1
  key: user
  pattern:
    - name: a
      where: amount > 100
- id: small
  key: user
  pattern:
    - name: s
      where: amount < 5
"""

V2 = """
- id: big
  version: 2
  key: user
  pattern:
    - name: a
      where: amount > 1000
- id: tiny
  key: user
  enabled: false
  pattern:
    - name: t
      where: amount < 1
"""


def rule_ids(engine: Engine) -> list[str]:
    return sorted(r.id for r in engine.rules)


def test_a_rule_file_is_applied_and_re_applying_it_changes_nothing() -> None:
    engine = Engine([], timestamp="ts")
    assert apply_definitions(engine, load_rules(V1)) == ["added big v1", "added small v1"]
    assert apply_definitions(engine, load_rules(V1)) == []
    events = [{"user": 1, "amount": 500, "ts": 1}, {"user": 1, "amount": 2, "ts": 2}]
    alerts = engine.process_many(events) + engine.flush()
    assert sorted((a.rule_id, a.rule_version) for a in alerts) == [("big", 1), ("small", 1)]


def test_a_new_file_replaces_adds_disables_and_removes() -> None:
    engine = Engine([], timestamp="ts")
    apply_definitions(engine, load_rules(V1))
    changes = apply_definitions(engine, load_rules(V2))
    assert changes == ["removed small", "replaced big v1 -> v2", "added tiny v1", "disabled tiny"]
    assert rule_ids(engine) == ["big"]
    assert engine.rule_versions() == {"big": 2, "tiny": 1}
    events = [{"user": 1, "amount": 500, "ts": 1}, {"user": 1, "amount": 5000, "ts": 2}]
    alerts = engine.process_many(events) + engine.flush()
    # 500 is not > 1000 in version 2; 5000 is
    assert [(a.rule_id, a.rule_version, a.events["a"][0]["amount"]) for a in alerts] == [
        ("big", 2, 5000)
    ]


def test_an_older_version_is_refused_before_anything_changes() -> None:
    engine = Engine([], timestamp="ts")
    apply_definitions(engine, load_rules(V2))
    before = engine.rule_versions()
    with pytest.raises(ConfigurationError, match="older"):
        apply_definitions(engine, load_rules(V1))
    assert engine.rule_versions() == before


def test_an_unversioned_rule_is_replaced_when_its_spec_changes() -> None:
    engine = Engine([], timestamp="ts")
    apply_definitions(engine, load_rules(V1))
    changed = V1.replace("amount < 5", "amount < 3")
    assert apply_definitions(engine, load_rules(changed)) == ["replaced small v1 -> v2"]
