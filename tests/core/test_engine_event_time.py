"""Event time: buffering until the watermark, bounded disorder, late events, flush, timestamps.

The contract (``docs/concepts.md``, "Event time"): an event is buffered until the watermark (max
timestamp seen - max_out_of_orderness - 1 ms) reaches its timestamp, then processed in
timestamp order, equal timestamps in arrival order. An event whose timestamp is <= the
current watermark is late: reported, never processed, never silently dropped. Windows end
exclusively (``a@0, b@10`` within 10 ms does not match and times out at 10).

The expectations below come from that text: the sorted stream is the oracle for the disordered
one, and the watermark of the late-event model is computed here, from the definition.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.events import ev, ids, kind

from fraudcep import (
    ConfigurationError,
    Engine,
    EventError,
    LateEvent,
    Pattern,
    Rule,
    SkipStrategy,
    TimedOutMatch,
)

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)


def rules() -> list[Rule]:
    """Rules whose windows are all FIRST_AND_LAST (expiry follows start order)."""
    return [
        Rule(
            "ab-within",
            Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")).within(12),
            key="k",
        ),
        Rule(
            "a-next-b",
            Pattern.begin("a").where(kind("a")).next("b").where(kind("b")),
            key="k",
        ),
        Rule(
            "a2-c-skip",
            Pattern.begin("a", skip=SkipStrategy.skip_past_last_event())
            .where(kind("a"))
            .times(2)
            .followed_by("c")
            .where(kind("c"))
            .within(20),
            key="k",
        ),
        Rule(
            "a-not-c",
            Pattern.begin("a").where(kind("a")).not_followed_by("c").where(kind("c")).within(8),
            key="k",
        ),
        Rule(
            "a-not-next-c",
            Pattern.begin("a").where(kind("a")).not_next("c").where(kind("c")).within(9),
            key="k",
        ),
        Rule(
            "d-b-strict-times",
            Pattern.begin("d").where(kind("d")).next("b").where(kind("b")).times(2).consecutive(),
            key="k",
        ),
        Rule(
            "b-plus-c-global",
            Pattern.begin("b")
            .where(kind("b"))
            .one_or_more()
            .followed_by("c")
            .where(kind("c"))
            .within(15),
            key=lambda e: "all",
        ),
    ]


def run(events: list[dict[str, Any]], batch: bool = False, **options: Any) -> dict[str, Any]:
    """Feed ``events`` (one by one, or in one ``process_many`` call), then flush; everything
    observable, in emission order."""
    engine = Engine(rules(), timestamp="ts", **options)
    alerts = []
    if batch:
        alerts += engine.process_many(events)
    else:
        for event in events:
            alerts += engine.process(event)
    alerts += engine.flush()
    return {
        "alerts": [(a.rule_id, a.key, a.alert_id, ids(a.events)) for a in alerts],
        "timeouts": [
            (t.rule_id, t.key, t.timeout_ts, ids(t.events)) for t in engine.drain_timeouts()
        ],
        "late": [(x.event["id"], x.timestamp, x.watermark) for x in engine.drain_late()],
        "stats": engine.stats,
    }


def per_key(alerts: list[tuple[Any, ...]]) -> dict[tuple[str, Any], list[Any]]:
    out: dict[tuple[str, Any], list[Any]] = defaultdict(list)
    for rule_id, key, alert_id, events in alerts:
        out[rule_id, key].append((alert_id, events))
    return dict(out)


@st.composite
def disordered_streams(draw: st.DrawFn, max_late: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """A keyed stream and a bound D; every event arrives at most D ms after its timestamp, so
    no event is behind (max timestamp seen before it - D). ``max_late`` > 0 adds events that
    arrive up to that much later than the bound allows."""
    bound = draw(st.integers(0, 12))
    size = draw(st.integers(0, 40))  # drawn first: plain lists() stay short
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from("xyz"),
                st.sampled_from("aabbcd"),
                st.integers(0, 5),
                st.integers(0, bound + max_late),
            ),
            min_size=size,
            max_size=size,
        )
    )
    ts = 0
    timed = []
    for i, (key, t, gap, delay) in enumerate(steps):
        ts += gap
        timed.append((ts + delay, i, {"id": i, "ts": ts, "k": key, "t": t}))
    timed.sort(key=lambda x: (x[0], x[1]))  # arrival time, then generation order
    return bound, [event for _, _, event in timed]


def by_time(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(timestamp, arrival) order: Python's sort is stable."""
    return sorted(events, key=lambda e: e["ts"])


