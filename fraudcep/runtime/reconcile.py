"""Bringing a running engine to the rules a runtime was given, without ever stopping it.

Rules reach a runtime as a rule file and, live, as rules-topic records; a restored engine runs
the rules its snapshot was taken with. :func:`reconcile` applies the difference
(:func:`fraudcep.rules.apply_definitions`: add, replace by version, enable, disable,
remove) and turns a change the engine refuses — an older version than the one it runs, say —
into a reported refusal: the engine keeps the rules it has, and the runtime logs and counts it.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from fraudcep.engine.engine import Engine
from fraudcep.errors import FraudcepError
from fraudcep.rules import RuleDefinition, apply_definitions

__all__ = ["Reconciliation", "reconcile"]


@attrs.frozen
class Reconciliation:
    """What :func:`reconcile` did: the changes made (one line per rule), or why none was."""

    changes: tuple[str, ...] = ()
    refused: str | None = None
    """The reason the change was refused; the engine's rules are then as they were."""

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def reconcile(engine: Engine, definitions: Iterable[RuleDefinition]) -> Reconciliation:
    """Bring ``engine``'s rules in line with ``definitions``; never raises for a change the
    engine refuses (see the module docstring)."""
    try:
        changes = apply_definitions(engine, definitions)
    except FraudcepError as exc:
        return Reconciliation(refused=str(exc))
    return Reconciliation(tuple(changes))
