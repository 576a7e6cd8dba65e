"""fraudcep's NFA driven the way Flink 2.3's ``CepOperator`` drives its NFA in event time.

The engine (``fraudcep/engine/engine.py``) plays Flink's operator with one deliberate difference in
its timers (docs/semantics.md, "Deliberate differences" (a)): it sets a timer for every
window, so an expired partial match is handled when the watermark passes the end of its
window. Flink's operator registers, for a key, only

* a timer at the timestamp of each buffered event, and
* after it processed an event, a timer at ``timestamp + window`` for the ``FIRST_AND_LAST``
  window, when the key's NFA state says that a partial match was started since the state was
  last stored (its check is "a run left the start state with a start timestamp > 0", so a
  match started at a timestamp <= 0 gets no timer; the flag is cleared when the state is
  stored, at the end of the timer callback, so every event processed after the start in the
  same callback registers one too).

When one of a key's timers fires, the operator feeds the key's buffered events up to the
watermark to the NFA (moving the NFA's time to each event's timestamp first) and then moves
the NFA's time to the watermark. So a partial match bounded by a ``PREVIOUS_AND_CURRENT``
window, or a pending ``not_followed_by`` match, is looked at only when its key has another
event or a ``FIRST_AND_LAST`` timer.

:func:`run_with_flink_timers` runs a case (``fraudcep.testing.cases``) through fraudcep's own
compiler and NFA (:class:`fraudcep.nfa.matcher.Matcher`) with exactly that timer policy. Where the
engine's result differs from Flink's only because of its timers, this one must still give
Flink's result: it separates the NFA (which must agree with Flink) from the engine's timer
policy (which differs on purpose).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from fraudcep import MalformedPatternError
from fraudcep.nfa.compiler import compile_pattern
from fraudcep.nfa.matcher import KeyState, Matcher, Run, as_mapping
from fraudcep.pattern.pattern import WithinType
from fraudcep.testing.cases import (
    CaseFormatError,
    Result,
    build_pattern,
    error_result,
    event_key,
    render_events,
    watermark_lag,
)

MIN_WATERMARK = -(2**63)
MAX_WATERMARK = 2**63 - 1


class _Key:
    """What the operator keeps for one key: the NFA state and the buffered events."""

    __slots__ = ("buffer", "state")

    def __init__(self, state: KeyState) -> None:
        self.state = state
        self.buffer: dict[int, list[Mapping[str, Any]]] = {}


class FlinkTimers:
    """One case's operator: keyed NFA states, buffers and Flink's event-time timers."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.window = matcher.window_ms
        self.keys: dict[Any, _Key] = {}
        self.timers: list[tuple[int, int, Any]] = []
        self.watermark = MIN_WATERMARK
        self.timer_tie = 0
        self.seq = 0
        self.events_in = 0
        self.matches: list[Any] = []
        self.matches_after: list[int] = []
        self.timeouts: list[Any] = []
        self.timeouts_after: list[int] = []

    def register(self, key: Any, ts: int) -> None:
        self.timer_tie += 1
        heapq.heappush(self.timers, (ts, self.timer_tie, key))

    def element(self, event: Mapping[str, Any]) -> None:
        """``processElement``: buffer the event (a timer at its timestamp), or drop it as late."""
        ts = event["ts"]
        if ts > self.watermark:
            key = event_key(event)
            slot = self.keys.get(key)
            if slot is None:
                slot = self.keys[key] = _Key(self.matcher.new_key_state())
            if ts not in slot.buffer:
                slot.buffer[ts] = []
                self.register(key, ts)
            slot.buffer[ts].append(event)
        self.events_in += 1

    def advance_watermark(self, watermark: int) -> None:
        """Fire every timer at or below ``watermark``, including those registered meanwhile."""
        self.watermark = watermark
        while self.timers and self.timers[0][0] <= watermark:
            _, _, key = heapq.heappop(self.timers)
            self.on_event_time(key)

    def on_event_time(self, key: Any) -> None:
        slot = self.keys[key]
        state = slot.state
        watermark = self.watermark
        started = False  # NFAState.isNewStartPartialMatch
        for ts in sorted(t for t in slot.buffer if t <= watermark):
            self.advance_time(state, ts)
            for event in slot.buffer.pop(ts):
                self.seq += 1
                if ts > 0 and self.matcher.can_start(event, ts):
                    started = True
                emitted = self.matcher.process(state, event, ts, self.seq)
                self.emit(emitted or ())
                if self.window > 0 and started:
                    self.register(key, ts + self.window)
        self.advance_time(state, watermark)

    def advance_time(self, state: KeyState, ts: int) -> None:
        emitted, timed_out = self.matcher.advance_time(state, ts)
        self.emit(emitted)
        for run, timeout_ts in timed_out:
            self.timeouts.append(
                {"timeout_ts": timeout_ts, "events": render_events(as_mapping(run.node))}
            )
            self.timeouts_after.append(self.events_in)

    def emit(self, runs: Sequence[Run]) -> None:
        for run in runs:
            self.matches.append(render_events(as_mapping(run.node)))
            self.matches_after.append(self.events_in)


def run_with_flink_timers(case: Mapping[str, Any]) -> Result:
    """Run ``case`` through fraudcep's NFA with the timers of Flink's operator (see above).

    The result has the shape of :func:`fraudcep.testing.cases.run_case`'s.
    """
    case_id = case.get("id")
    events = list(case.get("events") or ())
    try:
        for event in events:
            event_key(event)
        lag = watermark_lag(case)
    except CaseFormatError as exc:
        return error_result(case_id, f"{type(exc).__name__}: {exc}")
    try:
        pattern = build_pattern(case)
        nfa = compile_pattern(pattern)
    except (MalformedPatternError, TypeError, ValueError) as exc:
        return error_result(case_id, f"{type(exc).__name__}: {exc}")
    operator = FlinkTimers(Matcher(nfa, pattern.skip_strategy))
    max_ts = MIN_WATERMARK
    for event in events:
        operator.element(event)
        if lag is not None:
            max_ts = max(max_ts, event["ts"])
            watermark = max_ts - lag - 1
            if watermark > operator.watermark:
                operator.advance_watermark(watermark)
    operator.advance_watermark(MAX_WATERMARK)
    result: Result = {
        "id": case_id,
        "error": None,
        "matches": operator.matches,
        "timeouts": operator.timeouts,
    }
    if lag is not None:
        result["matches_after"] = operator.matches_after
        result["timeouts_after"] = operator.timeouts_after
    return result


def timers_differ(case: Mapping[str, Any]) -> bool:
    """Can the engine's timers and Flink's give different results on ``case``?

    Only with watermarks during the input (with a single final watermark every key is fed all
    its events before any timer fires), and only for a ``PREVIOUS_AND_CURRENT`` window, or a
    ``FIRST_AND_LAST`` window on a case with an event at a timestamp <= 0 (Flink sets no timer
    for a match started there).
    """
    if case.get("watermarks") is None:
        return False
    kinds = _window_types(case.get("pattern") or ())
    if WithinType.PREVIOUS_AND_CURRENT.name in kinds:
        return True
    return WithinType.FIRST_AND_LAST.name in kinds and any(
        e.get("ts", 1) <= 0 for e in case.get("events") or ()
    )


def _window_types(stages: Sequence[Any]) -> set[str]:
    found: set[str] = set()
    for stage in stages:
        if not isinstance(stage, Mapping):
            continue
        for window in stage.get("within") or ():
            if isinstance(window, Mapping):
                found.add(str(window.get("type", WithinType.FIRST_AND_LAST.name)))
        found |= _window_types(stage.get("group") or ())
    return found
