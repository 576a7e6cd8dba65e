"""Processing time: events are matched in arrival order, windows are measured on the clock.

The clock is a fake one the test moves by hand; the engine must read it (never the system
clock) whenever it needs the time: on every event and on ``advance_time()``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.events import id_lists as ids
from support.events import kind

from fraudcep import (
    ConfigurationError,
    Engine,
    EventError,
    Pattern,
    Rule,
    TimedOutMatch,
    TimeMode,
)


class FakeClock:
    """A clock that says what the test tells it to, and counts how often it was read."""

    def __init__(self, now: int = 0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.now


def ab(window: int | None = 10) -> Rule:
    pattern = Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b"))
    if window is not None:
        pattern = pattern.within(window)
    return Rule("ab", pattern, key="k")


def engine_for(rules: list[Rule], clock: FakeClock, **options: Any) -> Engine:
    return Engine(rules, time_mode=TimeMode.PROCESSING_TIME, clock=clock, **options)


def ev(event_id: int, t: str, k: str = "x", **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "t": t, "k": k, **extra}


def test_events_are_matched_in_arrival_order_whatever_their_timestamps() -> None:
    clock = FakeClock(1_000)
    engine = engine_for([ab(None)], clock)
    # the "ts" fields say b happened long before a; processing time ignores them
    assert engine.process(ev(1, "a", ts=10_000)) == []
    clock.now = 1_003
    [alert] = engine.process(ev(2, "b", ts=5))
    assert ids(alert.events) == {"a": [1], "b": [2]}
    assert (alert.first_ts, alert.last_ts) == (1_000, 1_003)  # clock readings
    assert clock.reads >= 2


def test_same_clock_reading_keeps_arrival_order() -> None:
    clock = FakeClock(50)
    strict = Rule(
        "a-next-b", Pattern.begin("a").where(kind("a")).next("b").where(kind("b")), key="k"
    )
    engine = engine_for([strict], clock)
    assert engine.process_many([ev(1, "b"), ev(2, "a"), ev(3, "c"), ev(4, "b")]) == []
    [alert] = engine.process_many([ev(5, "a"), ev(6, "b")])
    assert ids(alert.events) == {"a": [5], "b": [6]}


@pytest.mark.parametrize(("elapsed", "matched"), [(9, True), (10, False)])
def test_window_is_measured_on_the_clock(elapsed: int, matched: bool) -> None:
    clock = FakeClock(500)
    engine = engine_for([ab(10)], clock)
    engine.process(ev(1, "a"))
    clock.now += elapsed
    alerts = engine.process(ev(2, "b"))
    assert bool(alerts) is matched
    timeouts = engine.drain_timeouts()
    if matched:
        assert timeouts == []
    else:
        # the window [500, 510) closed before b was looked at
        assert [(t.timeout_ts, ids(t.events)) for t in timeouts] == [(510, {"a": [1]})]


def test_advance_time_fires_timeouts_when_the_clock_passes_the_window_end() -> None:
    clock = FakeClock(0)
    reported: list[TimedOutMatch] = []
    engine = engine_for([ab(10)], clock, on_timeout=reported.append)
    engine.process(ev(1, "a"))
    clock.now = 5
    engine.process(ev(2, "a", k="y"))
    clock.now = 9
    assert engine.advance_time() == []
    assert reported == []
    clock.now = 10
    engine.advance_time()
    assert [(t.key, t.timeout_ts) for t in reported] == [("x", 10)]
    clock.now = 100
    engine.advance_time()
    assert [(t.key, t.timeout_ts) for t in reported] == [("x", 10), ("y", 15)]
    assert engine.drain_timeouts() == []  # went to the callback
    assert engine.stats.live_keys == 0
    assert engine.stats.timeouts == 2


def test_not_followed_by_is_emitted_when_the_clock_closes_the_window() -> None:
    clock = FakeClock(0)
    rule = Rule(
        "a-no-c",
        Pattern.begin("a").where(kind("a")).not_followed_by("c").where(kind("c")).within(10),
        key="k",
    )
    engine = engine_for([rule], clock)
    engine.process(ev(1, "a"))
    engine.process(ev(2, "a", k="y"))
    clock.now = 4
    engine.process(ev(3, "c", k="y"))  # y's a is spoiled
    clock.now = 9
    assert engine.advance_time() == []
    clock.now = 10
    [alert] = engine.advance_time()
    assert (alert.key, ids(alert.events), alert.emitted_at) == ("x", {"a": [1]}, 10)
    assert engine.stats.live_partial_matches == 0


def test_flush_ends_everything() -> None:
    clock = FakeClock(0)
    no_c = Rule(
        "a-no-c",
        Pattern.begin("a").where(kind("a")).not_followed_by("c").where(kind("c")).within(1_000),
        key="k",
    )
    engine = engine_for([ab(1_000), no_c], clock)
    engine.process(ev(1, "a"))
    clock.now = 3
    engine.process(ev(2, "a", k="y"))
    alerts = engine.flush()
    assert sorted((a.rule_id, a.key) for a in alerts) == [("a-no-c", "x"), ("a-no-c", "y")]
    timeouts = engine.drain_timeouts()
    assert sorted((t.key, t.timeout_ts) for t in timeouts) == [("x", 1_000), ("y", 1_003)]
    assert engine.stats.live_keys == 0
    assert engine.stats.live_partial_matches == 0


def test_time_never_runs_backwards() -> None:
    clock = FakeClock(100)
    engine = engine_for([ab(10)], clock)
    engine.process(ev(1, "a"))
    clock.now = 50  # a clock that jumps back must not reopen anything
    alerts = engine.process(ev(2, "b"))
    assert [(a.first_ts, a.last_ts) for a in alerts] == [(100, 100)]


def test_wrong_mode_calls_are_refused() -> None:
    engine = engine_for([ab()], FakeClock())
    with pytest.raises(ConfigurationError, match="advance_time"):
        engine.advance_watermark(10)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.integers(0, 30).flatmap(
        lambda size: st.lists(
            st.tuples(st.sampled_from("xy"), st.sampled_from("abc"), st.integers(0, 6)),
            min_size=size,
            max_size=size,
        )
    )
)
def test_processing_time_equals_event_time_with_clock_readings_as_timestamps(
    steps: list[tuple[str, str, int]],
) -> None:
    """Stamping each event with the clock reading at arrival and running event time gives the
    same matches: processing time is event time on the clock's timeline."""
    rules = [
        ab(10),
        Rule(
            "a-no-c",
            Pattern.begin("a").where(kind("a")).not_followed_by("c").where(kind("c")).within(7),
            key="k",
        ),
    ]
    clock = FakeClock(0)
    live = engine_for(rules, clock)
    stamped = []
    alerts = []
    for i, (key, t, gap) in enumerate(steps):
        clock.now += gap
        event = ev(i, t, key)
        alerts += live.process(event)
        stamped.append({**event, "ts": clock.now})
    alerts += live.flush()
    replay = Engine(rules, timestamp="ts")
    expected = replay.process_many(stamped) + replay.flush()

    def render(xs: list[Any]) -> list[Any]:
        return sorted((a.rule_id, a.key, a.first_ts, a.last_ts, repr(ids(a.events))) for a in xs)

    def render_timeouts(xs: list[TimedOutMatch]) -> list[Any]:
        return sorted((t.rule_id, t.key, t.timeout_ts, repr(ids(t.events))) for t in xs)

    assert render(alerts) == render(expected)
    assert render_timeouts(live.drain_timeouts()) == render_timeouts(replay.drain_timeouts())


