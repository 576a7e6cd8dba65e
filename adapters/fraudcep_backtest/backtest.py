"""Run rules over historical payments and measure them: :func:`run_backtest`.

The payments go through :meth:`fraudcep.Engine.process_batch` (first-stage conditions as
vectorised filters over each Arrow batch, exactly as row by row: docs/columnar.md). Each alert
is kept as a :class:`AlertRecord`: rule, key, first and last event time, and the payment ids
of its matched payments by stage, as ``fraudcep rules test --event-id payment_id`` shows them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from fraudcep import Alert, Engine, LateEvent
from fraudcep.alert import event_label
from fraudcep.rules import RuleDefinition

__all__ = [
    "SCHEMA_VERSION",
    "AlertRecord",
    "BacktestResult",
    "Comparison",
    "RuleStats",
    "alert_stats",
    "compare_alerts",
    "run_backtest",
]

SCHEMA_VERSION: Final = 1
"""Version of the JSON that :meth:`BacktestResult.to_json` gives."""

ALL_RULES: Final = "(all rules)"
"""The id of the line of :attr:`BacktestResult.rules` that counts every rule together."""


def _day(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).strftime("%Y-%m-%d")


@attrs.frozen
class AlertRecord:
    """One alert as the backtest keeps it."""

    rule_id: str
    key: Hashable
    first_ts: int
    last_ts: int
    #: Stage name -> ids of the matched payments, in match order.
    events: tuple[tuple[str, tuple[Any, ...]], ...]

    @classmethod
    def of(cls, alert: Alert, id_field: str, ts_field: str) -> AlertRecord:
        return cls(
            rule_id=alert.rule_id,
            key=alert.key,
            first_ts=alert.first_ts,
            last_ts=alert.last_ts,
            events=tuple(
                (name, tuple(event_label(e, id_field, ts_field) for e in evs))
                for name, evs in alert.events.items()
            ),
        )

    def payment_ids(self) -> set[str]:
        """The matched payments' ids, as strings (as labels are compared)."""
        return {str(i) for _, ids in self.events for i in ids}

    def to_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "key": self.key,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "events": {name: list(ids) for name, ids in self.events},
        }


@attrs.frozen
class RuleStats:
    """What one rule (or every rule together: :data:`ALL_RULES`) alerted on."""

    rule_id: str
    version: int | None
    alerts: int
    distinct_keys: int
    payments_flagged: int
    #: UTC day (YYYY-MM-DD) of each alert's last payment -> alerts.
    alerts_per_day: Mapping[str, int]
    #: With labels: flagged payments labelled fraud / not labelled fraud; else None.
    fraud_caught: int | None = None
    good_flagged: int | None = None
    #: fraud_caught / payments_flagged (None with no flagged payment or no labels).
    precision: float | None = None
    #: fraud_caught / fraud payments read (None with none read or no labels).
    recall: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "version": self.version,
            "alerts": self.alerts,
            "distinct_keys": self.distinct_keys,
            "payments_flagged": self.payments_flagged,
            "alerts_per_day": dict(sorted(self.alerts_per_day.items())),
            "fraud_caught": self.fraud_caught,
            "good_flagged": self.good_flagged,
            "precision": self.precision,
            "recall": self.recall,
        }


@attrs.frozen
class Comparison:
    """One rule id in the candidate rules and the baseline rules: what each alerts on that the
    other does not. An alert is the same alert when its rule id, key, first and last event
    time and matched payment ids by stage are the same (versions may differ)."""

    rule_id: str
    in_candidate: bool
    in_baseline: bool
    alerts_candidate: int
    alerts_baseline: int
    alerts_only_candidate: int
    alerts_only_baseline: int
    alerts_both: int
    payments_only_candidate: int
    payments_only_baseline: int
    payments_both: int
    #: With labels: fraud payments only the candidate / only the baseline flags.
    fraud_only_candidate: int | None = None
    fraud_only_baseline: int | None = None
    #: A few examples (payment ids) of each side's own flagged payments.
    examples_only_candidate: tuple[Any, ...] = ()
    examples_only_baseline: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["examples_only_candidate"] = list(self.examples_only_candidate)
        out["examples_only_baseline"] = list(self.examples_only_baseline)
        return out


