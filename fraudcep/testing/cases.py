"""Differential test cases: the JSON case model shared with the Flink CEP harness.

A *case* is one pattern, one after-match skip strategy and one short stream of events (the
format is specified in ``tests/differential/CASE-FORMAT.md``)::

    {"id": "c17",
     "skip": {"type": "skip_to_first", "name": "b"},
     "pattern": [{"name": "a", "op": "begin",
                  "conditions": [["where", {"type": "kind", "value": "a"}]]},
                 {"name": "b", "op": "followed_by",
                  "conditions": [["where", {"type": "cmp", "op": ">", "value": 5}]],
                  "quantifier": {"kind": "one_or_more", "from": 1, "greedy": true},
                  "within": [{"ms": 10, "type": "FIRST_AND_LAST"}]}],
     "events": [{"id": 0, "ts": 3, "kind": "a", "value": 4}, ...]}

Events may carry a ``"key"`` (a string or an integer): the stream is then partitioned by it, as
a keyed Flink stream is; events without one share a key. By default every event goes in before
a single final watermark; a case with ``"watermarks": {"out_of_orderness": N}`` gets a
bounded-out-of-orderness watermark (the largest timestamp so far minus ``N + 1``) after every
event instead, as a live stream does.

A *result* is what running a case produced, in the shape the Flink harness prints::

    {"id": "c17", "error": None,
     "matches": [[["a", [0]], ["b", [1, 2]]], ...],       # emission order
     "timeouts": [{"timeout_ts": 13, "events": [["a", [0]]]}, ...]}

With ``"watermarks"`` it also says when each match and timeout came out: ``"matches_after"``
and ``"timeouts_after"`` give, for each, how many events had gone in (the number of events
for the final watermark).

Import its names from the module (``from fraudcep.testing.cases import run_case``): the
package attribute ``fraudcep.testing.cases`` is the hypothesis strategy of that name.

This module turns a case into a fraudcep :class:`~fraudcep.Pattern` through the public builder
(:func:`build_pattern`), runs it through the :class:`~fraudcep.Engine` (:func:`run_case`) and
compares two results (:func:`compare`). The pattern is built with the same calls, in the same
order, as the Java harness makes on Flink's ``Pattern`` (connect, conditions, quantifier, inner
contiguity, ``optional``, ``greedy``, ``until``, ``within``), so a pattern Flink rejects is
rejected here at the same step.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fraudcep.errors import MalformedPatternError
from fraudcep.pattern.pattern import Pattern, WithinType
from fraudcep.pattern.skip import SkipStrategy

__all__ = [
    "HOLD_ALL",
    "Case",
    "CaseFormatError",
    "Result",
    "build_condition",
    "build_pattern",
    "build_skip",
    "canonical",
    "compare",
    "error_result",
    "event_key",
    "per_key",
    "render_events",
    "run_case",
    "watermark_lag",
]

UNCAPPED = 2**62
"""A partial-match cap no case reaches: the harness runs Flink, which has none."""

HOLD_ALL = 2**62
"""A ``max_out_of_orderness`` (ms) larger than any case: the watermark stays below every event
until ``flush()``, as in the harness."""

Case = Mapping[str, Any]
"""A case as parsed from JSON (see the module docstring)."""

Result = dict[str, Any]
"""A result as parsed from JSON (see the module docstring)."""

EventPredicate = Callable[[Any, Any], bool]
"""A compiled COND: ``f(event, ctx) -> bool``."""

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class CaseFormatError(ValueError):
    """A case that does not follow CASE-FORMAT.md (the harness's ``CaseFormatException``)."""


# -- conditions -------------------------------------------------------------------------------


def event_value(event: Mapping[str, Any]) -> Any:
    """The ``value`` of a case event (0 when absent or null, as the harness reads it)."""
    value = event.get("value")
    return 0 if value is None else value


def _compile(cond: Any) -> tuple[EventPredicate, bool]:
    """A COND as ``f(event, ctx)``, and whether it reads the context (is iterative)."""
    if not isinstance(cond, Mapping):
        raise CaseFormatError(f"a condition must be an object, got {cond!r}")
    kind = cond.get("type")
    if kind == "true":
        return (lambda e, ctx: True), False
    if kind == "kind":
        wanted = cond["value"]
        return (lambda e, ctx: e.get("kind") == wanted), False
    if kind == "cmp":
        op = _CMP.get(cond.get("op", ""))
        if op is None:
            raise CaseFormatError(f"unknown cmp op: {cond.get('op')!r}")
        bound = cond["value"]
        return (lambda e, ctx: bool(op(event_value(e), bound))), False
    if kind == "sum_lt":
        stage = str(cond["stage"])
        limit = cond["limit"]

        def sum_lt(e: Any, ctx: Any) -> bool:
            total = event_value(e)
            for previous in ctx.events(stage):
                total += event_value(previous)
            return bool(total < limit)

        return sum_lt, True
    if kind in ("and", "or"):
        parts = [_compile(c) for c in cond["conds"]]
        fns = [fn for fn, _ in parts]
        iterative = any(it for _, it in parts)
        if kind == "and":
            return (lambda e, ctx: all(fn(e, ctx) for fn in fns)), iterative
        return (lambda e, ctx: any(fn(e, ctx) for fn in fns)), iterative
    if kind == "not":
        inner, iterative = _compile(cond["cond"])
        return (lambda e, ctx: not inner(e, ctx)), iterative
    raise CaseFormatError(f"unknown condition type: {kind!r}")


def build_condition(cond: Any) -> Callable[..., bool]:
    """A COND as a fraudcep condition: ``f(event)``, or ``f(event, ctx)`` when iterative.

    ``sum_lt`` (alone or inside ``and``/``or``/``not``) makes the condition iterative: it reads
    the events already matched to a stage through ``ctx.events(stage)``.
    """
    fn, iterative = _compile(cond)
    if iterative:

        def iterative_condition(event: Any, ctx: Any) -> bool:
            return fn(event, ctx)

        return iterative_condition

    def simple_condition(event: Any) -> bool:
        return fn(event, None)

    return simple_condition


# -- patterns ---------------------------------------------------------------------------------


def build_skip(skip: Mapping[str, Any] | None) -> SkipStrategy:
    """The after-match skip strategy of a case's ``"skip"`` object (NO_SKIP when absent)."""
    if skip is None:
        return SkipStrategy.no_skip()
    kind = skip.get("type")
    if kind == "no_skip":
        return SkipStrategy.no_skip()
    if kind == "skip_to_next":
        return SkipStrategy.skip_to_next()
    if kind == "skip_past_last_event":
        return SkipStrategy.skip_past_last_event()
    if kind == "skip_to_first":
        return SkipStrategy.skip_to_first(skip["name"])
    if kind == "skip_to_last":
        return SkipStrategy.skip_to_last(skip["name"])
    raise CaseFormatError(f"unknown skip type: {kind!r}")


def build_pattern(spec: Case) -> Pattern:
    """The fraudcep pattern of a case (its ``"pattern"`` stage list and ``"skip"`` strategy).

    Raises :class:`~fraudcep.MalformedPatternError` (or ``TypeError``/``ValueError``) when the
    builder rejects the pattern, exactly where Flink's builder would.
    """
    return _build_sequence(spec.get("pattern"), build_skip(spec.get("skip")))


def _build_sequence(stages: Any, skip: SkipStrategy | None) -> Pattern:
    if not isinstance(stages, Sequence) or isinstance(stages, str) or not stages:
        raise CaseFormatError("pattern must be a non-empty array of stages")
    pattern: Pattern | None = None
    for index, stage in enumerate(stages):
        if not isinstance(stage, Mapping):
            raise CaseFormatError(f"a stage must be an object, got {stage!r}")
        pattern = _connect(pattern, stage, index == 0, skip)
        pattern = _configure(pattern, stage)
    assert pattern is not None
    return pattern


def _connect(
    previous: Pattern | None, stage: Mapping[str, Any], first: bool, skip: SkipStrategy | None
) -> Pattern:
    op = stage.get("op")
    if first != (op == "begin"):
        raise CaseFormatError(
            f'the first stage must have op "begin", got {op!r}'
            if first
            else 'op "begin" is only allowed on the first stage'
        )
    target: str | Pattern
    if stage.get("group") is not None:
        if op in ("not_next", "not_followed_by"):
            raise CaseFormatError(f"Flink's Pattern API has no {op} taking a group pattern")
        target = _build_sequence(stage["group"], None)
    else:
        target = stage["name"]
    if op == "begin":
        return Pattern.begin(target, skip=skip)
    assert previous is not None
    if op == "next":
        return previous.next(target)
    if op == "followed_by":
        return previous.followed_by(target)
    if op == "followed_by_any":
        return previous.followed_by_any(target)
    if op == "not_next":
        assert isinstance(target, str)
        return previous.not_next(target)
    if op == "not_followed_by":
        assert isinstance(target, str)
        return previous.not_followed_by(target)
    raise CaseFormatError(f"unknown op: {op!r}")


def _configure(pattern: Pattern, stage: Mapping[str, Any]) -> Pattern:
    for entry in stage.get("conditions") or ():
        how, cond = entry
        if how == "where":
            pattern = pattern.where(build_condition(cond))
        elif how == "or":
            pattern = pattern.or_where(build_condition(cond))
        else:
            raise CaseFormatError(f"unknown condition combinator: {how!r}")
    quantifier = stage.get("quantifier")
    if quantifier is not None:
        kind = quantifier.get("kind", "single")
        if kind == "times":
            low = quantifier["from"]
            high = quantifier.get("to")
            high = low if high is None else high
            pattern = pattern.times(low) if low == high else pattern.times(low, high)
        elif kind == "times_or_more":
            pattern = pattern.times_or_more(quantifier["from"])
        elif kind == "one_or_more":
            pattern = pattern.one_or_more()
        elif kind != "single":
            raise CaseFormatError(f"unknown quantifier kind: {kind!r}")
        inner = quantifier.get("inner", "relaxed")
        if inner == "consecutive":
            pattern = pattern.consecutive()
        elif inner == "allow_combinations":
            pattern = pattern.allow_combinations()
        elif inner != "relaxed":
            raise CaseFormatError(f"unknown inner contiguity: {inner!r}")
        if quantifier.get("optional"):
            pattern = pattern.optional()
        if quantifier.get("greedy"):
            pattern = pattern.greedy()
    if stage.get("until") is not None:
        pattern = pattern.until(build_condition(stage["until"]))
    for window in stage.get("within") or ():
        within_type = WithinType[window.get("type", "FIRST_AND_LAST")]
        pattern = pattern.within(window["ms"], within_type)
    return pattern


# -- running ----------------------------------------------------------------------------------


def render_events(events: Mapping[str, Sequence[Any]]) -> list[list[Any]]:
    """A match (stage name -> events) as ``[[name, [event ids]], ...]`` in mapping order."""
    return [[name, [e["id"] for e in evs]] for name, evs in events.items()]


def error_result(case_id: Any, error: str) -> Result:
    """The result of a case whose pattern was rejected."""
    return {"id": case_id, "error": error, "matches": [], "timeouts": []}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def event_key(event: Mapping[str, Any]) -> Any:
    """The partition key of a case event: its ``"key"`` (``None`` when it has none).

    Raises :class:`CaseFormatError` for a key that is neither a string nor an integer, as the
    harness does.
    """
    key = event.get("key")
    if key is None or isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool)):
        return key
    raise CaseFormatError(f"event key must be a string or an integer: {event!r}")


