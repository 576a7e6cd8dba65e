"""What the engine hands back: alerts (complete matches), timed-out partial matches, late events
— and alert identity (:mod:`.identity`): the canonical form of keys and events an alert id is
built from."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import attrs

from fraudcep.alert.identity import alert_id, canonical_event, canonical_key

__all__ = [
    "LIVE",
    "MODES",
    "SHADOW",
    "Alert",
    "ConditionFailure",
    "LateEvent",
    "Overflow",
    "TimedOutMatch",
    "alert_id",
    "canonical_event",
    "canonical_key",
    "event_label",
]


LIVE = "live"
"""The mode of a rule whose alerts act: they are sent, blocked on, notified."""
SHADOW = "shadow"
"""The mode of a rule that runs on live traffic but whose alerts only get recorded, so its
effect can be watched before it acts (see docs/rules.md, "Shadow rules")."""
MODES = (LIVE, SHADOW)


def event_label(event: Any, id_field: str, ts_field: str) -> Any:
    """How a matched event is named where an alert is shown or compared (``rules test``, the
    backtest, the shadow report): its ``id_field``, else its ``ts_field``; None for an event
    that is not a mapping."""
    if isinstance(event, Mapping):
        if id_field in event:
            return event[id_field]
        return event.get(ts_field)
    return None


@attrs.frozen
class Alert:
    """A complete match of one rule for one key.

    ``events`` maps stage names to the events matched to them, in pattern order — the shape of
    Flink's ``Map<String, List<T>>``. ``alert_id`` is derived from the rule, the key and the
    matched events only, so the same match has the same id across runs, restores and machines.
    """

    rule_id: str
    key: Hashable
    events: Mapping[str, Sequence[Any]]
    first_ts: int
    last_ts: int
    alert_id: str
    emitted_at: int
    rule_version: int = 1
    """The version of the rule that found the match (see ``Engine.replace_rule``)."""
    lists: Mapping[str, int] = attrs.field(factory=dict)
    """The version of each named list the rule's expressions read, when the alert was made
    (empty for a rule that reads none); not part of ``alert_id``."""
    mode: str = LIVE
    """The mode of the rule version that made the alert (:data:`LIVE` or :data:`SHADOW`); not
    part of ``alert_id``."""

    @property
    def shadow(self) -> bool:
        """Whether the alert comes from a shadow rule: recorded, never acted on."""
        return self.mode == SHADOW

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly rendering (events as given); ``lists`` only when not empty,
        ``mode`` only for a shadow alert (so a live alert's record is as it always was)."""
        out = {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "key": self.key,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "emitted_at": self.emitted_at,
            "events": {name: list(evs) for name, evs in self.events.items()},
        }
        if self.lists:
            out["lists"] = dict(self.lists)
        if self.mode != LIVE:
            out["mode"] = self.mode
        return out


@attrs.frozen
class TimedOutMatch:
    """A partial match whose window ended before it completed (Flink's timeout side output)."""

    rule_id: str
    key: Hashable
    events: Mapping[str, Sequence[Any]]
    timeout_ts: int
    rule_version: int = 1


@attrs.frozen
class LateEvent:
    """An event that arrived after the watermark had passed its timestamp; it was not matched."""

    event: Any
    timestamp: int
    watermark: int


@attrs.frozen
class Overflow:
    """A state cap was reached and what the engine did about it.

    ``kind`` is ``"partial_matches"`` (a key had more live partial matches than
    ``max_partial_matches_per_key``; ``dropped`` of the newest were discarded) or
    ``"buffered_events"`` (more than ``max_buffered_events`` events waited for the watermark;
    the watermark was moved to ``at`` so the oldest could be processed).
    """

    kind: str
    rule_id: str | None
    key: Hashable | None
    dropped: int
    at: int
    """Event time of the overflow: the event's timestamp, or the watermark it was moved to."""


@attrs.frozen
class ConditionFailure:
    """A rule's condition raised on an event. The event was not matched by that rule (the
    key's partial matches are as they were before it); other rules saw it normally."""

    rule_id: str
    key: Hashable
    event: Any
    timestamp: int
    error: str
    """``"<ExceptionType>: <message>"``."""
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)