@PROPERTY
@given(disordered_streams())
def test_bounded_disorder_gives_the_alerts_of_the_sorted_stream(
    case: tuple[int, list[dict[str, Any]]],
) -> None:
    bound, events = case
    in_order = run(by_time(events))
    assert in_order["late"] == []
    # everything buffered until flush(): no event is judged before the watermark passes it
    buffered = run(events, auto_watermark=False)
    assert buffered["late"] == []
    assert per_key(buffered["alerts"]) == per_key(in_order["alerts"])
    assert Counter(buffered["timeouts"]) == Counter(in_order["timeouts"])
    for batch in (False, True):
        disordered = run(events, batch=batch, max_out_of_orderness=bound)
        assert disordered["late"] == []
        assert disordered["stats"].events_late == 0
        assert disordered["stats"].events_in == len(events)
        # same alerts, same ids, same order for every (rule, key)
        assert per_key(disordered["alerts"]) == per_key(in_order["alerts"])
        assert Counter(disordered["alerts"]) == Counter(in_order["alerts"])
        assert Counter(disordered["timeouts"]) == Counter(in_order["timeouts"])


def watermark_model(events: list[dict[str, Any]], bound: int) -> list[tuple[Any, int, int]]:
    """Which events are late by the contract's definition, with the watermark they met."""
    watermark: int | None = None
    max_ts: int | None = None
    late = []
    for event in events:
        ts = event["ts"]
        if watermark is not None and ts <= watermark:
            late.append((event["id"], ts, watermark))
            continue
        max_ts = ts if max_ts is None else max(max_ts, ts)
        candidate = max_ts - bound - 1
        watermark = candidate if watermark is None else max(watermark, candidate)
    return late


@PROPERTY
@given(disordered_streams(max_late=10))
def test_late_events_are_reported_and_change_nothing(
    case: tuple[int, list[dict[str, Any]]],
) -> None:
    bound, events = case
    expected_late = watermark_model(events, bound)
    late_ids = {event_id for event_id, _, _ in expected_late}
    on_time = [e for e in events if e["id"] not in late_ids]
    expected = run(by_time(on_time))
    for batch in (False, True):
        got = run(events, batch=batch, max_out_of_orderness=bound)
        assert got["late"] == expected_late
        assert got["stats"].events_late == len(expected_late)
        assert got["stats"].events_in == len(events) - len(expected_late)
        # the alerts are those of the stream without the late events
        assert per_key(got["alerts"]) == per_key(expected["alerts"])
        assert Counter(got["timeouts"]) == Counter(expected["timeouts"])

    # the callback receives the same reports, and then nothing is left to drain
    seen: list[LateEvent] = []
    engine = Engine(rules(), timestamp="ts", max_out_of_orderness=bound, on_late=seen.append)
    for event in events:
        engine.process(event)
    engine.flush()
    assert [(x.event["id"], x.timestamp, x.watermark) for x in seen] == expected_late
    assert engine.drain_late() == []


def test_process_many_reports_the_watermark_a_late_event_met() -> None:
    engine = Engine([ab_rule()], timestamp="ts")
    engine.process_many([ev(1, 1, "a"), ev(2, 0, "a")])  # watermark 0 after the first
    assert [(x.timestamp, x.watermark) for x in engine.drain_late()] == [(0, 0)]