def watermark_lag(case: Case) -> int | None:
    """The out-of-orderness of a case's ``"watermarks"``, or ``None`` for a single final
    watermark."""
    watermarks = case.get("watermarks")
    if watermarks is None:
        return None
    if not isinstance(watermarks, Mapping):
        raise CaseFormatError(f"watermarks must be an object: {watermarks!r}")
    lag = watermarks.get("out_of_orderness")
    if not isinstance(lag, int) or isinstance(lag, bool) or lag < 0:
        raise CaseFormatError(f"watermarks.out_of_orderness must be an integer >= 0: {lag!r}")
    return lag


def run_case(case: Case) -> Result:
    """Run a case through the fraudcep :class:`~fraudcep.Engine`, as the harness runs Flink.

    The events go in in arrival order, partitioned by their ``"key"``, with their ``ts`` as
    event time; then the input ends (``flush()``). Like the harness, which by default gives
    Flink's ``CepOperator`` a single watermark (``Long.MAX_VALUE``) after the last event, the
    engine is then told to expect any amount of disorder (:data:`HOLD_ALL`), so no event is late
    and all of them are matched, in timestamp order, at the end. A case with ``"watermarks"``
    runs with that out-of-orderness instead (the engine's automatic watermark is the harness's),
    and its result says after how many events each match and timeout came out. A pattern
    rejected while it is built or compiled gives ``{"error": "<Exception>: <message>"}``.
    """
    from fraudcep.engine.engine import Engine
    from fraudcep.engine.rule import Rule

    case_id = case.get("id")
    events = list(case.get("events") or ())
    try:
        for event in events:
            event_key(event)
        lag = watermark_lag(case)
    except CaseFormatError as exc:
        return error_result(case_id, _describe(exc))
    try:
        pattern = build_pattern(case)
        engine = Engine(
            [Rule("case", pattern, key=event_key)],
            timestamp="ts",
            max_out_of_orderness=HOLD_ALL if lag is None else lag,
            # Flink has no cap on partial matches; combinatorial cases can exceed the default
            max_partial_matches_per_key=UNCAPPED,
        )
    except (MalformedPatternError, TypeError, ValueError) as exc:
        return error_result(case_id, _describe(exc))
    matches: list[list[list[Any]]] = []
    timeouts: list[dict[str, Any]] = []
    matches_after: list[int] = []
    timeouts_after: list[int] = []

    def collect(alerts: Iterable[Any], after: int) -> None:
        for alert in alerts:
            matches.append(render_events(alert.events))
            matches_after.append(after)
        for t in engine.drain_timeouts():
            timeouts.append({"timeout_ts": t.timeout_ts, "events": render_events(t.events)})
            timeouts_after.append(after)

    for index, event in enumerate(events):
        collect(engine.process(event), index + 1)
    collect(engine.flush(), len(events))
    result: Result = {"id": case_id, "error": None, "matches": matches, "timeouts": timeouts}
    if lag is not None:
        result["matches_after"] = matches_after
        result["timeouts_after"] = timeouts_after
    return result


