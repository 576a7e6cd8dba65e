"""The fraud rules as a PyFlink job: Kafka payments in, alerts and dead letters out, exactly once.

The job graph (docs/flink.md draws it)::

    payments topic --KafkaSource (event time per partition)--> Intake --key_by--> Keyed
        --> KafkaSink (EXACTLY_ONCE): alerts (shadow rules' to their own topic) + dead letters
    rules topic + lists topic --KafkaSource--> broadcast --> Intake, Keyed

- The source reads each record's event time from its JSON in Java
  (:func:`~fraudcep_flink.kafka_io.payment_time`), so watermarks are made per partition,
  trailing its highest time by ``max_out_of_orderness`` (+1 ms), as in the runner; an idle
  partition stops holding them back (not for a bounded input).
- :class:`Intake` reads each record as the Kafka runner does
  (:func:`~fraudcep.payments.payment.decode_payment`, same limits and reason codes; a record
  that is not a payment is a dead letter with the runner's headers), dead-letters payments
  at or below the watermark (``late``) and those whose rule keys cannot be read
  (``bad_event``), and fans the rest out: one element per key group of the current rules
  (rules keyed by ``user_id`` and by ``card_id`` need different Flink keys). Lateness is
  decided here, once per payment, so a late payment is one dead letter.
- :class:`Keyed` runs each (group, key)'s :class:`~fraudcep_flink.keyed.KeyedEngine`: its
  state in a ``ValueState``, engines cached per key, Flink's watermark as the engine's event
  time, an event-time timer at the key's next due time.
- Rules: the rule file (default: the packaged default rules) from the start, overridden by
  the rules topic's records (the runner's format), broadcast to Intake and Keyed, kept in
  broadcast state (the topic's records, and every rule set by digest) so that a restored job
  has them. A key takes a change on its next payment or timer.
- Named lists: the ``--lists`` files from the start, overridden by the lists topic's records
  (the runner's format, :mod:`fraudcep.runtime.list_records`), which come on the same
  broadcast stream; each instance applies them to its one registry the rules of all its keys
  read, so a change is seen by every key's next evaluation. Broadcast state keeps each
  list's latest record.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from pyflink.common import Duration, Row, Types, WatermarkStrategy
from pyflink.datastream import DataStream, KeyedStream, OutputTag, RuntimeContext
from pyflink.datastream.functions import (
    BroadcastProcessFunction,
    KeyedBroadcastProcessFunction,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor
from pyflink.java_gateway import get_gateway

from fraudcep.errors import EventError, FraudcepError
from fraudcep.payments.default_rules import default_rule_definitions
from fraudcep.payments.payment import InvalidRecord, decode_payment
from fraudcep.rules import Lists, RuleDefinition, load_rule_file
from fraudcep.runtime import SideOutputs
from fraudcep.runtime.list_records import ListRecordError, ListSet
from fraudcep.runtime.list_sources import load_lists
from fraudcep.runtime.output_records import (
    BAD_EVENT_REASON,
    LATE_REASON,
    POISON_REASON,
    alert_headers,
    alert_topic,
    alert_value,
    dead_letter_headers,
)
from fraudcep.runtime.rule_records import RuleRecordError, short_repr
from fraudcep_flink.config import JobConfig
from fraudcep_flink.environment import flink_environment
from fraudcep_flink.kafka_io import (
    OUTPUT_RECORD,
    output_row,
    output_sink,
    payment_time,
    record_source,
)
from fraudcep_flink.keyed import KeyedEngine, RuleVersions, flink_key, keys_of

__all__ = ["build_job", "check_start", "run_job"]

log = logging.getLogger("fraudcep.flink")

RULES_STATE = MapStateDescriptor("fraudcep-rules", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
"""Broadcast state: ``topic:<rule id>`` -> the rules topic's latest record value for the id,
``set:<digest>`` -> every rule set there has been, as a rule file (a key's state names the
one it was written with), ``list:<name>`` -> the lists topic's latest record value for the
list."""
DEAD_LETTERS = OutputTag("dead-letters", OUTPUT_RECORD)
CACHE_LIMIT = 50_000
"""Engines cached per operator instance (least recently used go first; the state is the
truth, so an evicted key is read from it again)."""


class _Count:
    """A metrics counter added to at most once a ``period`` (s) while counts come in, and at
    :meth:`flush`: every ``inc`` of a PyFlink counter is a call into Java (thread mode),
    which per record costs as much as decoding the payment."""

    def __init__(self, counter: Any, period: float = 1.0) -> None:
        self.counter = counter
        self.period = period
        self.pending = 0
        self.due = time.monotonic() + period

    def inc(self, n: int = 1) -> None:
        self.pending += n
        now = time.monotonic()
        if now >= self.due:
            self.flush()
            self.due = now + self.period

    def flush(self) -> None:
        if self.pending:
            self.counter.inc(self.pending)
            self.pending = 0


def _file_rules(config: JobConfig, lists: Lists) -> list[RuleDefinition]:
    if config.rules is None:
        return list(default_rule_definitions())
    return list(load_rule_file(config.rules, lists=lists))


def check_start(config: JobConfig) -> None:
    """What the job reads at start, read once before it is built: the ``--lists`` files and
    the rule file compiled against them. A list that cannot be read, or a rule naming a list
    they lack, raises (:class:`~fraudcep.errors.FraudcepError`) here, on the client, rather
    than failing every task at open (and each restart)."""
    _file_rules(config, load_lists(*config.lists))


def _origin(row: Any) -> tuple[Any, ...]:
    """What a dead letter needs of the record it was read from: the fields of the
    :data:`~fraudcep_flink.kafka_io.RAW_RECORD` row, in order (a ``Row``'s fields read by
    name are a Python-level lookup each)."""
    return tuple(row)


def _dead_letter(topic: str, origin: tuple[Any, ...], reason: str, detail: str) -> Any:
    src_topic, partition, offset, timestamp, key, value = origin
    headers = dead_letter_headers(
        reason,
        detail,
        src_topic,
        partition,
        offset,
        None if timestamp is None or timestamp < 0 else timestamp,
    )
    return output_row(topic, key, value, _text(headers))


def _text(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, str]]:
    return [(name, value.decode("utf-8", errors="replace")) for name, value in headers]


KEYED = Types.ROW([Types.STRING(), Types.PICKLED_BYTE_ARRAY()])
"""What :class:`Intake` emits: the Flink key (:func:`~fraudcep_flink.keyed.flink_key`) and
the element; :func:`_key_by_first` keys by it."""


def _key_by_first(stream: DataStream) -> KeyedStream:
    """``stream`` (:data:`KEYED`) keyed by its first field, the elements the second.

    What ``key_by`` does after the Python operator it adds to compute the key (PyFlink 2.3,
    ``DataStream.key_by``): Intake computes it instead, one Python call per element fewer."""
    j_keyed = stream._j_data_stream.keyBy(
        get_gateway().jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    return KeyedStream(j_keyed, Types.PICKLED_BYTE_ARRAY(), stream)


class _RulesSide:
    """The broadcast side of Intake and Keyed, the same in both: the rules (the rule file
    overridden by the rules topic) and the named lists (the ``--lists`` files overridden by
    the lists topic) the rules read. Every parallel instance takes every record of both
    topics, in the one order of the broadcast stream, so all arrive at the same rules and
    the same list versions; a list change is seen by every key's next evaluation (the rules
    of every key read the instance's one :class:`~fraudcep.rules.Lists`)."""

    config: JobConfig

    def _open_rules(self, config: JobConfig, metrics: Any) -> None:
        self.lists = load_lists(*config.lists)
        self.list_set = ListSet(self.lists)
        self.versions = RuleVersions(_file_rules(config, self.lists), lists=self.lists)
        self.waiting: dict[str, tuple[bytes | None, bytes, str]] = {}
        """Rules records refused for a list the job lacks, by rule id (the latest), tried
        again after a list change: a rule naming a list the lists topic brings may be read
        before the list (Flink does not order the two topics)."""
        self._rules_restored = False
        self.list_changes = metrics.counter("fraudcep_list_changes")
        self.rejected = metrics.counter("fraudcep_records_rejected")

    def _restore_rules(self, state: Any) -> None:
        """After a restore: the lists, the rule sets and the topics' records from broadcast
        state (lists first: the rules may read them)."""
        if self._rules_restored:
            return
        self._rules_restored = True
        records: dict[str, bytes] = {}
        sets: list[tuple[str, bytes]] = []
        for name, value in sorted(state.items()):
            if name.startswith("list:"):
                try:
                    self.list_set.apply_record(
                        name[len("list:") :].encode(), value, source=f"broadcast state {name}"
                    )
                except ListRecordError as exc:
                    log.error("a lists record kept in state is refused: %s", exc)
            elif name.startswith("topic:"):
                records[name[len("topic:") :]] = value
            elif name.startswith("set:"):
                sets.append((name, value))
        for name, value in sets:
            try:
                self.versions.remember(self.versions.from_text(value.decode(), source=name))
            except FraudcepError as exc:  # a key written with it cannot be read: said then
                log.error("a rule set kept in state is refused: %s", exc)
        for rule_id in sorted(records):
            try:
                self.versions.apply_record(rule_id.encode(), records[rule_id],
                                           source=f"broadcast state {rule_id}")  # fmt: skip
            except RuleRecordError as exc:  # taken once, so it is only refused now
                log.error("a rules record kept in state is refused: %s", exc)

    def process_broadcast_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        state = ctx.get_broadcast_state(RULES_STATE)
        self._restore_rules(state)
        source = f"{value.topic}[{value.partition}]@{value.offset}"
        what = "lists" if value.topic == self.config.lists_topic else "rules"
        try:
            if what == "lists":
                self._take_list(state, value.key, value.value, source)
            else:
                self._take_rule(state, value.key, value.value, source)
        except (RuleRecordError, ListRecordError) as exc:
            self.rejected.inc()
            missing = getattr(exc, "missing_lists", ())
            then = f" (waits for list {', '.join(missing)})" if missing else ""
            log.error("rejected %s record %s%s: %s", what, source, then, exc)
        except Exception as exc:  # no record may stop the job
            self.rejected.inc()
            log.error("rejected %s record %s: %s: %s", what, source, type(exc).__name__, exc)
        return iter(())

    def _take_rule(self, state: Any, key: bytes | None, value: bytes | None, source: str) -> None:
        rule_id = (key or b"").decode("utf-8", errors="replace")
        try:
            changed = self.versions.apply_record(key, value, source=source)
        except RuleRecordError as exc:
            if exc.missing_lists and key is not None and value:
                self.waiting[rule_id] = (key, value, source)
            else:
                self.waiting.pop(rule_id, None)
            raise
        self.waiting.pop(rule_id, None)
        if value:
            state.put(f"topic:{rule_id}", value)
        elif state.contains(f"topic:{rule_id}"):
            state.remove(f"topic:{rule_id}")
        if changed:
            current = self.versions.current
            state.put(f"set:{current.digest}", current.text().encode())
            log.info("rules changed by %s: now %s", source, short_repr(current.digest[:12]))

    def _take_list(self, state: Any, key: bytes | None, value: bytes | None, source: str) -> None:
        changed = self.list_set.apply_record(key, value, source=source)
        name = (key or b"").decode("utf-8", errors="replace")
        if value:
            state.put(f"list:{name}", value)
        elif state.contains(f"list:{name}"):
            state.remove(f"list:{name}")
        if not changed:
            return
        named = self.lists.get(name)
        self.list_changes.inc()
        log.info("list %s changed by %s: version %d, %d entries", name, source, named.version,
                 len(named))  # fmt: skip
        for rule_key, rule_value, rule_source in [self.waiting[i] for i in sorted(self.waiting)]:
            try:
                self._take_rule(state, rule_key, rule_value, rule_source)
            except Exception:  # refused again (logged the first time): it waits on, or
                continue  # (another reason now) is dropped
            log.info("rules record %s taken after list %s changed", rule_source, name)


