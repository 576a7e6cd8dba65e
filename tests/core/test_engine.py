"""Many rules over one keyed stream, in one pass.

Oracle: a rule's alerts for a key depend only on that key's events (rules are run "separately
for every key"). The test splits the stream itself, runs a fresh single-rule engine on each
key's sub-stream, and compares with the engine that runs every rule over the whole stream.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep import (
    ConfigurationError,
    Engine,
    EventError,
    Pattern,
    Rule,
    SkipStrategy,
    TimeMode,
)


def field(event: Any, name: str) -> Any:
    """A field of a mapping event or an attribute of an object event."""
    return event[name] if isinstance(event, dict) else getattr(event, name)


def kind(*kinds: str) -> Callable[[Any], bool]:
    wanted = frozenset(kinds)
    return lambda e: field(e, "t") in wanted


def big(e: Any) -> bool:
    return bool(field(e, "amount") >= 50)


# Each rule with the function that computes its key, written independently of the engine.
RULES: list[tuple[Rule, Callable[[Any], Any]]] = [
    (
        Rule(
            "user-a-then-b",
            Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")).within(15),
            key="user",
        ),
        lambda e: field(e, "user"),
    ),
    (
        Rule(
            "card-two-big",
            Pattern.begin("x", skip=SkipStrategy.skip_past_last_event())
            .where(big)
            .times(2)
            .within(10),
            key="card",
        ),
        lambda e: field(e, "card"),
    ),
    (
        Rule(
            "pair-a-next-c",
            Pattern.begin("a").where(kind("a")).next("c").where(kind("c")),
            key=lambda e: (field(e, "user"), field(e, "card")),
        ),
        lambda e: (field(e, "user"), field(e, "card")),
    ),
    (
        Rule(
            "user-b-not-c",
            Pattern.begin("b").where(kind("b")).not_followed_by("c").where(kind("c")).within(6),
            key="user",
        ),
        lambda e: field(e, "user"),
    ),
    (
        Rule(
            "card-b-any-c",
            Pattern.begin("b").where(kind("b")).followed_by_any("c").where(kind("c")),
            key="card",
        ),
        lambda e: field(e, "card"),
    ),
    (
        Rule(
            "user-a-plus-until-b",
            Pattern.begin("a", skip=SkipStrategy.skip_to_next())
            .where(kind("a"))
            .one_or_more()
            .followed_by("b")
            .where(kind("b"))
            .within(12),
            key="user",
        ),
        lambda e: field(e, "user"),
    ),
]


def render(events: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    return tuple((name, tuple(field(e, "id") for e in evs)) for name, evs in events.items())


def alerts_by_key(alerts: list[Any]) -> dict[tuple[str, Any], list[Any]]:
    out: dict[tuple[str, Any], list[Any]] = defaultdict(list)
    for a in alerts:
        out[a.rule_id, a.key].append((a.alert_id, render(a.events)))
    return dict(out)


def timeouts_of(engine: Engine) -> Counter[Any]:
    return Counter(
        (t.rule_id, t.key, t.timeout_ts, render(t.events)) for t in engine.drain_timeouts()
    )


def run_all(events: list[Any], bound: int, batch: bool) -> tuple[list[Any], Counter[Any]]:
    engine = Engine([rule for rule, _ in RULES], timestamp="ts", max_out_of_orderness=bound)
    if batch:
        alerts = engine.process_many(events)
    else:
        alerts = [a for event in events for a in engine.process(event)]
    alerts += engine.flush()
    assert engine.drain_late() == []
    return alerts, timeouts_of(engine)


def run_split(events: list[Any], bound: int) -> tuple[dict[Any, list[Any]], Counter[Any]]:
    """The oracle: one fresh single-rule engine per (rule, key), fed that key's events only."""
    expected: dict[Any, list[Any]] = {}
    timeouts: Counter[Any] = Counter()
    for rule, key_of in RULES:
        sub_streams: dict[Any, list[Any]] = defaultdict(list)
        for event in events:
            sub_streams[key_of(event)].append(event)
        for key, sub_stream in sub_streams.items():
            engine = Engine([rule], timestamp="ts", max_out_of_orderness=bound)
            alerts = engine.process_many(sub_stream) + engine.flush()
            assert {a.key for a in alerts} <= {key}
            if alerts:
                expected[rule.id, key] = [(a.alert_id, render(a.events)) for a in alerts]
            timeouts += timeouts_of(engine)
    return expected, timeouts


@st.composite
def keyed_streams(draw: st.DrawFn) -> tuple[int, list[dict[str, Any]]]:
    bound = draw(st.integers(0, 8))
    size = draw(st.integers(0, 45))  # drawn first: plain lists() stay short
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["u1", "u2", "u3"]),
                st.sampled_from(["c1", "c2"]),
                st.sampled_from("aabbcd"),
                st.sampled_from([10, 60]),
                st.integers(0, 4),
                st.integers(0, bound),
            ),
            min_size=size,
            max_size=size,
        )
    )
    ts = 0
    timed = []
    for i, (user, card, t, amount, gap, delay) in enumerate(steps):
        ts += gap
        event = {"id": i, "ts": ts, "user": user, "card": card, "t": t, "amount": amount}
        timed.append((ts + delay, i, event))
    timed.sort(key=lambda x: (x[0], x[1]))
    return bound, [event for _, _, event in timed]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(keyed_streams(), st.booleans())
