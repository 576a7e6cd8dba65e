"""The pattern API: Flink CEP's ``Pattern`` builder, in snake_case, as immutable values.

Every builder call returns a new :class:`Pattern`; the last stage is the one that ``where``,
quantifiers and ``within`` apply to, exactly as in Flink where those calls modify the pattern
returned by the latest ``begin``/``next``/``followed_by``. The checks Flink makes while a
pattern is being built are made here at the same moment, with the same outcome.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Union

import attrs

from fraudcep.errors import ConfigurationError, MalformedPatternError
from fraudcep.pattern.conditions import And, Condition, Or, Predicate
from fraudcep.pattern.skip import SkipStrategy
from fraudcep.timeutil import duration_ms

GROUP_NAME = "GroupPattern"
"""The name Flink gives a group stage; it never appears in a match."""

MAX_QUANTIFIER_COUNT = 1_000
"""The largest count ``times``, ``times_or_more`` and the bounds of ``times(low, high)`` take.

A quantifier is unrolled into one automaton state per count (as Flink does), so counts far
beyond any real rule would only cost memory and time."""

MAX_UNROLLED_STAGES = 10_000
"""The most stage copies a pattern may unroll to: a stage counts 1, ``times(n)`` and
``times(low, n)`` count ``n``, ``times_or_more(n)`` counts ``n + 1``, and a quantified group
multiplies the count of its stages. This bounds the automaton's states (and the time to build
it) however quantifiers are nested."""

MAX_STAGES = 200
"""The most stages a pattern has, counting the stages inside groups (and each group)."""

MAX_CONDITIONS_PER_STAGE = 100
"""The most ``where``/``or_where`` calls one stage takes (each call nests the condition one
level deeper)."""


class WithinType(enum.Enum):
    """What a ``within`` window bounds."""

    FIRST_AND_LAST = "first_and_last"
    """The whole match: from its first to its last event (the default)."""
    PREVIOUS_AND_CURRENT = "previous_and_current"
    """The gap between this stage's event and the event matched just before it."""


class Consuming(enum.Enum):
    """How a stage consumes events: Flink's ``Quantifier.ConsumingStrategy``."""

    STRICT = "strict"
    SKIP_TILL_NEXT = "skip_till_next"
    SKIP_TILL_ANY = "skip_till_any"
    NOT_FOLLOW = "not_follow"
    NOT_NEXT = "not_next"


class QuantifierKind(enum.Enum):
    SINGLE = "single"
    LOOPING = "looping"
    TIMES = "times"


@attrs.frozen
class Quantifier:
    """How many events a stage takes, and how they relate to each other."""

    kind: QuantifierKind
    consuming: Consuming
    inner: Consuming = Consuming.SKIP_TILL_NEXT
    optional: bool = False
    greedy: bool = False

    @property
    def negated(self) -> bool:
        return self.consuming in (Consuming.NOT_FOLLOW, Consuming.NOT_NEXT)


@attrs.frozen
class Times:
    """Bounds of a quantified stage, and the optional window between its consecutive events."""

    low: int
    high: int
    window_ms: int | None = None


@attrs.frozen
class Stage:
    """One node of a pattern: a named single/quantified stage, or a group."""

    name: str
    quantifier: Quantifier
    condition: Condition | None = None
    until: Condition | None = None
    times: Times | None = None
    window_first_last_ms: int | None = None
    window_previous_current_ms: int | None = None
    group: Pattern | None = None

    def window(self, within_type: WithinType) -> int | None:
        if within_type is WithinType.FIRST_AND_LAST:
            return self.window_first_last_ms
        return self.window_previous_current_ms


ConditionFn = Callable[..., Any]
StageRef = Union[str, "Pattern"]