@attrs.frozen
class BacktestResult:
    """Everything a backtest found; :meth:`to_json` for scripts, the HTML report draws it."""

    payments: int
    late_payments: int
    fraud_labels: int | None
    fraud_payments: int | None
    first_ts: int | None
    last_ts: int | None
    seconds: float
    rules: tuple[RuleStats, ...]
    alerts: tuple[AlertRecord, ...]
    disabled_rules: tuple[str, ...] = ()
    baseline_rules: tuple[RuleStats, ...] | None = None
    comparison: tuple[Comparison, ...] | None = None
    source: str = ""
    warnings: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """Alerts per rule id (the rules without alerts included), as ``rules test`` counts."""
        return {s.rule_id: s.alerts for s in self.rules if s.rule_id != ALL_RULES}

    def to_json(self, *, alerts: bool = True) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "payments": self.payments,
            "late_payments": self.late_payments,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "seconds": round(self.seconds, 3),
            "fraud_labels": self.fraud_labels,
            "fraud_payments": self.fraud_payments,
            "disabled_rules": list(self.disabled_rules),
            "rules": [s.to_json() for s in self.rules],
            "baseline_rules": None
            if self.baseline_rules is None
            else [s.to_json() for s in self.baseline_rules],
            "comparison": None
            if self.comparison is None
            else [c.to_json() for c in self.comparison],
            "warnings": list(self.warnings),
            "alerts": [a.to_json() for a in self.alerts] if alerts else None,
        }


class _Run:
    """One engine over the batches, with its alerts."""

    def __init__(
        self,
        definitions: Sequence[RuleDefinition],
        ts_field: str,
        id_field: str,
        out_of_orderness: int,
    ) -> None:
        self.enabled = [d for d in definitions if d.enabled]
        self.disabled = tuple(d.id for d in definitions if not d.enabled)
        self.late: list[int] = []
        self.engine = Engine(
            [d.rule for d in self.enabled],
            timestamp=ts_field,
            max_out_of_orderness=out_of_orderness,
            on_late=self._late,
        )
        self.ts_field, self.id_field = ts_field, id_field
        self.alerts: list[AlertRecord] = []

    def _late(self, event: LateEvent) -> None:
        self.late.append(event.timestamp)

    def feed(self, batch: pa.RecordBatch) -> None:
        self._keep(self.engine.process_batch(batch))

    def finish(self) -> None:
        self._keep(self.engine.flush())

    def _keep(self, alerts: Iterable[Alert]) -> None:
        self.alerts.extend(AlertRecord.of(a, self.id_field, self.ts_field) for a in alerts)

    def stats(self, fraud: set[str] | None) -> tuple[RuleStats, ...]:
        return alert_stats(self.alerts, {d.id: d.version for d in self.enabled}, fraud)


def alert_stats(
    alerts: Sequence[AlertRecord], versions: Mapping[str, int | None], fraud: set[str] | None
) -> tuple[RuleStats, ...]:
    """A line per rule of ``versions`` (in its order, then any other rule the alerts name)
    and one for every rule together (:data:`ALL_RULES`). ``fraud``: the fraud payment ids
    recall is measured over."""
    by_rule: dict[str, list[AlertRecord]] = {rule_id: [] for rule_id in versions}
    for alert in alerts:
        by_rule.setdefault(alert.rule_id, []).append(alert)
    out = [_stats(rid, versions.get(rid), mine, fraud) for rid, mine in by_rule.items()]
    out.append(_stats(ALL_RULES, None, alerts, fraud))
    return tuple(out)


def _key(key: Hashable) -> Hashable:
    return (type(key).__name__, key)


def _stats(
    rule_id: str, version: int | None, alerts: Sequence[AlertRecord], fraud: set[str] | None
) -> RuleStats:
    flagged: set[str] = set()
    for alert in alerts:
        flagged |= alert.payment_ids()
    caught = good = None
    precision = recall = None
    if fraud is not None:
        caught = len(flagged & fraud)
        good = len(flagged) - caught
        precision = caught / len(flagged) if flagged else None
        recall = caught / len(fraud) if fraud else None
    return RuleStats(
        rule_id=rule_id,
        version=version,
        alerts=len(alerts),
        distinct_keys=len({_key(a.key) for a in alerts}),
        payments_flagged=len(flagged),
        alerts_per_day=dict(sorted(Counter(_day(a.last_ts) for a in alerts).items())),
        fraud_caught=caught,
        good_flagged=good,
        precision=precision,
        recall=recall,
    )


def _signature(alert: AlertRecord) -> tuple[Any, ...]:
    return (alert.rule_id, _key(alert.key), alert.first_ts, alert.last_ts, alert.events)


def _compare(candidate: _Run, baseline: _Run, fraud: set[str] | None) -> tuple[Comparison, ...]:
    ids = [d.id for d in candidate.enabled]
    ids += [d.id for d in baseline.enabled if d.id not in ids]
    cand_ids = {d.id for d in candidate.enabled}
    base_ids = {d.id for d in baseline.enabled}
    return tuple(
        compare_alerts(
            rid,
            [a for a in candidate.alerts if a.rule_id == rid],
            [a for a in baseline.alerts if a.rule_id == rid],
            fraud,
            in_candidate=rid in cand_ids,
            in_baseline=rid in base_ids,
        )
        for rid in ids
    )


def compare_alerts(
    rule_id: str,
    mine: Sequence[AlertRecord],
    theirs: Sequence[AlertRecord],
    fraud: set[str] | None,
    *,
    in_candidate: bool,
    in_baseline: bool,
) -> Comparison:
    """The candidate's alerts ``mine`` against the baseline's ``theirs`` (see
    :class:`Comparison`)."""
    sig_c = Counter(_signature(a) for a in mine)
    sig_b = Counter(_signature(a) for a in theirs)
    both = sum((sig_c & sig_b).values())
    pay_c: set[str] = set().union(*(a.payment_ids() for a in mine))
    pay_b: set[str] = set().union(*(a.payment_ids() for a in theirs))
    only_c, only_b = pay_c - pay_b, pay_b - pay_c
    return Comparison(
        rule_id=rule_id,
        in_candidate=in_candidate,
        in_baseline=in_baseline,
        alerts_candidate=len(mine),
        alerts_baseline=len(theirs),
        alerts_only_candidate=len(mine) - both,
        alerts_only_baseline=len(theirs) - both,
        alerts_both=both,
        payments_only_candidate=len(only_c),
        payments_only_baseline=len(only_b),
        payments_both=len(pay_c & pay_b),
        fraud_only_candidate=None if fraud is None else len(only_c & fraud),
        fraud_only_baseline=None if fraud is None else len(only_b & fraud),
        examples_only_candidate=tuple(sorted(only_c, key=str)[:10]),
        examples_only_baseline=tuple(sorted(only_b, key=str)[:10]),
    )


def _ts_range(batch: pa.RecordBatch, ts_field: str) -> tuple[int, int]:
    column = batch.column(ts_field)
    if pa.types.is_timestamp(column.type):
        column = pc.cast(pc.cast(column, pa.timestamp("ms", tz=column.type.tz)), pa.int64())
    bounds = pc.min_max(column)
    return int(bounds["min"].as_py()), int(bounds["max"].as_py())


def run_backtest(
    rules: Sequence[RuleDefinition],
    batches: Iterable[pa.RecordBatch],
    *,
    labels: Iterable[Any] | None = None,
    baseline: Sequence[RuleDefinition] | None = None,
    ts_field: str = "ts",
    id_field: str = "payment_id",
    out_of_orderness: int = 0,
    source: str = "",
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Run the enabled ``rules`` (and ``baseline``'s, over the same batches) and measure them.

    ``batches`` must come in event-time order (see :mod:`fraudcep_backtest.sources`): a payment
    more than ``out_of_orderness`` ms behind the highest timestamp seen is late; the engine
    drops it, and it is counted in :attr:`BacktestResult.late_payments` and in a warning.
    ``labels`` are the payment ids known to be fraud; ``progress`` is called with the number
    of payments read so far after each batch.
    """
    started = time.perf_counter()
    candidate = _Run(rules, ts_field, id_field, out_of_orderness)
    other = None if baseline is None else _Run(baseline, ts_field, id_field, out_of_orderness)
    label_set = None if labels is None else {str(x) for x in labels}
    label_array = None if label_set is None else pa.array(sorted(label_set), pa.string())
    fraud_read: set[str] | None = None if label_set is None else set()
    payments = 0
    first_ts = last_ts = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        candidate.feed(batch)
        if other is not None:
            other.feed(batch)
        payments += batch.num_rows
        low, high = _ts_range(batch, ts_field)
        first_ts = low if first_ts is None else min(first_ts, low)
        last_ts = high if last_ts is None else max(last_ts, high)
        if fraud_read is not None and label_array is not None and id_field in batch.schema.names:
            ids = pc.cast(batch.column(id_field), pa.string())
            fraud_read.update(ids.filter(pc.is_in(ids, value_set=label_array)).to_pylist())
        if progress is not None:
            progress(payments)
    candidate.finish()
    if other is not None:
        other.finish()
    fraud = fraud_read
    warnings = []
    late = len(candidate.late)
    if late:
        warnings.append(
            f"{late} payment(s) came later than the allowed out-of-orderness "
            f"({out_of_orderness} ms) behind the highest timestamp read; the engine dropped "
            "them (they are in the payments read but no rule saw them)"
        )
    rule_stats = candidate.stats(fraud)
    return BacktestResult(
        payments=payments,
        late_payments=late,
        fraud_labels=None if label_set is None else len(label_set),
        fraud_payments=None if fraud is None else len(fraud),
        first_ts=first_ts,
        last_ts=last_ts,
        seconds=time.perf_counter() - started,
        rules=rule_stats,
        alerts=tuple(candidate.alerts),
        disabled_rules=candidate.disabled,
        baseline_rules=None if other is None else other.stats(fraud),
        comparison=None if other is None else _compare(candidate, other, fraud),
        source=source,
        warnings=tuple(warnings),
    )
