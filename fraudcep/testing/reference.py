"""A small, independent reference matcher: Flink CEP's semantics, stated rule by rule.

The engine (:mod:`~fraudcep.nfa.compiler`, :mod:`~fraudcep.nfa.matcher`) compiles a pattern into
Flink's automaton and runs it. This module does not: it never imports the compiler, the NFA or the
engine. It interprets the pattern's stage list directly, keeping a list of *partial matches*,
each a position in the stage list plus the events matched so far, and advances them event by
event with explicit take / skip / proceed choices. It is written to be read, not to be fast;
property tests compare it with the engine (``tests/core/test_matcher_vs_reference.py``) and
the Flink harness compares both with Flink CEP 2.3 itself.

What it encodes
===============

Input and time
    Events are processed in event-time order (timestamp, then arrival), as Flink's
    ``CepOperator`` does once the watermark passes them. Before the events of each new
    timestamp, and once more at the end of input, time advances: partial matches whose window
    has ended are timed out.

Positions
    A partial match waits at a *position*: stage ``k`` having taken ``c`` events (``c`` below
    the stage's upper bound), a ``not_next`` stage waiting for the event right after the
    previous stage, or a trailing ``not_followed_by`` waiting for its window to end. A position
    can *take* the event (append it to stage ``k``), *skip* it (stay, without the event), or
    *proceed* (move on to the next stage without consuming anything, then decide there on the
    same event). One event can do several of these at once: every choice that applies yields
    its own partial match (non-determinism).

Take
    Stage ``k`` takes an event that satisfies its conditions (``where``/``or_where``; iterative
    conditions see the partial match being extended) and not its ``until`` condition. After
    the stage's ``high``-th event the match moves to the next stage; a looping stage
    (``one_or_more``/``times_or_more``) never fills up.

Skip (contiguity)
    Waiting for the first event of stage ``k``, the contiguity between stage ``k`` and the stage
    before decides (``next``: strict, nothing may be skipped; ``followed_by``: relaxed, an event
    may be skipped only if it does *not* satisfy stage ``k``'s condition; ``followed_by_any``:
    non-deterministic relaxed, any event may be skipped, also one that is taken). Inside a
    quantified stage (``c >= 1``) the inner contiguity decides the same way (``consecutive``:
    strict; default: relaxed; ``allow_combinations``: any), and an event satisfying the
    stage's ``until`` condition may not be skipped. The very first stage never skips: new
    matches start at every event the first stage (or, through optional stages, a later one)
    takes.

Proceed
    From stage ``k`` a match may proceed to the next stage when stage ``k`` is satisfied: it
    has taken at least ``low`` events (``c >= 1``), or it has taken none and is optional. A
    match that has *skipped* an event while it could proceed loses that right until it takes
    another event into stage ``k`` (Flink's separate "ignore" states): the skip and the
    proceed would otherwise produce the same match twice.

Completion
    A match is complete when it proceeds past the last stage; after a take this is checked
    right away (so ``a b?`` and ``a b+`` complete with the event that made them possible).

``not_next``
    The event right after the previous stage must not satisfy the negated condition; if it
    does, the match is discarded. At the end of the pattern, the match completes with the next
    event (which is not part of it); if input ends first it is lost, or times out when a
    window applies.

``not_followed_by``
    In the middle: a match waiting for the first event of the stage after the negation (or, if
    that stage is optional, of the stages after it up to the first mandatory one) is discarded
    by an event that satisfies the negated condition; taking an event into one of those
    optional stages ends the negation's scope. Flink's automaton adds two rules, encoded as
    such: inside the stage right *before* the negation, once it has taken an event, the
    negated events discard the match too (for that negation only, and not at an optional
    occurrence of a ``times(n, m)`` stage after a skip); and a match that has skipped an
    event at an optional position of a stage inside the scope (an optional occurrence of
    ``times(n, m)``, or an optional stage's first event) is in the scope again.

    At the end of the pattern: if the trailing ``not_followed_by`` (or the last of several
    trailing ones that has one) carries a window of its own (``FIRST_AND_LAST`` on it or on a
    later stage, or ``PREVIOUS_AND_CURRENT`` on it), a match that completes the stage before
    it waits there until its window ends and is then emitted as a complete match, unless a
    negated event came first. The stage before is complete when it is full (right after its
    last take) or when it proceeds, which for a looping stage happens only on a later event.
    A trailing ``not_followed_by`` without a window of its own has no effect at all (Flink
    compiles no state for it), even when an earlier stage has a window.

Discarding a whole match
    When one of the choices a match has for an event violates a negation, Flink discards the
    match's *other* continuations for that event too (take, skip, proceed); matches it
    completed with that very event are still emitted.

``greedy``
    When stage ``g`` is greedy (looping, or ``times(n, m)`` with ``n < m``), the position right
    after it (the first position of the next non-negation stage, or the ``not_next`` or
    trailing ``not_followed_by`` position) refuses every event satisfying stage ``g``'s
    condition: such an event is neither taken, skipped nor proceeded on there. A match
    waiting at that position keeps this restriction until it takes an event; a match that
    left stage ``g`` on an event satisfying ``g``'s ``until`` condition does not have it.

Windows
    ``within(FIRST_AND_LAST)`` on any stage bounds every match: the smallest such window ``W``
    applies, and a match started at ``t0`` times out at ``t0 + W`` (the end is exclusive: an
    event at ``t0 + W`` is too late). ``within(PREVIOUS_AND_CURRENT)`` on a *single* stage ``k``
    bounds the wait for that stage's event after the previous taken event at ``tp``: a match
    still waiting at stage ``k`` times out at ``tp + W_k`` (except in its skipped-while-optional
    state, and where Flink uses a copy of the state: after a greedy stage's ``until`` event,
    or after an optional stage took an event inside a negation's scope). On ``not_next`` and
    trailing ``not_followed_by`` stages it bounds the wait at that position the same way. On
    the first stage, on quantified stages and on ``not_followed_by`` in the middle it has no
    effect (as in Flink 2.3; ``within`` is not the quantifier's window). A timed-out trailing
    ``not_followed_by`` match is a complete match, not a timeout. Flink's compile-time checks
    apply: a ``PREVIOUS_AND_CURRENT`` window that has an effect may not be longer than the
    ``FIRST_AND_LAST`` one, and a trailing ``not_followed_by`` needs some window.

After-match skip strategies
    Applied after the fact, as Flink does: complete matches are collected; with any strategy
    but ``no_skip`` the one that started first is emitted only when no partial match started
    earlier is still alive, and then partial and held complete matches whose first event is
    ``<=`` the pruning event (``skip_to_next``: the match's first event; ``skip_past_last_event``:
    its last; compared with ``<`` for ``skip_to_first``/``skip_to_last``: the first/last event
    of the named stage, nothing when the stage has no event) are discarded.

Order
    Matches completed at one step come out ordered by their first event. Among matches with
    the same first event Flink's order is that of its internal priority queue, which is not
    part of the semantics; where a skip strategy lets only one of them survive, *which* one is
    therefore implementation-defined too. :func:`reference_outcomes` enumerates every allowed
    outcome and :func:`check_result` accepts a result equal to any of them up to that order
    (see :func:`fraudcep.testing.cases.canonical`). Timeouts are compared as a multiset.

What it leaves out
==================

* Group patterns (a ``Pattern`` passed to ``begin``/``next``/``followed_by``/...).
* A greedy optional stage inside a ``not_followed_by``'s scope (Flink's compiler loses track
  of a state there; it fails with a ``NullPointerException`` at compile or run time, or
  matches in ways that follow from that).
* Quantifier windows (``times(n, window=...)``, ``one_or_more(window)``, ...).
* Processing time, late events, keys: a reference run is one key in event time, with every
  event in hand (:class:`ReferenceMatcher` sorts them).

:func:`unsupported` names the reason a pattern is outside this subset, and
:func:`fraudcep.testing.strategies.pattern_specs` with ``reference_subset=True`` generates
only supported patterns (still covering every operator, every quantifier, both window types,
timeouts and all skip strategies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fraudcep.errors import MalformedPatternError
from fraudcep.pattern.conditions import And, Condition, Not, Or, Predicate, TrueCondition
from fraudcep.pattern.pattern import Consuming, Pattern, QuantifierKind, Stage, WithinType
from fraudcep.pattern.skip import SkipKind, SkipStrategy
from fraudcep.testing.cases import (
    Case,
    Result,
    build_pattern,
    compare,
    error_result,
)
from fraudcep.timeutil import timestamp_ms

__all__ = [
    "ReferenceLimitError",
    "ReferenceMatch",
    "ReferenceMatcher",
    "ReferenceOutcome",
    "UnsupportedPatternError",
    "check_result",
    "guided_by",
    "reference_case",
    "reference_outcomes",
    "unsupported",
]

END_OF_TIME = 2**63 - 1
"""The final watermark (Flink's ``Long.MAX_VALUE``)."""


class UnsupportedPatternError(ValueError):
    """The pattern is outside the reference matcher's subset (see the module docstring)."""


class ReferenceLimitError(RuntimeError):
    """A case has more allowed outcomes (or partial matches) than the reference will explore."""


# -- the pattern, as the interpreter sees it -------------------------------------------------

NORMAL, NOT_NEXT, NOT_FOLLOW = "normal", "not_next", "not_followed_by"


@dataclass(frozen=True)
class _Stage:
    index: int
    name: str
    kind: str
    condition: Condition | None
    contiguity: Consuming  # towards the previous stage (STRICT for the first)
    inner: Consuming  # between the events of a quantified stage
    low: int
    high: int | None  # None: unbounded (looping)
    quantified: bool
    optional: bool
    greedy: bool
    until: Condition | None
    previous_window: int | None  # a PREVIOUS_AND_CURRENT window that has an effect
    first_last_window: int | None

    @property
    def looping(self) -> bool:
        return self.high is None

    @property
    def guards_next(self) -> bool:
        """Greedy in effect: the position after this stage refuses this stage's events."""
        return self.greedy and (self.high is None or self.low < self.high)


def _stage_view(index: int, stage: Stage) -> _Stage:
    q = stage.quantifier
    kind = {Consuming.NOT_NEXT: NOT_NEXT, Consuming.NOT_FOLLOW: NOT_FOLLOW}.get(q.consuming, NORMAL)
    times = stage.times
    quantified = times is not None
    low, high = (
        (times.low, None if q.kind is QuantifierKind.LOOPING else times.high) if times else (1, 1)
    )
    previous = stage.window(WithinType.PREVIOUS_AND_CURRENT)
    return _Stage(
        index=index,
        name=stage.name,
        kind=kind,
        condition=stage.condition,
        contiguity=q.consuming if kind == NORMAL else Consuming.STRICT,
        inner=q.inner,
        low=low,
        high=high,
        quantified=quantified,
        optional=q.optional,
        greedy=q.greedy,
        until=stage.until,
        previous_window=None if quantified else previous,
        first_last_window=stage.window(WithinType.FIRST_AND_LAST),
    )


def unsupported(pattern: Pattern) -> str | None:
    """Why ``pattern`` is outside the reference matcher's subset, or None when it is inside."""
    stages = pattern.stages
    for i, stage in enumerate(stages):
        if stage.group is not None:
            return "group patterns are not supported"
        q = stage.quantifier
        if stage.times is not None and stage.times.window_ms is not None:
            return f"stage {stage.name!r}: quantifier windows are not supported"
        if q.optional and q.greedy and _in_negation_scope(stages, i):
            return f"stage {stage.name!r}: a greedy optional stage after not_followed_by"
    return None


def _in_negation_scope(stages: Sequence[Stage], k: int) -> bool:
    """Is a not_followed_by before stage ``k`` with only optional stages in between?"""
    for stage in reversed(stages[:k]):
        q = stage.quantifier
        if q.consuming is Consuming.NOT_FOLLOW:
            return True
        if not q.optional or q.negated:
            return False
    return False


def _validate(pattern: Pattern, stages: Sequence[_Stage], pending: int | None) -> None:
    """The checks Flink makes when it compiles a pattern (``NFACompiler``)."""
    seen: set[str] = {"$endState$"}  # the name of Flink's final state
    for s in stages:
        if s.name in seen:
            raise MalformedPatternError(f"Duplicate pattern name: {s.name}. Names must be unique.")
        seen.add(s.name)
    named = pattern.skip_strategy.stage
    if named is not None and named not in {s.name for s in stages}:
        raise MalformedPatternError(
            "The pattern name specified in AfterMatchSkipStrategy can not be found in the "
            "given Pattern"
        )
    window = _first_last_window(stages)
    if window is not None:
        for s in stages:
            own = s.previous_window if s.kind != NOT_FOLLOW or s.index == pending else None
            if own is not None and own > window:
                raise MalformedPatternError(
                    "The window length between the previous and current event cannot be "
                    "larger than the window length between the first and last event for a "
                    "Pattern."
                )
    last = stages[-1]
    if last.kind == NOT_FOLLOW and last.previous_window is None and window is None:
        raise MalformedPatternError(
            "NotFollowedBy is not supported without windowTime as a last part of a Pattern!"
        )


def _first_last_window(stages: Sequence[_Stage]) -> int | None:
    windows = [s.first_last_window for s in stages if s.first_last_window is not None]
    return min(windows) if windows else None


# -- positions and partial matches ------------------------------------------------------------

STAGE, WAIT_NOT_NEXT, PENDING, FINAL = "stage", "not_next", "pending", "final"


@dataclass(frozen=True)
class _Position:
    kind: str
    stage: int = -1
    count: int = 0  # events taken into the stage so far
    skipped: bool = False  # skipped an event while it could proceed: may not proceed now
    guard: int | None = None  # index of the greedy stage whose events this position refuses
    copy: bool = False  # entered on the greedy stage's until event (Flink's state copy)
    cleared: bool = False  # took an event after the negations in scope: they no longer apply


_FINAL = _Position(FINAL)


@dataclass(frozen=True)
class _Taken:
    stage: str
    event: Any
    ts: int
    seq: int


@dataclass(frozen=True)
class _Partial:
    position: _Position
    taken: tuple[_Taken, ...]
    prev_ts: int  # timestamp of the last taken event

    @property
    def start(self) -> int:
        return self.taken[0].seq

    @property
    def start_ts(self) -> int:
        return self.taken[0].ts


class _Context:
    """What iterative conditions see: the events of the partial match being extended."""

    def __init__(self, taken: Sequence[_Taken], timestamp: int) -> None:
        self._taken = taken
        self.timestamp = timestamp

    def events(self, name: str) -> list[Any]:
        return [t.event for t in self._taken if t.stage == name]


def _holds(cond: Condition | None, event: Any, ctx: _Context) -> bool:
    if cond is None or isinstance(cond, TrueCondition):
        return True
    if isinstance(cond, Predicate):
        return bool(cond.fn(event, ctx) if cond.with_context else cond.fn(event))
    if isinstance(cond, And):
        return _holds(cond.left, event, ctx) and _holds(cond.right, event, ctx)
    if isinstance(cond, Or):
        return _holds(cond.left, event, ctx) or _holds(cond.right, event, ctx)
    if isinstance(cond, Not):
        return not _holds(cond.inner, event, ctx)
    raise TypeError(f"not a condition: {cond!r}")


# -- the interpreter ----------------------------------------------------------------------


@dataclass
class _Choices:
    """The choices a partial match has for one event (Flink's decision graph)."""

    takes: list[tuple[str, _Position]] = field(default_factory=list)
    skips: list[_Position] = field(default_factory=list)
    violates_negation: bool = False


class _Interpreter:
    """The take / skip / proceed rules of one pattern (see the module docstring)."""

    def __init__(self, pattern: Pattern) -> None:
        reason = unsupported(pattern)
        if reason is not None:
            raise UnsupportedPatternError(reason)
        self.stages = [_stage_view(i, s) for i, s in enumerate(pattern.stages)]
        self.pending_stage = self._trailing_negation()
        _validate(pattern, self.stages, self.pending_stage)
        self.skip: SkipStrategy = pattern.skip_strategy
        self.window = _first_last_window(self.stages)
        self.start = _Position(STAGE, 0)

    # -- structure -----------------------------------------------------------------------

    def _trailing_negation(self) -> int | None:
        """The trailing not_followed_by that waits for its window, if any.

        Flink compiles a waiting state only for a ``not_followed_by`` followed by nothing but
        ignored ``not_followed_by`` stages, and only when that stage or a later one carries a
        window of its own; every other trailing negation is dropped.
        """
        for s in reversed(self.stages):
            if s.kind != NOT_FOLLOW:
                return None
            later = self.stages[s.index :]
            if s.previous_window is not None or any(t.first_last_window is not None for t in later):
                return s.index
        return None

    def after(
        self, k: int, guard: int | None = None, copy: bool = False, cleared: bool = False
    ) -> _Position:
        """The position a match reaches when it leaves stage ``k`` (skipping ignored
        negations)."""
        i = k + 1
        while i < len(self.stages):
            s = self.stages[i]
            kind = {NORMAL: STAGE, NOT_NEXT: WAIT_NOT_NEXT}.get(s.kind)
            if kind is None and i == self.pending_stage:
                kind = PENDING
            if kind is not None:
                return _Position(kind, i, guard=guard, copy=copy, cleared=cleared)
            i += 1
        return _FINAL

    def negation_scope(self, k: int) -> list[int]:
        """The not_followed_by stages checked while waiting for stage ``k``'s first event:
        those before ``k`` with only optional stages and negations in between."""
        out = []
        i = k - 1
        while i >= 0:
            s = self.stages[i]
            if s.kind == NOT_FOLLOW:
                out.append(i)
            elif not (s.kind == NORMAL and s.optional):
                break
            i -= 1
        return out

    def may_proceed(self, s: _Stage, count: int) -> bool:
        """Is stage ``s`` satisfied after ``count`` events (so a match may move on)?"""
        if count == 0:
            return s.optional
        return count >= s.low

    def skip_condition(self, s: _Stage, count: int) -> Callable[[Any, _Context], bool] | None:
        """When may a match at stage ``s`` (``count`` events taken) skip an event? None: never."""
        contiguity = s.contiguity if count == 0 else s.inner
        if contiguity is Consuming.STRICT:
            return None
        until = s.until if count > 0 else None

        def relaxed(event: Any, ctx: _Context) -> bool:
            if until is not None and _holds(until, event, ctx):
                return False
            if contiguity is Consuming.SKIP_TILL_ANY:
                return True
            return not _holds(s.condition, event, ctx)

        return relaxed

    def negations_at(self, p: _Position) -> list[int]:
        """The not_followed_by stages whose events discard a match waiting at ``p``."""
        s = self.stages[p.stage]
        out: list[int] = []
        if p.count == 0 and not p.skipped and not p.cleared:
            out += self.negation_scope(p.stage)
        if p.skipped and (p.count == 0 or not s.looping):
            out += self.negation_scope(p.stage)
        inner = p.count >= 1 and not (p.skipped and not s.looping)
        following = p.stage + 1
        if inner and following < len(self.stages) and self.stages[following].kind == NOT_FOLLOW:
            out.append(following)
        return out

    def previous_window(self, p: _Position) -> int | None:
        """The PREVIOUS_AND_CURRENT window of a match waiting at ``p``, if any."""
        if p.copy or p.cleared or p.kind == FINAL:
            return None
        s = self.stages[p.stage]
        if p.kind == STAGE and (p.count > 0 or p.skipped):
            return None
        return s.previous_window

    # -- one event -----------------------------------------------------------------------

    def refuses(self, p: _Position, event: Any, ctx: _Context) -> bool:
        """Does the greedy stage before ``p`` claim ``event`` (so ``p`` can do nothing)?"""
        return p.guard is not None and _holds(self.stages[p.guard].condition, event, ctx)

    def choices(self, p: _Position, event: Any, ctx: _Context, out: _Choices) -> list[_Position]:
        """Add what a match at ``p`` can do with ``event`` to ``out``; return the positions it
        can proceed to (whose choices apply too)."""
        if p.kind == FINAL or self.refuses(p, event, ctx):
            return []
        s = self.stages[p.stage]
        if p.kind in (WAIT_NOT_NEXT, PENDING):
            if _holds(s.condition, event, ctx):
                out.violates_negation = True
            elif p.kind == PENDING:
                out.skips.append(p)
            elif self.after(p.stage).kind == FINAL:
                out.skips.append(_FINAL)  # a trailing not_next completes without the event
            return self.proceeds(p, event, ctx)
        # a normal stage
        for j in self.negations_at(p):
            if _holds(self.stages[j].condition, event, ctx):
                out.violates_negation = True
        if (s.until is None or not _holds(s.until, event, ctx)) and _holds(s.condition, event, ctx):
            out.takes.append((s.name, self.after_take(s, p.count)))
        skip = self.skip_condition(s, p.count)
        if skip is not None and skip(event, ctx):
            if p.skipped or not self.may_proceed(s, p.count):
                out.skips.append(p)
            else:
                out.skips.append(_Position(STAGE, p.stage, p.count, skipped=True))
        return self.proceeds(p, event, ctx)

    def proceeds(self, p: _Position, event: Any, ctx: _Context) -> list[_Position]:
        """The positions a match at ``p`` moves on to without consuming ``event``.

        Only the conditions that decide this are evaluated (as Flink evaluates only the
        proceed edges when it checks whether a match just extended is complete).
        """
        if p.kind == FINAL or self.refuses(p, event, ctx):
            return []
        s = self.stages[p.stage]
        if p.kind == PENDING:
            return []
        if p.kind == WAIT_NOT_NEXT:
            nxt = self.after(p.stage)
            if nxt.kind == FINAL or _holds(s.condition, event, ctx):
                return []
            return [nxt]
        if p.skipped or not self.may_proceed(s, p.count):
            return []
        if s.guards_next:
            if s.until is not None and _holds(s.until, event, ctx):
                return [self.after(s.index, copy=True, cleared=p.cleared)]
            return [self.after(s.index, guard=s.index, cleared=p.cleared)]
        return [self.after(s.index, cleared=p.cleared)]

    def after_take(self, s: _Stage, count: int) -> _Position:
        """Where a match goes when stage ``s`` takes its ``count + 1``-th event.

        Taking an event into an optional stage ends the scope of the negations before it.
        """
        cleared = s.optional and bool(self.negation_scope(s.index))
        if s.high is None or count + 1 < s.high:
            return _Position(STAGE, s.index, count + 1, cleared=cleared)
        return self.after(s.index, guard=s.index if s.guards_next else None, cleared=cleared)

    def completes(self, p: _Position, event: Any, ctx: _Context) -> bool:
        """Can a match that has just moved to ``p`` proceed to the end on ``event``?"""
        stack = [p]
        while stack:
            current = stack.pop()
            if current.kind == FINAL:
                return True
            stack.extend(self.proceeds(current, event, ctx))
        return False


# -- runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceMatch:
    """A complete or timed-out match: stage name -> matched events, in pattern order."""

    events: Mapping[str, Sequence[Any]]
    timeout_ts: int | None = None


@dataclass
class ReferenceOutcome:
    """What one reference run produced: matches in emission order, and timed-out matches."""

    matches: list[ReferenceMatch]
    timeouts: list[ReferenceMatch]


def _as_mapping(taken: Sequence[_Taken]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for t in taken:
        out.setdefault(t.stage, []).append(t.event)
    return out


Chooser = Callable[[Sequence[ReferenceMatch], int], int]
"""``choose(candidates, emitted)`` picks one of equally early complete matches (see "Order" in
the module docstring); ``emitted`` is the number of matches emitted before."""


class _Run:
    """One pass over a stream (one key, event time)."""

    def __init__(self, rules: _Interpreter, choose: Chooser, max_partial: int) -> None:
        self.rules = rules
        self.choose = choose
        self.max_partial = max_partial
        self.partial: list[_Partial] = []
        self.held: list[_Partial] = []
        self.outcome = ReferenceOutcome([], [])

    def feed(self, ordered: Sequence[tuple[int, Any]]) -> ReferenceOutcome:
        previous_ts: int | None = None
        for seq, (ts, event) in enumerate(ordered):
            if ts != previous_ts:
                self.advance(ts)
                previous_ts = ts
            self.process(event, ts, seq)
        self.advance(END_OF_TIME)
        return self.outcome

    def advance(self, now: int) -> None:
        rules = self.rules
        alive, done = [], []
        for m in self.partial:
            own = rules.previous_window(m.position)
            by_previous = own is not None and now - m.prev_ts >= own
            by_first = rules.window is not None and now - m.start_ts >= rules.window
            if not (by_previous or by_first):
                alive.append(m)
            elif m.position.kind == PENDING:
                done.append(m)  # the negation's window passed: a complete match
            else:
                if by_previous and own is not None:
                    ends = m.prev_ts + own
                else:
                    assert rules.window is not None
                    ends = m.start_ts + rules.window
                self.outcome.timeouts.append(ReferenceMatch(_as_mapping(m.taken), ends))
        self.partial = alive
        self.emit(done)

    def process(self, event: Any, ts: int, seq: int) -> None:
        rules = self.rules
        alive: list[_Partial] = []
        done: list[_Partial] = []
        start = _Partial(rules.start, (), -1)
        for m in [start, *self.partial]:
            is_start = m is start
            ctx = _Context(m.taken, ts)
            choices = _Choices()
            stack = [m.position]
            while stack:
                stack.extend(rules.choices(stack.pop(), event, ctx, choices))
            continuing: list[_Partial] = []
            if not is_start:
                for target in choices.skips:
                    moved = replace(m, position=target)
                    (done if target.kind == FINAL else continuing).append(moved)
            for stage, target in choices.takes:
                grown = _Partial(target, (*m.taken, _Taken(stage, event, ts, seq)), ts)
                if target.kind == FINAL:
                    done.append(grown)
                    continue
                continuing.append(grown)
                if rules.completes(target, event, ctx):
                    done.append(replace(grown, position=_FINAL))
            if not choices.violates_negation:
                alive.extend(continuing)
        if len(alive) > self.max_partial:
            raise ReferenceLimitError(f"more than {self.max_partial} partial matches")
        self.partial = alive
        self.emit(done)

    def emit(self, done: Sequence[_Partial]) -> None:
        self.held.extend(done)
        skip = self.rules.skip
        while self.held:
            first = min(m.start for m in self.held)
            if skip.skips and any(m.start < first for m in self.partial):
                return  # an earlier partial match may still complete
            tied = [m for m in self.held if m.start == first]
            if skip.skips:
                distinct: list[_Partial] = []
                for m in tied:
                    if all(m.taken != d.taken for d in distinct):
                        distinct.append(m)
                index = 0
                if len(distinct) > 1:
                    candidates = [ReferenceMatch(_as_mapping(m.taken)) for m in distinct]
                    index = self.choose(candidates, len(self.outcome.matches))
                chosen = distinct[index]
                self.held.remove(chosen)
                self.prune(chosen)
                batch = [chosen]
            else:
                batch = tied
                self.held = [m for m in self.held if m.start != first]
            for m in batch:
                self.outcome.matches.append(ReferenceMatch(_as_mapping(m.taken)))

    def prune(self, match: _Partial) -> None:
        skip = self.rules.skip
        kind = skip.kind
        seqs = [t.seq for t in match.taken]
        if kind is SkipKind.SKIP_PAST_LAST_EVENT:
            pruning: int | None = max(seqs)
        elif kind is SkipKind.SKIP_TO_NEXT:
            pruning = min(seqs)
        else:
            named = [t.seq for t in match.taken if t.stage == skip.stage]
            if not named:
                return
            pruning = named[0] if kind is SkipKind.SKIP_TO_FIRST else named[-1]
        assert pruning is not None
        strict = kind in (SkipKind.SKIP_TO_FIRST, SkipKind.SKIP_TO_LAST)

        def doomed(m: _Partial) -> bool:
            return m.start < pruning if strict else m.start <= pruning

        self.partial = [m for m in self.partial if not doomed(m)]
        self.held = [m for m in self.held if not doomed(m)]


class ReferenceMatcher:
    """The reference semantics for one pattern (one key, event time).

    >>> from fraudcep import Pattern
    >>> p = Pattern.begin("a").where(lambda e: e["k"] == "a").followed_by("b").where(
    ...     lambda e: e["k"] == "b")
    >>> out = ReferenceMatcher(p).run([{"k": "a", "ts": 1}, {"k": "b", "ts": 2}])
    >>> [dict(m.events) for m in out.matches]
    [{'a': [{'k': 'a', 'ts': 1}], 'b': [{'k': 'b', 'ts': 2}]}]

    Raises :class:`UnsupportedPatternError` for a pattern outside the subset and
    :class:`~fraudcep.MalformedPatternError` for one Flink refuses to compile.
    """

    def __init__(self, pattern: Pattern, *, max_partial_matches: int = 50_000) -> None:
        self._rules = _Interpreter(pattern)
        self.max_partial_matches = max_partial_matches

    def run(
        self,
        events: Iterable[Any],
        *,
        timestamp: str | Callable[[Any], int] = "ts",
        choose: Chooser | None = None,
    ) -> ReferenceOutcome:
        """Match ``events`` (given in arrival order) and end the input.

        ``choose(candidates, emitted)`` picks among equally early complete matches when a skip
        strategy lets only one survive (default: the first, in this matcher's order).
        """
        read = (lambda e: e[timestamp]) if isinstance(timestamp, str) else timestamp
        arrived = [(timestamp_ms(read(e)), i, e) for i, e in enumerate(events)]
        ordered = [(ts, e) for ts, _, e in sorted(arrived, key=lambda x: (x[0], x[1]))]
        run = _Run(self._rules, choose or (lambda candidates, emitted: 0), self.max_partial_matches)
        return run.feed(ordered)


# -- cases --------------------------------------------------------------------------------


def _render(match: ReferenceMatch) -> list[list[Any]]:
    return [[name, [e["id"] for e in evs]] for name, evs in match.events.items()]


def _result(case_id: Any, outcome: ReferenceOutcome) -> Result:
    return {
        "id": case_id,
        "error": None,
        "matches": [_render(m) for m in outcome.matches],
        "timeouts": [{"timeout_ts": m.timeout_ts, "events": _render(m)} for m in outcome.timeouts],
    }


def _matcher_for(case: Case) -> ReferenceMatcher | Result:
    try:
        pattern = build_pattern(case)
    except (MalformedPatternError, TypeError, ValueError) as exc:
        return error_result(case.get("id"), f"{type(exc).__name__}: {exc}")
    try:
        return ReferenceMatcher(pattern)
    except UnsupportedPatternError:
        raise
    except MalformedPatternError as exc:
        return error_result(case.get("id"), f"{type(exc).__name__}: {exc}")


def reference_outcomes(case: Case, *, limit: int = 64) -> list[Result]:
    """Every result the reference semantics allow for ``case`` (one, unless a skip strategy
    has to choose among equally early matches), in the shape of
    :func:`~fraudcep.testing.cases.run_case`.

    Raises :class:`UnsupportedPatternError` outside the subset and
    :class:`ReferenceLimitError` when there are more than ``limit`` outcomes.
    """
    matcher = _matcher_for(case)
    if not isinstance(matcher, ReferenceMatcher):
        return [matcher]
    events = list(case.get("events") or ())
    results: list[Result] = []
    prefix: list[int] = []
    while True:
        taken: list[tuple[int, int]] = []  # (choice, options) at each choice point

        def choose(
            candidates: Sequence[ReferenceMatch],
            emitted: int,
            taken: list[tuple[int, int]] = taken,
            prefix: list[int] = prefix,
        ) -> int:
            pick = prefix[len(taken)] if len(taken) < len(prefix) else 0
            taken.append((pick, len(candidates)))
            return pick

        results.append(_result(case.get("id"), matcher.run(events, choose=choose)))
        if len(results) > limit:
            raise ReferenceLimitError(f"more than {limit} outcomes")
        # the next choice sequence, depth first
        while taken and taken[-1][0] + 1 >= taken[-1][1]:
            taken.pop()
        if not taken:
            return results
        prefix = [c for c, _ in taken[:-1]] + [taken[-1][0] + 1]


def reference_case(case: Case) -> Result:
    """The reference result of ``case`` (the first allowed outcome)."""
    matcher = _matcher_for(case)
    if not isinstance(matcher, ReferenceMatcher):
        return matcher
    return _result(case.get("id"), matcher.run(list(case.get("events") or ())))


def check_result(case: Case, result: Mapping[str, Any]) -> list[str]:
    """Differences between ``result`` and the reference semantics of ``case`` (empty: the
    result is one the semantics allow, up to the implementation-defined order).

    Where the semantics leave a choice (which of several equally early matches a skip strategy
    keeps), the reference follows ``result``: it keeps the candidate that ``result`` emits
    next. So a single reference run decides.
    """
    matcher = _matcher_for(case)
    events = list(case.get("events") or ())
    if not isinstance(matcher, ReferenceMatcher):
        return compare(result, matcher, events=events)
    follow = guided_by(list(result.get("matches") or ()), _render)
    expected = _result(case.get("id"), matcher.run(events, choose=follow))
    return compare(result, expected, events=events)


def guided_by(expected: Sequence[Any], render: Callable[[ReferenceMatch], Any]) -> Chooser:
    """A chooser that resolves ties the way ``expected`` (a list of rendered matches in
    emission order) did: it keeps the candidate that ``expected`` emits next."""

    def follow(candidates: Sequence[ReferenceMatch], emitted: int) -> int:
        rendered = [render(c) for c in candidates]
        for wanted in expected[emitted:]:
            if wanted in rendered:
                return rendered.index(wanted)
        return 0

    return follow
