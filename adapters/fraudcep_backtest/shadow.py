"""After deployment, the backtest's question again: what would a shadow rule flag that the
live rules do not? :func:`compare_shadow` measures the alerts a runtime wrote for its shadow
rules against the alerts of its live rules over the same event time, with the backtest's
numbers (:class:`RuleStats`, :class:`Comparison`), so a ``fraudcep backtest --baseline`` before
deployment and a shadow report after it read the same way.

Alerts come as their records (the JSON every runtime writes: ``fraudcep.runtime.output_records``),
read from wherever they were kept (the alerts and shadow alerts topics, for one). A shadow
rule is compared with the live rule it is a candidate for when a pair names it (``cand=live``),
else with every live rule together (then only the payment-level columns say something: two
different rules do not make the same alert).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from fraudcep.alert import SHADOW, event_label
from fraudcep_backtest.backtest import (
    AlertRecord,
    Comparison,
    RuleStats,
    alert_stats,
    compare_alerts,
)

__all__ = [
    "ALL_LIVE",
    "SHADOW_SCHEMA_VERSION",
    "AlertRecordError",
    "ShadowResult",
    "alert_record",
    "compare_shadow",
    "slim_record",
]

SHADOW_SCHEMA_VERSION: Final = 1
"""Version of the JSON that :meth:`ShadowResult.to_json` gives."""
ALL_LIVE: Final = "(all live rules)"
"""What an unpaired shadow rule is compared with."""


class AlertRecordError(ValueError):
    """An alert record that is not an alert (no rule id, no events, bad times)."""


def alert_record(record: Mapping[str, Any], id_field: str, ts_field: str) -> AlertRecord:
    """The backtest's view of an alert record: rule, key, times, payment ids by stage."""
    try:
        rule_id = record["rule_id"]
        events = record["events"]
        first_ts, last_ts = int(record["first_ts"]), int(record["last_ts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AlertRecordError(f"not an alert record ({type(exc).__name__}: {exc})") from None
    if not isinstance(rule_id, str) or not isinstance(events, Mapping):
        raise AlertRecordError("not an alert record (rule_id must be text, events a mapping)")
    key = record.get("key")
    if isinstance(key, list):  # JSON made a tuple key a list; keys must stay hashable
        key = tuple(key)
    stages: list[tuple[str, tuple[Any, ...]]] = []
    for name, matched in events.items():
        if not isinstance(matched, list):
            raise AlertRecordError(f"not an alert record (stage {name!r} is not a list)")
        # a slim record (slim_record) holds the labels already
        ids = [event_label(e, id_field, ts_field) if isinstance(e, Mapping) else e for e in matched]
        stages.append((str(name), tuple(ids)))
    try:
        hash(key)
    except TypeError:
        key = repr(key)
    return AlertRecord(rule_id, key, first_ts, last_ts, tuple(stages))


def slim_record(record: Mapping[str, Any], id_field: str, ts_field: str) -> dict[str, Any]:
    """``record`` with its matched payments reduced to their ids: what :func:`compare_shadow`
    reads of it, at a fraction of the memory (a report may hold millions of alerts). Raises
    :class:`AlertRecordError` for a record that is not an alert."""
    alert = alert_record(record, id_field, ts_field)
    return {
        "alert_id": record.get("alert_id"),
        "rule_id": alert.rule_id,
        "rule_version": record.get("rule_version"),
        "key": alert.key,
        "first_ts": alert.first_ts,
        "last_ts": alert.last_ts,
        "events": {name: list(ids) for name, ids in alert.events},
        **({"mode": record["mode"]} if "mode" in record else {}),
    }


@attrs.frozen
class ShadowResult:
    """Shadow rules' alerts measured against the live rules' (see the module docstring)."""

    source: str
    start: int | None
    end: int | None
    shadow_rules: tuple[RuleStats, ...]
    live_rules: tuple[RuleStats, ...]
    comparison: tuple[Comparison, ...]
    fraud_labels: int | None
    alerts_read: int
    alerts_outside: int
    """Alerts read whose last event time is outside ``[start, end)``."""
    pairs: Mapping[str, str] = attrs.field(factory=dict)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SHADOW_SCHEMA_VERSION,
            "source": self.source,
            "from": self.start,
            "to": self.end,
            "alerts_read": self.alerts_read,
            "alerts_outside": self.alerts_outside,
            "fraud_labels": self.fraud_labels,
            "pairs": dict(self.pairs),
            "shadow_rules": [s.to_json() for s in self.shadow_rules],
            "live_rules": [s.to_json() for s in self.live_rules],
            "comparison": [c.to_json() for c in self.comparison],
            "warnings": list(self.warnings),
        }


def compare_shadow(
    live: Iterable[Mapping[str, Any]],
    shadow: Iterable[Mapping[str, Any]],
    *,
    pairs: Mapping[str, str] | None = None,
    labels: Iterable[Any] | None = None,
    start: int | None = None,
    end: int | None = None,
    id_field: str = "payment_id",
    ts_field: str = "ts",
    source: str = "",
) -> ShadowResult:
    """Measure the ``shadow`` alert records against the ``live`` ones.

    Alerts count when their last event time is in ``[start, end)``. ``pairs`` maps a shadow
    rule id to the live rule id it is a candidate for. ``labels``: payment ids known to be
    fraud (recall is over every label given, so give the labels of the same period). A
    record of the wrong kind (a live alert among the shadow ones, or the other way round)
    is a :class:`AlertRecordError`: the two inputs have been mixed up.
    """
    pairs = dict(pairs or {})
    fraud = None if labels is None else {str(x) for x in labels}
    read = outside = 0
    kept: dict[bool, list[AlertRecord]] = {False: [], True: []}
    versions: dict[bool, dict[str, int | None]] = {False: {}, True: {}}
    for is_shadow, records in ((False, live), (True, shadow)):
        for record in records:
            read += 1
            if (record.get("mode") == SHADOW) != is_shadow:
                kind = "shadow" if not is_shadow else "live"
                raise AlertRecordError(
                    f"a {kind} alert ({record.get('alert_id')!r}) among the "
                    f"{'shadow' if is_shadow else 'live'} alerts"
                )
            alert = alert_record(record, id_field, ts_field)
            if (start is not None and alert.last_ts < start) or (
                end is not None and alert.last_ts >= end
            ):
                outside += 1
                continue
            kept[is_shadow].append(alert)
            version = record.get("rule_version")
            seen = versions[is_shadow].get(alert.rule_id)
            if isinstance(version, int) and (seen is None or version > seen):
                versions[is_shadow][alert.rule_id] = version
            else:
                versions[is_shadow].setdefault(alert.rule_id, None)
    warnings = [
        f"--pair {cand}={live_id}: no alert of the shadow rule {cand!r} in the range"
        for cand, live_id in pairs.items()
        if cand not in versions[True]
    ]
    comparison = []
    for rule_id in sorted(set(versions[True]) | set(pairs)):
        mine = [a for a in kept[True] if a.rule_id == rule_id]
        target = pairs.get(rule_id)
        theirs = [a for a in kept[False] if target is None or a.rule_id == target]
        label = f"{rule_id} vs {target if target is not None else ALL_LIVE}"
        comparison.append(
            compare_alerts(
                label,
                [attrs.evolve(a, rule_id=label) for a in mine],
                [attrs.evolve(a, rule_id=label) for a in theirs],
                fraud,
                in_candidate=bool(mine),
                in_baseline=bool(theirs),
            )
        )
    return ShadowResult(
        source=source,
        start=start,
        end=end,
        shadow_rules=alert_stats(kept[True], versions[True], fraud),
        live_rules=alert_stats(kept[False], versions[False], fraud),
        comparison=tuple(comparison),
        fraud_labels=None if fraud is None else len(fraud),
        alerts_read=read,
        alerts_outside=outside,
        pairs=pairs,
        warnings=tuple(warnings),
    )
