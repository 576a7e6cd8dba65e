"""Bounded state: memory follows live partial matches, not keys ever seen; every buffer has a
bound and a documented overflow policy (drop the newest partial matches, force the watermark)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support.events import ev, kind
from support.events import id_lists as ids

from fraudcep import Engine, LateEvent, Pattern, Rule, SkipStrategy


def windowed_rules() -> list[Rule]:
    return [
        Rule(
            "ab",
            Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")).within(20),
            key="k",
        ),
        Rule(
            "a-no-c",
            Pattern.begin("a").where(kind("a")).not_followed_by("c").where(kind("c")).within(30),
            key="k",
        ),
        Rule(
            "a3",
            Pattern.begin("a", skip=SkipStrategy.skip_past_last_event())
            .where(kind("a"))
            .times(3)
            .within(25),
            key="k",
        ),
    ]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.integers(0, 60).flatmap(
        lambda size: st.lists(
            st.tuples(st.integers(0, 200), st.sampled_from("abcd"), st.integers(0, 3)),
            min_size=size,
            max_size=size,
        )
    )
)
def test_idle_keys_cost_nothing(steps: list[tuple[int, str, int]]) -> None:
    """Many keys, windowed rules: once the watermark is past every window, nothing is left,
    however many keys were seen."""
    engine = Engine(windowed_rules(), timestamp="ts", max_out_of_orderness=5)
    ts = 0
    for i, (key, t, gap) in enumerate(steps):
        ts += gap
        engine.process(ev(i, ts, t, k=key))
        stats = engine.stats
        assert stats.live_keys <= len({k for k, _, _ in steps[: i + 1]}) * 3
    # the largest window is 30 ms: 30 ms past the last event every run is over
    engine.advance_watermark(ts + 30)
    stats = engine.stats
    assert (stats.live_keys, stats.live_partial_matches, stats.buffered_events) == (0, 0, 0)
    assert stats.events_in == len(steps)


def test_idle_keys_are_forgotten_after_matches_complete() -> None:
    rule = Rule(
        "ab", Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")), key="k"
    )
    engine = Engine([rule], timestamp="ts")
    events = []
    for key in range(500):
        events += [ev(2 * key, 2 * key, "a", k=key), ev(2 * key + 1, 2 * key + 1, "b", k=key)]
    alerts = engine.process_many(events) + engine.flush()
    assert len(alerts) == 500
    assert (engine.stats.live_keys, engine.stats.live_partial_matches) == (0, 0)


def test_events_that_start_nothing_create_no_state() -> None:
    engine = Engine(windowed_rules(), timestamp="ts", max_out_of_orderness=50)
    engine.process_many(ev(i, i, "d", k=i) for i in range(1_000))
    assert engine.stats.live_keys == 0
    engine.flush()
    assert engine.stats.live_keys == 0
    assert engine.stats.buffered_events == 0
    assert engine.stats.events_in == 1_000


def test_state_size_shrinks_back_to_zero_while_the_stream_runs() -> None:
    """A long-running stream over ever new keys: live state stays about one window's worth."""
    engine = Engine(windowed_rules(), timestamp="ts")
    peak = 0
    for i in range(3_000):
        engine.process(ev(i, i, "a", k=i))  # a new key every ms, each starts runs
        peak = max(peak, engine.stats.live_keys)
    # windows are at most 30 ms: at most ~30 keys x 3 rules can be alive at once
    assert peak <= 3 * 32
    engine.advance_watermark(3_000 + 30)
    assert engine.stats.live_keys == 0


def test_cap_keeps_the_oldest_partial_matches() -> None:
    cap = 3
    rule = Rule(
        "ab", Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")), key="k"
    )
    engine = Engine([rule], timestamp="ts", max_partial_matches_per_key=cap)
    a_events = [ev(i, i, "a") for i in range(10)]
    engine.process_many(a_events)
    engine.advance_watermark(9)
    assert engine.stats.live_partial_matches == cap
    assert engine.stats.partial_matches_dropped == 10 - cap
    alerts = engine.process_many([ev(100, 100, "b")]) + engine.advance_watermark(100)
    # the runs started by the first three a's survive and complete
    assert sorted(ids(a.events)["a"][0] for a in alerts) == [0, 1, 2]
    # another key has a cap of its own
    other = engine.process_many([ev(200, 200, "a", k="y"), ev(201, 201, "b", k="y")])
    other += engine.flush()
    assert [ids(a.events) for a in other] == [{"a": [200], "b": [201]}]
    assert engine.stats.partial_matches_dropped == 10 - cap


def test_cap_applies_per_rule_and_key_and_is_counted() -> None:
    cap = 5
    rules = [
        Rule(
            "ab",
            Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")).within(1_000),
            key="k",
        ),
        Rule("a-next-b", Pattern.begin("a").where(kind("a")).next("b").where(kind("b")), key="k"),
    ]
    engine = Engine(rules, timestamp="ts", max_partial_matches_per_key=cap)
    events = [ev(i, i, "a", k=key) for i, key in enumerate(["x", "y"] * 20)]
    engine.process_many(events)
    engine.advance_watermark(100)
    stats = engine.stats
    # "ab": 20 a's per key, cap 5 each; "a-next-b": only the latest a waits (strict)
    assert stats.live_partial_matches == 2 * cap + 2
    assert stats.partial_matches_dropped == 2 * (20 - cap)


