"""The benchmark workloads: the rules of the performance targets and their payment streams.

The stream follows the measurement setup recorded for Flink CEP (10,000 users, one payment per
millisecond of event time, 1 % of amounts over 2000); amounts otherwise spread up to 2000, with
as many between 1500 and 2000 and as many under 10 (so P2 and P3 have something to see), the
rest between 10 and 1500. P4 runs on a match-dense variant of the same stream
(``dense_payments``: a quarter of the amounts over 2000).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fraudcep import Pattern, Rule, SkipStrategy

COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "PL")


def payments(
    n: int, users: int = 10_000, big_share: float = 0.01, seed: int = 42
) -> list[dict[str, Any]]:
    """``n`` payments, one per millisecond, ``big_share`` of them over 2000."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random()
        if r < big_share:
            amount = round(2000 + rng.random() * 3000, 2)
        elif r < 2 * big_share:
            amount = round(1500 + rng.random() * 500, 2)
        elif r < 3 * big_share:
            amount = round(rng.random() * 10, 2)
        else:
            amount = round(10 + rng.random() * 1490, 2)
        out.append(
            {
                "payment_id": i,
                "user_id": rng.randrange(users),
                "amount": amount,
                "country": COUNTRIES[rng.randrange(len(COUNTRIES))],
                "ts": 1_700_000_000_000 + i,
            }
        )
    return out


def p1() -> Rule:
    """The seed rule: three payments over 2000 by one user within five minutes."""
    pattern = (
        Pattern.begin("first")
        .where(lambda p: p["amount"] > 2000)
        .times(3)
        .within(timedelta(minutes=5))
    )
    return Rule("P1-high-value-3-in-5m", pattern, key="user_id")


def p2() -> Rule:
    """Two payments over 1500 from different countries within ten minutes."""
    pattern = (
        Pattern.begin("a")
        .where(lambda p: p["amount"] > 1500)
        .followed_by("b")
        .where(lambda p, ctx: p["amount"] > 1500 and p["country"] != ctx.events("a")[0]["country"])
        .within(timedelta(minutes=10))
    )
    return Rule("P2-geo-hop", pattern, key="user_id")


def p3() -> Rule:
    """A payment over 1900, then another over 1900 with no tiny payment between, in 5 minutes."""
    pattern = (
        Pattern.begin("a")
        .where(lambda p: p["amount"] > 1900)
        .not_followed_by("b")
        .where(lambda p: p["amount"] < 10)
        .followed_by("c")
        .where(lambda p: p["amount"] > 1900)
        .within(timedelta(minutes=5))
    )
    return Rule("P3-no-probe-between", pattern, key="user_id")


DENSE_SHARE = 0.25
"""The share of payments over 2000 in P4's stream."""


def dense_payments(n: int, users: int = 10_000, seed: int = 42) -> list[dict[str, Any]]:
    """P4's stream: ``payments`` with a quarter of the amounts over 2000 (and a quarter each
    between 1500 and 2000, under 10, and between 10 and 1500)."""
    return payments(n, users, big_share=DENSE_SHARE, seed=seed)


def p4() -> Rule:
    """Match-dense: two payments over 2000 from different countries within ten minutes
    (P2's shape at the higher threshold; on ``dense_payments`` about one match per four
    payments)."""
    pattern = (
        Pattern.begin("a")
        .where(lambda p: p["amount"] > 2000)
        .followed_by("b")
        .where(lambda p, ctx: p["amount"] > 2000 and p["country"] != ctx.events("a")[0]["country"])
        .within(timedelta(minutes=10))
    )
    return Rule("P4-dense-geo-hop", pattern, key="user_id")


def p1_skip_past_last() -> Rule:
    rule = p1()
    return Rule(
        rule.id + "-skip",
        Pattern(rule.pattern.stages, SkipStrategy.skip_past_last_event()),
        key="user_id",
    )


WORKLOADS: dict[str, Callable[[], Rule]] = {"P1": p1, "P2": p2, "P3": p3, "P4": p4}

STREAMS: dict[str, Callable[[int], list[dict[str, Any]]]] = {
    "P1": payments,
    "P2": payments,
    "P3": payments,
    "P4": dense_payments,
}
"""The payment stream of each workload."""
