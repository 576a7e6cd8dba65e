"""``process_many(events, refused=...)``: events the engine cannot read are handed over and the
rest go on, exactly as calling ``process`` for each event and catching ``EventError`` (what a
runtime that dead-letters such events did record by record)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep import Engine, EventError, Pattern, Rule, TimeMode


def _rules() -> list[Rule]:
    three_big = (
        Pattern.begin("big")
        .where(lambda p: p["amount"] > 100)
        .times(3)
        .within(timedelta(seconds=5))
    )
    hop = (
        Pattern.begin("a")
        .where(lambda p: p["amount"] > 50)
        .followed_by("b")
        .where(lambda p, ctx: p["country"] != ctx.events("a")[0]["country"])
        .within(timedelta(seconds=3))
    )
    return [
        Rule("three-big", three_big, key="user"),
        Rule("hop", hop, key="card"),  # a second key group: both keys are read
    ]


_BROKEN = ("no_ts", "bad_ts", "no_user", "unhashable_card", "no_card")


def _event(i: int, ts: int, user: int, amount: int, country: str, broken: str | None) -> Any:
    event: dict[str, Any] = {
        "id": i,
        "ts": ts,
        "user": f"u{user}",
        "card": f"c{user % 2}",
        "amount": amount,
        "country": country,
    }
    if broken == "no_ts":
        del event["ts"]
    elif broken == "bad_ts":
        event["ts"] = "soon"
    elif broken == "no_user":
        del event["user"]
    elif broken == "unhashable_card":
        event["card"] = ["c0"]
    elif broken == "no_card":
        del event["card"]
    return event


_events = st.lists(
    st.tuples(
        st.integers(0, 400),  # a step forward in time; disorder comes from the bound below
        st.integers(0, 3),
        st.integers(0, 200),
        st.sampled_from(["US", "GB"]),
        st.one_of(st.none(), st.none(), st.none(), st.sampled_from(_BROKEN)),
        st.integers(-600, 0),  # how far back the event is placed
    ),
    max_size=60,
).map(
    lambda rows: [
        _event(i, max(0, sum(r[0] for r in rows[: i + 1]) + back), user, amount, country, broken)
        for i, (_, user, amount, country, broken, back) in enumerate(rows)
    ]
)


def _engine(disorder: int) -> Engine:
    return Engine(_rules(), timestamp="ts", max_out_of_orderness=disorder)


def _summary(engine: Engine, alerts: list[Any]) -> tuple[Any, ...]:
    alerts = alerts + engine.flush()
    return (
        [a.alert_id for a in alerts],
        [(x.event["id"], x.watermark) for x in engine.drain_late()],
        engine.stats.events_in,
    )


@settings(max_examples=150, deadline=None)
@given(_events, st.sampled_from([0, 200, 500]), st.integers(1, 7))
def test_refused_events_are_handed_over_and_the_rest_processed_as_one_by_one(
    events: list[Any], disorder: int, chunk: int
) -> None:
    one_by_one = _engine(disorder)
    expected_alerts: list[Any] = []
    expected_refused: list[tuple[int, str]] = []
    for event in events:
        try:
            expected_alerts += one_by_one.process(event)
        except EventError as exc:
            expected_refused.append((event["id"], str(exc)))

    batched = _engine(disorder)
    alerts: list[Any] = []
    refused: list[tuple[int, str]] = []
    for start in range(0, len(events), chunk):
        alerts += batched.process_many(
            events[start : start + chunk],
            refused=lambda event, exc: refused.append((event["id"], str(exc))),
        )

    assert refused == expected_refused
    assert _summary(batched, alerts) == _summary(one_by_one, expected_alerts)
    assert batched.snapshot() == one_by_one.snapshot()


def test_without_refused_the_first_unreadable_event_raises() -> None:
    engine = _engine(0)
    events = [_event(0, 10, 1, 500, "US", None), _event(1, 20, 1, 500, "US", "no_user")]
    with pytest.raises(EventError, match="user"):
        engine.process_many(events)
    assert engine.stats.events_in == 1  # the event before it was taken


def test_a_late_event_is_reported_late_not_refused_even_if_its_key_is_unreadable() -> None:
    engine = _engine(0)
    refused: list[Any] = []
    engine.process_many(
        [_event(0, 1000, 1, 5, "US", None), _event(1, 10, 1, 5, "US", "no_user")],
        refused=lambda event, exc: refused.append(event),
    )
    assert refused == []
    assert [x.event["id"] for x in engine.drain_late()] == [1]


def test_processing_time_refuses_the_same_way() -> None:
    now = [1_000]
    engine = Engine(_rules(), time_mode=TimeMode.PROCESSING_TIME, clock=lambda: now[0])
    refused: list[Any] = []
    alerts = engine.process_many(
        [_event(i, 0, 1, 500, "US", "no_card" if i == 1 else None) for i in range(4)],
        refused=lambda event, exc: refused.append((event["id"], type(exc))),
    )
    assert refused == [(1, EventError)]
    assert [a.rule_id for a in alerts] == ["three-big"]  # events 0, 2 and 3
