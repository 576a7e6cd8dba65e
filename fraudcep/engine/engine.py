"""The engine: many rules over one stream, keyed state, event time, timers and snapshots.

This is the part Flink's ``CepOperator`` plays. Events are buffered until the watermark passes
their timestamp, then fed in timestamp order (equal timestamps in arrival order) to every rule,
each rule keeping one :class:`~.matcher.KeyState` per key. Time is advanced per key before
the key sees an event of a later timestamp, and timers fire at the watermark for keys whose
windows expire, so timeouts, pending ``not_followed_by`` matches and skip-held matches come out
when their windows close. Flink sets timers for fewer windows (none for PREVIOUS_AND_CURRENT
ones), so for such windows it can emit later, and then sometimes another match: see
``docs/semantics.md``, deliberate difference (a).
"""

from __future__ import annotations

import bisect
import enum
import functools
import hashlib
import heapq
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import attrs

from fraudcep.alert import Alert, ConditionFailure, LateEvent, Overflow, TimedOutMatch
from fraudcep.alert.identity import alert_id_of, event_text, key_text, matched_text
from fraudcep.engine import columnar_view, snapshot_v1
from fraudcep.engine.codec import (
    KeyStates,
    decode_key_record,
    encode_key_record,
    read_blob,
    restore_state,
    write_snapshot,
)
from fraudcep.engine.rule import Rule, field_getter
from fraudcep.engine.state import COUNTERS, SKIP, EngineState, RuleState, live_in
from fraudcep.errors import ConfigurationError, EventError, SnapshotError
from fraudcep.nfa import javaheap
from fraudcep.nfa.matcher import NOT_STARTED, KeyState, Run, as_mapping, path
from fraudcep.timeutil import MAX_TIMESTAMP, MIN_TIMESTAMP, duration_ms, timestamp_ms

__all__ = ["SKIP", "Engine", "EngineStats", "TimeMode"]


class TimeMode(enum.Enum):
    """Which clock drives windows and ordering."""

    EVENT_TIME = "event_time"
    PROCESSING_TIME = "processing_time"


@attrs.frozen
class EngineStats:
    """Counters since the engine was created (a restored engine carries its counts on), and
    the current state sizes."""

    events_in: int
    events_late: int
    alerts: int
    timeouts: int
    partial_matches_dropped: int
    forced_watermarks: int
    condition_errors: int
    partial_matches_discarded: int
    live_keys: int
    live_partial_matches: int
    buffered_events: int
    watermark: int | None


_F = TypeVar("_F", bound=Callable[..., Any])


def _feeding(method: _F) -> _F:
    """Mark the engine busy while ``method`` runs, so callbacks cannot change its rules."""

    @functools.wraps(method)
    def wrapper(self: Engine, *args: Any, **kwargs: Any) -> Any:
        if self._busy:
            return method(self, *args, **kwargs)
        self._busy = True
        try:
            return method(self, *args, **kwargs)
        finally:
            self._busy = False

    return wrapper  # type: ignore[return-value]


