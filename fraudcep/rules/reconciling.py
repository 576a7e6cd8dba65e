"""Bringing an engine's rules in line with a set of rule definitions: add, replace by version,
enable, disable, remove; an older version is refused before anything changes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fraudcep.engine.rule import Rule
from fraudcep.errors import ConfigurationError
from fraudcep.rules.definitions import RuleDefinition
from fraudcep.rules.writing import rule_to_spec

if TYPE_CHECKING:
    from fraudcep.engine.engine import Engine


def apply_definitions(engine: Engine, definitions: Iterable[RuleDefinition]) -> list[str]:
    """Bring ``engine``'s rules in line with ``definitions`` (a whole rule file, or the latest
    state of a rules topic) and return what changed, one line per rule.

    A new id is added (with its ``version``, 1 when it has none); a known id is replaced when
    its ``version`` is higher than the running one — or, for a definition without a version,
    when its spec differs from the running rule's (the engine then counts the version up); an
    ``enabled`` flag that changed disables or enables the rule; an id the definitions no
    longer contain is removed. A lower version is refused (``ConfigurationError``) before
    anything changes, so an old rule file cannot silently roll rules back; so is a ``mode``
    change (shadow to live: a promotion) that keeps the running version, which would
    otherwise be ignored.
    """
    wanted = {d.id: d for d in definitions}
    current = engine.rule_versions()
    running = {r.id: r for r in engine.rules}
    for rule_id, d in wanted.items():
        if rule_id in current and d.version is not None and d.version < current[rule_id]:
            raise ConfigurationError(
                f"rule {rule_id!r}: version {d.version} is older than the running "
                f"version {current[rule_id]}"
            )
        now = running.get(rule_id)
        if now is not None and d.version == current[rule_id] and now.mode != d.mode:
            raise ConfigurationError(
                f"rule {rule_id!r}: mode {d.mode} with the running version {d.version} (which "
                f"is {now.mode}); a change of mode is a new version: give it version "
                f"{d.version + 1}"
            )
    changes: list[str] = []
    for rule_id in [i for i in current if i not in wanted]:
        engine.remove_rule(rule_id)
        changes.append(f"removed {rule_id}")
    for rule_id, d in wanted.items():
        if rule_id not in current:
            version = engine.add_rule(d.rule, version=d.version or 1)
            changes.append(f"added {rule_id} v{version}")
        elif _newer(d, current[rule_id], running.get(rule_id)):
            version = engine.replace_rule(d.rule, version=d.version)
            changes.append(f"replaced {rule_id} v{current[rule_id]} -> v{version}")
        is_enabled = rule_id in {r.id for r in engine.rules}
        if d.enabled and not is_enabled:
            engine.enable_rule(rule_id)
            changes.append(f"enabled {rule_id}")
        elif not d.enabled and is_enabled:
            engine.disable_rule(rule_id)
            changes.append(f"disabled {rule_id}")
    return changes


def _newer(definition: RuleDefinition, version: int, rule: Rule | None) -> bool:
    if definition.version is not None:
        return definition.version > version
    if rule is None:
        return True  # disabled: compare nothing, replace
    try:
        return rule_to_spec(rule) != definition.spec
    except ConfigurationError:
        return True  # a rule built in Python cannot be compared: take the definition