def test_event_without_its_key_raises_event_error_naming_the_field() -> None:
    clock = FakeClock(0)
    engine = engine_for([ab(10)], clock)
    engine.process(ev(1, "a"))
    with pytest.raises(EventError, match="'k'"):
        engine.process({"id": 2, "t": "b"})
    clock.now = 5
    [alert] = engine.process(ev(3, "b"))
    assert ids(alert.events) == {"a": [1], "b": [3]}
    assert engine.stats.events_in == 2


def test_other_keys_events_fire_expired_windows() -> None:
    """Any event reads the clock: windows that closed by then are reported, whichever key
    sent the event (no advance_time() call is needed)."""
    clock = FakeClock(0)
    no_c = Rule(
        "a-no-c",
        Pattern.begin("a").where(kind("a")).not_followed_by("c").where(kind("c")).within(10),
        key="k",
    )
    engine = engine_for([ab(10), no_c], clock)
    engine.process(ev(1, "a"))
    clock.now = 9
    assert engine.process(ev(2, "d", k="y")) == []
    assert engine.drain_timeouts() == []
    clock.now = 10
    alerts = engine.process(ev(3, "d", k="y"))
    assert [(a.rule_id, a.key, ids(a.events)) for a in alerts] == [("a-no-c", "x", {"a": [1]})]
    assert [(t.rule_id, t.key, t.timeout_ts) for t in engine.drain_timeouts()] == [("ab", "x", 10)]
    assert engine.stats.live_keys == 0
