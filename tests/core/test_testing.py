"""The testing tools themselves: what the strategies promise, and the case helpers."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep.testing import (
    KINDS,
    build_pattern,
    canonical,
    compare,
    event_streams,
    keyed_streams,
    pattern_specs,
    payment_streams,
    payments,
    random_case,
    run_case,
    unsupported,
)

FAST = settings(max_examples=100, derandomize=True, database=None, deadline=None)


@FAST
@given(event_streams(max_size=20))
def test_event_streams(stream: list[dict[str, Any]]) -> None:
    assert len(stream) <= 20
    assert [e["id"] for e in stream] == list(range(len(stream)))
    for e in stream:
        assert isinstance(e["ts"], int) and e["ts"] >= 0
        assert e["kind"] in KINDS and 0 <= e["value"] <= 9


@FAST
@given(keyed_streams(keys=("x", "y")))
def test_keyed_streams(stream: list[dict[str, Any]]) -> None:
    assert {e["key"] for e in stream} <= {"x", "y"}
    assert [e["id"] for e in stream] == list(range(len(stream)))


@FAST
@given(payments())
def test_payments(payment: dict[str, Any]) -> None:
    assert set(payment) == {
        "payment_id", "user_id", "card_id", "merchant", "country", "amount", "currency",
        "status", "ts",
    }  # fmt: skip
    assert payment["amount"] > 0 and payment["status"] in ("approved", "declined")


@FAST
@given(payment_streams(max_size=15))
def test_payment_streams_are_in_time_order(stream: list[dict[str, Any]]) -> None:
    assert [p["ts"] for p in stream] == sorted(p["ts"] for p in stream)
    assert len({p["payment_id"] for p in stream}) == len(stream)


@FAST
@given(pattern_specs(reference_subset=True, malformed=0))
def test_reference_subset_specs_stay_in_the_subset(spec: dict[str, Any]) -> None:
    try:
        pattern = build_pattern(spec)
    except ValueError:
        return  # a rejected pattern: fine, the reference reports the error too
    assert unsupported(pattern) is None


def test_malformed_specs_are_rejected() -> None:
    rng = random.Random(5)
    results = [run_case(random_case(rng, i, malformed=100)) for i in range(300)]
    rejected = sum(r["error"] is not None for r in results)
    assert rejected >= 0.9 * len(results)


def test_random_case_is_deterministic() -> None:
    first = [random_case(random.Random(11), i) for i in range(20)]
    again = [random_case(random.Random(11), i) for i in range(20)]
    assert first == again
    assert first != [random_case(random.Random(12), i) for i in range(20)]


@given(st.data())
@settings(max_examples=30, derandomize=True, database=None)
def test_generated_specs_cover_every_operator_and_skip(data: st.DataObject) -> None:
    ops: set[str] = set()
    skips: set[str] = set()
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for i in range(300):
        case = random_case(rng, i)
        ops.update(s["op"] for s in case["pattern"])
        skips.add(case["skip"]["type"])
    assert ops >= {"begin", "next", "followed_by", "followed_by_any", "not_next",
                   "not_followed_by"}  # fmt: skip
    assert len(skips) == 5


def test_compare_treats_two_errors_as_equal() -> None:
    a = {"id": 1, "error": "MalformedPatternError: x", "matches": [], "timeouts": []}
    b = {"id": 1, "error": "MalformedPatternException: y", "matches": [], "timeouts": []}
    assert compare(a, b) == []
    assert compare(a, {"id": 1, "error": None, "matches": [], "timeouts": []}) != []


def test_canonical_sorts_only_matches_sharing_their_first_event() -> None:
    events = [{"id": i, "ts": i} for i in range(4)]
    m = [[["a", [0]], ["b", [2]]], [["a", [0]], ["b", [1]]], [["a", [1]], ["b", [3]]]]
    swapped = [m[1], m[0], m[2]]
    reordered = [m[2], m[0], m[1]]
    result = {"error": None, "matches": m, "timeouts": []}
    assert compare(result, {**result, "matches": swapped}, events=events) == []
    assert compare(result, {**result, "matches": reordered}, events=events) != []
    assert canonical(result, events)["matches"][0] == m[1]