class Intake(_RulesSide, BroadcastProcessFunction):  # type: ignore[misc]
    """Kafka records -> one ``(group, key, payment, where)`` per key group, with its Flink key
    (:data:`KEYED`); records that are not payments, late payments and payments the rules
    cannot read are dead letters."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        metrics = runtime_context.get_metrics_group()
        self._open_rules(self.config, metrics)
        self.ts = self.config.timestamp_field
        self.dlq = self.config.dead_letter_topic
        self.max_bytes = self.config.max_record_bytes
        self.read = _Count(metrics.counter("fraudcep_records_read"))
        self.dead = metrics.counter("fraudcep_records_dead_lettered")
        self.late = metrics.counter("fraudcep_payments_late")

    def close(self) -> None:
        self.read.flush()

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        if not self._rules_restored:
            self._restore_rules(ctx.get_broadcast_state(RULES_STATE))
        self.read.inc()
        origin = _origin(value)
        try:
            payment = decode_payment(origin[5], max_bytes=self.max_bytes)
        except InvalidRecord as exc:
            self.dead.inc()
            yield DEAD_LETTERS, _dead_letter(self.dlq, origin, exc.reason, exc.detail)
            return
        watermark = ctx.current_watermark()
        ts = payment[self.ts]
        if ts <= watermark:
            self.late.inc()
            self.dead.inc()
            detail = f"event time {ts} <= watermark {watermark}"
            yield DEAD_LETTERS, _dead_letter(self.dlq, origin, LATE_REASON, detail)
            return
        try:
            pairs = keys_of(payment, self.versions.current)
        except EventError as exc:
            self.dead.inc()
            yield DEAD_LETTERS, _dead_letter(self.dlq, origin, BAD_EVENT_REASON, str(exc))
            return
        where = origin[:5]  # no value: a processing failure dead-letters the payment's JSON
        for group, key in pairs:
            yield Row(flink_key(group, key), (group, key, payment, where))


class Keyed(_RulesSide, KeyedBroadcastProcessFunction):  # type: ignore[misc]
    """The engine per Flink key (see :mod:`fraudcep_flink.keyed`)."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        metrics = runtime_context.get_metrics_group()
        self._open_rules(self.config, metrics)
        self.options = self.config.engine_options
        self.outputs = SideOutputs()
        self.callbacks = self.outputs.callbacks()
        self.key_state = runtime_context.get_state(
            ValueStateDescriptor("fraudcep-key", Types.PICKLED_BYTE_ARRAY())
        )
        self.cache: OrderedDict[str, KeyedEngine] = OrderedDict()
        self.alerts_topic = self.config.alerts_topic
        self.shadow_alerts_topic = self.config.shadow_alerts_topic
        self.dlq = self.config.dead_letter_topic
        self.ts = self.config.timestamp_field
        self.seen = 0
        self.alert_count = metrics.counter("fraudcep_alerts")
        self.metrics = metrics
        self.alerts_by: dict[tuple[str, str], Any] = {}
        """Per (rule, mode): ``fraudcep_alerts`` in the metric groups ``rule`` and ``mode``
        (made at a rule's first alert: rules come and go with the rules topic)."""
        self.condition_errors = metrics.counter("fraudcep_condition_errors")
        self.overflows = metrics.counter("fraudcep_overflows")
        self.refusals = metrics.counter("fraudcep_rule_changes_refused")
        self.failures = metrics.counter("fraudcep_processing_failures")
        self.late_here = metrics.counter("fraudcep_payments_late_at_key")
        metrics.gauge("fraudcep_cached_keys", lambda: len(self.cache))

    def _entry(self, fk: str, element: tuple[Any, ...] | None) -> KeyedEngine | None:
        entry = self.cache.get(fk)
        if entry is not None:
            self.cache.move_to_end(fk)
        else:
            stored = self.key_state.value()
            if stored is not None:
                entry = KeyedEngine.load(stored, self.versions, self.options, self.callbacks)
            elif element is not None:
                entry = KeyedEngine(element[0], element[1], self.versions.current, self.options,
                                    self.callbacks)  # fmt: skip
            else:
                return None  # a timer of a key that has nothing any more
            self.cache[fk] = entry
            if len(self.cache) > CACHE_LIMIT:
                self.cache.popitem(last=False)
        done = entry.to_rules(self.versions.current)
        if done is not None and done.refused is not None:
            self.refusals.inc()
            log.error("rule change refused for key group %s: %s", entry.group, done.refused)
        return entry

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        if not self._rules_restored:
            self._restore_rules(ctx.get_broadcast_state(RULES_STATE))
        self.seen += 1
        self._maybe_fail()
        fk = flink_key(value[0], value[1])
        entry = self._entry(fk, value)
        assert entry is not None
        timers = ctx.timer_service()
        watermark = timers.current_watermark()
        ts = value[2][self.ts]
        if ts <= watermark:
            return self._late(value, ts, watermark)
        try:
            alerts = entry.feed(value[2], watermark)
        except Exception as exc:  # the payment's, not the job's: it would fail every restart
            return self._failed(fk, value, exc)
        self._save(fk, entry, timers)
        return self._out(alerts)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        fk = ctx.get_current_key()
        entry = self._entry(fk, None)
        if entry is None:
            return iter(())
        timers = ctx.timer_service()
        alerts = entry.advance(max(timers.current_watermark(), timestamp))
        entry.timer = None
        self._save(fk, entry, timers)
        return self._out(alerts)

    def _late(self, value: tuple[Any, ...], ts: int, watermark: int) -> Iterator[Any]:
        """A payment Intake found in time but this operator's event time has passed: Flink's
        watermark here is the least over the upstream channels that are not idle, so a
        channel that was idle (or a source subtask that finished) can have let it run ahead
        of a channel's records. Dead-lettered ``late`` per key group it missed (the detail
        says which), never dropped unseen."""
        self.late_here.inc()
        detail = f"event time {ts} <= watermark {watermark} (key group {value[0]})"
        body = json.dumps(value[2], separators=(",", ":"), default=str).encode()
        yield DEAD_LETTERS, _dead_letter(self.dlq, (*value[3], body), LATE_REASON, detail)

    def _failed(self, fk: str, value: tuple[Any, ...], exc: Exception) -> Iterator[Any]:
        """A payment whose processing raised: the key's engine is dropped (its state, written
        before the payment, stays), and the payment is a dead letter (``processing_failed``):
        the same payment would fail again after every restart."""
        self.cache.pop(fk, None)
        self.failures.inc()
        detail = f"{type(exc).__name__}: {exc}"
        log.error("processing a payment failed (key group %s): %s", value[0], detail)
        body = json.dumps(value[2], separators=(",", ":"), default=str).encode()
        origin = (*value[3], body)
        yield DEAD_LETTERS, _dead_letter(self.dlq, origin, POISON_REASON, detail)

    def _save(self, fk: str, entry: KeyedEngine, timers: Any) -> None:
        state = entry.state()
        if state is None:
            self.key_state.clear()
            if not entry.engine.rules:
                self.cache.pop(fk, None)
            # else the engine stays cached: a key that holds nothing is a fresh engine's
            # equal, and making one (its rules added one by one) costs more than the rest
            # of a payment's processing
            return
        self.key_state.update(state)
        due = entry.next_due
        if due is not None and (entry.timer is None or due < entry.timer):
            # a timer due earlier is registered already: when it fires, the next is set
            timers.register_event_time_timer(due)
            entry.timer = due

    def _out(self, alerts: Sequence[Any]) -> Iterator[Any]:
        out = [
            output_row(
                alert_topic(alert, self.alerts_topic, self.shadow_alerts_topic),
                alert.alert_id.encode(),
                alert_value(alert),
                _text(alert_headers(alert)),
            )
            for alert in alerts
        ]
        if alerts:
            self.alert_count.inc(len(alerts))
            for alert in alerts:
                self._alert_counter(alert.rule_id, alert.mode).inc()
        if self.outputs:
            self._side_outputs()
        return iter(out)

    def _alert_counter(self, rule_id: str, mode: str) -> Any:
        counter = self.alerts_by.get((rule_id, mode))
        if counter is None:
            group = self.metrics.add_group("rule", rule_id).add_group("mode", mode)
            counter = self.alerts_by[rule_id, mode] = group.counter("fraudcep_alerts")
        return counter

    def _side_outputs(self) -> None:
        out = self.outputs
        for failure in out.errors:
            self.condition_errors.inc()
            log.warning("condition of rule %s raised: %s", failure.rule_id, failure.error)
        for overflow in out.overflows:
            self.overflows.inc()
            log.warning("state cap overflow: %s (rule %s)", overflow.kind, overflow.rule_id)
        for late in out.late:  # not expected: payments above the watermark are fed
            self.late_here.inc()
            log.error("the engine found a payment late: %s <= %s", late.timestamp, late.watermark)
        out.clear()

    def _maybe_fail(self) -> None:
        """Testing: fail once at the ``fail_after``-th payment (a flag file says it is done)."""
        c = self.config
        if not (c.fail_after and c.fail_flag and self.seen == c.fail_after):
            return
        try:
            with open(c.fail_flag, "x"):
                pass
        except FileExistsError:
            return
        raise RuntimeError(f"injected failure at payment {c.fail_after}")