def ab_rule(window: int | None = 10) -> Rule:
    pattern = Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b"))
    if window is not None:
        pattern = pattern.within(window)
    return Rule("ab", pattern, key="k")


def test_late_event_is_reported_with_its_timestamp_and_the_watermark() -> None:
    engine = Engine([ab_rule()], timestamp="ts", max_out_of_orderness=5)
    engine.process(ev(1, 100, "a"))  # watermark 100 - 5 - 1 = 94
    assert engine.watermark == 94
    assert engine.process(ev(2, 95, "b")) == []  # 95 > 94: in time, buffered
    late_b = ev(3, 94, "b")
    assert engine.process(late_b) == []
    assert engine.drain_late() == [LateEvent(late_b, 94, 94)]
    assert engine.drain_late() == []  # drained
    # the late b matched nothing: the a@100 waits for a b after it
    assert engine.flush() == []
    [timeout] = engine.drain_timeouts()
    assert timeout.timeout_ts == 110
    assert engine.stats.events_late == 1


def test_auto_watermark_off_buffers_until_advance_watermark() -> None:
    engine = Engine([ab_rule(None)], timestamp="ts", auto_watermark=False)
    assert engine.process_many([ev(1, 10, "a"), ev(2, 30, "b"), ev(3, 5, "b")]) == []
    assert engine.watermark is None
    assert engine.stats.buffered_events == 3
    # up to 29: a@10 and b@5 are processed (b@5 is before a, so no match yet)
    assert engine.advance_watermark(29) == []
    assert engine.watermark == 29
    assert engine.stats.buffered_events == 1
    # an event at the watermark is late now; one after it is still buffered
    late = ev(4, 29, "b")
    engine.process(late)
    assert [x.event for x in engine.drain_late()] == [late]
    engine.process(ev(5, 31, "b"))
    alerts = engine.advance_watermark(30)
    assert [ids(a.events) for a in alerts] == [(("a", (1,)), ("b", (2,)))]
    assert engine.stats.buffered_events == 1
    # a watermark that does not move forward changes nothing
    assert engine.advance_watermark(3) == []
    assert engine.watermark == 30
    # a followed_by b completes with the first b after a: b@31 starts nothing new
    assert engine.flush() == []
    assert engine.stats.buffered_events == 0


def test_advance_watermark_with_auto_watermark_releases_buffered_events() -> None:
    engine = Engine([ab_rule(None)], timestamp="ts", max_out_of_orderness=1_000)
    assert engine.process_many([ev(1, 10, "a"), ev(2, 20, "b")]) == []
    alerts = engine.advance_watermark(20)
    assert [ids(a.events) for a in alerts] == [(("a", (1,)), ("b", (2,)))]
    # the watermark is not pulled back by the next event's (lower) automatic watermark
    engine.process(ev(3, 21, "a"))
    assert engine.watermark == 20


def test_next_due_is_the_watermark_that_would_change_something() -> None:
    engine = Engine([ab_rule(10)], timestamp="ts", max_out_of_orderness=1_000)
    assert engine.next_due is None
    engine.process_many([ev(1, 100, "a"), ev(2, 50, "x")])
    # events are held until the watermark passes them, x@50 too
    assert engine.next_due == 50
    assert engine.advance_watermark(50) == []
    assert engine.next_due == 100
    assert engine.advance_watermark(engine.next_due - 1) == []
    assert engine.stats.buffered_events == 1
    engine.advance_watermark(100)
    # a@100 is now a partial match whose window closes at 110: its timer is due then
    assert engine.stats.buffered_events == 0
    assert engine.next_due == 110
    engine.advance_watermark(110)
    assert [t.timeout_ts for t in engine.drain_timeouts()] == [110]
    assert engine.next_due is None