class Engine:
    """Run ``rules`` over a stream of events; see ``docs/concepts.md``."""

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        timestamp: str | Callable[[Any], Any] | None = "ts",
        time_mode: TimeMode = TimeMode.EVENT_TIME,
        clock: Callable[[], int] | None = None,
        max_out_of_orderness: timedelta | int = 0,
        auto_watermark: bool = True,
        max_partial_matches_per_key: int = 10_000,
        max_buffered_events: int = 1_000_000,
        on_timeout: Callable[[TimedOutMatch], None] | None = None,
        on_late: Callable[[LateEvent], None] | None = None,
        on_overflow: Callable[[Overflow], None] | None = None,
        on_error: Callable[[ConditionFailure], None] | None = None,
        event_id: str | Callable[[Any], Any] | None = None,
        state_key: bytes | str | None = None,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        _check_rules(self.rules)
        if not isinstance(time_mode, TimeMode):
            raise ConfigurationError(f"time_mode must be a TimeMode, got {time_mode!r}")
        self.time_mode = time_mode
        if time_mode is TimeMode.PROCESSING_TIME:
            if clock is None:
                raise ConfigurationError(
                    "processing time needs a clock: pass clock=fraudcep.system_clock "
                    "(or any callable returning epoch milliseconds)"
                )
        elif timestamp is None:
            raise ConfigurationError("event time needs timestamp= (a field name or a callable)")
        self._clock = clock
        self._timestamp_spec = timestamp
        self._timestamp = _timestamp_reader(timestamp) if timestamp is not None else None
        self.max_out_of_orderness = duration_ms(max_out_of_orderness, "max_out_of_orderness")
        if self.max_out_of_orderness < 0:
            raise ConfigurationError("max_out_of_orderness cannot be negative")
        self.auto_watermark = auto_watermark
        self.max_partial_matches_per_key = _positive(
            max_partial_matches_per_key, "max_partial_matches_per_key"
        )
        self.max_buffered_events = _positive(max_buffered_events, "max_buffered_events")
        self._on_timeout = on_timeout
        self._on_late = on_late
        self._on_overflow = on_overflow
        self._on_error = on_error
        self._event_id = field_getter(event_id) if isinstance(event_id, str) else event_id
        self._state_key = _state_key(state_key)

        self._state = EngineState(rules=[RuleState(rule, 1) for rule in self.rules])
        self._key_functions: list[Callable[[Any], Hashable]] = []
        self._key_specs: list[Any] = []
        self._groups: dict[str, list[RuleState]] = {}
        self._group_rules: dict[str, dict[str, RuleState]] = {}
        self._ingest_view: list[
            tuple[
                RuleState,
                dict[Hashable, KeyState],
                dict[Hashable, int],
                Callable[[Any], bool] | None,
                int,
            ]
        ] = []
        self._index_keys()
        self._busy = False  # feeding events: callbacks run, rules must not change

    # -- feeding events --------------------------------------------------------------------

    @_feeding
    def process(self, event: Any) -> list[Alert]:
        """Take one event; returns the alerts that became final because of it."""
        out: list[Alert] = []
        if self.time_mode is TimeMode.PROCESSING_TIME:
            self._process_now(event, out)
        else:
            self._ingest((event,), out)
        return out

    @_feeding
    def process_many(
        self,
        events: Iterable[Any],
        *,
        refused: Callable[[Any, EventError], None] | None = None,
    ) -> list[Alert]:
        """Take many events; returns every alert they produced, in emission order.

        The same as calling :meth:`process` for each event, only faster. An event the engine
        cannot read (no timestamp, an unhashable key: :class:`EventError`, raised before it
        changed anything) ends the call with that error, the alerts of the events before it
        lost to the caller; with ``refused``, it is handed to ``refused(event, error)``
        instead and the rest go on: what a runtime that dead-letters such events wants.
        """
        out: list[Alert] = []
        if self.time_mode is TimeMode.PROCESSING_TIME:
            for event in events:
                try:
                    self._process_now(event, out)
                except EventError as exc:
                    if refused is None:
                        raise
                    refused(event, exc)
        else:
            self._ingest(events, out, refused)
        return out

    @_feeding
    def process_batch(self, batch: Any) -> list[Alert]:
        """Take the rows of an Arrow ``RecordBatch`` or ``Table`` as events (one dict per row,
        as ``batch.to_pylist()`` gives them); returns the alerts they produced.

        Exactly the same as ``process_many(batch.to_pylist())`` (alerts, their order, side
        outputs, state), only faster: rows that provably change nothing are never turned into
        Python objects. Needs pyarrow and numpy (the ``arrow`` extra); see ``docs/columnar.md``.
        """
        try:
            from fraudcep.engine import columnar
        except ImportError as exc:
            raise ConfigurationError(
                f"process_batch() needs pyarrow and numpy: pip install 'fraudcep[arrow]' ({exc})"
            ) from None
        out: list[Alert] = []
        columnar.feed(self, batch, out)
        return out

    @_feeding
    def advance_watermark(self, timestamp: int) -> list[Alert]:
        """Declare that no event with a timestamp <= ``timestamp`` will arrive any more."""
        if self.time_mode is TimeMode.PROCESSING_TIME:
            raise ConfigurationError("advance_watermark() is for event time; use advance_time()")
        ts = timestamp_ms(timestamp)
        out: list[Alert] = []
        if ts > self._state.watermark:
            self._advance(ts, out)
        return out

    @_feeding
    def advance_time(self) -> list[Alert]:
        """Processing time: fire the windows that have expired by ``clock()``."""
        if self.time_mode is not TimeMode.PROCESSING_TIME:
            raise ConfigurationError("advance_time() is for processing time")
        assert self._clock is not None
        out: list[Alert] = []
        now = self._clock()
        if now > self._state.watermark:
            self._state.watermark = now
        self._fire_timers(self._state.watermark, out)
        return out

    @_feeding
    def flush(self) -> list[Alert]:
        """End of input: every buffered event is processed and every window closes."""
        out: list[Alert] = []
        if self.time_mode is TimeMode.PROCESSING_TIME:
            self._state.watermark = MAX_TIMESTAMP
            self._fire_timers(MAX_TIMESTAMP, out)
        elif self._state.watermark < MAX_TIMESTAMP:
            self._advance(MAX_TIMESTAMP, out)
        return out

    # -- side outputs ----------------------------------------------------------------------

    def drain_timeouts(self) -> list[TimedOutMatch]:
        """Timed-out partial matches collected since the last call (without ``on_timeout``)."""
        out, self._state.timeouts = self._state.timeouts, []
        return out

    def drain_errors(self) -> list[ConditionFailure]:
        """Events a rule's condition raised on, since the last call (without ``on_error``)."""
        out, self._state.failures = self._state.failures, []
        return out

    def drain_overflows(self) -> list[Overflow]:
        """Cap overflows recorded since the last call (without ``on_overflow``)."""
        out, self._state.overflows = self._state.overflows, []
        return out

    def drain_late(self) -> list[LateEvent]:
        """Late events collected since the last call (without ``on_late``)."""
        out, self._state.late = self._state.late, []
        return out

    @property
    def watermark(self) -> int | None:
        """The current watermark (event time) or the latest clock reading (processing time)."""
        return None if self._state.watermark == MIN_TIMESTAMP else self._state.watermark

    @property
    def next_due(self) -> int | None:
        """The lowest watermark at which :meth:`advance_watermark` would do anything.

        That is the timestamp of the earliest held event or timer (a timer may turn out to
        be superseded), or None when nothing waits for event time. Runtimes that move the
        watermark of an idle source use it to do so only when it matters.
        """
        due = [heap[0][0] for heap in (self._state.buffer, self._state.timers) if heap]
        return min(due) if due else None

    @property
    def stats(self) -> EngineStats:
        return EngineStats(
            live_keys=sum(len(r.keys) for r in self._state.rules),
            live_partial_matches=sum(r.live for r in self._state.rules),
            buffered_events=len(self._state.buffer),
            watermark=self.watermark,
            **{name: self._state.counters[name] for name in COUNTERS},
        )

    # -- live rule changes -----------------------------------------------------------------

    def rule_versions(self) -> dict[str, int]:
        """The version of every rule the engine knows, enabled or not."""
        versions = {rr.rule.id: rr.version for rr in self._state.rules}
        versions.update({rule_id: v for rule_id, (_, v) in self._state.disabled.items()})
        return versions

    def add_rule(self, rule: Rule, *, version: int = 1) -> int:
        """Start matching ``rule`` (a new id) from now on; returns its version.

        "From now on" means every event the engine processes after this call, including
        events it holds for the watermark; see docs/concepts.md, "Live rule changes".
        """
        self._check_not_feeding()
        self._check_new_id(rule)
        return self._install(RuleState(rule, _version(version)))

    def replace_rule(self, rule: Rule, *, version: int | None = None) -> int:
        """Replace the rule with ``rule.id`` by ``rule``; returns the new version (``version``
        if given, which must be higher than the current one, else the current one + 1).

        The old version's partial matches are discarded (counted in
        ``stats.partial_matches_discarded``); the new version starts from an empty state, as a
        new rule does. Alerts carry the version that produced them. A disabled rule is
        replaced and enabled.
        """
        self._check_not_feeding()
        current = self._find(rule.id)
        if current is None and rule.id not in self._state.disabled:
            raise ConfigurationError(f"no rule {rule.id!r} to replace; use add_rule()")
        old = current.version if current is not None else self._state.disabled[rule.id][1]
        new = old + 1 if version is None else _version(version)
        if new <= old:
            raise ConfigurationError(
                f"rule {rule.id!r}: the new version {new} must be higher than {old}"
            )
        if current is None:
            del self._state.disabled[rule.id]
            return self._install(RuleState(rule, new))
        self._discard(current)
        self._state.rules[self._state.rules.index(current)] = RuleState(rule, new)
        self._after_rule_change()
        return new

    def disable_rule(self, rule_id: str) -> None:
        """Stop matching rule ``rule_id``; its partial matches are discarded. The rule and its
        version are kept for :meth:`enable_rule`."""
        self._check_not_feeding()
        current = self._require(rule_id)
        self._discard(current)
        self._state.rules.remove(current)
        self._state.disabled[rule_id] = (current.rule, current.version)
        self._after_rule_change()

    def enable_rule(self, rule_id: str) -> None:
        """Resume a disabled rule, from an empty state, with the version it had."""
        self._check_not_feeding()
        if rule_id not in self._state.disabled:
            raise ConfigurationError(f"rule {rule_id!r} is not disabled")
        rule, version = self._state.disabled.pop(rule_id)
        self._install(RuleState(rule, version))

    def remove_rule(self, rule_id: str) -> None:
        """Forget rule ``rule_id`` (enabled or disabled); its partial matches are discarded."""
        self._check_not_feeding()
        if self._state.disabled.pop(rule_id, None) is not None:
            return
        current = self._require(rule_id)
        self._discard(current)
        self._state.rules.remove(current)
        self._after_rule_change()

    def _check_not_feeding(self) -> None:
        if self._busy:
            raise ConfigurationError(
                "rules cannot change while the engine is processing (from inside a callback); "
                "change them between calls"
            )

    def _find(self, rule_id: str) -> RuleState | None:
        return next((rr for rr in self._state.rules if rr.rule.id == rule_id), None)

    def _require(self, rule_id: str) -> RuleState:
        found = self._find(rule_id)
        if found is None:
            raise ConfigurationError(f"no enabled rule {rule_id!r}")
        return found

    def _check_new_id(self, rule: Rule) -> None:
        if not isinstance(rule, Rule):
            raise ConfigurationError(f"expected a Rule, got {rule!r}")
        if self._find(rule.id) is not None or rule.id in self._state.disabled:
            raise ConfigurationError(f"rule {rule.id!r} exists already; use replace_rule()")

    def _install(self, rr: RuleState) -> int:
        self._state.rules.append(rr)
        self._after_rule_change()
        return rr.version

    def _discard(self, rr: RuleState) -> None:
        self._state.counters["partial_matches_discarded"] += self._state.discard(rr)

    def _index_keys(self) -> None:
        """Give every rule the position of its key function (rules sharing a key spec share
        one function, so the key is computed once per event), and prepare what the per-event
        loop reads of each rule."""
        self._key_specs = []
        self._key_functions = []
        for rr in self._state.rules:
            spec = rr.rule.key
            if spec in self._key_specs:
                rr.key_index = self._key_specs.index(spec)
            else:
                rr.key_index = len(self._key_specs)
                self._key_specs.append(spec)
                self._key_functions.append(rr.rule.key_function())
        self._ingest_view = [
            (rr, rr.keys, rr.pending, rr.first_test, rr.key_index) for rr in self._state.rules
        ]
        self._groups = self._state.groups()
        self._group_rules = {
            group: {rs.rule.id: rs for rs in rules} for group, rules in self._groups.items()
        }

    def _after_rule_change(self) -> None:
        """Re-index keys and re-key the events held for the watermark for the new rule set:
        every held event is offered to every rule (no shortcut), so a new or replaced rule
        sees the events the engine has not processed yet."""
        self.rules = tuple(rr.rule for rr in self._state.rules)
        self._index_keys()
        if self._state.tracking:
            for rr in self._state.rules:
                if rr.changed is None:
                    rr.changed = {}
        for rr in self._state.rules:
            rr.pending.clear()
        rekeyed = []
        for ts, seq, event, _ in self._state.buffer:
            computed = [f(event) for f in self._key_functions]
            keys = tuple(computed[rr.key_index] for rr in self._state.rules)
            for rr, key in zip(self._state.rules, keys, strict=True):
                rr.pending[key] = rr.pending.get(key, 0) + 1
            rekeyed.append((ts, seq, event, keys))
        self._state.buffer[:] = rekeyed  # same (ts, seq) order: still a heap

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole engine state as bytes (see :mod:`fraudcep.engine.codec`).

        Taking one also starts the record of changes that :meth:`snapshot_delta` writes.
        """
        state = self._state
        blob, ident = write_snapshot(state, self.time_mode.value, state_key=self._state_key)
        state.last_snapshot = ident
        state.start_tracking()
        return blob

    def snapshot_delta(self) -> bytes:
        """What changed since the last :meth:`snapshot` or :meth:`snapshot_delta` (or the
        restore): the records of the keys that changed, the keys that went, and the engine-wide
        part. ``Engine.restore(base, rules, deltas=[...])`` applies a chain of them.

        Its cost follows the keys that changed, not the keys held. Raises
        :class:`~fraudcep.errors.ConfigurationError` when there is nothing to follow (no
        snapshot taken yet, or the engine was restored from a format-1 snapshot).
        """
        state = self._state
        if not state.tracking:
            raise ConfigurationError(
                "snapshot_delta() follows a snapshot() or a restore() of a format-2 snapshot; "
                "take a full snapshot() first"
            )
        blob, ident = write_snapshot(
            state, self.time_mode.value, changes=state.pending_changes(), state_key=self._state_key
        )
        state.clear_changes()
        state.last_snapshot = ident
        return blob

    @classmethod
    def restore(
        cls,
        blob: bytes,
        rules: Iterable[Rule],
        *,
        deltas: Iterable[bytes] = (),
        **options: Any,
    ) -> Engine:
        """An engine that continues exactly where the snapshotted one stopped.

        ``blob`` is a full snapshot and ``deltas`` the deltas taken after it, in order.
        ``rules`` must be the rules in force when the last of them was taken (same ids and
        structure); ``options`` are the constructor's keyword options (with ``state_key`` if
        the snapshots were written with one).
        """
        rules = tuple(rules)
        engine = cls(rules, **options)
        state_key = engine._state_key
        chain = [blob, *deltas]
        if _format_version(blob) == 1:
            if len(chain) > 1:
                raise SnapshotError("a format-1 snapshot has no deltas; restore it alone")
            if state_key:
                raise SnapshotError(
                    "a format-1 snapshot is not authenticated, but a state key was given"
                )
            fresh = EngineState()
            snapshot_v1.load(fresh, rules, engine.time_mode.value, blob)
        else:
            fresh = EngineState()
            restore_state(
                fresh,
                rules,
                engine.time_mode.value,
                [read_blob(b, state_key=state_key) for b in chain],
            )
        engine._adopt(fresh)
        return engine

    # -- key records -----------------------------------------------------------------------

    def key_groups(self) -> dict[str, tuple[str, ...]]:
        """The key groups of the rules in force (``"user_id"``: the rules keyed by it), the
        unit in which :meth:`export_key` and :meth:`import_key` move a key's state."""
        return {group: tuple(rs.rule.id for rs in rules) for group, rules in self._groups.items()}

    def export_key(self, group: str, key: Hashable) -> bytes | None:
        """``key``'s state for the rules of ``group`` as a record (see :mod:`.codec`),
        or None when it holds nothing: what a runtime keeps per key (Flink's keyed state, a
        DynamoDB item)."""
        return encode_key_record(self._group(group), key, state_key=self._state_key)

    def import_key(self, group: str, key: Hashable, record: bytes | None) -> None:
        """Make ``record`` (from :meth:`export_key`, possibly of another engine with the same
        rules) ``key``'s state for the rules of ``group``; None clears it. The key's timers are
        set anew, after the timers this engine holds already."""
        if self._busy:
            self._check_not_feeding()
        rules = self._groups.get(group) or self._group(group)
        states: KeyStates = {}
        state = self._state
        if record is not None:
            states, latest = decode_key_record(record, self._group_rules[group], self._state_key)
            # runs are ordered by processing order: the key's new runs must come after its
            # old ones, whichever engine numbered those
            if latest > state.order:
                state.order = latest
        for rs in rules:
            rs.timers.pop(key, None)
            if rs.changed is not None:
                rs.changed[key] = None
            keys = rs.keys
            old = keys.get(key)
            if old is not None:
                gone = len(old.completed)
                for run in old.partial:
                    if run.order != NOT_STARTED:
                        gone += 1
                rs.live -= gone
            new = states.get(rs)
            if new is None:
                if old is not None:
                    del keys[key]
                continue
            ks, _, live = new
            keys[key] = ks
            rs.live += live
            if ks.deadline is not None:
                tie = state.timer_tie = state.timer_tie + 1
                rs.timers[key] = tie
                heapq.heappush(state.timers, (ks.deadline, tie, rs, key))

    def key_due(self, group: str, key: Hashable) -> int | None:
        """The earliest event time at which one of ``key``'s windows in ``group`` closes (its
        next timer), None when it has none: what a runtime keeping records per key indexes to
        wake the key when its partition's watermark passes."""
        due = None
        for rs in self._group(group):
            ks = rs.keys.get(key)
            if ks is not None and ks.deadline is not None and (due is None or ks.deadline < due):
                due = ks.deadline
        return due

    @property
    def processing_order(self) -> int:
        """The clock that numbers processed events (and orders partial matches by their
        start); :meth:`import_key` moves it past a record's."""
        return self._state.order

    def _group(self, group: str) -> list[RuleState]:
        rules = self._groups.get(group)
        if rules is None:
            raise ConfigurationError(
                f"no rule in force is keyed by {group!r}; key groups: {sorted(self.key_groups())}"
            )
        return rules

    def _adopt(self, state: EngineState) -> None:
        """Run on ``state`` (restored) from now on."""
        self._state = state
        self.rules = tuple(rs.rule for rs in state.rules)
        self._index_keys()

    # -- event time ------------------------------------------------------------------------

    def _ingest(
        self,
        events: Iterable[Any],
        out: list[Alert],
        refused: Callable[[Any, EventError], None] | None = None,
    ) -> None:
        """Event time: buffer events, move the watermark, release what it passed.

        Written as one loop over local variables because it runs for every event; the engine's
        attributes are brought up to date before anything else reads them.
        """
        read_ts = self._timestamp
        assert read_ts is not None
        key_functions = self._key_functions
        only_key = key_functions[0] if len(key_functions) == 1 else None
        rules = self._ingest_view
        buffer = self._state.buffer
        timers = self._state.timers
        push = heapq.heappush
        auto = self.auto_watermark
        lag = self.max_out_of_orderness + 1
        cap = self.max_buffered_events
        watermark = self._state.watermark
        max_ts = self._state.max_ts
        seq = self._state.seq
        accepted = 0
        try:
            for event in events:
                try:  # reading an event changes nothing: one that cannot be read is refused
                    ts = read_ts(event)
                    late = ts <= watermark
                    if late:
                        pass  # its key is not read
                    elif only_key is not None:
                        key = only_key(event)
                        keys = None
                        if key.__class__ not in _HASHABLE:
                            _check_hashable(key, self._key_specs[0])
                    else:
                        keys = [f(event) for f in key_functions]
                        for k, spec in zip(keys, self._key_specs, strict=True):
                            _check_hashable(k, spec)
                except EventError as exc:
                    if refused is None:
                        raise
                    refused(event, exc)
                    continue
                if late:
                    self._report_late(event, ts, watermark)
                    continue
                accepted += 1
                seq += 1
                if ts > max_ts:
                    max_ts = ts
                new_watermark = max_ts - lag
                # An event no later event can precede (its timestamp is at most one past the
                # new watermark) is judged now: if it cannot start a run for a key without live
                # state or buffered events, it changes nothing for that rule: not buffered.
                decide_now = auto and ts <= new_watermark + 1
                per_rule: list[Any] = []
                relevant = False
                for rr, live, pending, first_test, key_index in rules:
                    if keys is not None:
                        key = keys[key_index]
                    if decide_now and key not in pending:
                        try:
                            ks = live.get(key)
                            if ks is None:
                                if first_test is not None:
                                    inert = not first_test(event)
                                else:
                                    inert = not rr.matcher.can_start(event, ts)
                            else:
                                # its windows still close on the key's timer, with the same result
                                inert = rr.matcher.leaves_unchanged(ks, event, ts)
                        except Exception:  # reported where the event is processed
                            inert = False
                        if inert:
                            per_rule.append(SKIP)
                            continue
                    per_rule.append(key)
                    pending[key] = pending.get(key, 0) + 1
                    relevant = True
                if relevant:
                    push(buffer, (ts, seq, event, tuple(per_rule)))
                if auto and new_watermark > watermark:
                    watermark = new_watermark
                    if (buffer and buffer[0][0] <= watermark) or (
                        timers and timers[0][0] <= watermark
                    ):
                        self._state.max_ts, self._state.seq = max_ts, seq
                        self._advance(watermark, out)
                if len(buffer) > cap:
                    self._state.counters["forced_watermarks"] += 1
                    self._state.max_ts, self._state.seq = max_ts, seq
                    self._report_overflow(Overflow("buffered_events", None, None, 0, buffer[0][0]))
                    self._advance(buffer[0][0], out)
                    watermark = self._state.watermark
        finally:
            self._state.watermark = watermark
            self._state.max_ts = max_ts
            self._state.seq = seq
            self._state.counters["events_in"] += accepted

    def _advance(self, watermark: int, out: list[Alert]) -> None:
        self._state.watermark = watermark
        buffer = self._state.buffer
        rules = self._state.rules
        while buffer and buffer[0][0] <= watermark:
            ts, _, event, per_rule = heapq.heappop(buffer)
            # runs are ordered by when their start event was processed (Flink's EventId order)
            self._state.order += 1
            seq = self._state.order
            for rr, key in zip(rules, per_rule, strict=True):
                if key is SKIP:
                    continue
                left = rr.pending[key] - 1
                if left:
                    rr.pending[key] = left
                else:
                    del rr.pending[key]
                self._step(rr, key, event, ts, seq, out)
        self._fire_timers(watermark, out)

    # -- hooks of the record-batch path (fraudcep.engine.columnar) --------------------------

    def _batch_view(self) -> columnar_view.EngineView:
        """What the record-batch path reads of the engine before a batch."""
        state = self._state
        spec = self._timestamp_spec
        return columnar_view.EngineView(
            auto_event_time=self.time_mode is TimeMode.EVENT_TIME and self.auto_watermark,
            timestamp=spec if isinstance(spec, str) else None,
            lag=self.max_out_of_orderness + 1,
            watermark=state.watermark,
            max_ts=state.max_ts,
            forced_watermarks=state.counters["forced_watermarks"],
            rules=tuple(
                columnar_view.RuleView(rr.rule, rr.matcher, rr.keys, rr.pending)
                for rr in state.rules
            ),
        )

    def _ingest_rows(self, rows: list[Any], out: list[Alert]) -> tuple[int, int]:
        """Event time: take ``rows`` as :meth:`process_many` does; returns the watermark and
        the count of forced watermarks after them."""
        self._ingest(rows, out)
        return self._state.watermark, self._state.counters["forced_watermarks"]

    def _pass_inert(self, running_max: Sequence[int], out: list[Alert]) -> None:
        """Event time: take ``len(running_max)`` events that :meth:`_ingest` would buffer for
        no rule (not late, judged on arrival, changing no key's state), given only the running
        maximum of the timestamps after each of them.

        What :meth:`_ingest` does for such events, without them: count them, move the clocks,
        and release buffered events and timers at exactly the event where it would.
        """
        state = self._state
        lag = self.max_out_of_orderness + 1
        buffer, timers = state.buffer, state.timers
        n = len(running_max)
        first_seq = state.seq
        never = MAX_TIMESTAMP
        i = 0
        while i < n and (buffer or timers):
            due = min(buffer[0][0] if buffer else never, timers[0][0] if timers else never)
            # the first event whose watermark both moves and reaches the earliest due time
            j = bisect.bisect_left(running_max, max(state.watermark + 1, due) + lag, i)
            if j >= n:
                break
            state.max_ts = max(state.max_ts, running_max[j])
            state.seq = first_seq + j + 1
            self._advance(running_max[j] - lag, out)
            i = j + 1
        if n:
            state.seq = first_seq + n
            if running_max[-1] > state.max_ts:
                state.max_ts = running_max[-1]
            if running_max[-1] - lag > state.watermark:
                state.watermark = running_max[-1] - lag
            state.counters["events_in"] += n

    # -- processing time -------------------------------------------------------------------

    def _process_now(self, event: Any, out: list[Alert]) -> None:
        assert self._clock is not None
        now = self._clock()
        if now > self._state.watermark:
            self._state.watermark = now
        now = self._state.watermark
        keys = [f(event) for f in self._key_functions]
        for k, spec in zip(keys, self._key_specs, strict=True):
            _check_hashable(k, spec)
        self._state.counters["events_in"] += 1
        self._fire_timers(now, out)
        self._state.order += 1
        for rr in self._state.rules:
            self._step(rr, keys[rr.key_index], event, now, self._state.order, out)

    # -- per key ---------------------------------------------------------------------------

    def _step(
        self, rr: RuleState, key: Hashable, event: Any, ts: int, seq: int, out: list[Alert]
    ) -> None:
        ks = rr.keys.get(key)
        matcher = rr.matcher
        try:
            if ks is None:
                if not matcher.can_start(event, ts):
                    return
                ks = rr.keys[key] = matcher.new_key_state()
                ks.time = ts
            changed = rr.changed
            if changed is not None:
                changed[key] = None
            if ks.time < ts:
                deadline = ks.deadline
                if deadline is None or ts < deadline:
                    ks.time = ts  # nothing can expire before ``deadline``
                else:
                    self._advance_key(rr, key, ks, ts, out)
            # the runs before the event: a step that changes them puts new lists in place
            # (and only adds to ``completed``), so they are counted only if it did
            before, completed = ks.partial, len(ks.completed)
            emitted = matcher.process(ks, event, ts, seq)
        except Exception as exc:
            # A condition raised: the key's runs are as before this event (a step only commits
            # its new runs at the end); the event is reported, not lost.
            if ks is not None and ks.idle:
                del rr.keys[key]
                rr.timers.pop(key, None)
                rr.live -= live_in(ks.partial, len(ks.completed))
            self._report_failure(rr, key, event, ts, exc)
            return
        if emitted is None:
            return  # no run changed
        rr.live += live_in(ks.partial, len(ks.completed)) - live_in(before, completed)
        if emitted:
            self._alerts(rr, key, emitted, ts, out)
        if len(ks.partial) > self.max_partial_matches_per_key + 1:
            self._shed(rr, key, ks, ts)
        self._settle(rr, key, ks)

    def _advance_key(
        self, rr: RuleState, key: Hashable, ks: KeyState, ts: int, out: list[Alert]
    ) -> None:
        before = live_in(ks.partial, len(ks.completed))
        matches, timeouts = rr.matcher.advance_time(ks, ts)
        rr.live += live_in(ks.partial, len(ks.completed)) - before
        if matches:
            self._alerts(rr, key, matches, ts, out)
        for run, timeout_ts in timeouts:
            self._report_timeout(rr, key, run, timeout_ts)

    def _settle(self, rr: RuleState, key: Hashable, ks: KeyState) -> None:
        """Forget an idle key, or make sure a timer is set for its next expiry."""
        if ks.idle:
            del rr.keys[key]
            rr.timers.pop(key, None)
            rr.live -= live_in(ks.partial, len(ks.completed))
            return
        deadline = rr.matcher.deadline(ks)
        if deadline != ks.deadline:
            ks.deadline = deadline
            if deadline is None:
                rr.timers.pop(key, None)
            else:
                state = self._state
                state.timer_tie += 1
                rr.timers[key] = state.timer_tie
                heapq.heappush(state.timers, (deadline, state.timer_tie, rr, key))

    def _fire_timers(self, now: int, out: list[Alert]) -> None:
        timers = self._state.timers
        while timers and timers[0][0] <= now:
            deadline, tie, rr, key = heapq.heappop(timers)
            ks = rr.keys.get(key)
            if ks is None or ks.deadline != deadline or rr.timers.get(key) != tie:
                continue  # superseded by a later timer of the key
            ks.deadline = None
            del rr.timers[key]
            if rr.changed is not None:
                rr.changed[key] = None
            self._advance_key(rr, key, ks, now, out)
            self._settle(rr, key, ks)

    def _shed(self, rr: RuleState, key: Hashable, ks: KeyState, ts: int) -> None:
        """Over the cap: drop the partial matches that started last; count and report it."""
        started = sorted(
            (run for run in ks.partial if run.order != NOT_STARTED), key=lambda r: r.order
        )
        doomed = {id(run) for run in started[self.max_partial_matches_per_key :]}
        javaheap.remove_if(ks.partial, lambda r: id(r) in doomed)
        rr.live -= len(doomed)
        self._state.counters["partial_matches_dropped"] += len(doomed)
        self._report_overflow(Overflow("partial_matches", rr.rule.id, key, len(doomed), ts))

    def _report_overflow(self, overflow: Overflow) -> None:
        if self._on_overflow is not None:
            self._on_overflow(overflow)
        else:
            self._state.overflows.append(overflow)

    # -- outputs ---------------------------------------------------------------------------

    def _alerts(
        self, rr: RuleState, key: Hashable, runs: Sequence[Run], emitted_at: int, out: list[Alert]
    ) -> None:
        """The alerts of the matches ``runs`` completed at once for ``key``.

        Their ids are ``alert_id``'s, written from parts: each matched event's part of the text
        is computed once for all of them (the matches of one step often share events and
        nodes: one payment completing several partial matches). The parts are cached by the
        identity of the node and of the event, only while ``runs``, which hold them, are
        here; the event's content is read when its first alert of the step is made, as
        before."""
        rule_id = rr.rule.id
        event_id = self._event_id
        key_part = key_text(key)
        lists: dict[str, int] = {}
        for versions in rr.list_versions:  # the named lists the rule reads, as they are now
            lists.update(versions())
        by_node: dict[int, str] = {}
        by_event: dict[int, str] = {}
        counters = self._state.counters
        for run in runs:
            nodes = path(run.node)
            parts = []
            events: dict[str, list[Any]] = {}  # as_mapping(run.node), from the same walk
            for node in nodes:
                bucket = events.get(node.name)
                if bucket is None:
                    events[node.name] = [node.event]
                else:
                    bucket.append(node.event)
                part = by_node.get(id(node))
                if part is None:
                    event = node.event
                    text = by_event.get(id(event))
                    if text is None:
                        text = by_event[id(event)] = event_text(event, event_id)
                    part = by_node[id(node)] = matched_text(node.name, node.ts, text)
                parts.append(part)
            counters["alerts"] += 1
            out.append(
                Alert(
                    rule_id=rule_id,
                    key=key,
                    events=events,
                    first_ts=nodes[0].ts if nodes else emitted_at,
                    last_ts=nodes[-1].ts if nodes else emitted_at,
                    alert_id=alert_id_of(rule_id, key_part, parts),
                    emitted_at=emitted_at,
                    rule_version=rr.version,
                    lists=lists,
                    mode=rr.rule.mode,
                )
            )

    def _report_timeout(self, rr: RuleState, key: Hashable, run: Run, timeout_ts: int) -> None:
        self._state.counters["timeouts"] += 1
        timed_out = TimedOutMatch(rr.rule.id, key, as_mapping(run.node), timeout_ts, rr.version)
        if self._on_timeout is not None:
            self._on_timeout(timed_out)
        else:
            self._state.timeouts.append(timed_out)

    def _report_failure(
        self, rr: RuleState, key: Hashable, event: Any, ts: int, exc: Exception
    ) -> None:
        self._state.counters["condition_errors"] += 1
        failure = ConditionFailure(rr.rule.id, key, event, ts, f"{type(exc).__name__}: {exc}", exc)
        if self._on_error is not None:
            self._on_error(failure)
        else:
            self._state.failures.append(failure)

    def _report_late(self, event: Any, ts: int, watermark: int) -> None:
        self._state.counters["events_late"] += 1
        late = LateEvent(event, ts, watermark)
        if self._on_late is not None:
            self._on_late(late)
        else:
            self._state.late.append(late)


