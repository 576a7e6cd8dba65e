"""Arrow record batches into the engine: ``Engine.process_batch``.

``engine.process_batch(batch)`` gives exactly what ``engine.process_many(batch.to_pylist())``
gives: the same alerts in the same order, the same late events, timeouts, errors and
overflows, the same state and counters after it. It is faster because most payments change
nothing: a row is turned into a Python dict only if it may matter. Per rule, the conditions
that decide whether an event can start a match or change a key's partial matches are
evaluated as vectorised filters over the batch (:mod:`.vectorised`), and a row is left out
only if, for every rule,

- it is judged on arrival, as :meth:`Engine._ingest` judges it: not late, and no later event
  can precede it (its timestamp at most one past the watermark it brings);
- its key has no buffered events at the start of the batch, and none from the batch when the
  row comes (every row taken row by row counts as buffered until the watermark passes it);
- its key has no state, or only partial matches in states whose "stays" test is translated
  (and no completed match held back);
- the filter says the row can neither start a match nor change a partial match;
- for a rule that may hold completed matches back (a skip strategy) or has states without a
  translated "stays" test: no earlier row of the batch for that key passes the filter (after
  one does, the key's state is whatever the row-wise path made of it).

Such a row is exactly one that the row-wise path would not buffer for any rule. The rows left
out still count: they move the highest timestamp and the watermark, take an arrival number and
count in ``events_in``, and when the watermark they bring passes buffered events or timers,
those are released at exactly that row (:meth:`Engine._pass_inert`). Every other row goes
through the row-wise path (:meth:`Engine._ingest_rows`). If the engine forces its watermark
(too many buffered events), the rest of the batch is taken row by row.

Rows with a null or out-of-range timestamp stop the fast path: from there the batch is taken
row by row, which raises at that row as ``process_many`` does. Batches the fast path does not
speed up (processing time, a watermark not following the timestamps, a timestamp read by a
function, a timestamp column of another type than integers or ``timestamp[s|ms|us]``, a rule
keyed by a function or a nested field, or whose first stage has no translated filter) are
taken row by row, with the same result.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Iterable
from typing import Any

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudcep.alert import Alert
from fraudcep.engine.columnar_view import EngineView, RuleView
from fraudcep.engine.vectorised import Mask, condition_filter
from fraudcep.errors import ConfigurationError
from fraudcep.nfa.compiler import Action, CompiledNFA, State, StateKind

__all__ = ["RulePlan", "feed", "rule_plan"]

_TS_LIMIT = 2**62  # the engine's range of timestamps
_MAX_LAG = 2**61  # beyond it the clock arithmetic could leave int64: row by row
# the range of Python datetimes (what to_pylist makes of a timestamp), per unit
_DATETIME_RANGE = {
    "s": (-62_135_596_800, 253_402_300_799),
    "ms": (-62_135_596_800_000, 253_402_300_799_999),
    "us": (-62_135_596_800_000_000, 253_402_300_799_999_999),
}
_INT64_RANGE = (-(2**63), 2**63 - 1)


@attrs.frozen
class RulePlan:
    """How the fast path reads one rule over batches of one schema."""

    key: str
    """The key column."""
    key_kind: str
    """``"int"`` or ``"str"``: what Python values the key column gives."""
    may_change: Mask
    """True (or null) for the rows that may start a match or change a partial match."""
    quiet: frozenset[State]
    """The states whose runs a row the filter rejects leaves as they are."""
    always_quiet: bool
    """Every state a partial match can be in is quiet, and no completed match is ever held
    back (no skip strategy that prunes): a key's state never needs the rows the filter
    rejects, whatever rows came before."""


_PLANS: weakref.WeakKeyDictionary[CompiledNFA, dict[pa.Schema, RulePlan | None]] = (
    weakref.WeakKeyDictionary()
)


def rule_plan(view: RuleView, schema: pa.Schema) -> RulePlan | None:
    """The plan of a rule over ``schema`` (cached), or None when the fast path cannot skip
    any row for it."""
    nfa = view.matcher.nfa
    by_schema = _PLANS.get(nfa)
    if by_schema is None:
        by_schema = _PLANS[nfa] = {}
    if schema not in by_schema:
        by_schema[schema] = _make_plan(view, schema)
    return by_schema[schema]


def _make_plan(view: RuleView, schema: pa.Schema) -> RulePlan | None:
    key = view.rule.key
    if not isinstance(key, str):
        return None
    index = schema.get_field_index(key)
    if index < 0:
        return None
    key_type = schema.field(index).type
    if pa.types.is_string(key_type) or pa.types.is_large_string(key_type):
        key_kind = "str"
    elif pa.types.is_integer(key_type) and not pa.types.is_uint64(key_type):
        key_kind = "int"
    else:
        return None
    nfa = view.matcher.nfa
    start = _start_filter(nfa, schema)
    if start is None:
        return None
    masks = [start]
    quiet = set()
    for state in nfa.states:
        if state.stays is None:
            continue  # no one-argument "stays" test: its runs always count as changing
        # stays(event) is the disjunction of the state's take and proceed conditions
        conditions = [t.condition for t in state.transitions if t.action is not Action.IGNORE]
        translated = [condition_filter(c, schema) for c in conditions]
        if any(m is None for m in translated):
            continue
        masks.extend(m for m in translated if m is not None)
        quiet.add(state)
    holding = (StateKind.START, StateKind.NORMAL, StateKind.PENDING)
    always_quiet = not view.matcher.skip.skips and all(
        state in quiet for state in nfa.states if state.kind in holding
    )
    return RulePlan(key, key_kind, _any_of(masks), frozenset(quiet), always_quiet)


def _start_filter(nfa: CompiledNFA, schema: pa.Schema) -> Mask | None:
    """A superset of ``Matcher.can_start``: the take conditions reachable from the start state
    through proceed edges. Every test ``can_start`` may evaluate must be translated (a
    translated test never raises, so the row-wise test cannot fail on a row left out)."""
    seen = {id(nfa.start)}
    stack = [nfa.start]
    takes: list[Mask] = []
    while stack:
        state = stack.pop()
        for t in state.transitions:
            mask = condition_filter(t.condition, schema)
            if mask is None:
                return None
            if t.action is Action.TAKE:
                takes.append(mask)
            elif t.action is Action.PROCEED and id(t.target) not in seen:
                seen.add(id(t.target))
                stack.append(t.target)
    if not takes:
        return lambda batch: pa.repeat(pa.scalar(False), batch.num_rows)
    return _any_of(takes)


def _any_of(masks: list[Mask]) -> Mask:
    def any_of(batch: pa.RecordBatch) -> pa.Array:
        result = masks[0](batch)
        for mask in masks[1:]:
            result = pc.or_kleene(result, mask(batch))
        return pc.fill_null(result, True)  # not known: may

    return any_of


# --------------------------------------------------------------------------- feeding


def feed(engine: Any, batch: Any, out: list[Alert]) -> None:
    """``engine.process_batch(batch)``: see the module docstring."""
    if isinstance(batch, pa.Table):
        for part in batch.to_batches():
            _feed(engine, part, out)
    elif isinstance(batch, pa.RecordBatch):
        _feed(engine, batch, out)
    else:
        raise ConfigurationError(
            f"process_batch() takes a pyarrow RecordBatch or Table, got {type(batch).__name__}"
        )


def _row_by_row(engine: Any, batch: pa.RecordBatch, out: list[Alert]) -> None:
    out.extend(engine.process_many(batch.to_pylist()))


def _feed(engine: Any, batch: pa.RecordBatch, out: list[Alert]) -> None:
    n = batch.num_rows
    if n == 0:
        return
    view: EngineView = engine._batch_view()
    if not view.auto_event_time or view.timestamp is None or not 1 <= view.lag <= _MAX_LAG:
        _row_by_row(engine, batch, out)
        return
    read = _timestamps(batch, view.timestamp)
    if read is None:
        _row_by_row(engine, batch, out)
        return
    ts, valid = read
    bad = np.flatnonzero(~valid)
    if len(bad):
        # the row-wise path raises at the first bad timestamp: take the rest row by row
        cut = int(bad[0])
        if cut:
            _fast(engine, view, batch.slice(0, cut), ts[:cut], out)
        engine._ingest_rows(batch.slice(cut).to_pylist(), out)
        return
    _fast(engine, view, batch, ts, out)


def _timestamps(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The timestamps in ms as the engine reads them from the rows' dicts, and which are
    valid (not null, within the engine's range); None for a column of another type (or
    values ``to_pylist`` cannot convert), which the row-by-row path handles."""
    index = batch.schema.get_field_index(name)
    if index < 0:
        return None
    column = batch.column(index)
    t = column.type
    if pa.types.is_integer(t) and not pa.types.is_uint64(t):
        raw = pc.cast(column, pa.int64())
        values = raw.fill_null(0).to_numpy(zero_copy_only=False)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        valid &= (values >= -_TS_LIMIT) & (values <= _TS_LIMIT)
        return values, valid
    if pa.types.is_timestamp(t) and t.unit in _DATETIME_RANGE:
        raw = pc.cast(column, pa.int64())
        low, high = _DATETIME_RANGE[t.unit]
        lowest, highest = pc.min_max(raw).values()
        if lowest.is_valid and (lowest.as_py() < low or highest.as_py() > high):
            return None  # no Python datetime for some value: to_pylist decides
        values = raw.fill_null(0).to_numpy(zero_copy_only=False)
        if t.unit == "s":
            values = values * 1000
        elif t.unit == "us":
            values = values // 1000  # what timestamp_ms() makes of the datetime: floor
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        return values, valid
    return None