def test_one_pass_equals_each_rule_alone_on_each_key(
    case: tuple[int, list[dict[str, Any]]], batch: bool
) -> None:
    bound, events = case
    alerts, timeouts = run_all(events, bound, batch)
    expected, expected_timeouts = run_split(events, bound)
    assert alerts_by_key(alerts) == expected  # same alerts, ids and order per (rule, key)
    assert timeouts == expected_timeouts


def test_oracle_sees_alerts_of_every_rule() -> None:
    """The fixed stream below exercises every rule (guards the property against vacuity)."""
    events = [
        {"id": i, "ts": i, "user": u, "card": c, "t": t, "amount": amt}
        for i, (u, c, t, amt) in enumerate(
            [
                ("u1", "c1", "a", 60),
                ("u1", "c1", "c", 60),
                ("u2", "c2", "b", 10),
                ("u1", "c1", "b", 10),
                ("u2", "c2", "c", 10),
                ("u3", "c1", "b", 10),
                ("u3", "c2", "d", 10),
            ]
        )
    ]
    alerts, _ = run_all(events, 0, batch=True)
    expected, _ = run_split(events, 0)
    assert alerts_by_key(alerts) == expected
    assert {rule_id for rule_id, _ in expected} == {rule.id for rule, _ in RULES}


# -- key specifications and event shapes ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Payment:
    id: int
    ts: int
    user: str
    t: str


def key_rules(key: Any) -> list[Rule]:
    return [
        Rule(
            "ab",
            Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")).within(20),
            key=key,
        ),
        Rule("aa", Pattern.begin("a").where(kind("a")).next("a2").where(kind("a")), key=key),
    ]


KEYED_EVENTS = [
    (0, 1, "u1", "a"),
    (1, 2, "u2", "a"),
    (2, 3, "u2", "a"),
    (3, 4, "u1", "b"),
    (4, 5, "u2", "b"),
    (5, 30, "u1", "a"),
    (6, 31, "u2", "b"),
]


@pytest.mark.parametrize(
    ("key", "as_objects"),
    [
        ("user", False),
        (lambda e: e["user"], False),
        ("user", True),
        (lambda e: e.user, True),
    ],
    ids=["field-on-dict", "callable-on-dict", "field-on-dataclass", "callable-on-dataclass"],
)
def test_key_specs_agree(key: Any, as_objects: bool) -> None:
    if as_objects:
        events: list[Any] = [Payment(*row) for row in KEYED_EVENTS]
        timestamp: Any = "ts"
    else:
        events = [dict(zip(("id", "ts", "user", "t"), row, strict=True)) for row in KEYED_EVENTS]
        timestamp = "ts"
    engine = Engine(key_rules(key), timestamp=timestamp)
    alerts = engine.process_many(events) + engine.flush()
    got = sorted((a.rule_id, a.key, render(a.events)) for a in alerts)
    # worked out by hand from the events above
    assert got == [
        ("aa", "u2", (("a", (1,)), ("a2", (2,)))),
        ("ab", "u1", (("a", (0,)), ("b", (3,)))),
        ("ab", "u2", (("a", (1,)), ("b", (4,)))),
        ("ab", "u2", (("a", (2,)), ("b", (4,)))),
    ]
    assert [(t.key, t.timeout_ts) for t in engine.drain_timeouts()] == [("u1", 50)]


def test_timestamp_as_attribute_of_an_object_event() -> None:
    engine = Engine(key_rules("user"), timestamp="ts")
    alerts = engine.process_many([Payment(0, 1, "u1", "a"), Payment(1, 25, "u1", "b")])
    alerts += engine.flush()
    assert alerts == []  # 24 ms apart, window 20 ms
    assert [t.timeout_ts for t in engine.drain_timeouts()] == [21]


# -- bad events --------------------------------------------------------------------------


def good_events() -> list[dict[str, Any]]:
    return [
        {"id": i, "ts": ts, "user": u, "t": t}
        for i, (ts, u, t) in enumerate(
            [(1, "u1", "a"), (2, "u2", "a"), (4, "u1", "b"), (9, "u2", "b"), (40, "u1", "a")]
        )
    ]