def test_flush_processes_the_buffer_and_closes_windows() -> None:
    reported: list[TimedOutMatch] = []
    with_callback = Engine(
        [ab_rule(10)], timestamp="ts", max_out_of_orderness=100, on_timeout=reported.append
    )
    drained = Engine([ab_rule(10)], timestamp="ts", max_out_of_orderness=100)
    events = [
        ev(1, 0, "a"),
        ev(2, 10, "b"),  # exactly at the window end: too late for a@0
        ev(3, 20, "a"),
        ev(4, 29, "b"),  # 9 ms after a@20: a match
        ev(5, 40, "a", k="y"),  # nothing follows: times out at 50
    ]
    for engine in (with_callback, drained):
        assert engine.process_many(events) == []  # all buffered (disorder bound 100)
        alerts = engine.flush()
        assert [ids(a.events) for a in alerts] == [(("a", (3,)), ("b", (4,)))]
        assert (alerts[0].first_ts, alerts[0].last_ts) == (20, 29)
        assert engine.stats.buffered_events == 0
        assert engine.stats.live_partial_matches == 0
    timeouts = drained.drain_timeouts()
    assert reported == timeouts
    assert with_callback.drain_timeouts() == []
    assert sorted((t.key, t.timeout_ts, ids(t.events)) for t in timeouts) == [
        ("x", 10, (("a", (1,)),)),
        ("y", 50, (("a", (5,)),)),
    ]
    assert drained.stats.timeouts == 2


@pytest.mark.parametrize(("gap", "matched"), [(9, True), (10, False)])
def test_window_end_is_exclusive(gap: int, matched: bool) -> None:
    engine = Engine([ab_rule(10)], timestamp="ts")
    alerts = engine.process_many([ev(1, 1_000, "a"), ev(2, 1_000 + gap, "b")]) + engine.flush()
    assert bool(alerts) is matched
    timeouts = engine.drain_timeouts()
    if matched:
        assert timeouts == []
    else:
        assert [(t.timeout_ts, ids(t.events)) for t in timeouts] == [(1_010, (("a", (1,)),))]


def test_timeout_is_emitted_when_the_watermark_passes_the_window_end() -> None:
    engine = Engine([ab_rule(10)], timestamp="ts")
    engine.process(ev(1, 0, "a"))
    engine.process(ev(2, 10, "z", k="other"))  # watermark 9: window [0, 10) still open
    assert engine.drain_timeouts() == []
    engine.process(ev(3, 11, "z", k="other"))  # watermark 10: it closed
    assert [t.timeout_ts for t in engine.drain_timeouts()] == [10]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(disordered_streams(), st.integers(1_500_000_000_000, 1_900_000_000_000))
def test_datetime_timestamps_work_like_int_milliseconds(
    case: tuple[int, list[dict[str, Any]]], origin: int
) -> None:
    bound, events = case
    as_int = [dict(e, ts=e["ts"] + origin) for e in events]
    zones = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]
    as_datetime = [
        dict(e, ts=(EPOCH + timedelta(milliseconds=e["ts"])).astimezone(zones[i % 3]))
        for i, e in enumerate(as_int)
    ]

    def observed(stream: list[dict[str, Any]]) -> Any:
        engine = Engine(rules(), timestamp="ts", max_out_of_orderness=timedelta(milliseconds=bound))
        alerts = engine.process_many(stream) + engine.flush()
        return (
            [(a.rule_id, a.key, a.first_ts, a.last_ts, ids(a.events)) for a in alerts],
            Counter(
                (t.rule_id, t.key, t.timeout_ts, ids(t.events)) for t in engine.drain_timeouts()
            ),
            engine.drain_late(),
        )

    assert observed(as_datetime) == observed(as_int)