def _fast(
    engine: Any, view: EngineView, batch: pa.RecordBatch, ts: np.ndarray, out: list[Alert]
) -> None:
    plans = [rule_plan(rv, batch.schema) for rv in view.rules]
    if any(plan is None for plan in plans):
        engine._ingest_rows(batch.to_pylist(), out)
        return
    n = batch.num_rows
    lag = view.lag
    # the clocks after each row, as _ingest moves them (a late row cannot raise the running
    # maximum above the watermark, so counting it in changes neither clock)
    running_max = np.maximum(np.maximum.accumulate(ts), max(view.max_ts, -_TS_LIMIT - 1))
    watermarks = np.maximum(running_max - lag, view.watermark)
    before = np.empty(n, dtype=np.int64)
    before[0] = view.watermark
    before[1:] = watermarks[:-1]
    late = ts <= before
    decided = ts <= running_max - lag + 1
    relevant = late | ~decided
    for plan, rv in zip(plans, view.rules, strict=True):
        assert plan is not None
        rule_rows = _relevant_rows(plan, rv, batch, ~decided & ~late, late, ts, before)
        if rule_rows is None:
            engine._ingest_rows(batch.to_pylist(), out)
            return
        relevant |= rule_rows
    indices = np.flatnonzero(relevant)
    if len(indices) == n:
        engine._ingest_rows(batch.to_pylist(), out)
        return
    rows = batch.take(pa.array(indices)).to_pylist() if len(indices) else []
    # runs of consecutive relevant rows: [starts[k], ends[k]) in ``indices``
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate(([0], breaks)).tolist() if len(indices) else []
    ends = np.concatenate((breaks, [len(indices)])).tolist() if len(indices) else []
    position = 0
    for a, b in zip(starts, ends, strict=True):
        first, last = int(indices[a]), int(indices[b - 1])
        if first > position:
            engine._pass_inert(running_max[position:first].tolist(), out)
        watermark, forced = engine._ingest_rows(rows[a:b], out)
        position = last + 1
        if forced != view.forced_watermarks or watermark != int(watermarks[last]):
            # the engine forced its watermark: the clocks above no longer hold
            if position < n:
                engine._ingest_rows(batch.slice(position).to_pylist(), out)
            return
    if position < n:
        engine._pass_inert(running_max[position:].tolist(), out)