def build_job(env: Any, config: JobConfig) -> None:
    """Add the job's graph to ``env`` (see the module docstring)."""
    props = dict(config.kafka_config)
    env.enable_checkpointing(config.checkpoint_interval)
    payments_source = record_source(
        config.bootstrap,
        [config.input_topic],
        group_id=config.group_id,
        bounded=config.bounded,
        properties=props,
    )
    # event time read on the source, so that watermarks are made per partition (as the
    # runner's); no idleness for a bounded input: a source subtask without a partition
    # finishes at once with the end-of-time watermark, and were the others idle before
    # their first records, event time downstream would jump to the end
    time_of = payment_time(
        config.timestamp_field,
        config.max_out_of_orderness,
        idle_timeout_ms=None if config.bounded else config.idle_timeout,
    )
    records = env.from_source(payments_source, time_of, "payments")
    changes = [t for t in (config.rules_topic, config.lists_topic) if t is not None]
    if changes:
        rules_source = record_source(
            config.bootstrap,
            changes,
            group_id=f"{config.group_id}-rules",
            bounded=config.bounded,
            starting="earliest",  # every instance needs every rule and list
            properties=props,
        )
        # the rules stream's event time is its records' own (Kafka) time; idle, it does
        # not hold the payments' event time back
        rules_time = WatermarkStrategy.for_monotonous_timestamps().with_idleness(
            Duration.of_millis(min(config.idle_timeout, 1000))
        )
        rules = env.from_source(rules_source, rules_time, "rules and lists").set_parallelism(1)
    else:
        rules = env.from_collection([], type_info=records.get_type())
    intake = records.connect(rules.broadcast(RULES_STATE)).process(
        Intake(config), output_type=KEYED
    )
    keyed = _key_by_first(intake)
    alerts = keyed.connect(rules.broadcast(RULES_STATE)).process(
        Keyed(config), output_type=OUTPUT_RECORD
    )
    dead = intake.get_side_output(DEAD_LETTERS).union(alerts.get_side_output(DEAD_LETTERS))
    sink = output_sink(
        config.bootstrap,
        transactional_id_prefix=config.transactional_id_prefix,
        transaction_timeout_ms=config.transaction_timeout,
        properties=props,
    )
    alerts.union(dead).sink_to(sink)


def run_job(config: JobConfig, *, cluster: bool = False) -> None:
    """Build and run the job: on a local mini-cluster (thread mode set up from this
    interpreter), or, with ``cluster``, in the environment ``flink run`` provides."""
    env = flink_environment(
        parallelism=config.parallelism,
        thread_mode=config.execution_mode == "thread",
        local=not cluster,
        restart_attempts=3,
    )
    build_job(env, config)
    env.execute(f"fraudcep {config.input_topic} -> {config.alerts_topic}")


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    from fraudcep_flink.config import parse_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    cluster = "--cluster" in args
    args = [a for a in args if a != "--cluster"]
    try:
        config = parse_args(args, os.environ)
        check_start(config)
    except FraudcepError as exc:
        print(f"fraudcep flink run: {exc}", file=sys.stderr)
        return 2
    run_job(config, cluster=cluster)
    return 0
