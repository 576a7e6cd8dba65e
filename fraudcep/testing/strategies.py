"""Hypothesis strategies (and a seeded plain-``random`` twin) for testing CEP semantics.

Two families live here:

* **Differential cases** in the JSON format of :mod:`fraudcep.testing.cases`:
  :func:`pattern_specs`, :func:`event_streams`, :func:`cases`, and :func:`random_case`, which
  draws the same distribution from a ``random.Random`` (for batches of thousands of cases, as
  the Flink differential test needs, where hypothesis's ``@given`` would be awkward).
* **Payment streams** for users writing property tests of their own rules: :func:`payments`,
  :func:`payment_streams` and the generic :func:`keyed_streams`.

Everything is bounded so that one case stays cheap to run: at most ``max_stages`` stages,
small windows, short streams (and shorter ones, at most :data:`COMBINATORIAL_MAX_EVENTS`
events, when the pattern uses ``followed_by_any`` or ``allow_combinations``, whose matches
grow combinatorially). Every choice is drawn so that hypothesis shrinks towards the simplest
pattern: fewer stages, single stages, ``followed_by``, no options, ``no_skip``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

__all__ = [
    "COMBINATORIAL_MAX_EVENTS",
    "KINDS",
    "MALFORMATIONS",
    "cases",
    "event_streams",
    "events",
    "keyed_streams",
    "pattern_specs",
    "payment_streams",
    "payments",
    "random_case",
    "random_events",
    "random_pattern_spec",
    "uses_combinations",
]

T = TypeVar("T")

KINDS: tuple[str, ...] = ("a", "b", "c", "d")
"""The event kinds of generated cases."""

COMBINATORIAL_MAX_EVENTS = 10
"""The longest stream generated for a pattern with ``followed_by_any``/``allow_combinations``."""

DEFAULT_MAX_EVENTS = 16
"""The longest stream generated for other patterns."""

MALFORMATIONS: tuple[str, ...] = (
    "duplicate_name",
    "skip_unknown_stage",
    "skip_group_stage",
    "negation_after_optional",
    "optional_after_greedy",
    "greedy_single",
    "inner_on_single",
    "greedy_combinations",
    "until_not_looping",
    "trailing_not_followed_by_without_window",
    "previous_window_too_long",
    "optional_twice",
    "zero_times",
)
"""The ways a generated pattern can be malformed (each one is rejected by Flink's builder)."""

Spec = dict[str, Any]


class Chooser(Protocol):
    """The source of every choice the generators make (hypothesis data or ``random``)."""

    def integer(self, low: int, high: int) -> int:
        """An int in ``[low, high]``; shrinks towards ``low``."""
        ...

    def choice(self, options: Sequence[T]) -> T:
        """One of ``options``; shrinks towards the first."""
        ...

    def flag(self, percent: int) -> bool:
        """True with probability ``percent`` %; shrinks towards False."""
        ...


class _DataChooser:
    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        value: int = self._draw(st.integers(low, high))
        return value

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def flag(self, percent: int) -> bool:
        return self.integer(0, 99) >= 100 - percent


class _RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self._rng.randrange(len(options))]

    def flag(self, percent: int) -> bool:
        return self._rng.randrange(100) < percent


# -- conditions -------------------------------------------------------------------------------


def _condition(ch: Chooser, stages: Sequence[str], depth: int = 0) -> Spec:
    options = ["kind", "kind", "kind", "cmp", "not_kind", "true", "sum_lt", "or", "and"]
    if depth > 0:
        options = options[:6]
    what = ch.choice(options)
    if what == "kind":
        return {"type": "kind", "value": ch.choice(KINDS)}
    if what == "not_kind":
        return {"type": "not", "cond": {"type": "kind", "value": ch.choice(KINDS)}}
    if what == "cmp":
        return {
            "type": "cmp",
            "op": ch.choice(("<", ">", "<=", ">=", "==")),
            "value": ch.integer(0, 9),
        }
    if what == "true":
        return {"type": "true"}
    if what == "sum_lt":
        if not stages:
            return {"type": "kind", "value": ch.choice(KINDS)}
        return {
            "type": "and",
            "conds": [
                {"type": "kind", "value": ch.choice(KINDS)},
                {"type": "sum_lt", "stage": ch.choice(stages), "limit": ch.integer(1, 25)},
            ],
        }
    parts = [_condition(ch, stages, depth + 1) for _ in range(2)]
    return {"type": what, "conds": parts}


