"""Tools to test CEP rule semantics: a reference matcher, hypothesis strategies, Flink cases.

fraudcep promises Flink CEP 2.x semantics. This package is how that promise is checked, and
it ships so that you can check it for your own rules too:

* :mod:`~fraudcep.testing.reference` — a small reference matcher that interprets a pattern's
  stage list directly (it never uses the engine's compiler or NFA) and states Flink's rules
  one by one in its docstring;
* :mod:`~fraudcep.testing.strategies` — hypothesis strategies: payment streams for your own
  property tests (:func:`payments`, :func:`payment_streams`, :func:`keyed_streams`) and the
  generated patterns, streams and cases the project's own tests use (:func:`pattern_specs`,
  :func:`event_streams`, :func:`cases`, :func:`random_case`);
* :mod:`~fraudcep.testing.records` — hypothesis strategies of raw payment records, valid
  (:func:`valid_payment_records`) and ones a decoder must refuse
  (:func:`malformed_payment_records`), for testing record handlers;
* :func:`check_rule` — runs one of your rules through the engine and the reference matcher,
  key by key, and lists the differences;
* :mod:`~fraudcep.testing.cases` — the JSON case format shared with the Flink CEP
  differential harness (:func:`build_pattern`, :func:`run_case`, :func:`compare`).

Property-testing a fraud rule
=============================

Write invariants of your rule as hypothesis tests over :func:`payment_streams`, and let
:func:`check_rule` hold the engine to the reference semantics on your conditions::

    from datetime import timedelta

    from hypothesis import given

    from fraudcep import Engine, Pattern, Rule, SkipStrategy
    from fraudcep.testing import check_rule, payment_streams

    def big(p):
        return p["amount"] > 2000

    RULE = Rule(
        "big-then-abroad",
        Pattern.begin("big", skip=SkipStrategy.skip_past_last_event())
        .where(big)
        .followed_by("abroad")
        .where(lambda p, ctx: p["country"] != ctx.events("big")[0]["country"])
        .within(timedelta(minutes=5)),
        key="user_id",
    )

    @given(payment_streams(users=("u1", "u2")))
    def test_alerts_are_what_the_rule_says(stream):
        engine = Engine([RULE], timestamp="ts")
        alerts = engine.process_many(stream) + engine.flush()
        for alert in alerts:
            first, second = alert.events["big"][0], alert.events["abroad"][0]
            assert big(first) and first["user_id"] == second["user_id"] == alert.key
            assert first["country"] != second["country"]
            assert second["ts"] - first["ts"] < 5 * 60_000

    @given(payment_streams(users=("u1", "u2")))
    def test_engine_follows_flink_semantics_for_my_rule(stream):
        assert check_rule(RULE, stream) == []

``hypothesis`` is needed for the strategies only (``pip install 'fraudcep[test]'``); the
reference matcher, :func:`check_rule` and the case functions work without it.
"""

from __future__ import annotations

from typing import Any

from fraudcep.testing.cases import (
    HOLD_ALL,
    CaseFormatError,
    build_condition,
    build_pattern,
    build_skip,
    canonical,
    compare,
    run_case,
)
from fraudcep.testing.reference import (
    ReferenceLimitError,
    ReferenceMatch,
    ReferenceMatcher,
    ReferenceOutcome,
    UnsupportedPatternError,
    check_result,
    reference_case,
    reference_outcomes,
    unsupported,
)
from fraudcep.testing.rules import check_rule

try:
    from fraudcep.testing.records import malformed_payment_records, valid_payment_records
    from fraudcep.testing.strategies import (
        KINDS,
        MALFORMATIONS,
        cases,
        event_streams,
        events,
        keyed_streams,
        pattern_specs,
        payment_streams,
        payments,
        random_case,
        random_events,
        random_pattern_spec,
    )

    _MISSING: ImportError | None = None
except ImportError as exc:  # pragma: no cover - hypothesis is a test dependency
    _MISSING = exc
    globals().pop("cases", None)  # the submodule would otherwise stand in for the strategy

_STRATEGIES = frozenset(
    {
        "KINDS",
        "MALFORMATIONS",
        "cases",
        "event_streams",
        "events",
        "keyed_streams",
        "malformed_payment_records",
        "pattern_specs",
        "payment_streams",
        "payments",
        "random_case",
        "random_events",
        "random_pattern_spec",
        "valid_payment_records",
    }
)


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES and _MISSING is not None:
        raise ImportError(
            f"fraudcep.testing.{name} needs hypothesis: pip install 'fraudcep[test]'"
        ) from _MISSING
    raise AttributeError(f"module 'fraudcep.testing' has no attribute {name!r}")


__all__ = [
    "HOLD_ALL",
    "KINDS",
    "MALFORMATIONS",
    "CaseFormatError",
    "ReferenceLimitError",
    "ReferenceMatch",
    "ReferenceMatcher",
    "ReferenceOutcome",
    "UnsupportedPatternError",
    "build_condition",
    "build_pattern",
    "build_skip",
    "canonical",
    "cases",
    "check_result",
    "check_rule",
    "compare",
    "event_streams",
    "events",
    "keyed_streams",
    "malformed_payment_records",
    "pattern_specs",
    "payment_streams",
    "payments",
    "random_case",
    "random_events",
    "random_pattern_spec",
    "reference_case",
    "reference_outcomes",
    "run_case",
    "unsupported",
    "valid_payment_records",
]