_HASHABLE = frozenset({str, int})


def _check_hashable(key: Any, spec: Any) -> None:
    try:
        hash(key)
    except TypeError:
        source = f"key field {spec!r}" if isinstance(spec, str) else f"key function {spec!r}"
        raise EventError(
            f"{source} gave an unhashable {type(key).__name__} ({key!r:.200}); "
            "a key must be hashable (str, int, tuple, ...)"
        ) from None


def _timestamp_reader(spec: str | Callable[[Any], Any]) -> Callable[[Any], int]:
    if isinstance(spec, str):
        name = spec
        slow_field = field_getter(spec)

        def read_field(event: Any) -> int:
            try:
                value = event[name]
            except (KeyError, TypeError, IndexError):
                value = slow_field(event)
            if value.__class__ is int and -_TS_LIMIT <= value <= _TS_LIMIT:
                return value
            return _convert_timestamp(value, event)

        return read_field

    def read(event: Any) -> int:
        value = spec(event)
        if value.__class__ is int and -_TS_LIMIT <= value <= _TS_LIMIT:
            return value
        return _convert_timestamp(value, event)

    return read


_TS_LIMIT = 2**62
"""Event timestamps lie within ±2**62 ms (±146 million years), so no clock arithmetic of the
engine's leaves 64 bits and every state it holds can be stored."""


