"""The default payment-fraud rules, defined once, in the rule format (``default_rules.yaml``).

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
Events are payments (:mod:`fraudcep.payments.payment`); the synthetic stream
(:mod:`fraudcep.payments.synthetic`) injects one scenario per rule.
"""

from __future__ import annotations

from pathlib import Path

from fraudcep.engine.rule import Rule
from fraudcep.rules import RuleDefinition, load_rule_file

__all__ = [
    "CARD_TESTING",
    "DEFAULT_RULES_FILE",
    "DEFAULT_RULE_IDS",
    "GEO_HOP",
    "HIGH_VALUE_3_IN_5M",
    "default_rule_definitions",
    "default_rules",
]

HIGH_VALUE_3_IN_5M = "high-value-3-in-5m"
CARD_TESTING = "card-testing"
GEO_HOP = "geo-hop"

#: The ids of :func:`default_rules`, in order.
DEFAULT_RULE_IDS = (HIGH_VALUE_3_IN_5M, CARD_TESTING, GEO_HOP)

#: The rules themselves (what runners load when given no rule file).
DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.yaml")


def default_rule_definitions() -> list[RuleDefinition]:
    """The default rules as rule definitions, loaded from :data:`DEFAULT_RULES_FILE`."""
    return load_rule_file(DEFAULT_RULES_FILE)


def default_rules() -> list[Rule]:
    """The default rule set, in a fixed order."""
    return [d.rule for d in default_rule_definitions()]