def test_naive_datetime_is_read_as_utc() -> None:
    engine = Engine([ab_rule(10)], timestamp="ts")
    alerts = (
        engine.process_many(
            [
                ev(1, datetime(2024, 1, 1, 12, 0, 0), "a"),
                ev(2, datetime(2024, 1, 1, 12, 0, 0, 5_000), "b"),
            ]
        )
        + engine.flush()
    )
    expected = int((datetime(2024, 1, 1, 12, tzinfo=UTC) - EPOCH) / timedelta(milliseconds=1))
    assert [(a.first_ts, a.last_ts) for a in alerts] == [(expected, expected + 5)]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.integers(-(2**41), 2**42) | st.just(1_086_009_440_909),
    st.sampled_from([0, 60, -330, 14 * 60]),
)
def test_datetime_conversion_is_exact_to_the_millisecond(ms: int, offset_minutes: int) -> None:
    """Whole-millisecond datetimes, in any time zone, give exactly their epoch milliseconds
    (2004-05-31T13:17:20.909Z once came out 1 ms early through float seconds)."""
    zone = timezone(timedelta(minutes=offset_minutes))
    instant = (EPOCH + timedelta(milliseconds=ms)).astimezone(zone)
    engine = Engine([Rule("a", Pattern.begin("a").where(kind("a")), key="k")], timestamp="ts")
    [alert] = engine.process_many([ev(1, instant, "a")]) + engine.flush()
    assert alert.first_ts == ms


@pytest.mark.parametrize("bad", [1.5, 1_700_000_000_000.0, "1700000000000", None, True])
def test_timestamp_of_the_wrong_type_raises_event_error(bad: Any) -> None:
    engine = Engine([ab_rule()], timestamp="ts")
    engine.process(ev(1, 5, "a"))
    before = engine.snapshot()
    with pytest.raises(EventError, match="timestamp"):
        engine.process(ev(2, bad, "b"))
    assert engine.snapshot() == before


def test_float_timestamp_error_names_the_type() -> None:
    engine = Engine([ab_rule()], timestamp="ts")
    with pytest.raises(EventError, match="float"):
        engine.process(ev(1, 1.0, "a"))


def test_callable_timestamp() -> None:
    engine = Engine([ab_rule(10)], timestamp=lambda e: e["when"] * 1_000)
    events = [{"id": 1, "when": 1, "k": "x", "t": "a"}, {"id": 2, "when": 2, "k": "x", "t": "b"}]
    alerts = engine.process_many(events) + engine.flush()
    assert alerts == []  # 1 s apart, window 10 ms
    assert [t.timeout_ts for t in engine.drain_timeouts()] == [1_010]


def strict_pair() -> Rule:
    return Rule("a-next-b", Pattern.begin("a").where(kind("a")).next("b").where(kind("b")), key="k")


@pytest.mark.parametrize(
    ("arrivals", "matched"),
    [
        ([("a", 5), ("b", 5)], True),
        ([("b", 5), ("a", 5)], False),
        # disorder: x@3 sorts before both; a and b keep their arrival order
        ([("a", 5), ("x", 3), ("b", 5)], True),
        ([("b", 5), ("x", 3), ("a", 5)], False),
        # an event between a and b at the same timestamp breaks strict contiguity
        ([("a", 5), ("x", 5), ("b", 5)], False),
        ([("x", 5), ("a", 5), ("b", 5)], True),
    ],
)
def test_equal_timestamps_are_processed_in_arrival_order(
    arrivals: list[tuple[str, int]], matched: bool
) -> None:
    events = [ev(i, ts, t) for i, (t, ts) in enumerate(arrivals)]
    engine = Engine([strict_pair()], timestamp="ts", max_out_of_orderness=10)
    alerts = engine.process_many(events) + engine.flush()
    assert bool(alerts) is matched
    assert engine.drain_late() == []


def test_event_time_ops_refused_in_the_wrong_mode() -> None:
    engine = Engine([ab_rule()], timestamp="ts")
    with pytest.raises(ConfigurationError, match="processing time"):
        engine.advance_time()
