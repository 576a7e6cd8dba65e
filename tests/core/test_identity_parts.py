"""Alert ids written from parts (``alert_id_of``, what the engine does, each event's part
computed once per step) are byte for byte the ids ``canonical_json`` of the whole match gives:
ids are persisted and deduplicated on, so they must never change."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep import Engine, Pattern, Rule
from fraudcep.alert.identity import (
    alert_id,
    alert_id_of,
    canonical_event,
    canonical_json,
    canonical_key,
    event_text,
    key_text,
    matched_text,
)


def whole_text_id(
    rule_id: str,
    key: Hashable,
    matched: list[tuple[str, int, Any]],
    event_id: Callable[[Any], Any] | None = None,
) -> str:
    """The id as it was always computed: SHA-256 of the canonical text of the whole match."""
    identity = event_id or canonical_event
    events = [[name, ts, identity(event)] for name, ts, event in matched]
    blob = canonical_json([rule_id, canonical_key(key), events])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.dictionaries(st.integers() | st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)
FLAT = st.dictionaries(st.text(max_size=6), SCALARS, max_size=6)
EVENT = FLAT | JSONISH
KEY = st.integers() | st.text(max_size=6) | st.tuples(st.integers(), st.text(max_size=3))
NAME = st.text(max_size=6)
TS = st.integers(min_value=-(2**63), max_value=2**63) | st.sampled_from([0, 10**5000])
IDENTITY: list[Callable[[Any], Any] | None] = [
    None,
    lambda e: 7,
    lambda e: 'x\u00e9"\\',
    lambda e: ("t", 1.5, None),
    lambda e: {"nested": [e]},
]


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(
    st.text(max_size=6),
    KEY,
    st.lists(st.tuples(NAME, TS, EVENT), max_size=4),
    st.integers(min_value=0, max_value=len(IDENTITY) - 1),
)
def test_ids_from_parts_are_the_whole_texts_ids(
    rule_id: str, key: Any, matched: list[tuple[str, int, Any]], which: int
) -> None:
    event_id = IDENTITY[which]
    expected = whole_text_id(rule_id, key, matched, event_id)
    assert alert_id(rule_id, key, matched, event_id) == expected
    parts = [matched_text(n, ts, event_text(e, event_id)) for n, ts, e in matched]
    assert alert_id_of(rule_id, key_text(key), parts) == expected


def test_engine_ids_of_matches_sharing_events_are_the_whole_texts_ids() -> None:
    """One payment completing several partial matches at once (NO_SKIP, relaxed contiguity):
    its part of the text is computed once and every id is still the whole text's."""
    pattern = (
        Pattern.begin("a")
        .where(lambda p: p["amount"] > 100)
        .followed_by("b")
        .where(lambda p, ctx: p["amount"] > ctx.events("a")[0]["amount"])
        .within(60_000)
    )
    engine = Engine([Rule("shared", pattern, key="user")], timestamp="ts")
    payments = [
        {"user": "u", "amount": a, "ts": i, "nested": {"n": [i, {"x": i}]}}
        for i, a in enumerate([150, 160, 170, 500, 120, 900])
    ]
    alerts = engine.process_many(payments) + engine.flush()
    assert len(alerts) == 5
    for alert in alerts:
        matched = [(name, e["ts"], e) for name, events in alert.events.items() for e in events]
        assert alert.alert_id == whole_text_id("shared", "u", matched)