def _relevant_rows(
    plan: RulePlan,
    rv: RuleView,
    batch: pa.RecordBatch,
    undecided: np.ndarray,
    late: np.ndarray,
    ts: np.ndarray,
    before: np.ndarray,
) -> np.ndarray | None:
    """The rows that must be taken row by row for this rule; None if the keys held cannot be
    compared with the key column.

    They are: the rows with a null key; every row of a key that has buffered events or state
    the filter cannot vouch for; the rows the filter passes and the rows not judged on
    arrival ("seeds"); and the later rows of a seed's key: while the key may have a buffered
    event, for a rule whose keys always stay quiet, else all of them."""
    key = batch.column(plan.key)
    key_type = pa.int64() if plan.key_kind == "int" else key.type
    if key.type != key_type:
        key = pc.cast(key, key_type)
    may = plan.may_change(batch).to_numpy(zero_copy_only=False) & ~late
    held = _held_keys(rv, plan)
    if held is None:
        return None
    seed = may | undecided
    if plan.always_quiet:
        relevant = _while_pending(key, seed, ts, before)
    else:
        relevant = _from_first(key, seed)
    if held:
        relevant |= pc.is_in(key, value_set=pa.array(held, key_type)).to_numpy(zero_copy_only=False)
    if key.null_count:
        relevant |= key.is_null().to_numpy(zero_copy_only=False)
    result: np.ndarray = relevant
    return result


