"""Errors raised by fraudcep, one class per thing a user can get wrong."""

from __future__ import annotations


class FraudcepError(Exception):
    """Base class of every error fraudcep raises on purpose."""


class MalformedPatternError(FraudcepError, ValueError):
    """A pattern that Flink CEP would refuse (``MalformedPatternException`` and friends)."""


class SnapshotError(FraudcepError, ValueError):
    """A snapshot that is corrupt, truncated, from an unknown format version or for other rules."""


class ConfigurationError(FraudcepError, ValueError):
    """An engine or rule option with a bad value."""


class EventError(FraudcepError, ValueError):
    """An event the engine cannot read: no timestamp, no key, a timestamp of the wrong type."""
