"""The default payment-fraud rules, built with the public Pattern API.

=====================  =======  ==============================================================
rule id                key      fires on
=====================  =======  ==============================================================
high-value-3-in-5m     user_id  3 payments over 2000 within 5 minutes
card-testing           card_id  3 or more declined payments under 5, then a payment over 500
                                at another merchant than the first probe, within 2 minutes
geo-hop                user_id  a payment over 1500, then another over 1500 in a different
                                country, within 10 minutes
=====================  =======  ==============================================================

Every rule skips past the last event of a match, so one burst of activity gives one alert.
Events are mappings with the fields of :class:`fraudcep.synthetic.Payment`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fraudcep import Pattern, Rule, SkipStrategy

if TYPE_CHECKING:
    from fraudcep.rulespec import RuleDefinition

__all__ = [
    "CARD_TESTING",
    "DEFAULT_RULES_FILE",
    "DEFAULT_RULE_IDS",
    "GEO_HOP",
    "HIGH_VALUE_3_IN_5M",
    "card_testing",
    "default_rule_definitions",
    "default_rules",
    "geo_hop",
    "high_value_3_in_5m",
]

HIGH_VALUE_3_IN_5M = "high-value-3-in-5m"
CARD_TESTING = "card-testing"
GEO_HOP = "geo-hop"
#: The ids of :func:`default_rules`, in order.
DEFAULT_RULE_IDS = (HIGH_VALUE_3_IN_5M, CARD_TESTING, GEO_HOP)
#: The same rules in the rule format (what runners load when given no rule file).
DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.yaml")

Event = Mapping[str, Any]


class _Context(Protocol):
    """The part of an iterative condition's context these rules use."""

    def events(self, name: str) -> Iterable[Event]: ...


# -- high-value-3-in-5m --------------------------------------------------------------------


def _over_2000(event: Event) -> bool:
    amount: float = event["amount"]
    return amount > 2000


def high_value_3_in_5m() -> Rule:
    """Three payments over 2000 by one user within 5 minutes."""
    pattern = (
        Pattern.begin("first", skip=SkipStrategy.skip_past_last_event())
        .where(_over_2000)
        .times(3)
        .within(timedelta(minutes=5))
    )
    return Rule(HIGH_VALUE_3_IN_5M, pattern, key="user_id")


# -- card-testing --------------------------------------------------------------------------


def _small_decline(event: Event) -> bool:
    amount: float = event["amount"]
    return amount < 5 and event["status"] == "declined"


def _over_500(event: Event) -> bool:
    amount: float = event["amount"]
    return amount > 500


def _not_at_first_probe_merchant(event: Event, ctx: _Context) -> bool:
    first = next(iter(ctx.events("small")), None)
    merchant: str = event["merchant"]
    return first is None or merchant != first["merchant"]


def card_testing() -> Rule:
    """Small declined probes on one card, then a larger payment at another merchant."""
    pattern = (
        Pattern.begin("small", skip=SkipStrategy.skip_past_last_event())
        .where(_small_decline)
        .times_or_more(3)
        .followed_by("big")
        .where(_over_500)
        .where(_not_at_first_probe_merchant)
        .within(timedelta(minutes=2))
    )
    return Rule(CARD_TESTING, pattern, key="card_id")


# -- geo-hop -------------------------------------------------------------------------------


def _over_1500(event: Event) -> bool:
    amount: float = event["amount"]
    return amount > 1500


def _other_country_than_a(event: Event, ctx: _Context) -> bool:
    country: str = event["country"]
    return all(country != a["country"] for a in ctx.events("a"))


def geo_hop() -> Rule:
    """Two payments over 1500 by one user in different countries within 10 minutes."""
    pattern = (
        Pattern.begin("a", skip=SkipStrategy.skip_past_last_event())
        .where(_over_1500)
        .followed_by("b")
        .where(_over_1500)
        .where(_other_country_than_a)
        .within(timedelta(minutes=10))
    )
    return Rule(GEO_HOP, pattern, key="user_id")


def default_rules() -> list[Rule]:
    """The default rule set, in a fixed order."""
    return [high_value_3_in_5m(), card_testing(), geo_hop()]


def default_rule_definitions() -> list[RuleDefinition]:
    """:func:`default_rules` as rule definitions, loaded from :data:`DEFAULT_RULES_FILE`."""
    from fraudcep.rulespec import load_rule_file

    return load_rule_file(DEFAULT_RULES_FILE)
