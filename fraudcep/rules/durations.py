"""Durations in rule files: ``500ms``, ``30s``, ``5m``, ``2h``, ``1d`` or an int of ms."""

from __future__ import annotations

import re

from fraudcep.rules.limits import MAX_DURATION_MS
from fraudcep.rules.problems import show

_UNITS: dict[str, int] = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
# ASCII digits only (``\\d`` takes any Unicode digit, fullwidth ones included), at most 18 of
# them (they are read before the bound is checked)
_DURATION = re.compile(r"[ \t]*([0-9]{1,18})[ \t]*(ms|s|m|h|d)[ \t]*")


def parse_duration(value: object) -> int:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` or an int of ms, as ms (> 0, at
    most :data:`MAX_DURATION_MS`)."""
    if isinstance(value, bool):
        raise ValueError(f"a duration must be like 500ms, 30s, 5m, 2h, 1d or an int, not {value}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        ms = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(
            f"a duration must be like 500ms, 30s, 5m, 2h, 1d or an int of ms, got {show(value)}"
        )
    if ms <= 0:
        raise ValueError(f"a duration must be longer than 0 ms, got {show(value)}")
    if ms > MAX_DURATION_MS:
        raise ValueError(
            f"a duration must be at most {MAX_DURATION_MS // 86_400_000}d, got {show(value)}"
        )
    return ms


def format_duration(ms: int) -> str:
    """The normal form of a duration: the largest unit that divides it (``300000`` -> ``5m``)."""
    for unit, size in _UNITS.items():
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover
