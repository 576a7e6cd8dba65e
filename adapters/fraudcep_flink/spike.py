"""Spike: the engine inside a PyFlink ``KeyedBroadcastProcessFunction`` (groundwork for the
adapter; see docs/flink.md).

The job: a bounded collection of payments → event timestamps and watermarks with bounded
out-of-orderness → fan-out, one element per key group of the rules (``user_id``,
``card_id``: rules keyed differently need different Flink keys) → ``key_by`` (group, key) →
connected to a broadcast stream of rule-set markers → :class:`EngineFunction` → alerts
(JSON strings), collected.

Per Flink key, :class:`EngineFunction` runs an :class:`~fraudcep.Engine` of the key group's
rules (``auto_watermark=False``: Flink's watermark is the engine's event time) and keeps in
keyed state

- ``record``: the key's engine record (:meth:`~fraudcep.Engine.export_key`, bytes), and
- ``held``: the key's payments above the watermark, which the engine holds in its buffer
  and which a record does not carry (the engine's buffer is shared by all its keys),

both ``ValueState`` of ``Types.PICKLED_BYTE_ARRAY()`` (bytes in thread mode need it). Engine
objects are cached per key in the operator (the state stays the truth: it is written after
every change, so a restored or rescaled operator starts from it with an empty cache). Each
element first moves the key's engine to the current watermark (the alerts that closes), then
feeds the payment (a payment at or below the watermark is late: counted, not fed); an
event-time timer is registered at the engine's next due time (:attr:`~fraudcep.Engine.next_due`),
and ``on_timer`` moves the engine to the watermark. A key with nothing pending has its
state cleared and leaves the cache.

Run it with the Flink virtualenv's Python: ``python -m fraudcep_flink.spike --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import RuntimeContext
from pyflink.datastream.functions import FlatMapFunction, KeyedBroadcastProcessFunction
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from fraudcep import Engine
from fraudcep.payments.default_rules import default_rules
from fraudcep.timeutil import MAX_TIMESTAMP
from fraudcep_flink.environment import local_environment

__all__ = ["EngineFunction", "core_alerts", "run_spike"]

RULES_STATE = MapStateDescriptor("rules", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
#: Cached engines per operator; past this the cache is emptied (the state is the truth).
CACHE_LIMIT = 10_000


class PaymentTimestamps(TimestampAssigner):  # type: ignore[misc]
    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        return int(value["ts"])


class FanOut(FlatMapFunction):  # type: ignore[misc]
    """One element per key group: ``(group, key, payment)``."""

    def __init__(self, groups: tuple[str, ...]) -> None:
        self.groups = groups

    def flat_map(self, value: Any) -> Iterator[tuple[str, str, Any]]:
        for group in self.groups:
            key = value.get(group)
            if key is not None:
                yield group, str(key), value


@dataclass
class _Key:
    engine: Engine
    held: list[dict[str, Any]] = field(default_factory=list)
    timer: int | None = None


class EngineFunction(KeyedBroadcastProcessFunction):  # type: ignore[misc]
    """The engine per Flink key, state in ``ValueState`` of record bytes; see the module."""

    def __init__(
        self,
        event_id: str = "payment_id",
        marker_every: int = 0,
        fail_after: int = 0,
        fail_flag: str | None = None,
    ) -> None:
        self.event_id = event_id
        #: with N > 0 and a flag file that does not exist yet: the N-th element of an operator
        #: creates the file and raises (a task failure injected once, for restore tests)
        self.fail_after = fail_after
        self.fail_flag = fail_flag
        #: with N > 0, every N-th element also emits ``{"seen": count, "t": wall clock}``
        #: (throughput measurement, docs/flink.md)
        self.marker_every = marker_every

    def open(self, runtime_context: RuntimeContext) -> None:
        rules = default_rules()
        groups = Engine(rules).key_groups()
        by_id = {r.id: r for r in rules}
        self.group_rules = {g: [by_id[i] for i in ids] for g, ids in groups.items()}
        self.record = runtime_context.get_state(
            ValueStateDescriptor("record", Types.PICKLED_BYTE_ARRAY())
        )
        self.held = runtime_context.get_state(
            ValueStateDescriptor("held", Types.PICKLED_BYTE_ARRAY())
        )
        self.cache: dict[str, _Key] = {}
        self.rules_seen: str | None = None
        self.late = 0
        self.seen = 0

    # -- the rules side (the spike only records the markers it is sent) ---------------------

    def process_broadcast_element(self, value: Any, ctx: Any) -> Iterator[str]:
        ctx.get_broadcast_state(RULES_STATE).put("rules", value)
        return iter(())

    # -- the keyed side ---------------------------------------------------------------------

    def process_element(self, value: Any, ctx: Any) -> Iterator[str]:
        group, key, payment = value
        if self.fail_after and self.seen + 1 == self.fail_after and self.fail_flag:
            try:
                with open(self.fail_flag, "x"):
                    pass
            except FileExistsError:
                pass
            else:
                raise RuntimeError(f"injected failure at element {self.fail_after}")
        rules = ctx.get_broadcast_state(RULES_STATE).get("rules")
        if rules != self.rules_seen:  # the spike has one rule set; the adapter applies changes
            self.rules_seen = rules
        flink_key = ctx.get_current_key()
        entry = self._entry(flink_key, group, key)
        wm = ctx.timer_service().current_watermark()
        alerts = self._advance(entry, wm)
        if payment["ts"] <= wm:
            self.late += 1
            alerts_out = [json.dumps({"late": payment[self.event_id], "watermark": wm})]
        else:
            alerts += entry.engine.process(payment)
            entry.held.append(payment)
            alerts_out = []
        self._save(flink_key, group, key, entry, ctx.timer_service())
        self.seen += 1
        if self.marker_every and self.seen % self.marker_every == 0:
            alerts_out.append(json.dumps({"seen": self.seen, "t": time.time()}))
        return iter(alerts_out + [_alert_json(a, wm) for a in alerts])

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[str]:
        flink_key = ctx.get_current_key()
        group, key = flink_key.split("\x00", 1)
        entry = self._entry(flink_key, group, key)
        entry.timer = None
        wm = max(ctx.timer_service().current_watermark(), timestamp)
        alerts = self._advance(entry, wm)
        self._save(flink_key, group, key, entry, ctx.timer_service())
        return iter([_alert_json(a, wm) for a in alerts])

    def _entry(self, flink_key: str, group: str, key: str) -> _Key:
        entry = self.cache.get(flink_key)
        if entry is not None:
            return entry
        engine = Engine(self.group_rules[group], auto_watermark=False, event_id=self.event_id)
        record = self.record.value()
        if record is not None:
            engine.import_key(group, key, record)
        held = list(self.held.value() or ())
        for payment in held:
            engine.process(payment)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        entry = self.cache[flink_key] = _Key(engine, held)
        return entry

    @staticmethod
    def _advance(entry: _Key, watermark: int) -> list[Any]:
        engine = entry.engine
        due = engine.next_due
        if due is None or watermark < due:
            if engine.watermark is None or watermark > engine.watermark:
                return list(engine.advance_watermark(min(watermark, MAX_TIMESTAMP)))
            return []
        alerts = list(engine.advance_watermark(min(watermark, MAX_TIMESTAMP)))
        entry.held = [p for p in entry.held if p["ts"] > watermark]
        return alerts

    def _save(self, flink_key: str, group: str, key: str, entry: _Key, timers: Any) -> None:
        engine = entry.engine
        record = engine.export_key(group, key)
        due = engine.next_due
        if record is None and not entry.held and due is None:
            self.record.clear()
            self.held.clear()
            self.cache.pop(flink_key, None)
            return
        self.record.update(record)
        self.held.update(entry.held)
        if due is not None and due != entry.timer:
            timers.register_event_time_timer(due)
            entry.timer = due


def _alert_json(alert: Any, watermark: int) -> str:
    return json.dumps(
        {
            "alert_id": alert.alert_id,
            "rule_id": alert.rule_id,
            "key": alert.key,
            "watermark": watermark,
        }
    )


def run_spike(
    payments: Iterable[dict[str, Any]],
    *,
    parallelism: int = 1,
    max_out_of_orderness_ms: int = 0,
    watermark_interval_ms: int = 1,
    marker_every: int = 0,
    env: Any = None,
) -> tuple[list[dict[str, Any]], float]:
    """Run the job on a local mini-cluster; returns what it emitted and its wall time (s)."""
    payments = list(payments)
    groups = tuple(Engine(default_rules()).key_groups())
    if env is None:
        env = local_environment(
            parallelism=parallelism, watermark_interval_ms=watermark_interval_ms
        )
    started = time.monotonic()
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(max_out_of_orderness_ms)
    ).with_timestamp_assigner(PaymentTimestamps())
    source = (
        # no type_info: the elements travel pickled (PICKLED_BYTE_ARRAY); with it, py4j would
        # turn each dict into a java.util.HashMap
        env.from_collection(payments).assign_timestamps_and_watermarks(strategy)
    )
    rules = env.from_collection(["default"], type_info=Types.STRING())
    keyed = source.flat_map(FanOut(groups), output_type=Types.PICKLED_BYTE_ARRAY()).key_by(
        lambda e: f"{e[0]}\x00{e[1]}", key_type=Types.STRING()
    )
    out = keyed.connect(rules.broadcast(RULES_STATE)).process(
        EngineFunction(marker_every=marker_every), output_type=Types.STRING()
    )
    with out.execute_and_collect("fraudcep-spike") as results:
        emitted = [json.loads(line) for line in results]
    return emitted, time.monotonic() - started


def core_alerts(
    payments: Iterable[dict[str, Any]], *, max_out_of_orderness_ms: int = 0
) -> list[Any]:
    """What the core engine alerts on the same stream (default rules, ids by payment id)."""
    engine = Engine(
        default_rules(), event_id="payment_id", max_out_of_orderness=max_out_of_orderness_ms
    )
    alerts = list(engine.process_many(payments))
    return alerts + list(engine.flush())


def groups_of() -> tuple[str, ...]:
    """The key groups of the default rules (the fan-out's groups)."""
    return tuple(Engine(default_rules()).key_groups())


def main(argv: list[str] | None = None) -> int:
    from fraudcep.payments.synthetic import PaymentGenerator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="payments (default 5000)")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--jitter-ms", type=int, default=2000, help="out-of-order input")
    parser.add_argument("--bound-ms", type=int, default=2000, help="max out-of-orderness")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--marker-every", type=int, default=0, help="throughput markers (parallelism 1)"
    )
    args = parser.parse_args(argv)
    gen = PaymentGenerator(
        seed=args.seed,
        users=200,
        jitter_ms=args.jitter_ms,
        safe_noise=False,
        scenarios_per_10k=50,
    )
    payments = [dict(p) for p in gen.payments(args.n)]
    want = sorted(a.alert_id for a in core_alerts(payments, max_out_of_orderness_ms=args.bound_ms))
    emitted, took = run_spike(
        payments,
        parallelism=args.parallelism,
        max_out_of_orderness_ms=args.bound_ms,
        marker_every=args.marker_every,
    )
    got = sorted(e["alert_id"] for e in emitted if "alert_id" in e)
    late = [e for e in emitted if "late" in e]
    before_end = sum(1 for e in emitted if "alert_id" in e and e["watermark"] < MAX_TIMESTAMP)
    marks = [e for e in emitted if "seen" in e]
    rate = None
    if len(marks) >= 2:
        rate = (marks[-1]["seen"] - marks[0]["seen"]) / (marks[-1]["t"] - marks[0]["t"])
    print(
        json.dumps(
            {
                "payments": len(payments),
                "core_alerts": len(want),
                "flink_alerts": len(got),
                "alerts_before_final_watermark": before_end,
                "late": len(late),
                "equal": got == want,
                "seconds": round(took, 1),
                # keyed elements per second (one per key group of a payment), and payments
                "elements_per_s": None if rate is None else round(rate),
                "payments_per_s": None if rate is None else round(rate / len(groups_of())),
            }
        )
    )
    return 0 if got == want else 1


if __name__ == "__main__":
    sys.exit(main())
