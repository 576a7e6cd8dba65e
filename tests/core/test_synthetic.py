"""Tests of the synthetic payment generator (fraudcep.payments.synthetic).

The background-noise guarantees are checked by brute force, independently of the CEP
engine: ``accidental_matches`` looks for every way the default rules' patterns could be
completed and reports those not made of exactly one injected scenario.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep.payments.synthetic import (
    CARD_TESTING,
    EXPECTED_RULE,
    GEO_HOP,
    HIGH_VALUE_BURST,
    SCENARIO_KINDS,
    Payment,
    PaymentGenerator,
    Scenario,
    match_alerts,
)

MINUTE = 60_000
PAYMENT_FIELDS = {
    "payment_id",
    "user_id",
    "card_id",
    "merchant",
    "country",
    "amount",
    "currency",
    "status",
    "ts",
}

# A small population, many big payments and many scenarios over 50 minutes of event
# time: collisions are likely unless the generator prevents them.
CROWDED = PaymentGenerator(seed=11, users=200, rate=2.0, big_fraction=0.05, scenarios_per_10k=300.0)


def _groups(payments: Sequence[Payment], field_name: str) -> dict[str, list[Payment]]:
    groups: dict[str, list[Payment]] = defaultdict(list)
    for payment in sorted(payments, key=lambda p: p["ts"]):
        groups[str(payment[field_name])].append(payment)  # type: ignore[literal-required]
    return groups


def _one_scenario(events: Sequence[Payment], kind: str) -> bool:
    ids = {p.get("scenario_id") for p in events}
    return len(ids) == 1 and None not in ids and events[0].get("scenario") == kind


def accidental_matches(payments: Sequence[Payment]) -> list[str]:
    """Every (conservatively widened) match of a default rule that is not one scenario."""
    problems: list[str] = []
    # high-value-3-in-5m: 3 payments > 2000 of one user within 5 minutes. If any such
    # triple exists, some 3 consecutive (in ts order) big payments are one.
    for user, events in _groups(payments, "user_id").items():
        big = [p for p in events if p["amount"] > 2000]
        for i in range(len(big) - 2):
            triple = big[i : i + 3]
            if triple[2]["ts"] - triple[0]["ts"] <= 5 * MINUTE and not _one_scenario(
                triple, HIGH_VALUE_BURST
            ):
                problems.append(f"high-value {user}: {[p['payment_id'] for p in triple]}")
    # geo-hop: two payments > 1500 of one user in different countries within 10 minutes.
    for user, events in _groups(payments, "user_id").items():
        over = [p for p in events if p["amount"] > 1500]
        for i, a in enumerate(over):
            for b in over[i + 1 :]:
                if b["ts"] - a["ts"] > 10 * MINUTE:
                    break
                if a["country"] != b["country"] and not _one_scenario([a, b], GEO_HOP):
                    problems.append(f"geo-hop {user}: {a['payment_id']}, {b['payment_id']}")
    # card-testing: >= 3 small declines of one card, then a payment > 500 within 2 minutes
    # (any merchant: wider than the rule).
    for card, events in _groups(payments, "card_id").items():
        for j, big in enumerate(events):
            if big["amount"] <= 500:
                continue
            probes = [
                p
                for p in events[:j]
                if p["amount"] < 5
                and p["status"] == "declined"
                and big["ts"] - p["ts"] <= 2 * MINUTE
            ]
            if len(probes) >= 3 and not _one_scenario([*probes, big], CARD_TESTING):
                problems.append(f"card-testing {card}: {[p['payment_id'] for p in probes]}")
    return problems


def check_scenario_shapes(payments: Sequence[Payment], scenarios: Sequence[Scenario]) -> None:
    by_id = {p["payment_id"]: p for p in payments}
    labelled = [p for p in payments if "scenario_id" in p]
    assert sorted(p["payment_id"] for p in labelled) == sorted(
        pid for s in scenarios for pid in s.payment_ids
    )
    for scenario in scenarios:
        events = [by_id[pid] for pid in scenario.payment_ids]
        assert [p["ts"] for p in events] == sorted(p["ts"] for p in events)
        assert all(p["scenario_id"] == scenario.scenario_id for p in events)
        assert all(p["scenario"] == scenario.kind for p in events)
        assert {p["user_id"] for p in events} == {scenario.user_id}
        assert (scenario.start_ts, scenario.end_ts) == (events[0]["ts"], events[-1]["ts"])
        span = scenario.end_ts - scenario.start_ts
        if scenario.kind == HIGH_VALUE_BURST:
            assert len(events) == 3
            assert all(p["amount"] > 2000 for p in events)
            assert len({p["country"] for p in events}) == 1
            assert {p["card_id"] for p in events} == {scenario.card_id}
            assert span < 5 * MINUTE
        elif scenario.kind == CARD_TESTING:
            *probes, big = events
            assert len(probes) >= 3
            assert all(p["amount"] < 5 and p["status"] == "declined" for p in probes)
            assert 500 < big["amount"] <= 1500
            assert big["merchant"] != probes[0]["merchant"]
            assert {p["card_id"] for p in events} == {scenario.card_id}
            assert span < 2 * MINUTE
        else:
            assert scenario.kind == GEO_HOP
            a, b = events
            assert 1500 < a["amount"] <= 2000 and 1500 < b["amount"] <= 2000
            assert a["country"] != b["country"]
            assert span < 10 * MINUTE
    # Cards used for card testing appear nowhere else.
    tested = {s.card_id for s in scenarios if s.kind == CARD_TESTING}
    assert all(p.get("scenario") == CARD_TESTING for p in payments if p["card_id"] in tested)


def test_same_seed_same_stream() -> None:
    gen = PaymentGenerator(seed=3, users=500)
    first, first_truth = gen.generate(3_000)
    second, second_truth = gen.generate(3_000)
    assert first == second
    assert first_truth == second_truth
    # A stream object and ground_truth() agree with generate().
    assert list(gen.payments(3_000)) == first
    assert gen.ground_truth(3_000) == first_truth


def test_other_seed_other_stream() -> None:
    a, _ = PaymentGenerator(seed=1, users=500).generate(1_000)
    b, _ = PaymentGenerator(seed=2, users=500).generate(1_000)
    assert a != b


def test_exact_count_unique_ids_and_fields() -> None:
    payments, _ = PaymentGenerator(seed=5, users=200).generate(5_000)
    assert len(payments) == 5_000
    assert len({p["payment_id"] for p in payments}) == 5_000
    for p in payments:
        assert PAYMENT_FIELDS <= p.keys() <= PAYMENT_FIELDS | {"scenario", "scenario_id"}
        assert isinstance(p["ts"], int)
        assert isinstance(p["amount"], float)
        assert round(p["amount"], 2) == p["amount"] > 0
        assert p["status"] in ("approved", "declined")
        assert ("scenario" in p) == ("scenario_id" in p)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7])
def test_tiny_streams(n: int) -> None:
    gen = PaymentGenerator(seed=1, users=10, scenarios_per_10k=5_000.0)
    payments, scenarios = gen.generate(n)
    assert len(payments) == n
    check_scenario_shapes(payments, scenarios)


def test_timestamp_order_and_rate() -> None:
    gen = PaymentGenerator(seed=9, users=1_000, rate=100.0, scenarios_per_10k=0.0)
    payments, scenarios = gen.generate(20_000)
    assert scenarios == ()
    stamps = [p["ts"] for p in payments]
    assert stamps == sorted(stamps)
    assert stamps[0] >= gen.start_ts
    seconds = (stamps[-1] - stamps[0]) / 1000
    assert 20_000 / seconds == pytest.approx(100.0, rel=0.05)


def test_jitter_is_bounded_and_only_reorders() -> None:
    base = PaymentGenerator(seed=4, users=300, scenarios_per_10k=50.0)
    jittered = PaymentGenerator(seed=4, users=300, scenarios_per_10k=50.0, jitter_ms=2_000)
    ordered, truth = base.generate(8_000)
    shuffled, jittered_truth = jittered.generate(8_000)
    assert sorted(truth, key=lambda s: s.scenario_id) == sorted(
        jittered_truth, key=lambda s: s.scenario_id
    )
    assert sorted(shuffled, key=lambda p: p["payment_id"]) == sorted(
        ordered, key=lambda p: p["payment_id"]
    )
    assert [p["ts"] for p in shuffled] != [p["ts"] for p in ordered]
    high = shuffled[0]["ts"]
    for p in shuffled:
        assert p["ts"] >= high - 2_000  # never behind the maximum by more than the jitter
        high = max(high, p["ts"])


def test_scenarios_are_labelled_and_well_formed() -> None:
    payments, scenarios = CROWDED.generate(6_000)
    kinds = {s.kind for s in scenarios}
    assert kinds == set(SCENARIO_KINDS)
    assert len({s.scenario_id for s in scenarios}) == len(scenarios)
    check_scenario_shapes(payments, scenarios)


def test_only_requested_kinds() -> None:
    gen = PaymentGenerator(seed=2, users=100, scenarios_per_10k=200.0, kinds=(GEO_HOP,))
    payments, scenarios = gen.generate(3_000)
    assert scenarios
    assert {s.kind for s in scenarios} == {GEO_HOP}
    assert {p["scenario"] for p in payments if "scenario" in p} == {GEO_HOP}


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown scenario kind"):
        PaymentGenerator(kinds=("card-cloning",))  # type: ignore[arg-type]


def test_scenarios_are_listed_once_complete() -> None:
    stream = CROWDED.payments(4_000)
    seen: set[str] = set()
    for payment in stream:
        if "scenario_id" in payment:
            seen.add(payment["scenario_id"])
        done = {s.scenario_id for s in stream.scenarios}
        assert done <= seen
    assert {s.scenario_id for s in stream.scenarios} == seen


def test_background_noise_never_completes_a_rule() -> None:
    payments, scenarios = CROWDED.generate(6_000)
    # The crowded setting really has big background payments next to scenarios.
    background_big = [p for p in payments if "scenario" not in p and p["amount"] > 2000]
    assert len(background_big) > 50
    assert all("scenario" in p for p in payments if p["amount"] < 5 and p["status"] == "declined")
    assert accidental_matches(payments) == []
    # ...and the brute force does see each injected scenario.
    assert scenarios


def test_unsafe_noise_does_collide() -> None:
    """The checker is not vacuous: without the guards, accidental matches appear."""
    unsafe = PaymentGenerator(
        seed=11, users=20, rate=50.0, big_fraction=0.2, scenarios_per_10k=0.0, safe_noise=False
    )
    payments, scenarios = unsafe.generate(4_000)
    assert scenarios == ()
    assert accidental_matches(payments)


def test_default_settings_are_safe() -> None:
    payments, scenarios = PaymentGenerator().generate(20_000)
    assert scenarios
    assert accidental_matches(payments) == []
    check_scenario_shapes(payments, scenarios)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    users=st.integers(2, 60),
    big_fraction=st.floats(0.0, 0.3),
    scenarios_per_10k=st.floats(0.0, 2_000.0),
    jitter_ms=st.integers(0, 5_000),
    n=st.integers(0, 1_500),
)
def test_guarantees_hold_for_any_configuration(
    seed: int, users: int, big_fraction: float, scenarios_per_10k: float, jitter_ms: int, n: int
) -> None:
    gen = PaymentGenerator(
        seed=seed,
        users=users,
        rate=20.0,
        big_fraction=big_fraction,
        scenarios_per_10k=scenarios_per_10k,
        jitter_ms=jitter_ms,
    )
    payments, scenarios = gen.generate(n)
    assert len(payments) == n
    assert len({p["payment_id"] for p in payments}) == n
    check_scenario_shapes(payments, scenarios)
    assert accidental_matches(payments) == []


# -- match_alerts -------------------------------------------------------------------------


@dataclass
class FakeAlert:
    rule_id: str
    events: dict[str, list[Any]] = field(default_factory=dict)


def _alert_for(scenario: Scenario, by_id: dict[str, Payment], rule: str | None = None) -> Any:
    events = [by_id[pid] for pid in scenario.payment_ids]
    return FakeAlert(rule or scenario.expected_rule, {"all": events})


def test_match_alerts_scores_detected_missed_and_unexpected() -> None:
    payments, scenarios = CROWDED.generate(3_000)
    assert len(scenarios) >= 4
    by_id = {p["payment_id"]: p for p in payments}
    background = next(p for p in payments if "scenario" not in p)
    first, second, third, *rest = scenarios
    alerts = [_alert_for(s, by_id) for s in (first, second, *rest)]
    duplicate = _alert_for(first, by_id)
    wrong_rule = _alert_for(
        third, by_id, rule=next(r for r in EXPECTED_RULE.values() if r != third.expected_rule)
    )
    mixed = FakeAlert(first.expected_rule, {"a": [by_id[first.payment_ids[0]], background]})
    detection = match_alerts([*alerts, duplicate, wrong_rule, mixed], scenarios)
    assert set(detection.detected) == set(scenarios) - {third}
    assert detection.missed == (third,)
    assert detection.unexpected == (duplicate, wrong_rule, mixed)
    assert not detection.ok
    assert match_alerts([*alerts, _alert_for(third, by_id)], scenarios).ok
