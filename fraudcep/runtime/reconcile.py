"""Bringing a running engine to the rules a runtime was given, without ever stopping it.

Rules reach a runtime as a rule file and, live, as rules-topic records; a restored engine runs
the rules its snapshot (or a key's stored records) was taken with. :func:`reconcile` applies
the difference (:func:`fraudcep.rules.apply_definitions`: add, replace by version,
enable, disable, remove) and turns a change the engine refuses — an older version than the
one it runs, say — into a reported refusal: the engine keeps the rules it has, and the
runtime logs and counts it. :func:`refusal` tells, without changing anything, whether a
change would be refused (a runtime checks every engine it runs before it takes a change).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from fraudcep.engine.engine import Engine
from fraudcep.errors import FraudcepError
from fraudcep.rules import RuleDefinition, apply_definitions

__all__ = ["Reconciliation", "reconcile", "refusal"]


@attrs.frozen
class Reconciliation:
    """What :func:`reconcile` did: the changes made (one line per rule), or why none was."""

    changes: tuple[str, ...] = ()
    refused: str | None = None
    """The reason the change was refused; the engine's rules are then as they were."""

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def refusal(engine: Engine, definitions: Iterable[RuleDefinition]) -> str | None:
    """Why :func:`reconcile` would refuse ``definitions`` on ``engine`` (a rule at an older
    version than the one the engine runs), None if it would not; changes nothing."""
    running = engine.rule_versions()
    for rule_id, d in {d.id: d for d in definitions}.items():
        if d.version is not None and rule_id in running and d.version < running[rule_id]:
            return (
                f"rule {rule_id!r}: version {d.version} is older than the running "
                f"version {running[rule_id]}"
            )
    return None


def reconcile(
    engine: Engine, definitions: Iterable[RuleDefinition], *, as_loaded: bool = False
) -> Reconciliation:
    """Bring ``engine``'s rules in line with ``definitions``; never raises for a change the
    engine refuses (see the module docstring).

    ``as_loaded``: leave every rule at the version an engine made from ``definitions`` has
    (the definition's, 1 without one), for a runtime that moves the state this engine
    exports into such engines: a rule the change left at another version (a definition
    without a version whose spec changed is counted up) is replaced by a new one, which
    holds nothing."""
    wanted = tuple(definitions)
    refused = refusal(engine, wanted)
    if refused is not None:
        return Reconciliation(refused=refused)
    try:
        changes = apply_definitions(engine, wanted)
        if as_loaded:
            versions = engine.rule_versions()
            stale = [d.id for d in wanted if versions.get(d.id) != (d.version or 1)]
            for rule_id in stale:
                engine.remove_rule(rule_id)
                changes.append(f"removed {rule_id} v{versions[rule_id]} (made anew)")
            if stale:
                changes += apply_definitions(engine, wanted)
    except FraudcepError as exc:
        return Reconciliation(refused=str(exc))
    return Reconciliation(tuple(changes))