@pytest.mark.parametrize(
    ("bad", "field_name"),
    [
        ({"id": 99, "ts": 3, "t": "b"}, "user"),  # no key
        ({"id": 99, "user": "u2", "t": "b"}, "ts"),  # no timestamp
    ],
)
@pytest.mark.parametrize("batch", [False, True])
def test_bad_event_raises_and_leaves_the_engine_unchanged(
    bad: dict[str, Any], field_name: str, batch: bool
) -> None:
    events = good_events()
    reference = Engine(key_rules("user"), timestamp="ts", max_out_of_orderness=3)
    engine = Engine(key_rules("user"), timestamp="ts", max_out_of_orderness=3)
    ref_alerts = reference.process_many(events[:3])
    alerts = engine.process_many(events[:3])
    before = engine.snapshot()
    with pytest.raises(EventError, match=repr(field_name)):
        if batch:
            engine.process_many([bad])
        else:
            engine.process(bad)
    assert engine.snapshot() == before
    assert engine.stats == reference.stats
    ref_alerts += reference.process_many(events[3:]) + reference.flush()
    alerts += engine.process_many(events[3:]) + engine.flush()
    assert [a.alert_id for a in alerts] == [a.alert_id for a in ref_alerts]
    assert len(alerts) == 2  # u1: a@1 b@4, u2: a@2 b@9
    assert engine.drain_timeouts() == reference.drain_timeouts()
    assert engine.stats == reference.stats


def test_bad_event_for_the_second_key_spec_raises_before_anything_changes() -> None:
    rules = [*key_rules("user"), Rule("by-card", Pattern.begin("a").where(kind("a")), key="card")]
    engine = Engine(rules, timestamp="ts")
    engine.process({"id": 0, "ts": 1, "user": "u1", "card": "c1", "t": "a"})
    before = engine.snapshot()
    with pytest.raises(EventError, match="'card'"):
        engine.process({"id": 1, "ts": 2, "user": "u1", "t": "b"})
    assert engine.snapshot() == before


# -- configuration errors ------------------------------------------------------------------


def simple_rule(rule_id: str = "r") -> Rule:
    return Rule(rule_id, Pattern.begin("a").where(kind("a")), key="user")


def test_duplicate_rule_ids_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="'dup'"):
        Engine([simple_rule("dup"), simple_rule("other"), simple_rule("dup")])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_out_of_orderness": -1}, "max_out_of_orderness"),
        ({"max_out_of_orderness": timedelta(milliseconds=-5)}, "max_out_of_orderness"),
        ({"max_out_of_orderness": 1.5}, "max_out_of_orderness"),
        ({"max_partial_matches_per_key": 0}, "max_partial_matches_per_key"),
        ({"max_partial_matches_per_key": -3}, "max_partial_matches_per_key"),
        ({"max_buffered_events": 0}, "max_buffered_events"),
        ({"time_mode": TimeMode.PROCESSING_TIME}, "clock"),
        ({"timestamp": None}, "timestamp"),
        ({"time_mode": "event_time"}, "time_mode"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Engine([simple_rule()], **options)


def test_processing_time_needs_no_timestamp() -> None:
    engine = Engine(
        [simple_rule()], timestamp=None, time_mode=TimeMode.PROCESSING_TIME, clock=lambda: 7
    )
    [alert] = engine.process({"id": 0, "user": "u1", "t": "a"})
    assert (alert.first_ts, alert.key) == (7, "u1")


def test_non_rule_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="Rule"):
        Engine([Pattern.begin("a")])  # type: ignore[list-item]


@pytest.mark.parametrize("batch", [False, True])
def test_unhashable_key_is_an_event_error_and_changes_nothing(batch: bool) -> None:
    """Regression: an unhashable key once escaped as TypeError after counters, the arrival
    sequence and other rules' pending counts had changed."""
    rules = [*key_rules("user"), Rule("by-tags", Pattern.begin("a").where(kind("a")), key="tags")]
    engine = Engine(rules, timestamp="ts", max_out_of_orderness=10)
    engine.process({"id": 0, "ts": 1, "user": "u1", "tags": "t", "t": "a"})
    before = (engine.snapshot(), engine.stats)
    bad = {"id": 1, "ts": 50, "user": "u1", "tags": ["x", "y"], "t": "a"}
    with pytest.raises(EventError, match="hashable"):
        if batch:
            engine.process_many([bad])
        else:
            engine.process(bad)
    assert (engine.snapshot(), engine.stats) == before


def test_unhashable_key_error_names_the_field_or_rule() -> None:
    rules = [*key_rules("user"), Rule("by-tags", Pattern.begin("a").where(kind("a")), key="tags")]
    engine = Engine(rules, timestamp="ts")
    with pytest.raises(EventError, match=r"'tags'|by-tags"):
        engine.process({"id": 1, "ts": 50, "user": "u1", "tags": ["x", "y"], "t": "a"})


def test_a_key_field_never_reads_methods_or_private_attributes() -> None:
    """``key: items`` on a mapping event, or a method or ``_private`` name of an object,
    is a missing field (an EventError), never the bound method itself."""
    import dataclasses

    from fraudcep.engine.rule import field_getter
    from fraudcep.errors import EventError

    @dataclasses.dataclass
    class Payment:
        user: str
        _secret: str = "s"

        def total(self) -> int:
            return 1

    assert field_getter("user")(Payment("u")) == "u"
    for name, event in [
        ("items", {"user": "u"}),
        ("keys", {"user": "u"}),
        ("total", Payment("u")),
        ("_secret", Payment("u")),
        ("__class__", Payment("u")),
    ]:
        with pytest.raises(EventError, match="no field"):
            field_getter(name)(event)