# -- comparing --------------------------------------------------------------------------------


def canonical(result: Mapping[str, Any], events: Iterable[Mapping[str, Any]] = ()) -> Result:
    """``result`` with the implementation-defined parts of Flink's output order normalised.

    Flink emits the matches completed by one step ordered by their first event; matches that
    share a first event come out in the order of its internal priority queue, and the partial
    matches timed out by one step come out in the queue's array order. Neither order is part of
    the documented semantics. The canonical form keeps the order of matches except inside a
    run of consecutive matches that share their first event (sorted there), and sorts the
    timeouts. ``events`` (the case's events) defines "first": the earliest in event-time order
    (timestamp, then arrival); without them the smallest id is taken.
    """
    order: dict[Any, int] = {}
    evs = list(events)
    if evs:
        ranked = sorted(range(len(evs)), key=lambda i: (evs[i]["ts"], i))
        order = {evs[i]["id"]: rank for rank, i in enumerate(ranked)}
    matches = [list(m) for m in result.get("matches") or ()]

    def first(match: Sequence[Any]) -> Any:
        ids = [i for _, ids in match for i in ids]
        if not ids:
            return None
        return min(ids, key=lambda i: (order.get(i, 0), repr(i))) if order else min(ids)

    out: list[Any] = []
    block: list[Any] = []
    block_first: Any = object()
    for match in matches:
        f = first(match)
        if block and f != block_first:
            out.extend(sorted(block, key=repr))
            block = []
        block_first = f
        block.append(match)
    out.extend(sorted(block, key=repr))
    timeouts = sorted(result.get("timeouts") or (), key=repr)
    return {
        "id": result.get("id"),
        "error": result.get("error"),
        "matches": out,
        "timeouts": timeouts,
    }