@attrs.frozen
class Pattern:
    """A CEP pattern: an immutable sequence of stages plus its after-match skip strategy."""

    stages: tuple[Stage, ...]
    skip_strategy: SkipStrategy = attrs.field(factory=SkipStrategy.no_skip)
    unrolled_stages: int = attrs.field(init=False, eq=False, repr=False)
    """The stage copies this pattern unrolls to (see :data:`MAX_UNROLLED_STAGES`)."""
    stage_count: int = attrs.field(init=False, eq=False, repr=False)
    """The stages of this pattern, groups and their stages included (:data:`MAX_STAGES`)."""

    def __attrs_post_init__(self) -> None:
        count = sum(1 if s.group is None else 1 + s.group.stage_count for s in self.stages)
        if count > MAX_STAGES:
            raise MalformedPatternError(
                f"the pattern has {count} stages (groups and their stages included); at most "
                f"{MAX_STAGES} are allowed"
            )
        object.__setattr__(self, "stage_count", count)
        size = sum(_unrolled(stage) for stage in self.stages)
        if size > MAX_UNROLLED_STAGES:
            raise MalformedPatternError(
                f"the pattern unrolls to {size:,} stage copies (quantifiers count their events, "
                f"and multiply through groups); at most {MAX_UNROLLED_STAGES:,} are allowed"
            )
        object.__setattr__(self, "unrolled_stages", size)

    # -- starting ------------------------------------------------------------------------

    @classmethod
    def begin(cls, name: StageRef, skip: SkipStrategy | None = None) -> Pattern:
        """Start a pattern with a stage called ``name`` (or with a group pattern)."""
        strategy = skip if skip is not None else SkipStrategy.no_skip()
        if not isinstance(strategy, SkipStrategy):
            raise TypeError(f"skip must be a SkipStrategy, got {strategy!r}")
        return cls((_new_stage(name, Consuming.STRICT),), strategy)

    # -- appending stages ----------------------------------------------------------------

    def next(self, name: StageRef) -> Pattern:
        """Append a stage that must match the very next event (strict contiguity)."""
        return self._append(name, Consuming.STRICT)

    def followed_by(self, name: StageRef) -> Pattern:
        """Append a stage matched by a later event; non-matching events in between are skipped."""
        return self._append(name, Consuming.SKIP_TILL_NEXT)

    def followed_by_any(self, name: StageRef) -> Pattern:
        """Append a stage matched by any later event (non-deterministic relaxed contiguity)."""
        return self._append(name, Consuming.SKIP_TILL_ANY)

    def not_next(self, name: str) -> Pattern:
        """Append a negation: the next event must not match this stage."""
        self._check_negation_allowed()
        return self._append(name, Consuming.NOT_NEXT, allow_group=False)

    def not_followed_by(self, name: str) -> Pattern:
        """Append a negation: no event matching this stage may occur before the next stage."""
        self._check_negation_allowed()
        return self._append(name, Consuming.NOT_FOLLOW, allow_group=False)

    # -- conditions ----------------------------------------------------------------------

    def where(self, condition: ConditionFn) -> Pattern:
        """AND a condition ``f(event)`` or ``f(event, ctx)`` onto the last stage."""
        stage = self._plain_last("where")
        _check_conditions(stage)
        new = Predicate.of(condition)
        combined = new if stage.condition is None else And(stage.condition, new)
        return self._replace_last(attrs.evolve(stage, condition=combined))

    def or_where(self, condition: ConditionFn) -> Pattern:
        """OR a condition onto the last stage (Flink's ``or``)."""
        stage = self._plain_last("or_where")
        _check_conditions(stage)
        new = Predicate.of(condition)
        combined = new if stage.condition is None else Or(stage.condition, new)
        return self._replace_last(attrs.evolve(stage, condition=combined))

    def until(self, condition: ConditionFn) -> Pattern:
        """Stop a looping stage at the first event that satisfies ``condition``."""
        stage = self.stages[-1]
        if stage.until is not None:
            raise MalformedPatternError("Only one until condition can be applied.")
        if stage.quantifier.kind is not QuantifierKind.LOOPING:
            raise MalformedPatternError(
                f"stage {stage.name!r}: until() applies only to looping stages "
                "(one_or_more / times_or_more), and must come after the quantifier"
            )
        return self._replace_last(attrs.evolve(stage, until=Predicate.of(condition)))

    # -- time ----------------------------------------------------------------------------

    def within(
        self,
        duration: timedelta | int,
        within_type: WithinType = WithinType.FIRST_AND_LAST,
    ) -> Pattern:
        """Bound the match in event (or processing) time; the window end is exclusive."""
        ms = _positive_ms(duration, "within")
        stage = self.stages[-1]
        if within_type is WithinType.FIRST_AND_LAST:
            stage = attrs.evolve(stage, window_first_last_ms=ms)
        elif within_type is WithinType.PREVIOUS_AND_CURRENT:
            stage = attrs.evolve(stage, window_previous_current_ms=ms)
        else:
            raise TypeError(f"within_type must be a WithinType, got {within_type!r}")
        return self._replace_last(stage)

    # -- quantifiers ---------------------------------------------------------------------

    def one_or_more(self, window: timedelta | int | None = None) -> Pattern:
        """The last stage matches one or more events (a looping stage)."""
        return self.times_or_more(1, window)

    def times_or_more(self, times: int, window: timedelta | int | None = None) -> Pattern:
        """The last stage matches at least ``times`` events (a looping stage)."""
        stage = self._quantifiable_last()
        low = _count(times, "times_or_more")
        return self._replace_last(
            attrs.evolve(
                stage,
                quantifier=Quantifier(QuantifierKind.LOOPING, stage.quantifier.consuming),
                times=Times(low, low, _optional_ms(window)),
            )
        )

    def times(
        self, low: int, high: int | None = None, window: timedelta | int | None = None
    ) -> Pattern:
        """The last stage matches exactly ``low`` events, or between ``low`` and ``high``."""
        stage = self._quantifiable_last()
        optional = False
        if high is None:
            low = _count(low, "times")
            high = low
        else:
            if not isinstance(low, int) or isinstance(low, bool) or low < 0:
                raise MalformedPatternError(f"times({low!r}, {high!r}): bounds must be >= 0")
            if low == 0:
                optional, low = True, 1
            if not isinstance(high, int) or isinstance(high, bool) or high < low:
                raise MalformedPatternError(
                    f"times(): the upper bound {high!r} must be an int >= the lower bound {low}"
                )
            if high > MAX_QUANTIFIER_COUNT:
                raise MalformedPatternError(
                    f"times({low}, {high}): the upper bound is over the limit of "
                    f"{MAX_QUANTIFIER_COUNT:,}"
                )
        return self._replace_last(
            attrs.evolve(
                stage,
                quantifier=Quantifier(
                    QuantifierKind.TIMES, stage.quantifier.consuming, optional=optional
                ),
                times=Times(low, high, _optional_ms(window)),
            )
        )

    def optional(self) -> Pattern:
        """The last stage may match no event at all."""
        stage = self.stages[-1]
        if len(self.stages) > 1 and self.stages[-2].quantifier.greedy:
            raise MalformedPatternError("Optional pattern cannot be preceded by greedy pattern")
        q = stage.quantifier
        if q.optional:
            raise MalformedPatternError(f"stage {stage.name!r}: optional() already applied")
        if q.negated:
            raise MalformedPatternError(f"stage {stage.name!r}: a NOT stage cannot be optional")
        return self._replace_last(attrs.evolve(stage, quantifier=attrs.evolve(q, optional=True)))

    def greedy(self) -> Pattern:
        """A quantified stage takes as many events as it can before the next stage starts."""
        stage = self.stages[-1]
        q = stage.quantifier
        if q.negated:
            raise MalformedPatternError("Option not applicable to NOT pattern")
        if stage.group is not None:
            raise MalformedPatternError("greedy() is not applicable to a group pattern")
        if q.inner is Consuming.SKIP_TILL_ANY:
            raise MalformedPatternError(
                f"stage {stage.name!r}: greedy() cannot be combined with allow_combinations()"
            )
        if q.kind is QuantifierKind.SINGLE:
            raise MalformedPatternError(
                f"stage {stage.name!r}: greedy() needs a quantifier (times, one_or_more, ...)"
            )
        return self._replace_last(attrs.evolve(stage, quantifier=attrs.evolve(q, greedy=True)))

    def consecutive(self) -> Pattern:
        """Events of a quantified stage must follow each other with nothing in between."""
        return self._inner_contiguity(Consuming.STRICT, "consecutive")

    def allow_combinations(self) -> Pattern:
        """Events of a quantified stage combine in every way (relaxed, non-deterministic)."""
        return self._inner_contiguity(Consuming.SKIP_TILL_ANY, "allow_combinations")

    def _inner_contiguity(self, inner: Consuming, what: str) -> Pattern:
        stage = self.stages[-1]
        q = stage.quantifier
        if q.kind is QuantifierKind.SINGLE:
            raise MalformedPatternError(
                f"stage {stage.name!r}: {what}() needs a quantifier (times, one_or_more, ...)"
            )
        if q.inner is inner:
            raise MalformedPatternError(f"stage {stage.name!r}: {what}() already applied")
        if q.inner is not Consuming.SKIP_TILL_NEXT:
            raise MalformedPatternError(
                "You can apply either allow_combinations() or consecutive(), not both"
            )
        return self._replace_last(attrs.evolve(stage, quantifier=attrs.evolve(q, inner=inner)))

    # -- reading -------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The names of all non-group stages, groups flattened, in pattern order."""
        out: list[str] = []
        for stage in self.stages:
            if stage.group is not None:
                out.extend(stage.group.names)
            else:
                out.append(stage.name)
        return out

    @property
    def first_last_window_ms(self) -> int | None:
        """The smallest FIRST_AND_LAST window of any stage (groups included), if any."""
        windows = [w for w in _all_windows(self, WithinType.FIRST_AND_LAST) if w is not None]
        return min(windows) if windows else None

    # -- internals -----------------------------------------------------------------------

    def _append(self, name: StageRef, consuming: Consuming, allow_group: bool = True) -> Pattern:
        if isinstance(name, Pattern) and not allow_group:
            raise MalformedPatternError("a negation cannot be a group pattern")
        return Pattern((*self.stages, _new_stage(name, consuming)), self.skip_strategy)

    def _replace_last(self, stage: Stage) -> Pattern:
        return Pattern((*self.stages[:-1], stage), self.skip_strategy)

    def _plain_last(self, what: str) -> Stage:
        stage = self.stages[-1]
        if stage.group is not None:
            raise MalformedPatternError(f"{what}() is not applicable to a group pattern")
        return stage

    def _quantifiable_last(self) -> Stage:
        stage = self.stages[-1]
        if stage.quantifier.negated:
            raise MalformedPatternError("Option not applicable to NOT pattern")
        if stage.quantifier.kind is not QuantifierKind.SINGLE:
            raise MalformedPatternError(
                f"stage {stage.name!r}: a quantifier was already applied "
                f"({stage.quantifier.kind.value})"
            )
        return stage

    def _check_negation_allowed(self) -> None:
        if self.stages[-1].quantifier.optional:
            raise MalformedPatternError(
                "a negation right after an optional stage is not supported; "
                "write two patterns, one with and one without the optional stage"
            )

    def __repr__(self) -> str:
        return f"Pattern({describe(self)})"


