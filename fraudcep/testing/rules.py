"""Property testing of your own rules: the engine against the reference matcher, per key.

:func:`check_rule` runs one :class:`~fraudcep.Rule` over a stream through the
:class:`~fraudcep.Engine` and, key by key, through the reference matcher
(:mod:`fraudcep.testing.reference`), and reports every difference. Give it streams from a
hypothesis strategy (:func:`fraudcep.testing.payment_streams`, or your own) and it checks
that the engine applies Flink CEP's semantics to *your* conditions, windows and skip
strategy, not only to the generated patterns of the project's own tests.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from fraudcep.engine.engine import Engine
from fraudcep.engine.rule import Rule, field_getter
from fraudcep.testing.cases import HOLD_ALL, compare
from fraudcep.testing.reference import ReferenceMatch, ReferenceMatcher, guided_by
from fraudcep.timeutil import timestamp_ms

__all__ = ["check_rule"]


def check_rule(
    rule: Rule,
    events: Iterable[Any],
    *,
    timestamp: str | Callable[[Any], Any] = "ts",
) -> list[str]:
    """Differences between the engine and the reference semantics for ``rule`` on ``events``.

    ``events`` are given in arrival order; like the Flink harness, the engine sees every one
    of them before its watermark moves (nothing is late), then the input ends. Matches are
    compared key by key, in emission order up to Flink's order among matches with the same
    first event, and timeouts as a multiset. An empty list means they agree.

    Raises :class:`~fraudcep.testing.UnsupportedPatternError` when the rule's pattern is
    outside the reference matcher's subset (group patterns, ...).
    """
    stream = list(events)
    position = {id(e): i for i, e in enumerate(stream)}
    read = field_getter(timestamp) if isinstance(timestamp, str) else timestamp

    def ids(mapping: Any) -> list[list[Any]]:
        return [[name, [position[id(e)] for e in evs]] for name, evs in mapping.items()]

    engine = Engine([rule], timestamp=timestamp, max_out_of_orderness=HOLD_ALL)
    found: dict[Hashable, dict[str, list[Any]]] = {}

    def bucket(key: Hashable) -> dict[str, list[Any]]:
        return found.setdefault(key, {"matches": [], "timeouts": []})

    for event in stream:
        for alert in engine.process(event):
            bucket(alert.key)["matches"].append(ids(alert.events))
    for alert in engine.flush():
        bucket(alert.key)["matches"].append(ids(alert.events))
    for timeout in engine.drain_timeouts():
        bucket(timeout.key)["timeouts"].append(
            {"timeout_ts": timeout.timeout_ts, "events": ids(timeout.events)}
        )

    key_of = rule.key_function()
    per_key: dict[Hashable, list[Any]] = {}
    for event in stream:
        per_key.setdefault(key_of(event), []).append(event)

    matcher = ReferenceMatcher(rule.pattern)

    def render(match: ReferenceMatch) -> list[list[Any]]:
        return ids(match.events)

    out: list[str] = []
    for key, key_events in per_key.items():
        ours = found.pop(key, {"matches": [], "timeouts": []})
        outcome = matcher.run(key_events, timestamp=read, choose=guided_by(ours["matches"], render))
        expected = {
            "matches": [render(m) for m in outcome.matches],
            "timeouts": [
                {"timeout_ts": m.timeout_ts, "events": render(m)} for m in outcome.timeouts
            ],
        }
        order = [{"id": position[id(e)], "ts": timestamp_ms(read(e))} for e in key_events]
        for line in compare({"error": None, **ours}, {"error": None, **expected}, events=order):
            out.append(f"key {key!r}: {line}")
    for key in found:
        out.append(f"key {key!r}: the engine reported results for a key the stream lacks")
    return out
