"""Bounds on what one rule may ask for: quantifier counts, unrolled size, stages and
conditions in the Pattern API."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fraudcep import MalformedPatternError, Pattern, Rule
from fraudcep.pattern.pattern import (
    MAX_CONDITIONS_PER_STAGE,
    MAX_QUANTIFIER_COUNT,
    MAX_STAGES,
    MAX_UNROLLED_STAGES,
)


def positive(event: Any) -> bool:
    return bool(event["v"] > 0)


@pytest.mark.parametrize(
    "build",
    [
        lambda p: p.times(MAX_QUANTIFIER_COUNT + 1),
        lambda p: p.times(1, MAX_QUANTIFIER_COUNT + 1),
        lambda p: p.times(0, 10**12),
        lambda p: p.times_or_more(MAX_QUANTIFIER_COUNT + 1),
        lambda p: p.times_or_more(10**100),
    ],
)
def test_quantifier_counts_over_the_limit_are_refused_naming_it(build: Any) -> None:
    with pytest.raises(MalformedPatternError, match="over the limit of 1,000"):
        build(Pattern.begin("a").where(positive))


@pytest.mark.parametrize(
    "build",
    [
        lambda p: p.times(MAX_QUANTIFIER_COUNT),
        lambda p: p.times(1, MAX_QUANTIFIER_COUNT).greedy(),
        lambda p: p.times(0, MAX_QUANTIFIER_COUNT).allow_combinations(),
        lambda p: p.times_or_more(MAX_QUANTIFIER_COUNT).consecutive().until(positive),
    ],
)
def test_a_rule_at_the_quantifier_limit_builds_in_linear_time(build: Any) -> None:
    started = time.perf_counter()
    rule = Rule("r", build(Pattern.begin("a").where(positive)).followed_by("b"), key="k")
    elapsed = time.perf_counter() - started
    assert MAX_QUANTIFIER_COUNT <= len(rule.nfa.states) <= 3 * MAX_QUANTIFIER_COUNT
    assert elapsed < 10, "a generous guard only: this takes a few milliseconds"


def test_quantified_groups_multiply_and_the_product_is_bounded() -> None:
    inner = Pattern.begin("g1").where(positive).followed_by("g2").times(1, 5)  # 6 copies
    ok = Pattern.begin("s").followed_by(inner).times(1, 1_000)
    assert ok.unrolled_stages == 1 + 6 * 1_000 <= MAX_UNROLLED_STAGES
    assert len(Rule("r", ok, key="k").nfa.states) > 6_000
    other = Pattern.begin("h1").where(positive).followed_by("h2").times(1, 5)
    with pytest.raises(MalformedPatternError, match="unrolls to 12,001 stage copies"):
        ok.followed_by(other).times(1_000)
    nested = Pattern.begin("a").times(100)
    with pytest.raises(MalformedPatternError, match="at most 10,000"):
        Pattern.begin("s").followed_by(Pattern.begin("x").followed_by(nested).times(101))


def test_stage_count_and_conditions_per_stage_are_bounded() -> None:
    pattern = Pattern.begin("s0")
    for i in range(1, MAX_STAGES):
        pattern = pattern.followed_by(f"s{i}").optional()
    assert pattern.stage_count == MAX_STAGES
    started = time.perf_counter()
    Rule("r", pattern, key="k")
    assert time.perf_counter() - started < 10, "a generous guard only"
    with pytest.raises(MalformedPatternError, match=f"at most {MAX_STAGES}"):
        pattern.followed_by("one-more")
    stage = Pattern.begin("a")
    for _ in range(MAX_CONDITIONS_PER_STAGE):
        stage = stage.where(positive)
    Rule("r", stage, key="k")
    with pytest.raises(MalformedPatternError, match="more than 100 where"):
        stage.or_where(positive)
