"""Small builders shared by the engine tests: events ``{"id", "ts", "k", "t"}`` keyed by
``k`` and told apart by their type ``t``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def kind(*kinds: str) -> Callable[[Any], bool]:
    """A condition: the event's type ``t`` is one of ``kinds``."""
    wanted = frozenset(kinds)
    return lambda e: e["t"] in wanted


def ids(events: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """An alert's events as ``((stage, (id, ...)), ...)``, in the alert's order."""
    return tuple((name, tuple(e["id"] for e in evs)) for name, evs in events.items())


def id_lists(events: Any) -> dict[str, list[Any]]:
    """An alert's events as ``{stage: [id, ...]}``."""
    return {name: [e["id"] for e in evs] for name, evs in events.items()}


def ev(event_id: Any, ts: Any, t: str, k: Any = "x") -> dict[str, Any]:
    """An event with an id, a timestamp, a type and a key."""
    return {"id": event_id, "ts": ts, "k": k, "t": t}
