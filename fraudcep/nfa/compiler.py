"""Pattern -> NFA: the states and take / ignore / proceed edges Flink's ``NFACompiler`` builds.

The graph is built backwards from the final state, one stage at a time, exactly the way Flink
builds it: quantifiers are unrolled into copies of a singleton state, looping stages get a
take-self edge, relaxed contiguity becomes an ignore edge, negations become stop states (or a
pending state when ``not_followed_by`` ends the pattern), greedy stages guard the following
state's edges with "not my condition", and ``until`` is folded into take/ignore conditions.
Keeping the same construction (names, edge order, window bookkeeping) is what makes matches,
their order and their timeouts identical to Flink's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

from fraudcep.errors import MalformedPatternError
from fraudcep.pattern.conditions import (
    TRUE,
    And,
    CompiledCondition,
    Condition,
    Not,
    Or,
    compile_condition,
    compile_single_argument,
)
from fraudcep.pattern.pattern import Consuming, Pattern, QuantifierKind, Stage, WithinType

ENDING_STATE_NAME = "$endState$"
NAME_DELIMITER = ":"


class StateKind(enum.Enum):
    START = "start"
    NORMAL = "normal"
    FINAL = "final"
    STOP = "stop"
    PENDING = "pending"


class Action(enum.Enum):
    TAKE = "take"
    IGNORE = "ignore"
    PROCEED = "proceed"


class Transition:
    """An edge; ``test`` is the compiled condition, ``None`` meaning "always"."""

    __slots__ = ("action", "condition", "source", "target", "test")

    def __init__(
        self, action: Action, source: State, target: State, condition: Condition | None
    ) -> None:
        self.action = action
        self.source = source
        self.target = target
        self.condition = condition
        self.test: CompiledCondition | None = None


class State:
    """An NFA state. ``name`` is unique ("a", "a:0", ...); ``base`` is the stage name."""

    __slots__ = (
        "base",
        "index",
        "kind",
        "name",
        "no_proceed",
        "relaxed",
        "stays",
        "stays_with_context",
        "transitions",
        "window_ms",
    )

    def __init__(self, name: str, kind: StateKind) -> None:
        self.name = name
        self.base = name.split(NAME_DELIMITER)[0]
        self.kind = kind
        self.transitions: list[Transition] = []
        self.index = -1
        self.window_ms = 0
        self.no_proceed = True  # set by CompiledNFA: no proceed edge leaves this state
        self.relaxed: CompiledCondition | None = None  # set when edges are [take c, ignore not c]
        # f(event) -> bool; False means a run here is left exactly as it is by that event
        self.stays: Callable[[Any], bool] | None = None
        # the same for a relaxed state whose condition reads the context: f(event, ctx)
        self.stays_with_context: CompiledCondition | None = None

    def add(self, action: Action, target: State, condition: Condition | None) -> None:
        self.transitions.append(Transition(action, self, target, condition))

    def __repr__(self) -> str:
        edges = ", ".join(f"{t.action.value}->{t.target.name}" for t in self.transitions)
        return f"<{self.kind.value} {self.name}: {edges}>"


class CompiledNFA:
    """The compiled automaton of one pattern: states, windows and the start state."""

    def __init__(self, states: Sequence[State], window_ms: int) -> None:
        self.states = list(states)
        for i, state in enumerate(self.states):
            state.index = i
        starts = [s for s in self.states if s.kind is StateKind.START]
        if len(starts) != 1:  # pragma: no cover - the compiler always makes one
            raise MalformedPatternError("internal error: the pattern compiled to no start state")
        self.start = starts[0]
        self.window_ms = window_ms
        self.uses_context = any(
            t.condition is not None and t.condition.uses_context()
            for s in self.states
            for t in s.transitions
        )
        cache: dict[int, CompiledCondition] = {}
        for state in self.states:
            for t in state.transitions:
                if t.condition is None or t.condition is TRUE:
                    t.test = None
                else:
                    key = id(t.condition)
                    if key not in cache:
                        cache[key] = compile_condition(t.condition)
                    t.test = cache[key]
            state.no_proceed = all(t.action is not Action.PROCEED for t in state.transitions)
            state.relaxed = _relaxed_test(state)
            change = _change_condition(state)
            if change is not None:
                state.stays = compile_single_argument(change)
                if state.stays is None:
                    state.stays_with_context = compile_condition(change)

    def describe(self) -> str:
        return "\n".join(repr(s) for s in self.states)


def compile_pattern(pattern: Pattern) -> CompiledNFA:
    """Compile ``pattern``; raises :class:`MalformedPatternError` like Flink would."""
    if not isinstance(pattern, Pattern):
        raise TypeError(f"expected a Pattern, got {type(pattern).__name__}")
    return _Compiler(pattern).compile()


class _Cursor:
    """Position of the stage being compiled inside its (top-level or group) stage sequence."""

    __slots__ = ("index", "stages")

    def __init__(self, stages: tuple[Stage, ...], index: int) -> None:
        self.stages = stages
        self.index = index

    @property
    def stage(self) -> Stage:
        return self.stages[self.index]

    @property
    def previous(self) -> _Cursor | None:
        return _Cursor(self.stages, self.index - 1) if self.index > 0 else None


class _Compiler:
    def __init__(self, pattern: Pattern) -> None:
        self.pattern = pattern
        self.used_names: set[str] = set()
        # per base name, the first suffix not yet tried: keeps naming linear in the states
        self.next_suffix: dict[str, int] = {}
        self.stop_states: dict[str, State] = {}
        self.states: list[State] = []
        self.window_times: dict[str, int] = {}
        self.window_time: int | None = None
        self.group: Stage | None = None
        self.first_of_loop: dict[int, bool] = {}
        self.current = _Cursor(pattern.stages, len(pattern.stages) - 1)
        self.following: Stage | None = None
        self.original_states: dict[str, State] = {}

    # -- driver ----------------------------------------------------------------------------

    def compile(self) -> CompiledNFA:
        last = self.current.stage
        self._check_name_uniqueness()
        self._check_skip_strategy()
        _check_groups_consume(self.pattern)
        sink = self._create_ending_state()
        sink = self._create_middle_states(sink)
        self._convert(sink).kind = StateKind.START
        self._check_window_times()
        if last.quantifier.consuming is Consuming.NOT_FOLLOW:
            own = self.window_times.get(last.name, 0)
            if own <= 0 and not self.window_time:
                raise MalformedPatternError(
                    f"not_followed_by({last.name!r}) ends the pattern, so it needs a window: "
                    "add .within(...)"
                )
        for state in self.states:
            state.window_ms = self.window_times.get(state.name, 0)
        return CompiledNFA(self.states, self.window_time or 0)

    def _check_name_uniqueness(self) -> None:
        seen = {ENDING_STATE_NAME}

        def walk(stages: tuple[Stage, ...]) -> None:
            for stage in reversed(stages):
                if stage.group is not None:
                    walk(stage.group.stages)
                elif stage.name in seen:
                    raise MalformedPatternError(
                        f"Duplicate pattern name: {stage.name}. Names must be unique."
                    )
                else:
                    seen.add(stage.name)

        walk(self.pattern.stages)

    def _check_skip_strategy(self) -> None:
        name = self.pattern.skip_strategy.stage
        if name is not None and name not in {s.name for s in self.pattern.stages}:
            raise MalformedPatternError(
                f"the skip strategy names stage {name!r}, which is not a top-level stage of "
                "the pattern (stages inside a group cannot be named)"
            )

    def _check_window_times(self) -> None:
        if self.window_time is not None and any(
            t > self.window_time for t in self.window_times.values()
        ):
            raise MalformedPatternError(
                "a PREVIOUS_AND_CURRENT window cannot be longer than the FIRST_AND_LAST window"
            )

    # -- state creation --------------------------------------------------------------------

    def _unique_name(self, base: str) -> str:
        """``base``, else ``base:N`` with the smallest unused N (Flink's naming)."""
        candidate, counter = base, self.next_suffix.get(base, 0)
        while candidate in self.used_names:
            candidate = f"{base}{NAME_DELIMITER}{counter}"
            counter += 1
        self.next_suffix[base] = counter
        self.used_names.add(candidate)
        return candidate

    def _named_state(self, base: str, kind: StateKind) -> State:
        state = State(self._unique_name(base), kind)
        self.states.append(state)
        return state

    def _state(self, kind: StateKind, is_take: bool) -> State:
        stage = self.current.stage
        state = self._named_state(stage.name, kind)
        if is_take:
            if stage.times is None:
                window = stage.window(WithinType.PREVIOUS_AND_CURRENT)
                if window is not None:
                    self.window_times[state.name] = window
            elif NAME_DELIMITER in state.name and stage.times.window_ms is not None:
                self.window_times[state.name] = stage.times.window_ms
        return state

    def _stop_state(self, condition: Condition, name: str) -> State:
        stop = self.stop_states.get(name)
        if stop is None:
            stop = self._named_state(name, StateKind.STOP)
            stop.add(Action.TAKE, stop, condition)
            self.stop_states[name] = stop
        return stop

    def _create_ending_state(self) -> State:
        end = self._named_state(ENDING_STATE_NAME, StateKind.FINAL)
        self.window_time = self.current.stage.window(WithinType.FIRST_AND_LAST)
        return end

    def _create_middle_states(self, sink: State) -> State:
        last_sink = sink
        while self.current.previous is not None:
            stage = self.current.stage
            consuming = stage.quantifier.consuming
            if consuming is Consuming.NOT_FOLLOW:
                has_window = (
                    stage.window(WithinType.PREVIOUS_AND_CURRENT) is not None
                    or (self.window_time or 0) > 0
                )
                if has_window and last_sink.kind is StateKind.FINAL:
                    pending = self._state(StateKind.PENDING, True)
                    not_condition = self._take_condition(stage)
                    stop = self._stop_state(not_condition, stage.name)
                    pending.add(Action.PROCEED, stop, not_condition)
                    pending.add(Action.IGNORE, pending, Not(not_condition))
                    last_sink = pending
            elif consuming is Consuming.NOT_NEXT:
                not_next = self._state(StateKind.NORMAL, True)
                not_condition = self._take_condition(stage)
                stop = self._stop_state(not_condition, stage.name)
                if last_sink.kind is StateKind.FINAL:
                    not_next.add(Action.IGNORE, last_sink, Not(not_condition))
                else:
                    not_next.add(Action.PROCEED, last_sink, Not(not_condition))
                not_next.add(Action.PROCEED, stop, not_condition)
                last_sink = not_next
            else:
                last_sink = self._convert(last_sink)
            self.following = stage
            self.current = self.current.previous
            window = self.current.stage.window(WithinType.FIRST_AND_LAST)
            if window is not None and (self.window_time is None or window < self.window_time):
                self.window_time = window
        return last_sink

    def _convert(self, sink: State) -> State:
        stage = self.current.stage
        kind = stage.quantifier.kind
        assert stage.times is not None or kind is QuantifierKind.SINGLE
        if kind is QuantifierKind.LOOPING:
            assert stage.times is not None
            self._set_first_of_loop(False)
            looping = self._looping(self._copy_without_transitive_nots(sink))
            self._set_first_of_loop(True)
            last_sink = self._times(looping, sink, stage.times.low, stage.times.low)
        elif kind is QuantifierKind.TIMES:
            assert stage.times is not None
            last_sink = self._times(sink, sink, stage.times.low, stage.times.high)
        else:
            last_sink = self._singleton(
                sink,
                sink,
                self._take_condition(stage),
                self._ignore_condition(stage),
                stage.quantifier.optional,
            )
        self._add_stop_states(last_sink)
        return last_sink

    def _times(self, sink: State, proceed: State, low: int, high: int) -> State:
        stage = self.current.stage
        last_sink = sink
        self._set_first_of_loop(False)
        until = stage.until
        inner_ignore = _with_until(self._inner_ignore_condition(stage), until, False)
        take = _with_until(self._take_condition(stage), until, True)
        if stage.quantifier.greedy and low != high:
            if until is not None:
                self.original_states[sink.name] = self._copy(sink)
            assert take is not None
            _guard_greedy(sink, take)
        for _ in range(low, high):
            last_sink = self._singleton(last_sink, proceed, take, inner_ignore, True)
            self._add_stop_state_to_looping(last_sink)
        for _ in range(low - 1):
            last_sink = self._singleton(last_sink, None, take, inner_ignore, False)
            self._add_stop_state_to_looping(last_sink)
        self._set_first_of_loop(True)
        return self._singleton(
            last_sink, proceed, take, self._ignore_condition(stage), stage.quantifier.optional
        )

    def _singleton(
        self,
        sink: State,
        proceed: State | None,
        take: Condition | None,
        ignore: Condition | None,
        optional: bool,
    ) -> State:
        stage = self.current.stage
        if stage.group is not None:
            return self._group(stage, sink, proceed, optional)
        singleton = self._state(StateKind.NORMAL, True)
        target = self._copy_without_transitive_nots(sink)
        singleton.add(Action.TAKE, target, take)
        proceed_condition = self._true_condition()
        if optional:
            assert proceed is not None
            if stage.quantifier.greedy:
                until = stage.until
                if until is not None:
                    original = self.original_states.get(proceed.name)
                    if original is None:
                        # Flink builds an edge to no state here and fails with a
                        # NullPointerException once an event reaches it
                        raise MalformedPatternError(
                            f"stage {stage.name!r}: an optional greedy loop with until() "
                            "directly in the scope of a not_followed_by cannot be compiled "
                            "(Flink fails on it at run time); drop greedy() or until(), or "
                            "move the negation"
                        )
                    singleton.add(Action.PROCEED, original, And(proceed_condition, until))
                    singleton.add(Action.PROCEED, proceed, And(proceed_condition, Not(until)))
                else:
                    singleton.add(Action.PROCEED, proceed, proceed_condition)
            else:
                singleton.add(Action.PROCEED, proceed, proceed_condition)
        if ignore is not None:
            if optional or self._is_head_of_optional_group(stage):
                ignore_state = self._state(StateKind.NORMAL, False)
                ignore_state.add(Action.TAKE, target, take)
                ignore_state.add(Action.IGNORE, ignore_state, ignore)
                self._add_stop_states(ignore_state)
            else:
                ignore_state = singleton
            singleton.add(Action.IGNORE, ignore_state, ignore)
        return singleton

    def _enter_group(self, group: Stage) -> tuple[_Cursor, Stage | None, Stage | None]:
        saved = (self.current, self.following, self.group)
        assert group.group is not None
        self.group = group
        inner = group.group.stages
        self.current = _Cursor(inner, len(inner) - 1)
        return saved

    def _leave_group(self, saved: tuple[_Cursor, Stage | None, Stage | None]) -> None:
        self.current, self.following, self.group = saved

    def _group(self, group: Stage, sink: State, proceed: State | None, optional: bool) -> State:
        proceed_condition = self._true_condition()
        saved = self._enter_group(group)
        last_sink = self._convert(self._create_middle_states(sink))
        if optional:
            assert proceed is not None
            last_sink.add(Action.PROCEED, proceed, proceed_condition)
        self._leave_group(saved)
        return last_sink

    def _looping_group(self, group: Stage, sink: State) -> State:
        proceed_condition = self._true_condition()
        dummy = self._state(StateKind.NORMAL, True)
        saved = self._enter_group(group)
        last_sink = self._convert(self._create_middle_states(dummy))
        last_sink.add(Action.PROCEED, sink, proceed_condition)
        dummy.add(Action.PROCEED, last_sink, proceed_condition)
        self._leave_group(saved)
        return last_sink

    def _looping(self, sink: State) -> State:
        stage = self.current.stage
        if stage.group is not None:
            return self._looping_group(stage, sink)
        until = stage.until
        ignore = _with_until(self._inner_ignore_condition(stage), until, False)
        take = _with_until(self._take_condition(stage), until, True)
        proceed_condition = self._true_condition()
        looping = self._state(StateKind.NORMAL, True)
        if stage.quantifier.greedy:
            if until is not None:
                sink_copy = self._copy(sink)
                looping.add(Action.PROCEED, sink_copy, And(proceed_condition, until))
                self.original_states[sink.name] = sink_copy
                looping.add(Action.PROCEED, sink, And(proceed_condition, Not(until)))
            else:
                looping.add(Action.PROCEED, sink, proceed_condition)
            _guard_greedy(sink, self._take_condition(stage))
        else:
            looping.add(Action.PROCEED, sink, proceed_condition)
        looping.add(Action.TAKE, looping, take)
        self._add_stop_state_to_looping(looping)
        if ignore is not None:
            ignore_state = self._state(StateKind.NORMAL, False)
            ignore_state.add(Action.TAKE, looping, take)
            ignore_state.add(Action.IGNORE, ignore_state, ignore)
            looping.add(Action.IGNORE, ignore_state, ignore)
            self._add_stop_state_to_looping(ignore_state)
        return looping

    def _copy(self, state: State) -> State:
        copy = self._named_state(state.base, state.kind)
        for t in state.transitions:
            copy.add(t.action, copy if t.target is t.source else t.target, t.condition)
        return copy

    def _copy_without_transitive_nots(self, sink: State) -> State:
        nots = self._current_not_conditions()
        if not nots or not self.current.stage.quantifier.optional:
            return sink
        names = {name for _, name in nots}
        copy = self._named_state(sink.name, sink.kind)
        for t in sink.transitions:
            if t.action is Action.PROCEED:
                target = t.target
                if target.kind is StateKind.STOP:
                    if target.name in names:
                        continue
                else:
                    target = self._copy_without_transitive_nots(target)
                copy.add(t.action, target, t.condition)
            else:
                copy.add(t.action, copy if t.target is t.source else t.target, t.condition)
        return copy

    def _current_not_conditions(self) -> list[tuple[Condition, str]]:
        nots: list[tuple[Condition, str]] = []
        cursor = self.current
        while True:
            previous = cursor.previous
            if previous is None:
                break
            q = previous.stage.quantifier
            if not (q.optional or q.consuming is Consuming.NOT_FOLLOW):
                break
            cursor = previous
            if q.consuming is Consuming.NOT_FOLLOW:
                nots.append((self._take_condition(cursor.stage), cursor.stage.name))
        return nots

    def _add_stop_states(self, state: State) -> None:
        for condition, name in self._current_not_conditions():
            state.add(Action.PROCEED, self._stop_state(condition, name), condition)

    def _add_stop_state_to_looping(self, state: State) -> None:
        following = self.following
        if following is not None and following.quantifier.consuming is Consuming.NOT_FOLLOW:
            condition = self._take_condition(following)
            state.add(Action.PROCEED, self._stop_state(condition, following.name), condition)

    # -- groups ----------------------------------------------------------------------------

    def _set_first_of_loop(self, value: bool) -> None:
        stage = self.current.stage
        if stage.group is not None:
            self.first_of_loop[id(stage)] = value

    def _first_of_loop(self) -> bool:
        if self.group is None:
            return True
        return self.first_of_loop.get(id(self.group), True)

    def _head_of_group(self) -> bool:
        return self.group is not None and self.current.index == 0

    def _is_head_of_optional_group(self, stage: Stage) -> bool:
        return (
            self._head_of_group()
            and self._first_of_loop()
            and self.group is not None
            and self.group.quantifier.optional
        )

    # -- conditions ------------------------------------------------------------------------

    def _group_until(self) -> Condition | None:
        return self.group.until if self.group is not None else None

    def _condition_for(self, consuming: Consuming, stage: Stage) -> Condition | None:
        if consuming is Consuming.SKIP_TILL_NEXT:
            return Not(stage.condition or TRUE)
        if consuming is Consuming.SKIP_TILL_ANY:
            return TRUE
        return None

    def _inner_ignore_condition(self, stage: Stage) -> Condition | None:
        consuming = stage.quantifier.inner
        if self._head_of_group():
            assert self.group is not None
            consuming = self.group.quantifier.inner
        return _with_until(self._condition_for(consuming, stage), self._group_until(), False)

    def _ignore_condition(self, stage: Stage) -> Condition | None:
        consuming = stage.quantifier.consuming
        if self._head_of_group():
            assert self.group is not None
            q = self.group.quantifier
            consuming = q.consuming if self._first_of_loop() else q.inner
        return _with_until(self._condition_for(consuming, stage), self._group_until(), False)

    def _take_condition(self, stage: Stage) -> Condition:
        condition = _with_until(stage.condition or TRUE, self._group_until(), True)
        assert condition is not None
        return condition

    def _true_condition(self) -> Condition:
        condition = _with_until(TRUE, self._group_until(), True)
        assert condition is not None
        return condition


def _relaxed_test(state: State) -> CompiledCondition | None:
    """The take condition of a state whose only edges are ``take c`` and ``ignore not c``."""
    if len(state.transitions) != 2:
        return None
    take, ignore = state.transitions
    if (
        take.action is Action.TAKE
        and ignore.action is Action.IGNORE
        and take.condition is not None
        and isinstance(ignore.condition, Not)
        and ignore.condition.inner is take.condition
        and take.test is not None
    ):
        return take.test
    return None


def _change_condition(state: State) -> Condition | None:
    """A condition that is false exactly for the events that leave a run in ``state`` as it
    is, when the state's edges allow one to be written down; ``None`` otherwise.

    Two shapes qualify: a relaxed state (``take c``, ``ignore -> itself`` on ``not c``, and any
    number of ``proceed -> stop`` edges for negations), which keeps a run unchanged when
    neither ``c`` nor a negation's condition holds; and a start state with only take edges,
    which is left as it is when none of them holds.
    """
    takes = [t for t in state.transitions if t.action is Action.TAKE]
    ignores = [t for t in state.transitions if t.action is Action.IGNORE]
    proceeds = [t for t in state.transitions if t.action is Action.PROCEED]
    if state.kind is StateKind.START and takes and not ignores and not proceeds:
        conditions = [t.condition or TRUE for t in takes]
    elif (
        state.kind is StateKind.NORMAL
        and len(takes) == 1
        and len(ignores) == 1
        and ignores[0].target is state
        and isinstance(ignores[0].condition, Not)
        and ignores[0].condition.inner is takes[0].condition
        and all(t.target.kind is StateKind.STOP for t in proceeds)
    ):
        conditions = [takes[0].condition or TRUE] + [t.condition or TRUE for t in proceeds]
    else:
        return None
    combined = conditions[0]
    for other in conditions[1:]:
        combined = Or(combined, other)
    return combined


def _can_be_empty(stage: Stage) -> bool:
    """Can this stage match without taking any event?"""
    if stage.quantifier.optional:
        return True
    if stage.group is None:
        return stage.quantifier.negated
    return all(_can_be_empty(inner) for inner in stage.group.stages)


def _check_groups_consume(pattern: Pattern) -> None:
    """Refuse a looping group that can match nothing: Flink loops on it forever."""
    for stage in pattern.stages:
        if stage.group is None:
            continue
        inner_empty = all(_can_be_empty(inner) for inner in stage.group.stages)
        if inner_empty and stage.quantifier.kind is QuantifierKind.LOOPING:
            raise MalformedPatternError(
                "a looping group whose stages are all optional can match no event at all "
                "and would repeat forever; make at least one stage of the group mandatory"
            )
        _check_groups_consume(stage.group)


def _with_until(
    condition: Condition | None, until: Condition | None, is_take: bool
) -> Condition | None:
    if until is not None and condition is not None:
        return And(Not(until), condition)
    if until is not None and is_take:
        return Not(until)
    return condition


def _guard_greedy(state: State, take: Condition) -> None:
    for t in state.transitions:
        t.condition = And(t.condition or TRUE, Not(take))
