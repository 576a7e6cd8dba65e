"""Conversions between the time values users pass and the integer milliseconds used inside."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fraudcep.errors import ConfigurationError

#: The largest timestamp: Flink's ``Long.MAX_VALUE``, used as the end-of-input watermark.
MAX_TIMESTAMP = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The smallest timestamp: the watermark before any event was seen.
MIN_TIMESTAMP = -(2**63)


def duration_ms(value: timedelta | int, what: str = "duration") -> int:
    """A duration as whole milliseconds; ``timedelta`` or ``int`` milliseconds."""
    if isinstance(value, timedelta):
        return int(value / timedelta(milliseconds=1))
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"{what} must be a datetime.timedelta or an int of milliseconds, got {value!r}"
        )
    return value


def timestamp_ms(value: object) -> int:
    """An event timestamp as integer milliseconds since the epoch.

    Accepts ``int`` milliseconds and timezone-aware ``datetime`` values (naive ones are read as
    UTC). Floats are refused: they are ambiguous between seconds and milliseconds.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # integer arithmetic: float seconds can land one millisecond early
        return (value - _EPOCH) // timedelta(milliseconds=1)
    raise TypeError(
        f"a timestamp must be an int of milliseconds or a datetime, got {type(value).__name__}"
    )
