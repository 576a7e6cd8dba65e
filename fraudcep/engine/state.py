"""The engine's state, apart from the engine: what a snapshot holds and a codec reads and writes.

Flink keeps the operator and its state apart (``NFAState``, ``SharedBuffer`` and their
serializers never touch the operator); so does fraudcep. :class:`EngineState` holds

- the clocks: arrival order, processing order, the highest timestamp seen, the watermark and
  the tie-breaker of timers;
- the event buffer (events held until the watermark passes them) and the timer heap;
- per rule in force (:class:`RuleState`), each key's :class:`~fraudcep.nfa.matcher.KeyState` — the
  partial and completed matches — and the key's live timer;
- the counters, and the side outputs not drained yet.

It also records which keys changed since the last snapshot, so that a snapshot can cost what
changed (:meth:`EngineState.pending_changes`). Keys are grouped by *key group*, the key spec that
rules share (``"user_id"``): one record holds a key's state for every rule of its group.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, Final

import attrs

from fraudcep.alert import ConditionFailure, LateEvent, Overflow, TimedOutMatch
from fraudcep.engine.rule import Rule
from fraudcep.nfa.compiler import State
from fraudcep.nfa.matcher import NOT_STARTED, KeyState, Matcher, Run
from fraudcep.timeutil import MIN_TIMESTAMP

__all__ = [
    "COUNTERS",
    "SKIP",
    "BufferedEvent",
    "EngineState",
    "RuleState",
    "Timer",
    "count_pending",
    "key_group",
    "live_in",
]

COUNTERS: Final[tuple[str, ...]] = (
    "events_in",
    "events_late",
    "alerts",
    "timeouts",
    "partial_matches_dropped",
    "forced_watermarks",
    "condition_errors",
    "partial_matches_discarded",
)
"""The engine's counters, in the order codecs write them."""


class _Skip:
    """Marks a rule an event cannot affect (it is not buffered for that rule)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<skip>"


SKIP: Final[Any] = _Skip()
"""In a buffered event's keys: the rule the event cannot affect."""

BufferedEvent = tuple[int, int, Any, tuple[Any, ...]]
"""``(timestamp, arrival order, event, key per rule in force or SKIP)``: a heap entry."""

Timer = tuple[int, int, "RuleState", Any]
"""``(deadline, tie, rule, key)``: a heap entry; live while it is the key's recorded timer."""


def key_group(rule: Rule) -> str:
    """The name of the key group ``rule`` belongs to: its key field path, or, for a key
    function, a name of the rule's own (functions are not shared between rules)."""
    return rule.key if isinstance(rule.key, str) else f"<function of rule {rule.id}>"


def _list_version_sources(rule: Rule) -> tuple[Callable[[], dict[str, int]], ...]:
    """The ``fraudcep_list_versions`` functions of the rule's conditions (expressions naming
    lists carry one), each once."""
    out: dict[int, Callable[[], dict[str, int]]] = {}
    for predicate in rule.predicates():
        versions = getattr(predicate.fn, "fraudcep_list_versions", None)
        if callable(versions):
            out.setdefault(id(predicate.fn), versions)
    return tuple(out.values())


class RuleState:
    """A rule in force, with its version, its matcher and its per-key state."""

    __slots__ = (
        "changed",
        "first_test",
        "group",
        "key_index",
        "keys",
        "list_versions",
        "live",
        "matcher",
        "pending",
        "restore_view",
        "rule",
        "timers",
        "version",
        "write_view",
    )

    def __init__(self, rule: Rule, version: int) -> None:
        self.rule = rule
        self.version = version
        self.group = key_group(rule)
        self.key_index = 0  # position of the rule's key function in the engine's key functions
        self.matcher = Matcher(rule.nfa, rule.pattern.skip_strategy)
        # the functions giving the versions of the named lists the rule's conditions read
        self.list_versions = _list_version_sources(rule)
        # a one-argument test equivalent to matcher.can_start, when the start state allows it
        self.first_test = self.matcher.simple_start_test()
        # what restoring a key's runs looks up: the automaton's states by index, the start run
        # (shared by every key) and the start state
        start = self.matcher.start_run
        self.restore_view: tuple[Sequence[State], Run, State] = (
            self.matcher.nfa.states,
            start,
            start.state,
        )
        # ... and writing them: the start run, and how a record holds it
        self.write_view: tuple[Run, tuple[int, int, int, int, int]] = (
            start,
            (start.state.index, -1, start.start_ts, start.prev_ts, start.order),
        )
        self.keys: dict[Hashable, KeyState] = {}
        self.pending: dict[Hashable, int] = {}  # buffered, unprocessed events per key
        self.timers: dict[Hashable, int] = {}  # key -> tie of its live timer
        # keys whose state changed since the last snapshot, in the order they first changed
        # (a delta reads their state in about the order it was made); None while no snapshot
        # is taken
        self.changed: dict[Hashable, None] | None = None
        # live_matches(), kept up to date by whatever changes a key's runs (the engine, a
        # restore, a key record taken in): Engine.stats reads it without a scan
        self.live = 0

    def live_matches(self) -> int:
        """Partial matches that have started, and completed matches held back, counted over
        every key (what :attr:`live` holds without counting)."""
        return sum(live_in(ks.partial, len(ks.completed)) for ks in self.keys.values())