def _convert_timestamp(value: Any, event: Any) -> int:
    try:
        ts = timestamp_ms(value)
    except TypeError as exc:
        raise EventError(f"{exc}: {_describe(event)}") from None
    if not -_TS_LIMIT <= ts <= _TS_LIMIT:
        raise EventError(
            f"a timestamp of {ts if abs(ts) < 10**30 else 'over 10**30'} ms is out of range "
            f"(±2**62): {_describe(event)}"
        )
    return ts


def _describe(event: Any) -> str:
    try:
        return f"{event!r:.200}"
    except Exception:  # a failing or recursing repr must not hide the real problem
        return f"a {type(event).__name__}"


def _state_key(value: bytes | str | None) -> bytes | None:
    """The secret that authenticates snapshots (BLAKE2b takes keys of up to 64 bytes: a longer
    one is hashed to 64)."""
    if value is None or value == b"" or value == "":
        return None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise ConfigurationError(f"state_key must be bytes or str, got {type(value).__name__}")
    return value if len(value) <= 64 else hashlib.sha512(value).digest()


def _format_version(blob: bytes) -> int:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise SnapshotError(f"a snapshot is bytes, got {type(blob).__name__}")
    if len(blob) < 10 or bytes(blob[:8]) != b"FCEPSNAP":
        raise SnapshotError("not a fraudcep snapshot (bad magic bytes)")
    return int.from_bytes(bytes(blob[8:10]), "big")


def _version(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"a rule version is an int >= 1, got {value!r}")
    return value


def _positive(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(f"{what} must be a positive int, got {value!r}")
    return value


def _check_rules(rules: Sequence[Rule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if not isinstance(rule, Rule):
            raise ConfigurationError(f"expected Rule objects, got {rule!r}")
        if rule.id in seen:
            raise ConfigurationError(f"two rules share the id {rule.id!r}")
        seen.add(rule.id)