def explosive() -> Pattern:
    """a, any later a, any later a, then z: every 1-, 2- and 3-subsequence of the a's is a
    partial match."""
    return (
        Pattern.begin("a")
        .where(kind("a"))
        .followed_by_any("b")
        .where(kind("a"))
        .followed_by_any("c")
        .where(kind("a"))
        .followed_by_any("d")
        .where(kind("z"))
    )


def test_followed_by_any_explodes_without_a_cap() -> None:
    n = 20
    engine = Engine([Rule("boom", explosive(), key="k")], timestamp="ts")
    engine.process_many(ev(i, i, "a") for i in range(n))
    engine.advance_watermark(n)
    # n runs waiting for b, C(n, 2) for c, C(n, 3) for d
    assert engine.stats.live_partial_matches == n + n * (n - 1) // 2 + n * (n - 1) * (n - 2) // 6
    assert engine.stats.partial_matches_dropped == 0


def test_followed_by_any_explosion_is_bounded_by_the_cap() -> None:
    cap = 50
    engine = Engine(
        [Rule("boom", explosive(), key="k")], timestamp="ts", max_partial_matches_per_key=cap
    )
    n = 40
    for i in range(n):
        engine.process(ev(i, i, "a"))
        assert engine.stats.live_partial_matches <= cap
    engine.advance_watermark(n)
    stats = engine.stats
    assert stats.live_partial_matches == cap
    assert stats.partial_matches_dropped > 0
    # the runs that started with the first a alone outnumber the cap, and the oldest
    # survive: every match found starts with that a
    alerts = engine.process_many([ev(1_000, 1_000, "z")]) + engine.flush()
    assert alerts
    assert {tuple(ids(a.events)["a"]) for a in alerts} == {(0,)}


def test_buffer_cap_forces_the_watermark_and_reports_later_events_as_late() -> None:
    late: list[LateEvent] = []
    rule = Rule(
        "ab", Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")), key="k"
    )
    engine = Engine(
        [rule], timestamp="ts", auto_watermark=False, max_buffered_events=3, on_late=late.append
    )
    engine.process_many([ev(1, 10, "a"), ev(2, 20, "b"), ev(3, 30, "a")])
    assert engine.stats.buffered_events == 3
    assert engine.stats.forced_watermarks == 0
    alerts = engine.process(ev(4, 40, "b"))  # 4 > 3: the oldest is released
    assert engine.stats.forced_watermarks == 1
    assert engine.stats.buffered_events <= 3
    forced = engine.watermark
    assert forced is not None and forced >= 10
    # an event behind the forced watermark is reported, not dropped silently
    engine.process(ev(5, 5, "b"))
    assert [(x.event["id"], x.timestamp, x.watermark) for x in late] == [(5, 5, forced)]
    assert engine.stats.events_late == 1
    alerts += engine.flush()
    assert sorted(tuple(ids(a.events)["a"] + ids(a.events)["b"]) for a in alerts) == [
        (1, 2),
        (3, 4),
    ]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.integers(0, 40).flatmap(
        lambda size: st.lists(
            st.tuples(st.integers(0, 60), st.sampled_from("ab")), min_size=size, max_size=size
        )
    ),
    st.integers(1, 5),
)
def test_buffer_cap_never_loses_an_event(steps: list[tuple[int, str]], cap: int) -> None:
    """Every event is either processed (counted in events_in) or reported late, and the
    buffer never holds more than the cap."""
    rule = Rule(
        "ab", Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")), key="k"
    )
    engine = Engine([rule], timestamp="ts", max_out_of_orderness=1_000, max_buffered_events=cap)
    events = [ev(i, ts, t) for i, (ts, t) in enumerate(steps)]
    alerts = []
    for event in events:
        alerts += engine.process(event)
        assert engine.stats.buffered_events <= cap
    late = engine.drain_late()
    stats = engine.stats
    assert stats.events_in + stats.events_late == len(events)
    assert len(late) == stats.events_late
    if len(events) <= cap:
        assert stats.forced_watermarks == 0
        assert late == []
    # the late ones were at or behind the watermark when they arrived, and the alerts are
    # those of the in-time events in (timestamp, arrival) order
    assert all(x.timestamp <= x.watermark for x in late)
    late_ids = {x.event["id"] for x in late}
    alerts += engine.flush()
    on_time = sorted((e for e in events if e["id"] not in late_ids), key=lambda e: e["ts"])
    replay = Engine([rule], timestamp="ts")
    expected = replay.process_many(on_time) + replay.flush()
    assert [a.alert_id for a in alerts] == [a.alert_id for a in expected]