def _conditions(ch: Chooser, stages: Sequence[str]) -> list[list[Any]]:
    out: list[list[Any]] = [["where", _condition(ch, stages)]]
    if ch.flag(20):
        out.append([ch.choice(("or", "where")), _condition(ch, stages)])
    return out


# -- patterns ---------------------------------------------------------------------------------


class _Names:
    def __init__(self) -> None:
        self.used: list[str] = []

    def new(self) -> str:
        name = "abcdefghijklmnopqrstuvwxyz"[len(self.used) % 26]
        if len(self.used) >= 26:
            name += str(len(self.used) // 26)
        self.used.append(name)
        return name


def _is_optional(stage: Mapping[str, Any]) -> bool:
    q = stage.get("quantifier") or {}
    return bool(q.get("optional")) or (q.get("kind") == "times" and q.get("from") == 0)


def _is_greedy(stage: Mapping[str, Any]) -> bool:
    return bool((stage.get("quantifier") or {}).get("greedy"))


def _in_negation_scope(before: Sequence[Mapping[str, Any]]) -> bool:
    """Would a stage appended to ``before`` wait inside a not_followed_by's scope?"""
    for stage in reversed(before):
        if stage["op"] == "not_followed_by":
            return True
        if not _is_optional(stage):
            return False
    return False


def _quantifier(ch: Chooser, *, group: bool, after_negation: bool = False) -> Spec | None:
    kinds = ["single", "single", "single", "times", "times_range", "one_or_more", "times_or_more"]
    if after_negation:  # where Flink scopes negations in the most ways
        kinds += ["times_range", "times_range"]
    kind = ch.choice(kinds)
    q: Spec
    if kind == "single":
        return None
    if kind == "times":
        n = ch.integer(1, 3)
        q = {"kind": "times", "from": n, "to": n}
    elif kind == "times_range":
        low = ch.integer(1, 2)
        q = {"kind": "times", "from": low, "to": low + ch.integer(1, 2)}
    elif kind == "one_or_more":
        q = {"kind": "one_or_more"}
    else:
        q = {"kind": "times_or_more", "from": ch.integer(1, 2)}
    q["inner"] = ch.choice(("relaxed", "relaxed", "consecutive", "allow_combinations"))
    if not group and q["inner"] != "allow_combinations" and ch.flag(25):
        q["greedy"] = True
    return q


def _within(ch: Chooser) -> list[Spec]:
    kind = ch.choice(("FIRST_AND_LAST", "PREVIOUS_AND_CURRENT"))
    return [{"ms": ch.integer(1, 20), "type": kind}]


def _sequence(
    ch: Chooser,
    names: _Names,
    *,
    max_stages: int,
    groups: bool,
    subset: bool,
    depth: int,
) -> list[Spec]:
    count = ch.integer(1, max_stages)
    stages: list[Spec] = []
    for index in range(count):
        previous = stages[-1] if stages else None
        last = index == count - 1
        if index == 0:
            op = "begin"
        else:
            ops = ["followed_by", "next", "followed_by_any", "not_followed_by", "not_next"]
            if previous is not None and _is_optional(previous):
                ops = ops[:3]  # a negation after an optional stage is malformed
            if depth > 0 and last:
                ops = [o for o in ops if o != "not_followed_by"]
            op = ch.choice(ops)
        negation = op.startswith("not_")
        stage: Spec
        if groups and not negation and depth < 2 and ch.flag(12 if depth == 0 else 6):
            inner = _sequence(
                ch, names, max_stages=3, groups=groups, subset=subset, depth=depth + 1
            )
            stage = {"name": f"g{len(names.used)}", "op": op, "group": inner}
            q = _quantifier(ch, group=True)
            if q is not None and ch.flag(15) and q["kind"] != "times":
                stage["until"] = _condition(ch, names.used)
            if q is None and ch.flag(20):
                q = {"kind": "single"}
            if q is not None:
                stage["quantifier"] = q
        else:
            stage = {"name": names.new(), "op": op}
            stage["conditions"] = _conditions(ch, names.used)
            after_negation = previous is not None and previous["op"] == "not_followed_by"
            q = None if negation else _quantifier(ch, group=False, after_negation=after_negation)
            if q is not None:
                stage["quantifier"] = q
                if q["kind"] != "times" and ch.flag(20):
                    stage["until"] = _condition(ch, names.used)
        q = stage.get("quantifier")
        may_be_optional = not negation and not (previous is not None and _is_greedy(previous))
        if subset and _is_greedy(stage) and _in_negation_scope(stages):
            may_be_optional = False
        in_scope = _in_negation_scope(stages)
        if may_be_optional and ch.flag(40 if in_scope else 25):
            if q is None:
                q = stage["quantifier"] = {"kind": "single"}
            q["optional"] = True
        if negation and last and op == "not_followed_by" and len(stages) > 1 and ch.flag(20):
            # valid, but the negation is then ignored: Flink only waits for a trailing
            # not_followed_by that has a window of its own
            ch.choice(stages)["within"] = [{"ms": ch.integer(1, 20), "type": "FIRST_AND_LAST"}]
        elif (negation and last and op == "not_followed_by") or ch.flag(22):
            stage["within"] = _within(ch)
        stages.append(stage)
    if depth > 0 and all(_is_optional(s) or s["op"].startswith("not_") for s in stages):
        # a group of optional stages only would loop forever in Flink: make one mandatory
        for s in stages:
            if not s["op"].startswith("not_"):
                s["quantifier"]["optional"] = False
                if s["quantifier"].get("kind") == "times" and s["quantifier"].get("from") == 0:
                    s["quantifier"]["from"] = 1
                break
    return stages


def _fix_windows(stages: list[Spec]) -> None:
    """Keep every PREVIOUS_AND_CURRENT window within the FIRST_AND_LAST one (else malformed)."""
    windows = [w for s in _walk(stages) for w in s.get("within") or ()]
    first_last = [w["ms"] for w in windows if w["type"] == "FIRST_AND_LAST"]
    if not first_last:
        return
    bound = min(first_last)
    for w in windows:
        if w["type"] == "PREVIOUS_AND_CURRENT" and w["ms"] > bound:
            w["ms"] = bound


def _walk(stages: Sequence[Spec]) -> list[Spec]:
    out: list[Spec] = []
    for s in stages:
        out.append(s)
        if s.get("group"):
            out.extend(_walk(s["group"]))
    return out


def _skip(ch: Chooser, stages: Sequence[Spec]) -> Spec:
    kind = ch.choice(
        ("no_skip", "skip_past_last_event", "skip_to_next", "skip_to_first", "skip_to_last")
    )
    if kind in ("skip_to_first", "skip_to_last"):
        named = [s["name"] for s in stages if not s.get("group")]
        if not named:
            return {"type": "skip_past_last_event"}
        return {"type": kind, "name": ch.choice(named)}
    return {"type": kind}


def _malform(ch: Chooser, spec: Spec, names: _Names) -> None:
    """Apply one mistake Flink's builder rejects (where the pattern allows it)."""
    stages: list[Spec] = spec["pattern"]
    plain = [s for s in stages if not s.get("group")]
    how = ch.choice(MALFORMATIONS)
    named = [s for s in _walk(stages) if not s.get("group")]
    if how == "duplicate_name" and len(named) > 1:
        named[-1]["name"] = named[0]["name"]
    elif how == "skip_unknown_stage":
        spec["skip"] = {"type": ch.choice(("skip_to_first", "skip_to_last")), "name": "zz"}
    elif how == "skip_group_stage" and any(s.get("group") for s in stages):
        inner = [s for s in _walk(stages) if s not in stages and not s.get("group")]
        if inner:
            spec["skip"] = {"type": "skip_to_first", "name": ch.choice(inner)["name"]}
    elif how == "negation_after_optional":
        stages.insert(
            0,
            {
                "name": names.new(),
                "op": "begin",
                "conditions": [["where", {"type": "kind", "value": "a"}]],
                "quantifier": {"kind": "single", "optional": True},
            },
        )
        stages[1]["op"] = ch.choice(("not_next", "not_followed_by"))
        stages.append(
            {
                "name": names.new(),
                "op": "followed_by",
                "conditions": [["where", {"type": "kind", "value": "b"}]],
            }
        )
    elif how == "optional_after_greedy" and plain:
        stages.insert(
            0,
            {
                "name": names.new(),
                "op": "begin",
                "conditions": [["where", {"type": "kind", "value": "a"}]],
                "quantifier": {"kind": "one_or_more", "greedy": True},
            },
        )
        stages[1]["op"] = "followed_by" if stages[1]["op"] == "begin" else stages[1]["op"]
        if not stages[1]["op"].startswith("not_"):
            stages[1].setdefault("quantifier", {"kind": "single"})["optional"] = True
    elif how == "greedy_single" and plain:
        s = ch.choice(plain)
        s["quantifier"] = {"kind": "single", "greedy": True}
    elif how == "inner_on_single" and plain:
        s = ch.choice(plain)
        s["quantifier"] = {
            "kind": "single",
            "inner": ch.choice(("consecutive", "allow_combinations")),
        }
    elif how == "greedy_combinations" and plain:
        s = ch.choice(plain)
        s["quantifier"] = {"kind": "one_or_more", "inner": "allow_combinations", "greedy": True}
    elif how == "until_not_looping" and plain:
        s = ch.choice(plain)
        s["until"] = {"type": "kind", "value": "d"}
        s["quantifier"] = ch.choice(({"kind": "times", "from": 1, "to": 2}, {"kind": "single"}))
    elif how == "trailing_not_followed_by_without_window":
        stages.append(
            {
                "name": names.new(),
                "op": "not_followed_by",
                "conditions": [["where", {"type": "kind", "value": "c"}]],
            }
        )
        for s in _walk(stages):
            s.pop("within", None)
    elif how == "previous_window_too_long" and len(plain) > 1:
        plain[0]["within"] = [{"ms": 5, "type": "FIRST_AND_LAST"}]
        plain[-1]["within"] = [{"ms": 9, "type": "PREVIOUS_AND_CURRENT"}]
        plain[-1].pop("quantifier", None)
        plain[-1].pop("until", None)
    elif how == "optional_twice" and plain:
        s = ch.choice(plain)
        if not s["op"].startswith("not_"):
            s["quantifier"] = {"kind": "times", "from": 0, "to": 2, "optional": True}
            s.pop("until", None)
    elif how == "zero_times" and plain:
        s = ch.choice(plain)
        s["quantifier"] = ch.choice(
            ({"kind": "times", "from": 0, "to": 0}, {"kind": "times_or_more", "from": 0})
        )
        s.pop("until", None)
    else:
        _malform_fallback(spec)


def _malform_fallback(spec: Spec) -> None:
    """A mistake every pattern can take: an unknown stage named by the skip strategy."""
    spec["skip"] = {"type": "skip_to_last", "name": "zz"}


def _pattern_spec(
    ch: Chooser, *, max_stages: int, groups: bool, subset: bool, malformed: int
) -> Spec:
    names = _Names()
    stages = _sequence(
        ch, names, max_stages=max_stages, groups=groups and not subset, subset=subset, depth=0
    )
    _fix_windows(stages)
    spec: Spec = {"skip": _skip(ch, stages), "pattern": stages}
    if malformed and ch.flag(malformed):
        _malform(ch, spec, names)
    return spec


def uses_combinations(stages: Sequence[Mapping[str, Any]]) -> bool:
    """True when a stage list has ``followed_by_any`` or ``allow_combinations`` anywhere."""
    for s in stages:
        if s.get("op") == "followed_by_any":
            return True
        if (s.get("quantifier") or {}).get("inner") == "allow_combinations":
            return True
        if s.get("group") and uses_combinations(s["group"]):
            return True
    return False


def _kinds_for(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Event kinds to draw from: the kinds the pattern's conditions mention come first and
    twice as often (so more cases match), then every kind."""
    mentioned: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, Mapping):
            if node.get("type") == "kind" and node.get("value") not in mentioned:
                mentioned.append(node["value"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(spec.get("pattern"))
    return (*mentioned, *mentioned, *KINDS)


def _events_for(spec: Mapping[str, Any], max_size: int) -> int:
    if uses_combinations(spec["pattern"]):
        return min(max_size, COMBINATORIAL_MAX_EVENTS)
    return max_size


# -- event streams ----------------------------------------------------------------------------


def _stream(steps: Sequence[tuple[int, int, str, int]], *, start: int = 0) -> list[dict[str, Any]]:
    """Events from (time step, disorder, kind, value) tuples; ids are arrival positions."""
    out: list[dict[str, Any]] = []
    clock = start
    for index, (step, back, kind, value) in enumerate(steps):
        clock += step
        ts = max(start, clock - back)
        out.append({"id": index, "ts": ts, "kind": kind, "value": value})
    return out


_STEPS = (1, 0, 1, 2, 0, 1, 3, 5)


def _step_strategy(kinds: Sequence[str]) -> st.SearchStrategy[tuple[int, int, str, int]]:
    return st.tuples(
        st.sampled_from(_STEPS),
        st.integers(0, 99).map(lambda x: 0 if x < 88 else (x - 87) % 4 + 1),
        st.sampled_from(tuple(kinds)),
        st.integers(0, 9),
    )


def events(kinds: Sequence[str] = KINDS) -> st.SearchStrategy[dict[str, Any]]:
    """One case event ``{"id", "ts", "kind", "value"}`` (small ts and value)."""
    return _step_strategy(kinds).map(lambda step: _stream([step])[0])


def event_streams(
    kinds: Sequence[str] = KINDS, max_size: int = DEFAULT_MAX_EVENTS, min_size: int = 0
) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Streams of case events in arrival order: small integer timestamps, mostly
    non-decreasing, with ties and some out-of-order arrivals; ids are 0, 1, 2, ...

    The length is drawn uniformly from ``[min_size, max_size]`` (hypothesis's own list sizes
    favour very short lists) and shrinks towards ``min_size``.
    """
    steps = _step_strategy(kinds)
    return (
        st.integers(min_size, max(min_size, max_size))
        .flatmap(lambda n: st.lists(steps, min_size=n, max_size=n))
        .map(_stream)
    )


def random_events(
    rng: random.Random,
    kinds: Sequence[str] = KINDS,
    max_size: int = DEFAULT_MAX_EVENTS,
    min_size: int = 0,
) -> list[dict[str, Any]]:
    """:func:`event_streams`, drawn from ``rng``."""
    steps = []
    for _ in range(rng.randint(min(min_size, max_size), max_size)):
        x = rng.randrange(100)
        back = 0 if x < 88 else (x - 87) % 4 + 1
        steps.append((rng.choice(_STEPS), back, rng.choice(tuple(kinds)), rng.randint(0, 9)))
    return _stream(steps)


def keyed_streams(
    keys: Sequence[Any] = ("k0", "k1", "k2"),
    kinds: Sequence[str] = KINDS,
    max_size: int = 30,
) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Streams of events for several keys, interleaved: ``{"id", "ts", "key", "kind",
    "value"}``, timestamps mostly non-decreasing across the whole stream."""

    def attach(pair: tuple[list[dict[str, Any]], list[Any]]) -> list[dict[str, Any]]:
        stream, chosen = pair
        return [dict(e, key=k) for e, k in zip(stream, chosen, strict=False)]

    return st.tuples(
        event_streams(kinds, max_size=max_size),
        st.lists(st.sampled_from(tuple(keys)), min_size=max_size, max_size=max_size),
    ).map(attach)


# -- patterns and cases -----------------------------------------------------------------------


@st.composite
def pattern_specs(
    draw: st.DrawFn,
    max_stages: int = 4,
    groups: bool = True,
    reference_subset: bool = False,
    malformed: int = 5,
) -> Spec:
    """JSON pattern specs ``{"skip": ..., "pattern": [STAGE, ...]}`` (CASE-FORMAT.md).

    Every operator (``begin``/``next``/``followed_by``/``followed_by_any``/``not_next``/
    ``not_followed_by``), quantifier (``times(n)``, ``times(n, m)``, ``times_or_more``,
    ``one_or_more``; ``optional``, ``greedy``, ``consecutive``, ``allow_combinations``,
    ``until``), ``within`` of both types on any stage, nested and quantified groups
    (``groups=True``) and all five skip strategies. About ``malformed`` % of the specs carry
    one of :data:`MALFORMATIONS`. ``reference_subset=True`` draws only patterns the reference
    matcher (:mod:`fraudcep.testing.reference`) supports: no groups, and no greedy optional
    stage inside the scope of a ``not_followed_by``.
    """
    return _pattern_spec(
        _DataChooser(draw),
        max_stages=max_stages,
        groups=groups,
        subset=reference_subset,
        malformed=malformed,
    )


@st.composite
def cases(
    draw: st.DrawFn,
    max_stages: int = 4,
    groups: bool = True,
    reference_subset: bool = False,
    malformed: int = 5,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> Spec:
    """Whole cases: a :func:`pattern_specs` spec plus an :func:`event_streams` stream (shorter
    for patterns with ``followed_by_any``/``allow_combinations``)."""
    spec = draw(
        pattern_specs(
            max_stages=max_stages,
            groups=groups,
            reference_subset=reference_subset,
            malformed=malformed,
        )
    )
    stream = draw(event_streams(kinds=_kinds_for(spec), max_size=_events_for(spec, max_events)))
    return {"id": "h", **spec, "events": stream}


def random_pattern_spec(
    rng: random.Random,
    *,
    max_stages: int = 4,
    groups: bool = True,
    reference_subset: bool = False,
    malformed: int = 5,
) -> Spec:
    """:func:`pattern_specs`, drawn from ``rng`` (same generator, same distribution)."""
    return _pattern_spec(
        _RandomChooser(rng),
        max_stages=max_stages,
        groups=groups,
        subset=reference_subset,
        malformed=malformed,
    )


def random_case(
    rng: random.Random,
    case_id: Any = "r",
    *,
    max_stages: int = 4,
    groups: bool = True,
    reference_subset: bool = False,
    malformed: int = 5,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> Spec:
    """:func:`cases`, drawn from ``rng``: the same case for the same ``rng`` state."""
    spec = random_pattern_spec(
        rng,
        max_stages=max_stages,
        groups=groups,
        reference_subset=reference_subset,
        malformed=malformed,
    )
    size = _events_for(spec, max_events)
    stream = random_events(rng, kinds=_kinds_for(spec), max_size=size, min_size=size // 3)
    return {"id": case_id, **spec, "events": stream}


# -- payments ---------------------------------------------------------------------------------

_COUNTRIES = ("US", "GB", "DE", "FR", "BR", "NG")
_CURRENCY = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "BR": "BRL", "NG": "NGN"}


def _amounts() -> st.SearchStrategy[float]:
    cents = st.one_of(
        st.integers(1, 499),  # probes under 5
        st.integers(500, 150_000),  # everyday
        st.integers(150_001, 200_000),  # over 1500
        st.integers(200_001, 900_000),  # over 2000
    )
    return cents.map(lambda c: c / 100)


def payments(
    users: Sequence[str] = ("u1", "u2", "u3"),
    countries: Sequence[str] = _COUNTRIES,
    ts: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """One payment, shaped like :class:`fraudcep.payments.synthetic.Payment`: ``payment_id``,
    ``user_id``, ``card_id``, ``merchant``, ``country``, ``amount``, ``currency``, ``status``
    and ``ts`` (epoch ms). Amounts cluster around the default rules' thresholds."""
    timestamps = ts if ts is not None else st.integers(0, 10 * 60_000)

    def build(parts: tuple[str, str, int, str, float, str, int, int]) -> dict[str, Any]:
        user, country, card, merchant, amount, status, when, serial = parts
        return {
            "payment_id": f"p{serial}",
            "user_id": user,
            "card_id": f"{user}-card{card}",
            "merchant": merchant,
            "country": country,
            "amount": amount,
            "currency": _CURRENCY.get(country, "USD"),
            "status": status,
            "ts": when,
        }

    return st.tuples(
        st.sampled_from(tuple(users)),
        st.sampled_from(tuple(countries)),
        st.integers(0, 1),
        st.sampled_from(("m1", "m2", "m3")),
        _amounts(),
        st.sampled_from(("approved", "approved", "approved", "declined")),
        timestamps,
        st.integers(0, 10**6),
    ).map(build)


def payment_streams(
    users: Sequence[str] = ("u1", "u2", "u3"),
    countries: Sequence[str] = _COUNTRIES,
    max_size: int = 40,
    max_gap_ms: int = 90_000,
) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Lists of :func:`payments` in timestamp order (gaps up to ``max_gap_ms``), with unique
    ``payment_id`` values."""

    def order(pairs: list[tuple[dict[str, Any], int]]) -> list[dict[str, Any]]:
        out = []
        clock = 0
        for index, (payment, gap) in enumerate(pairs):
            clock += gap
            out.append(dict(payment, ts=clock, payment_id=f"p{index}"))
        return out

    return st.lists(
        st.tuples(payments(users, countries, ts=st.just(0)), st.integers(0, max_gap_ms)),
        max_size=max_size,
    ).map(order)
