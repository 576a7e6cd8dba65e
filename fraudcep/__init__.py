"""fraudcep: Flink CEP's pattern semantics as a Python library, for payment-fraud detection."""

from __future__ import annotations

import time

from fraudcep.alert import Alert, ConditionFailure, LateEvent, Overflow, TimedOutMatch
from fraudcep.engine.engine import Engine, EngineStats, TimeMode
from fraudcep.engine.rule import Rule
from fraudcep.errors import (
    ConfigurationError,
    EventError,
    FraudcepError,
    MalformedPatternError,
    SnapshotError,
)
from fraudcep.pattern.pattern import Pattern, WithinType
from fraudcep.pattern.skip import SkipStrategy


def system_clock() -> int:
    """Wall-clock epoch milliseconds, for processing time (the core never reads it itself)."""
    return time.time_ns() // 1_000_000


__all__ = [
    "Alert",
    "ConditionFailure",
    "ConfigurationError",
    "Engine",
    "EngineStats",
    "EventError",
    "FraudcepError",
    "LateEvent",
    "MalformedPatternError",
    "Overflow",
    "Pattern",
    "Rule",
    "SkipStrategy",
    "SnapshotError",
    "TimeMode",
    "TimedOutMatch",
    "WithinType",
    "system_clock",
]