def describe(pattern: Pattern) -> str:
    """A compact, readable rendering of a pattern's structure (conditions omitted)."""
    parts = []
    for i, stage in enumerate(pattern.stages):
        op = "begin" if i == 0 else stage.quantifier.consuming.value
        body = f"({describe(stage.group)})" if stage.group is not None else stage.name
        q = stage.quantifier
        if stage.times is not None:
            high = "inf" if q.kind is QuantifierKind.LOOPING else str(stage.times.high)
            body += f"{{{stage.times.low},{high}}}"
        flags = [f for f, on in (("?", q.optional), ("greedy", q.greedy)) if on]
        if q.inner is not Consuming.SKIP_TILL_NEXT:
            flags.append(q.inner.value)
        if flags:
            body += "[" + ",".join(flags) + "]"
        parts.append(f"{op} {body}")
    return " ".join(parts) + f" / {pattern.skip_strategy}"


def _new_stage(name: StageRef, consuming: Consuming) -> Stage:
    if isinstance(name, Pattern):
        return Stage(GROUP_NAME, Quantifier(QuantifierKind.SINGLE, consuming), group=name)
    if not isinstance(name, str) or not name:
        raise MalformedPatternError(f"a stage name must be a non-empty string, got {name!r}")
    if ":" in name:
        raise MalformedPatternError(f"stage name {name!r}: ':' is reserved for internal names")
    return Stage(name, Quantifier(QuantifierKind.SINGLE, consuming))