def _after_first(key: pa.Array, seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of every key that has a ``seed`` row, from its first one on; and the number
    of each row's key among those keys (-1 for the others)."""
    n = len(seed)
    rows = np.flatnonzero(seed)
    if not len(rows):
        return np.zeros(n, dtype=bool), np.full(n, -1)
    seeded = key.take(pa.array(rows))
    distinct = pc.unique(seeded)
    codes = pc.index_in(seeded, value_set=distinct).fill_null(-1).to_numpy(zero_copy_only=False)
    first = np.full(len(distinct), n, dtype=np.int64)
    np.minimum.at(first, codes[codes >= 0], rows[codes >= 0])
    every = pc.index_in(key, value_set=distinct).fill_null(-1).to_numpy(zero_copy_only=False)
    threshold = np.where(every >= 0, first[np.maximum(every, 0)], n)
    return np.arange(n) >= threshold, every


def _from_first(key: pa.Array, seed: np.ndarray) -> np.ndarray:
    """The rows of every key that has a ``seed`` row, from its first one on."""
    return _after_first(key, seed)[0]


def _while_pending(
    key: pa.Array, seed: np.ndarray, ts: np.ndarray, before: np.ndarray
) -> np.ndarray:
    """The ``seed`` rows, and the rows of their keys that come while the key may have a
    buffered event: after a taken row of the key whose timestamp the watermark before the row
    (``before``) has not reached. Every taken row is counted as buffered (it may be)."""
    candidates, codes = _after_first(key, seed)
    relevant = seed.copy()
    rows = np.flatnonzero(candidates)
    if not len(rows):
        return relevant
    order = rows[np.argsort(codes[rows], kind="stable")]
    last_code = -1
    pending = 0
    for row, code, t, wm, is_seed in zip(
        order.tolist(),
        codes[order].tolist(),
        ts[order].tolist(),
        before[order].tolist(),
        seed[order].tolist(),
        strict=True,
    ):
        if code != last_code:
            last_code, pending = code, -(2**63)
        if is_seed or pending > wm:
            relevant[row] = True
            if t > pending:
                pending = t
    return relevant


def _held_keys(rv: RuleView, plan: RulePlan) -> list[Any] | None:
    """The keys with buffered events, and those with state the filter cannot vouch for (a
    completed match held back, or a partial match in a state without a translated "stays"
    test), as values of the key column; None when some key could equal a column value
    without being of its type (then nothing can be left out)."""
    quiet = plan.quiet
    held: list[Any] = []
    convert = _as_int if plan.key_kind == "int" else _as_str
    keys: Iterable[Hashable] = rv.pending
    for k in keys:
        if not convert(k, held):
            return None
    for k, ks in rv.keys.items():
        changing = ks.completed or any(run.state not in quiet for run in ks.partial)
        if changing and not convert(k, held):
            return None
    return held


_NEVER_INT = (str, bytes, type(None), tuple, frozenset)
_NEVER_STR = (int, float, bool, bytes, type(None), tuple, frozenset)


def _as_int(key: Any, into: list[Any]) -> bool:
    """Add to ``into`` the int64 value equal to ``key``, if any; False if that is not known."""
    t = type(key)
    if t is int or t is bool:
        if _INT64_RANGE[0] <= key <= _INT64_RANGE[1]:
            into.append(int(key))
        return True
    if t is float:
        if key.is_integer() and abs(key) < 2**63:
            into.append(int(key))
        return True
    return t in _NEVER_INT


def _as_str(key: Any, into: list[Any]) -> bool:
    t = type(key)
    if t is str:
        into.append(key)
        return True
    return t in _NEVER_STR