def _render(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def _diff_lists(what: str, ours: Sequence[Any], theirs: Sequence[Any], limit: int) -> list[str]:
    if list(ours) == list(theirs):
        return []
    out = [f"{what}: ours has {len(ours)}, theirs has {len(theirs)}"]
    for index, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            out.append(f"  first difference at #{index}: ours {_render(a)} / theirs {_render(b)}")
            break
    missing = _multiset_minus(theirs, ours)
    extra = _multiset_minus(ours, theirs)
    for label, items in (("only theirs", missing), ("only ours", extra)):
        for item in items[:limit]:
            out.append(f"  {label}: {_render(item)}")
        if len(items) > limit:
            out.append(f"  {label}: ... {len(items) - limit} more")
    if not missing and not extra:
        out.append("  same elements, different order")
    return out


def _multiset_minus(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    remaining: dict[str, int] = {}
    for item in b:
        key = _render(item)
        remaining[key] = remaining.get(key, 0) + 1
    out = []
    for item in a:
        key = _render(item)
        if remaining.get(key, 0):
            remaining[key] -= 1
        else:
            out.append(item)
    return out


def per_key(result: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> Result:
    """``result`` with its matches and timeouts grouped by key, keeping their order per key.

    Within one watermark, Flink emits what its keys produce in the order its timers fire, an
    order it does not define; per key the order is that of the key's own processing, and that
    is what this keeps. ``events`` (the case's events) give each event id its key; a result
    of a case whose events all share a key is returned as it is.
    """
    key_of: dict[str, Any] = {}
    for event in events:
        key_of[_render(event.get("id"))] = event_key(event)
    if len({_render(k) for k in key_of.values()}) <= 1:
        return dict(result)

    def rank(match: Sequence[Any]) -> str:
        for _, ids in match:
            for i in ids:
                return _render(key_of.get(_render(i)))
        return ""

    out = dict(result)
    for items, is_timeout in (("matches", False), ("timeouts", True)):
        after = f"{items}_after"
        listed = list(result.get(items) or ())
        positions = result.get(after)
        ranks = [rank(item["events"] if is_timeout else item) for item in listed]
        order = sorted(range(len(listed)), key=lambda i: ranks[i])
        out[items] = [listed[i] for i in order]
        if positions is not None and len(positions) == len(listed):
            out[after] = [positions[i] for i in order]
    return out


def _with_positions(result: Mapping[str, Any], items: str, label: str) -> list[Any]:
    """The matches or timeouts of ``result``, each as ``{"after": n, label: item}``."""
    listed = list(result.get(items) or ())
    positions = list(result.get(f"{items}_after") or ())
    if len(positions) != len(listed):
        return [{"after": "?", label: item} for item in listed]
    return [{"after": p, label: item} for p, item in zip(positions, listed, strict=True)]


def compare(
    ours: Mapping[str, Any],
    flinks: Mapping[str, Any],
    *,
    events: Iterable[Mapping[str, Any]] | None = None,
    limit: int = 5,
) -> list[str]:
    """Human-readable differences between two results of the same case (empty: equal).

    Two rejected patterns are equal whatever their messages say. Matches and timeouts are
    compared in order; pass the case's ``events`` to compare them up to the order Flink leaves
    to its priority queue instead (see :func:`canonical`). When both results say when their
    matches and timeouts came out (``"matches_after"``, ``"timeouts_after"``), that is compared
    too.
    """
    our_error, their_error = ours.get("error"), flinks.get("error")
    if our_error is not None or their_error is not None:
        if our_error is not None and their_error is not None:
            return []
        if our_error is not None:
            return [f"error: ours {our_error!r}, theirs ran without error"]
        return [f"error: theirs {their_error!r}, ours ran without error"]
    if events is not None:
        ours, flinks = canonical(ours, events), canonical(flinks, events)
    timed = all(
        r.get("matches_after") is not None and r.get("timeouts_after") is not None
        for r in (ours, flinks)
    )
    if timed:
        return _diff_lists(
            "matches",
            _with_positions(ours, "matches", "match"),
            _with_positions(flinks, "matches", "match"),
            limit,
        ) + _diff_lists(
            "timeouts",
            _with_positions(ours, "timeouts", "timeout"),
            _with_positions(flinks, "timeouts", "timeout"),
            limit,
        )
    return _diff_lists(
        "matches", ours.get("matches") or [], flinks.get("matches") or [], limit
    ) + _diff_lists("timeouts", ours.get("timeouts") or [], flinks.get("timeouts") or [], limit)