def _count(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MalformedPatternError(f"{what}({value!r}): the count must be an int > 0")
    if value > MAX_QUANTIFIER_COUNT:
        raise MalformedPatternError(
            f"{what}({value}): the count is over the limit of {MAX_QUANTIFIER_COUNT:,}"
        )
    return value


def _unrolled(stage: Stage) -> int:
    """The stage copies ``stage`` unrolls to (``MAX_UNROLLED_STAGES``)."""
    inner = 1 if stage.group is None else stage.group.unrolled_stages
    times = stage.times
    if times is None:
        return inner
    if stage.quantifier.kind is QuantifierKind.LOOPING:
        return inner * (times.low + 1)
    return inner * times.high


def _condition_count(condition: Condition | None) -> int:
    count = 0
    while isinstance(condition, And | Or):
        count += 1
        condition = condition.left
    return count + (condition is not None)


def _check_conditions(stage: Stage) -> None:
    if _condition_count(stage.condition) >= MAX_CONDITIONS_PER_STAGE:
        raise MalformedPatternError(
            f"stage {stage.name!r}: more than {MAX_CONDITIONS_PER_STAGE} where()/or_where() "
            "conditions"
        )


def _positive_ms(value: timedelta | int, what: str) -> int:
    try:
        ms = duration_ms(value, what)
    except ConfigurationError as exc:
        raise MalformedPatternError(str(exc)) from None
    if ms <= 0:
        raise MalformedPatternError(f"{what}: the window must be longer than 0 ms, got {ms} ms")
    return ms


def _optional_ms(value: timedelta | int | None) -> int | None:
    return None if value is None else _positive_ms(value, "window")


def _all_windows(pattern: Pattern, within_type: WithinType) -> list[int | None]:
    out: list[int | None] = []
    for stage in pattern.stages:
        out.append(stage.window(within_type))
        if stage.group is not None:
            out.extend(_all_windows(stage.group, within_type))
    return out