@attrs.define
class EngineState:
    """Everything an engine holds between calls (see the module docstring)."""

    rules: list[RuleState] = attrs.Factory(list)
    disabled: dict[str, tuple[Rule, int]] = attrs.Factory(dict)
    seq: int = 0  # arrival order (ties in the event buffer)
    order: int = 0  # processing order (orders runs by their start event)
    max_ts: int = MIN_TIMESTAMP
    watermark: int = MIN_TIMESTAMP
    timer_tie: int = 0
    counters: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(COUNTERS, 0))
    buffer: list[BufferedEvent] = attrs.Factory(list)
    timers: list[Timer] = attrs.Factory(list)
    timeouts: list[TimedOutMatch] = attrs.Factory(list)
    late: list[LateEvent] = attrs.Factory(list)
    overflows: list[Overflow] = attrs.Factory(list)
    failures: list[ConditionFailure] = attrs.Factory(list)
    regrouped: set[tuple[str, Hashable]] = attrs.Factory(set)
    """Keys whose record changed because a rule of their group was replaced or removed."""
    tracking: bool = False
    """Whether changes are being recorded (after the first snapshot or a restore)."""
    last_snapshot: bytes | None = None
    """The id of the snapshot or delta this state was last written to or restored from."""

    def groups(self) -> dict[str, list[RuleState]]:
        """The rules in force by key group, in rule order."""
        out: dict[str, list[RuleState]] = {}
        for rs in self.rules:
            out.setdefault(rs.group, []).append(rs)
        return out

    def find(self, rule_id: str) -> RuleState | None:
        return next((rs for rs in self.rules if rs.rule.id == rule_id), None)

    def live_timer(self, rs: RuleState, key: Hashable) -> tuple[int, int] | None:
        """``(deadline, tie)`` of the key's live timer for ``rs``, if it has one."""
        ks = rs.keys.get(key)
        if ks is None or ks.deadline is None:
            return None
        return ks.deadline, rs.timers[key]

    def pending_changes(self) -> dict[str, dict[Hashable, None]]:
        """The keys changed since changes were last cleared, by key group (each group's in
        the order they first changed)."""
        out: dict[str, dict[Hashable, None]] = {}
        for rs in self.rules:
            if rs.changed:
                out.setdefault(rs.group, {}).update(rs.changed)
        for group, key in self.regrouped:
            out.setdefault(group, {})[key] = None
        return out

    def clear_changes(self) -> None:
        for rs in self.rules:
            rs.changed = {}
        self.regrouped = set()

    def start_tracking(self) -> None:
        """From now on, record which keys change (a snapshot was taken or restored)."""
        self.tracking = True
        self.clear_changes()

    def discard(self, rs: RuleState) -> int:
        """Drop every key of ``rs`` (it is being replaced or removed); returns how many live
        matches went with them. Their records change: the keys are remembered as such."""
        dropped = rs.live
        if self.tracking:
            self.regrouped.update((rs.group, key) for key in rs.keys)
            self.regrouped.update((rs.group, key) for key in rs.changed or ())
        rs.keys.clear()
        rs.pending.clear()
        rs.timers.clear()
        rs.live = 0
        return dropped

    def keys_of(self, group: str) -> Iterator[Hashable]:
        """Every key with state in ``group`` (each once)."""
        seen: set[Hashable] = set()
        for rs in self.rules:
            if rs.group == group:
                for key in rs.keys:
                    if key not in seen:
                        seen.add(key)
                        yield key


def live_in(partial: list[Run], completed: int) -> int:
    """The live matches of a key: the runs of ``partial`` that have started, and
    ``completed`` (how many completed matches it holds back)."""
    for run in partial:
        if run.order != NOT_STARTED:
            completed += 1
    return completed


def count_pending(state: EngineState) -> None:
    """Rebuild every rule's count of buffered events per key from the buffer."""
    for rs in state.rules:
        rs.pending.clear()
    for _, _, _, keys in state.buffer:
        for rs, key in zip(state.rules, keys, strict=True):
            if key is not SKIP:
                rs.pending[key] = rs.pending.get(key, 0) + 1
